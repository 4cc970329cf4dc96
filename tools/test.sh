#!/usr/bin/env bash
# The test command: set up the environment, then run every test; arguments go to pytest.
# - COMFYUI_PATH unset: the tests that need no ComfyUI once, then the real-ComfyUI tests (tests/comfyui) against
#   each ComfyUI release tools/comfyui_releases.sh unpacks from ../shared/comfyui, or, with no release there,
#   against the checkout tools/find_comfyui.sh finds; with neither they skip, saying why.
# - COMFYUI_PATH set: the whole suite against that checkout; set and empty: without ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
# Two pytest workers of one torch thread each where there are 2 cores and the memory for two ComfyUIs side by side
# (with the server test's ComfyUI beside them the machine's used memory peaked at 15.7 GiB): 1.5 times faster than one
# process of two threads, whose tiny models leave the second thread idle much of the time. A file's tests stay on
# one worker, in order.
workers() {
  local cores memory_gib
  cores="$(nproc 2>/dev/null || echo 1)"
  memory_gib="$(awk '/^MemAvailable:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 0)"
  if [ "$cores" -ge 2 ] && [ "${memory_gib:-0}" -ge 18 ]; then echo 2; else echo 0; fi
}
run_pytest() {
  local count
  count="$(workers)"
  if [ "$count" -gt 0 ]; then
    OMP_NUM_THREADS=1 "$python" -m pytest -q -rs -p no:cacheprovider -n "$count" --dist loadfile "$@"
  else
    "$python" -m pytest -q -rs -p no:cacheprovider "$@"
  fi
}
header() { echo "== $1 ($(date +%T))"; }

if [ -n "${COMFYUI_PATH+set}" ]; then
  comfyui="$(bash tools/find_comfyui.sh)"
  python="$(bash tools/setup_env.sh "$comfyui")"
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
header "the tests that need no ComfyUI"
status=0
run_pytest -m "not comfyui" "$@" tests || status=1
for comfyui in "${releases[@]}"; do
  header "the real-ComfyUI tests on $comfyui"
  python="$(bash tools/setup_env.sh "$comfyui")"      # this release's own requirements
  COMFYUI_PATH="$comfyui" run_pytest -m comfyui "$@" tests || status=1
done
exit "$status"
