# The load-generator image for `load.placement: kubernetes` (docs/kubernetes.md, section 8): the
# Locust master and worker pods run `python -m perfgate.load.engine --master|--worker ...` from it.
#
#   docker build -f scenarios/k8s/load-generator.Dockerfile -t perfgate-load:0.1.0 .
#   kind load docker-image perfgate-load:0.1.0 --name perfgate
#   # scenario: load: {placement: kubernetes, workers: 4, worker_image: "perfgate-load:0.1.0"}
#
# Only what the engine imports is installed (perfgate without its dependencies, plus Locust): no
# pandas, matplotlib or Kubernetes client in the pods. Build it from the same perfgate version
# that runs the gate: the protocol version is checked when the run starts. The build fails if the
# engine cannot start.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY perfgate ./perfgate
RUN python -m build --wheel --outdir /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist/*.whl /tmp/
RUN python -m pip install --no-cache-dir --no-deps /tmp/perfgate-*.whl \
 && python -m pip install --no-cache-dir "locust>=2.40,<3" \
 && rm /tmp/perfgate-*.whl \
 && python -m perfgate.load.engine --worker --help > /dev/null \
 && python -m perfgate.load.engine --master --help > /dev/null \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin locust
USER 10001
# the Deployments set the command; 5557 is Locust's port (the control port stays on 127.0.0.1)
EXPOSE 5557
