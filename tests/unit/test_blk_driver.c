/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk driver (blk_driver.h): its configuration decoding, and its request engine
 * against the real device model (vt_blk on a RAM disk and on a temp file) over real rings in one
 * process, in every DMA mode: direct, iommu strict / lazy / premapped (the device translating
 * through an IOTLB the DMA layer feeds, as a vhost-user back-end's) and bounce (the driver's data
 * buffers private, the device seeing only the window). The device runs on the test's thread
 * (vt_blk_queue_poll between the driver's steps). A hostile device is played by the mock device
 * of tests/vq_mock.h, writing any status byte and used length it likes.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include <virtue/blk.h>
#include <virtue/blk_driver.h>
#include <virtue/dma.h>
#include <virtue/iotlb.h>
#include <virtue/iotlb_feed.h>
#include <virtue/memtable.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#include "harness.h"
#include "vq_mock.h"

#define F(bit)	  VT_BIT(VIRTIO_F_##bit)
#define BLKF(bit) VT_BIT(VIRTIO_BLK_F_##bit)

#define SECTOR	     512u
#define GPA_BASE     (1ULL << 32)
#define SHM_SIZE     (64ULL << 20)
#define BOUNCE_SIZE  (16ULL << 20)
#define DISK_SIZE    (4ULL << 20)
#define MAX_DEPTH    64
#define MAX_BUF	     (64u << 10)
#define DEADLINE_MS  20000
#define MAX_COMPLETE 256

/* ---------------------------------------------------------------- logging */

struct log_count {
	unsigned int errors, warnings;
	char first[256];
};

static void count_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct log_count *c = opaque;

	if (level > VT_LOG_WARN)
		return;
	if (c->errors + c->warnings == 0)
		snprintf(c->first, sizeof(c->first), "%s", message);
	if (level == VT_LOG_ERROR)
		c->errors++;
	else
		c->warnings++;
}

/* ---------------------------------------------------------------- the rig */

enum device_kind {
	DEVICE_MODEL, /* vt_blk_queue over a vt_vq_dev */
	DEVICE_MOCK,  /* vq_mock_dev: the test answers by hand */
};

struct rig_opts {
	uint64_t ring;	      /* RING_PACKED, EVENT_IDX, IN_ORDER, INDIRECT_DESC */
	enum vt_dma_mode dma; /* DEVICE_MODEL only; the mock needs direct */
	enum device_kind kind;
	struct vt_blk *blk;    /* DEVICE_MODEL: the disk (not owned) */
	uint64_t blk_features; /* device bits negotiated; 0: all the disk offers */
	/* The bits the engine is told were negotiated, when not those (a driver that lies). */
	uint64_t engine_features;
	unsigned int qsize; /* 0: 128 */
	/* DEVICE_MOCK: the configuration the engine decodes. */
	const struct virtio_blk_config *config;
};

struct rig {
	struct rig_opts o;
	uint64_t features;
	struct vt_shm *shm;
	struct vt_iotlb_feed feed;
	struct vt_dma *dma;
	struct vt_vq_drv *drv;
	struct vt_vq_dev *dev;
	struct vt_blk_queue *q;
	struct vq_mock_dev mock;
	bool mock_attached;
	struct vt_blk_info info;
	struct vt_blk_driver_queue *bq;
	struct log_count log;
	struct vt_log log_hook;
	struct vt_blk_completion done[MAX_COMPLETE * 4];
	unsigned int ndone;
};

static bool iommu_mode(enum vt_dma_mode m)
{
	return m == VT_DMA_IOMMU_STRICT || m == VT_DMA_IOMMU_LAZY || m == VT_DMA_IOMMU_PREMAPPED;
}

static void rig_destroy(struct rig *g)
{
	vt_blk_driver_queue_free(g->bq);
	vt_blk_queue_free(g->q);
	vt_vq_dev_free(g->dev);
	if (g->mock_attached)
		vq_mock_dev_detach(&g->mock);
	vt_vq_drv_free(g->drv);
	vt_dma_free(g->dma);
	vt_iotlb_free(g->feed.iotlb);
	vt_memtable_free(g->feed.table);
	vt_shm_free(g->shm);
	memset(g, 0, sizeof(*g));
}

static int rig_init(struct rig *g, const struct rig_opts *o)
{
	memset(g, 0, sizeof(*g));
	g->o = *o;
	g->log_hook =
	    (struct vt_log){ .fn = count_log, .opaque = &g->log, .max_level = VT_LOG_WARN };
	unsigned int qsize = o->qsize ? o->qsize : 128;
	bool platform = o->dma != VT_DMA_DIRECT;
	uint64_t blk_features = o->blk_features;
	if (!blk_features && o->blk)
		blk_features = vt_blk_offered_features(o->blk);
	g->features = F(VERSION_1) | o->ring | blk_features | (platform ? F(ACCESS_PLATFORM) : 0);

	int ret = vt_shm_new(&g->shm);
	if (ret == 0)
		ret = vt_shm_add_memfd(g->shm, SHM_SIZE, GPA_BASE, NULL);
	if (ret < 0)
		return ret;
	g->feed.table = vt_memtable_new(NULL);
	if (!g->feed.table)
		return -ENOMEM;
	if ((ret = vt_memtable_add_shm(g->feed.table, g->shm)) < 0)
		return ret;
	struct vt_as as = vt_memtable_as(g->feed.table);
	if (iommu_mode(o->dma)) {
		if ((ret = vt_iotlb_new(NULL, &g->feed.iotlb)) < 0)
			return ret;
		as = vt_iotlb_as(g->feed.iotlb);
	}
	struct vt_dma_params dp = {
		.mode = o->dma,
		.shm = g->shm,
		.log = &g->log_hook,
		.iotlb_ops = &vt_iotlb_feed_ops,
		.iotlb_opaque = &g->feed,
		.bounce_window_size = BOUNCE_SIZE,
	};
	if ((ret = vt_dma_new(&dp, &g->dma)) < 0)
		return ret;
	struct vt_vq_drv_params drp = {
		.num = qsize,
		.features = g->features,
		.dma = g->dma,
		.name = "blk-driver-vq",
		.log = &g->log_hook,
	};
	if ((ret = vt_vq_drv_new(&drp, &g->drv)) < 0)
		return ret;

	struct virtio_blk_config config;
	if (o->kind == DEVICE_MODEL) {
		struct vt_vq_dev_params dvp = {
			.num = qsize,
			.features = g->features,
			.as = as,
			.next_avail = (g->features & F(RING_PACKED)) ? VT_VQ_PACKED_START : 0,
			.name = "blk-device-vq",
			.log = &g->log_hook,
		};
		vt_vq_drv_addrs(g->drv, &dvp.desc_addr, &dvp.driver_addr, &dvp.device_addr);
		if ((ret = vt_vq_dev_new(&dvp, &g->dev)) < 0)
			return ret;
		vt_blk_features_ok(o->blk, g->features);
		if ((ret = vt_blk_queue_new(o->blk, g->dev, g->features, "blk-model", &g->q)) < 0)
			return ret;
		vt_blk_config(o->blk, &config);
	} else {
		ret = vq_mock_dev_attach(&g->mock, g->drv, qsize,
					 (g->features & F(RING_PACKED)) != 0, g->shm);
		if (ret < 0)
			return ret;
		g->mock_attached = true;
		config = *o->config;
	}
	uint64_t engine_features = o->engine_features ? o->engine_features : g->features;
	if ((ret = vt_blk_config_decode(&config, sizeof(config), engine_features, &g->info)) < 0)
		return ret;
	struct vt_blk_driver_queue_params bp = {
		.vq = g->drv,
		.num = qsize,
		.shm = g->shm,
		.info = &g->info,
		.name = "blk-driver",
		.log = &g->log_hook,
	};
	return vt_blk_driver_queue_new(&bp, &g->bq);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Kicks, then runs the device model and collects completions until nothing is in flight.
 * Returns 0, the device's or the engine's error, or -ETIMEDOUT.
 */
static int rig_run(struct rig *g)
{
	int64_t deadline = now_ms() + DEADLINE_MS;

	vt_blk_driver_queue_kick(g->bq);
	while (vt_blk_driver_queue_in_flight(g->bq) > 0) {
		bool notify;
		int ret = vt_blk_queue_poll(g->q, &notify);
		if (ret < 0)
			return ret;
		if (g->ndone + MAX_COMPLETE > sizeof(g->done) / sizeof(g->done[0]))
			g->ndone = 0; /* the caller looks at one batch at a time */
		int n = vt_blk_driver_queue_poll(g->bq, g->done + g->ndone, MAX_COMPLETE);
		if (n < 0)
			return n;
		g->ndone += (unsigned int)n;
		if (n > 0 || ret > 0)
			continue;
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		int fd = vt_blk_queue_event_fd(g->q);
		if (fd >= 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			poll(&pfd, 1, 20);
		}
	}
	return 0;
}

/* The completion carrying @cookie among the collected ones, or NULL. */
static const struct vt_blk_completion *find_done(const struct rig *g, const void *cookie)
{
	for (unsigned int i = 0; i < g->ndone; i++)
		if (g->done[i].cookie == cookie)
			return &g->done[i];
	return NULL;
}

static void *shm_buf(struct rig *g, size_t size)
{
	void *p = NULL;
	if (vt_shm_alloc(g->shm, size, 4096, &p) < 0)
		return NULL;
	return p;
}

/* One request run to completion: its result, or a submission / run error. */
static int one(struct rig *g, int submitted, const struct vt_blk_completion **c)
{
	static const struct vt_blk_completion none = { .result = -ENODATA };
	*c = &none;
	if (submitted < 0)
		return submitted;
	g->ndone = 0;
	int ret = rig_run(g);
	if (ret < 0)
		return ret;
	*c = g->ndone == 1 ? &g->done[0] : &none;
	return (*c)->result;
}

static int sync_read(struct rig *g, uint64_t sector, void *buf, size_t len)
{
	const struct vt_blk_completion *c = NULL;
	struct iovec iov = { buf, len };
	return one(g, vt_blk_driver_queue_read(g->bq, sector, &iov, 1, buf), &c);
}

static int sync_write(struct rig *g, uint64_t sector, void *buf, size_t len)
{
	const struct vt_blk_completion *c = NULL;
	struct iovec iov = { buf, len };
	return one(g, vt_blk_driver_queue_write(g->bq, sector, &iov, 1, buf), &c);
}

static void fill_random(void *p, size_t len, uint64_t *state)
{
	uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(vt_test_rand(state) >> 56);
}

static bool all_bytes(const void *p, size_t len, uint8_t v)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		if (b[i] != v)
			return false;
	return true;
}

static int ram_disk(uint64_t size, bool read_only, const char *serial, struct vt_blk **blk)
{
	struct vt_blk_params p = { .size = size, .read_only = read_only, .serial = serial };
	return vt_blk_new(&p, blk);
}

/*
 * A file-backed disk (io_uring), unlinked at once: in memory (/dev/shm) if there is one, since a
 * buffered write on a busy VM disk can wait seconds in writeback throttling; else /tmp or here.
 */
static int file_disk(uint64_t size, struct vt_blk **blk)
{
	static const char *const dirs[] = { "/dev/shm", "/tmp", "." };
	int ret = -ENOENT;

	for (unsigned int i = 0; i < 3; i++) {
		char path[256];
		snprintf(path, sizeof(path), "%s/virtue-blk-driver-XXXXXX", dirs[i]);
		int fd = mkstemp(path);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		ret = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
		close(fd);
		if (ret == 0) {
			struct vt_blk_params p = { .path = path };
			ret = vt_blk_new(&p, blk);
		}
		unlink(path);
		if (ret == 0)
			return 0;
	}
	return ret;
}

/* ---------------------------------------------------------------- configuration */

/* A config with every field set to a recognizable value. */
static struct virtio_blk_config full_config(void)
{
	struct virtio_blk_config c;
	memset(&c, 0, sizeof(c));
	c.capacity = vt_cpu_to_le64(8192);
	c.size_max = vt_cpu_to_le32(65536);
	c.seg_max = vt_cpu_to_le32(126);
	c.geometry.cylinders = vt_cpu_to_le16(100);
	c.geometry.heads = 4;
	c.geometry.sectors = 32;
	c.blk_size = vt_cpu_to_le32(4096);
	c.topology.physical_block_exp = 1;
	c.topology.alignment_offset = 2;
	c.topology.min_io_size = vt_cpu_to_le16(3);
	c.topology.opt_io_size = vt_cpu_to_le32(16);
	c.writeback = 0;
	c.num_queues = vt_cpu_to_le16(4);
	c.max_discard_sectors = vt_cpu_to_le32(2048);
	c.max_discard_seg = vt_cpu_to_le32(8);
	c.discard_sector_alignment = vt_cpu_to_le32(8);
	c.max_write_zeroes_sectors = vt_cpu_to_le32(4096);
	c.max_write_zeroes_seg = vt_cpu_to_le32(2);
	c.write_zeroes_may_unmap = 1;
	return c;
}

#define ALL_BLK_FEATURES VT_BLK_DRIVER_FEATURES

VT_TEST(config_decode_without_features_reads_only_the_capacity)
{
	struct virtio_blk_config c = full_config();
	struct vt_blk_info info;

	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), F(VERSION_1), &info), 0);
	CHECK_EQ(info.capacity_sectors, 8192);
	CHECK_EQ(info.capacity_bytes, 8192ULL * 512);
	CHECK_EQ(info.size_max, 0);
	CHECK_EQ(info.seg_max, 0);
	CHECK_EQ(info.cylinders, 0);
	CHECK_EQ(info.blk_size, 512);
	CHECK_EQ(info.physical_block_exp, 0);
	CHECK_EQ(info.opt_io_size, 0);
	CHECK(!info.read_only && !info.flush && !info.config_wce && !info.writeback);
	CHECK_EQ(info.num_queues, 1);
	CHECK(!info.discard && !info.write_zeroes);
	CHECK_EQ(info.max_discard_sectors, 0);
	CHECK_EQ(info.max_write_zeroes_seg, 0);
	/* Eight bytes are all it needs then. */
	CHECK_EQ(vt_blk_config_decode(&c, 8, F(VERSION_1), &info), 0);
}

VT_TEST(config_decode_reads_each_field_its_feature_negotiates)
{
	struct virtio_blk_config c = full_config();
	struct vt_blk_info info;

	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), ALL_BLK_FEATURES, &info), 0);
	CHECK_EQ(info.size_max, 65536);
	CHECK_EQ(info.seg_max, 126);
	CHECK_EQ(info.cylinders, 100);
	CHECK_EQ(info.heads, 4);
	CHECK_EQ(info.sectors_per_track, 32);
	CHECK_EQ(info.blk_size, 4096);
	CHECK_EQ(info.physical_block_exp, 1);
	CHECK_EQ(info.alignment_offset, 2);
	CHECK_EQ(info.min_io_size, 3);
	CHECK_EQ(info.opt_io_size, 16);
	CHECK(info.read_only && info.flush && info.config_wce);
	CHECK(!info.writeback); /* CONFIG_WCE: the field says writethrough */
	CHECK_EQ(info.num_queues, 4);
	CHECK(info.discard);
	CHECK_EQ(info.max_discard_sectors, 2048);
	CHECK_EQ(info.max_discard_seg, 8);
	CHECK_EQ(info.discard_sector_alignment, 8);
	CHECK(info.write_zeroes);
	CHECK_EQ(info.max_write_zeroes_sectors, 4096);
	CHECK_EQ(info.max_write_zeroes_seg, 2);
	CHECK(info.write_zeroes_may_unmap);

	/* One feature at a time: only its field appears. */
	struct {
		uint64_t bit;
		bool (*seen)(const struct vt_blk_info *);
	} one[] = {
		{ BLKF(SIZE_MAX), NULL }, { BLKF(SEG_MAX), NULL }, { BLKF(BLK_SIZE), NULL },
		{ BLKF(MQ), NULL },	  { BLKF(DISCARD), NULL }, { BLKF(WRITE_ZEROES), NULL },
	};
	for (unsigned int i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
		REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), one[i].bit, &info), 0);
		CHECK_EQ(info.size_max, one[i].bit == BLKF(SIZE_MAX) ? 65536 : 0);
		CHECK_EQ(info.seg_max, one[i].bit == BLKF(SEG_MAX) ? 126 : 0);
		CHECK_EQ(info.blk_size, one[i].bit == BLKF(BLK_SIZE) ? 4096 : 512);
		CHECK_EQ(info.num_queues, one[i].bit == BLKF(MQ) ? 4 : 1);
		CHECK_EQ(info.discard, one[i].bit == BLKF(DISCARD));
		CHECK_EQ(info.write_zeroes, one[i].bit == BLKF(WRITE_ZEROES));
	}
}

VT_TEST(config_decode_cache_mode_follows_config_wce_then_flush)
{
	struct virtio_blk_config c = full_config();
	struct vt_blk_info info;

	c.writeback = 1;
	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(CONFIG_WCE), &info), 0);
	CHECK(info.writeback);
	c.writeback = 0;
	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(CONFIG_WCE) | BLKF(FLUSH), &info), 0);
	CHECK(!info.writeback);
	/* Without CONFIG_WCE the field is not read: FLUSH means a writeback cache (5.2.5). */
	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(FLUSH), &info), 0);
	CHECK(info.writeback);
	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), 0, &info), 0);
	CHECK(!info.writeback);
}

VT_TEST(config_decode_refuses_a_config_too_short_for_a_negotiated_field)
{
	struct virtio_blk_config c = full_config();
	struct vt_blk_info info;

	CHECK_EQ(vt_blk_config_decode(&c, 7, 0, &info), -EINVAL);
	CHECK_EQ(vt_blk_config_decode(NULL, sizeof(c), 0, &info), -EINVAL);
	struct {
		uint64_t bit;
		size_t end;
	} cases[] = {
		{ BLKF(SIZE_MAX), offsetof(struct virtio_blk_config, size_max) + 4 },
		{ BLKF(SEG_MAX), offsetof(struct virtio_blk_config, seg_max) + 4 },
		{ BLKF(GEOMETRY), offsetof(struct virtio_blk_config, geometry) + 4 },
		{ BLKF(BLK_SIZE), offsetof(struct virtio_blk_config, blk_size) + 4 },
		{ BLKF(TOPOLOGY), offsetof(struct virtio_blk_config, topology) + 8 },
		{ BLKF(CONFIG_WCE), offsetof(struct virtio_blk_config, writeback) + 1 },
		{ BLKF(MQ), offsetof(struct virtio_blk_config, num_queues) + 2 },
		{ BLKF(DISCARD), offsetof(struct virtio_blk_config, discard_sector_alignment) + 4 },
		{ BLKF(WRITE_ZEROES),
		  offsetof(struct virtio_blk_config, write_zeroes_may_unmap) + 1 },
	};
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ(vt_blk_config_decode(&c, cases[i].end - 1, cases[i].bit, &info), -EINVAL);
		CHECK_EQ(vt_blk_config_decode(&c, cases[i].end, cases[i].bit, &info), 0);
	}
}

VT_TEST(config_decode_refuses_values_no_request_could_satisfy)
{
	struct vt_blk_info info;
	struct virtio_blk_config c;

	uint32_t bad_blk_sizes[] = { 0, 256, 1000, 4097, 128u << 10 };
	for (unsigned int i = 0; i < sizeof(bad_blk_sizes) / sizeof(bad_blk_sizes[0]); i++) {
		c = full_config();
		c.blk_size = vt_cpu_to_le32(bad_blk_sizes[i]);
		CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(BLK_SIZE), &info), -EINVAL);
	}
	c = full_config();
	c.capacity = vt_cpu_to_le64(1ULL << 56);
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), 0, &info), -EINVAL);
	c = full_config();
	c.seg_max = 0;
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(SEG_MAX), &info), -EINVAL);
	c = full_config();
	c.size_max = 0; /* no limit (qemu-storage-daemon says so), not an error */
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(SIZE_MAX), &info), 0);
	CHECK_EQ(info.size_max, 0);
	c = full_config();
	c.num_queues = 0;
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(MQ), &info), -EINVAL);
	c = full_config();
	c.max_discard_seg = 0;
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(DISCARD), &info), -EINVAL);
	c = full_config();
	c.max_write_zeroes_sectors = 0;
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(WRITE_ZEROES), &info), -EINVAL);
	/* A value whose feature was not negotiated is not looked at. */
	CHECK_EQ(vt_blk_config_decode(&c, sizeof(c), BLKF(DISCARD), &info), 0);
}

VT_TEST(info_str_names_every_decoded_field_and_reports_the_length_it_needs)
{
	struct virtio_blk_config c = full_config();
	struct vt_blk_info info;
	char buf[1024];

	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), ALL_BLK_FEATURES, &info), 0);
	int n = vt_blk_info_str(&info, buf, sizeof(buf));
	REQUIRE(n > 0 && (size_t)n < sizeof(buf));
	CHECK_EQ(strlen(buf), n);
	CHECK(strstr(buf, "capacity: 4194304 bytes (4 MiB, 8192 sectors of 512)"));
	CHECK(strstr(buf, "block size: 4096"));
	CHECK(strstr(buf, "segments per request: 126"));
	CHECK(strstr(buf, "segment size max: 65536"));
	CHECK(strstr(buf, "read-only: yes"));
	CHECK(strstr(buf, "cache: writethrough, flush, configurable"));
	CHECK(strstr(buf, "queues: 4"));
	CHECK(strstr(buf, "discard: up to 2048 sectors x 8 segments, alignment 8"));
	CHECK(strstr(buf, "write zeroes: up to 4096 sectors x 2 segments, may unmap"));
	CHECK(strstr(buf, "geometry: 100 cylinders, 4 heads, 32 sectors"));

	char small[16];
	CHECK_EQ(vt_blk_info_str(&info, small, sizeof(small)), n);
	CHECK_EQ(strlen(small), sizeof(small) - 1);
	CHECK(strncmp(small, buf, sizeof(small) - 1) == 0);

	REQUIRE_EQ(vt_blk_config_decode(&c, sizeof(c), 0, &info), 0);
	vt_blk_info_str(&info, buf, sizeof(buf));
	CHECK(strstr(buf, "block size: 512 (not advertised)"));
	CHECK(strstr(buf, "discard: no"));
	CHECK(strstr(buf, "write zeroes: no"));
	CHECK(!strstr(buf, "segments per request"));
}

VT_TEST(id_str_stops_at_nul_and_masks_unprintable_bytes)
{
	char out[VIRTIO_BLK_ID_BYTES + 1];
	uint8_t full[VIRTIO_BLK_ID_BYTES];

	memset(full, 'a', sizeof(full));
	CHECK_STR(vt_blk_id_str(full, sizeof(full), out), "aaaaaaaaaaaaaaaaaaaa");
	CHECK_STR(vt_blk_id_str("disk-1\0xyz", 10, out), "disk-1");
	CHECK_STR(vt_blk_id_str("a\nb\x80", 4, out), "a?b?");
	CHECK_STR(vt_blk_id_str("abc", 2, out), "ab");
}

/* ---------------------------------------------------------------- data in every mode */

struct row {
	const char *name;
	uint64_t ring;
	enum vt_dma_mode dma;
	bool file;
};

/* One pending I/O of a batch. */
struct io {
	uint64_t sector;
	uint32_t len;
	bool write;
	uint8_t *buf;
	struct iovec iov[4];
	unsigned int niov;
};

/* Splits @io's buffer into 1..4 segments at random points. */
static void split_iov(struct io *io, uint64_t *state)
{
	unsigned int n = 1 + (unsigned int)(vt_test_rand(state) % 4);
	uint32_t at = 0;

	io->niov = 0;
	for (unsigned int i = 0; i < n && at < io->len; i++) {
		uint32_t left = io->len - at;
		uint32_t k = i + 1 == n ? left : 1 + (uint32_t)(vt_test_rand(state) % left);
		io->iov[io->niov++] = (struct iovec){ io->buf + at, k };
		at += k;
	}
}

static bool overlaps(const struct io *a, const struct io *b)
{
	uint64_t a_end = a->sector + a->len / SECTOR, b_end = b->sector + b->len / SECTOR;
	return a->sector < b_end && b->sector < a_end;
}

/*
 * Random writes at random offsets and sizes in batches of up to @depth, each batch's writes
 * disjoint, then random reads checked byte for byte against a model of the disk; flush, get-id;
 * at the end the whole disk read back. Returns false (having said why) on the first difference.
 */
static bool exercise(const struct row *r, uint64_t seed, unsigned int rounds, unsigned int depth)
{
	struct vt_blk *blk = NULL;
	int ret = r->file ? file_disk(DISK_SIZE, &blk) : ram_disk(DISK_SIZE, false, "row", &blk);
	if (ret < 0) {
		fprintf(stderr, "  %s: disk: %s\n", r->name, strerror(-ret));
		return false;
	}
	struct rig g;
	struct rig_opts o = { .ring = r->ring, .dma = r->dma, .blk = blk, .qsize = 128 };
	bool ok = false;
	uint8_t *model = calloc(1, DISK_SIZE);
	uint8_t *private_bufs = NULL;
	struct io ios[MAX_DEPTH];
	uint64_t state = seed | 1;

	ret = rig_init(&g, &o);
	if (ret < 0 || !model) {
		fprintf(stderr, "  %s: rig: %s\n", r->name, strerror(-ret));
		goto out;
	}
	/* Data buffers: shared memory, except under bounce where the driver's stay private. */
	if (r->dma == VT_DMA_BOUNCE)
		private_bufs = malloc((size_t)MAX_DEPTH * MAX_BUF);
	for (unsigned int i = 0; i < depth; i++) {
		ios[i].buf =
		    private_bufs ? private_bufs + (size_t)i * MAX_BUF : shm_buf(&g, MAX_BUF);
		if (!ios[i].buf)
			goto out;
	}

	for (unsigned int round = 0; round < rounds; round++) {
		bool write = round % 2 == 0;
		unsigned int n = 1 + (unsigned int)(vt_test_rand(&state) % depth);
		unsigned int posted = 0;
		for (unsigned int i = 0; i < n; i++) {
			struct io *io = &ios[posted];
			io->write = write;
			io->len =
			    SECTOR * (1 + (uint32_t)(vt_test_rand(&state) % (MAX_BUF / SECTOR)));
			io->sector =
			    vt_test_rand(&state) % (DISK_SIZE / SECTOR - io->len / SECTOR + 1);
			bool clash = false;
			for (unsigned int k = 0; write && k < posted; k++)
				clash |= overlaps(io, &ios[k]);
			if (clash)
				continue;
			if (write)
				fill_random(io->buf, io->len, &state);
			else
				memset(io->buf, 0xee, io->len);
			split_iov(io, &state);
			ret =
			    write
				? vt_blk_driver_queue_write(g.bq, io->sector, io->iov, io->niov, io)
				: vt_blk_driver_queue_read(g.bq, io->sector, io->iov, io->niov, io);
			if (ret == -EAGAIN)
				break; /* the ring is full: this batch is what it is */
			if (ret < 0) {
				fprintf(stderr, "  %s: round %u: submit: %s\n", r->name, round,
					strerror(-ret));
				goto out;
			}
			if (write)
				memcpy(model + io->sector * SECTOR, io->buf, io->len);
			posted++;
		}
		g.ndone = 0;
		if ((ret = rig_run(&g)) < 0) {
			fprintf(stderr, "  %s: round %u: run: %s\n", r->name, round,
				strerror(-ret));
			goto out;
		}
		if (g.ndone != posted) {
			fprintf(stderr, "  %s: round %u: %u completions for %u requests\n", r->name,
				round, g.ndone, posted);
			goto out;
		}
		for (unsigned int i = 0; i < posted; i++) {
			const struct vt_blk_completion *c = find_done(&g, &ios[i]);
			if (!c || c->result != 0 || c->status != VIRTIO_BLK_S_OK ||
			    c->bytes != ios[i].len ||
			    c->type != (write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN)) {
				fprintf(stderr, "  %s: round %u: request %u: %s %d bytes %u\n",
					r->name, round, i, c ? "result" : "missing",
					c ? c->result : 0, c ? c->bytes : 0);
				goto out;
			}
			if (!write &&
			    memcmp(ios[i].buf, model + ios[i].sector * SECTOR, ios[i].len) != 0) {
				fprintf(stderr,
					"  %s: round %u: read of %u bytes at sector %llu differs\n",
					r->name, round, ios[i].len,
					(unsigned long long)ios[i].sector);
				goto out;
			}
		}
	}

	/* Flush and get-id go through too. */
	const struct vt_blk_completion *c = NULL;
	if (one(&g, vt_blk_driver_queue_flush(g.bq, (void *)1), &c) != 0) {
		fprintf(stderr, "  %s: flush failed\n", r->name);
		goto out;
	}
	uint8_t *id = ios[0].buf;
	memset(id, 0xee, VIRTIO_BLK_ID_BYTES);
	char str[VIRTIO_BLK_ID_BYTES + 1];
	if (one(&g, vt_blk_driver_queue_get_id(g.bq, id, (void *)2), &c) != 0 ||
	    strcmp(vt_blk_id_str(id, c->bytes, str), r->file ? VT_BLK_DEFAULT_SERIAL : "row") !=
		0) {
		fprintf(stderr, "  %s: get-id failed\n", r->name);
		goto out;
	}
	/* The whole disk, a buffer at a time. */
	for (uint64_t at = 0; at < DISK_SIZE; at += MAX_BUF) {
		if (sync_read(&g, at / SECTOR, ios[0].buf, MAX_BUF) != 0 ||
		    memcmp(ios[0].buf, model + at, MAX_BUF) != 0) {
			fprintf(stderr, "  %s: final read at %llu differs\n", r->name,
				(unsigned long long)at);
			goto out;
		}
	}
	struct vt_blk_driver_queue_stats st;
	vt_blk_driver_queue_get_stats(g.bq, &st);
	ok = st.in_flight == 0 && st.bad_status == 0 && st.bad_length == 0 && st.io_errors == 0 &&
	     st.completed == st.submitted && g.log.errors == 0;
	if (!ok)
		fprintf(stderr, "  %s: stats or log: %u errors (%s)\n", r->name, g.log.errors,
			g.log.first);
out:
	rig_destroy(&g);
	vt_blk_free(blk);
	free(model);
	free(private_bufs);
	return ok;
}

static const struct {
	const char *name;
	enum vt_dma_mode mode;
} dma_modes[] = {
	{ "direct", VT_DMA_DIRECT },   { "strict", VT_DMA_IOMMU_STRICT },
	{ "lazy", VT_DMA_IOMMU_LAZY }, { "premapped", VT_DMA_IOMMU_PREMAPPED },
	{ "bounce", VT_DMA_BOUNCE },
};

static void run_matrix(bool file)
{
	uint64_t seed = vt_test_seed();
	unsigned int rounds = (unsigned int)vt_test_scaled(file ? 16 : 40);
	unsigned int rows = 0, passed = 0;

	for (unsigned int fmt = 0; fmt < 2; fmt++)
		for (unsigned int m = 0; m < sizeof(dma_modes) / sizeof(dma_modes[0]); m++)
			for (unsigned int ev = 0; ev < 2; ev++) {
				char name[96];
				snprintf(name, sizeof(name), "%s/%s/%s/%s",
					 fmt ? "packed" : "split", dma_modes[m].name,
					 ev ? "event_idx" : "flags", file ? "file" : "ram");
				struct row r = {
					.name = name,
					.ring =
					    (fmt ? F(RING_PACKED) : 0) | (ev ? F(EVENT_IDX) : 0),
					.dma = dma_modes[m].mode,
					.file = file,
				};
				rows++;
				if (exercise(&r, seed + rows, rounds, 32))
					passed++;
				else
					fprintf(stderr, "  row %s failed (VT_TEST_SEED=%llu)\n",
						name, (unsigned long long)seed);
			}
	CHECK_EQ(passed, rows);
}

VT_TEST(data_written_reads_back_in_every_dma_mode_format_and_event_idx_on_a_ram_disk)
{
	run_matrix(false);
}

VT_TEST(data_written_reads_back_in_every_dma_mode_format_and_event_idx_on_a_file)
{
	run_matrix(true);
}

VT_TEST(data_written_reads_back_with_in_order_and_indirect_descriptors)
{
	uint64_t rings[] = { F(IN_ORDER), F(IN_ORDER) | F(RING_PACKED),
			     F(INDIRECT_DESC) | F(EVENT_IDX),
			     F(INDIRECT_DESC) | F(RING_PACKED) | F(IN_ORDER) };
	for (unsigned int i = 0; i < sizeof(rings) / sizeof(rings[0]); i++)
		for (unsigned int file = 0; file < 2; file++) {
			struct row r = { .name = "in_order/indirect",
					 .ring = rings[i],
					 .dma = i % 2 ? VT_DMA_IOMMU_STRICT : VT_DMA_DIRECT,
					 .file = file };
			CHECK(exercise(&r, vt_test_seed() + 100 + i,
				       (unsigned int)vt_test_scaled(16), 32));
		}
}

VT_TEST(iodepth_64_on_a_file_completes_every_request)
{
	struct row r = {
		.name = "iodepth64", .ring = F(INDIRECT_DESC), .dma = VT_DMA_DIRECT, .file = true
	};
	CHECK(exercise(&r, vt_test_seed() + 200, (unsigned int)vt_test_scaled(20), 64));
	r.ring |= F(RING_PACKED);
	CHECK(exercise(&r, vt_test_seed() + 201, (unsigned int)vt_test_scaled(20), 64));
}

/* ---------------------------------------------------------------- discard, write-zeroes, get-id */

static void check_discard_and_write_zeroes(bool file)
{
	struct vt_blk *blk = NULL;
	struct rig g;
	const struct vt_blk_completion *c = NULL;

	REQUIRE_EQ(file ? file_disk(DISK_SIZE, &blk) : ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	struct rig_opts o = { .blk = blk, .dma = VT_DMA_IOMMU_STRICT };
	if (rig_init(&g, &o) < 0) {
		rig_destroy(&g);
		vt_blk_free(blk);
		REQUIRE(false);
	}
	uint8_t *buf = shm_buf(&g, 256 * SECTOR);
	uint64_t state = 42;
	REQUIRE(buf);
	fill_random(buf, 256 * SECTOR, &state);
	uint8_t *expect = malloc(256 * SECTOR);
	REQUIRE(expect);
	memcpy(expect, buf, 256 * SECTOR);
	CHECK_EQ(sync_write(&g, 0, buf, 256 * SECTOR), 0);

	/* Three discard ranges in one request, then write-zeroes with and without unmap. */
	struct vt_blk_range d[] = { { 8, 16, false }, { 64, 8, false }, { 100, 4, false } };
	CHECK_EQ(one(&g, vt_blk_driver_queue_discard(g.bq, d, 3, (void *)7), &c), 0);
	CHECK(c->cookie == (void *)7 && c->type == VIRTIO_BLK_T_DISCARD && c->bytes == 0);
	struct vt_blk_range z[] = { { 150, 10, true }, { 200, 1, false } };
	CHECK_EQ(one(&g, vt_blk_driver_queue_write_zeroes(g.bq, z, 2, (void *)8), &c), 0);
	CHECK(c->type == VIRTIO_BLK_T_WRITE_ZEROES);
	for (unsigned int i = 0; i < 3; i++)
		memset(expect + d[i].sector * SECTOR, 0, d[i].num_sectors * SECTOR);
	for (unsigned int i = 0; i < 2; i++)
		memset(expect + z[i].sector * SECTOR, 0, z[i].num_sectors * SECTOR);

	memset(buf, 0xee, 256 * SECTOR);
	CHECK_EQ(sync_read(&g, 0, buf, 256 * SECTOR), 0);
	CHECK(memcmp(buf, expect, 256 * SECTOR) == 0);
	CHECK(all_bytes(buf + 8 * SECTOR, 16 * SECTOR, 0));
	CHECK(!all_bytes(buf, 8 * SECTOR, 0));

	struct vt_blk_driver_queue_stats st;
	vt_blk_driver_queue_get_stats(g.bq, &st);
	CHECK_EQ(st.discards, 1);
	CHECK_EQ(st.write_zeroes, 1);
	CHECK_EQ(st.io_errors + st.bad_length + st.bad_status, 0);
	free(expect);
	rig_destroy(&g);
	vt_blk_free(blk);
}

VT_TEST(discarded_and_zeroed_ranges_read_back_as_zeroes_on_a_ram_disk)
{
	check_discard_and_write_zeroes(false);
}

VT_TEST(discarded_and_zeroed_ranges_read_back_as_zeroes_on_a_file)
{
	check_discard_and_write_zeroes(true);
}

VT_TEST(get_id_returns_the_serial_even_when_it_fills_all_twenty_bytes)
{
	const char *serials[] = { "abcdefghijklmnopqrst", "short" };

	for (unsigned int i = 0; i < 2; i++) {
		struct vt_blk *blk = NULL;
		struct rig g;
		const struct vt_blk_completion *c = NULL;
		char str[VIRTIO_BLK_ID_BYTES + 1];

		REQUIRE_EQ(ram_disk(DISK_SIZE, false, serials[i], &blk), 0);
		struct rig_opts o = { .blk = blk, .dma = VT_DMA_BOUNCE, .ring = F(RING_PACKED) };
		if (rig_init(&g, &o) == 0) {
			/* Bounce: the id buffer need not be shared memory. */
			uint8_t id[VIRTIO_BLK_ID_BYTES];
			memset(id, 0xee, sizeof(id));
			CHECK_EQ(one(&g, vt_blk_driver_queue_get_id(g.bq, id, id), &c), 0);
			CHECK(c->cookie == id && c->type == VIRTIO_BLK_T_GET_ID);
			CHECK_EQ(c->bytes, VIRTIO_BLK_ID_BYTES);
			CHECK_STR(vt_blk_id_str(id, c->bytes, str), serials[i]);
		} else {
			CHECK(false);
		}
		rig_destroy(&g);
		vt_blk_free(blk);
	}
}

VT_TEST(two_queues_of_one_disk_see_each_others_writes)
{
	struct vt_blk *blk = NULL;
	struct vt_blk_params p = { .size = DISK_SIZE, .num_queues = 2 };
	struct rig a, b;

	REQUIRE_EQ(vt_blk_new(&p, &blk), 0);
	struct rig_opts o = { .blk = blk, .dma = VT_DMA_IOMMU_LAZY, .ring = F(EVENT_IDX) };
	int ra = rig_init(&a, &o);
	o.ring |= F(RING_PACKED);
	int rb = rig_init(&b, &o);
	CHECK_EQ(ra, 0);
	CHECK_EQ(rb, 0);
	if (ra == 0 && rb == 0) {
		CHECK_EQ(a.info.num_queues, 2);
		uint8_t *wa = shm_buf(&a, 8192), *rdb = shm_buf(&b, 8192);
		uint64_t state = 9;
		fill_random(wa, 8192, &state);
		CHECK_EQ(sync_write(&a, 1000, wa, 8192), 0);
		CHECK_EQ(sync_read(&b, 1000, rdb, 8192), 0);
		CHECK(memcmp(wa, rdb, 8192) == 0);
	}
	rig_destroy(&a);
	rig_destroy(&b);
	vt_blk_free(blk);
}

/* ---------------------------------------------------------------- checks before submission */

VT_TEST(requests_breaking_a_limit_are_refused_before_reaching_the_ring)
{
	struct vt_blk *blk = NULL;
	struct rig g;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	struct rig_opts o = { .blk = blk, .dma = VT_DMA_DIRECT, .qsize = 128 };
	if (rig_init(&g, &o) < 0) {
		rig_destroy(&g);
		vt_blk_free(blk);
		REQUIRE(false);
	}
	struct vt_blk_driver_queue *q = g.bq;
	uint64_t cap = DISK_SIZE / SECTOR;
	uint8_t *big = shm_buf(&g, 2u << 20);
	REQUIRE(big);
	struct iovec one_sector = { big, SECTOR };
	struct iovec many[128];
	for (unsigned int i = 0; i < 128; i++)
		many[i] = (struct iovec){ big + i * SECTOR, SECTOR };
	unsigned int refused = 0;

#define REFUSED(call, err)                                                                         \
	do {                                                                                       \
		CHECK_EQ(call, err);                                                               \
		refused++;                                                                         \
	} while (0)

	CHECK_EQ(vt_blk_driver_queue_max_segments(q), 126); /* the ring's 128 less 2 */
	/* No data, a zero-length segment, a length not a multiple of 512. */
	REFUSED(vt_blk_driver_queue_read(q, 0, many, 0, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_read(q, 0, NULL, 1, NULL), -EINVAL);
	struct iovec zero[2] = { { big, SECTOR }, { big + SECTOR, 0 } };
	REFUSED(vt_blk_driver_queue_write(q, 0, zero, 2, NULL), -EINVAL);
	struct iovec odd = { big, 100 };
	REFUSED(vt_blk_driver_queue_read(q, 0, &odd, 1, NULL), -EINVAL);
	struct iovec halves[2] = { { big, 256 }, { big + 256, 513 } };
	REFUSED(vt_blk_driver_queue_write(q, 0, halves, 2, NULL), -EINVAL);
	/* Past the capacity, at its edge, and wrapping around. */
	REFUSED(vt_blk_driver_queue_read(q, cap, &one_sector, 1, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_write(q, cap - 1, many, 2, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_read(q, UINT64_MAX, &one_sector, 1, NULL), -EINVAL);
	/* More segments than the ring holds, a segment longer than size_max (1 MiB). */
	REFUSED(vt_blk_driver_queue_read(q, 0, many, 127, NULL), -EINVAL);
	struct iovec huge = { big, 2u << 20 };
	REFUSED(vt_blk_driver_queue_write(q, 0, &huge, 1, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_get_id(q, NULL, NULL), -EINVAL);

	/* DISCARD and WRITE_ZEROES: the advertised limits (16 segments of 2^22 sectors). */
	struct vt_blk_range r[17];
	for (unsigned int i = 0; i < 17; i++)
		r[i] = (struct vt_blk_range){ .sector = i * 8, .num_sectors = 8 };
	REFUSED(vt_blk_driver_queue_discard(q, r, 0, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_discard(q, NULL, 1, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_discard(q, r, 17, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_write_zeroes(q, r, 17, NULL), -EINVAL);
	struct vt_blk_range bad = { .sector = 0, .num_sectors = 0 };
	REFUSED(vt_blk_driver_queue_discard(q, &bad, 1, NULL), -EINVAL);
	bad = (struct vt_blk_range){ .sector = 0, .num_sectors = (1u << 22) + 1 };
	REFUSED(vt_blk_driver_queue_write_zeroes(q, &bad, 1, NULL), -EINVAL);
	bad = (struct vt_blk_range){ .sector = cap - 4, .num_sectors = 8 };
	REFUSED(vt_blk_driver_queue_discard(q, &bad, 1, NULL), -EINVAL);
	REFUSED(vt_blk_driver_queue_write_zeroes(q, &bad, 1, NULL), -EINVAL);
	bad = (struct vt_blk_range){ .sector = 0, .num_sectors = 8, .unmap = true };
	REFUSED(vt_blk_driver_queue_discard(q, &bad, 1, NULL), -EINVAL);
#undef REFUSED

	struct vt_blk_driver_queue_stats st;
	vt_blk_driver_queue_get_stats(q, &st);
	CHECK_EQ(st.rejected, refused);
	CHECK_EQ(st.submitted, 0);
	CHECK_EQ(vt_blk_driver_queue_in_flight(q), 0);
	CHECK_EQ(vt_vq_drv_free_descs(g.drv), 128);
	/* The ring never saw any of it: the device has nothing to do. */
	vt_blk_driver_queue_kick(q);
	bool notify;
	CHECK_EQ(vt_blk_queue_poll(g.q, &notify), 0);
	/* The largest legal requests go through. */
	CHECK_EQ(sync_read(&g, cap - 1, big, SECTOR), 0);
	CHECK_EQ(vt_blk_driver_queue_write(q, 0, many, 126, NULL), 0);
	CHECK_EQ(rig_run(&g), 0);
	rig_destroy(&g);
	vt_blk_free(blk);
}

/* The mock device's configuration: a 4 MiB disk; features as each test negotiates them. */
static struct virtio_blk_config mock_config(uint32_t blk_size)
{
	struct virtio_blk_config c = full_config();
	c.blk_size = vt_cpu_to_le32(blk_size);
	c.discard_sector_alignment = vt_cpu_to_le32(blk_size / SECTOR);
	return c;
}

VT_TEST(requests_are_kept_aligned_to_blk_size_and_discard_alignment)
{
	struct virtio_blk_config cfg = mock_config(4096);
	struct rig g;
	struct rig_opts o = { .kind = DEVICE_MOCK,
			      .config = &cfg,
			      .blk_features = BLKF(BLK_SIZE) | BLKF(DISCARD) | BLKF(WRITE_ZEROES) };
	cfg.discard_sector_alignment = vt_cpu_to_le32(16);
	int ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		struct vt_blk_driver_queue *q = g.bq;
		uint8_t *buf = shm_buf(&g, 8192);
		struct iovec v = { buf, 4096 }, half = { buf, 2048 };
		CHECK_EQ(vt_blk_driver_queue_read(q, 1, &v, 1, NULL), -EINVAL);
		CHECK_EQ(vt_blk_driver_queue_read(q, 8, &half, 1, NULL), -EINVAL);
		struct vt_blk_range r = { .sector = 8, .num_sectors = 8 };
		CHECK_EQ(vt_blk_driver_queue_write_zeroes(q, &r, 1, NULL), 0);
		/* Discard also keeps to discard_sector_alignment (16). */
		CHECK_EQ(vt_blk_driver_queue_discard(q, &r, 1, NULL), -EINVAL);
		r = (struct vt_blk_range){ .sector = 16, .num_sectors = 4 };
		CHECK_EQ(vt_blk_driver_queue_write_zeroes(q, &r, 1, NULL), -EINVAL);
		r = (struct vt_blk_range){ .sector = 16, .num_sectors = 16 };
		CHECK_EQ(vt_blk_driver_queue_discard(q, &r, 1, NULL), 0);
		CHECK_EQ(vt_blk_driver_queue_read(q, 8, &v, 1, NULL), 0);
		CHECK_EQ(vt_blk_driver_queue_in_flight(q), 3);
	}
	rig_destroy(&g);
}

VT_TEST(types_whose_feature_was_not_negotiated_are_refused_with_enotsup)
{
	struct vt_blk *blk = NULL;
	struct rig g;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	uint64_t without = vt_blk_offered_features(blk) &
			   ~(BLKF(DISCARD) | BLKF(WRITE_ZEROES) | BLKF(FLUSH) | BLKF(CONFIG_WCE));
	struct rig_opts o = { .blk = blk, .blk_features = without };
	int ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		struct vt_blk_range r = { .sector = 0, .num_sectors = 8 };
		CHECK_EQ(vt_blk_driver_queue_discard(g.bq, &r, 1, NULL), -ENOTSUP);
		CHECK_EQ(vt_blk_driver_queue_write_zeroes(g.bq, &r, 1, NULL), -ENOTSUP);
		CHECK_EQ(vt_blk_driver_queue_flush(g.bq, NULL), -ENOTSUP);
		CHECK_EQ(vt_vq_drv_free_descs(g.drv), 128);
	}
	rig_destroy(&g);
	vt_blk_free(blk);
}

VT_TEST(a_device_answering_unsupp_completes_with_enotsup)
{
	struct vt_blk *blk = NULL;
	struct rig g;
	const struct vt_blk_completion *c = NULL;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	/* The device negotiated no DISCARD; the engine is told it was. */
	uint64_t offered = vt_blk_offered_features(blk);
	struct rig_opts o = { .blk = blk,
			      .blk_features = offered & ~BLKF(DISCARD),
			      .engine_features = F(VERSION_1) | offered };
	int ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		struct vt_blk_range r = { .sector = 0, .num_sectors = 8 };
		CHECK_EQ(one(&g, vt_blk_driver_queue_discard(g.bq, &r, 1, NULL), &c), -ENOTSUP);
		CHECK_EQ(c->status, VIRTIO_BLK_S_UNSUPP);
		struct vt_blk_driver_queue_stats st;
		vt_blk_driver_queue_get_stats(g.bq, &st);
		CHECK_EQ(st.unsupported, 1);
	}
	rig_destroy(&g);
	vt_blk_free(blk);
}

VT_TEST(a_read_only_device_refuses_writes_with_erofs_and_serves_reads)
{
	struct vt_blk *blk = NULL;
	struct rig g;
	const struct vt_blk_completion *c = NULL;

	REQUIRE_EQ(ram_disk(DISK_SIZE, true, NULL, &blk), 0);
	struct rig_opts o = { .blk = blk, .dma = VT_DMA_IOMMU_PREMAPPED };
	int ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		CHECK(g.info.read_only);
		uint8_t *buf = shm_buf(&g, 4096);
		struct iovec v = { buf, 4096 };
		CHECK_EQ(vt_blk_driver_queue_write(g.bq, 0, &v, 1, NULL), -EROFS);
		CHECK_EQ(sync_read(&g, 0, buf, 4096), 0);
		CHECK(all_bytes(buf, 4096, 0));
		CHECK_EQ(one(&g, vt_blk_driver_queue_flush(g.bq, NULL), &c), 0);
	}
	rig_destroy(&g);

	/* A driver that ignores RO: the device answers IOERR, the engine -EIO. */
	uint64_t offered = vt_blk_offered_features(blk);
	o.engine_features = (F(VERSION_1) | offered) & ~BLKF(RO);
	ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		uint8_t *buf = shm_buf(&g, 4096);
		memset(buf, 0x5a, 4096);
		CHECK_EQ(sync_write(&g, 0, buf, 4096), -EIO);
		CHECK_EQ(sync_read(&g, 0, buf, 4096), 0);
		CHECK(all_bytes(buf, 4096, 0));
		struct vt_blk_driver_queue_stats st;
		vt_blk_driver_queue_get_stats(g.bq, &st);
		CHECK_EQ(st.io_errors, 1);
	}
	rig_destroy(&g);
	vt_blk_free(blk);
}

VT_TEST(read_only_with_discard_refuses_discard_and_write_zeroes_with_erofs)
{
	struct virtio_blk_config cfg = mock_config(512);
	struct rig g;
	struct rig_opts o = { .kind = DEVICE_MOCK,
			      .config = &cfg,
			      .blk_features = BLKF(RO) | BLKF(DISCARD) | BLKF(WRITE_ZEROES) };
	int ret = rig_init(&g, &o);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		struct vt_blk_range r = { .sector = 0, .num_sectors = 8 };
		CHECK_EQ(vt_blk_driver_queue_discard(g.bq, &r, 1, NULL), -EROFS);
		CHECK_EQ(vt_blk_driver_queue_write_zeroes(g.bq, &r, 1, NULL), -EROFS);
	}
	rig_destroy(&g);
}

VT_TEST(a_full_ring_or_every_slot_busy_says_eagain_until_completions_return)
{
	struct vt_blk *blk = NULL;
	struct rig g;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	/* 8 descriptors, 3 per request: two fit. */
	struct rig_opts o = { .blk = blk, .qsize = 8 };
	REQUIRE_EQ(rig_init(&g, &o), 0);
	uint8_t *buf = shm_buf(&g, 4096);
	struct iovec v = { buf, 512 };
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 0, &v, 1, NULL), 0);
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 1, &v, 1, NULL), 0);
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 2, &v, 1, NULL), -EAGAIN);
	CHECK_EQ(rig_run(&g), 0);
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 2, &v, 1, NULL), 0);
	CHECK_EQ(rig_run(&g), 0);
	rig_destroy(&g);

	/* Indirect descriptors: one each, so the 4 request slots run out first. */
	o = (struct rig_opts){ .blk = blk, .qsize = 4, .ring = F(INDIRECT_DESC) };
	REQUIRE_EQ(rig_init(&g, &o), 0);
	buf = shm_buf(&g, 4096);
	v = (struct iovec){ buf, 512 };
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(vt_blk_driver_queue_read(g.bq, i, &v, 1, NULL), 0);
	CHECK_EQ(vt_blk_driver_queue_flush(g.bq, NULL), -EAGAIN);
	struct vt_blk_driver_queue_stats st;
	vt_blk_driver_queue_get_stats(g.bq, &st);
	CHECK_EQ(st.ring_full, 1);
	CHECK_EQ(rig_run(&g), 0);
	CHECK_EQ(g.ndone, 4);
	CHECK_EQ(vt_blk_driver_queue_flush(g.bq, NULL), 0);
	CHECK_EQ(rig_run(&g), 0);
	rig_destroy(&g);
	vt_blk_free(blk);
}

VT_TEST(requests_taken_back_after_a_stop_complete_as_ecanceled)
{
	struct vt_blk *blk = NULL;
	struct rig g;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	struct rig_opts o = { .blk = blk };
	REQUIRE_EQ(rig_init(&g, &o), 0);
	uint8_t *buf = shm_buf(&g, 4096);
	struct iovec v = { buf, 512 };
	int cookies[3];
	for (unsigned int i = 0; i < 3; i++)
		CHECK_EQ(vt_blk_driver_queue_read(g.bq, i, &v, 1, &cookies[i]), 0);
	vt_blk_driver_queue_kick(g.bq);
	/* The device never ran: take everything back. */
	struct vt_blk_completion c[8];
	CHECK_EQ(vt_blk_driver_queue_cancel(g.bq, c, 8), 3);
	for (unsigned int i = 0; i < 3; i++) {
		CHECK_EQ(c[i].result, -ECANCELED);
		CHECK(c[i].cookie >= (void *)&cookies[0] && c[i].cookie <= (void *)&cookies[2]);
	}
	CHECK_EQ(vt_blk_driver_queue_in_flight(g.bq), 0);
	CHECK_EQ(vt_blk_driver_queue_cancel(g.bq, c, 8), 0);
	CHECK_EQ(vt_blk_driver_queue_forget(g.bq, &cookies[0], c), -EINVAL);
	CHECK_EQ(vt_blk_driver_queue_forget(g.bq, NULL, c), -EINVAL);
	/* The slots were freed: the device must not see them, so no more I/O on this rig. */
	vt_blk_queue_free(g.q);
	g.q = NULL;
	rig_destroy(&g);
	vt_blk_free(blk);
}

/* ---------------------------------------------------------------- a device played by hand */

#define MOCK_FEATURES (BLKF(FLUSH) | BLKF(SEG_MAX) | BLKF(DISCARD) | BLKF(WRITE_ZEROES))

static int mock_rig(struct rig *g, uint64_t ring, unsigned int qsize,
		    const struct virtio_blk_config *cfg)
{
	struct rig_opts o = { .kind = DEVICE_MOCK,
			      .config = cfg,
			      .ring = ring,
			      .qsize = qsize,
			      .blk_features = MOCK_FEATURES };
	return rig_init(g, &o);
}

/* Takes every available chain: how many (at most @max). */
static unsigned int mock_take(struct rig *g, struct vq_mock_dev_chain *chains, unsigned int max)
{
	unsigned int n = 0;
	while (n < max && vq_mock_dev_take(&g->mock, &chains[n]) == 0)
		n++;
	return n;
}

/*
 * Serves a chain against @disk as a correct device would: IN and OUT move data, everything else
 * succeeds. Returns the used length a correct device reports.
 */
static uint32_t mock_execute(struct vq_mock_dev_chain *c, uint8_t *disk)
{
	struct virtio_blk_outhdr h;
	memcpy(&h, c->host[0], sizeof(h));
	uint32_t type = vt_le32_to_cpu(h.type);
	uint64_t at = vt_le64_to_cpu(h.sector) * SECTOR;
	uint32_t written = 1;
	for (unsigned int i = 1; i + 1 < c->nsegs; i++) {
		if (type == VIRTIO_BLK_T_IN) {
			memcpy(c->host[i], disk + at, c->seg[i].len);
			written += c->seg[i].len;
		} else if (type == VIRTIO_BLK_T_OUT) {
			memcpy(disk + at, c->host[i], c->seg[i].len);
		}
		at += c->seg[i].len;
	}
	*(uint8_t *)c->host[c->nsegs - 1] = VIRTIO_BLK_S_OK;
	return written;
}

static void mock_answer(struct rig *g, const struct vq_mock_dev_chain *c, uint8_t status,
			uint32_t len)
{
	*(uint8_t *)c->host[c->nsegs - 1] = status;
	vq_mock_dev_complete(&g->mock, c->id, c->ndesc, len);
}

static int mock_poll(struct rig *g)
{
	g->ndone = 0;
	int n = vt_blk_driver_queue_poll(g->bq, g->done, MAX_COMPLETE);
	if (n > 0)
		g->ndone = (unsigned int)n;
	return n;
}

static void check_ooo(uint64_t ring)
{
	struct virtio_blk_config cfg = mock_config(512);
	struct rig g;
	enum { DEPTH = 64, LEN = 4096 };
	uint8_t *disk = calloc(1, DISK_SIZE);
	struct vq_mock_dev_chain *chains = calloc(DEPTH, sizeof(*chains));
	uint64_t state = vt_test_seed() ^ ring;

	REQUIRE(disk && chains);
	if (mock_rig(&g, ring, 256, &cfg) < 0) {
		CHECK(false);
		goto out;
	}
	uint8_t *bufs = shm_buf(&g, DEPTH * LEN);
	REQUIRE(bufs);
	uint8_t *expect = malloc(DEPTH * LEN);
	REQUIRE(expect);
	fill_random(bufs, DEPTH * LEN, &state);
	memcpy(expect, bufs, DEPTH * LEN);

	for (unsigned int pass = 0; pass < 2; pass++) {
		bool write = pass == 0;
		if (!write)
			memset(bufs, 0xee, DEPTH * LEN);
		for (unsigned int i = 0; i < DEPTH; i++) {
			/* Two segments each; request i at sector 16 * i (+ a gap). */
			struct iovec v[2] = { { bufs + i * LEN, 1024 },
					      { bufs + i * LEN + 1024, LEN - 1024 } };
			int ret =
			    write ? vt_blk_driver_queue_write(g.bq, 16 * i, v, 2, bufs + i * LEN)
				  : vt_blk_driver_queue_read(g.bq, 16 * i, v, 2, bufs + i * LEN);
			CHECK_EQ(ret, 0);
		}
		vt_blk_driver_queue_kick(g.bq);
		REQUIRE_EQ(mock_take(&g, chains, DEPTH), DEPTH);
		/* Completed in a random order (Fisher-Yates). */
		unsigned int order[DEPTH];
		for (unsigned int i = 0; i < DEPTH; i++)
			order[i] = i;
		for (unsigned int i = DEPTH - 1; i > 0; i--) {
			unsigned int k = (unsigned int)(vt_test_rand(&state) % (i + 1));
			unsigned int t = order[i];
			order[i] = order[k];
			order[k] = t;
		}
		for (unsigned int i = 0; i < DEPTH; i++) {
			struct vq_mock_dev_chain *c = &chains[order[i]];
			vq_mock_dev_complete(&g.mock, c->id, c->ndesc, mock_execute(c, disk));
		}
		REQUIRE_EQ(mock_poll(&g), DEPTH);
		/* Each completion names its own request, in the order the device returned them. */
		for (unsigned int i = 0; i < DEPTH; i++) {
			const struct vt_blk_completion *c = &g.done[i];
			struct virtio_blk_outhdr h;
			memcpy(&h, chains[order[i]].host[0], sizeof(h));
			uint64_t sector = vt_le64_to_cpu(h.sector);
			CHECK(c->cookie == bufs + sector / 16 * LEN);
			CHECK_EQ(c->result, 0);
			CHECK_EQ(c->bytes, LEN);
		}
		CHECK_EQ(vt_blk_driver_queue_in_flight(g.bq), 0);
	}
	CHECK(memcmp(bufs, expect, DEPTH * LEN) == 0);
	free(expect);
out:
	rig_destroy(&g);
	free(disk);
	free(chains);
}

VT_TEST(iodepth_64_completed_out_of_order_reports_each_request_with_its_cookie_split)
{
	check_ooo(0);
	check_ooo(F(EVENT_IDX));
}

VT_TEST(iodepth_64_completed_out_of_order_reports_each_request_with_its_cookie_packed)
{
	check_ooo(F(RING_PACKED));
	check_ooo(F(RING_PACKED) | F(EVENT_IDX));
}

/*
 * One request answered by the mock with @status and used length @len (UINT32_MAX: what a
 * correct device reports). The completion, copied out.
 */
static struct vt_blk_completion answer_one(struct rig *g, bool read, uint8_t status, uint32_t len)
{
	struct vt_blk_completion none = { .result = -ENODATA };
	struct vq_mock_dev_chain *c = calloc(1, sizeof(*c));
	static uint8_t disk[DISK_SIZE];
	uint8_t *buf = shm_buf(g, 4096);
	struct iovec v = { buf, 4096 };

	if (!c || !buf)
		goto out;
	int ret = read ? vt_blk_driver_queue_read(g->bq, 8, &v, 1, buf)
		       : vt_blk_driver_queue_write(g->bq, 8, &v, 1, buf);
	if (ret < 0)
		goto out;
	vt_blk_driver_queue_kick(g->bq);
	if (mock_take(g, c, 1) != 1)
		goto out;
	uint32_t correct = mock_execute(c, disk);
	mock_answer(g, c, status, len == UINT32_MAX ? correct : len);
	if (mock_poll(g) == 1)
		none = g->done[0];
out:
	free(c);
	return none;
}

static void check_hostile(uint64_t ring)
{
	struct virtio_blk_config cfg = mock_config(512);
	struct rig g;
	struct vt_blk_completion c;
	struct vt_blk_driver_queue_stats st;

	REQUIRE_EQ(mock_rig(&g, ring, 64, &cfg), 0);

	/* Friendly answers first: OK, IOERR, UNSUPP. */
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, UINT32_MAX);
	CHECK_EQ(c.result, 0);
	CHECK_EQ(c.bytes, 4096);
	c = answer_one(&g, false, VIRTIO_BLK_S_IOERR, 1);
	CHECK_EQ(c.result, -EIO);
	CHECK_EQ(c.status, VIRTIO_BLK_S_IOERR);
	c = answer_one(&g, false, VIRTIO_BLK_S_UNSUPP, 1);
	CHECK_EQ(c.result, -ENOTSUP);
	CHECK_EQ(g.log.errors, 0);

	/* A status byte that is no VIRTIO_BLK_S_* value. */
	c = answer_one(&g, false, 7, 1);
	CHECK_EQ(c.result, -EIO);
	CHECK_EQ(c.status, 7);
	c = answer_one(&g, true, 0xff, UINT32_MAX);
	CHECK_EQ(c.result, -EIO);
	CHECK_EQ(c.bytes, 0);
	vt_blk_driver_queue_get_stats(g.bq, &st);
	CHECK_EQ(st.bad_status, 2);
	CHECK_EQ(g.log.errors, 1); /* logged once */

	/* Used lengths a request cannot have: longer than its writable part, a short read, 0. */
	c = answer_one(&g, false, VIRTIO_BLK_S_OK, 100);
	CHECK_EQ(c.result, -EIO);
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, 4096 + 2);
	CHECK_EQ(c.result, -EIO);
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, 1000);
	CHECK_EQ(c.result, -EIO);
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, 0);
	CHECK_EQ(c.result, -EIO);
	c = answer_one(&g, false, VIRTIO_BLK_S_OK, 0);
	CHECK_EQ(c.result, -EIO);
	vt_blk_driver_queue_get_stats(g.bq, &st);
	CHECK_EQ(st.bad_length, 5);
	CHECK_EQ(st.in_flight, 0);
	CHECK_EQ(st.completed, st.submitted);

	/* The queue is still good after all that. */
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, UINT32_MAX);
	CHECK_EQ(c.result, 0);

	/* A used id that was never posted breaks the ring; posted requests can be taken back. */
	uint8_t *buf = shm_buf(&g, 4096);
	struct iovec v = { buf, 4096 };
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 0, &v, 1, buf), 0);
	vt_blk_driver_queue_kick(g.bq);
	vq_mock_dev_complete(&g.mock, 63, 1, 1);
	struct vt_blk_completion out[4];
	CHECK_EQ(vt_blk_driver_queue_poll(g.bq, out, 4), -EPROTO);
	CHECK_EQ(vt_blk_driver_queue_read(g.bq, 0, &v, 1, buf), -EPROTO);
	CHECK_EQ(vt_blk_driver_queue_cancel(g.bq, out, 4), 1);
	CHECK_EQ(out[0].result, -ECANCELED);
	CHECK(out[0].cookie == buf);
	CHECK_EQ(vt_blk_driver_queue_in_flight(g.bq), 0);
	rig_destroy(&g);

	/* IN_ORDER: a used length of 0 is how a batch's earlier buffers come back. */
	REQUIRE_EQ(mock_rig(&g, ring | F(IN_ORDER), 64, &cfg), 0);
	c = answer_one(&g, true, VIRTIO_BLK_S_OK, 0);
	CHECK_EQ(c.result, 0);
	CHECK_EQ(c.bytes, 4096);
	c = answer_one(&g, false, VIRTIO_BLK_S_OK, 0);
	CHECK_EQ(c.result, 0);
	rig_destroy(&g);
}

VT_TEST(a_hostile_device_gets_errors_never_a_crash_split)
{
	check_hostile(0);
}

VT_TEST(a_hostile_device_gets_errors_never_a_crash_packed)
{
	check_hostile(F(RING_PACKED));
}

/* ---------------------------------------------------------------- strict DMA collection */

/* How many IOTLB pages translate into [p, p + len): the IOVA space the rig's DMA allocates. */
static unsigned int pages_reaching(struct rig *g, const uint8_t *p, size_t len)
{
	unsigned int n = 0;
	for (uint64_t iova = 1u << 20; iova < (1u << 20) + 4096ull * 4096; iova += 4096) {
		struct vt_iotlb_entry e;
		if (vt_iotlb_lookup(g->feed.iotlb, iova, &e) == 0 && (uint8_t *)e.hva < p + len &&
		    (uint8_t *)e.hva + e.size > p)
			n++;
	}
	return n;
}

/*
 * Strict IOMMU DMA: a poll collects the requests the device finished and invalidates all their
 * buffers together (one flush, fewer invalidations than unmaps, adjacent IOVAs merged) before
 * it completes any: by the time a completion reaches the caller, the device can no longer
 * reach its buffer. (Collected one by one, every unmap was an invalidation of its own.)
 */
VT_TEST(a_strict_poll_invalidates_what_it_collects_together_before_completing_it)
{
	enum { N = 8 };
	struct vt_blk *blk = NULL;
	struct rig g;

	REQUIRE_EQ(ram_disk(DISK_SIZE, false, NULL, &blk), 0);
	struct rig_opts o = { .blk = blk, .dma = VT_DMA_IOMMU_STRICT };
	if (rig_init(&g, &o) < 0) {
		rig_destroy(&g);
		vt_blk_free(blk);
		REQUIRE(false);
	}
	uint8_t *bufs = shm_buf(&g, N * 4096);
	REQUIRE(bufs);
	for (unsigned int i = 0; i < N; i++) {
		struct iovec iov = { bufs + i * 4096, 4096 };
		REQUIRE_EQ(vt_blk_driver_queue_read(g.bq, i * 8, &iov, 1, bufs + i * 4096), 0);
	}
	vt_blk_driver_queue_kick(g.bq);
	/* The device finishes all of them before the driver looks. */
	struct vt_blk_queue_stats qs = { 0 };
	for (int64_t deadline = now_ms() + DEADLINE_MS; now_ms() < deadline;) {
		bool notify;
		REQUIRE(vt_blk_queue_poll(g.q, &notify) >= 0);
		vt_blk_queue_stats(g.q, &qs);
		if (qs.requests == N && qs.in_flight == 0)
			break;
	}
	REQUIRE_EQ(qs.requests, N);
	CHECK_EQ(pages_reaching(&g, bufs, N * 4096), N);

	struct vt_dma_stats before, after;
	vt_dma_get_stats(g.dma, &before);
	CHECK_EQ(vt_blk_driver_queue_poll(g.bq, g.done, MAX_COMPLETE), N);
	vt_dma_get_stats(g.dma, &after);
	for (unsigned int i = 0; i < N; i++)
		CHECK_EQ(g.done[i].result, 0);
	CHECK_EQ(pages_reaching(&g, bufs, N * 4096), 0);
	uint64_t unmaps = after.unmaps - before.unmaps;
	CHECK(unmaps >= N);
	CHECK(after.iotlb_invalidations - before.iotlb_invalidations < unmaps);
	CHECK_EQ(after.flushes - before.flushes, 1);
	rig_destroy(&g);
	vt_blk_free(blk);
}
