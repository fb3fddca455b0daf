#!/usr/bin/env bash
# Build a gan-serve image with whatever container engine this host has, and check it.
#
#   docker/image.sh build [cpu|gpu]    build gan-serve:<target>
#   docker/image.sh check [cpu|gpu]    build it, then run tests/container against the running image
#
# `make image`, `make image-cpu` and `make image-check` call this. Settings (environment):
#   ENGINE        docker or podman (default: docker when a Docker engine answers, else podman, which is
#                 installed from Debian's packages when absent and this is a Debian host run as root)
#   PYTHON_IMAGE  the base image (default: python:3.11-slim-bookworm, pulled; when no registry can be
#                 reached, the local stand-in that docker/standin-base.sh builds with debootstrap)
#   MODELS        zoo (default: the built-in models in the image) or none
#   PYTHON        the interpreter that runs the tests (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

OFFICIAL_BASE=docker.io/library/python:3.11-slim-bookworm
STANDIN_BASE=localhost/gan-serve-base:python3.11-bookworm-standin
PULL_TIMEOUT=${PULL_TIMEOUT:-60}

say() { echo "image.sh: $*" >&2; }

install_podman() {
    if [ -r /etc/debian_version ] && [ "$(id -u)" = 0 ]; then
        say "no container engine: installing Debian's podman, buildah and runc"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            podman buildah runc debootstrap containernetworking-plugins iptables uidmap >/dev/null
    else
        say "no Docker engine answers and podman is not installed: install one of them"
        exit 1
    fi
}

pick_engine() {
    if [ -z "${ENGINE:-}" ]; then
        if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
            ENGINE=docker
        else
            command -v podman >/dev/null || install_podman
            ENGINE=podman
        fi
    fi
    if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null; then
        # runc and explicit rlimits: what podman needs on hosts like our CI machines (the file says why).
        export CONTAINERS_CONF=$PWD/docker/containers.conf
    fi
    export ENGINE
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

pick_base() {
    if [ -n "${PYTHON_IMAGE:-}" ]; then
        return
    fi
    if image_exists "$OFFICIAL_BASE" || timeout "$PULL_TIMEOUT" "$ENGINE" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
        PYTHON_IMAGE=$OFFICIAL_BASE
        return
    fi
    say "cannot pull $OFFICIAL_BASE: using the local stand-in $STANDIN_BASE (docker/standin-base.sh)"
    if ! image_exists "$STANDIN_BASE"; then
        docker/standin-base.sh "$STANDIN_BASE"
    fi
    PYTHON_IMAGE=$STANDIN_BASE
}

build() {
    local target=$1
    local args=(build --target "$target" --tag "gan-serve:$target"
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "MODELS=${MODELS:-zoo}")
    # podman's default OCI image format has no HEALTHCHECK; the Docker format keeps it.
    [ "$ENGINE" = podman ] && args+=(--format docker)
    say "$ENGINE ${args[*]} ."
    local start=$SECONDS
    "$ENGINE" "${args[@]}" .
    local size
    size=$("$ENGINE" image inspect --format '{{.Size}}' "gan-serve:$target")
    say "built gan-serve:$target in $((SECONDS - start)) s: $((size / 1000000)) MB (base $PYTHON_IMAGE)"
}

check() {
    local target=$1
    local start=$SECONDS
    GAN_SERVE_TEST_IMAGE="gan-serve:$target" GAN_SERVE_TEST_ENGINE=$ENGINE \
        "${PYTHON:-.venv/bin/python}" -m pytest tests/container -q -p no:cacheprovider
    say "tests/container against gan-serve:$target passed in $((SECONDS - start)) s"
}

command=${1:-check}
target=${2:-${IMAGE_TARGET:-cpu}}
case "$target" in
    cpu | gpu) ;;
    *) say "target must be cpu or gpu, not '$target'"; exit 2 ;;
esac
pick_engine
pick_base
case "$command" in
    build) build "$target" ;;
    check) build "$target" && check "$target" ;;
    *) say "usage: docker/image.sh build|check [cpu|gpu]"; exit 2 ;;
esac
