# syntax=docker/dockerfile:1
# Lookalike serving image: `docker build -t lookalike .`, then see docker-compose.yml.
# The same image also runs the trainer (`python -m training train ...`).

ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# --- builder: a self-contained virtualenv in /opt/venv ------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /build

# Dependencies first, from the metadata alone (no package sources yet, so the
# project installs as an empty shell): this heavy layer (TensorFlow, FAISS,
# Milvus) stays cached until pyproject.toml or constraints.txt changes.
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --no-cache-dir -c constraints.txt ".[milvus]"

# Then the code, reinstalled on top without touching the dependencies.
COPY app ./app
COPY training ./training
RUN pip install --no-cache-dir --no-deps --force-reinstall -c constraints.txt ".[milvus]"

# --- final: the venv, a non-root user, nothing else ---------------------------
FROM ${PYTHON_IMAGE}

RUN groupadd --gid 1000 lookalike \
    && useradd --uid 1000 --gid lookalike --create-home --shell /usr/sbin/nologin lookalike

COPY --from=builder /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LOOKALIKE_HOST=0.0.0.0 \
    LOOKALIKE_PORT=8000 \
    LOOKALIKE_MODEL_DIR=/srv/lookalike/models/default \
    LOOKALIKE_DATA_DIR=/srv/lookalike/data

WORKDIR /srv/lookalike
# Owned by the service user, so fresh named volumes mounted here are writable.
RUN mkdir models data && chown lookalike:lookalike models data

# Numeric, so Kubernetes' runAsNonRoot can check it (hadolint DL3066).
USER 1000:1000
VOLUME ["/srv/lookalike/models", "/srv/lookalike/data"]
EXPOSE 8000

# Liveness only (/readyz says whether a model is loaded); slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOOKALIKE_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["python", "-m", "app", "serve"]
