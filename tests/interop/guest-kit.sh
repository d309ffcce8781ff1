#!/bin/sh
# guest-kit.sh OUTDIR: builds the guest kit the interop tests boot under QEMU, from Debian packages
# only (nothing is installed on the host):
#   OUTDIR/vmlinuz          the kernel of the real linux-image-6.1.0-*-amd64 package
#   OUTDIR/vmlinux          the same kernel decompressed (an ELF with a PVH entry note): QEMU
#                           boots it directly, saving the ~7 s that decompressing the bzImage
#                           takes under TCG. Absent if the kernel has no PVH entry.
#   OUTDIR/initramfs.gz     cpio newc + gzip: busybox-static, the virtio modules the guest needs
#                           (closure over each module's "depends=", loaded in dependency order),
#                           /init (guest/init.sh), /bin/vt-blk-workload (guest/blk-workload.sh) and
#                           /bin/vt-blk-bench (guest/blk-bench.sh)
#   OUTDIR/kit.info         the package versions it was made from
#   OUTDIR/kit.stamp        written last; while it is newer than this script and the guest/ files,
#                           a second run does nothing
# Needs apt-get (root, or a user allowed to run apt-get download), dpkg-deb, cpio, gzip, xz, zstd
# (the last two only if the modules are compressed). Safe to run concurrently: it takes a lock.
set -eu
[ $# -eq 1 ] || {
	echo "usage: $0 OUTDIR" >&2
	exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
inputs="$here/guest-kit.sh $here/guest/init.sh $here/guest/blk-workload.sh"
inputs="$inputs $here/guest/blk-bench.sh"

fresh() {
	[ -f "$out/kit.stamp" ] || return 1
	for f in $inputs; do
		[ "$out/kit.stamp" -nt "$f" ] || return 1
	done
	[ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.gz" ]
}

# One builder at a time (meson may start several tests that need the kit at once).
if [ -z "${VT_KIT_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
	VT_KIT_LOCKED=1 exec flock "$out/.lock" sh "$0" "$@"
fi
fresh && exit 0

for tool in apt-get apt-cache dpkg-deb cpio gzip python3; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "guest-kit: $tool not found (scripts/deps.sh installs what is missing)" >&2
		exit 1
	}
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vt-guest-kit.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# apt-get download as root drops to the _apt user, which must be able to write the directory.
chmod 755 "$work"
mkdir "$work/deb"
chmod 777 "$work/deb"

# The kernel package linux-image-amd64 points at (linux-image-6.1.0-N-amd64 on Debian 12).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
	apt-get update -qq
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
fi
[ -n "$kpkg" ] || {
	echo "guest-kit: cannot resolve linux-image-amd64 (run apt-get update)" >&2
	exit 1
}

download() {
	(cd "$work/deb" && apt-get download -q -o APT::Sandbox::User=root "$@") >"$work/apt.log" 2>&1
}
echo "guest-kit: downloading $kpkg busybox-static"
if ! download "$kpkg" busybox-static; then
	# Stale package lists (a newer kernel ABI was published): refresh once and retry.
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && download "$kpkg" busybox-static || {
			cat "$work/apt.log" >&2
			exit 1
		}
	else
		cat "$work/apt.log" >&2
		exit 1
	fi
fi

mkdir "$work/x"
for d in "$work"/deb/*.deb; do
	dpkg-deb -x "$d" "$work/x"
done
kver=$(ls "$work/x/lib/modules" | head -n 1)
[ -n "$kver" ] && [ -f "$work/x/boot/vmlinuz-$kver" ] || {
	echo "guest-kit: no kernel in $kpkg" >&2
	exit 1
}
moddir="$work/x/lib/modules/$kver"
[ -x "$work/x/bin/busybox" ] || {
	echo "guest-kit: no /bin/busybox in busybox-static" >&2
	exit 1
}

# The initramfs tree.
root="$work/root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/lib/modules" "$root/vt"
cp "$work/x/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$here/guest/init.sh" "$root/init"
cp "$here/guest/blk-workload.sh" "$root/bin/vt-blk-workload"
cp "$here/guest/blk-bench.sh" "$root/bin/vt-blk-bench"
chmod 755 "$root/init" "$root/bin/vt-blk-workload" "$root/bin/vt-blk-bench"
# The kernel opens /dev/console before /init runs; init also mounts devtmpfs.
mknod "$root/dev/console" c 5 1 2>/dev/null || true

# Module closure. A module's dependencies are in its .modinfo section ("depends=a,b"); the
# package has no modules.dep (depmod makes it at install time), so read them from the files.
# Busybox insmod takes plain .ko files: compressed ones are decompressed here.
find "$moddir/kernel" -name '*.ko*' |
	awk -F/ '{ n = $NF; sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); print n, $0 }' >"$work/modindex"
modfile() { # module name -> path of its file in the package
	awk -v n="$(echo "$1" | tr '-' '_')" '$1 == n { print $2; exit }' "$work/modindex"
}
plain() { # file -> uncompressed .ko content on stdout
	case "$1" in
	*.ko) cat "$1" ;;
	*.ko.xz) xz -dc "$1" ;;
	*.ko.zst) zstd -dc "$1" ;;
	*.ko.gz) gzip -dc "$1" ;;
	*)
		echo "guest-kit: unknown module format $1" >&2
		return 1
		;;
	esac
}
: >"$root/lib/modules/load.order"
visit() { # depth-first: dependencies first, each module once
	local n f deps d
	n=$(echo "$1" | tr '-' '_')
	grep -qx "$n" "$root/lib/modules/load.order" && return 0
	grep -qx "$n" "$work/visiting" 2>/dev/null && return 0
	echo "$n" >>"$work/visiting"
	if grep -qx "$n" "$moddir/modules.builtin.names" 2>/dev/null; then
		return 0
	fi
	f=$(modfile "$n")
	if [ -z "$f" ]; then
		echo "guest-kit: module $n not found (built in?)" >&2
		return 0
	fi
	plain "$f" >"$root/lib/modules/$n.ko"
	deps=$(tr '\0' '\n' <"$root/lib/modules/$n.ko" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' ')
	for d in $deps; do
		visit "$d"
	done
	echo "$n" >>"$root/lib/modules/load.order"
}
# modules.builtin lists kernel/.../name.ko for built-in drivers.
sed 's,.*/,,; s,\.ko$,,; s,-,_,g' "$moddir/modules.builtin" >"$moddir/modules.builtin.names" 2>/dev/null || true
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
	visit "$m"
done

bbver=$(dpkg-deb -f "$work"/deb/busybox-static_*.deb Version)
kpver=$(dpkg-deb -f "$work"/deb/"$kpkg"_*.deb Version)
{
	echo "kernel $kpkg $kpver ($kver)"
	echo "busybox-static $bbver"
	echo "modules $(tr '\n' ' ' <"$root/lib/modules/load.order")"
} >"$work/kit.info"
cp "$work/kit.info" "$root/vt/kit.info"

# bzImage -> vmlinux: the payload offset and length are in the setup header (0x248, 0x24c).
python3 - "$work/x/boot/vmlinuz-$kver" "$work/vmlinux" <<'PY' || rm -f "$work/vmlinux"
import lzma, struct, subprocess, sys, zlib
d = open(sys.argv[1], "rb").read()
setup = (d[0x1f1] or 4) + 1
off, ln = struct.unpack_from("<II", d, 0x248)
p = d[setup * 512 + off:setup * 512 + off + ln]
# One stream each: the payload ends with the uncompressed size, which is not another stream.
if p[:6] == b"\xfd7zXZ\x00":
    v = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(p)
elif p[:2] == b"\x1f\x8b":
    v = zlib.decompressobj(31).decompress(p)
elif p[:4] == b"\x28\xb5\x2f\xfd":
    v = subprocess.run(["zstd", "-dc"], input=p, stdout=subprocess.PIPE, check=True).stdout
else:
    sys.exit("unknown bzImage payload compression")
# Keep it only if it has the PVH entry note (Xen, type 18) QEMU needs to boot an ELF kernel.
assert v[:4] == b"\x7fELF"
phoff, = struct.unpack_from("<Q", v, 0x20)
phentsize, phnum = struct.unpack_from("<HH", v, 0x36)
pvh = False
for i in range(phnum):
    ptype, _, poff, _, _, psz = struct.unpack_from("<IIQQQQ", v, phoff + i * phentsize)
    if ptype != 4:  # PT_NOTE
        continue
    n = poff
    while n < poff + psz:
        nsz, dsz, typ = struct.unpack_from("<III", v, n)
        name = v[n + 12:n + 12 + nsz].rstrip(b"\0")
        if name == b"Xen" and typ == 18:
            pvh = True
        n += 12 + (nsz + 3) // 4 * 4 + (dsz + 3) // 4 * 4
if not pvh:
    sys.exit("no PVH entry note: QEMU boots the bzImage instead")
open(sys.argv[2], "wb").write(v)
PY

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$work/initramfs.gz"

rm -f "$out/kit.stamp"
cp "$work/x/boot/vmlinuz-$kver" "$out/vmlinuz.new" && mv "$out/vmlinuz.new" "$out/vmlinuz"
rm -f "$out/vmlinux"
if [ -s "$work/vmlinux" ]; then
	cp "$work/vmlinux" "$out/vmlinux.new" && mv "$out/vmlinux.new" "$out/vmlinux"
fi
cp "$work/initramfs.gz" "$out/initramfs.gz.new" && mv "$out/initramfs.gz.new" "$out/initramfs.gz"
cp "$work/kit.info" "$out/kit.info"
touch "$out/kit.stamp"
echo "guest-kit: $out ready"
sed 's/^/guest-kit:   /' "$out/kit.info"
