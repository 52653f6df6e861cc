#!/usr/bin/env bash
# tools/sanitize.sh: memory-safety runs of cygru's test suite on instrumented builds.
#
# The repository is copied (without build artefacts: build/, *.so, generated cygru/*.c,
# .git, caches) into a temporary directory and built there, in place, so the checkout's
# own build is never touched. Then, for each mode asked for:
#
#   debug     CYGRU_DEBUG=1: Cython bounds/wraparound/initialisation checks on, -O0 -g.
#             Runs the whole test suite (tests/).
#   asan      CYGRU_SANITIZE=1 (+ -g): the extensions compiled and linked with
#             AddressSanitizer, at the normal -O3, run inside the ordinary CPython with
#             LD_PRELOAD of libasan (ASan must be the first library loaded) and libstdc++
#             (so ASan can intercept C++ exceptions, which torch throws), and
#             ASAN_OPTIONS=detect_leaks=0 (CPython itself "leaks" at exit). Runs the
#             whole test suite; a heap/stack overflow or use-after-free in cygru's C code
#             ends that process with a report, written to a file per process (pytest
#             captures fd 2) and printed at the end. Subprocess tests inherit it all.
#   ubsan     CYGRU_SANITIZE=undefined (+ -g): -fsanitize=undefined with
#             -fno-sanitize-recover=all, at -O3: the first undefined behaviour (signed
#             overflow, a shift out of range, a misaligned or null access, an out-of-bounds
#             index of a fixed array, ...) in cygru's C code ends that process with a
#             report (a file per process, printed at the end). Runs the whole test suite.
#   tsan      CYGRU_SANITIZE=thread (+ -g): ThreadSanitizer on the engine's thread tests
#             (tests/test_threads.py and the thread tests of tests/test_embedding.py: see
#             TSAN_TESTS below). The engine's threads are its own pool (pthreads, futexes
#             and atomics: include/cygru_pool.h), which ThreadSanitizer understands; OpenMP
#             is only asked for the default thread count and runs no region, so no OpenMP
#             runtime needs instrumenting (before issue 24 this mode linked LLVM's libomp
#             and its libarcher tool for the OpenMP regions). No suppression file: every
#             report counts. libtsan is preloaded (it must be the first library loaded),
#             as libasan is. The mode checks that the engine's workers start under it
#             before running anything.
#   valgrind  the plain -O3 build under `valgrind --tool=memcheck` on a smaller subset
#             (tests/test_reliability.py with the Hypothesis profile "smoke", a twentieth
#             of the ci examples); slow, for machines where ASan cannot be preloaded.
#             Only errors with a frame in this build's own files count (its compiled
#             modules and sources, by their full paths under the temporary directory),
#             not those of a path that merely contains "cygru" (a virtual environment
#             named cygru-something, whose CPython and SciPy have errors of their own).
#
# Usage:
#   tools/sanitize.sh                 # debug, then asan (the default)
#   tools/sanitize.sh debug|asan|ubsan|tsan|valgrind [more modes] [-- extra pytest arguments]
#   KEEP=1 tools/sanitize.sh ...      # keep the temporary directory (printed) for inspection
#   TESTS="tests/test_threads.py" tools/sanitize.sh asan ubsan   # other test paths
#
# Environment passed through: CYGRU_HYPOTHESIS_PROFILE (default ci), PYTHON (default python),
# TESTS (the pytest paths of every mode but valgrind; default tests/, or TSAN_TESTS for tsan),
# Exit status: 0 when every mode passed, else the number of modes that failed. A summary
# line per mode ("== <mode>: <pytest summary> (rc=N)") ends the output; the full logs are
# in the temporary directory.
set -uo pipefail

# The thread tests of the engine and of the C API, for tsan (ThreadSanitizer is slow).
TSAN_TESTS=(tests/test_threads.py
  tests/test_embedding.py::test_c_api_from_threads_is_reentrant
  tests/test_embedding.py::test_gil_is_released
  tests/test_embedding.py::test_threads_give_bitwise_serial_results
  tests/test_embedding.py::test_vjp_from_threads_accumulates
  tests/test_embedding.py::test_workspace_in_use_is_busy
  tests/test_embedding.py::test_shared_workspace_from_threads_never_hangs
  tests/test_embedding.py::test_fork_during_c_calls_frees_the_childs_workspaces)

count_valgrind_errors() {  # $1: memcheck log, $2: the build directory. Prints the number of
  # error records with a frame in the build's own files ($2/cygru/..., full paths: the run
  # uses --fullpath-after=), and each such record on stderr. A literal prefix match, so a
  # path such as /venvs/cygru-acceptance/... (CPython's, SciPy's) never counts.
  awk -v ours="$2/cygru/" '
      function flush() { if (blk != "" && index(blk, ours) > 0) { n++; printf "%s", blk > "/dev/stderr" } blk = "" }
      /^==[0-9]+== [A-Z][a-z]/ { flush(); blk = $0 "\n"; next }
      /^==[0-9]+==    (at|by) / { if (blk != "") blk = blk $0 "\n"; next }
      { flush() }
      END { flush(); print n + 0 }' "$1"
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}
MODES=()
PYTEST_EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; PYTEST_EXTRA=("$@"); break ;;
    debug|asan|ubsan|tsan|valgrind) MODES+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    --count-valgrind-errors)  # LOG DIR: the valgrind mode's count, alone (for its tests)
      shift; count_valgrind_errors "$1" "$2"; exit 0 ;;
    *) echo "sanitize.sh: unknown mode '$1' (debug, asan, ubsan, tsan, valgrind)" >&2; exit 2 ;;
  esac
done
[ ${#MODES[@]} -eq 0 ] && MODES=(debug asan)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cygru-sanitize-XXXXXX")
if [ "${KEEP:-0}" = "1" ]; then
  echo "sanitize.sh: working directory $WORK (kept)"
else
  trap 'rm -rf "$WORK"' EXIT
fi

copy_tree() {  # $1: destination. The sources only, never the checkout's build artefacts.
  mkdir -p "$1"
  (cd "$ROOT" && tar -cf - \
      --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
      --exclude='*.so' --exclude='./cygru/*.c' --exclude='./cygru/*.html' \
      --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
      --exclude=./docs/_build --exclude=./docs/auto_examples --exclude='./.venv*' \
      --exclude=./benchmarks/results .) | (cd "$1" && tar -xf -)
}

build() {  # $1: directory; the environment carries CYGRU_DEBUG / CYGRU_SANITIZE / CFLAGS
  (cd "$1" && "$PY" setup.py -q build_ext --inplace -j 2) > "$1.build.log" 2>&1 || {
    echo "sanitize.sh: build failed in $1; last lines of $1.build.log:" >&2
    tail -30 "$1.build.log" >&2
    return 1
  }
}

check_import() {  # $1: directory. The tests must import this copy, not some other cygru.
  (cd "$1" && PYTHONPATH="$1" "$PY" -c "import cygru, cygru._cpu, sys; f = cygru._cpu.__file__; \
      sys.exit(0 if f.startswith('$1') else 'imports ' + f)") || {
    echo "sanitize.sh: cannot import the build in $1" >&2; return 1; }
}

run_pytest() {  # $1: directory, $2: log; the rest: pytest arguments
  local dir=$1 log=$2; shift 2
  # (no PYTHONFAULTHANDLER under ASan: its handler would take SIGSEGV from ASan's)
  local fh=1
  [ "$mode" = asan ] && fh=
  (cd "$dir" && PYTHONPATH="$dir" PYTHONFAULTHANDLER=$fh CYGRU_SANITIZER="$mode" \
     CYGRU_HYPOTHESIS_PROFILE="${CYGRU_HYPOTHESIS_PROFILE:-ci}" \
     "$@") > "$log" 2>&1
}

summary_of() {  # the pytest summary line of a log, or the sanitizer's verdict
  local s
  s=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s' "$1" | tail -1 \
      | sed 's/=//g; s/^ *//; s/ *$//')
  [ -n "$s" ] || s=$(grep -E 'ERROR: AddressSanitizer|ThreadSanitizer|runtime error:|ERROR SUMMARY' "$1" | tail -1)
  echo "${s:-no pytest summary (see $1)}"
}

FAILED=0
SUMMARY=()
for mode in "${MODES[@]}"; do
  unset UBSAN_OPTIONS TSAN_OPTIONS OMP_TOOL_LIBRARIES   # one mode's settings only
  dir="$WORK/$mode"
  log="$WORK/$mode.pytest.log"
  echo "== $mode: copying and building in $dir"
  copy_tree "$dir"
  if [ -n "${TESTS:-}" ]; then
    read -r -a TEST_PATHS <<< "$TESTS"
  elif [ "$mode" = tsan ]; then
    TEST_PATHS=("${TSAN_TESTS[@]}")
  else
    TEST_PATHS=(tests/)
  fi
  case "$mode" in
    debug)
      { CYGRU_DEBUG=1 build "$dir" && check_import "$dir"; } ||
        { FAILED=$((FAILED + 1)); SUMMARY+=("$mode: build failed"); continue; }
      echo "== $mode: python -m pytest -q ${TEST_PATHS[*]} (bounds checks on)"
      run_pytest "$dir" "$log" "$PY" -m pytest -q -p no:cacheprovider "${TEST_PATHS[@]}" \
        "${PYTEST_EXTRA[@]}"
      rc=$?
      ;;
    asan)
      libasan=$(gcc -print-file-name=libasan.so 2>/dev/null)
      if [ ! -e "$libasan" ]; then
        echo "sanitize.sh: libasan.so not found (gcc -print-file-name=libasan.so); use 'valgrind'" >&2
        FAILED=$((FAILED + 1)); SUMMARY+=("$mode: no libasan"); continue
      fi
      # allocator_may_return_null: numpy's impossible allocations must give MemoryError,
      # not an ASan abort. Not run under ASan: the RLIMIT_AS test of test_core (ASan's
      # shadow memory needs terabytes of address space) and tests/test_cuda_compile.py
      # (nvcc's own tools crash with libasan preloaded; they test no cygru C code).
      # Reports go to files (log_path, one per process): pytest captures fd 2 during a
      # test, so a report written there is lost when ASan ends the process.
      # libstdc++ is preloaded too: without it ASan cannot intercept __cxa_throw and
      # aborts at the first C++ exception (torch throws them for its RuntimeErrors).
      libstdcxx=$(gcc -print-file-name=libstdc++.so 2>/dev/null)
      preload="$libasan"
      [ -e "$libstdcxx" ] && preload="$libasan $(readlink -f "$libstdcxx")"
      export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:print_summary=1:symbolize=1:log_path=$WORK/asan-report"
      export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer || true)
      { CYGRU_SANITIZE=1 CFLAGS="-g" build "$dir" && LD_PRELOAD="$preload" check_import "$dir"; } ||
        { FAILED=$((FAILED + 1)); SUMMARY+=("$mode: build failed"); continue; }
      echo "== $mode: python -m pytest -q ${TEST_PATHS[*]} under AddressSanitizer (LD_PRELOAD=$preload)"
      LD_PRELOAD="$preload" \
      run_pytest "$dir" "$log" "$PY" -m pytest -q -p no:cacheprovider "${TEST_PATHS[@]}" \
        --deselect tests/test_core.py::test_huge_sizes_raise_before_allocating \
        --ignore tests/test_cuda_compile.py \
        "${PYTEST_EXTRA[@]}"
      rc=$?
      reports=$(grep -l -E 'ERROR: AddressSanitizer|CHECK failed' "$WORK"/asan-report.* 2>/dev/null)
      n_reports=$(echo -n "$reports" | grep -c . || true)
      echo "== $mode: $n_reports process(es) with an AddressSanitizer error report"
      for f in $reports; do
        echo "--- $f"
        grep -E -A14 'ERROR: AddressSanitizer|CHECK failed' "$f" | head -40
        grep -E '^SUMMARY' "$f"
      done
      SAN_NOTE="; ASan error reports: $n_reports"
      ;;
    ubsan)
      # Reports go to files (pytest captures fd 2); -fno-sanitize-recover=all makes the
      # first one end the process (halt_on_error for the runtime's own checks too).
      export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:report_error_type=1:log_path=$WORK/ubsan-report"
      { CYGRU_SANITIZE=undefined CFLAGS="-g" build "$dir" && check_import "$dir"; } ||
        { FAILED=$((FAILED + 1)); SUMMARY+=("$mode: build failed"); continue; }
      echo "== $mode: python -m pytest -q ${TEST_PATHS[*]} under UndefinedBehaviorSanitizer"
      run_pytest "$dir" "$log" "$PY" -m pytest -q -p no:cacheprovider "${TEST_PATHS[@]}" \
        "${PYTEST_EXTRA[@]}"
      rc=$?
      reports=$(grep -l -E 'runtime error:|UndefinedBehaviorSanitizer' "$WORK"/ubsan-report.* 2>/dev/null)
      n_reports=$(echo -n "$reports" | grep -c . || true)
      echo "== $mode: $n_reports process(es) with an UndefinedBehaviorSanitizer report"
      for f in $reports; do
        echo "--- $f"
        grep -E -A14 'runtime error:' "$f" | head -40
      done
      [ "$n_reports" -eq 0 ] || rc=99
      SAN_NOTE="; UBSan reports: $n_reports"
      ;;
    tsan)
      libtsan=$(gcc -print-file-name=libtsan.so 2>/dev/null)
      if [ ! -e "$libtsan" ]; then
        echo "sanitize.sh: tsan needs GCC's libtsan.so (gcc -print-file-name=libtsan.so)" >&2
        FAILED=$((FAILED + 1)); SUMMARY+=("$mode: no libtsan"); continue
      fi
      libstdcxx=$(gcc -print-file-name=libstdc++.so 2>/dev/null)
      preload="$libtsan"
      [ -e "$libstdcxx" ] && preload="$libtsan $(readlink -f "$libstdcxx")"
      # die_after_fork=0: the fork tests' children start threads (the pool's fresh workers,
      # OpenBLAS's for the backward's weight-gradient products); ThreadSanitizer would end
      # them ("starting new threads after multi-threaded fork is not supported"), though
      # it checks them
      export TSAN_OPTIONS="ignore_noninstrumented_modules=1:halt_on_error=0:die_after_fork=0:second_deadlock_stack=1:log_path=$WORK/tsan-report"
      { CYGRU_SANITIZE=thread CFLAGS="-g" build "$dir" &&
        LD_PRELOAD="$preload" check_import "$dir"; } ||
        { FAILED=$((FAILED + 1)); SUMMARY+=("$mode: build failed"); continue; }
      # a trustworthy run needs the engine's threads running under ThreadSanitizer
      started=$(cd "$dir" && LD_PRELOAD="$preload" PYTHONPATH="$dir" \
        "$PY" -c "import numpy as np, cygru; from cygru import _engine, _cpu; \
_cpu.MIN_WORK_PER_THREAD = 0; cygru.set_num_threads(2); \
cygru.GRU(8, 64, bidirectional=True)(np.ones((3, 64, 8), np.float32)); \
print('workers', _engine.pool_workers())" 2>&1)
      if ! echo "$started" | grep -q "^workers [1-9]"; then
        echo "sanitize.sh: the engine's workers did not start under ThreadSanitizer:" >&2
        echo "$started" | tail -5 >&2
        FAILED=$((FAILED + 1)); SUMMARY+=("$mode: no workers"); continue
      fi
      rm -f "$WORK"/tsan-report.*
      echo "== $mode: python -m pytest -q ${TEST_PATHS[*]} under ThreadSanitizer" \
           "(LD_PRELOAD=$preload)"
      LD_PRELOAD="$preload" \
      run_pytest "$dir" "$log" "$PY" -m pytest -q -p no:cacheprovider "${TEST_PATHS[@]}" \
        "${PYTEST_EXTRA[@]}"
      rc=$?
      reports=$(grep -l -E 'WARNING: ThreadSanitizer|ERROR: ThreadSanitizer' "$WORK"/tsan-report.* 2>/dev/null)
      n_reports=$(cat $reports /dev/null | grep -c -E '^(WARNING|ERROR): ThreadSanitizer' || true)
      echo "== $mode: $n_reports ThreadSanitizer report(s)"
      for f in $reports; do
        echo "--- $f"
        grep -E -A24 '(WARNING|ERROR): ThreadSanitizer' "$f" | head -60
      done
      [ "$n_reports" -eq 0 ] || rc=99
      SAN_NOTE="; TSan reports: $n_reports"
      ;;
    valgrind)
      command -v valgrind >/dev/null || { echo "sanitize.sh: valgrind not installed" >&2;
        FAILED=$((FAILED + 1)); SUMMARY+=("$mode: no valgrind"); continue; }
      { build "$dir" && check_import "$dir"; } ||
        { FAILED=$((FAILED + 1)); SUMMARY+=("$mode: build failed"); continue; }
      echo "== $mode: valgrind memcheck on tests/test_reliability.py (reduced)"
      # PYTHONMALLOC=malloc: let memcheck see every Python allocation. The interpreter
      # binary itself (not a wrapper script such as a pyenv shim, whose exec valgrind
      # would not follow).
      pyexe=$("$PY" -c 'import sys; print(sys.executable)')
      PYTHONMALLOC=malloc CYGRU_HYPOTHESIS_PROFILE=smoke \
      run_pytest "$dir" "$log" valgrind --tool=memcheck --num-callers=40 --fullpath-after= \
        --errors-for-leak-kinds=none --leak-check=no --track-origins=no \
        --suppressions=<(printf '{\n py-cond\n Memcheck:Cond\n obj:*libpython*\n}\n') \
        "$pyexe" -m pytest -q -p no:cacheprovider tests/test_reliability.py \
        -k "cell_property or forward_property or empty_batch or pickle" \
        "${PYTEST_EXTRA[@]}"
      rc=$?
      grep -q 'ERROR SUMMARY' "$log" || { echo "sanitize.sh: valgrind did not run ($log)" >&2; rc=98; }
      # CPython, the dynamic loader and libc's vectorised string functions report errors
      # under memcheck that are not ours: only error records whose stack passes through
      # this build's own files count (printed in full; count_valgrind_errors).
      ours=$(count_valgrind_errors "$log" "$dir")
      echo "== $mode: $(grep -E 'ERROR SUMMARY' "$log" | tail -1 | sed 's/^==[0-9]*== //') in all;" \
           "$ours with cygru's code on the stack"
      [ "$ours" -eq 0 ] || rc=99
      SAN_NOTE="; valgrind errors in cygru's code: $ours"
      ;;
  esac
  s="$(summary_of "$log")${SAN_NOTE:-}"
  SAN_NOTE=""
  echo "== $mode: $s (rc=$rc)"
  SUMMARY+=("$mode: $s (rc=$rc)")
  [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
  # failing tests, one per line, for the record
  grep -E '^(FAILED|ERROR) ' "$log" | sed "s/^/   [$mode] /" | head -40
done

echo
echo "== sanitize.sh summary (logs: $WORK${KEEP:+, kept})"
for line in "${SUMMARY[@]}"; do echo "== $line"; done
exit "$FAILED"
