#!/usr/bin/env bash
# Create or update the Python environment the tests, benchmarks and headless runs use, and print its python.
# torch is pinned first (a bare `torch` would pull gigabytes of CUDA); then the requirements of the ComfyUI checkout
# given as the argument, else of the one tools/find_comfyui.sh finds (none: the tests that need no ComfyUI only).
# Called once per release, it moves the release's exact pins (its frontend, templates, ...) to that release's.
set -euo pipefail
tools="$(cd "$(dirname "$0")" && pwd)"
VENV="${UNLEARN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-unlearn/venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >&2
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check --quiet "$@" >&2; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
echo "torch==2.13.0" > "$work/constraints"
pip install "torch==2.13.0"
# diffusers: the offline benchmark's model; pytest-xdist: tools/test.sh's workers side by side
pip install -c "$work/constraints" pytest pytest-xdist safetensors numpy "diffusers==0.42.1"
comfy="${1:-$(bash "$tools/find_comfyui.sh")}"
if [ -n "$comfy" ]; then
  grep -v -E '^(torch|torchvision|torchaudio)$' "$comfy/requirements.txt" > "$work/requirements"
  # websocket-client: the client of the test that drives ComfyUI's own server
  pip install -c "$work/constraints" -r "$work/requirements" torchvision==0.28.0 requests websocket-client
  if ! "$VENV/bin/python" -c "import torchaudio" 2>/dev/null; then
    # PyPI has no torchaudio built for this torch, and its compiled extension does not load on it. ComfyUI (0.33
    # imports it at start-up) needs only torchaudio's pure-Python parts, which import without the extension.
    pip install --no-deps torchaudio
    rm -f "$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')"/lib/*.so
  fi
fi
echo "$VENV/bin/python"
