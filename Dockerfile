# One image for every role of receiver.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY receiver ./receiver
RUN pip install . && useradd --system --uid 10001 --home /app receiver && mkdir -p /app/var && chown 10001 /app/var
COPY config ./config

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001
EXPOSE 8080
# No RECEIVER_HTTP__HOST here: the image alone listens on loopback. Whoever opens it to the network
# (RECEIVER_HTTP__HOST=0.0.0.0: deploy/compose.yaml, the k8s ConfigMap) gives it an API token too.
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["receiver", "--config", "config/receiver.toml"]
# One process; RECEIVER_HTTP__WORKERS=N (or `serve --workers N`) runs N on the one port.
CMD ["serve"]
