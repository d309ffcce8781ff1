#!/bin/sh
# make check: every test in three builds, then one "N passed, N failed" line over all of them.
#   build/       gcc, -Werror, the full iteration counts, seed corpora replayed
#   build-asan/  clang, ASan+UBSan (no recovery), libFuzzer targets run for a bounded time
#   build-tsan/  clang, TSan, the threaded tests (suite "threads")
# Exit status: non-zero if anything failed to build or any test failed.
set -u
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

status=0
setup() { # dir, then meson setup arguments
	dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || {
			cat "$dir.setup.log"
			return 1
		}
	fi
}
run_build() { # dir, then meson test arguments
	dir=$1
	shift
	echo "== $dir: build"
	ninja -C "$dir" >"$dir.ninja.log" 2>&1 || {
		cat "$dir.ninja.log"
		echo "== $dir: BUILD FAILED"
		status=1
		return 1
	}
	echo "== $dir: test"
	rm -f "$dir/meson-logs/testlog.json"
	meson test -C "$dir" --no-rebuild --print-errorlogs "$@" || status=1
}

setup build --buildtype=debugoptimized -Dwerror=true && run_build build
CC=clang setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
	-Dc_args=-fno-sanitize-recover=all -Dfuzz=true -Dtest_scale=10 -Dwerror=true &&
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		run_build build-asan
CC=clang setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false \
	-Dtest_scale=10 -Dwerror=true &&
	TSAN_OPTIONS=halt_on_error=1 run_build build-tsan --suite threads

python3 scripts/test-summary.py build build-asan build-tsan || status=1
exit $status
