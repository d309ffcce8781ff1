/* SPDX-License-Identifier: MIT */
/*
 * virtue-bench ring: the virtqueue data path between two busy-polling threads pinned to CPUs 0
 * and 1, a 256-entry ring, the driver posting one-segment buffers in batches and the device
 * returning them. Reported per configuration: ns per buffer, Mbuf/s, the ratio to two reference
 * rings run alternately with it, an "ideal" ring (16-byte descriptors with an ownership flag and
 * nothing else: the least work any ring can do) and the bare spec ring of its format
 * (bench_bare.c), and the cache-line ping-pong measured right after it.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "bench.h"

#define RING_SIZE 256
#define POOL	  512

/* ------------------------------------------------------------------ the ideal ring */

struct ideal_desc {
	uint64_t addr;
	uint32_t len;
	_Atomic uint32_t owner; /* 1: the consumer's */
};

struct ideal_ring {
	_Alignas(64) struct ideal_desc desc[RING_SIZE];
	uint64_t count;
};

static void *ideal_consumer(void *arg)
{
	struct ideal_ring *r = arg;
	uint64_t sink = 0;
	bench_pin(1);
	for (uint64_t i = 0; i < r->count; i++) {
		struct ideal_desc *d = &r->desc[i % RING_SIZE];
		/* Acquire pairs with the producer's release of owner = 1. */
		while (atomic_load_explicit(&d->owner, memory_order_acquire) != 1)
			;
		sink += d->addr + d->len;
		atomic_store_explicit(&d->owner, 0, memory_order_release);
	}
	__asm__ __volatile__("" ::"r"(sink));
	return NULL;
}

static double ideal_run(uint64_t count)
{
	struct ideal_ring *r = aligned_alloc(64, sizeof(*r));
	if (!r)
		return -1;
	memset(r, 0, sizeof(*r));
	r->count = count;
	pthread_t t;
	if (pthread_create(&t, NULL, ideal_consumer, r) != 0) {
		free(r);
		return -1;
	}
	bench_pin(0);
	uint64_t start = bench_now_ns();
	for (uint64_t i = 0; i < count; i++) {
		struct ideal_desc *d = &r->desc[i % RING_SIZE];
		while (atomic_load_explicit(&d->owner, memory_order_acquire) != 0)
			;
		d->addr = 0x1000 + i * 64;
		d->len = 64;
		atomic_store_explicit(&d->owner, 1, memory_order_release);
	}
	pthread_join(t, NULL);
	uint64_t elapsed = bench_now_ns() - start;
	free(r);
	return (double)elapsed / (double)count;
}

/* ------------------------------------------------------------------ virtue's rings */

struct ring_config {
	bool packed;
	bool in_order;
	enum vt_dma_mode dma;
	unsigned int batch;
	size_t size;	 /* bytes per buffer */
	bool page_table; /* strict, lazy: the DMA object's page table instead of an IOTLB */
};

/* The dma column: the mode, and "-pt" for a page table the device walks. */
static const char *dma_label(const struct ring_config *cfg, char *buf, size_t size)
{
	snprintf(buf, size, "%s%s", vt_dma_mode_name(cfg->dma), cfg->page_table ? "-pt" : "");
	return buf;
}

/*
 * Where a run's time went (--phases), in ticks (bench_ticks) summed over the run: the driver's
 * calls that moved buffers, its kicks, its get calls that found nothing, and the device's bursts
 * that took something (pop to flush).
 */
struct ring_phases {
	uint64_t add, kick, get, empty_get, device_busy;
	uint64_t added, got, empty_gets, device_done;
	uint64_t elapsed; /* ticks of the driver's whole loops */
	double ticks_per_ns;
};

/* The driver thread's stack holds it: the fields the device reads get lines of their own. */
struct ring_run {
	_Alignas(64) struct vt_vq_dev *dev;
	unsigned int batch;
	bool in_order;
	bool timed;
	uint64_t count;
	_Alignas(64) _Atomic int failed;
	char pad[60];
	/* Stored once by the device thread as it ends, read after it ended. */
	_Alignas(64) uint64_t device_busy, device_done;
};

/* The device takes and returns buffers in bursts, as a poll-mode device does. */
#define IOV_PER_CHAIN 2

static void *device_thread(void *arg)
{
	struct ring_run *run = arg;
	struct vt_vq_chain chains[RING_SIZE];
	struct iovec iov[RING_SIZE * IOV_PER_CHAIN];
	uint64_t done = 0, sink = 0, busy = 0;
	bench_pin(1);
	/* Named, so that a profile (perf report --sort comm) tells the two halves apart. */
	pthread_setname_np(pthread_self(), "bench-device");
	while (done < run->count && !atomic_load_explicit(&run->failed, memory_order_relaxed)) {
		uint64_t start = run->timed ? bench_ticks() : 0;
		int got = vt_vq_dev_pop_burst(run->dev, chains, iov, IOV_PER_CHAIN, run->batch);
		if (got < 0) {
			atomic_store(&run->failed, 1);
			return NULL;
		}
		unsigned int n = (unsigned int)got;
		/* Touch the payload, as any device would. */
		for (unsigned int i = 0; i < n; i++)
			sink += *(volatile uint8_t *)iov[i * IOV_PER_CHAIN].iov_base;
		if (n == 0)
			continue;
		/* IN_ORDER lets a device return a batch with one used entry: what it is for. */
		int ret = run->in_order ? vt_vq_dev_push_in_order_batch(run->dev, &chains[n - 1], 0)
					: vt_vq_dev_push_burst(run->dev, chains, NULL, n);
		if (ret < 0) {
			atomic_store(&run->failed, 1);
			return NULL;
		}
		vt_vq_dev_flush(run->dev);
		if (run->timed)
			busy += bench_ticks() - start;
		done += n;
	}
	/* Once, at the end: a store per burst would share the line the driver polls. */
	run->device_busy = busy;
	run->device_done = done;
	__asm__ __volatile__("" ::"r"(sink));
	return NULL;
}

static double ring_run_once(const struct ring_config *cfg, uint64_t count, struct ring_phases *ph)
{
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) |
			    (cfg->packed ? VT_BIT(VIRTIO_F_RING_PACKED) : 0) |
			    (cfg->in_order ? VT_BIT(VIRTIO_F_IN_ORDER) : 0);
	struct vt_shm *shm = NULL;
	struct vt_iotlb_feed side = { 0 };
	struct vt_dma *dma = NULL;
	struct vt_vq_drv *drv = NULL;
	struct ring_run run = {
		.batch = cfg->batch, .in_order = cfg->in_order, .timed = ph != NULL, .count = count
	};
	void *bufs[POOL] = { 0 };
	struct iovec sgs[RING_SIZE];
	void *tokens[RING_SIZE];
	uint32_t lens[RING_SIZE];
	double result = -1;
	pthread_t t;
	bool iommu = cfg->dma == VT_DMA_IOMMU_STRICT || cfg->dma == VT_DMA_IOMMU_LAZY ||
		     cfg->dma == VT_DMA_IOMMU_PREMAPPED;

	if (vt_shm_new(&shm) < 0 || vt_shm_add_memfd(shm, 32 << 20, 1ull << 32, NULL) < 0)
		goto out;
	side.table = vt_memtable_new(NULL);
	if (!side.table || vt_memtable_add_shm(side.table, shm) < 0 ||
	    vt_iotlb_new(NULL, &side.iotlb))
		goto out;
	struct vt_dma_params dp = {
		.mode = cfg->dma, .shm = shm, .iotlb_ops = &vt_iotlb_feed_ops, .iotlb_opaque = &side
	};
	/* A page table: the device walks what the driver writes, no IOTLB between them. */
	struct vt_as device_as = iommu ? vt_iotlb_as(side.iotlb) : vt_memtable_as(side.table);
	if (cfg->page_table) {
		dp.page_table = true;
		dp.iotlb_ops = NULL;
	}
	if (vt_dma_new(&dp, &dma) < 0 || (cfg->page_table && vt_dma_device_as(dma, &device_as) < 0))
		goto out;
	struct vt_vq_drv_params qp = { .num = RING_SIZE, .features = features, .dma = dma };
	if (vt_vq_drv_new(&qp, &drv) < 0)
		goto out;
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(drv, &desc, &driver, &device);
	struct vt_vq_dev_params vp = {
		.num = RING_SIZE,
		.features = features,
		.desc_addr = desc,
		.driver_addr = driver,
		.device_addr = device,
		.as = device_as,
		.next_avail = cfg->packed ? VT_VQ_PACKED_START : 0,
	};
	if (vt_vq_dev_new(&vp, &run.dev) < 0)
		goto out;
	for (unsigned int i = 0; i < POOL; i++) {
		if (vt_shm_alloc(shm, cfg->size, 64, &bufs[i]) < 0)
			goto out;
		memset(bufs[i], (int)i, cfg->size);
	}

	if (pthread_create(&t, NULL, device_thread, &run) != 0)
		goto out;
	bench_pin(0);
	uint64_t posted = 0, completed = 0;
	uint64_t start = bench_now_ns(), start_ticks = bench_ticks();
	while (completed < count && !atomic_load_explicit(&run.failed, memory_order_relaxed)) {
		/* A batch in one burst, as many as fit; the pool's next buffers in order. */
		unsigned int want = cfg->batch;
		if (want > count - posted)
			want = (unsigned int)(count - posted);
		for (unsigned int i = 0; i < want; i++) {
			void *b = bufs[(posted + i) % POOL];
			sgs[i] = (struct iovec){ b, cfg->size };
			tokens[i] = b;
		}
		uint64_t t0 = ph ? bench_ticks() : 0;
		int added = want ? vt_vq_drv_add_burst(drv, sgs, want, false, tokens) : 0;
		uint64_t t1 = ph ? bench_ticks() : 0;
		if (added > 0) {
			posted += (unsigned int)added;
			vt_vq_drv_kick_prepare(drv);
		}
		if (ph) {
			uint64_t t2 = bench_ticks();
			ph->add += t1 - t0;
			if (added > 0) {
				ph->added += (unsigned int)added;
				ph->kick += t2 - t1;
			}
		}
		for (;;) {
			uint64_t t3 = ph ? bench_ticks() : 0;
			int got = vt_vq_drv_get_burst(drv, tokens, lens, RING_SIZE);
			if (ph) {
				uint64_t spent = bench_ticks() - t3;
				if (got > 0) {
					ph->get += spent;
					ph->got += (unsigned int)got;
				} else {
					ph->empty_get += spent;
					ph->empty_gets++;
				}
			}
			if (got > 0)
				completed += (unsigned int)got;
			/*
			 * One call collects every entry exposed, reading the used index again until
			 * it shows nothing new (the bare ring's loop does the same); only a full
			 * array leaves some for another.
			 */
			if (got < RING_SIZE)
				break;
		}
		if (vt_vq_drv_is_broken(drv))
			atomic_store(&run.failed, 1);
	}
	uint64_t elapsed = bench_now_ns() - start;
	uint64_t elapsed_ticks = bench_ticks() - start_ticks;
	pthread_join(t, NULL);
	if (ph) {
		ph->device_busy += run.device_busy;
		ph->device_done += run.device_done;
		ph->elapsed += elapsed_ticks;
		ph->ticks_per_ns = elapsed ? (double)elapsed_ticks / (double)elapsed : 1;
	}
	if (!atomic_load(&run.failed))
		result = (double)elapsed / (double)count;
out:
	for (unsigned int i = 0; i < POOL; i++)
		if (bufs[i])
			vt_shm_release(shm, bufs[i], cfg->size);
	vt_vq_dev_free(run.dev);
	vt_vq_drv_free(drv);
	if (dma)
		vt_dma_free(dma);
	vt_iotlb_free(side.iotlb);
	vt_memtable_free(side.table);
	vt_shm_free(shm);
	return result;
}

static void ring_row(const struct bench_opts *opts, const struct ring_config *cfg, double ns,
		     double ideal, double bare, double pp)
{
	char label[32];
	const char *dma = dma_label(cfg, label, sizeof(label));
	if (opts->json) {
		printf(
		    "{\"bench\":\"ring\",\"fmt\":\"%s\",\"dma\":\"%s\",\"size\":%zu,\"batch\":%u,"
		    "\"in_order\":%s,\"ns_per_buf\":%.2f,\"mbuf_per_s\":%.2f,"
		    "\"ideal_ns_per_buf\":%.2f,\"ratio_to_ideal\":%.2f,"
		    "\"bare_ns_per_buf\":%.2f,\"ratio_to_bare\":%.2f,\"pingpong_ns\":%.1f}\n",
		    cfg->packed ? "packed" : "split", dma, cfg->size, cfg->batch,
		    cfg->in_order ? "true" : "false", ns, 1e3 / ns, ideal, ns / ideal, bare,
		    ns / bare, pp);
	} else {
		printf("%-7s %-16s %5zu %6u %-8s %9.2f %9.2f %9.2f %8.2fx %9.2f %8.2fx %6.0f\n",
		       cfg->packed ? "packed" : "split", dma, cfg->size, cfg->batch,
		       cfg->in_order ? "yes" : "no", ns, 1e3 / ns, ideal, ns / ideal, bare,
		       ns / bare, pp);
	}
	fflush(stdout);
}

/* ns per buffer of @ticks spent on @count buffers. */
static double per_buf(const struct ring_phases *ph, uint64_t ticks, uint64_t count)
{
	return count ? (double)ticks / ph->ticks_per_ns / (double)count : 0;
}

/*
 * --phases: where the row's time went, per buffer over all its runs. A half whose figures add up
 * to about the row's ns/buf is the one the ring waits for.
 */
static void phases_row(const struct bench_opts *opts, const struct ring_config *cfg,
		       const struct ring_phases *ph)
{
	char label[32];
	double add = per_buf(ph, ph->add, ph->added), kick = per_buf(ph, ph->kick, ph->added);
	double get = per_buf(ph, ph->get, ph->got), empty = per_buf(ph, ph->empty_get, ph->got);
	double busy = per_buf(ph, ph->device_busy, ph->device_done);
	double busy_share = ph->elapsed ? (double)ph->device_busy / (double)ph->elapsed : 0;
	if (opts->json)
		printf(
		    "{\"bench\":\"ring-phases\",\"fmt\":\"%s\",\"dma\":\"%s\",\"size\":%zu,"
		    "\"batch\":%u,\"in_order\":%s,\"driver_add_ns\":%.2f,\"driver_kick_ns\":%.2f,"
		    "\"driver_get_ns\":%.2f,\"driver_empty_get_ns\":%.2f,"
		    "\"empty_gets_per_buf\":%.3f,\"device_busy_ns\":%.2f,"
		    "\"device_busy_share\":%.3f}\n",
		    cfg->packed ? "packed" : "split", dma_label(cfg, label, sizeof(label)),
		    cfg->size, cfg->batch, cfg->in_order ? "true" : "false", add, kick, get, empty,
		    ph->got ? (double)ph->empty_gets / (double)ph->got : 0, busy, busy_share);
	else
		printf("        ns/buf: driver add %.2f, kick %.2f, get %.2f, empty gets %.2f; "
		       "device busy %.2f (%.0f%% of the run)\n",
		       add, kick, get, empty, busy, 100 * busy_share);
}

/* Modes that map every buffer as it is posted: their bare ring does the same (bench_bare.c). */
static bool mapped_per_buffer(enum vt_dma_mode mode)
{
	return mode == VT_DMA_IOMMU_STRICT || mode == VT_DMA_IOMMU_LAZY;
}

int bench_ring(const struct bench_opts *opts)
{
	uint64_t count = opts->buffers ? opts->buffers : (uint64_t)(10000000 * opts->scale);
	double v[99], iv[99], bv[99];
	double pp_start = bench_pingpong_ns(opts), pp = pp_start;

	if (!opts->json) {
		printf(
		    "virtue-bench ring: 256-entry ring, %llu buffers per run, median of %u runs\n"
		    "(each row: its own runs of the ideal ring and of the bare ring of its format "
		    "interleaved with\n its runs, and the cache-line ping-pong measured right "
		    "after "
		    "them: the vCPUs' placement\n moves within a run. ideal: the least work any "
		    "ring "
		    "can do; bare: the spec's layout with\n nothing but the work of this bench, "
		    "so vs bare is what virtue adds to the format)\n",
		    (unsigned long long)count, opts->runs);
		printf("%-7s %-16s %5s %6s %-8s %9s %9s %9s %9s %9s %9s %6s\n", "format", "dma",
		       "bytes", "batch", "in_order", "ns/buf", "Mbuf/s", "ideal ns", "vs ideal",
		       "bare ns", "vs bare", "pp ns");
	}

	struct ring_config configs[64];
	unsigned int n = 0;
	static const unsigned int batches[] = { 1, 8, 32, 256 };
	for (int packed = 0; packed < 2; packed++) {
		for (size_t b = 0; b < 4; b++)
			for (int io = 0; io < 2; io++)
				configs[n++] = (struct ring_config){ packed,	 io, VT_DMA_DIRECT,
								     batches[b], 64, false };
		configs[n++] =
		    (struct ring_config){ packed, 0, VT_DMA_IOMMU_PREMAPPED, 32, 64, false };
		configs[n++] =
		    (struct ring_config){ packed, 0, VT_DMA_IOMMU_STRICT, 32, 64, false };
		/* Not among the rows: what strict's invalidation per burst costs. */
		configs[n++] = (struct ring_config){ packed, 0, VT_DMA_IOMMU_LAZY, 32, 64, false };
		/* Both again with a page table the device walks (vt_dma_params.page_table). */
		configs[n++] = (struct ring_config){ packed, 0, VT_DMA_IOMMU_STRICT, 32, 64, true };
		configs[n++] = (struct ring_config){ packed, 0, VT_DMA_IOMMU_LAZY, 32, 64, true };
		configs[n++] = (struct ring_config){ packed, 0, VT_DMA_BOUNCE, 32, 64, false };
		configs[n++] = (struct ring_config){ packed, 0, VT_DMA_BOUNCE, 32, 1500, false };
	}
	int failures = 0, ran = 0;
	for (unsigned int c = 0; c < n; c++) {
		char label[96], dma[32];
		snprintf(label, sizeof(label), "%s %s %zu %u %s",
			 configs[c].packed ? "packed" : "split",
			 dma_label(&configs[c], dma, sizeof(dma)), configs[c].size,
			 configs[c].batch, configs[c].in_order ? "yes" : "no");
		if (opts->only && !strstr(label, opts->only))
			continue;
		ran++;
		struct ring_phases ph = { 0 };
		bool failed = false;
		/*
		 * Interleaved, so that a placement move hits both sides of the ratio alike. The
		 * order shows in the figures on this machine: in paired runs of one build, the
		 * same run measured 5-15% slower after a bare run that maps per buffer than after
		 * one that does not, and other orders moved other rows (the ideal ring by 30% when
		 * it ran right after the bare one). So compare builds with the same bench code
		 * (scripts/ring_ab.py), and rows of different runs only by their ratios.
		 */
		for (unsigned int r = 0; r < opts->runs; r++) {
			iv[r] = ideal_run(count);
			bv[r] = bench_bare_run(configs[c].packed, configs[c].in_order,
					       mapped_per_buffer(configs[c].dma), configs[c].batch,
					       configs[c].size, count);
			v[r] = ring_run_once(&configs[c], count, opts->phases ? &ph : NULL);
			/* Any run that failed fails the row: a median would hide it. */
			failed |= iv[r] < 0 || bv[r] < 0 || v[r] < 0;
		}
		double ns = bench_median(v, opts->runs);
		double ideal = bench_median(iv, opts->runs);
		double bare = bench_median(bv, opts->runs);
		pp = bench_pingpong_ns(opts);
		if (failed) {
			/* A format or mode that is not available yet is skipped, not faked. */
			if (!opts->json)
				printf("%-7s %-16s %5zu %6u %-8s %9s\n",
				       configs[c].packed ? "packed" : "split", dma, configs[c].size,
				       configs[c].batch, configs[c].in_order ? "yes" : "no",
				       "unavailable");
			failures++;
			continue;
		}
		ring_row(opts, &configs[c], ns, ideal, bare, pp);
		if (opts->phases)
			phases_row(opts, &configs[c], &ph);
	}
	double pp_end = bench_pingpong_ns(opts);
	if (opts->json)
		printf("{\"bench\":\"pingpong\",\"start_ns\":%.1f,\"end_ns\":%.1f}\n", pp_start,
		       pp_end);
	else
		printf("cache-line ping-pong: %.0f ns at start, %.0f ns at end\n", pp_start,
		       pp_end);
	return ran && failures == ran ? -1 : 0;
}

/*
 * virtue-bench ringcost: both halves on one thread, so no cache line ever crosses CPUs: what the
 * code itself costs per buffer. Stable under `valgrind --tool=callgrind` (instructions per buffer
 * = total / buffers), which makes it the figure to optimize the data path against when the
 * two-thread numbers swing with the vCPU placement.
 */
static double ringcost_once(bool packed, enum vt_dma_mode mode, bool page_table, bool burst,
			    bool in_order, uint64_t count)
{
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1) |
			    (packed ? VT_BIT(VIRTIO_F_RING_PACKED) : 0) |
			    (in_order ? VT_BIT(VIRTIO_F_IN_ORDER) : 0);
	bool iommu = mode == VT_DMA_IOMMU_STRICT || mode == VT_DMA_IOMMU_LAZY ||
		     mode == VT_DMA_IOMMU_PREMAPPED;
	struct vt_shm *shm = NULL;
	struct vt_iotlb_feed side = { 0 };
	struct vt_dma *dma = NULL;
	struct vt_vq_drv *drv = NULL;
	struct vt_vq_dev *dev = NULL;
	void *bufs[32] = { 0 };
	struct iovec sgs[32];
	double result = -1;

	if (vt_shm_new(&shm) < 0 || vt_shm_add_memfd(shm, 8 << 20, 1ull << 32, NULL) < 0)
		goto out;
	side.table = vt_memtable_new(NULL);
	if (!side.table || vt_memtable_add_shm(side.table, shm) < 0 ||
	    vt_iotlb_new(NULL, &side.iotlb))
		goto out;
	struct vt_dma_params dp = {
		.mode = mode, .shm = shm, .iotlb_ops = &vt_iotlb_feed_ops, .iotlb_opaque = &side
	};
	struct vt_as device_as = iommu ? vt_iotlb_as(side.iotlb) : vt_memtable_as(side.table);
	if (page_table) {
		dp.page_table = true;
		dp.iotlb_ops = NULL;
	}
	if (vt_dma_new(&dp, &dma) < 0 || (page_table && vt_dma_device_as(dma, &device_as) < 0))
		goto out;
	struct vt_vq_drv_params qp = { .num = RING_SIZE, .features = features, .dma = dma };
	if (vt_vq_drv_new(&qp, &drv) < 0)
		goto out;
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(drv, &desc, &driver, &device);
	struct vt_vq_dev_params vp = { .num = RING_SIZE,
				       .features = features,
				       .desc_addr = desc,
				       .driver_addr = driver,
				       .device_addr = device,
				       .as = device_as,
				       .next_avail = packed ? VT_VQ_PACKED_START : 0 };
	if (vt_vq_dev_new(&vp, &dev) < 0)
		goto out;
	for (unsigned int i = 0; i < 32; i++) {
		if (vt_shm_alloc(shm, 64, 64, &bufs[i]) < 0)
			goto out;
		sgs[i] = (struct iovec){ bufs[i], 64 };
	}

	void *tokens[32];
	uint32_t lens[32];
	uint64_t start = bench_now_ns();
	for (uint64_t n = 0; n < count; n += 32) {
		struct vt_vq_chain chains[32];
		struct iovec iov[32 * IOV_PER_CHAIN];
		if (burst) {
			if (vt_vq_drv_add_burst(drv, sgs, 32, false, bufs) != 32)
				goto out;
		} else {
			for (unsigned int i = 0; i < 32; i++)
				if (vt_vq_drv_add(drv, &sgs[i], 1, 0, bufs[i]) < 0)
					goto out;
		}
		vt_vq_drv_kick_prepare(drv);
		if (vt_vq_dev_pop_burst(dev, chains, iov, IOV_PER_CHAIN, 32) != 32)
			goto out;
		/* IN_ORDER: the batch returned with one used entry, what the feature is for. */
		if ((in_order ? vt_vq_dev_push_in_order_batch(dev, &chains[31], 0)
			      : vt_vq_dev_push_burst(dev, chains, NULL, 32)) < 0)
			goto out;
		vt_vq_dev_flush(dev);
		if (burst) {
			if (vt_vq_drv_get_burst(drv, tokens, lens, 32) != 32)
				goto out;
		} else {
			for (unsigned int i = 0; i < 32; i++)
				if (vt_vq_drv_get(drv, &tokens[i], &lens[i]) < 0)
					goto out;
		}
	}
	result = (double)(bench_now_ns() - start) / (double)count;
out:
	for (unsigned int i = 0; i < 32; i++)
		if (bufs[i])
			vt_shm_release(shm, bufs[i], 64);
	vt_vq_dev_free(dev);
	vt_vq_drv_free(drv);
	if (dma)
		vt_dma_free(dma);
	vt_iotlb_free(side.iotlb);
	vt_memtable_free(side.table);
	vt_shm_free(shm);
	return result;
}

int bench_ringcost(const struct bench_opts *opts)
{
	static const struct {
		enum vt_dma_mode mode;
		bool page_table;
	} modes[] = { { VT_DMA_DIRECT, false },
		      { VT_DMA_IOMMU_PREMAPPED, false },
		      { VT_DMA_IOMMU_STRICT, false },
		      { VT_DMA_IOMMU_STRICT, true },
		      { VT_DMA_BOUNCE, false } };
	uint64_t count = (uint64_t)(4000000 * opts->scale) / 32 * 32;
	if (!opts->json)
		printf("virtue-bench ringcost: both halves on one thread, batch 32, %llu buffers, "
		       "median of %u runs\n",
		       (unsigned long long)count, opts->runs);
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		/* In direct mode, bursts with IN_ORDER as well. */
		for (int k = 0; k < (modes[m].mode == VT_DMA_DIRECT ? 6 : 4); k++) {
			/* The driver half one buffer per call, then in bursts (the device always).
			 */
			bool packed = k & 1, burst = k >= 2, in_order = k >= 4;
			double v[99];
			char label[64];
			/* "in-order" before "burst": --only "split direct burst" is one row. */
			char label_dma[32];
			snprintf(label_dma, sizeof(label_dma), "%s%s",
				 vt_dma_mode_name(modes[m].mode), modes[m].page_table ? "-pt" : "");
			snprintf(label, sizeof(label), "%s %s %s%s", packed ? "packed" : "split",
				 label_dma, in_order ? "in-order " : "", burst ? "burst" : "one");
			/* --only TEXT: selected rows, e.g. one for a callgrind count of it. */
			if (opts->only && !strstr(label, opts->only))
				continue;
			/* Strict and bounce map and unmap per buffer, through the IOTLB or a copy:
			 * fewer. */
			uint64_t n =
			    modes[m].mode == VT_DMA_IOMMU_STRICT || modes[m].mode == VT_DMA_BOUNCE
				? count / 320 * 32
				: count;
			for (unsigned int r = 0; r < opts->runs; r++)
				v[r] = ringcost_once(packed, modes[m].mode, modes[m].page_table,
						     burst, in_order, n);
			double ns = bench_median(v, opts->runs);
			if (ns < 0)
				return -1;
			if (opts->json)
				printf("{\"bench\":\"ringcost\",\"fmt\":\"%s\",\"dma\":\"%s\","
				       "\"driver\":\"%s\",\"in_order\":%s,\"ns_per_buf\":%.2f}\n",
				       packed ? "packed" : "split", label_dma,
				       burst ? "burst" : "one", in_order ? "true" : "false", ns);
			else
				printf("%-28s %9.2f ns/buf\n", label, ns);
		}
	}
	return 0;
}
