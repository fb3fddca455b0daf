#!/usr/bin/env bash
# Build a LOCAL STAND-IN for the `python:3.11-slim-bookworm` base image, for hosts that can reach
# Debian's package mirror but no container registry (so `FROM python:3.11-slim-bookworm` cannot be
# pulled). It is not the official image: Debian bookworm (debootstrap, minbase variant) with
# Debian's own python3.11, python3.11-venv and ca-certificates packages, and `python` -> python3.
# Official images put Python in /usr/local/bin; this one has it in /usr/bin. Everything the
# Dockerfile does (`python -m venv`, pip, uv) works the same on both.
#
# The host's extra CA certificates (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-intercepting
# proxy's) are added to the image's trust store, and SSL_CERT_FILE / PIP_CERT point uv and pip at
# it, so RUN steps can reach the package index. That is why this image must stay local: never push
# it, nor an image built on it, to a registry others pull from.
#
# Usage: docker/standin-base.sh [TAG]    (as root; ENGINE=podman|docker, DEBIAN_MIRROR=URL)
set -euo pipefail

TAG=${1:-localhost/gan-serve-base:python3.11-bookworm-standin}
ENGINE=${ENGINE:-podman}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

if [ "$(id -u)" != 0 ]; then
    echo "standin-base.sh: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "standin-base.sh: install debootstrap" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/gan-serve-standin.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
fail() { echo "standin-base.sh: $1 failed; its last lines:" >&2; tail -40 "$2" >&2; exit 1; }

echo "standin-base.sh: debootstrap $SUITE from $MIRROR" >&2
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || fail debootstrap "$work/debootstrap.log"

# Python through apt inside the new root: debootstrap's own resolver mishandles python3.11-venv.
cp /etc/resolv.conf "$root/etc/resolv.conf"
{
    chroot "$root" apt-get update -q
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends \
        python3.11 python3.11-venv python-is-python3
    chroot "$root" apt-get clean
} >"$work/apt.log" 2>&1 || fail apt-get "$work/apt.log"
: >"$root/etc/resolv.conf"

# The host's extra CAs, added the way Debian adds local ones.
extra_cas=(/usr/local/share/ca-certificates/*.crt)
if [ -e "${extra_cas[0]}" ]; then
    cp "${extra_cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
fi

# Slim it as python:3.11-slim is: no package lists, caches, docs, man pages or locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/* "$root"/tmp/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
find "$root/usr/lib/python3.11" -name '__pycache__' -prune -exec rm -rf {} +
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/99no-recommends"

tar --numeric-owner -C "$root" -cf - . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.opencontainers.image.description="LOCAL STAND-IN for python:3.11-slim-bookworm (debootstrap + Debian python3.11); do not push"' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "standin-base.sh: built $TAG" >&2
