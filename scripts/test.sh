#!/usr/bin/env bash
# The test command: set up the venv (seconds when nothing changed), then run the whole suite,
# lint included. Extra arguments go to pytest (e.g. scripts/test.sh tests/foundation -x).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
