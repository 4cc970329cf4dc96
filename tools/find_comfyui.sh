#!/usr/bin/env bash
# Print the ComfyUI checkout the scripts use, or nothing: $COMFYUI_PATH when it is set (set and empty:
# none, to run without ComfyUI), else the ComfyUI whose custom_nodes/ holds this pack, else ~/ComfyUI.
set -euo pipefail
pack="$(cd "$(dirname "$0")/.." && pwd)"   # logical: a symlinked install counts where it is linked
if [ -n "${COMFYUI_PATH+set}" ]; then
  candidates=("$COMFYUI_PATH")
else
  candidates=("$(dirname "$(dirname "$pack")")" "$HOME/ComfyUI")
fi
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && [ -f "$candidate/comfy/model_patcher.py" ]; then
    (cd "$candidate" && pwd -P)
    exit 0
  fi
done
