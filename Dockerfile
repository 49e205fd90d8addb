# renal-ldm web app: Streamlit on port 8501, data (SQLite database, samples, survey images) in the /data volume.
#
#   docker build -t renal-ldm .
#   docker run -p 8501:8501 -v renal-ldm-data:/data renal-ldm
#
# requirements.txt pins torch exactly. From PyPI that is the CUDA build of torch for Linux (several GB; it runs
# on CPU too). For a small CPU-only image pass PyTorch's CPU wheel index:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t renal-ldm .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RENAL_LDM_HOME=/data \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --extra-index-url "$TORCH_INDEX_URL" -r requirements.txt; \
    else \
        pip install -r requirements.txt; \
    fi

COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 renal \
    && mkdir -p /data \
    && chown renal:renal /data

USER renal
VOLUME ["/data"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).read().strip() == b'ok' else 1)"

CMD ["streamlit", "run", "app/main.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
