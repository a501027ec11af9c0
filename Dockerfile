# evertrain: one image for the controller and the serving replicas.
#   docker build -t evertrain .
# The command decides the role: `evertrain run` (controller) or `evertrain serve` (replica).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# s3: artifacts, logs and warehouse files on S3-compatible storage; ray: the Ray executor; sweep: Optuna.
RUN pip install ".[s3,ray,sweep]"

# An unprivileged user; the spool of log rows that wait for the object store lives under /work.
RUN useradd --create-home --uid 10001 evertrain \
    && mkdir -p /work && chown evertrain /work
USER evertrain
WORKDIR /work
ENV EVERTRAIN_SPOOL_DIR=/work/.evertrain/spool

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["evertrain"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
