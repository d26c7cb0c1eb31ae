#!/usr/bin/env bash
# Assemble the flagstream image's base from Debian's archive, without a container registry:
# Debian minbase + python3 (+ venv, CA certificates), no docs or translations, imported into
# the local container storage (podman) as an image usable as the Dockerfile's BASE_IMAGE.
#
#   deploy/image/build-base.sh [TAG]          # default localhost/flagstream-base:bookworm
#   buildah bud --format docker --build-arg BASE_IMAGE=localhost/flagstream-base:bookworm \
#       -t localhost/flagstream:dev .
#
# The root filesystem tarball is cached in $FLAGSTREAM_IMAGE_CACHE (default
# ~/.cache/flagstream/image) for FLAGSTREAM_BASE_MAX_AGE_DAYS (7) days, so security updates
# arrive within a week; the import is skipped when TAG already names that tarball's image.
# Needs root (or a user namespace), mmdebstrap and podman: `make ops-tools` installs them.
set -euo pipefail

SUITE="${FLAGSTREAM_BASE_SUITE:-bookworm}"
TAG="${1:-localhost/flagstream-base:$SUITE}"
CACHE="${FLAGSTREAM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flagstream/image}"
MAX_AGE_DAYS="${FLAGSTREAM_BASE_MAX_AGE_DAYS:-7}"
MIRROR="${FLAGSTREAM_DEBIAN_MIRROR:-http://deb.debian.org}"
PACKAGES="python3,python3-venv,ca-certificates"

for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: make ops-tools" >&2; exit 1; }
done
mkdir -p "$CACHE"
# The tarball's name changes with what goes into it.
recipe="$(printf '%s\n' "$SUITE" "$PACKAGES" "$MIRROR" "$(sed -n '/^mmdebstrap_args/,/^}/p' "$0")" | sha256sum | cut -c1-12)"
tarball="$CACHE/base-$SUITE-$recipe.tar"

mmdebstrap_args() {
  printf '%s\n' \
    --variant=minbase \
    --format=tar \
    --include="$PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$tarball.partial" \
    "deb $MIRROR/debian $SUITE main" \
    "deb $MIRROR/debian $SUITE-updates main" \
    "deb $MIRROR/debian-security $SUITE-security main"
}

if [[ -f "$tarball" ]] && [[ -z "$(find "$tarball" -mtime "+$MAX_AGE_DAYS")" ]]; then
  echo "base: reusing $tarball"
else
  echo "base: assembling Debian $SUITE minbase + $PACKAGES with mmdebstrap (1-2 min)"
  rm -f "$tarball.partial"
  mapfile -t args < <(mmdebstrap_args)
  mmdebstrap --quiet "${args[@]}"
  mv "$tarball.partial" "$tarball"
fi

# Import only if TAG is not already this tarball's image.
wanted="$(basename "$tarball" .tar)-$(stat -c %Y "$tarball")"
current="$(podman image inspect --format '{{ index .Labels "org.flagstream.base" }}' "$TAG" 2>/dev/null || true)"
if [[ "$current" == "$wanted" ]]; then
  echo "base: $TAG is up to date"
else
  podman import --quiet \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.flagstream.base=$wanted" \
    "$tarball" "$TAG" >/dev/null
  echo "base: imported $TAG"
fi
