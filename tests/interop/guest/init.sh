#!/bin/sh
# /init of the interop guest (busybox sh). Mounts proc/sys/dev, loads the virtio modules in
# dependency order, runs the workload named by vt.workload= on the kernel command line between
# clear markers on the console, then powers off. The host parses:
#   VT-BEGIN <workload>          the workload starts
#   VT-... lines                 its results (see the workload script)
#   VT-END rc=<n>                it ended with status n (0 = every check passed)
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
# Kernel messages at warning level and above only: they share the serial line with the markers.
echo 4 >/proc/sys/kernel/printk

workload=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vt.workload=*) workload=${arg#vt.workload=} ;;
	esac
done

echo "VT-KERNEL $(uname -r) cpus=$(nproc)"
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$m.ko" || echo "VT-ERR insmod $m failed"
done </lib/modules/load.order
# Devices appear asynchronously after the driver binds.
i=0
while [ $i -lt 50 ] && ! ls /sys/block | grep -q '^vd'; do
	sleep 0.1
	i=$((i + 1))
done

echo "VT-BEGIN ${workload:-none} uptime=$(cut -d" " -f1 /proc/uptime)"
case "$workload" in
blk) /bin/vt-blk-workload /vt/plan ;;
bench) /bin/vt-blk-bench ;;
shell) sh ;;
*)
	echo "VT-ERR unknown workload '${workload}' (kernel command line: vt.workload=blk|bench|shell)"
	false
	;;
esac
rc=$?
echo "VT-END rc=$rc uptime=$(cut -d" " -f1 /proc/uptime)"
sync
poweroff -f
