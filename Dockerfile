# msclr on NVIDIA GPUs: MeTRAbs (TensorFlow) extraction and PyTorch training in one image.
#
#   docker build -t msclr .
#   docker run --gpus all -v $PWD:/work -v msclr-tfhub:/cache/tfhub msclr extract /work/videos --out /work/cache
#
# CUDA and cuDNN come from the nvidia-*-cu12 wheels that torch 2.10.0 and tensorflow[and-cuda] 2.20.0
# share (CUDA 12.8, cuDNN 9.10; see docker/requirements-gpu.in); the base image supplies the CUDA 12.8
# user-space runtime that matches them, and the host needs an NVIDIA driver >= 570.
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04 ships Python 3.11 in its main archive (python3.11, python3.11-venv).  Apt versions are
# not pinned: the base image tag pins the distribution and its security updates should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/msclr \
    PATH=/opt/msclr/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TFHUB_CACHE_DIR=/cache/tfhub \
    TF_FORCE_GPU_ALLOW_GROWTH=true
RUN python3.11 -m venv /opt/msclr

WORKDIR /src
# Pinned, resolved dependency set first (a layer that survives source edits).
COPY docker/requirements-gpu.txt docker/requirements-gpu.txt
RUN pip install pip==25.3 \
    && pip install -r docker/requirements-gpu.txt
COPY pyproject.toml README.md ./
COPY msclr ./msclr
RUN pip install --no-deps . \
    && python -c "import msclr.cli, torch, tensorflow, tensorflow_hub; print('msclr image OK', torch.__version__, tensorflow.__version__)"

# A non-root user; MeTRAbs downloads are cached on a volume.
RUN useradd --create-home --uid 1000 msclr \
    && mkdir -p /cache/tfhub /work \
    && chown -R msclr:msclr /cache /work
VOLUME ["/cache/tfhub"]
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["msclr"]
CMD ["--help"]
