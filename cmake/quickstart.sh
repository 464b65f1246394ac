#!/usr/bin/env bash
# The README's quick start, and the steps CI builds on.
#
#   bash cmake/quickstart.sh demo      install what is missing, build, install llmds, run the demo
#   bash cmake/quickstart.sh test      install what is missing, build, run every test (ctest, pytest)
#   bash cmake/quickstart.sh sanitize  build and run the C++ tests under ASan + UBSan
#   bash cmake/quickstart.sh deps      only install what is missing
#
# Every step is idempotent: a second run installs nothing and rebuilds only what changed.
# Environment: PYTHON (default python3), LLMDS_JOBS (default 2), LLMDS_CMAKE_ARGS (extra -D flags).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
JOBS=${LLMDS_JOBS:-2}
read -r -a EXTRA_CMAKE_ARGS <<< "${LLMDS_CMAKE_ARGS:-}"

# dataset-fashion-mnist: the demo's vector data set when the shared data folder is absent.
DEBIAN_PACKAGES=(g++ libeigen3-dev libssl-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev ccache dataset-fashion-mnist)
PYPI_PACKAGES=("cmake>=3.24" "ninja" "pybind11>=2.11" "scikit-build-core>=0.10" "numpy>=1.23" "pytest>=7" "scipy>=1.9" "nltk>=3.8" "matplotlib>=3.6")

log() { printf '\n--- %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  $PYTHON -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# A Python whose packages are managed by the system (PEP 668) gets a project virtual environment.
choose_python() {
  local managed
  managed=$($PYTHON - <<'PY'
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
print(int(os.path.exists(marker) and sys.prefix == sys.base_prefix))
PY
)
  if [ "$managed" = 1 ]; then
    [ -x .venv/bin/python ] || $PYTHON -m venv .venv
    PYTHON=$PWD/.venv/bin/python
    log "system-managed Python: using the virtual environment .venv"
  fi
}

install_pypi_packages() {
  # pip leaves satisfied requirements alone and asks the index only for what is missing.
  $PYTHON -m pip install -q --disable-pip-version-check "${PYPI_PACKAGES[@]}"
}

deps() {
  install_debian_packages
  choose_python
  install_pypi_packages
  # pip's cmake and ninja are found through this Python's scripts folder.
  PATH="$($PYTHON -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
  command -v ccache >/dev/null && export CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
}

build_cpp() {  # build_cpp DIR [cmake args...]
  local dir=$1; shift
  log "building the C++ library, tests and benchmarks in $dir"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMDS_BUILD_PYTHON=OFF \
    "${EXTRA_CMAKE_ARGS[@]}" "$@" > "$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS"
}

install_python_package() {
  log "building and installing the llmds Python package"
  $PYTHON -m pip install -q --disable-pip-version-check --no-build-isolation .
}

run_tests() {
  build_cpp build/cpp
  install_python_package
  local status=0
  log "C++ tests (ctest)"
  ctest --test-dir build/cpp --output-on-failure -j "$JOBS" || status=1
  log "Python tests (pytest)"
  # Run from tests/ so that `import llmds` finds the installed package, not python/llmds.
  (cd tests && $PYTHON -m pytest -q -rs python) || status=1
  return $status
}

run_sanitized_tests() {
  # -O1 -g without NDEBUG: the sanitizers also get llmds' own LLMDS_ASSERT invariant checks.
  build_cpp build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
    -DLLMDS_SANITIZE=ON -DLLMDS_BUILD_BENCHMARKS=OFF
  log "C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j "$JOBS"
}

run_demo() {
  install_python_package
  log "python -m llmds demo --out build/demo"
  $PYTHON -m llmds demo --out build/demo
}

mkdir -p build
case "${1:-}" in
  deps) deps ;;
  test) deps; run_tests ;;
  sanitize) deps; run_sanitized_tests ;;
  demo) deps; run_demo ;;
  *) echo "usage: bash cmake/quickstart.sh {demo|test|sanitize|deps}" >&2; exit 2 ;;
esac
