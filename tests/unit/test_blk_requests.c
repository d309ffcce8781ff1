/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk request rules (virtio 1.3 section 5.2.6): what the device answers to requests that
 * are out of range, badly sized, for a read-only disk, of unknown type, laid out across
 * descriptors in unusual ways, or malformed; the DISCARD and WRITE_ZEROES limits; the features
 * and configuration space; and the parameters vt_blk_new refuses.
 */
#include "test_blk_rig.c"

#define DISK_SECTORS 2048u /* 1 MiB */

struct setup {
	struct vt_blk *blk;
	int fd; /* file backing, or -1 */
	struct log_count log;
	struct vt_log hook;
	struct rig g;
};

/* A RAM disk (or a file one when @file) and a rig; false after reporting a failure. */
static bool setup(struct setup *s, bool file, bool read_only, const struct rig_opts *o)
{
	struct rig_opts none = { 0 };

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->hook = rig_log_hook(&s->log);
	int ret;
	if (file) {
		char path[256];
		s->fd = -ENOENT;
		for (unsigned int d = 0; d < 3 && s->fd < 0; d++)
			s->fd = temp_backing(test_disk_dirs[d], DISK_SECTORS * SECTOR, path,
					     sizeof(path));
		if (s->fd < 0) {
			VT_FAIL_AT("temp file: %s", strerror(-s->fd));
			return false;
		}
		/* Known contents, so that "touches nothing" can be checked in the file. */
		uint8_t *fill = malloc(DISK_SECTORS * SECTOR);
		if (!fill)
			return false;
		memset(fill, 0xc3, DISK_SECTORS * SECTOR);
		ret = pwrite(s->fd, fill, DISK_SECTORS * SECTOR, 0) == DISK_SECTORS * SECTOR ? 0
											     : -EIO;
		free(fill);
		struct vt_blk_params p = { .path = path, .read_only = read_only, .log = &s->hook };
		if (ret == 0)
			ret = vt_blk_new(&p, &s->blk);
		unlink(path);
	} else {
		struct vt_blk_params p = { .size = DISK_SECTORS * SECTOR,
					   .read_only = read_only,
					   .log = &s->hook };
		ret = vt_blk_new(&p, &s->blk);
	}
	if (ret == 0)
		ret = rig_init(&s->g, s->blk, o ? o : &none);
	if (ret < 0) {
		VT_FAIL_AT("setup: %s", strerror(-ret));
		return false;
	}
	return true;
}

static void teardown(struct setup *s)
{
	rig_destroy(&s->g);
	vt_blk_free(s->blk);
	if (s->fd >= 0)
		close(s->fd);
}

static bool file_is_untouched(const struct setup *s)
{
	uint8_t *back = malloc(DISK_SECTORS * SECTOR);
	bool ok = back && pread(s->fd, back, DISK_SECTORS * SECTOR, 0) == DISK_SECTORS * SECTOR &&
		  all_bytes(back, DISK_SECTORS * SECTOR, 0xc3);
	free(back);
	return ok;
}

/* ---------------------------------------------------------------- range and size */

VT_TEST(a_write_past_the_capacity_is_ioerr_and_writes_nothing)
{
	struct setup s;

	if (!setup(&s, true, false, NULL))
		return;
	struct rig *g = &s.g;
	uint8_t *p = rig_alloc(g, 4 * SECTOR, 512, 0x11);
	uint32_t used = 0;
	/* Last sector plus one: the first sector is inside, the request is not. */
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, DISK_SECTORS - 1, p, 2 * SECTOR, &used),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(used, 1);
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, DISK_SECTORS, p, SECTOR, NULL), VIRTIO_BLK_S_IOERR);
	/* A sector number whose byte offset wraps. */
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, p, 4 * SECTOR, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, 1ULL << 55, p, SECTOR, NULL), VIRTIO_BLK_S_IOERR);
	CHECK(file_is_untouched(&s));
	/* The last sector itself is fine. */
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, DISK_SECTORS - 1, p, SECTOR, NULL), VIRTIO_BLK_S_OK);
	struct vt_blk_queue_stats st;
	vt_blk_queue_stats(g->q, &st);
	CHECK_EQ(st.io_errors, 4);
	CHECK_EQ(st.malformed, 4);
	CHECK_EQ(st.bytes_written, SECTOR);
	/* Reported once, counted always. */
	CHECK_EQ(atomic_load(&s.log.warnings), 1);
	teardown(&s);
}

VT_TEST(a_read_past_the_capacity_is_ioerr_and_fills_nothing)
{
	struct setup s;

	if (!setup(&s, false, false, NULL))
		return;
	uint8_t *p = rig_alloc(&s.g, 2 * SECTOR, 512, 0x5c);
	uint32_t used = 0;
	CHECK_EQ(rig_rw(&s.g, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, p, 2 * SECTOR, &used),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(used, 1);
	CHECK(all_bytes(p, 2 * SECTOR, 0x5c));
	teardown(&s);
}

VT_TEST(data_not_a_multiple_of_512_bytes_is_ioerr)
{
	struct setup s;

	if (!setup(&s, true, false, NULL))
		return;
	uint8_t *p = rig_alloc(&s.g, 1024, 512, 0x22);
	CHECK_EQ(rig_rw(&s.g, VIRTIO_BLK_T_OUT, 0, p, 1000, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(rig_rw(&s.g, VIRTIO_BLK_T_OUT, 0, p, 511, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(rig_rw(&s.g, VIRTIO_BLK_T_IN, 0, p, 513, NULL), VIRTIO_BLK_S_IOERR);
	CHECK(all_bytes(p, 1024, 0x22));
	CHECK(file_is_untouched(&s));
	teardown(&s);
}

/* ---------------------------------------------------------------- read-only, types */

VT_TEST(a_read_only_disk_fails_every_write_with_ioerr)
{
	struct setup s;

	if (!setup(&s, true, true, NULL))
		return;
	struct rig *g = &s.g;
	uint64_t f = vt_blk_offered_features(s.blk);
	CHECK(f & BLKF(RO));
	CHECK(!(f & BLKF(DISCARD)) && !(f & BLKF(WRITE_ZEROES)) && !(f & BLKF(CONFIG_WCE)));
	uint8_t *p = rig_alloc(g, SECTOR, 512, 0x11);
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_OUT, 0, p, SECTOR, NULL), VIRTIO_BLK_S_IOERR);
	static const uint64_t sector[] = { 0 };
	static const uint32_t sectors[] = { 8 };
	struct blk_req r;
	req_simple(g, &r, VIRTIO_BLK_T_DISCARD, 0, rig_segments(g, 1, sector, sectors, 0), 16);
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	req_simple(g, &r, VIRTIO_BLK_T_WRITE_ZEROES, 0, rig_segments(g, 1, sector, sectors, 0), 16);
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	CHECK(file_is_untouched(&s));
	/* Reads and flushes work. */
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_IN, 0, p, SECTOR, NULL), VIRTIO_BLK_S_OK);
	CHECK(all_bytes(p, SECTOR, 0xc3));
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL), VIRTIO_BLK_S_OK);
	struct vt_blk_queue_stats st;
	vt_blk_queue_stats(g->q, &st);
	CHECK_EQ(st.io_errors, 3);
	CHECK_EQ(st.malformed, 0); /* the driver may try; it is not malformed */
	teardown(&s);
}

VT_TEST(an_unknown_request_type_is_unsupp)
{
	struct setup s;

	if (!setup(&s, false, false, NULL))
		return;
	static const uint32_t types[] = { 2,  3,	   5,	      VIRTIO_BLK_T_GET_LIFETIME,
					  16, 0x80000000u, UINT32_MAX };
	for (unsigned int i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		uint32_t used = 0;
		CHECK_EQ(rig_rw(&s.g, types[i], 0, NULL, 0, &used), VIRTIO_BLK_S_UNSUPP);
		CHECK_EQ(used, 1);
	}
	/* With data of either direction too. */
	uint8_t *p = rig_alloc(&s.g, SECTOR, 512, 0x44);
	CHECK_EQ(rig_rw(&s.g, 99, 0, p, SECTOR, NULL), VIRTIO_BLK_S_UNSUPP);
	struct vt_blk_queue_stats st;
	vt_blk_queue_stats(s.g.q, &st);
	CHECK_EQ(st.unsupported, 8);
	CHECK_EQ(atomic_load(&s.log.warnings) + atomic_load(&s.log.errors), 0);
	teardown(&s);
}

VT_TEST(discard_and_write_zeroes_not_negotiated_are_unsupp)
{
	struct setup s;
	struct rig_opts o = { .blk_features = BLKF(FLUSH) | BLKF(BLK_SIZE) };

	if (!setup(&s, false, false, &o))
		return;
	static const uint64_t sector[] = { 0 };
	static const uint32_t sectors[] = { 8 };
	struct blk_req r;
	req_simple(&s.g, &r, VIRTIO_BLK_T_DISCARD, 0, rig_segments(&s.g, 1, sector, sectors, 0),
		   16);
	CHECK_EQ(rig_do(&s.g, &r), VIRTIO_BLK_S_UNSUPP);
	req_simple(&s.g, &r, VIRTIO_BLK_T_WRITE_ZEROES, 0,
		   rig_segments(&s.g, 1, sector, sectors, 0), 16);
	CHECK_EQ(rig_do(&s.g, &r), VIRTIO_BLK_S_UNSUPP);
	teardown(&s);
}

/* ---------------------------------------------------------------- DISCARD / WRITE_ZEROES limits */

static int extents(struct rig *g, uint32_t type, unsigned int n, const uint64_t *sector,
		   const uint32_t *sectors, uint32_t flags)
{
	struct blk_req r;
	req_simple(g, &r, type, 0, rig_segments(g, n, sector, sectors, flags), n * 16u);
	return rig_do(g, &r);
}

VT_TEST(discard_and_write_zeroes_beyond_the_advertised_limits_are_refused)
{
	struct setup s;

	if (!setup(&s, true, false, NULL))
		return;
	struct rig *g = &s.g;
	struct virtio_blk_config c;
	vt_blk_config(s.blk, &c);
	CHECK_EQ(vt_le32_to_cpu(c.max_discard_seg), VT_BLK_MAX_DISCARD_SEG);
	CHECK_EQ(vt_le32_to_cpu(c.max_write_zeroes_seg), VT_BLK_MAX_DISCARD_SEG);
	CHECK_EQ(vt_le32_to_cpu(c.max_discard_sectors), VT_BLK_MAX_DISCARD_SECTORS);
	CHECK_EQ(vt_le32_to_cpu(c.discard_sector_alignment), 1);
	CHECK_EQ(c.write_zeroes_may_unmap, 1);

	uint64_t sector[VT_BLK_MAX_DISCARD_SEG + 1];
	uint32_t sectors[VT_BLK_MAX_DISCARD_SEG + 1];
	for (unsigned int i = 0; i <= VT_BLK_MAX_DISCARD_SEG; i++) {
		sector[i] = i * 8;
		sectors[i] = 8;
	}
	for (int t = 0; t < 2; t++) {
		uint32_t type = t ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD;
		/* One segment more than max_*_seg. */
		CHECK_EQ(extents(g, type, VT_BLK_MAX_DISCARD_SEG + 1, sector, sectors, 0),
			 VIRTIO_BLK_S_IOERR);
		/* A segment longer than max_*_sectors. */
		uint32_t too_long[] = { VT_BLK_MAX_DISCARD_SECTORS + 1 };
		CHECK_EQ(extents(g, type, 1, sector, too_long, 0), VIRTIO_BLK_S_IOERR);
		/* A segment past the capacity (the second one), or wrapping. */
		uint64_t past[] = { 0, DISK_SECTORS - 4 };
		CHECK_EQ(extents(g, type, 2, past, sectors, 0), VIRTIO_BLK_S_IOERR);
		uint64_t wrap[] = { UINT64_MAX - 3 };
		CHECK_EQ(extents(g, type, 1, wrap, sectors, 0), VIRTIO_BLK_S_IOERR);
		/* An unknown flag is UNSUPP (5.2.6.2). */
		CHECK_EQ(extents(g, type, 1, sector, sectors, 2), VIRTIO_BLK_S_UNSUPP);
		/* A payload that is not whole segments, or empty. */
		struct blk_req r;
		req_simple(g, &r, type, 0, rig_segments(g, 1, sector, sectors, 0), 12);
		CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
		req_simple(g, &r, type, 0, NULL, 0);
		CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	}
	/* unmap is for WRITE_ZEROES only: on a discard it is UNSUPP (5.2.6.2). */
	CHECK_EQ(extents(g, VIRTIO_BLK_T_DISCARD, 1, sector, sectors,
			 VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP),
		 VIRTIO_BLK_S_UNSUPP);
	CHECK(file_is_untouched(&s));
	/* Exactly at the limits: accepted. */
	CHECK_EQ(extents(g, VIRTIO_BLK_T_DISCARD, VT_BLK_MAX_DISCARD_SEG, sector, sectors, 0),
		 VIRTIO_BLK_S_OK);
	teardown(&s);
}

/* ---------------------------------------------------------------- layouts */

/*
 * The header, data and status may be cut anywhere (2.7.4): the header over three descriptors,
 * the last of them carrying the first data bytes, and data and status sharing the last one.
 */
VT_TEST(header_data_and_status_may_be_split_or_shared_anywhere)
{
	struct setup s;

	if (!setup(&s, true, false, NULL))
		return;
	struct rig *g = &s.g;
	const size_t len = 3 * SECTOR;

	/* OUT: [hdr 0..3) [hdr 3..10) [hdr 10..16 + data 0..300) [data 300..1536) | [status] */
	uint8_t *wbuf = rig_alloc(g, 16 + len, 0, 0);
	struct virtio_blk_outhdr h = { .type = vt_cpu_to_le32(VIRTIO_BLK_T_OUT),
				       .sector = vt_cpu_to_le64(5) };
	memcpy(wbuf, &h, 16);
	fill_random(wbuf + 16, len, 31);
	struct blk_req w = { 0 };
	w.sg[0] = (struct iovec){ wbuf, 3 };
	w.sg[1] = (struct iovec){ wbuf + 3, 7 };
	w.sg[2] = (struct iovec){ wbuf + 10, 6 + 300 };
	w.sg[3] = (struct iovec){ wbuf + 316, len - 300 };
	w.status = rig_alloc(g, 1, 1, 0xee);
	w.sg[4] = (struct iovec){ w.status, 1 };
	w.nr = 4;
	w.nw = 1;
	CHECK_EQ(rig_do(g, &w), VIRTIO_BLK_S_OK);

	/* IN: [hdr 0..16) | [data 0..700) [data 700..1536 + status] */
	struct blk_req r = { 0 };
	struct virtio_blk_outhdr *rh = rig_header(g, VIRTIO_BLK_T_IN, 5);
	uint8_t *rbuf = rig_alloc(g, len + 1, 0, 0x99);
	r.sg[0] = (struct iovec){ rh, 16 };
	r.sg[1] = (struct iovec){ rbuf, 700 };
	r.sg[2] = (struct iovec){ rbuf + 700, len - 700 + 1 };
	r.status = rbuf + len;
	r.nr = 1;
	r.nw = 2;
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_OK);
	CHECK_EQ(r.used_len, len + 1);
	CHECK(memcmp(rbuf, wbuf + 16, len) == 0);

	/* Everything in one descriptor per direction: header + data, data + status. */
	struct blk_req one = { 0 };
	uint8_t *hb = rig_alloc(g, 16, 0, 0);
	struct virtio_blk_outhdr h2 = { .type = vt_cpu_to_le32(VIRTIO_BLK_T_IN),
					.sector = vt_cpu_to_le64(5) };
	memcpy(hb, &h2, 16);
	uint8_t *rb2 = rig_alloc(g, len + 1, 0, 0x99);
	one.sg[0] = (struct iovec){ hb, 16 };
	one.sg[1] = (struct iovec){ rb2, len + 1 };
	one.status = rb2 + len;
	one.nr = one.nw = 1;
	CHECK_EQ(rig_do(g, &one), VIRTIO_BLK_S_OK);
	CHECK(memcmp(rb2, wbuf + 16, len) == 0);

	uint8_t back[3 * SECTOR];
	CHECK_EQ(pread(s.fd, back, len, 5 * SECTOR), (long long)len);
	CHECK(memcmp(back, wbuf + 16, len) == 0);
	CHECK_EQ(atomic_load(&s.log.warnings) + atomic_load(&s.log.errors), 0);
	teardown(&s);
}

/* ---------------------------------------------------------------- malformed chains */

VT_TEST(a_malformed_chain_with_a_status_byte_completes_with_ioerr_touching_nothing)
{
	struct setup s;

	if (!setup(&s, true, false, NULL))
		return;
	struct rig *g = &s.g;
	uint8_t *data = rig_alloc(g, SECTOR, 512, 0x66);
	struct blk_req r;

	/* A header of 8 bytes. */
	req_simple(g, &r, VIRTIO_BLK_T_OUT, 0, data, SECTOR);
	r.sg[0].iov_len = 8;
	r.nr = 1; /* header only, no data */
	r.sg[1] = (struct iovec){ r.status, 1 };
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(r.used_len, 1);

	/* IN whose data is device-readable. */
	req_simple(g, &r, VIRTIO_BLK_T_OUT, 0, data, SECTOR);
	((struct virtio_blk_outhdr *)r.sg[0].iov_base)->type = vt_cpu_to_le32(VIRTIO_BLK_T_IN);
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	CHECK(all_bytes(data, SECTOR, 0x66));

	/* OUT whose data is device-writable: not written to the disk, nor filled. */
	req_simple(g, &r, VIRTIO_BLK_T_IN, 0, data, SECTOR);
	((struct virtio_blk_outhdr *)r.sg[0].iov_base)->type = vt_cpu_to_le32(VIRTIO_BLK_T_OUT);
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	CHECK(all_bytes(data, SECTOR, 0x66));

	/* FLUSH or GET_ID with data the device should read. */
	req_simple(g, &r, VIRTIO_BLK_T_FLUSH, 0, data, SECTOR);
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);
	req_simple(g, &r, VIRTIO_BLK_T_GET_ID, 0, NULL, 0);
	r.sg[1] = (struct iovec){ data, 20 };
	r.sg[2] = (struct iovec){ r.status, 1 };
	r.nr = 2;
	r.nw = 1;
	CHECK_EQ(rig_do(g, &r), VIRTIO_BLK_S_IOERR);

	CHECK(file_is_untouched(&s));
	struct vt_blk_queue_stats st;
	vt_blk_queue_stats(g->q, &st);
	CHECK_EQ(st.malformed, 5);
	CHECK_EQ(st.io_errors, 5);
	CHECK_EQ(atomic_load(&s.log.warnings), 1);
	CHECK_EQ(atomic_load(&s.log.errors), 0);
	/* The queue goes on. */
	CHECK_EQ(rig_rw(g, VIRTIO_BLK_T_IN, 0, data, SECTOR, NULL), VIRTIO_BLK_S_OK);
	teardown(&s);
}

VT_TEST(a_chain_without_a_writable_byte_breaks_the_queue)
{
	struct setup s;

	if (!setup(&s, false, false, NULL))
		return;
	struct rig *g = &s.g;
	struct blk_req r;
	req_simple(g, &r, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
	r.nw = 0; /* header only */
	CHECK_EQ(rig_post(g, &r), 0);
	CHECK_EQ(rig_run(g, 1), -EPROTO);
	bool notify;
	CHECK_EQ(vt_blk_queue_poll(g->q, &notify), -EPROTO);
	CHECK_EQ(atomic_load(&s.log.errors), 1);
	CHECK(!r.done);
	teardown(&s);
}

/* ---------------------------------------------------------------- features and config */

VT_TEST(features_follow_the_disk)
{
	struct vt_blk *blk;
	struct vt_blk_params p = { .size = 1 << 20 };
	uint64_t always =
	    BLKF(SIZE_MAX) | BLKF(SEG_MAX) | BLKF(BLK_SIZE) | BLKF(FLUSH) | BLKF(TOPOLOGY);

	REQUIRE(vt_blk_new(&p, &blk) == 0);
	CHECK_EQ(vt_blk_offered_features(blk),
		 always | BLKF(DISCARD) | BLKF(WRITE_ZEROES) | BLKF(CONFIG_WCE));
	vt_blk_free(blk);
	p.num_queues = 4;
	p.read_only = true;
	REQUIRE(vt_blk_new(&p, &blk) == 0);
	CHECK_EQ(vt_blk_offered_features(blk), always | BLKF(MQ) | BLKF(RO));
	CHECK_EQ(vt_blk_num_queues(blk), 4);
	vt_blk_free(blk);
}

VT_TEST(config_space_describes_the_disk_in_little_endian)
{
	struct vt_blk *blk;
	struct vt_blk_params p = { .size = 3 << 20, .queue_size = 64, .num_queues = 3 };

	REQUIRE(vt_blk_new(&p, &blk) == 0);
	struct virtio_blk_config c;
	memset(&c, 0xff, sizeof(c));
	vt_blk_config(blk, &c);
	CHECK_EQ(vt_le64_to_cpu(c.capacity), (3 << 20) / 512);
	CHECK_EQ(vt_blk_capacity(blk), (3 << 20) / 512);
	CHECK_EQ(vt_le32_to_cpu(c.seg_max), 62);
	CHECK_EQ(vt_le32_to_cpu(c.size_max), VT_BLK_SIZE_MAX);
	CHECK_EQ(vt_le32_to_cpu(c.blk_size), 512);
	CHECK_EQ(vt_le16_to_cpu(c.num_queues), 3);
	CHECK_EQ(vt_le16_to_cpu(c.topology.min_io_size), 1);
	CHECK_EQ(c.writeback, 1);
	CHECK_EQ(c.unused0, 0);
	CHECK(all_bytes(c.unused1, sizeof(c.unused1), 0));
	CHECK_EQ(vt_le32_to_cpu(c.max_secure_erase_sectors), 0);
	CHECK(all_bytes(&c.zoned, sizeof(c.zoned), 0));
	vt_blk_free(blk);
}

VT_TEST(the_driver_may_write_writeback_only_with_config_wce)
{
	struct vt_blk *blk;
	struct vt_blk_params p = { .size = 1 << 20 };
	const uint32_t at = offsetof(struct virtio_blk_config, writeback);
	struct virtio_blk_config c;
	uint8_t zero = 0, two = 2, one = 1;

	REQUIRE(vt_blk_new(&p, &blk) == 0);
	vt_blk_features_ok(blk, BLKF(FLUSH));
	CHECK_EQ(vt_blk_config_write(blk, at, &zero, 1), -EPERM);
	vt_blk_features_ok(blk, BLKF(FLUSH) | BLKF(CONFIG_WCE));
	CHECK_EQ(vt_blk_config_write(blk, at, &zero, 1), 0);
	vt_blk_config(blk, &c);
	CHECK_EQ(c.writeback, 0);
	CHECK_EQ(vt_blk_config_write(blk, at, &two, 1), -EINVAL);
	CHECK_EQ(vt_blk_config_write(blk, at, &one, 1), 0);
	vt_blk_config(blk, &c);
	CHECK_EQ(c.writeback, 1);
	/* Every other field is read-only. */
	uint32_t v = 0;
	CHECK_EQ(vt_blk_config_write(blk, 0, &v, 4), -EPERM);
	CHECK_EQ(vt_blk_config_write(blk, at - 1, &v, 2), -EPERM);
	/* CONFIG_WCE without FLUSH: the driver cannot flush, so the cache starts writethrough. */
	vt_blk_features_ok(blk, BLKF(CONFIG_WCE));
	vt_blk_config(blk, &c);
	CHECK_EQ(c.writeback, 0);
	vt_blk_free(blk);
}

VT_TEST(bad_parameters_are_refused)
{
	struct vt_blk *blk = (struct vt_blk *)1;
	struct log_count lc = { 0 };
	struct vt_log hook = rig_log_hook(&lc);
	const struct vt_blk_params bad[] = {
		{ .size = 0 },
		{ .size = 1000 },
		{ .size = 1 << 20, .num_queues = VT_BLK_MAX_QUEUES + 1 },
		{ .size = 1 << 20, .queue_size = 2 },
		{ .size = 1 << 20, .queue_size = VT_BLK_MAX_QUEUE_SIZE + 1 },
		{ .size = 1 << 20, .serial = "twenty-one-characters" },
		{ .size = 1 << 20, .direct = true },
		{ .path = "/tmp", .read_only = true, .log = &hook },
		{ .path = "/dev/null", .read_only = true, .log = &hook },
		{ .path = "/dev/null", .size = 512 },
	};
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ(vt_blk_new(&bad[i], &blk), -EINVAL);
		CHECK(blk == NULL);
	}
	struct vt_blk_params missing = { .path = "/nonexistent/virtue-disk", .log = &hook };
	CHECK_EQ(vt_blk_new(&missing, &blk), -ENOENT);
}
