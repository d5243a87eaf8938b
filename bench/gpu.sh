#!/usr/bin/env bash
# The service's GPU figures in one command and one JSON (what they are: bench/gpu.py's docstring).
#
#     bench/gpu.sh [--out PATH] [--smoke] [--requests N] ...    arguments go to `python -m bench.gpu`
#
# Makes .venv-gpu in the checkout that sees the packages of python3 (or $PYTHON) after its own (a CUDA
# torch already there is kept: the project pins the CPU wheel), installs the project's missing
# dependencies and, where torch sees a GPU, onnxruntime-gpu; then runs from the checkout (no
# `pip install -e .`, which would fetch the pin).
# Without a GPU the same run falls back to CPU, and the JSON says "device": "cpu" with a note.
# BENCH_PYTHON=/path/to/python runs with that interpreter as it is, installing nothing (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${BENCH_PYTHON:-}
if [[ -z $py ]]; then
    venv=${VENV:-.venv-gpu}
    if [[ ! -x $venv/bin/python ]]; then
        "${PYTHON:-python3}" -m venv "$venv"
        # see the packages of the interpreter it was made from, after its own: that one is a venv itself
        # on some GPU images, which --system-site-packages would skip (and its CUDA torch with it)
        "${PYTHON:-python3}" -c 'import site; print("\n".join(site.getsitepackages()))' \
            >"$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/_base_site.pth"
    fi
    py=$venv/bin/python
    pip=("$py" -m pip install --quiet --disable-pip-version-check)
    read -ra missing <<<"$("$py" -m bench.gpu --missing-requirements)"
    if ((${#missing[@]})); then
        "${pip[@]}" "${missing[@]}" || echo "gpu.sh: could not install ${missing[*]}" >&2
    fi
    if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        "$py" -c 'import sys, onnxruntime as o; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' ||
            "${pip[@]}" onnxruntime-gpu || echo "gpu.sh: no onnxruntime-gpu; onnxruntime runs on CPU" >&2
    fi
fi
exec "$py" -m bench.gpu "$@"
