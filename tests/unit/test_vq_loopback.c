/* SPDX-License-Identifier: MIT */
/*
 * Loopback: a driver half and a device half on two threads, meeting only in shared memory (a
 * memfd region), moving millions of random buffers. Buffer n has a shape (1 to 64 segments,
 * readable then writable, sizes mostly small) and a payload derived from (row seed, n); since the
 * device takes buffers in the order the driver posted them, it recomputes both from its own
 * count and checks every readable byte. It writes a reply into the writable part, an echo of
 * what it read (or, for a buffer with nothing readable, bytes it derives from the shape), and
 * returns it with the exact length written; the driver checks the reply byte for byte, the
 * length, and that nothing past the length was written. Payloads are windows of one random
 * table, so both sides check with memcmp and copy with memcpy: the ring, not the checking, is
 * what the time goes to.
 *
 * The matrix is table-driven: ring format x DMA mode (direct, iommu strict / lazy / premapped,
 * bounce) x EVENT_IDX x notification (eventfds, or busy polling) x IN_ORDER x INDIRECT_DESC. In the
 * eventfd rows the device reaches memory through a second mapping of the memfd, as a separate
 * process would; in the polling rows through the driver's own mapping, as an in-process device
 * thread would, which also lets ThreadSanitizer follow every ring access across the threads.
 *
 * Every wait is bounded: a side that hears nothing for STALL_MS, or a row that outlives
 * ROW_DEADLINE_S, fails the test instead of hanging it. VT_LOOPBACK_VERBOSE=1 prints each row's
 * time; VT_TEST_SEED changes every row's buffers.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/virtqueue.h>

#include "harness.h"

#define F(bit) VT_BIT(VIRTIO_F_##bit)

/* Buffers across the whole matrix in the normal build (VT_TEST_SCALE lowers it). */
#define TOTAL_BUFFERS 10000000ULL

#define QSIZE	    256
#define MAX_SEGS    64
#define ARENA_SIZE  (20u << 10) /* per buffer: up to 16 KiB of payload plus misalignment */
#define GPA_BASE    (1ULL << 32)
#define SHM_SIZE    (32ULL << 20)
#define BOUNCE_SIZE (16ULL << 20)
#define IOV_MAX_DEV (4 * MAX_SEGS)
#define HELD_MAX    16 /* chains the device holds before returning them */
#define POISON	    0xee

#define STALL_MS       10000 /* no notification for this long: a lost wakeup */
#define ROW_DEADLINE_S 120
#define WAIT_SLICE_MS  20

/* ---------------------------------------------------------------- the matrix */

struct format {
	const char *name;
	uint64_t feature;
	bool enabled;
};

static const struct format formats[] = {
	/*
	 * A format whose halves say -ENOTSUP at creation has its rows reported as skipped; one that
	 * is disabled here gets none of the buffer budget.
	 */
	{ "split", 0, true },
	{ "packed", F(RING_PACKED), true },
};

#define NFORMATS (sizeof(formats) / sizeof(formats[0]))

enum notify_mode { NOTIFY_EVENTFD, NOTIFY_POLL };

struct row {
	const struct format *format;
	enum vt_dma_mode dma;
	bool page_table; /* strict, lazy: the DMA object's page table, not an IOTLB */
	bool event_idx, in_order, indirect;
	bool order_platform; /* VIRTIO_F_ORDER_PLATFORM: the platform barriers */
	enum notify_mode notify;
	uint64_t buffers;
	uint64_t seed;
};

static void row_name(const struct row *r, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s%s/%s/%s/%s/%s%s", r->format->name, vt_dma_mode_name(r->dma),
		 r->page_table ? "-page-table" : "", r->event_idx ? "event_idx" : "flags",
		 r->notify == NOTIFY_EVENTFD ? "eventfd" : "poll",
		 r->in_order ? "in_order" : "any_order", r->indirect ? "indirect" : "direct_desc",
		 r->order_platform ? "/order_platform" : "");
}

/* ---------------------------------------------------------------- buffers */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* What buffer @seq of a row looks like: both sides compute it. */
struct shape {
	unsigned int nr, nw;
	uint32_t len[MAX_SEGS]; /* readable ones first */
	uint8_t misalign[MAX_SEGS];
	uint32_t readable_bytes, writable_bytes;
	uint32_t written; /* what the device writes back */
	uint32_t seed;	  /* of the payload */
};

static void make_shape(uint64_t row_seed, uint64_t seq, struct shape *s)
{
	uint64_t state = mix(row_seed ^ mix(seq)) | 1;
	uint64_t r = vt_test_rand(&state);

	/* Mostly short chains, one in sixteen up to the full 64 segments. */
	unsigned int n = (r & 15) == 0 ? 1 + (unsigned int)((r >> 4) % MAX_SEGS)
				       : 1 + (unsigned int)((r >> 4) % 4);
	s->nr = (unsigned int)((r >> 16) % (n + 1));
	s->nw = n - s->nr;
	/* Mostly small segments; a short chain sometimes carries up to 2 KiB per segment. */
	uint32_t max = n <= 8 && ((r >> 24) & 15) == 0 ? 2048 : 128;
	s->readable_bytes = s->writable_bytes = 0;
	for (unsigned int i = 0; i < n; i++) {
		uint64_t x = vt_test_rand(&state);
		s->len[i] = 1 + (uint32_t)(x % max);
		s->misalign[i] = (uint8_t)((x >> 32) & 7);
		if (i < s->nr)
			s->readable_bytes += s->len[i];
		else
			s->writable_bytes += s->len[i];
	}
	uint64_t x = vt_test_rand(&state);
	if (s->writable_bytes == 0)
		s->written = 0;
	else if ((x & 3) == 0)
		s->written = s->writable_bytes;
	else
		s->written = (uint32_t)((x >> 8) % (s->writable_bytes + 1));
	s->seed = (uint32_t)(x >> 32);
}

/*
 * Payloads are windows of one table of random bytes: a buffer's readable stream starts at
 * payload(seed), and one with nothing readable gets its reply from reply_source(seed). No buffer
 * carries more than 16 KiB, so a window never runs off the table.
 */
#define NOISE_WINDOWS (64u << 10)
#define MAX_BYTES     (MAX_SEGS * 2048u)
static uint8_t noise[NOISE_WINDOWS + MAX_BYTES];
static pthread_once_t noise_once = PTHREAD_ONCE_INIT;

static void noise_fill(void)
{
	uint64_t state = 0x6e6f697365ULL;

	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (uint8_t)(vt_test_rand(&state) >> 56);
}

static const uint8_t *payload(uint32_t seed)
{
	return noise + seed % NOISE_WINDOWS;
}

static const uint8_t *reply_source(uint32_t seed)
{
	return noise + (seed >> 16) % NOISE_WINDOWS;
}

static const uint8_t poison_bytes[2048] = { [0 ... 2047] = POISON };
static const uint8_t zero_bytes[2048];

/* ---------------------------------------------------------------- the rig */

struct log_count {
	atomic_uint errors, warnings;
	atomic_flag have_first;
	char first[256];
};

static void count_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_count *c = opaque;

	if (level == VT_LOG_ERROR) {
		atomic_fetch_add(&c->errors, 1);
		if (!atomic_flag_test_and_set(&c->have_first))
			snprintf(c->first, sizeof(c->first), "%s", message);
	} else if (level == VT_LOG_WARN) {
		atomic_fetch_add(&c->warnings, 1);
	}
}

/* A buffer the driver has in flight. */
struct ctx {
	uint64_t seq;
	struct shape shape;
	struct iovec sg[MAX_SEGS];
	uint8_t *arena;
};

struct rig {
	const struct row *row;
	char name[128];
	uint64_t features;

	/* Driver side. */
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	uint8_t *private_arenas; /* bounce: the driver's buffers live outside shared memory */
	struct ctx ctx[QSIZE];
	unsigned int free_ctx[QSIZE];
	unsigned int nfree;

	/* Device side. */
	void *device_map; /* second mapping of the memfd, or NULL when sharing the driver's */
	struct vt_iotlb_feed feed; /* the device's memory table and IOTLB */
	struct vt_vq_dev *dev;

	int kick_fd, call_fd;
	struct log_count ring_log, dma_log;
	struct vt_log drv_log_hook, dev_log_hook, dma_log_hook;

	/* Between the threads. */
	atomic_bool stop;	 /* a failure: both sides leave */
	atomic_bool driver_done; /* every buffer is back: the device leaves */
	atomic_flag failed;
	char failure[512];
	struct timespec deadline;

	/* Progress, for the failure message; each written by one side, read by both. */
	_Atomic uint64_t collected, device_popped;
};

static void fail(struct rig *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct rig *g, const char *fmt, ...)
{
	if (!atomic_flag_test_and_set(&g->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(g->failure, sizeof(g->failure), fmt, ap);
		va_end(ap);
	}
	atomic_store(&g->stop, true);
}

static bool stopped(const struct rig *g)
{
	return atomic_load_explicit(&g->stop, memory_order_relaxed);
}

static bool past_deadline(const struct rig *g)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > g->deadline.tv_sec ||
	       (now.tv_sec == g->deadline.tv_sec && now.tv_nsec >= g->deadline.tv_nsec);
}

static bool iommu_mode(enum vt_dma_mode mode)
{
	return mode == VT_DMA_IOMMU_STRICT || mode == VT_DMA_IOMMU_LAZY ||
	       mode == VT_DMA_IOMMU_PREMAPPED;
}

static void rig_destroy(struct rig *g)
{
	vt_vq_dev_free(g->dev);
	vt_vq_drv_free(g->drv);
	vt_dma_free(g->dma);
	vt_iotlb_free(g->feed.iotlb);
	vt_memtable_free(g->feed.table);
	if (g->device_map)
		munmap(g->device_map, g->region->size);
	free(g->private_arenas);
	vt_shm_free(g->shm);
	if (g->kick_fd >= 0)
		close(g->kick_fd);
	if (g->call_fd >= 0)
		close(g->call_fd);
}

/* Returns 0, -ENOTSUP when the row's format is not implemented, or another -errno. */
static int rig_init(struct rig *g, const struct row *row)
{
	memset(g, 0, sizeof(*g));
	g->row = row;
	g->kick_fd = g->call_fd = -1;
	atomic_flag_clear(&g->failed);
	atomic_flag_clear(&g->ring_log.have_first);
	atomic_flag_clear(&g->dma_log.have_first);
	row_name(row, g->name, sizeof(g->name));
	g->drv_log_hook =
	    (struct vt_log){ .fn = count_log, .opaque = &g->ring_log, .max_level = VT_LOG_WARN };
	g->dev_log_hook = g->drv_log_hook;
	g->dma_log_hook =
	    (struct vt_log){ .fn = count_log, .opaque = &g->dma_log, .max_level = VT_LOG_WARN };
	bool platform = row->dma != VT_DMA_DIRECT;
	g->features = F(VERSION_1) | row->format->feature | (row->event_idx ? F(EVENT_IDX) : 0) |
		      (row->in_order ? F(IN_ORDER) : 0) | (row->indirect ? F(INDIRECT_DESC) : 0) |
		      (platform ? F(ACCESS_PLATFORM) : 0) |
		      (row->order_platform ? F(ORDER_PLATFORM) : 0);

	int ret = vt_shm_new(&g->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(g->shm, SHM_SIZE, GPA_BASE, &g->region);
	if (ret < 0)
		return ret;

	/* The device's view of the shared memory. */
	void *device_hva = g->region->hva;
	/* A page table holds the driver's host addresses: its device shares this mapping. */
	if (row->notify == NOTIFY_EVENTFD && !row->page_table) {
		g->device_map = mmap(NULL, g->region->size, PROT_READ | PROT_WRITE, MAP_SHARED,
				     g->region->fd, (off_t)g->region->fd_offset);
		if (g->device_map == MAP_FAILED) {
			g->device_map = NULL;
			return -errno;
		}
		device_hva = g->device_map;
	}
	g->feed.table = vt_memtable_new(NULL);
	if (!g->feed.table)
		return -ENOMEM;
	struct vt_mem_region mr = { .gpa = g->region->gpa,
				    .size = g->region->size,
				    .hva = device_hva,
				    .uaddr = (uint64_t)(uintptr_t)g->region->hva };
	ret = vt_memtable_add(g->feed.table, &mr);
	if (ret < 0)
		return ret;
	struct vt_as as = vt_memtable_as(g->feed.table);
	if (iommu_mode(row->dma) && !row->page_table) {
		ret = vt_iotlb_new(NULL, &g->feed.iotlb);
		if (ret < 0)
			return ret;
		as = vt_iotlb_as(g->feed.iotlb);
	}

	struct vt_dma_params dp = {
		.mode = row->dma,
		.shm = g->shm,
		.log = &g->dma_log_hook,
		.iotlb_ops = row->page_table ? NULL : &vt_iotlb_feed_ops,
		.iotlb_opaque = &g->feed,
		.page_table = row->page_table,
		.bounce_window_size = BOUNCE_SIZE,
	};
	ret = vt_dma_new(&dp, &g->dma);
	if (ret == 0 && row->page_table)
		ret = vt_dma_device_as(g->dma, &as);
	if (ret < 0)
		return ret;

	struct vt_vq_drv_params drp = {
		.num = QSIZE,
		.features = g->features,
		.dma = g->dma,
		.name = "loopback-driver",
		.log = &g->drv_log_hook,
	};
	ret = vt_vq_drv_new(&drp, &g->drv);
	if (ret < 0)
		return ret;
	struct vt_vq_dev_params dvp = {
		.num = QSIZE,
		.features = g->features,
		.as = as,
		/* A fresh packed ring starts at slot 0 in wrap 1 (2.8.1), which bit 15 encodes. */
		.next_avail =
		    row->format->feature & F(RING_PACKED) ? 1u << PVIRTQ_EVENT_WRAP_SHIFT : 0,
		.name = "loopback-device",
		.log = &g->dev_log_hook,
	};
	vt_vq_drv_addrs(g->drv, &dvp.desc_addr, &dvp.driver_addr, &dvp.device_addr);
	ret = vt_vq_dev_new(&dvp, &g->dev);
	if (ret < 0)
		return ret;

	/* Buffer arenas: in shared memory, except under bounce where the driver's are private. */
	if (row->dma == VT_DMA_BOUNCE) {
		g->private_arenas = malloc((size_t)QSIZE * ARENA_SIZE);
		if (!g->private_arenas)
			return -ENOMEM;
	}
	for (unsigned int i = 0; i < QSIZE; i++) {
		void *p = NULL;
		if (g->private_arenas)
			p = g->private_arenas + (size_t)i * ARENA_SIZE;
		else if ((ret = vt_shm_alloc(g->shm, ARENA_SIZE, 64, &p)) < 0)
			return ret;
		g->ctx[i].arena = p;
		g->free_ctx[g->nfree++] = i;
	}

	if (row->notify == NOTIFY_EVENTFD) {
		g->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		g->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (g->kick_fd < 0 || g->call_fd < 0)
			return -errno;
	}
	clock_gettime(CLOCK_MONOTONIC, &g->deadline);
	g->deadline.tv_sec += ROW_DEADLINE_S;
	return 0;
}

static void signal_fd(struct rig *g, int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) != sizeof(one))
		fail(g, "%s: eventfd write failed: %s", g->name, strerror(errno));
}

/*
 * Waits for @fd, in slices so that the stop flags are seen. Returns true when it fired, false
 * when the wait should end for another reason (stop, done, or a stall, which fails the row).
 */
static bool wait_fd(struct rig *g, int fd, const char *who)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint64_t value;

	for (int waited = 0; waited < STALL_MS; waited += WAIT_SLICE_MS) {
		if (stopped(g) || atomic_load(&g->driver_done))
			return false;
		int n = poll(&pfd, 1, WAIT_SLICE_MS);
		if (n > 0) {
			/* Nonblocking: a race with nothing is fine, the ring is re-read anyway. */
			if (read(fd, &value, sizeof(value)) < 0 && errno != EAGAIN)
				fail(g, "%s: eventfd read failed: %s", g->name, strerror(errno));
			return true;
		}
		if (n < 0 && errno != EINTR) {
			fail(g, "%s: poll failed: %s", g->name, strerror(errno));
			return false;
		}
		if (past_deadline(g)) {
			fail(g, "%s: %s: row deadline of %d s passed", g->name, who,
			     ROW_DEADLINE_S);
			return false;
		}
	}
	fail(g,
	     "%s: %s heard nothing for %d ms (a lost notification?); %llu collected, %llu "
	     "popped",
	     g->name, who, STALL_MS, (unsigned long long)atomic_load(&g->collected),
	     (unsigned long long)atomic_load(&g->device_popped));
	return false;
}

/* ---------------------------------------------------------------- the device thread */

struct held {
	struct vt_vq_chain chain;
	uint32_t written;
};

/* Checks a popped chain against buffer @seq and writes the reply. */
static bool device_serve(struct rig *g, uint64_t seq, const struct vt_vq_chain *chain,
			 const struct iovec *iov, uint32_t *written)
{
	struct shape s;

	make_shape(g->row->seed, seq, &s);
	if (chain->readable_bytes != s.readable_bytes ||
	    chain->writable_bytes != s.writable_bytes) {
		fail(g,
		     "%s: device: buffer %llu has %u readable and %u writable bytes, expected "
		     "%u and %u",
		     g->name, (unsigned long long)seq, chain->readable_bytes, chain->writable_bytes,
		     s.readable_bytes, s.writable_bytes);
		return false;
	}
	const uint8_t *want = payload(s.seed);
	uint64_t i = 0;
	for (unsigned int k = 0; k < chain->nreadable; k++) {
		if (memcmp(iov[k].iov_base, want + i, iov[k].iov_len) != 0) {
			fail(g, "%s: device: buffer %llu readable bytes [%llu, +%zu) differ",
			     g->name, (unsigned long long)seq, (unsigned long long)i,
			     iov[k].iov_len);
			return false;
		}
		i += iov[k].iov_len;
	}

	/* The reply: what was read, again and again, from the iovecs themselves. */
	const struct iovec *from = iov, *from_end = iov + chain->nreadable;
	struct iovec fallback = { (void *)reply_source(s.seed), s.written };
	if (chain->nreadable == 0) {
		from = &fallback;
		from_end = from + 1;
	}
	const struct iovec *src = from;
	size_t src_off = 0;
	uint32_t left = s.written;
	for (unsigned int k = chain->nreadable; k < chain->nreadable + chain->nwritable && left;
	     k++) {
		uint8_t *p = iov[k].iov_base;
		size_t room = iov[k].iov_len;
		while (room && left) {
			while (src_off == src->iov_len) {
				src = src + 1 == from_end ? from : src + 1;
				src_off = 0;
			}
			size_t n = src->iov_len - src_off;
			n = n < room ? n : room;
			n = n < left ? n : left;
			memcpy(p, (const uint8_t *)src->iov_base + src_off, n);
			p += n;
			room -= n;
			left -= (uint32_t)n;
			src_off += n;
		}
	}
	*written = s.written;
	return true;
}

static void device_flush(struct rig *g)
{
	if (vt_vq_dev_flush(g->dev) && g->row->notify == NOTIFY_EVENTFD)
		signal_fd(g, g->call_fd);
}

/* Returns what the device holds: in order (one by one or as one batch) or shuffled. */
static bool device_return(struct rig *g, struct held *held, unsigned int n, uint64_t *rng)
{
	int ret = 0;

	if (n == 0)
		return true;
	if (g->row->in_order) {
		if (n > 1 && (vt_test_rand(rng) & 1)) {
			ret = vt_vq_dev_push_in_order_batch(g->dev, &held[n - 1].chain,
							    held[n - 1].written);
		} else {
			for (unsigned int i = 0; i < n && ret == 0; i++) {
				ret = vt_vq_dev_push(g->dev, &held[i].chain, held[i].written);
				if (ret == 0 && (vt_test_rand(rng) & 3) == 0)
					device_flush(g);
			}
		}
	} else {
		for (unsigned int i = n; i > 1; i--) {
			unsigned int k = (unsigned int)(vt_test_rand(rng) % i);
			struct held t = held[i - 1];
			held[i - 1] = held[k];
			held[k] = t;
		}
		for (unsigned int i = 0; i < n && ret == 0; i++) {
			ret = vt_vq_dev_push(g->dev, &held[i].chain, held[i].written);
			if (ret == 0 && (vt_test_rand(rng) & 3) == 0)
				device_flush(g);
		}
	}
	if (ret < 0) {
		fail(g, "%s: device: push returned %d (%s)", g->name, ret,
		     vt_vq_error_str(vt_vq_dev_error(g->dev)));
		return false;
	}
	device_flush(g);
	return true;
}

static void *device_thread(void *arg)
{
	struct rig *g = arg;
	struct iovec iov[IOV_MAX_DEV];
	struct held held[HELD_MAX];
	unsigned int nheld = 0;
	uint64_t rng = mix(g->row->seed ^ 0xde71ce) | 1;
	unsigned int target = 1 + (unsigned int)(vt_test_rand(&rng) % HELD_MAX);
	uint64_t seq = 0;

	vt_vq_dev_disable_notify(g->dev);
	while (!stopped(g)) {
		struct vt_vq_chain chain;
		int ret = vt_vq_dev_pop(g->dev, &chain, iov, IOV_MAX_DEV);
		if (ret == 0) {
			if (!device_serve(g, seq, &chain, iov, &held[nheld].written))
				break;
			held[nheld++].chain = chain;
			seq++;
			atomic_store_explicit(&g->device_popped, seq, memory_order_relaxed);
			if (nheld == target) {
				if (!device_return(g, held, nheld, &rng))
					break;
				nheld = 0;
				target = 1 + (unsigned int)(vt_test_rand(&rng) % HELD_MAX);
			}
			continue;
		}
		if (ret != -EAGAIN) {
			fail(g, "%s: device: pop of buffer %llu returned %d (%s)", g->name,
			     (unsigned long long)seq, ret,
			     vt_vq_error_str(vt_vq_dev_error(g->dev)));
			break;
		}
		/* Nothing available: give everything back before waiting, or both sides wait. */
		if (!device_return(g, held, nheld, &rng))
			break;
		nheld = 0;
		if (atomic_load(&g->driver_done))
			break;
		if (g->row->notify == NOTIFY_POLL) {
			if (past_deadline(g)) {
				fail(g, "%s: device: row deadline passed", g->name);
				break;
			}
			sched_yield();
			continue;
		}
		/* Enable, then re-check: a buffer that came meanwhile is not waited for. */
		if (!vt_vq_dev_enable_notify(g->dev))
			wait_fd(g, g->kick_fd, "device");
		vt_vq_dev_disable_notify(g->dev);
	}
	return NULL;
}

/* ---------------------------------------------------------------- the driver (this thread) */

/* Lays buffer @seq out in @c's arena and posts it: add's return code. */
static int driver_post(struct rig *g, struct ctx *c, uint64_t seq)
{
	struct shape *s = &c->shape;
	uint8_t *at = c->arena;
	uint64_t i = 0;

	c->seq = seq;
	make_shape(g->row->seed, seq, s);
	const uint8_t *src = payload(s->seed);
	for (unsigned int k = 0; k < s->nr + s->nw; k++) {
		at += s->misalign[k];
		c->sg[k] = (struct iovec){ at, s->len[k] };
		if (k < s->nr) {
			memcpy(at, src + i, s->len[k]);
			i += s->len[k];
		} else {
			memset(at, POISON, s->len[k]);
		}
		at += s->len[k];
	}
	return vt_vq_drv_add(g->drv, c->sg, s->nr, s->nw, c);
}

static bool driver_check(struct rig *g, const struct ctx *c, uint32_t len)
{
	const struct shape *s = &c->shape;
	/* IN_ORDER: a buffer inside a batch the device returned with one entry reports 0. */
	if (len != s->written && !(g->row->in_order && len == 0)) {
		fail(g, "%s: driver: buffer %llu came back with length %u, expected %u", g->name,
		     (unsigned long long)c->seq, len, s->written);
		return false;
	}
	/* The echo of the readable stream, or the fallback source when there was none. */
	const uint8_t *src = s->nr ? payload(s->seed) : reply_source(s->seed);
	uint32_t period = s->nr ? s->readable_bytes : s->written;
	/* Bounce copies the whole slot back, zeroed at map; elsewhere the poison stays. */
	const uint8_t *tail = g->row->dma == VT_DMA_BOUNCE ? zero_bytes : poison_bytes;
	uint64_t j = 0;
	for (unsigned int k = s->nr; k < s->nr + s->nw; k++) {
		const uint8_t *p = c->sg[k].iov_base;
		uint32_t b = 0;
		while (b < s->len[k]) {
			uint32_t n = s->len[k] - b;
			const uint8_t *want;
			if (j < s->written) {
				uint32_t at = (uint32_t)(j % period);
				want = src + at;
				n = n < period - at ? n : period - at;
				n = n < s->written - j ? n : (uint32_t)(s->written - j);
			} else {
				want = tail;
				n = n < sizeof(zero_bytes) ? n : (uint32_t)sizeof(zero_bytes);
			}
			if (memcmp(p + b, want, n) != 0) {
				fail(g,
				     "%s: driver: buffer %llu bytes [%llu, +%u) of the writable "
				     "part differ (%u written)",
				     g->name, (unsigned long long)c->seq, (unsigned long long)j, n,
				     s->written);
				return false;
			}
			b += n;
			j += n;
		}
	}
	return true;
}

/* Collects what came back: how many, or -1 on a failure. */
static int driver_collect(struct rig *g, uint64_t *rng)
{
	int got = 0;
	void *token;
	uint32_t len;
	int ret;

	while ((ret = vt_vq_drv_get(g->drv, &token, &len)) == 0) {
		struct ctx *c = token;
		if (!driver_check(g, c, len))
			return -1;
		g->free_ctx[g->nfree++] = (unsigned int)(c - g->ctx);
		atomic_store_explicit(&g->collected, g->collected + 1, memory_order_relaxed);
		got++;
		/* Lazy: publish queued invalidations at random points. */
		if (g->row->dma == VT_DMA_IOMMU_LAZY && (vt_test_rand(rng) & 63) == 0 &&
		    vt_dma_flush(g->dma) < 0) {
			fail(g, "%s: driver: vt_dma_flush failed", g->name);
			return -1;
		}
	}
	if (ret != -EAGAIN) {
		fail(g, "%s: driver: get returned %d (%s)", g->name, ret,
		     vt_vq_error_str(vt_vq_drv_error(g->drv)));
		return -1;
	}
	return got;
}

static void driver_run(struct rig *g)
{
	uint64_t rng = mix(g->row->seed ^ 0xd71e7) | 1;
	uint64_t next = 0;
	const uint64_t total = g->row->buffers;

	vt_vq_drv_disable_cb(g->drv);
	while (g->collected < total && !stopped(g)) {
		unsigned int batch = 1 + (unsigned int)(vt_test_rand(&rng) % 32);
		unsigned int posted = 0;
		while (posted < batch && next < total && g->nfree > 0) {
			unsigned int i = g->free_ctx[g->nfree - 1];
			int ret = driver_post(g, &g->ctx[i], next);
			if (ret == -ENOSPC) /* ring full, or the bounce window: collect first */
				break;
			if (ret < 0) {
				fail(g, "%s: driver: add of buffer %llu returned %d", g->name,
				     (unsigned long long)next, ret);
				return;
			}
			g->nfree--;
			next++;
			posted++;
		}
		if (posted && vt_vq_drv_kick_prepare(g->drv) && g->row->notify == NOTIFY_EVENTFD)
			signal_fd(g, g->kick_fd);

		int got = driver_collect(g, &rng);
		if (got < 0)
			return;
		if (posted || got)
			continue;
		if (g->nfree == QSIZE) {
			fail(g, "%s: driver: buffer %llu fits nowhere with nothing in flight",
			     g->name, (unsigned long long)next);
			return;
		}
		/* Nothing to post and nothing back: wait for the device. */
		if (g->row->notify == NOTIFY_POLL) {
			if (past_deadline(g)) {
				fail(g, "%s: driver: row deadline passed", g->name);
				return;
			}
			sched_yield();
			continue;
		}
		if (!vt_vq_drv_enable_cb(g->drv))
			wait_fd(g, g->call_fd, "driver");
		vt_vq_drv_disable_cb(g->drv);
	}
}

/* Runs one row: 0 passed, 1 skipped (format not implemented), -1 failed (reported). */
static int run_row(const struct row *row)
{
	static struct rig g; /* large; rows run one at a time */
	pthread_t device;

	pthread_once(&noise_once, noise_fill);
	int ret = rig_init(&g, row);
	if (ret == -ENOTSUP) {
		rig_destroy(&g);
		return 1;
	}
	if (ret < 0) {
		VT_FAIL_AT("%s: setup failed: %d", g.name, ret);
		rig_destroy(&g);
		return -1;
	}
	if (pthread_create(&device, NULL, device_thread, &g) != 0) {
		VT_FAIL_AT("%s: cannot start the device thread", g.name);
		rig_destroy(&g);
		return -1;
	}
	driver_run(&g);
	atomic_store(&g.driver_done, true);
	if (g.kick_fd >= 0)
		signal_fd(&g, g.kick_fd);
	pthread_join(device, NULL);

	int result = 0;
	if (atomic_flag_test_and_set(&g.failed)) {
		VT_FAIL_AT("%s (seed 0x%llx): %s", g.name, (unsigned long long)row->seed,
			   g.failure);
		result = -1;
	} else if (g.collected != row->buffers || g.device_popped != row->buffers) {
		VT_FAIL_AT("%s: %llu buffers collected, %llu popped, %llu posted", g.name,
			   (unsigned long long)g.collected, (unsigned long long)g.device_popped,
			   (unsigned long long)row->buffers);
		result = -1;
	}
	if (atomic_load(&g.ring_log.errors)) {
		VT_FAIL_AT("%s: the ring logged %u errors, the first: %s", g.name,
			   atomic_load(&g.ring_log.errors), g.ring_log.first);
		result = -1;
	}
	if (atomic_load(&g.dma_log.errors)) {
		VT_FAIL_AT("%s: the DMA layer logged %u errors, the first: %s", g.name,
			   atomic_load(&g.dma_log.errors), g.dma_log.first);
		result = -1;
	}
	if (vt_vq_drv_is_broken(g.drv) || vt_vq_dev_is_broken(g.dev)) {
		VT_FAIL_AT("%s: a half is broken", g.name);
		result = -1;
	}
	struct vt_vq_drv_stats st;
	vt_vq_drv_get_stats(g.drv, &st);
	if (st.used_len_clamped) {
		VT_FAIL_AT("%s: %llu lengths clamped", g.name,
			   (unsigned long long)st.used_len_clamped);
		result = -1;
	}
	rig_destroy(&g);
	return result;
}

/*
 * Shares of the buffer budget per DMA mode. Strict and lazy publish IOTLB updates that the device
 * thread's translations wait for (a reader-writer lock), so a buffer there costs ten times more
 * on a loaded machine; they get fewer buffers, the cheap modes more, the total stays the same.
 */
static const unsigned int mode_weight[] = {
	[VT_DMA_DIRECT] = 3,	      [VT_DMA_IOMMU_STRICT] = 1, [VT_DMA_IOMMU_LAZY] = 1,
	[VT_DMA_IOMMU_PREMAPPED] = 3, [VT_DMA_BOUNCE] = 2,
};

/* Every row of @dma's part of the matrix; the budget is shared by all enabled formats' rows. */
static void run_mode_on(enum vt_dma_mode dma, bool page_table)
{
	unsigned int enabled = 0, weights = 0;

	for (unsigned int f = 0; f < NFORMATS; f++)
		enabled += formats[f].enabled;
	for (unsigned int m = 0; m < sizeof(mode_weight) / sizeof(mode_weight[0]); m++)
		weights += mode_weight[m];
	uint64_t per_row =
	    vt_test_scaled(TOTAL_BUFFERS) * mode_weight[dma] / ((uint64_t)weights * enabled * 16);
	if (per_row == 0)
		per_row = 1;

	for (unsigned int f = 0; f < NFORMATS; f++) {
		if (!formats[f].enabled)
			continue;
		for (unsigned int bits = 0; bits < 16; bits++) {
			struct row row = {
				.format = &formats[f],
				.dma = dma,
				.page_table = page_table,
				.event_idx = bits & 1,
				.notify = (bits & 2) ? NOTIFY_POLL : NOTIFY_EVENTFD,
				.in_order = bits & 4,
				.indirect = bits & 8,
				/* Platform barriers on a quarter of the rows, both formats. */
				.order_platform = (bits & 5) == 5,
				.buffers = per_row,
			};
			row.seed = mix(vt_test_seed() ^ ((uint64_t)f << 40) ^
				       ((uint64_t)page_table << 36) ^ ((uint64_t)dma << 32) ^ bits);
			char name[128];
			struct timespec t0, t1;
			row_name(&row, name, sizeof(name));
			clock_gettime(CLOCK_MONOTONIC, &t0);
			int ret = run_row(&row);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			if (ret == 1)
				fprintf(stderr, "  %s: skipped, format not implemented\n", name);
			else if (getenv("VT_LOOPBACK_VERBOSE"))
				fprintf(stderr, "  %-60s %8llu buffers %7.3f s\n", name,
					(unsigned long long)row.buffers,
					(double)(t1.tv_sec - t0.tv_sec) +
					    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
			if (ret < 0)
				return; /* one failure is enough to read */
		}
	}
}

static void run_mode(enum vt_dma_mode dma)
{
	run_mode_on(dma, false);
}

VT_TEST(loopback_direct)
{
	run_mode(VT_DMA_DIRECT);
}

VT_TEST(loopback_iommu_strict)
{
	run_mode(VT_DMA_IOMMU_STRICT);
}

VT_TEST(loopback_iommu_lazy)
{
	run_mode(VT_DMA_IOMMU_LAZY);
}

/* The same rows over a page table the device walks (vt_dma_params.page_table). */
VT_TEST(loopback_iommu_strict_page_table)
{
	run_mode_on(VT_DMA_IOMMU_STRICT, true);
}

VT_TEST(loopback_iommu_lazy_page_table)
{
	run_mode_on(VT_DMA_IOMMU_LAZY, true);
}

VT_TEST(loopback_iommu_premapped)
{
	run_mode(VT_DMA_IOMMU_PREMAPPED);
}

VT_TEST(loopback_bounce)
{
	run_mode(VT_DMA_BOUNCE);
}
