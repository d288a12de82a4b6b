# One replica of the cnnvis dashboard (see the README, "Several replicas"):
#   docker build -t cnnvis .
#   docker run -p 8501:8501 -v cnnvis-results:/results cnnvis
# Everything a user needs lives in the browser session (one replica, held by the load balancer's
# sticky sessions) or in the results folder (CNNVIS_RESULTS, a volume: mount shared storage there).
FROM python:3.12-slim

# torch and torchvision come from PyTorch's CPU index (no CUDA libraries: ~1 GB instead of ~5 GB);
# build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or PyPI's index) for a GPU.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CNNVIS_RESULTS=/results \
    TORCH_HOME=/cache/torch \
    HF_HOME=/cache/huggingface

WORKDIR /app

# the versions requirements.txt asks for: torch and torchvision first from TORCH_INDEX, then the rest
COPY requirements.txt ./
RUN python -m pip install --index-url "$TORCH_INDEX" $(grep -E '^torch(vision)?[<>=~!]' requirements.txt | cut -d'#' -f1) \
 && python -m pip install -r requirements.txt

COPY .streamlit/ .streamlit/
COPY cnnvis_core/ cnnvis_core/
COPY dashboard/ dashboard/
COPY pages/ pages/
COPY app.py ./

RUN useradd --create-home --uid 10001 cnnvis \
 && mkdir -p /results /cache/torch /cache/huggingface \
 && chown -R cnnvis /results /cache
USER cnnvis

# finished data set jobs and uploaded archives (shared by replicas when shared storage is mounted);
# pretrained weights downloaded on first use (mount a volume to keep them)
VOLUME ["/results", "/cache"]
EXPOSE 8501

# Streamlit's own health endpoint answers "ok" once the server is up (no curl in the slim image)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read().strip() != b'ok')"]

CMD ["python", "-m", "streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--server.headless=true", "--server.fileWatcherType=none"]
