#!/usr/bin/env bash
# Set up and run the example erasure workflow headless (see tools/run_workflow.py); arguments go to it.
# ComfyUI: $COMFYUI_PATH, else the one whose custom_nodes/ holds the pack or ~/ComfyUI (tools/find_comfyui.sh),
# else the newest release in ../shared/comfyui, else a shallow clone of the release below, kept in the cache.
set -euo pipefail
tools="$(cd "$(dirname "$0")" && pwd)"
RELEASE="v0.33.0"     # the newest ComfyUI release CI tests (pyproject.toml's requires-comfyui)
comfyui="$(bash "$tools/find_comfyui.sh")"
[ -n "$comfyui" ] || comfyui="$(bash "$tools/comfyui_releases.sh" | tail -n 1)"
if [ -z "$comfyui" ]; then
  comfyui="${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-unlearn/comfyui/$RELEASE/ComfyUI"
  if [ ! -f "$comfyui/comfy/model_patcher.py" ]; then
    echo "getting ComfyUI $RELEASE into $comfyui" >&2
    rm -rf "$comfyui"
    git clone --quiet --depth 1 --branch "$RELEASE" https://github.com/comfyanonymous/ComfyUI "$comfyui" >&2
  fi
fi
echo "ComfyUI: $comfyui" >&2
python="$(bash "$tools/setup_env.sh" "$comfyui")"
COMFYUI_PATH="$comfyui" exec "$python" "$tools/run_workflow.py" "$@"
