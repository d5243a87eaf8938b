# syntax=docker/dockerfile:1
# The LPGNet inference service: one uvicorn process per container, as a non-root user.
#   CPU (default):  docker build -t lpgnet-erc .
#   GPU:            docker build --build-arg GPU=1 -t lpgnet-erc:gpu .   (CUDA torch + onnxruntime-gpu)
FROM python:3.11-slim

ARG GPU=0
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # never reach for a model hub at run time: encoders load from the image or from /models
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# torch first, from the CPU index unless GPU=1 (the PyPI wheel is the CUDA build), in its own layer
RUN if [ "$GPU" = "1" ]; then \
        pip install "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
    fi

# the dependencies, from pyproject.toml alone, so code changes do not reinstall them
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && if [ "$GPU" = "1" ]; then pip uninstall -y onnxruntime && pip install "onnxruntime-gpu>=1.18"; fi \
    && rm /tmp/requirements.txt

# the code and the committed default weights (compose mounts ./weights over them read-only)
COPY README.md ./
COPY model ./model
COPY app ./app
COPY weights ./weights
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 lpgnet

USER lpgnet
# LPGNET_BACKEND=auto serves LPGNet's ONNX graph on CPU; export the default checkpoint's graph now so
# the first start does not spend ~10 s on it (other checkpoints are exported at their first start)
RUN python -c "from app.settings import Settings; from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint; \
from model.export import export_lpgnet_cached; \
print(export_lpgnet_cached(load_checkpoint(DEFAULT_CHECKPOINT).model, Settings().graph_cache))"
ENV LPGNET_HOST=0.0.0.0 \
    LPGNET_PORT=8000
EXPOSE 8000

# healthy = model loaded and warmed up and store reachable (the first start loads the encoders)
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=4)"

CMD ["lpgnet", "serve"]
