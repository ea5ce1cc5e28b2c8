#!/usr/bin/env bash
# Regenerate requirements/constraints.txt from the current virtual environment (after changing
# requirements/*.txt and running `pip install -c requirements/constraints.txt <new package>`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ENDO_DEPTH_VENV:-$root/.venv}"
{
  echo "# The one place where versions are pinned: every package of the project's virtual environment."
  echo "# Regenerate with scripts/lock.sh after changing requirements/*.txt."
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(#|-e )' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > "$root/requirements/constraints.txt"
echo "wrote $root/requirements/constraints.txt"
