# seqlens server image: CPU-only, non-root, read-only-root friendly.
#
#   docker build -t seqlens:dev .
#   docker run --rm -p 50051:50051 -p 9090:9090 --read-only --tmpfs /tmp seqlens:dev
#   docker run --rm -p 50051:50051 -p 9090:9090 --read-only --tmpfs /tmp \
#       -v "$PWD/models:/models:ro" -e SEQLENS_MODEL_REPOSITORY=/models seqlens:dev
#
# Two stages: the builder makes a virtualenv at /opt/venv and builds the demo model repository;
# the runtime stage copies both onto a fresh slim base (no compilers, no pip cache, no sources).
# tests/e2e/test_dockerfile.py lints this file with hadolint and replays its pip installs, so
# keep every install a plain `pip install` inside a RUN.

############################ builder ############################
FROM python:3.11-slim AS builder

# (Bytecode is compiled here, at install and demo-build time, so the read-only runtime need not.)
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# torch first, pinned exactly, CPU-only wheel, in its own layer (with the empty venv): it is by
# far the largest download (~200 MB) and this layer stays cached across every source change below.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
# The SDK (owns the generated gRPC stubs), then the server. The server's torch range is already
# satisfied by the pinned CPU wheel above, so pip leaves torch alone.
COPY clients/python ./clients/python
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir ./clients/python . \
    && pip check

# Bake the demo repository into the image (trained from data shipped in the package, exported to
# ONNX once, parity-checked), so that a container serves at once without writing anything.
RUN mkdir -p /opt/seqlens \
    && seqlens build-demo --output /opt/seqlens/demo \
    && seqlens check /opt/seqlens/demo

############################ runtime ############################
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="seqlens" \
      org.opencontainers.image.description="Serve RNN/LSTM/GRU models over gRPC, explain predictions" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric uid/gid so that Kubernetes can verify runAsNonRoot without resolving names.
RUN groupadd --system --gid 10001 seqlens \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin seqlens

# Owned by root and not writable by the service user: code and demo models are immutable.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/seqlens/demo /opt/seqlens/demo

# Everything the process may write goes under /tmp (a tmpfs / emptyDir when the root filesystem
# is read-only). Defaults are environment variables, not CMD flags, so that
# `-e SEQLENS_MODEL_REPOSITORY=/models` (or a Kubernetes env entry) overrides them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    SEQLENS_CACHE_DIR=/tmp/seqlens-cache \
    SEQLENS_HOST=0.0.0.0 \
    SEQLENS_PORT=50051 \
    SEQLENS_METRICS_PORT=9090 \
    SEQLENS_MODEL_REPOSITORY=/opt/seqlens/demo

USER 10001:10001
WORKDIR /tmp

# 50051: gRPC (seqlens.v1, OIP v2 inference, grpc.health.v1, reflection); 9090: Prometheus /metrics.
EXPOSE 50051 9090

# No HEALTHCHECK: Kubernetes uses native gRPC probes against grpc.health.v1 (deploy/k8s), and a
# Docker HEALTHCHECK would need a client binary in the image. SIGTERM drains: health turns
# NOT_SERVING, in-flight RPCs finish (up to SEQLENS_DRAIN_GRACE_S, default 20 s), then exit;
# give `docker stop -t` / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["seqlens", "serve"]
CMD []
