# The LPGNet inference service: one uvicorn process per container, as a non-root user.
#   CPU (default):  docker build -t lpgnet-erc .
#   GPU:            docker build --build-arg GPU=1 -t lpgnet-erc:gpu .   (CUDA torch + onnxruntime-gpu)
# Where torch comes from (first match wins):
#   a torch-*.whl in ./wheels          installed from there (see wheels/README.md); its own small
#                                      dependencies (sympy, networkx, ...) from ./wheels or PyPI
#   --build-arg TORCH_INDEX_URL=URL    a package index of your choice (a mirror, a proxy)
#   otherwise                          the PyTorch CPU index, or PyPI (the CUDA build) with GPU=1
# The base: any Debian-like image with Python 3.11+ whose `python` and `pip` install system-wide.
# Without a registry, build one with scripts/debian_base.sh and pass
#   --build-arg BASE_IMAGE=localhost/python:3.11-bookworm
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG GPU=0
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # never reach for a model hub at run time: encoders load from the image or from /models
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# torch first, in its own layer; ./wheels is bind-mounted, so a local wheel never lands in a layer.
# Not --no-index: the torch wheel alone lacks its dependencies (filelock, sympy, ...), and the build
# failed on them; a local version (2.13.0+cpu) sorts above the index's 2.13.0, so the local wheel wins.
RUN --mount=type=bind,source=wheels,target=/tmp/wheels \
    if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then \
        pip install --find-links /tmp/wheels "torch==${TORCH_VERSION}"; \
    elif [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    elif [ "$GPU" = "1" ]; then \
        pip install "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
    fi

# the dependencies, from pyproject.toml alone, so code changes do not reinstall them
# pyproject.toml extras to install as well, comma-separated. The image serves every built-in profile
# and the committed checkpoints without any (openSMILE, for the default's voice expert, is a dependency).
# train and dev are for `make test`, not for the image.
# Declared here, not above, so that changing it keeps the torch layer cached.
ARG EXTRAS=""
COPY pyproject.toml ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in os.environ['EXTRAS'].split(',') if e]; \
print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && if [ "$GPU" = "1" ]; then pip uninstall -y onnxruntime && pip install "onnxruntime-gpu>=1.18"; fi \
    && rm /tmp/requirements.txt

# the code and the committed default weights (compose mounts ./weights over them read-only)
COPY README.md ./
COPY model ./model
COPY app ./app
COPY lpgnet_cli.py ./
COPY weights ./weights
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 lpgnet

USER lpgnet
# Start the service once now, so a fresh container does not pay for what a first start writes: the
# default checkpoint's ONNX graph (~10 s) and numba's librosa kernels (~25 s; kept in NUMBA_CACHE_DIR,
# since site-packages is not writable by this user). Other checkpoints export at their first start; on
# a CPU unlike the build machine's numba recompiles once.
ENV NUMBA_CACHE_DIR=/home/lpgnet/.cache/numba
RUN python -m app.prewarm
ENV LPGNET_HOST=0.0.0.0 \
    LPGNET_PORT=8000
EXPOSE 8000

# healthy = model loaded and warmed up and store reachable (the first start loads the encoders)
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=4)"

CMD ["lpgnet", "serve"]
