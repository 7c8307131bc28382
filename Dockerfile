# The reference exchange as a container image, for perfgate's Kubernetes staging
# (scenarios/k8s/exchange, scenarios/exchange-k8s.yaml; step by step in docs/kubernetes.md).
#
#   docker build -t perfgate-exchange:v1 .
#   docker run --rm -p 8080:8080 perfgate-exchange:v1            # then: curl localhost:8080/health
#   kind load docker-image perfgate-exchange:v1 --name perfgate   # make it available to kind
#
# The image runs `perfgate exchange serve --host 0.0.0.0 --port 8080 --config-json '{...}'`; the
# Deployment passes the capacity knobs from its ConfigMap as --config-json.
#
# Only what `perfgate exchange serve` imports is installed (typer for the CLI, aiohttp for the
# server): the load generator, analysis and Kubernetes dependencies of perfgate stay out of the
# system under test. The build fails if that command cannot start.

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
 && python -m pip install --no-cache-dir "typer>=0.12" "aiohttp>=3.9" \
 && rm /tmp/perfgate-*.whl \
 && perfgate exchange serve --help > /dev/null \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin exchange
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["perfgate"]
CMD ["exchange", "serve", "--host", "0.0.0.0", "--port", "8080", "--config-json", "{}"]
