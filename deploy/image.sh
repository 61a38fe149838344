#!/usr/bin/env bash
# `make image`: build localhost/proxysigv4:<version> with podman, offline: a Python 3.13 base
# (BASE, default a Debian trixie image made here with debootstrap, since no registry can be
# reached; elsewhere BASE=python:3.13-slim), the wheelhouse for that Python, then the Containerfile.
# Prints the tag on its last line. `deploy/image.sh wheels` (make wheels) makes only the wheelhouse.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version *= *//p' setup.cfg)
TAG="localhost/proxysigv4:${VERSION}"
BASE="${BASE:-localhost/proxysigv4-base:trixie}"
BUILD=deploy/build
PY=${PY:-.venv/bin/python}
export CONTAINERS_CONF="$PWD/deploy/podman/containers.conf"
podman_() { podman --runtime runc "$@"; }

wheels() {  # the wheelhouse: the project's wheel and every dependency's, for CPython 3.13 on x86_64 Linux
  rm -rf "$BUILD" && mkdir -p "$BUILD/wheels"
  "$PY" -m pip wheel --quiet --no-deps -w "$BUILD/wheels" .
  "$PY" -m pip download --quiet --only-binary=:all: --python-version 3.13 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
    -d "$BUILD/wheels" "$BUILD"/wheels/proxysigv4-*.whl
}
if [ "${1:-}" = wheels ]; then wheels; echo "$BUILD/wheels"; exit 0; fi

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
  else
    echo "make image needs podman and runc (apt-get install podman runc)" >&2; exit 1
  fi
fi

if ! podman_ image exists "$BASE"; then
  case "$BASE" in
    localhost/*)
      command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
      mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      root=$(mktemp -d /tmp/proxysigv4-base.XXXXXX)
      trap 'rm -rf "$root"' EXIT
      echo "building the base $BASE (debootstrap trixie from ${mirror:-deb.debian.org}, about 2 minutes)"
      debootstrap --variant=minbase trixie "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
      chroot "$root" apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
      chroot "$root" apt-get clean
      rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
      tar -C "$root" -c . | podman_ import - "$BASE" >/dev/null
      ;;
    *) podman_ pull "$BASE" ;;
  esac
fi

wheels

podman_ build --quiet --build-arg BASE="$BASE" -t "$TAG" -f deploy/Containerfile "$BUILD" >/dev/null
size=$(podman_ image inspect "$TAG" --format '{{.Size}}')
echo "built $TAG ($((size / 1024 / 1024)) MiB, on $BASE)"
echo "$TAG"
