/* SPDX-License-Identifier: MIT */
/*
 * virtue-bench mem: what it costs to turn an address into bytes. Device side: a 64-byte
 * translation through the memory table (1, 8, 509 regions) and the IOTLB (16 to 65,536 entries),
 * sequential and random. Driver side: a map plus an unmap in each DMA mode, with the IOMMU modes
 * publishing into a real device-side IOTLB as a vhost-user frontend would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>

#include "bench.h"

/* Translations never dereference host addresses, so a made-up base serves for the tables. */
#define FAKE_HVA_BASE ((uintptr_t)0x100000000000ull)

static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/*
 * Where the translations go: @slots mappings @stride apart, 64-byte buffers inside the first @span
 * bytes of each, visited in order or at random. Random addresses are drawn up front into a ring of
 * ADDR_RING entries (512 KiB, read sequentially) so the timed loop does no division or RNG work.
 */
struct addr_pattern {
	unsigned int slots;
	uint64_t stride;
	uint64_t span;
	bool random;
};

#define ADDR_RING 65536

static uint64_t *make_addresses(const struct addr_pattern *p)
{
	uint64_t *addrs = malloc(ADDR_RING * sizeof(*addrs));
	uint64_t seed = 0x9e3779b97f4a7c15ull, slot = 0, off = 0;
	if (!addrs)
		return NULL;
	for (unsigned int i = 0; i < ADDR_RING; i++) {
		if (p->random) {
			uint64_t r = xorshift(&seed);
			slot = r % p->slots;
			off = ((r >> 32) % (p->span / 64)) * 64;
		} else if (i) {
			off += 64;
			if (off + 64 > p->span) {
				off = 0;
				slot = slot + 1 == p->slots ? 0 : slot + 1;
			}
		}
		addrs[i] = slot * p->stride + off;
	}
	return addrs;
}

static double time_translations(const struct vt_as *as, const uint64_t *addrs, uint64_t ops)
{
	struct iovec iov[4];
	unsigned int n;
	uint64_t sink = 0;

	uint64_t start = bench_now_ns();
	for (uint64_t i = 0; i < ops; i++) {
		int ret = vt_as_translate(as, addrs[i & (ADDR_RING - 1)], 64, VT_ACCESS_READ, iov,
					  4, &n, NULL);
		if (ret < 0)
			return -1;
		sink += (uintptr_t)iov[0].iov_base;
	}
	uint64_t elapsed = bench_now_ns() - start;
	__asm__ __volatile__("" ::"r"(sink));
	return (double)elapsed / (double)ops;
}

static double median_translations(const struct bench_opts *opts, const struct vt_as *as,
				  const struct addr_pattern *p, uint64_t ops)
{
	double v[99];
	uint64_t *addrs = make_addresses(p);
	if (!addrs)
		return -1;
	for (unsigned int r = 0; r < opts->runs; r++)
		v[r] = time_translations(as, addrs, ops);
	free(addrs);
	return bench_median(v, opts->runs);
}

static int bench_memtable(const struct bench_opts *opts, double pp)
{
	static const unsigned int counts[] = { 1, 8, VT_MEMTABLE_MAX_REGIONS };
	uint64_t ops = (uint64_t)(4000000 * opts->scale);

	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		struct vt_memtable *t = vt_memtable_new(NULL);
		if (!t)
			return -ENOMEM;
		const uint64_t region = 2ull << 20, stride = 4ull << 20;
		for (unsigned int i = 0; i < counts[c]; i++) {
			struct vt_mem_region r = {
				.gpa = i * stride,
				.size = region,
				.hva = (void *)(FAKE_HVA_BASE + i * region * 3),
			};
			if (vt_memtable_add(t, &r) < 0) {
				vt_memtable_free(t);
				return -EINVAL;
			}
		}
		struct vt_as as = vt_memtable_as(t);
		char config[64];
		snprintf(config, sizeof(config), "%u region%s", counts[c],
			 counts[c] > 1 ? "s" : "");
		for (int random = 0; random < 2; random++) {
			struct addr_pattern p = { counts[c], stride, region, random };
			bench_row(opts, "memtable translate", config,
				  random ? "random" : "sequential",
				  median_translations(opts, &as, &p, ops), pp, NULL);
		}
		vt_memtable_free(t);
	}
	return 0;
}

/* @count 4 KiB pages with a gap after each, as a guest's streaming mappings look. */
static int map_streaming_pages(struct vt_iotlb *t, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		int ret = vt_iotlb_update(t, (uint64_t)i * 8192, 4096,
					  (void *)(FAKE_HVA_BASE + (uint64_t)i * 12288),
					  VT_IOTLB_PERM_RW);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * The rows @what of translations through an IOTLB made with @params (NULL: the defaults) that
 * maps @count streaming pages, sequential then random: their ns in @ns. 0, or the error.
 */
static int iotlb_rows(const struct bench_opts *opts, const struct vt_iotlb_params *params,
		      unsigned int count, const char *what, const char *unit, uint64_t ops,
		      double pp, double ns[2])
{
	struct vt_iotlb *t = NULL;
	if (vt_iotlb_new(params, &t) < 0)
		return -ENOMEM;
	if (map_streaming_pages(t, count) < 0) {
		vt_iotlb_free(t);
		return -EINVAL;
	}
	struct vt_as as = vt_iotlb_as(t);
	char config[64];
	snprintf(config, sizeof(config), "%u %s", count, unit);
	for (int random = 0; random < 2; random++) {
		struct addr_pattern p = { count, 8192, 4096, random };
		ns[random] = median_translations(opts, &as, &p, ops);
		bench_row(opts, what, config, random ? "random" : "sequential", ns[random], pp,
			  NULL);
	}
	vt_iotlb_free(t);
	return 0;
}

static int bench_iotlb(const struct bench_opts *opts, double pp)
{
	static const unsigned int counts[] = { 16, 256, 4096, 65536 };
	uint64_t ops = (uint64_t)(4000000 * opts->scale);
	double first[2] = { 0, 0 }, last[2] = { 0, 0 }, ns[2];

	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		/* The sorted array: its search is what the flatness goal is about. */
		struct vt_iotlb_params params = { .max_entries = counts[c],
						  .page_table_pages = VT_IOTLB_NO_PAGE_TABLE };
		int ret =
		    iotlb_rows(opts, &params, counts[c], "iotlb translate", "entries", ops, pp, ns);
		if (ret < 0)
			return ret;
		for (int random = 0; random < 2; random++) {
			if (c == 0)
				first[random] = ns[random];
			last[random] = ns[random];
		}
	}
	/* The same pages in the page table (a window of 16,384 pages holds 4,096 every other). */
	static const unsigned int pt_counts[] = { 16, 4096 };
	for (size_t c = 0; c < sizeof(pt_counts) / sizeof(pt_counts[0]); c++) {
		int ret =
		    iotlb_rows(opts, NULL, pt_counts[c], "iotlb page table", "pages", ops, pp, ns);
		if (ret < 0)
			return ret;
	}
	for (int random = 0; random < 2; random++) {
		char extra[64];
		snprintf(extra, sizeof(extra), "\"ratio_65536_to_16\":%.2f",
			 last[random] / first[random]);
		if (opts->json)
			bench_row(opts, "iotlb flatness", "65536/16 entries",
				  random ? "random" : "sequential", last[random] / first[random],
				  pp, extra);
		else
			printf("%-22s %-26s %-12s %9.2fx  (goal: within 2x)\n", "iotlb flatness",
			       "65536 vs 16 entries", random ? "random" : "sequential",
			       last[random] / first[random]);
	}
	return 0;
}

#define DMA_BUFFERS 256

static double time_map_unmap(struct vt_dma *dma, void **bufs, size_t len, uint64_t ops)
{
	uint64_t start = bench_now_ns();
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t bus;
		void *p = bufs[i % DMA_BUFFERS];
		if (vt_dma_map(dma, p, len, VT_DMA_TO_DEVICE, &bus) < 0 ||
		    vt_dma_unmap(dma, bus, len, VT_DMA_TO_DEVICE) < 0)
			return -1;
	}
	return (double)(bench_now_ns() - start) / (double)ops;
}

static int bench_dma(const struct bench_opts *opts, double pp)
{
	static const enum vt_dma_mode modes[] = { VT_DMA_DIRECT, VT_DMA_IOMMU_PREMAPPED,
						  VT_DMA_IOMMU_LAZY, VT_DMA_IOMMU_STRICT,
						  VT_DMA_BOUNCE };
	static const size_t sizes[] = { 64, 1500 };
	uint64_t ops = (uint64_t)(1000000 * opts->scale);
	int ret = 0;

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]) && ret == 0; m++) {
		struct vt_shm *shm = NULL;
		struct vt_iotlb_feed dev = { 0 };
		struct vt_dma *dma = NULL;
		void *bufs[DMA_BUFFERS] = { 0 };

		ret = vt_shm_new(&shm);
		if (ret == 0)
			ret = vt_shm_add_memfd(shm, 64ull << 20, 1ull << 32, NULL);
		if (ret == 0) {
			dev.table = vt_memtable_new(NULL);
			ret = dev.table ? vt_memtable_add_shm(dev.table, shm) : -ENOMEM;
		}
		if (ret == 0)
			ret = vt_iotlb_new(NULL, &dev.iotlb);
		for (unsigned int i = 0; ret == 0 && i < DMA_BUFFERS; i++)
			ret = vt_shm_alloc(shm, 2048, 64, &bufs[i]);
		if (ret == 0) {
			struct vt_dma_params params = {
				.mode = modes[m],
				.shm = shm,
				.iotlb_ops = &vt_iotlb_feed_ops,
				.iotlb_opaque = &dev,
			};
			ret = vt_dma_new(&params, &dma);
		}
		for (size_t s = 0; ret == 0 && s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			double v[99];
			for (unsigned int r = 0; r < opts->runs; r++)
				v[r] = time_map_unmap(dma, bufs, sizes[s], ops);
			double ns = bench_median(v, opts->runs);
			if (ns < 0) {
				ret = -EIO;
				break;
			}
			char config[64];
			snprintf(config, sizeof(config), "%s, %zu B", vt_dma_mode_name(modes[m]),
				 sizes[s]);
			bench_row(opts, "dma map+unmap", config, "to-device", ns, pp, NULL);
		}
		if (dma)
			vt_dma_free(dma);
		for (unsigned int i = 0; i < DMA_BUFFERS; i++)
			if (bufs[i])
				vt_shm_release(shm, bufs[i], 2048);
		vt_iotlb_free(dev.iotlb);
		vt_memtable_free(dev.table);
		vt_shm_free(shm);
	}
	if (ret < 0)
		fprintf(stderr, "virtue-bench: dma benchmark failed: %s\n", strerror(-ret));
	return ret;
}

int bench_mem(const struct bench_opts *opts)
{
	double pp = bench_pingpong_ns(opts);
	bench_header(opts, "virtue-bench mem", pp);
	int ret = bench_memtable(opts, pp);
	if (ret == 0)
		ret = bench_iotlb(opts, pp);
	if (ret == 0)
		ret = bench_dma(opts, pp);
	/* The placement may have moved during the run: measure again and show both. */
	double pp_end = bench_pingpong_ns(opts);
	if (opts->json)
		printf("{\"bench\":\"pingpong\",\"start_ns\":%.1f,\"end_ns\":%.1f}\n", pp, pp_end);
	else
		printf("cache-line ping-pong: %.0f ns at start, %.0f ns at end\n", pp, pp_end);
	return ret;
}
