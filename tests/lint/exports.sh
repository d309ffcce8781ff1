#!/bin/sh
# The shared library exports its API, the vt_ names, and nothing else (src/libvirtue.map): an
# internal function exported again could be interposed and would stop being inlined.
# usage: exports.sh LIBVIRTUE_SO
set -eu
all=$(nm -D --defined-only "$1" | awk '{ print $NF }')
extra=$(printf '%s\n' "$all" | grep -v '^vt_' || true)
if [ -n "$extra" ]; then
	printf '%s\n' "$extra" | head -20
	echo "exported without the vt_ prefix: see src/libvirtue.map"
	exit 1
fi
if [ -z "$all" ]; then
	echo "no symbols read from $1"
	exit 1
fi
echo "$(printf '%s\n' "$all" | wc -l) symbols exported, every one vt_"
