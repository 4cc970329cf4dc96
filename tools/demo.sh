#!/usr/bin/env bash
# Set up the environment and run the example erasure workflow headless (see tools/run_workflow.py).
set -euo pipefail
python="$(bash "$(dirname "$0")/setup_env.sh")"
exec "$python" "$(dirname "$0")/run_workflow.py" "$@"
