#!/usr/bin/env bash
# The test command: set up the environment, then run every test. The real-ComfyUI tests run when
# COMFYUI_PATH names a ComfyUI checkout, or ~/ComfyUI holds one; otherwise they skip, visibly.
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash tools/setup_env.sh)"
if [ -z "${COMFYUI_PATH:-}" ] && [ -f "$HOME/ComfyUI/comfy/model_patcher.py" ]; then
  export COMFYUI_PATH="$HOME/ComfyUI"
fi
exec "$python" -m pytest -q -rs "$@" tests
