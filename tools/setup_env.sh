#!/usr/bin/env bash
# Create or update the Python environment the tests, benchmarks and headless runs use, and print its
# python. torch is pinned first (a bare `torch` would pull gigabytes of CUDA); ComfyUI's own
# requirements are added when a ComfyUI checkout is found (tools/find_comfyui.sh).
set -euo pipefail
VENV="${UNLEARN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-unlearn/venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >&2
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check --quiet "$@" >&2; }
constraints="$(mktemp)"; trap 'rm -f "$constraints" "$constraints.req"' EXIT
echo "torch==2.13.0" > "$constraints"
pip install "torch==2.13.0"
pip install -c "$constraints" pytest safetensors numpy "diffusers==0.42.1"   # diffusers: the offline benchmark's model
COMFY="$(bash "$(dirname "$0")/find_comfyui.sh")"
if [ -n "$COMFY" ]; then
  grep -v -E '^(torch|torchvision|torchaudio)$' "$COMFY/requirements.txt" > "$constraints.req"
  pip install -c "$constraints" -r "$constraints.req" torchvision==0.28.0 requests
fi
echo "$VENV/bin/python"
