#!/bin/sh
# The platform rule (README, include/virtue/platform.h): only vt_uses_platform_dma() and
# vt_barrier_kind() test VIRTIO_F_ACCESS_PLATFORM and VIRTIO_F_ORDER_PLATFORM. Outside platform.h
# the bits may be named (spec header, name and dependency tables) or offered by a device model on
# a line that says so with the word "offer"; nothing else in the library or tools may use them.
# usage: platform-rule.sh SOURCE_ROOT
set -eu
cd "${1:-.}"
allowed='^(include/virtue/platform\.h|include/virtue/spec/virtio_config\.h|src/spec/features\.c|src/core/feature_rules\.c):'
bad=$(grep -rnE 'VIRTIO_F_(ACCESS|ORDER|IOMMU)_PLATFORM' include src tools \
	| grep -vE "$allowed" | grep -v 'offer' || true)
if [ -n "$bad" ]; then
	echo "platform rule violated: only include/virtue/platform.h may test these bits:"
	printf '%s\n' "$bad"
	exit 1
fi
echo "platform rule holds; vt_uses_platform_dma asked by:"
grep -rln 'vt_uses_platform_dma' src tools include | sort | sed 's/^/  /'
