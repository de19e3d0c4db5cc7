#!/usr/bin/env bash
# Build cyconv's extension with Cython's run-time checks on (CYCONV_DEBUG_CYTHON=1:
# boundscheck, wraparound, initializedcheck; -O0 -g) in a throw-away copy of the
# working tree, then run the kernel parity tests and the fuzz tests against it,
# so an out-of-bounds memoryview access that the release build would hide
# becomes an IndexError (a test failure with the case printed).
#
# The normal in-place build and the editable install are not touched: the copy
# is built with `setup.py build_ext --inplace` and imported through PYTHONPATH.
#
# Usage: tools/debug_build_check.sh [extra pytest args]
#   ASAN=1            also compile with -fsanitize=address and run the tests with
#                     libasan preloaded: catches out-of-bounds accesses through
#                     raw pointers too (Cython's checks only cover memoryviews);
#                     an ASan report aborts the fuzz worker -> a 'crash' result
#   KEEP=1            keep the temporary copy (its path is printed)
#   CYCONV_FUZZ_TIMEOUT  per-case fuzz timeout in seconds (default here: 60)
#   HYPOTHESIS_PROFILE   dev (default) or ci
#
# Exit status: 0 when the build and every test pass.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
python="${PYTHON:-python}"
start=$(date +%s)

work="$(mktemp -d "${TMPDIR:-/tmp}/cyconv-debug.XXXXXX")"
cleanup() { if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT

# Tracked + untracked-but-not-ignored files: exactly the working tree, no build outputs.
git ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' ) \
    | tar -C "$repo" --null -T - -cf - | tar -C "$work" -xf -
echo "debug copy: $work"

cd "$work"
t0=$(date +%s)
if [[ "${ASAN:-0}" == 1 ]]; then
    export CFLAGS="${CFLAGS:-} -fsanitize=address -fno-omit-frame-pointer"
    export LDFLAGS="${LDFLAGS:-} -fsanitize=address"
fi
CYCONV_DEBUG_CYTHON=1 CYCONV_BUILD_JOBS="${CYCONV_BUILD_JOBS:-2}" \
    "$python" setup.py -q build_ext --inplace >build.log 2>&1 \
    || { tail -50 build.log; echo "debug build FAILED"; exit 1; }
t1=$(date +%s)
echo "debug build: $((t1 - t0)) s"

export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${ASAN:-0}" == 1 ]]; then
    LD_PRELOAD="$(${CC:-gcc} -print-file-name=libasan.so)"
    export LD_PRELOAD
    # numpy must see NULL (-> MemoryError) for impossible sizes, not an ASan abort
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
fi
export CYCONV_FUZZ_TIMEOUT="${CYCONV_FUZZ_TIMEOUT:-60}"
# The checked build holds the baseline kernel variant only (setup.py): let the
# dispatcher pick it rather than fail on an override meant for a release build.
unset CYCONV_CPU_FEATURES
# Prove the debug extension is the one imported (not the editable install's).
"$python" - "$work" <<'EOF'
import os, sys
import cyconv, cyconv_ext._conv as c, cyconv_ext._pool as p
from cyconv import _cpu
from cyconv.backends import cython_backend as cb
work = os.path.realpath(sys.argv[1])
for mod in (cyconv, c, p):
    path = os.path.realpath(mod.__file__)
    assert path.startswith(work), f"{mod.__name__} imported from {path}, not the debug copy"
# the kernels the tests reach are these checked modules (the only variant built)
assert _cpu.selected_variant() == "baseline", _cpu.selected_variant()
assert cb._conv is c and cb._pool is p, (cb._conv, cb._pool)
import numpy as np
# a checked build turns an out-of-bounds memoryview index into IndexError
print("imported from the debug copy:", os.path.dirname(c.__file__))
EOF

tests=(tests/test_fuzz.py)
[[ -f tests/test_cython_kernels.py ]] && tests=(tests/test_cython_kernels.py "${tests[@]}")
set +e
"$python" -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib" \
    "${tests[@]}" "$@"
status=$?
set -e
end=$(date +%s)
echo "debug build check: pytest exit $status; build $((t1 - t0)) s, tests $((end - t1)) s, total $((end - start)) s"
exit $status
