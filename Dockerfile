# querylift: one image for all five consumers (and the Ray nodes that train adapters).
#   docker build -t querylift:local .
#   docker run --rm querylift:local run query
FROM python:3.11-slim AS build

# llama-cpp-python builds from source when no wheel matches the platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV"

# The CPU build of torch first, from its own index, so `.[ml]` does not pull the CUDA wheels.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
# README.md* : the readme is optional for the build context
COPY pyproject.toml README.md* ./
COPY events ./events
COPY services ./services
COPY bench ./bench
RUN pip install ".[ml,weaviate]"


FROM python:3.11-slim

# libgomp: OpenMP runtime that torch and llama.cpp load; curl for container health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 querylift \
    && mkdir -p /data && chown querylift /data

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    QUERYLIFT_DATA_DIR=/data \
    QUERYLIFT_METRICS_HOST=0.0.0.0 \
    QUERYLIFT_METRICS_PORT=9400 \
    HF_HUB_OFFLINE=1

COPY --from=build /opt/venv /opt/venv
COPY schemas /opt/querylift/schemas

USER querylift
WORKDIR /home/querylift
VOLUME ["/data"]
EXPOSE 9400

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${QUERYLIFT_METRICS_PORT}/healthz" || exit 1

ENTRYPOINT ["querylift"]
CMD ["--help"]
