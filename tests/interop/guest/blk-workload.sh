#!/bin/sh
# vt-blk-workload PLAN: the guest half of tests/interop/blk_guest.py (busybox sh).
#
# The host puts PLAN and the data to write (/vt/pattern) into the initramfs, so every byte the
# guest writes is known to the host, which checks the backing image afterwards. PLAN lines:
#   mode rw|ro                         rw: writes must succeed; ro: every write must fail
#   dev NAME                           a virtio block device to report on (features, queues)
#   w NAME direct|cached OFF LEN POFF CPU
#                                      write LEN bytes of /vt/pattern from POFF at byte OFF,
#                                      with O_DIRECT or through the page cache, on CPU (mod ncpus)
#   r NAME direct|cached OFF LEN MD5   after sync + drop_caches: read LEN bytes at OFF, compare
# Output (one line each, parsed by the host):
#   VT-VIRTIO virtioN device=0x0002 features=<bit string>   every virtio device, first
#   VT-DEV NAME virtio=virtioN features=<bit string> queues=N size=<bytes> ro=0|1 lbs=N
#          iommu_group=N|none
#   VT-ERR <what>                      one failed check
#   VT-RO-WRITE NAME direct|cached refused: <message>
#   VT-PHASE <what> uptime=S          progress, for timing
#   VT-RESULT writes=N reads=N errors=N
# Exit status: 0 when errors=0.
plan=${1:-/vt/plan}
set -o pipefail
errors=0
writes=0
reads=0
err() {
	echo "VT-ERR $*"
	errors=$((errors + 1))
}
ncpu=$(nproc)
mode=rw
for v in /sys/bus/virtio/devices/*; do
	[ -e "$v/features" ] && echo "VT-VIRTIO ${v##*/} device=$(cat "$v/device")" \
		"features=$(cat "$v/features")"
done
[ -r "$plan" ] || {
	echo "VT-ERR no plan at $plan"
	exit 1
}
[ -r /vt/pattern ] || {
	echo "VT-ERR no /vt/pattern"
	exit 1
}

sectors_written() { # 7th field of /sys/block/NAME/stat
	set -- $(cat "/sys/block/$1/stat")
	echo "$7"
}

while read -r op a b c d e f; do
	case "$op" in
	mode) mode=$a ;;
	dev)
		if [ ! -b "/dev/$a" ]; then
			err "dev $a: no /dev/$a (have: $(ls /sys/block | tr '\n' ' '))"
			continue
		fi
		v=$(readlink -f "/sys/block/$a/device")
		# The PCI function above the virtio device is in an IOMMU group when a vIOMMU
		# translates it.
		group=none
		[ -e "${v%/*}/iommu_group" ] && group=$(readlink -f "${v%/*}/iommu_group") &&
			group=${group##*/}
		echo "VT-DEV $a virtio=${v##*/} features=$(cat "/sys/block/$a/device/features")" \
			"queues=$(ls "/sys/block/$a/mq" | wc -l) size=$(($(cat "/sys/block/$a/size") * 512))" \
			"ro=$(cat "/sys/block/$a/ro") lbs=$(cat "/sys/block/$a/queue/logical_block_size")" \
			"iommu_group=$group"
		;;
	w)
		# w NAME KIND OFF LEN POFF CPU
		if [ -z "${writing:-}" ]; then
			echo "VT-PHASE writes start uptime=$(cut -d' ' -f1 /proc/uptime)"
			writing=1
		fi
		dev=/dev/$a
		cpu=$((f % ncpu))
		flags=seek_bytes
		[ "$b" = direct ] && flags=seek_bytes,direct
		before=$(sectors_written "$a")
		if out=$(taskset -c "$cpu" dd if=/vt/pattern of="$dev" bs="$d" count=1 skip="$e" \
			seek="$c" iflag=skip_bytes oflag="$flags" conv=notrunc status=none 2>&1); then
			ok=1
		else
			ok=0
		fi
		if [ "$mode" = ro ]; then
			if [ $ok = 1 ]; then
				err "read-only $a: $b write of $d at $c succeeded"
			else
				echo "VT-RO-WRITE $a $b refused: $(echo "$out" | tail -n 1)"
			fi
			continue
		fi
		if [ $ok = 0 ]; then
			err "write $a $b off=$c len=$d: $out"
			continue
		fi
		writes=$((writes + 1))
		if [ "$b" = direct ]; then
			# O_DIRECT proof: the sectors reached the device before any sync. (busybox dd
			# silently drops O_DIRECT on EINVAL; the plan keeps buffers and offsets aligned.)
			after=$(sectors_written "$a")
			if [ $((after - before)) -lt $((d / 512)) ]; then
				err "direct write $a off=$c len=$d: only $((after - before)) sectors reached the device"
			fi
		fi
		;;
	r)
		# r NAME KIND OFF LEN MD5: the first read ends the write phase.
		if [ -z "${flushed:-}" ]; then
			echo "VT-PHASE writes done uptime=$(cut -d' ' -f1 /proc/uptime)"
			sync
			echo 3 >/proc/sys/vm/drop_caches
			echo "VT-PHASE synced uptime=$(cut -d' ' -f1 /proc/uptime)"
			flushed=1
			[ "$mode" = ro ] && [ "$(sectors_written "$a")" != 0 ] &&
				err "read-only $a: $(sectors_written "$a") sectors were written"
		fi
		dev=/dev/$a
		if [ "$b" = direct ]; then
			got=$(dd if="$dev" bs="$d" count=1 skip="$c" iflag=skip_bytes,direct status=none |
				md5sum) || got="read-failed"
		else
			got=$(dd if="$dev" bs=65536 count="$d" skip="$c" iflag=skip_bytes,count_bytes \
				status=none | md5sum) || got="read-failed"
		fi
		got=${got%% *}
		reads=$((reads + 1))
		[ "$got" = "$e" ] || err "read $a $b off=$c len=$d: md5 $got, expected $e"
		;;
	'' | '#'*) ;;
	*) err "bad plan line: $op $a $b $c $d $e $f" ;;
	esac
done <"$plan"

echo "VT-PHASE reads done uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ $errors -ne 0 ]; then
	echo "VT-DMESG-BEGIN"
	dmesg | tail -n 30
	echo "VT-DMESG-END"
fi
echo "VT-RESULT writes=$writes reads=$reads errors=$errors"
[ $errors -eq 0 ]
