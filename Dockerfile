# One image for the API, the workers and Flower: Debian 12, Python 3.11, the pinned dependencies, the
# models that ship in packages (MediaPipe's, the all-MiniLM-L6-v2 embedding model) checked loadable
# offline at build time, Tesseract OCR, a non-root user and a health check (containers/healthcheck.py).
#
#   podman build -t aitasks .        # or: docker build -t aitasks .
#
# Build arguments:
#   BASE_IMAGE       default debian:bookworm-slim; `make test-containers` builds one without a registry
#                    (scripts/container-base.sh: debootstrap + podman import).
#   TORCH_INDEX_URL  where torch==2.13.0 comes from; default PyTorch's CPU index (PyPI's torch is the
#                    multi-GB CUDA build). For a CUDA image: https://download.pytorch.org/whl/cu128.
#                    Empty: the usual indexes only (with a local CPU wheel in PIP_LOCAL_FIND_LINKS).
#   PIP_LOCAL_FIND_LINKS, PIP_LOCAL_INDEXES
#                    extra wheel folders / index URLs (space separated) mounted into the build, e.g.
#                    `-v /opt/wheels:/opt/wheels:ro --build-arg PIP_LOCAL_FIND_LINKS=/opt/wheels`;
#                    empty by default (plain PyPI).
#   PIP_LOCAL_CERT   a CA bundle mounted into the build for pip (a TLS-inspecting proxy's CA); default none.
# The diffusion model (image_generation) is not inside: mount a folder and set AITASKS_IMAGE_MODEL_DIR.
ARG BASE_IMAGE=debian:bookworm-slim

# The dependency list alone, out of pyproject.toml: the install layer below is rebuilt when it changes,
# not when another part of pyproject.toml (pytest's or ruff's settings) does.
FROM ${BASE_IMAGE} AS requirements
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml /pyproject.toml
RUN python3 -c "import tomllib; d = tomllib.load(open('/pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /requirements.txt

FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_LOCAL_FIND_LINKS=
ARG PIP_LOCAL_INDEXES=
ARG PIP_LOCAL_CERT=

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/aitasks/venv \
    PATH=/opt/aitasks/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# Tesseract (OCR of scans) and DejaVu fonts (reports) as in scripts/ensure-tesseract.sh; libGL and GLib
# for OpenCV (opencv-contrib-python is the GUI build MediaPipe pulls); tini as PID 1 (signals, zombies).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
      tesseract-ocr fonts-dejavu-core libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV"

# pip options for every install below: the local wheel folders and indexes when given.
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
      'args=""' \
      'for l in $PIP_LOCAL_FIND_LINKS; do args="$args --find-links $l"; done' \
      'for i in $PIP_LOCAL_INDEXES; do args="$args --extra-index-url $i"; done' \
      'if [ -n "$PIP_LOCAL_CERT" ]; then args="$args --cert $PIP_LOCAL_CERT"; fi' \
      'exec pip install $args "$@"' > /usr/local/bin/pip-install && chmod 755 /usr/local/bin/pip-install

# torch first and alone: the biggest layer, and the one spec that must not pull CUDA by accident.
RUN pip-install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
 && python -c "import torch; print('torch', torch.__version__)"

# The dependencies (the list made above), so that editing the source does not reinstall them.
COPY --from=requirements /requirements.txt /opt/aitasks/requirements.txt
RUN pip-install torch==2.13.0 -r /opt/aitasks/requirements.txt

# The models are the packages' files: load each once, offline, so a broken or missing one fails the build.
COPY containers/check_models.py /opt/aitasks/check_models.py
RUN python /opt/aitasks/check_models.py

COPY pyproject.toml README.md /opt/aitasks/src/
COPY src /opt/aitasks/src/src
RUN pip-install --no-deps /opt/aitasks/src && rm -rf /opt/aitasks/src/build \
 && aitasks --help >/dev/null
COPY containers/healthcheck.py /opt/aitasks/healthcheck.py

# Non-root: uid/gid 10001 owns only the data folder, HOME (matplotlib's cache) and nothing else. Mount a
# volume at /var/lib/aitasks (compose.yaml does); no VOLUME line, so no container leaves an anonymous one.
RUN groupadd --system --gid 10001 aitasks \
 && useradd --system --uid 10001 --gid aitasks --home-dir /home/aitasks --create-home --shell /usr/sbin/nologin aitasks \
 && install -d -o aitasks -g aitasks -m 0700 /var/lib/aitasks
USER 10001:10001
WORKDIR /var/lib/aitasks
ENV HOME=/home/aitasks \
    AITASKS_DATA_DIR=/var/lib/aitasks \
    AITASKS_HOST=0.0.0.0 \
    AITASKS_PORT=8000
EXPOSE 8000

# API: GET /healthz; worker: its heartbeat in Redis is fresh; Flower: its port answers (containers/healthcheck.py).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["python", "/opt/aitasks/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["aitasks", "api"]
