#!/usr/bin/env bash
# Run a command as on an AVX-512 (VNNI) Xeon without AMX or native bf16, on an x86-64 Linux CPU that has them:
#
#     bench/no_amx.sh .venv/bin/python -m bench --quick --json --out /tmp/no-amx.json
#
# - onnxruntime's MLAS and oneDNN get no AMX: bench/no_amx.c (LD_PRELOAD) refuses the tile-data
#   permission they ask Linux for, and both fall back to their AVX-512 kernels;
# - oneDNN is capped at AVX512_CORE_VNNI (ONEDNN_MAX_CPU_ISA), so PyTorch's bf16 is emulated, as on a
#   CPU without AVX512-BF16 (it is then slower than fp32, and no floor candidate).
# An emulation, not such a machine: clock, caches and memory stay this host's, and
# `has_native_bf16()` still reads the CPU's flags (the bench measures the bf16 candidates anyway).
# The child processes (the bench's uvicorn service) inherit both. Needs a C compiler (cc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] || { echo "$0: x86-64 Linux only" >&2; exit 2; }
build=${XDG_CACHE_HOME:-$HOME/.cache}/lpgnet/no-amx
shim=$build/no_amx-$(cksum < "$here/no_amx.c" | cut -d' ' -f1).so
if [[ ! -f $shim ]]; then
    mkdir -p "$build"
    ${CC:-cc} -O2 -shared -fPIC -o "$shim.tmp" "$here/no_amx.c" -ldl
    mv "$shim.tmp" "$shim"
fi
export LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}"
export ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI
exec "$@"
