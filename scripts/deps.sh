#!/bin/sh
# Installs the Debian packages the build and the tests need, when missing. As root it runs apt-get;
# otherwise it prints the exact command and fails.
set -eu
need=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# The interop tests (tests/interop/) boot a Debian kernel under QEMU: qemu-system-x86 (whose
# qemu-system-common has qemu-storage-daemon, the reference vhost-user-blk backend), cpio and
# xz-utils to build the guest kit. dpdk-dev brings dpdk-testpmd, the virtio-net peer (net_vhost,
# net_virtio_user) of the front-end's interop tests.
for p in meson ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev liburing-dev python3 \
	qemu-system-x86 qemu-system-common cpio xz-utils dpdk-dev; do
	have_pkg "$p" || need="$need $p"
done
[ -z "$need" ] && exit 0
cmd="apt-get install -y --no-install-recommends$need"
if [ "$(id -u)" -ne 0 ]; then
	echo "virtue needs Debian packages:$need" >&2
	echo "run as root: apt-get update && $cmd" >&2
	exit 1
fi
echo "installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need
