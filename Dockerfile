# Multi-stage build of the Endpoint Picker image: build a wheel, install only runtime dependencies, run as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY extproc extproc
COPY endpoint_picker endpoint_picker
COPY stack stack
COPY simulator simulator
COPY benchmarks benchmarks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin picker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 9002 9003 9090
ENTRYPOINT ["endpoint-picker", "serve"]
