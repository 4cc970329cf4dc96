#!/usr/bin/env bash
# The test command: set up the environment, then run every test; arguments go to pytest.
# - COMFYUI_PATH unset: the tests that need no ComfyUI once, then the real-ComfyUI tests (tests/comfyui) against
#   each ComfyUI release tools/comfyui_releases.sh unpacks from ../shared/comfyui (all of them on the oldest and
#   the newest, BETWEEN on the others), or, with no release there, against the checkout tools/find_comfyui.sh
#   finds; with neither they skip, saying why.
# - COMFYUI_PATH set: the whole suite against that checkout; set and empty: without ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
run_pytest() { "$python" -m pytest -q -rs -p no:cacheprovider "$@"; }
header() { echo "== $1 ($(date +%T))"; }

if [ -n "${COMFYUI_PATH+set}" ]; then
  python="$(bash tools/setup_env.sh)"
  comfyui="$(bash tools/find_comfyui.sh)"
  if [ -n "$comfyui" ]; then export COMFYUI_PATH="$comfyui"; else unset COMFYUI_PATH; fi
  run_pytest "$@" tests
  exit
fi

mapfile -t releases < <(bash tools/comfyui_releases.sh)
[ "${#releases[@]}" -gt 0 ] || mapfile -t releases < <(bash tools/find_comfyui.sh)
python="$(bash tools/setup_env.sh "${releases[0]:-}")"
if [ "${#releases[@]}" -eq 0 ]; then
  run_pytest "$@" tests
  exit
fi
# The releases between the oldest and the newest run the tests of what most often breaks between releases (the
# graphs, every family, saving and loading, training mode, the server), which keeps CI within 45 minutes on 2 cores.
BETWEEN=(tests/comfyui/test_compat.py tests/comfyui/test_erase_graph.py tests/comfyui/test_families.py
         tests/comfyui/test_save_and_load.py tests/comfyui/test_load_erasure.py tests/comfyui/test_server.py)
header "the tests that need no ComfyUI"
status=0
run_pytest -m "not comfyui" "$@" tests || status=1
last=$(( ${#releases[@]} - 1 ))
for i in "${!releases[@]}"; do
  comfyui="${releases[$i]}"
  selection=(tests)
  (( i == 0 || i == last )) || selection=("${BETWEEN[@]}")
  header "the real-ComfyUI tests on $comfyui (${selection[*]})"
  python="$(bash tools/setup_env.sh "$comfyui")"      # this release's own requirements
  COMFYUI_PATH="$comfyui" run_pytest -m comfyui "$@" "${selection[@]}" || status=1
done
exit "$status"
