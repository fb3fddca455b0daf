# syntax=docker/dockerfile:1
#
# gan-serve images. Two targets, one Dockerfile:
#
#   docker build --target gpu -t gan-serve:gpu .    # onnxruntime-gpu (CUDA 13, cuDNN 9)
#   docker build --target cpu -t gan-serve:cpu .    # onnxruntime (CPU)
#
# GPU base: a slim Python image plus the NVIDIA runtime libraries that `onnxruntime-gpu[cuda,cudnn]`
# pulls from PyPI, rather than an nvidia/cuda:13-cudnn-runtime base. The pip wheels carry only the
# libraries onnxruntime links (cudart, cublas, cufft, curand, cudnn), pinned by onnxruntime-gpu itself
# to versions it was built against; the CUDA base image ships the whole toolkit runtime on top of its
# own Ubuntu and would duplicate them. Both targets then share every layer but the dependency one.
# The NVIDIA driver is never in the image: the host's NVIDIA container toolkit mounts it at run time.
#
# Models: the image serves whatever ONNX model repository is in /opt/ml/model (GAN_SERVE_MODELS_DIR).
# That is where SageMaker unpacks model.tar.gz, where docker-compose.yml mounts its `models` volume,
# and where `docker run -v "$PWD/models:/opt/ml/model:ro"` puts yours. By default the image also
# carries the built-in model zoo there, built by the `models` stage below; an empty named volume
# mounted there starts with a copy of it. `--build-arg MODELS=none` leaves the directory empty
# (smaller image, no TensorFlow build stage): the models must then be mounted or unpacked at run time.
#
# TensorFlow exists only in the `models` build stage; the serving targets install the `gpu` or `cpu`
# extra and nothing else.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# `zoo`: bake the built-in model repository into the image; `none`: models arrive at run time.
ARG MODELS=zoo

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
# Only the dependency lists: this layer and the install below survive source edits.
COPY pyproject.toml ./
# Writes the requirements of the given extras, read from pyproject.toml (no source needed yet).
COPY docker/requirements.py /usr/local/bin/gan-serve-requirements

# ---------------------------------------------------------------------------------------------------
# The project as a wheel; runtime stages install it with --no-deps on top of their dependency layer.
FROM python AS wheel
COPY README.md ./
COPY service ./service
COPY export ./export
COPY zoo ./zoo
COPY deploy ./deploy
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------
# Build stage for the built-in model repository: TensorFlow, tf2onnx and the zoo recipes live here only.
FROM python AS models-zoo
# gan-face-generate: only its weights file is used (as in the Makefile); --no-deps keeps PyTorch out.
RUN python /usr/local/bin/gan-serve-requirements cpu export zoo > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps gan-face-generate==1.1.1
# Run from the source tree, as `make models` does: the zoo reads its weights from zoo/weights/.
COPY service ./service
COPY export ./export
COPY zoo ./zoo
RUN python -m zoo.build --repo /models

FROM python AS models-none
RUN mkdir /models

# models-zoo or models-none: a stage of this file, not an image, so it has no tag (DL3006).
# hadolint ignore=DL3006
FROM models-${MODELS} AS models

# ---------------------------------------------------------------------------------------------------
# Everything the two serving targets share: user, contract labels, settings, health check, entrypoint.
FROM python AS serve
# SageMaker may then pass SAGEMAKER_BIND_TO_PORT (the container contract's bind-to-port capability).
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="gan-serve" \
      org.opencontainers.image.description="GAN generators and SRGAN upscalers served from onnxruntime"
# Non-root (uid 10001): the server writes nothing and only reads /opt/ml/model, whose files
# `gan-export package` writes world-readable. A mounted repository readable by root only needs
# `docker run --user 0` (or compose `user: "0"`).
RUN groupadd --system --gid 10001 gan-serve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gan-serve
# SAGEMAKER_BIND_TO_PORT here is only the default of the SageMaker contract (port 8080): SageMaker sets
# its own value at run time, and GAN_SERVE_PORT, when given, wins over both.
ENV GAN_SERVE_HOST=0.0.0.0 \
    GAN_SERVE_MODELS_DIR=/opt/ml/model \
    SAGEMAKER_BIND_TO_PORT=8080
EXPOSE 8080
# Ready means every model is loaded and warmed; python keeps curl out of the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=240s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; p = os.environ.get('GAN_SERVE_PORT') or os.environ['SAGEMAKER_BIND_TO_PORT']; r.urlopen(f'http://127.0.0.1:{p}/health/ready', timeout=4)"]
# SageMaker runs `docker run IMAGE serve`; `gan-serve serve` and plain `gan-serve` do the same.
ENTRYPOINT ["gan-serve"]
CMD ["serve"]
WORKDIR /opt/ml

# ---------------------------------------------------------------------------------------------------
FROM serve AS cpu
ENV GAN_SERVE_DEVICE=cpu
RUN python /usr/local/bin/gan-serve-requirements --pyproject /build/pyproject.toml cpu > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl
COPY --from=models /models /opt/ml/model
USER 10001:10001

# ---------------------------------------------------------------------------------------------------
FROM serve AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# GAN_SERVE_DEVICE=cuda: fail at start on a host without a usable GPU rather than fall back to the CPU.
ENV GAN_SERVE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The pip CUDA/cuDNN libraries sit in site-packages: registering their directories with the dynamic
# linker lets onnxruntime's CUDA provider find them without onnxruntime.preload_dlls().
RUN python /usr/local/bin/gan-serve-requirements --pyproject /build/pyproject.toml gpu > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && find /opt/venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' \
       | sort -u > /etc/ld.so.conf.d/zz-nvidia-pip.conf \
    && ldconfig
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl
COPY --from=models /models /opt/ml/model
USER 10001:10001
