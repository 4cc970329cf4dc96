#!/usr/bin/env bash
# Print the ComfyUI releases the tests run against, oldest first, one checkout path a line: each source tarball
# ComfyUI-<version>.tar.gz in $COMFYUI_RELEASES (default: ../shared/comfyui beside the pack) unpacked once into
# $COMFYUI_UNPACK_DIR/<version>/ComfyUI (default: ~/.cache/comfyui-unlearn/comfyui). Prints nothing when there
# are no tarballs.
set -euo pipefail
pack="$(cd "$(dirname "$0")/.." && pwd)"
releases="${COMFYUI_RELEASES:-$pack/../shared/comfyui}"
unpack_dir="${COMFYUI_UNPACK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-unlearn/comfyui}"
shopt -s nullglob
for tarball in $(printf '%s\n' "$releases"/ComfyUI-*.tar.gz | sort -V); do
  version="$(basename "$tarball" .tar.gz)"; version="${version#ComfyUI-}"
  dest="$unpack_dir/$version"
  if [ ! -f "$dest/ComfyUI/comfy/model_patcher.py" ]; then
    rm -rf "$dest" && mkdir -p "$dest"
    tar -xzf "$tarball" -C "$dest"
  fi
  echo "$dest/ComfyUI"
done
