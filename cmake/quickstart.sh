#!/usr/bin/env bash
# The README's quick start, and the steps CI builds on.
#
#   bash cmake/quickstart.sh demo      install what is missing, build, install llmds, run the demo
#   bash cmake/quickstart.sh test      install what is missing, build, run every test (ctest, pytest)
#   bash cmake/quickstart.sh sanitize  build and run the C++ tests under ASan + UBSan
#   bash cmake/quickstart.sh tsan      build and run the C++ tests and Python thread tests under TSan
#   bash cmake/quickstart.sh fuzz      build the libFuzzer targets (clang, ASan + UBSan) and fuzz each
#   bash cmake/quickstart.sh deps      only install what is missing
#
# Every step is idempotent: a second run installs nothing and rebuilds only what changed.
# Environment: PYTHON (default python3), LLMDS_JOBS (default 2), LLMDS_CMAKE_ARGS (extra -D flags),
# LLMDS_FUZZ_SECONDS (fuzz: seconds per target, default 60), LLMDS_DATA_DIR (the seed corpora's data).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
JOBS=${LLMDS_JOBS:-2}
read -r -a EXTRA_CMAKE_ARGS <<< "${LLMDS_CMAKE_ARGS:-}"

# dataset-fashion-mnist: the demo's vector data set when the shared data folder is absent.
# libzmq3-dev, cppzmq-dev, libmsgpack-cxx-dev: KV events on ZeroMQ (CMake option LLMDS_WITH_ZMQ);
# libhiredis-dev, pkg-config: the Redis KV tier (LLMDS_WITH_REDIS); redis-server (with
# redis-benchmark and redis-cli, from redis-tools): the server its tests and benchmark run against.
DEBIAN_PACKAGES=(g++ libeigen3-dev libssl-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev ccache dataset-fashion-mnist
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libhiredis-dev pkg-config redis-server)
# The fuzz step only: clang's libFuzzer and sanitizer runtimes, llvm-symbolizer for stack traces.
FUZZ_DEBIAN_PACKAGES=(clang libclang-rt-dev llvm)
PYPI_PACKAGES=("cmake>=3.24" "ninja" "pybind11>=2.11" "scikit-build-core>=0.10" "numpy>=1.23" "pytest>=7" "scipy>=1.9" "nltk>=3.8" "matplotlib>=3.6" "hypothesis>=6.80" "pyzmq>=25" "msgspec>=0.18" "redis>=5")

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

# The Redis server the tests share (LLMDS_REDIS_URL): loopback, a free port, a random password,
# no persistence; stopped when the step ends. Tests that break a server on purpose start their own.
start_test_redis() {
  command -v redis-server > /dev/null || return 0
  local port password
  port=$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=$($PYTHON -c 'import secrets; print(secrets.token_hex(16))')
  mkdir -p build/redis
  redis-server --port "$port" --bind 127.0.0.1 --requirepass "$password" --save "" --appendonly no \
    --dir "$PWD/build/redis" --maxmemory 1gb --maxmemory-policy allkeys-lru --loglevel warning \
    --logfile "$PWD/build/redis/redis.log" &
  TEST_REDIS_PID=$!
  trap 'kill "$TEST_REDIS_PID" 2> /dev/null || true' EXIT
  export LLMDS_REDIS_URL="redis://:$password@127.0.0.1:$port/0"
  for _ in $(seq 100); do
    redis-cli -p "$port" -a "$password" --no-auth-warning ping 2> /dev/null | grep -q PONG && { log "redis-server for the tests on 127.0.0.1:$port (password required)"; return 0; }
    sleep 0.1
  done
  echo "redis-server did not start (build/redis/redis.log)" >&2
  return 1
}

run_tests() {
  build_cpp build/cpp
  install_python_package
  start_test_redis
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

# The Python tests whose threads meet in llmds: the engine thread and its callbacks, the index
# locks, parallel HNSW builds and searches, shared caches.
TSAN_PYTHON_TESTS=(python/test_engine.py python/test_callback_reentry.py python/test_kv_event_publisher.py
  "python/test_hnsw.py::test_writers_and_filtered_searches_in_other_threads_do_not_deadlock"
  "python/test_hnsw.py::test_searches_run_from_several_threads"
  "python/test_hnsw.py::test_concurrent_saves_to_one_path_leave_one_whole_index"
  "python/test_inverted_index.py::test_batch_search_and_threads_agree_with_single_calls"
  "python/test_inverted_index.py::test_changes_get_their_turn_between_searches_from_other_threads")

run_thread_sanitized_tests() {
  # GCC's ThreadSanitizer over the library, the C++ tests and the Python extension. Any race
  # report fails the run (halt_on_error). ASLR is switched off for the instrumented processes
  # (setarch -R): TSan's fixed memory layout fails on kernels with high mmap randomisation.
  build_cpp build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
    -DLLMDS_SANITIZE_THREAD=ON -DLLMDS_BUILD_BENCHMARKS=OFF -DLLMDS_BUILD_PYTHON=ON -DLLMDS_INSTALL=OFF
  local no_aslr=(setarch "$(uname -m)" -R)
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/cmake/tsan.supp"
  log "C++ tests under ThreadSanitizer"
  # The recall test on the whole of sift5k is single-threaded and takes a minute here.
  "${no_aslr[@]}" ctest --test-dir build/tsan --output-on-failure -j "$JOBS" -E '^HNSW.ReachesHighRecallOnSift5k$'
  log "Python thread tests under ThreadSanitizer"
  # The package from the sources beside the instrumented extension; the interpreter is not
  # instrumented, so libtsan is preloaded into it.
  rm -rf build/tsan/pypkg && mkdir -p build/tsan/pypkg
  cp -r python/llmds build/tsan/pypkg/
  cp build/tsan/python/_core*.so build/tsan/pypkg/llmds/
  local interpreter libtsan
  interpreter=$($PYTHON -c 'import sys; print(sys.executable)')
  libtsan=$(g++ -print-file-name=libtsan.so)
  (cd tests && PYTHONPATH="$PWD/../build/tsan/pypkg" LD_PRELOAD="$libtsan" "${no_aslr[@]}" \
    "$interpreter" -m pytest -q -rs -p no:cacheprovider "${TSAN_PYTHON_TESTS[@]}")
}

install_fuzz_packages() {
  local missing=()
  for pkg in "${FUZZ_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  $PYTHON -c 'import atheris' 2>/dev/null || $PYTHON -m pip install -q --disable-pip-version-check atheris
}

# Every libFuzzer target of tests/fuzz for LLMDS_FUZZ_SECONDS each, two at a time, after its
# regression inputs (tests/fuzz/regressions/<target>/, each run once). Any finding (crash,
# sanitizer report, leak, timeout, out-of-memory) fails the step, naming the input and how to
# reproduce it. New coverage accumulates in build/fuzz/corpus/<target>.
run_fuzzers() {
  install_fuzz_packages
  local dir=build/fuzz seconds=${LLMDS_FUZZ_SECONDS:-60}
  log "building the fuzz targets in $dir (clang, ASan + UBSan, libFuzzer)"
  CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
    -DLLMDS_BUILD_FUZZERS=ON -DLLMDS_BUILD_TESTS=OFF -DLLMDS_BUILD_BENCHMARKS=OFF -DLLMDS_BUILD_PYTHON=OFF \
    -DLLMDS_INSTALL=OFF "${EXTRA_CMAKE_ARGS[@]}" > "$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS"
  "$dir/tests/fuzz/make_fuzz_corpus" "$dir/corpus"
  # The Python target imports the compiled llmds package (traces.py's Mooncake reader).
  $PYTHON -c 'import llmds._core' 2>/dev/null || install_python_package

  # Longest input per target: the largest seed with room to grow (the llama2.c target's real
  # model is 1,056,540 bytes).
  local -A max_len=([fuzz_hnsw]=65536 [fuzz_inverted_index]=65536 [fuzz_count_min_sketch]=16384
    [fuzz_varint]=64 [fuzz_posting_list]=4096 [fuzz_llama_model]=1100000 [fuzz_tokenizer]=16384
    [fuzz_mooncake_trace]=16384 [fuzz_azure_trace]=8192 [fuzz_block_file_header]=4160 [fuzz_kv_event_batch]=8192)
  local targets=(fuzz_hnsw fuzz_inverted_index fuzz_count_min_sketch fuzz_varint fuzz_posting_list
    fuzz_llama_model fuzz_tokenizer fuzz_mooncake_trace fuzz_azure_trace fuzz_block_file_header)
  # Built with ZeroMQ only (LLMDS_WITH_ZMQ; CI requires it).
  [ -x "$dir/tests/fuzz/fuzz_kv_event_batch" ] && targets+=(fuzz_kv_event_batch)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  fuzz_command() {  # the command that runs target $1
    if [ "$1" = fuzz_azure_trace ]; then echo "$PYTHON tests/fuzz/fuzz_azure_trace.py"; else echo "$dir/tests/fuzz/$1"; fi
  }

  local status=0 t
  log "fuzz regression inputs (tests/fuzz/regressions)"
  for t in "${targets[@]}"; do
    local inputs=(tests/fuzz/regressions/"$t"/*)
    [ -e "${inputs[0]}" ] || continue
    if ! $(fuzz_command "$t") "${inputs[@]}" > "$dir/regressions-$t.log" 2>&1; then
      echo "FUZZ REGRESSION FAILED: $t (log $dir/regressions-$t.log); reproduce one input with:"
      echo "  $(fuzz_command "$t") <input>   for <input> in tests/fuzz/regressions/$t/"
      grep -E "^Running: |ERROR|FINDING|SUMMARY" "$dir/regressions-$t.log" | tail -n 4 || true
      status=1
    fi
  done

  log "fuzzing each target for $seconds s, two at a time"
  run_one() {
    local out=$dir/findings/$1 rc=0 dict=()
    rm -rf "$out" && mkdir -p "$out" "$dir/corpus/$1"
    [ -f "tests/fuzz/$1.dict" ] && dict=(-dict="tests/fuzz/$1.dict")
    $(fuzz_command "$1") "$dir/corpus/$1" -max_total_time="$seconds" -max_len="${max_len[$1]}" -timeout=25 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/" "${dict[@]}" \
      > "$out/log" 2>&1 || rc=$?
    echo $rc > "$out/rc"
  }
  local running=0
  for t in "${targets[@]}"; do
    if [ $running -ge 2 ]; then wait -n || true; running=$((running - 1)); fi
    run_one "$t" &
    running=$((running + 1))
  done
  wait || true

  for t in "${targets[@]}"; do
    local out=$dir/findings/$t artifacts
    artifacts=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    local execs rate
    execs=$(grep -oE '^stat::number_of_executed_units: +[0-9]+' "$out/log" | grep -oE '[0-9]+$' || echo "?")
    rate=$(grep -oE '^stat::average_exec_per_sec: +[0-9]+' "$out/log" | grep -oE '[0-9]+$' || echo "?")
    if [ "$(cat "$out/rc")" != 0 ] || [ -n "$artifacts" ]; then
      echo "FUZZ FINDING: $t (exit $(cat "$out/rc"); log $out/log)"
      grep -E "ERROR|FINDING|SUMMARY|Uncaught" "$out/log" | head -n 3 || true
      for a in $artifacts; do
        echo "  input: $a"
        echo "  reproduce: $(fuzz_command "$t") $a"
      done
      status=1
    else
      echo "fuzz: $t clean, $execs inputs in ${seconds}s ($rate/s), corpus $(find "$dir/corpus/$t" -type f | wc -l) files"
    fi
  done
  return $status
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
  tsan) deps; run_thread_sanitized_tests ;;
  demo) deps; run_demo ;;
  fuzz) deps; run_fuzzers ;;
  *) echo "usage: bash cmake/quickstart.sh {demo|test|sanitize|tsan|fuzz|deps}" >&2; exit 2 ;;
esac
