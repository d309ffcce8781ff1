#!/bin/sh
# vt-blk-bench: the guest half of tests/interop/blk_bench.py (busybox sh), vt.workload=bench.
#
# Time-bounded workloads on /dev/vda, every one with O_DIRECT (the device sees each request; the
# host's image is RAM-backed, so what is measured is the request path: guest driver, virtqueue,
# back-end, and back again; under TCG the guest's share dominates):
#   seq-read-64k seq-write-64k seq-read-4k seq-write-4k
#       one dd process, QD1: one request per block, chunks of many blocks per dd (the shell runs
#       once per chunk, not per block); the offset advances and wraps at the end of the device
#   rand-read-4k rand-write-4k
#       JOBS shell loops in parallel (worker i pinned to CPU i mod ncpus), each running one dd of
#       one 4 KiB block at a pseudo-random block (an LCG) per iteration: up to JOBS requests in
#       flight. Shell-bound: each request costs a fork and exec of dd, which
#   rand-spawn-4k
#       measures alone: the same loops with count=0 (dd opens the device, moves nothing).
#       rand-* minus rand-spawn-4k per op is roughly the request's own cost.
# Parameters on the kernel command line: vt.bench.ms=MS (per workload, default 2000),
# vt.bench.jobs=N (random workloads, default 4), vt.bench.only=a,b (workload names),
# vt.bench.settle=S (default 0): seconds of quiet before and after each workload, so that the host
# can read the back-end's CPU time while it is idle (between VT-MARK and VT-BENCH).
# Output (parsed by the host):
#   VT-DEV NAME virtio=virtioN features=<bits> queues=N size=<bytes> ro=0|1 lbs=N iommu_group=G
#   VT-MARK start NAME                 a workload starts after the settle time
#   VT-BENCH name=N bs=B jobs=J ops=N bytes=N seconds=S iops=I mbps=M reqs=R
#       (then the settle time again)
#       reqs: requests the device completed in that direction (/sys/block/vda/stat)
#   VT-ERR <what>
# Exit status: 0 when no VT-ERR was printed.
dev=vda
now() { # NOW=monotonic ns, without a fork: /proc/timer_list's "now at N nsecs", or /proc/uptime
	if [ -r /proc/timer_list ]; then
		{
			read -r _
			read -r _
			read -r _ _ NOW _
		} </proc/timer_list
	else
		read -r u _ </proc/uptime
		NOW=$((${u%.*} * 1000000000 + (1${u#*.} - 100) * 10000000))
	fi
}
lcg() { X=$(((X * 1103515245 + 12345) % 2147483648)); }

if [ "${1:-}" = --worker ]; then
	# --worker read|write|spawn BS NBLK END_NS SEED OUTFILE: one random-I/O loop.
	rw=$2 bs=$3 nblk=$4 end=$5 X=$6 out=$7 n=0
	while :; do
		i=0
		while [ $i -lt 8 ]; do
			lcg
			b=$((X % nblk))
			case $rw in
			read) dd if=/dev/$dev of=/dev/null bs="$bs" count=1 skip=$b iflag=direct status=none ;;
			write) dd if=/dev/zero of=/dev/$dev bs="$bs" count=1 seek=$b oflag=direct \
				conv=notrunc status=none ;;
			spawn) dd if=/dev/$dev of=/dev/null bs="$bs" count=0 skip=$b iflag=direct status=none ;;
			esac || {
				echo "VT-ERR $rw bs=$bs block=$b failed"
				echo "$n fail" >"$out"
				exit 1
			}
			i=$((i + 1))
		done
		n=$((n + 8))
		now
		[ "$NOW" -lt "$end" ] || break
	done
	echo "$n" >"$out"
	exit 0
fi

ms=2000 jobs=4 only= settle=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vt.bench.ms=*) ms=${arg#*=} ;;
	vt.bench.jobs=*) jobs=${arg#*=} ;;
	vt.bench.settle=*) settle=${arg#*=} ;;
	vt.bench.only=*) only=,${arg#*=}, ;;
	esac
done
errors=0
err() {
	echo "VT-ERR $*"
	errors=$((errors + 1))
}
[ -b /dev/$dev ] || {
	echo "VT-ERR no /dev/$dev (have: $(ls /sys/block | tr '\n' ' '))"
	exit 1
}
ncpu=$(nproc)
size=$(($(cat /sys/block/$dev/size) * 512))
v=$(readlink -f "/sys/block/$dev/device")
group=none
[ -e "${v%/*}/iommu_group" ] && group=$(readlink -f "${v%/*}/iommu_group") && group=${group##*/}
echo "VT-DEV $dev virtio=${v##*/} features=$(cat "/sys/block/$dev/device/features")" \
	"queues=$(ls "/sys/block/$dev/mq" | wc -l) size=$size" \
	"ro=$(cat "/sys/block/$dev/ro") lbs=$(cat "/sys/block/$dev/queue/logical_block_size")" \
	"iommu_group=$group"
dur=$((ms * 1000000))

stat_io() { # IO_R IO_W SEC_R SEC_W from /sys/block/vda/stat
	set -- $(cat /sys/block/$dev/stat)
	IO_R=$1 SEC_R=$3 IO_W=$5 SEC_W=$7
}
report() { # name bs jobs ops ns rw
	stat_io
	if [ "$6" = write ]; then
		reqs=$((IO_W - io_w0)) secs=$((SEC_W - sec_w0))
	else
		reqs=$((IO_R - io_r0)) secs=$((SEC_R - sec_r0))
	fi
	bytes=$(($4 * $2))
	[ "$6" = spawn ] && bytes=0
	# O_DIRECT proof: busybox dd silently retries without it on EINVAL; then the page cache
	# would answer reads and absorb writes, and the device would see fewer sectors.
	[ $secs -ge $((bytes / 512)) ] ||
		err "$1: $bytes bytes moved but only $secs sectors reached the device (not O_DIRECT?)"
	awk -v n="$1" -v bs="$2" -v j="$3" -v ops="$4" -v ns="$5" -v b="$bytes" -v r="$reqs" 'BEGIN {
		s = ns / 1e9
		printf "VT-BENCH name=%s bs=%d jobs=%d ops=%d bytes=%d", n, bs, j, ops, b
		printf " seconds=%.3f iops=%.1f mbps=%.3f reqs=%d\n", s, ops / s, b / s / 1e6, r }'
}
settle() { # the host samples the back-end's CPU time on VT-MARK, during the sleep
	echo "VT-MARK start $1"
	sleep "$settle"
}
selected() { [ -z "$only" ] || case $only in *",$1,"*) true ;; *) false ;; esac }

seq_bench() { # name read|write BS CHUNK_OPS
	selected "$1" || return 0
	name=$1 rw=$2 bs=$3 chunk=$4
	settle "$name"
	nblk=$((size / bs))
	[ $chunk -le $nblk ] || chunk=$nblk
	off=0 ops=0
	stat_io
	io_r0=$IO_R io_w0=$IO_W sec_r0=$SEC_R sec_w0=$SEC_W
	now
	t0=$NOW
	while :; do
		if [ "$rw" = read ]; then
			dd if=/dev/$dev of=/dev/null bs="$bs" count=$chunk skip=$off iflag=direct status=none
		else
			dd if=/dev/zero of=/dev/$dev bs="$bs" count=$chunk seek=$off oflag=direct \
				conv=notrunc status=none
		fi || {
			err "$name: dd failed at block $off"
			return
		}
		ops=$((ops + chunk))
		off=$((off + chunk))
		[ $((off + chunk)) -le $nblk ] || off=0
		now
		[ $((NOW - t0)) -lt $dur ] || break
	done
	report "$name" "$bs" 1 $ops $((NOW - t0)) "$rw"
	sleep "$settle"
}

rand_bench() { # name read|write|spawn BS
	selected "$1" || return 0
	name=$1 rw=$2 bs=$3
	settle "$name"
	nblk=$((size / bs))
	stat_io
	io_r0=$IO_R io_w0=$IO_W sec_r0=$SEC_R sec_w0=$SEC_W
	now
	t0=$NOW
	j=0
	while [ $j -lt "$jobs" ]; do
		rm -f /tmp/rand.$j
		taskset -c $((j % ncpu)) sh "$0" --worker "$rw" "$bs" $nblk $((t0 + dur)) \
			$((12345 + 7919 * j)) /tmp/rand.$j &
		j=$((j + 1))
	done
	wait
	now
	ops=0 j=0
	while [ $j -lt "$jobs" ]; do
		read -r n f </tmp/rand.$j || n=0 f=missing
		[ -z "$f" ] || err "$name: worker $j: $f"
		ops=$((ops + n))
		j=$((j + 1))
	done
	report "$name" "$bs" "$jobs" $ops $((NOW - t0)) "$rw"
	sleep "$settle"
}

echo "VT-PHASE bench start ms=$ms jobs=$jobs ncpu=$ncpu uptime=$(cut -d' ' -f1 /proc/uptime)"
seq_bench seq-write-64k write 65536 256
seq_bench seq-read-64k read 65536 256
seq_bench seq-write-4k write 4096 1024
seq_bench seq-read-4k read 4096 1024
rand_bench rand-write-4k write 4096
rand_bench rand-read-4k read 4096
rand_bench rand-spawn-4k spawn 4096
echo "VT-PHASE bench done uptime=$(cut -d' ' -f1 /proc/uptime)"
[ $errors -eq 0 ]
