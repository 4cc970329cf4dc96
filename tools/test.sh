#!/usr/bin/env bash
# The test command: set up the environment, then run every test. The real-ComfyUI tests run when a
# ComfyUI checkout is found (tools/find_comfyui.sh: COMFYUI_PATH, the ComfyUI whose custom_nodes/
# holds this pack, or ~/ComfyUI); otherwise they skip, visibly. COMFYUI_PATH= (empty) runs without.
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash tools/setup_env.sh)"
comfyui="$(bash tools/find_comfyui.sh)"
if [ -n "$comfyui" ]; then export COMFYUI_PATH="$comfyui"; else unset COMFYUI_PATH; fi
exec "$python" -m pytest -q -rs -p no:cacheprovider "$@" tests
