#!/usr/bin/env bash
# A stand-in for python:3.11-slim where no image registry is reachable, built from Debian packages:
# Debian bookworm (minbase) with its Python 3.11 and pip, made to behave like the official image for
# the Dockerfile (`python` and `pip` on PATH, pip may install system-wide). Run as root; needs
# debootstrap and podman (or docker: pass ENGINE=docker).
#   scripts/debian_base.sh                      # -> localhost/python:3.11-bookworm
#   podman build --build-arg BASE_IMAGE=localhost/python:3.11-bookworm -t lpgnet-erc .
set -euo pipefail

ENGINE=${ENGINE:-podman}
TAG=${TAG:-localhost/python:3.11-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/debian-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,passwd \
    bookworm "$ROOTFS" "$MIRROR"
# the official image's names for the interpreter and pip
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
# the host's own extra CAs (a TLS-intercepting proxy it trusts): without them pip in the build
# failed with CERTIFICATE_VERIFY_FAILED on pypi.org
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates
fi
# an image is its own environment: let pip install system-wide (into /usr/local, as in python:3.11-slim)
rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
# what an image does not need: apt lists, docs, man pages
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/*

tar -C "$ROOTFS" -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG"
echo "built $TAG"
