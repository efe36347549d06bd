# syntax=docker/dockerfile:1
# The Endpoint Picker image: the project's wheel and its runtime dependencies' wheels are built in one stage and
# installed into a slim Python image that runs as a non-root user. No container engine runs in this project's
# CI, so `make image-check` (scripts/check_image_install.py) performs the same COPY, `pip wheel` and
# `pip install --no-index` steps in clean virtualenvs and runs the entrypoint.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY protos protos
COPY extproc extproc
COPY endpoint_picker endpoint_picker
COPY picker_api picker_api
COPY stack stack
COPY simulator simulator
COPY benchmarks benchmarks
# The project's wheel (setup.py generates the gRPC stubs of protos/ into it) plus one wheel per runtime
# dependency; the [stack] and [test] extras are not included.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted, not copied: no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin picker
# Numeric, so Kubernetes can verify runAsNonRoot. Nothing is written at run time: the root filesystem can be
# read-only (mount an emptyDir at /tmp for libraries that want a scratch directory).
USER 65532:65532
# 9002 ext_proc (gRPC, TLS), 9003 gRPC health, 9090 Prometheus metrics.
EXPOSE 9002 9003 9090
ENTRYPOINT ["endpoint-picker", "serve"]
