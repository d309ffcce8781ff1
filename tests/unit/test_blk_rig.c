/* SPDX-License-Identifier: MIT */
/*
 * The rig the virtio-blk tests share (#included by test_blk.c and test_blk_mq.c, not a test of
 * its own): a real driver half (vt_vq_drv, direct DMA over a memfd) and a device half (vt_vq_dev
 * over the memory table, or over an IOTLB) in one process, a disk and one request engine between
 * them. Requests are built as byte layouts, so a test can split a header, data and status across
 * descriptors wherever it likes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <virtue/blk.h>
#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"

#define F(bit)	  VT_BIT(VIRTIO_F_##bit)
#define BLKF(bit) VT_BIT(VIRTIO_BLK_F_##bit)

#define RIG_GPA		(1ULL << 32)
#define RIG_SHM_SIZE	(64ULL << 20)
#define RIG_MAX_SG	80
#define RIG_DEADLINE_MS 20000

#define SECTOR 512u

/* Counts what the library logged; a test says how many warnings it expects. */
struct log_count {
	atomic_uint errors, warnings;
	atomic_flag have_first;
	char first[256];
};

static inline void count_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_count *c = opaque;

	if (level > VT_LOG_WARN)
		return;
	atomic_fetch_add(level == VT_LOG_ERROR ? &c->errors : &c->warnings, 1);
	if (!atomic_flag_test_and_set(&c->have_first))
		snprintf(c->first, sizeof(c->first), "%s", message);
}

struct rig_opts {
	uint64_t features;     /* ring bits: RING_PACKED, EVENT_IDX, IN_ORDER, INDIRECT_DESC */
	uint64_t blk_features; /* device bits accepted; 0: everything the disk offers */
	unsigned int qsize;    /* 0: 128 */
	bool iotlb;	       /* the device translates through an IOTLB that starts empty */
};

struct rig {
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	struct vt_memtable *table;
	struct vt_iotlb *iotlb;
	struct vt_vq_dev *dev;
	struct vt_blk *blk; /* not owned */
	struct vt_blk_queue *q;
	uint64_t features;
	struct log_count log;
	struct vt_log log_hook;
	unsigned int collected; /* completions so far, in the order the driver saw them */
};

/* A request as the driver posts it. */
struct blk_req {
	struct iovec sg[RIG_MAX_SG];
	unsigned int nr, nw;
	uint8_t *status;
	bool done;
	uint32_t used_len;
	unsigned int seq; /* position among the completions */
};

static inline struct vt_log rig_log_hook(struct log_count *c)
{
	atomic_flag_clear(&c->have_first);
	return (struct vt_log){ .fn = count_log, .opaque = c, .max_level = VT_LOG_WARN };
}

static inline void rig_destroy(struct rig *g)
{
	vt_blk_queue_free(g->q);
	vt_vq_dev_free(g->dev);
	vt_vq_drv_free(g->drv);
	vt_dma_free(g->dma);
	vt_iotlb_free(g->iotlb);
	vt_memtable_free(g->table);
	vt_shm_free(g->shm);
	memset(g, 0, sizeof(*g));
}

/* Everything but the disk, which the test makes (and may share between rigs). */
static inline int rig_init(struct rig *g, struct vt_blk *blk, const struct rig_opts *o)
{
	memset(g, 0, sizeof(*g));
	g->log_hook = rig_log_hook(&g->log);
	g->blk = blk;
	uint64_t blk_features = o->blk_features ? o->blk_features : vt_blk_offered_features(blk);
	g->features = F(VERSION_1) | o->features | blk_features;
	unsigned int qsize = o->qsize ? o->qsize : 128;

	int ret = vt_shm_new(&g->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(g->shm, RIG_SHM_SIZE, RIG_GPA, &g->region);
	if (ret < 0)
		return ret;
	g->table = vt_memtable_new(NULL);
	if (!g->table)
		return -ENOMEM;
	if ((ret = vt_memtable_add_shm(g->table, g->shm)) < 0)
		return ret;
	struct vt_as as = vt_memtable_as(g->table);
	if (o->iotlb) {
		if ((ret = vt_iotlb_new(NULL, &g->iotlb)) < 0)
			return ret;
		as = vt_iotlb_as(g->iotlb);
	}
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = g->shm };
	if ((ret = vt_dma_new(&dp, &g->dma)) < 0)
		return ret;
	struct vt_vq_drv_params drp = {
		.num = qsize,
		.features = g->features,
		.dma = g->dma,
		.name = "blk-driver",
		.indirect_max = RIG_MAX_SG,
	};
	if ((ret = vt_vq_drv_new(&drp, &g->drv)) < 0)
		return ret;
	struct vt_vq_dev_params dvp = {
		.num = qsize,
		.features = g->features,
		.as = as,
		.next_avail = (g->features & F(RING_PACKED)) ? VT_VQ_PACKED_START : 0,
		.name = "blk-device",
		.log = &g->log_hook,
	};
	vt_vq_drv_addrs(g->drv, &dvp.desc_addr, &dvp.driver_addr, &dvp.device_addr);
	if ((ret = vt_vq_dev_new(&dvp, &g->dev)) < 0)
		return ret;
	vt_blk_features_ok(blk, g->features);
	return vt_blk_queue_new(blk, g->dev, g->features, "blk-test", &g->q);
}

/* Memory the device can reach, filled with @fill. */
static inline void *rig_alloc(struct rig *g, size_t size, size_t align, uint8_t fill)
{
	void *p = NULL;

	if (vt_shm_alloc(g->shm, size ? size : 1, align ? align : 64, &p) < 0)
		return NULL;
	memset(p, fill, size ? size : 1);
	return p;
}

static inline struct virtio_blk_outhdr *rig_header(struct rig *g, uint32_t type, uint64_t sector)
{
	struct virtio_blk_outhdr *h = rig_alloc(g, sizeof(*h), 16, 0);
	if (h) {
		h->type = vt_cpu_to_le32(type);
		h->reserved = 0;
		h->sector = vt_cpu_to_le64(sector);
	}
	return h;
}

/* The usual layout: header, the data (if any) in one descriptor, status. */
static inline void req_simple(struct rig *g, struct blk_req *r, uint32_t type, uint64_t sector,
			      void *data, size_t len)
{
	bool in = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;

	memset(r, 0, sizeof(*r));
	r->sg[r->nr++] = (struct iovec){ rig_header(g, type, sector), 16 };
	if (len && !in)
		r->sg[r->nr++] = (struct iovec){ data, len };
	if (len && in)
		r->sg[r->nr + r->nw++] = (struct iovec){ data, len };
	r->status = rig_alloc(g, 1, 1, 0xee);
	r->sg[r->nr + r->nw++] = (struct iovec){ r->status, 1 };
}

/* Segments of a DISCARD or WRITE_ZEROES payload. */
static inline struct virtio_blk_discard_write_zeroes *rig_segments(struct rig *g, unsigned int n,
								   const uint64_t *sector,
								   const uint32_t *sectors,
								   uint32_t flags)
{
	struct virtio_blk_discard_write_zeroes *s = rig_alloc(g, n * sizeof(*s), 16, 0);
	for (unsigned int i = 0; s && i < n; i++) {
		s[i].sector = vt_cpu_to_le64(sector[i]);
		s[i].num_sectors = vt_cpu_to_le32(sectors[i]);
		s[i].flags = vt_cpu_to_le32(flags);
	}
	return s;
}

static inline int rig_post(struct rig *g, struct blk_req *r)
{
	r->done = false;
	return vt_vq_drv_add(g->drv, r->sg, r->nr, r->nw, r);
}

static inline int64_t rig_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Collects what came back; the count. */
static inline unsigned int rig_collect(struct rig *g)
{
	void *token;
	uint32_t len;
	unsigned int n = 0;

	while (vt_vq_drv_get(g->drv, &token, &len) == 0) {
		struct blk_req *r = token;
		r->done = true;
		r->used_len = len;
		r->seq = g->collected++;
		n++;
	}
	return n;
}

/*
 * Publishes what was posted, then polls the device until @expect completions came back (waiting
 * on the completion eventfd in between). Returns 0, the poll's error, or -ETIMEDOUT.
 */
static inline int rig_run(struct rig *g, unsigned int expect)
{
	int64_t deadline = rig_now_ms() + RIG_DEADLINE_MS;
	unsigned int got = 0;

	vt_vq_drv_kick_prepare(g->drv);
	for (;;) {
		bool notify;
		int ret = vt_blk_queue_poll(g->q, &notify);
		if (ret < 0)
			return ret;
		got += rig_collect(g);
		if (got >= expect)
			return 0;
		if (rig_now_ms() > deadline)
			return -ETIMEDOUT;
		int fd = vt_blk_queue_event_fd(g->q);
		if (fd >= 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			poll(&pfd, 1, 50);
		} else if (ret == 0) {
			return -ETIMEDOUT; /* inline I/O finishes within the poll */
		}
	}
}

/* Posts one request and runs it: its status byte, or a negative error. */
static inline int rig_do(struct rig *g, struct blk_req *r)
{
	int ret = rig_post(g, r);
	if (ret == 0)
		ret = rig_run(g, 1);
	if (ret < 0)
		return ret;
	return r->done ? *r->status : -EIO;
}

static inline int rig_rw(struct rig *g, uint32_t type, uint64_t sector, void *data, size_t len,
			 uint32_t *used_len)
{
	struct blk_req r;

	req_simple(g, &r, type, sector, data, len);
	int ret = rig_do(g, &r);
	if (used_len)
		*used_len = r.used_len;
	return ret;
}

static inline void fill_random(void *p, size_t len, uint64_t seed)
{
	uint64_t state = seed | 1;
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(vt_test_rand(&state) >> 56);
}

static inline bool all_bytes(const void *p, size_t len, uint8_t v)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != v)
			return false;
	return true;
}

/*
 * A temporary backing file of @size bytes (sparse) in @dir; its path is written to @path and the
 * file is to be unlinked by the caller. Returns an fd for checking contents, or -errno.
 */
static inline int temp_backing(const char *dir, uint64_t size, char *path, size_t path_size)
{
	snprintf(path, path_size, "%s/virtue-blk-test-XXXXXX", dir);
	int fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;
		close(fd);
		unlink(path);
		return -err;
	}
	return fd;
}

/*
 * Where test disks go, first choice first: memory (/dev/shm) where the test does not need a disk
 * file system, since a buffered write on a busy VM disk can wait seconds in writeback throttling;
 * then /tmp, then the working directory.
 */
static const char *const test_disk_dirs[] = { "/dev/shm", "/tmp", "." };

/* A file-backed disk (see test_disk_dirs; O_DIRECT skips tmpfs, which refuses it): 0, or -errno
 * with nothing left over. */
static inline int file_disk(uint64_t size, bool direct, bool sync_io, const struct vt_log *log,
			    struct vt_blk **blk, int *fd)
{
	const char *const *dirs = test_disk_dirs;
	int ret = -ENOENT;

	for (unsigned int i = direct ? 1 : 0; i < 3; i++) {
		char path[256];
		*fd = temp_backing(dirs[i], size, path, sizeof(path));
		if (*fd < 0) {
			ret = *fd;
			continue;
		}
		struct vt_blk_params p = {
			.path = path,
			.direct = direct,
			.sync_io = sync_io,
			.log = log,
			.num_queues = 2,
		};
		ret = vt_blk_new(&p, blk);
		unlink(path);
		if (ret == 0)
			return 0;
		close(*fd);
		*fd = -1;
	}
	return ret;
}

static inline int ram_disk(uint64_t size, const struct vt_log *log, struct vt_blk **blk)
{
	struct vt_blk_params p = { .size = size, .log = log };
	return vt_blk_new(&p, blk);
}
