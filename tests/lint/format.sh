#!/bin/sh
# Every C file is as clang-format (the repo's .clang-format) would write it: `make format` fixes it.
# usage: format.sh SOURCE_ROOT
set -eu
cd "${1:-.}"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find include src tools tests -name '*.[ch]')
out=$(clang-format --dry-run $files 2>&1 | grep -E 'warning:' || true)
if [ -n "$out" ]; then
	printf '%s\n' "$out" | head -20
	echo "not clang-formatted: run 'make format'"
	exit 1
fi
echo "$(printf '%s\n' $files | wc -l) files clang-formatted"
