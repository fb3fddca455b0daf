#
# gan-serve images. Two targets, one Dockerfile:
#
#   docker build --target gpu -t gan-serve:gpu .    # onnxruntime-gpu (CUDA 13.0, cuDNN 9.14)
#   docker build --target cpu -t gan-serve:cpu .    # onnxruntime (CPU)
#
# Any builder builds it the same way: Docker with or without BuildKit, podman and buildah. No
# `# syntax=` line (BuildKit would pull a frontend image from a registry), no RUN --mount from other
# stages (buildah cannot bind-mount a stage that came from its layer cache), and no FROM chosen by a
# build argument (buildah then needs --skip-unused-stages=false): stages hand files on with
# COPY --from, and the one choice a build argument makes (MODELS) is made inside a RUN step.
#
# Dependencies come from uv.lock, exactly: `uv sync --locked` refuses to build when uv.lock and
# pyproject.toml disagree (`make lock` brings them back together). The serving targets copy the
# virtual environment out of a build stage, so neither uv nor pip's caches reach them.
#
# GPU base: the same slim Python image plus the NVIDIA runtime libraries from PyPI (the `gpu` extra
# pins them as one set, CUDA 13.0 + cuDNN 9.14; docs/deploy.md says why), rather than an
# nvidia/cuda:13-cudnn-runtime base: only the libraries onnxruntime links, and the two targets share
# every layer but the dependency one. The NVIDIA driver is never in the image: the host's NVIDIA
# container toolkit (or SageMaker) mounts it at run time.
#
# Base image: PYTHON_IMAGE. Hosts that reach a package index but no container registry build a
# local stand-in with docker/standin-base.sh (`make image-check` does this by itself).
#
# Models: the image serves whatever ONNX model repository is in /opt/ml/model (GAN_SERVE_MODELS_DIR).
# That is where SageMaker unpacks model.tar.gz, where docker-compose.yml mounts its `models` volume,
# and where `docker run -v "$PWD/models:/opt/ml/model:ro"` puts yours. By default the image also
# carries the built-in model zoo there, built by the `models` stage below; an empty named volume
# mounted there starts with a copy of it. `--build-arg MODELS=none` leaves the directory empty
# (smaller image, no TensorFlow download): the models must then be mounted or unpacked at run time.
#
# TensorFlow exists only in the `models` build stage; the serving targets install the `cpu` or `gpu`
# extra and nothing else.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# `zoo`: bake the built-in model repository into the image; `none`: models arrive at run time.
ARG MODELS=zoo
# The uv that reads uv.lock; the same version as the dev extra's (tests/static checks they agree).
ARG UV_VERSION=0.13.9

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------------
# Build stages start here: uv and the lock, nothing else yet.
FROM python AS uv
ARG UV_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /build
# Only the dependency lists: the dependency layers below survive source edits.
COPY pyproject.toml uv.lock ./

FROM uv AS deps-cpu
RUN uv sync --locked --no-install-project --extra cpu

FROM uv AS deps-gpu
RUN uv sync --locked --no-install-project --extra gpu

# The project itself, installed under a prefix laid out like /opt/venv, which the serving targets
# copy over their dependency environment: a source edit rebuilds one small layer, not the venv.
FROM uv AS project
COPY README.md ./
COPY service ./service
COPY export ./export
COPY zoo ./zoo
COPY deploy ./deploy
RUN uv build --wheel --out-dir /wheels . \
    && uv venv --quiet /opt/venv \
    && uv pip install --python /opt/venv/bin/python --prefix /project --no-deps /wheels/*.whl \
    && rm -f /project/.lock

# The built-in model repository: TensorFlow, tf2onnx and the zoo recipes live in this stage only.
# With MODELS=none it is an empty directory and installs nothing.
FROM uv AS models
ARG MODELS
# gan-face-generate: only its weights file is used (as in the Makefile); --no-deps keeps PyTorch out.
RUN case "$MODELS" in \
      zoo) uv sync --locked --no-install-project --extra cpu --extra export --extra zoo \
           && uv pip install --no-deps gan-face-generate==1.1.1 ;; \
      none) ;; \
      *) echo "MODELS must be zoo or none, not '$MODELS'" >&2; exit 1 ;; \
    esac
# Run from the source tree, as `make models` does: the zoo reads its weights from zoo/weights/.
COPY service ./service
COPY export ./export
COPY zoo ./zoo
RUN if [ "$MODELS" = zoo ]; then python -m zoo.build --repo /models; else mkdir /models; fi

# ---------------------------------------------------------------------------------------------------
# Everything the two serving targets share: user, contract labels, settings, health check, entrypoint.
FROM python AS serve
# SageMaker may then pass SAGEMAKER_BIND_TO_PORT (the container contract's bind-to-port capability).
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="gan-serve" \
      org.opencontainers.image.description="GAN generators and SRGAN upscalers served from onnxruntime"
# Non-root (uid 10001) with a home directory, where onnxruntime and Python keep per-user state. The
# server only reads /opt/ml/model, whose files `gan-export package` writes world-readable. A mounted
# repository readable by root only needs `docker run --user 0` (or compose `user: "0"`).
RUN groupadd --system --gid 10001 gan-serve \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/gan-serve \
       --shell /usr/sbin/nologin gan-serve
# SAGEMAKER_BIND_TO_PORT here is only the default of the SageMaker contract (port 8080): SageMaker sets
# its own value at run time, and GAN_SERVE_PORT, when given, wins over both.
ENV HOME=/home/gan-serve \
    GAN_SERVE_HOST=0.0.0.0 \
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
COPY --from=deps-cpu /opt/venv /opt/venv
COPY --from=project /project/ /opt/venv/
COPY --from=models /models /opt/ml/model
USER 10001:10001

# ---------------------------------------------------------------------------------------------------
FROM serve AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# GAN_SERVE_DEVICE=cuda: fail at start on a host without a usable GPU rather than fall back to the CPU.
ENV GAN_SERVE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=deps-gpu /opt/venv /opt/venv
# The pip CUDA/cuDNN libraries sit in site-packages: registering their directories with the dynamic
# linker lets onnxruntime's CUDA provider find them without onnxruntime.preload_dlls().
RUN find /opt/venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' \
       | sort -u > /etc/ld.so.conf.d/zz-nvidia-pip.conf \
    && ldconfig
COPY --from=project /project/ /opt/venv/
COPY --from=models /models /opt/ml/model
USER 10001:10001
