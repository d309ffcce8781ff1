/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk data path: a real driver half posts requests, the request engine serves them from a
 * RAM disk or a file (io_uring, inline, O_DIRECT), and every byte is checked on the way back and
 * in the backing itself. Also: every ring format, IN_ORDER, many requests in flight, long chains,
 * notification suppression, IOTLB misses and drain. The request rules (errors, malformed chains,
 * limits, configuration) are in test_blk_requests.c, multiqueue in test_blk_mq.c.
 */
#include "test_blk_rig.c"

#define DISK_SIZE (8u << 20)

enum backing { RAM, FILE_URING, FILE_SYNC, FILE_DIRECT };

static const char *const backing_names[] = { "ram", "file/io_uring", "file/inline",
					     "file/O_DIRECT" };

/* A disk of each kind; fd is the backing file (to check it directly) or -1. */
struct disk {
	struct vt_blk *blk;
	int fd;
	struct log_count log;
	struct vt_log hook;
};

/* 0, 1 when the backing cannot be had here (O_DIRECT refused: skipped), -1 on failure. */
static int disk_open(struct disk *d, enum backing b)
{
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->hook = rig_log_hook(&d->log);
	int ret;
	if (b == RAM)
		ret = ram_disk(DISK_SIZE, &d->hook, &d->blk);
	else
		ret = file_disk(DISK_SIZE, b == FILE_DIRECT, b == FILE_SYNC, &d->hook, &d->blk,
				&d->fd);
	if (ret == -EINVAL && b == FILE_DIRECT) {
		fprintf(stderr, "  skipped: no file system here takes O_DIRECT\n");
		return 1;
	}
	if (ret < 0) {
		VT_FAIL_AT("%s disk: %s", backing_names[b], strerror(-ret));
		return -1;
	}
	return 0;
}

static void disk_close(struct disk *d)
{
	vt_blk_free(d->blk);
	if (d->fd >= 0)
		close(d->fd);
}

/* Writes random data at a few places, reads it back through the device and from the backing. */
static void check_round_trip(struct rig *g, int fd, uint64_t seed)
{
	static const struct {
		uint64_t sector;
		size_t len;
	} spots[] = { { 0, 512 }, { 7, 4096 }, { 1000, 65536 }, { DISK_SIZE / SECTOR - 3, 1536 } };

	for (unsigned int i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
		size_t len = spots[i].len;
		uint8_t *out = rig_alloc(g, len, 4096, 0);
		uint8_t *in = rig_alloc(g, len, 4096, 0x5a);
		REQUIRE(out && in);
		fill_random(out, len, seed + i);
		uint32_t used;
		CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, spots[i].sector, out, len, &used),
			 VIRTIO_BLK_S_OK);
		CHECK_EQ(used, 1);
		CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_IN, spots[i].sector, in, len, &used),
			 VIRTIO_BLK_S_OK);
		CHECK_EQ(used, len + 1);
		CHECK(memcmp(out, in, len) == 0);
		if (fd >= 0) {
			uint8_t *back = malloc(len);
			REQUIRE(back);
			CHECK_EQ(pread(fd, back, len, (off_t)(spots[i].sector * SECTOR)),
				 (long long)len);
			CHECK(memcmp(out, back, len) == 0);
			free(back);
		}
	}
}

static void round_trip(enum backing b, uint64_t ring_features)
{
	struct disk d;
	struct rig g;

	if (disk_open(&d, b) != 0)
		return;
	struct rig_opts o = { .features = ring_features };
	int ret = rig_init(&g, d.blk, &o);
	if (ret < 0) {
		VT_FAIL_AT("rig: %s", strerror(-ret));
	} else {
		check_round_trip(&g, d.fd, 0x1234 + b);
		struct vt_blk_queue_stats st;
		vt_blk_queue_stats(g.q, &st);
		CHECK_EQ(st.writes, 4);
		CHECK_EQ(st.reads, 4);
		CHECK_EQ(st.bytes_written, 512 + 4096 + 65536 + 1536);
		CHECK_EQ(st.bytes_read, 512 + 4096 + 65536 + 1536);
		CHECK_EQ(st.io_errors, 0);
		CHECK_EQ(st.in_flight, 0);
	}
	CHECK_EQ(atomic_load(&d.log.errors) + atomic_load(&g.log.errors), 0);
	rig_destroy(&g);
	disk_close(&d);
}

VT_TEST(ram_disk_reads_back_what_was_written)
{
	round_trip(RAM, 0);
}

VT_TEST(file_through_io_uring_reads_back_what_was_written_and_holds_it)
{
	round_trip(FILE_URING, 0);
}

VT_TEST(file_with_inline_io_reads_back_what_was_written_and_holds_it)
{
	round_trip(FILE_SYNC, 0);
}

VT_TEST(file_with_o_direct_reads_back_what_was_written_and_holds_it)
{
	round_trip(FILE_DIRECT, 0);
}

VT_TEST(o_direct_takes_unaligned_buffers_through_the_page_cache)
{
	struct disk d;
	struct rig g;

	if (disk_open(&d, FILE_DIRECT) != 0)
		return;
	struct rig_opts o = { 0 };
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	/* Buffers 8 bytes off any block boundary: O_DIRECT says EINVAL, the engine goes on. */
	uint8_t *out = (uint8_t *)rig_alloc(&g, 4096 + 8, 4096, 0) + 8;
	uint8_t *in = (uint8_t *)rig_alloc(&g, 4096 + 8, 4096, 0) + 8;
	fill_random(out, 4096, 77);
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_OUT, 24, out, 4096, NULL), VIRTIO_BLK_S_OK);
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_IN, 24, in, 4096, NULL), VIRTIO_BLK_S_OK);
	CHECK(memcmp(out, in, 4096) == 0);
	uint8_t back[4096];
	CHECK_EQ(pread(d.fd, back, sizeof(back), 24 * SECTOR), 4096);
	CHECK(memcmp(out, back, 4096) == 0);
	rig_destroy(&g);
	disk_close(&d);
}

VT_TEST(every_ring_format_and_feature_moves_the_data)
{
	static const uint64_t rings[] = { 0, F(RING_PACKED) };
	static const enum backing backings[] = { RAM, FILE_URING };

	for (unsigned int r = 0; r < 2; r++)
		for (unsigned int bits = 0; bits < 8; bits++)
			for (unsigned int b = 0; b < 2; b++) {
				uint64_t f = rings[r] | (bits & 1 ? F(EVENT_IDX) : 0) |
					     (bits & 2 ? F(INDIRECT_DESC) : 0) |
					     (bits & 4 ? F(IN_ORDER) : 0);
				unsigned int before = (unsigned int)vt_test_failed;
				round_trip(backings[b], f);
				if ((unsigned int)vt_test_failed != before) {
					fprintf(stderr, "  in %s, %s, features 0x%llx\n",
						backing_names[backings[b]], r ? "packed" : "split",
						(unsigned long long)f);
					return;
				}
			}
}

VT_TEST(flush_completes_with_ok_on_every_backing)
{
	for (enum backing b = RAM; b <= FILE_SYNC; b++) {
		struct disk d;
		struct rig g;
		struct rig_opts o = { 0 };
		if (disk_open(&d, b) != 0)
			return;
		REQUIRE(rig_init(&g, d.blk, &o) == 0);
		uint8_t data[512];
		memset(data, 1, sizeof(data));
		uint8_t *p = rig_alloc(&g, 512, 512, 1);
		CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_OUT, 3, p, 512, NULL), VIRTIO_BLK_S_OK);
		uint32_t used = 0;
		CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, &used), VIRTIO_BLK_S_OK);
		CHECK_EQ(used, 1);
		struct vt_blk_queue_stats st;
		vt_blk_queue_stats(g.q, &st);
		CHECK_EQ(st.flushes, 1);
		CHECK_EQ(vt_blk_flush_all(d.blk), 0);
		rig_destroy(&g);
		disk_close(&d);
	}
}

VT_TEST(get_id_answers_the_serial_nul_padded_to_20_bytes)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { 0 };

	if (disk_open(&d, RAM) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	uint8_t *id = rig_alloc(&g, VIRTIO_BLK_ID_BYTES, 0, 0xff);
	uint32_t used;
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES, &used),
		 VIRTIO_BLK_S_OK);
	CHECK_EQ(used, VIRTIO_BLK_ID_BYTES + 1);
	CHECK(memcmp(id, "virtue-blk", 10) == 0);
	CHECK(all_bytes(id + 10, 10, 0));

	/* A buffer shorter than 20 bytes gets what fits. */
	uint8_t *short_id = rig_alloc(&g, 6, 0, 0xff);
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_GET_ID, 0, short_id, 6, &used), VIRTIO_BLK_S_OK);
	CHECK_EQ(used, 7);
	CHECK(memcmp(short_id, "virtue", 6) == 0);
	rig_destroy(&g);
	vt_blk_free(d.blk);

	/* Exactly 20 bytes: no terminator. */
	struct vt_blk_params p = { .size = 1 << 20,
				   .serial = "0123456789abcdefghij",
				   .log = &d.hook };
	REQUIRE(vt_blk_new(&p, &d.blk) == 0);
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	uint8_t *full = rig_alloc(&g, 24, 0, 0xff);
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_GET_ID, 0, full, 24, &used), VIRTIO_BLK_S_OK);
	CHECK_EQ(used, 21);
	CHECK(memcmp(full, "0123456789abcdefghij", 20) == 0);
	CHECK(all_bytes(full + 20, 4, 0xff));
	rig_destroy(&g);
	vt_blk_free(d.blk);
}

/* Fills [first, first + n) sectors with 0xab through the device. */
static void write_pattern(struct rig *g, uint64_t first, unsigned int n)
{
	uint8_t *p = rig_alloc(g, (size_t)n * SECTOR, 4096, 0xab);
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, first, p, (size_t)n * SECTOR, NULL), VIRTIO_BLK_S_OK);
}

/* Reads [first, first + n) back and checks every byte is @v. */
static bool sectors_are(struct rig *g, uint64_t first, unsigned int n, uint8_t v)
{
	uint8_t *p = rig_alloc(g, (size_t)n * SECTOR, 4096, (uint8_t)~v);
	if (rig_rw(g, VIRTIO_BLK_T_IN, first, p, (size_t)n * SECTOR, NULL) != VIRTIO_BLK_S_OK)
		return false;
	return all_bytes(p, (size_t)n * SECTOR, v);
}

static int rig_extents(struct rig *g, uint32_t type, unsigned int n, const uint64_t *sector,
		       const uint32_t *sectors, uint32_t flags)
{
	struct blk_req r;
	void *segs = rig_segments(g, n, sector, sectors, flags);
	req_simple(g, &r, type, 0, segs, n * sizeof(struct virtio_blk_discard_write_zeroes));
	return rig_do(g, &r);
}

static void zeroing(enum backing b, uint32_t type, uint32_t flags)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { 0 };

	if (disk_open(&d, b) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	/* 64 sectors of pattern; two segments clear [8, 16) and [32, 48) (4 KiB aligned). */
	write_pattern(&g, 0, 64);
	struct stat before;
	if (d.fd >= 0) {
		fsync(d.fd);
		CHECK(fstat(d.fd, &before) == 0);
	}
	static const uint64_t sector[] = { 8, 32 };
	static const uint32_t sectors[] = { 8, 16 };
	CHECK_EQ(rig_extents(&g, type, 2, sector, sectors, flags), VIRTIO_BLK_S_OK);
	CHECK(sectors_are(&g, 0, 8, 0xab));
	CHECK(sectors_are(&g, 8, 8, 0));
	CHECK(sectors_are(&g, 16, 16, 0xab));
	CHECK(sectors_are(&g, 32, 16, 0));
	CHECK(sectors_are(&g, 48, 16, 0xab));
	if (d.fd >= 0) {
		uint8_t back[64 * SECTOR];
		CHECK_EQ(pread(d.fd, back, sizeof(back), 0), (long long)sizeof(back));
		CHECK(all_bytes(back + 8 * SECTOR, 8 * SECTOR, 0));
		CHECK(all_bytes(back + 32 * SECTOR, 16 * SECTOR, 0));
		CHECK(all_bytes(back + 48 * SECTOR, 16 * SECTOR, 0xab));
		struct stat after;
		CHECK(fstat(d.fd, &after) == 0);
		CHECK_EQ(after.st_size, before.st_size);
		/* A discard punches a hole: the file gives blocks back (on file systems that can).
		 */
		if (type == VIRTIO_BLK_T_DISCARD && before.st_blocks >= 64)
			CHECK(after.st_blocks < before.st_blocks);
	}
	CHECK_EQ(atomic_load(&d.log.errors) + atomic_load(&g.log.errors), 0);
	rig_destroy(&g);
	disk_close(&d);
}

VT_TEST(discard_reads_back_zeroes_on_a_ram_disk)
{
	zeroing(RAM, VIRTIO_BLK_T_DISCARD, 0);
}

VT_TEST(discard_punches_a_hole_in_the_file)
{
	zeroing(FILE_URING, VIRTIO_BLK_T_DISCARD, 0);
	zeroing(FILE_SYNC, VIRTIO_BLK_T_DISCARD, 0);
}

VT_TEST(write_zeroes_reads_back_zeroes_with_and_without_unmap)
{
	for (enum backing b = RAM; b <= FILE_SYNC; b++) {
		zeroing(b, VIRTIO_BLK_T_WRITE_ZEROES, 0);
		zeroing(b, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
	}
}

VT_TEST(writethrough_mode_still_reads_back_what_was_written)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { 0 };

	if (disk_open(&d, FILE_URING) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	uint8_t off = 0;
	CHECK_EQ(vt_blk_config_write(d.blk, offsetof(struct virtio_blk_config, writeback), &off, 1),
		 0);
	check_round_trip(&g, d.fd, 99);
	zeroing(FILE_URING, VIRTIO_BLK_T_WRITE_ZEROES, 0);
	rig_destroy(&g);
	disk_close(&d);
}

/* ---------------------------------------------------------------- many in flight */

#define DEPTH 64

/*
 * DEPTH writes of mixed sizes posted at once, then DEPTH reads: all are taken in one poll, the
 * data comes back byte for byte whatever order the kernel finishes in, and with IN_ORDER the used
 * entries come back in exactly the order the requests were posted.
 */
static void many_in_flight(enum backing b, uint64_t ring_features)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { .features = ring_features, .qsize = 256 };

	if (disk_open(&d, b) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	static struct blk_req w[DEPTH], r[DEPTH];
	uint8_t *out[DEPTH], *in[DEPTH];
	size_t len[DEPTH];
	uint64_t state = 42;
	for (unsigned int i = 0; i < DEPTH; i++) {
		/* Mostly 4 KiB, some up to 128 KiB, each in its own 128 KiB stripe. */
		uint64_t x = vt_test_rand(&state);
		len[i] = (x & 7) == 0 ? ((x >> 8) % 32 + 1) * 4096 : 4096;
		out[i] = rig_alloc(&g, len[i], 4096, 0);
		in[i] = rig_alloc(&g, len[i], 4096, 0x33);
		REQUIRE(out[i] && in[i]);
		fill_random(out[i], len[i], x);
		req_simple(&g, &w[i], VIRTIO_BLK_T_OUT, (uint64_t)i * 256, out[i], len[i]);
		req_simple(&g, &r[i], VIRTIO_BLK_T_IN, (uint64_t)i * 256, in[i], len[i]);
	}

	for (int pass = 0; pass < 2; pass++) {
		struct blk_req *set = pass ? r : w;
		unsigned int base = g.collected;
		for (unsigned int i = 0; i < DEPTH; i++)
			REQUIRE(rig_post(&g, &set[i]) == 0);
		vt_vq_drv_kick_prepare(g.drv);
		bool notify;
		int ret = vt_blk_queue_poll(g.q, &notify);
		REQUIRE(ret >= 0);
		/*
		 * One poll takes every available request. Counted where a request is taken, not
		 * as in flight plus completed: under IN_ORDER a request the kernel finished early
		 * is both until the older ones ahead of it are done.
		 */
		struct vt_blk_queue_stats st;
		vt_blk_queue_stats(g.q, &st);
		CHECK_EQ(pass ? st.reads : st.writes, DEPTH);
		REQUIRE(rig_run(&g, DEPTH - (g.collected - base)) == 0);
		unsigned int out_of_order = 0;
		for (unsigned int i = 0; i < DEPTH; i++) {
			CHECK(set[i].done);
			CHECK_EQ(*set[i].status, VIRTIO_BLK_S_OK);
			CHECK_EQ(set[i].used_len, pass ? len[i] + 1 : 1);
			out_of_order += set[i].seq != base + i;
		}
		if (ring_features & F(IN_ORDER))
			CHECK_EQ(out_of_order, 0);
		else if (getenv("VT_BLK_VERBOSE"))
			fprintf(stderr, "  %s: %u of %u completed out of order\n", backing_names[b],
				out_of_order, DEPTH);
	}
	for (unsigned int i = 0; i < DEPTH; i++)
		CHECK(memcmp(out[i], in[i], len[i]) == 0);
	rig_destroy(&g);
	disk_close(&d);
}

VT_TEST(sixty_four_requests_in_flight_through_io_uring_all_come_back_right)
{
	many_in_flight(FILE_URING, 0);
	many_in_flight(FILE_DIRECT, F(RING_PACKED));
}

VT_TEST(in_order_returns_requests_in_the_order_they_were_posted)
{
	many_in_flight(FILE_DIRECT, F(IN_ORDER));
	many_in_flight(FILE_URING, F(IN_ORDER) | F(RING_PACKED));
	many_in_flight(RAM, F(IN_ORDER));
}

/*
 * A FLUSH behind 4 MiB of dirty page cache takes the kernel a while; the reads posted after it
 * are served from the page cache at once. Without IN_ORDER they overtake it (when the kernel
 * allows: reported, not required); with IN_ORDER the used entries still come back in the order
 * the requests were posted, and the data is right either way.
 */
static unsigned int flush_then_reads(uint64_t ring_features)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { .features = ring_features, .qsize = 128 };
	unsigned int out_of_order = 0;

	if (disk_open(&d, FILE_URING) != 0)
		return 0;
	if (rig_init(&g, d.blk, &o) < 0) {
		VT_FAIL_AT("rig");
		return 0;
	}
	uint8_t *big = rig_alloc(&g, 4u << 20, 4096, 0);
	fill_random(big, 4u << 20, 8);
	CHECK_EQ(rig_rw(&g, VIRTIO_BLK_T_OUT, 0, big, 4u << 20, NULL), VIRTIO_BLK_S_OK);
	static struct blk_req r[32];
	uint8_t *in = rig_alloc(&g, 31 * 4096, 4096, 0);
	unsigned int base = g.collected;
	req_simple(&g, &r[0], VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
	for (unsigned int i = 1; i < 32; i++)
		req_simple(&g, &r[i], VIRTIO_BLK_T_IN, (uint64_t)i * 64, in + (i - 1) * 4096, 4096);
	for (unsigned int i = 0; i < 32; i++)
		CHECK_EQ(rig_post(&g, &r[i]), 0);
	CHECK_EQ(rig_run(&g, 32), 0);
	for (unsigned int i = 0; i < 32; i++) {
		CHECK(r[i].done && *r[i].status == VIRTIO_BLK_S_OK);
		out_of_order += r[i].seq != base + i;
		if (i)
			CHECK(memcmp(in + (i - 1) * 4096, big + (size_t)i * 64 * SECTOR, 4096) ==
			      0);
	}
	rig_destroy(&g);
	disk_close(&d);
	return out_of_order;
}

VT_TEST(requests_that_finish_early_overtake_a_slow_flush_unless_in_order)
{
	if (flush_then_reads(0) == 0)
		fprintf(stderr,
			"  note: the kernel finished the flush first; no overtaking seen\n");
	CHECK_EQ(flush_then_reads(F(IN_ORDER)), 0);
	CHECK_EQ(flush_then_reads(F(IN_ORDER) | F(RING_PACKED)), 0);
}

VT_TEST(drain_waits_for_every_submitted_request)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { 0 };

	if (disk_open(&d, FILE_URING) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	static struct blk_req w[32];
	for (unsigned int i = 0; i < 32; i++) {
		uint8_t *p = rig_alloc(&g, 65536, 4096, (uint8_t)i);
		req_simple(&g, &w[i], VIRTIO_BLK_T_OUT, (uint64_t)i * 128, p, 65536);
		REQUIRE(rig_post(&g, &w[i]) == 0);
	}
	vt_vq_drv_kick_prepare(g.drv);
	bool notify;
	REQUIRE(vt_blk_queue_poll(g.q, &notify) >= 0);
	CHECK_EQ(vt_blk_queue_drain(g.q, 10000, &notify), 0);
	CHECK_EQ(vt_vq_dev_in_flight(g.dev), 0);
	CHECK_EQ(rig_collect(&g), 32);
	struct vt_blk_queue_stats st;
	vt_blk_queue_stats(g.q, &st);
	CHECK_EQ(st.in_flight, 0);
	CHECK_EQ(st.requests, 32);
	for (unsigned int i = 0; i < 32; i++) {
		uint8_t back[512];
		CHECK_EQ(pread(d.fd, back, sizeof(back), (off_t)i * 65536), 512);
		CHECK(all_bytes(back, sizeof(back), (uint8_t)i));
	}
	rig_destroy(&g);
	disk_close(&d);
}

/* ---------------------------------------------------------------- chains */

VT_TEST(a_chain_of_66_descriptors_is_served)
{
	for (enum backing b = RAM; b <= FILE_URING; b++) {
		struct disk d;
		struct rig g;
		struct rig_opts o = { 0 };
		if (disk_open(&d, b) != 0)
			return;
		REQUIRE(rig_init(&g, d.blk, &o) == 0);
		/* 64 data segments of 512 bytes each, scattered: more iovecs than a slot starts
		 * with. */
		uint8_t *out = rig_alloc(&g, 64 * 1024, 4096, 0);
		uint8_t *in = rig_alloc(&g, 64 * 1024, 4096, 0);
		fill_random(out, 64 * 1024, 5);
		struct blk_req w, r;
		req_simple(&g, &w, VIRTIO_BLK_T_OUT, 100, NULL, 0);
		req_simple(&g, &r, VIRTIO_BLK_T_IN, 100, NULL, 0);
		w.nr = r.nr = 1;
		w.nw = r.nw = 0;
		for (unsigned int i = 0; i < 64; i++) {
			w.sg[w.nr++] = (struct iovec){ out + i * 1024, 512 };
			r.sg[r.nr + r.nw++] = (struct iovec){ in + i * 1024, 512 };
		}
		w.sg[w.nr + w.nw++] = (struct iovec){ w.status, 1 };
		r.sg[r.nr + r.nw++] = (struct iovec){ r.status, 1 };
		CHECK_EQ(rig_do(&g, &w), VIRTIO_BLK_S_OK);
		CHECK_EQ(rig_do(&g, &r), VIRTIO_BLK_S_OK);
		CHECK_EQ(r.used_len, 64 * 512 + 1);
		for (unsigned int i = 0; i < 64; i++)
			CHECK(memcmp(out + i * 1024, in + i * 1024, 512) == 0);
		rig_destroy(&g);
		disk_close(&d);
	}
}

/* ---------------------------------------------------------------- notifications */

static void notification_cycle(uint64_t ring_features)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { .features = ring_features };

	if (disk_open(&d, RAM) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	for (unsigned int round = 0; round < 3; round++) {
		struct blk_req r;
		req_simple(&g, &r, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
		REQUIRE(rig_post(&g, &r) == 0);
		/* The device went idle with notifications on: the driver must kick. */
		CHECK(vt_vq_drv_kick_prepare(g.drv));
		/* The driver wants used-buffer notifications: the poll says so. */
		vt_vq_drv_enable_cb(g.drv);
		bool notify = false;
		CHECK_EQ(vt_blk_queue_poll(g.q, &notify), 1);
		CHECK(notify);
		CHECK_EQ(rig_collect(&g), 1);
		/* Nothing new: nothing to say. */
		CHECK_EQ(vt_blk_queue_poll(g.q, &notify), 0);
		CHECK(!notify);
	}
	rig_destroy(&g);
	disk_close(&d);
}

VT_TEST(notifications_are_back_on_whenever_the_queue_goes_idle)
{
	notification_cycle(0);
	notification_cycle(F(EVENT_IDX));
	notification_cycle(F(RING_PACKED));
	notification_cycle(F(RING_PACKED) | F(EVENT_IDX));
}

/* ---------------------------------------------------------------- address-space misses */

VT_TEST(an_iotlb_miss_parks_the_queue_until_the_translation_arrives)
{
	struct disk d;
	struct rig g;
	struct rig_opts o = { .iotlb = true };

	if (disk_open(&d, RAM) != 0)
		return;
	REQUIRE(rig_init(&g, d.blk, &o) == 0);
	uint8_t *p = rig_alloc(&g, 4096, 4096, 0x77);
	struct blk_req r;
	req_simple(&g, &r, VIRTIO_BLK_T_OUT, 0, p, 4096);
	REQUIRE(rig_post(&g, &r) == 0);
	vt_vq_drv_kick_prepare(g.drv);
	bool notify;
	CHECK_EQ(vt_blk_queue_poll(g.q, &notify), -EFAULT);
	struct vt_as_fault fault = vt_vq_dev_fault(g.dev);
	CHECK(fault.addr >= RIG_GPA && fault.addr < RIG_GPA + RIG_SHM_SIZE);
	CHECK_EQ(vt_blk_queue_poll(g.q, &notify), -EFAULT);
	/* The driver maps its memory (as a vhost-user IOTLB UPDATE would): the request runs. */
	REQUIRE(vt_iotlb_update(g.iotlb, g.region->gpa, g.region->size, g.region->hva,
				VT_IOTLB_PERM_RW) == 0);
	CHECK_EQ(vt_blk_queue_poll(g.q, &notify), 1);
	CHECK_EQ(rig_collect(&g), 1);
	CHECK_EQ(*r.status, VIRTIO_BLK_S_OK);
	CHECK(sectors_are(&g, 0, 8, 0x77));
	rig_destroy(&g);
	disk_close(&d);
}
