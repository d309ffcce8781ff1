/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net driver against a net "loopback device" in the same process, over real rings:
 * the driver's halves post into shared memory (direct DMA), the test's device halves (vt_vq_dev,
 * through a memory table) take each transmitted frame and deliver it into receive buffers, as one
 * buffer or, with MRG_RXBUF, as many as it needs, writing num_buffers in the first. Every byte
 * sent is compared with every byte received, for split and packed rings. The same device lies on
 * request (num_buffers larger than the buffers it used, or 0; a used length past the buffer; one
 * shorter than the header): the frame is dropped and counted, the next one still arrives, and the
 * caller's buffer is never written past what the device really wrote. The control queue's MQ
 * command, the configuration decoding and the engines' limits have their own cases.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/dma.h>
#include <virtue/memtable.h>
#include <virtue/net_driver.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_ring.h>
#include <virtue/virtqueue.h>

#include "harness.h"

#define F(bit)	   VT_BIT(VIRTIO_F_##bit)
#define NET_F(bit) VT_BIT(VIRTIO_NET_F_##bit)

#define GPA	 0x100000000ull
#define SHM_SIZE (8u << 20)
#define QSIZE	 64
#define HDR	 12u
#define IOV_MAX	 8
#define POISON	 0xee

/* ---------------------------------------------------------------- the rig */

enum { RXQ, TXQ, CTRLQ, NQ };

struct rig {
	uint64_t features;
	struct vt_shm *shm;
	struct vt_memtable *table;
	struct vt_dma *dma;
	struct vt_vq_drv *drv[NQ];
	struct vt_vq_dev *dev[NQ];
	struct vt_net_info info;
	struct vt_net_txq *tx;
	struct vt_net_rxq *rx;
	struct vt_net_ctrl *ctrl;
};

static const struct vt_log quiet_log = { .max_level = VT_LOG_ERROR };

static int rig_queue(struct rig *g, unsigned int i)
{
	struct vt_vq_drv_params dp = { .num = QSIZE,
				       .features = g->features,
				       .dma = g->dma,
				       .name = "drv",
				       .log = &quiet_log };
	int rc = vt_vq_drv_new(&dp, &g->drv[i]);
	if (rc < 0)
		return rc;
	struct vt_vq_dev_params vp = {
		.num = QSIZE,
		.features = g->features,
		.as = vt_memtable_as(g->table),
		.next_avail = g->features & F(RING_PACKED) ? VT_VQ_PACKED_START : 0,
		.name = "dev",
		.log = &quiet_log,
	};
	vt_vq_drv_addrs(g->drv[i], &vp.desc_addr, &vp.driver_addr, &vp.device_addr);
	return vt_vq_dev_new(&vp, &g->dev[i]);
}

/* Both halves of rx, tx and ctrl queues, and the engines; @buf_size 0: the default. */
static int rig_init(struct rig *g, uint64_t net_features, bool packed, uint32_t buf_size)
{
	memset(g, 0, sizeof(*g));
	g->features = F(VERSION_1) | net_features | (packed ? F(RING_PACKED) : 0);
	int rc = vt_shm_new(&g->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(g->shm, SHM_SIZE, GPA, NULL);
	if (rc < 0)
		return rc;
	g->table = vt_memtable_new(NULL);
	if (!g->table)
		return -ENOMEM;
	rc = vt_memtable_add_shm(g->table, g->shm);
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = g->shm };
	if (rc == 0)
		rc = vt_dma_new(&dp, &g->dma);
	for (unsigned int i = 0; i < NQ && rc == 0; i++)
		rc = rig_queue(g, i);
	/* The device's configuration: MAC, link up, 4 pairs, MTU 1500. */
	struct virtio_net_config cfg = { .mac = { 2, 0, 0, 0, 0, 1 } };
	cfg.status = vt_cpu_to_le16(VIRTIO_NET_S_LINK_UP);
	cfg.max_virtqueue_pairs = vt_cpu_to_le16(4);
	cfg.mtu = vt_cpu_to_le16(1500);
	if (rc == 0)
		rc = vt_net_config_decode(&cfg, sizeof(cfg), g->features, &g->info);
	struct vt_net_txq_params tp = {
		.vq = g->drv[TXQ], .num = QSIZE, .shm = g->shm, .features = g->features
	};
	struct vt_net_rxq_params rp = { .vq = g->drv[RXQ],
					.num = QSIZE,
					.shm = g->shm,
					.info = &g->info,
					.log = &quiet_log,
					.buf_size = buf_size };
	struct vt_net_ctrl_params cp = { .vq = g->drv[CTRLQ], .shm = g->shm, .info = &g->info };
	if (rc == 0)
		rc = vt_net_txq_new(&tp, &g->tx);
	if (rc == 0)
		rc = vt_net_rxq_new(&rp, &g->rx);
	if (rc == 0)
		rc = vt_net_ctrl_new(&cp, &g->ctrl);
	return rc;
}

static void rig_destroy(struct rig *g)
{
	vt_net_txq_free(g->tx);
	vt_net_rxq_free(g->rx);
	vt_net_ctrl_free(g->ctrl);
	for (unsigned int i = 0; i < NQ; i++) {
		if (g->drv[i])
			while (vt_vq_drv_detach_unused(g->drv[i]))
				;
		vt_vq_dev_free(g->dev[i]);
		vt_vq_drv_free(g->drv[i]);
	}
	vt_dma_free(g->dma);
	vt_memtable_free(g->table);
	vt_shm_free(g->shm);
}

static void fill_rx(struct rig *g)
{
	CHECK(vt_net_rxq_fill(g->rx) >= 0);
	vt_net_rxq_kick(g->rx);
}

/* ---------------------------------------------------------------- the loopback device */

/* How the device lies about one frame (all zero: it tells the truth). */
struct lie {
	int num_buffers;    /* > 0: written instead of the buffers used; -1: 0 is written */
	uint32_t extra_len; /* added to the last buffer's used length */
	bool short_header;  /* the first buffer's used length is HDR - 2 */
};

/*
 * Takes the next transmitted buffer: its header (checked: zero) and frame bytes into @frame.
 * Returns the frame length, or -1.
 */
static int device_take_tx(struct rig *g, uint8_t *frame, size_t cap)
{
	struct vt_vq_chain c;
	struct iovec iov[IOV_MAX];
	if (vt_vq_dev_pop(g->dev[TXQ], &c, iov, IOV_MAX) < 0 || c.nwritable != 0)
		return -1;
	uint8_t all[VT_NET_MAX_FRAME + HDR];
	size_t off = 0;
	for (unsigned int i = 0; i < c.nreadable; i++) {
		if (off + iov[i].iov_len > sizeof(all))
			return -1;
		memcpy(all + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	vt_vq_dev_push(g->dev[TXQ], &c, 0);
	vt_vq_dev_flush(g->dev[TXQ]);
	static const uint8_t zero[HDR];
	if (off < HDR || memcmp(all, zero, HDR) != 0 || off - HDR > cap)
		return -1;
	memcpy(frame, all + HDR, off - HDR);
	return (int)(off - HDR);
}

/* Delivers @frame into receive buffers (5.1.6.4), lying as @lie says. Returns buffers used. */
static int device_deliver(struct rig *g, const uint8_t *frame, uint32_t len, const struct lie *lie)
{
	static const struct lie truth;
	if (!lie)
		lie = &truth;
	bool mrg = (g->features & NET_F(MRG_RXBUF)) != 0;
	uint8_t all[VT_NET_MAX_FRAME + HDR];
	memset(all, 0, HDR);
	memcpy(all + HDR, frame, len);
	uint32_t total = HDR + len, off = 0;
	struct vt_vq_chain chains[QSIZE];
	uint32_t written[QSIZE];
	uint8_t *first = NULL;
	unsigned int used = 0;
	while (off < total) {
		struct iovec iov[IOV_MAX];
		if (used == QSIZE || vt_vq_dev_pop(g->dev[RXQ], &chains[used], iov, IOV_MAX) < 0)
			return -1;
		struct iovec *w = &iov[chains[used].nreadable];
		uint32_t n = total - off;
		if (n > w->iov_len)
			n = (uint32_t)w->iov_len;
		if (!mrg && n < total - off)
			return -1; /* the driver posted a buffer too small for a frame */
		memcpy(w->iov_base, all + off, n);
		if (used == 0)
			first = w->iov_base;
		written[used++] = n;
		off += n;
	}
	uint16_t nb = (uint16_t)(lie->num_buffers > 0	? lie->num_buffers
				 : lie->num_buffers < 0 ? 0
							: (int)used);
	vt_le16 nb_le = vt_cpu_to_le16(nb);
	memcpy(first + offsetof(struct virtio_net_hdr, num_buffers), &nb_le, sizeof(nb_le));
	if (lie->short_header)
		written[0] = HDR - 2;
	written[used - 1] += lie->extra_len;
	for (unsigned int i = 0; i < used; i++)
		vt_vq_dev_push(g->dev[RXQ], &chains[i], written[i]);
	vt_vq_dev_flush(g->dev[RXQ]);
	return (int)used;
}

static void make_frame(uint8_t *f, uint32_t len, uint64_t *seed)
{
	for (uint32_t i = 0; i < len; i++)
		f[i] = (uint8_t)vt_test_rand(seed);
}

/* ---------------------------------------------------------------- configuration */

VT_TEST(config_decode_reads_only_the_fields_negotiated)
{
	struct virtio_net_config cfg = { .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 } };
	cfg.status = vt_cpu_to_le16(0);
	cfg.max_virtqueue_pairs = vt_cpu_to_le16(8);
	cfg.mtu = vt_cpu_to_le16(9000);
	struct vt_net_info info;

	uint64_t all = F(VERSION_1) | NET_F(MAC) | NET_F(STATUS) | NET_F(MQ) | NET_F(MTU);
	REQUIRE_EQ(vt_net_config_decode(&cfg, sizeof(cfg), all, &info), 0);
	CHECK(info.has_mac);
	CHECK_EQ(info.mac[5], 0x56);
	CHECK(info.has_status);
	CHECK(!info.link_up);
	CHECK_EQ(info.max_virtqueue_pairs, 8);
	CHECK_EQ(info.mtu, 9000);
	CHECK_EQ(info.max_frame, 9014u);
	CHECK_EQ(info.hdr_len, HDR);

	REQUIRE_EQ(vt_net_config_decode(&cfg, sizeof(cfg), F(VERSION_1), &info), 0);
	CHECK(!info.has_mac);
	CHECK(info.link_up); /* no STATUS: the link is up (5.1.4.2) */
	CHECK_EQ(info.max_virtqueue_pairs, 1);
	CHECK_EQ(info.mtu, 0);
	CHECK_EQ(info.max_frame, VT_NET_DEFAULT_FRAME);
	/* Nothing to read: a device whose configuration cannot be read at all. */
	CHECK_EQ(vt_net_config_decode(NULL, 0, F(VERSION_1), &info), 0);

	char text[512];
	REQUIRE_EQ(vt_net_config_decode(&cfg, sizeof(cfg), all, &info), 0);
	CHECK(vt_net_info_str(&info, text, sizeof(text)) > 0);
	CHECK(strstr(text, "mac: 52:54:00:12:34:56") != NULL);
	CHECK(strstr(text, "link: down") != NULL);
	CHECK(strstr(text, "queue pairs: 8") != NULL);
	CHECK(strstr(text, "mtu: 9000") != NULL);
}

VT_TEST(config_decode_refuses_short_configs_and_forbidden_values)
{
	struct virtio_net_config cfg = { 0 };
	cfg.max_virtqueue_pairs = vt_cpu_to_le16(1);
	cfg.mtu = vt_cpu_to_le16(1500);
	struct vt_net_info info;
	uint64_t mq = F(VERSION_1) | NET_F(MQ);
	CHECK_EQ(vt_net_config_decode(&cfg, 6, F(VERSION_1) | NET_F(STATUS), &info), -EINVAL);
	CHECK_EQ(vt_net_config_decode(&cfg, 9, mq, &info), -EINVAL);
	CHECK_EQ(vt_net_config_decode(NULL, 0, F(VERSION_1) | NET_F(MAC), &info), -EINVAL);
	cfg.max_virtqueue_pairs = vt_cpu_to_le16(0);
	CHECK_EQ(vt_net_config_decode(&cfg, sizeof(cfg), mq, &info), -EINVAL);
	cfg.max_virtqueue_pairs = vt_cpu_to_le16(0x8001);
	CHECK_EQ(vt_net_config_decode(&cfg, sizeof(cfg), mq, &info), -EINVAL);
	cfg.mtu = vt_cpu_to_le16(67);
	CHECK_EQ(vt_net_config_decode(&cfg, sizeof(cfg), F(VERSION_1) | NET_F(MTU), &info),
		 -EINVAL);
}

/* ---------------------------------------------------------------- loopback */

/* @frames frames of random sizes in [min, max], each sent, looped back and compared. */
static void loop_frames(uint64_t features, bool packed, uint32_t buf_size, uint32_t min,
			uint32_t max, unsigned int frames, bool zero_copy)
{
	struct rig g;
	uint64_t seed = vt_test_seed() ^ (features * 3 + packed + buf_size);
	REQUIRE_EQ(rig_init(&g, features, packed, buf_size), 0);
	fill_rx(&g);
	static uint8_t sent[VT_NET_MAX_FRAME], seen[VT_NET_MAX_FRAME], got[VT_NET_MAX_FRAME];
	unsigned int max_spanned = 0;
	for (unsigned int n = 0; n < frames && !vt_test_failed; n++) {
		uint32_t len = min + (uint32_t)(vt_test_rand(&seed) % (max - min + 1));
		make_frame(sent, len, &seed);
		if (zero_copy) {
			uint8_t *buf = NULL;
			void *p;
			REQUIRE_EQ(vt_shm_alloc(g.shm, len, 64, &p), 0);
			buf = p;
			memcpy(buf, sent, len);
			uint32_t cut = len / 3 ? len / 3 : 1;
			struct iovec iov[2] = { { buf, cut }, { buf + cut, len - cut } };
			REQUIRE_EQ(vt_net_txq_send_sg(g.tx, iov, cut < len ? 2 : 1, buf), 0);
		} else {
			REQUIRE_EQ(vt_net_txq_send(g.tx, sent, len, (void *)(uintptr_t)(n + 1)), 0);
		}
		vt_net_txq_kick(g.tx);
		REQUIRE_EQ(device_take_tx(&g, seen, sizeof(seen)), (int)len);
		CHECK(memcmp(seen, sent, len) == 0);
		void *cookie = NULL;
		REQUIRE_EQ(vt_net_txq_reclaim(g.tx, &cookie, 1), 1);
		if (zero_copy)
			vt_shm_release(g.shm, cookie, len);
		else
			CHECK_EQ((uintptr_t)cookie, n + 1);

		int used = device_deliver(&g, seen, len, NULL);
		REQUIRE(used > 0);
		if ((unsigned int)used > max_spanned)
			max_spanned = (unsigned int)used;
		struct vt_net_rx_info info;
		memset(got, POISON, len + 1);
		REQUIRE_EQ(vt_net_rxq_recv(g.rx, got, sizeof(got), &info), 1);
		CHECK_EQ(info.len, len);
		CHECK_EQ(info.num_buffers, (uint16_t)used);
		CHECK(memcmp(got, sent, len) == 0);
		CHECK_EQ(got[len], POISON);
		CHECK_EQ(vt_net_rxq_recv(g.rx, got, sizeof(got), NULL), 0);
		fill_rx(&g);
	}
	struct vt_net_rxq_stats rs;
	vt_net_rxq_get_stats(g.rx, &rs);
	CHECK_EQ(rs.frames, frames);
	CHECK_EQ(rs.bad_header + rs.bad_length + rs.bad_num_buffers, 0);
	struct vt_net_txq_stats ts;
	vt_net_txq_get_stats(g.tx, &ts);
	CHECK_EQ(ts.frames, frames);
	CHECK_EQ(ts.completed, frames);
	CHECK_EQ(ts.in_flight, 0);
	if (features & NET_F(MRG_RXBUF) && buf_size && buf_size < max)
		CHECK(max_spanned > 1);
	rig_destroy(&g);
}

VT_TEST(bytes_sent_are_the_bytes_received_one_buffer_per_frame)
{
	for (int packed = 0; packed < 2; packed++)
		loop_frames(NET_F(MTU), packed, 0, VT_NET_ETH_HLEN, 1514,
			    (unsigned int)vt_test_scaled(300), false);
}

VT_TEST(zero_copy_sends_are_received_byte_for_byte)
{
	for (int packed = 0; packed < 2; packed++)
		loop_frames(0, packed, 0, 60, 1514, (unsigned int)vt_test_scaled(100), true);
}

VT_TEST(mergeable_frames_span_one_to_many_buffers)
{
	/* 128-byte buffers: a 1514-byte frame takes 13 of them. */
	for (int packed = 0; packed < 2; packed++)
		loop_frames(NET_F(MRG_RXBUF), packed, 128, VT_NET_ETH_HLEN, 1514,
			    (unsigned int)vt_test_scaled(300), false);
}

VT_TEST(mergeable_frames_with_the_default_buffers_fit_in_one_or_two)
{
	for (int packed = 0; packed < 2; packed++)
		loop_frames(NET_F(MRG_RXBUF) | NET_F(MTU), packed, 0, 1000, 4000,
			    (unsigned int)vt_test_scaled(50), true);
}

/* ---------------------------------------------------------------- the hostile device */

/* One frame delivered with @lie must be dropped and counted; the next one must arrive whole. */
static void lie_once(bool packed, uint32_t len, const struct lie *lie, int expect,
		     size_t counter_offset)
{
	struct rig g;
	uint64_t seed = 7;
	REQUIRE_EQ(rig_init(&g, NET_F(MRG_RXBUF), packed, 256), 0);
	fill_rx(&g);
	uint8_t frame[2000], got[2000];
	make_frame(frame, len, &seed);
	REQUIRE(device_deliver(&g, frame, len, lie) > 0);
	memset(got, POISON, sizeof(got));
	struct vt_net_rx_info info;
	CHECK_EQ(vt_net_rxq_recv(g.rx, got, sizeof(got), &info), expect);
	struct vt_net_rxq_stats rs;
	vt_net_rxq_get_stats(g.rx, &rs);
	CHECK_EQ(*(const uint64_t *)((const uint8_t *)&rs + counter_offset), 1);
	CHECK_EQ(rs.frames, 0);
	/* Nothing past what the device wrote reached the caller: at most the frame's bytes. */
	for (size_t i = len; i < sizeof(got); i++)
		if (got[i] != POISON) {
			CHECK_EQ(got[i], POISON);
			break;
		}
	/* The queue goes on: every buffer of the bad frame came back, the next frame arrives. */
	CHECK_EQ(vt_net_rxq_recv(g.rx, got, sizeof(got), NULL), 0);
	fill_rx(&g);
	vt_net_rxq_get_stats(g.rx, &rs);
	CHECK_EQ(rs.posted_now, QSIZE);
	make_frame(frame, 300, &seed);
	REQUIRE(device_deliver(&g, frame, 300, NULL) > 0);
	CHECK_EQ(vt_net_rxq_recv(g.rx, got, sizeof(got), &info), 1);
	CHECK_EQ(info.len, 300);
	CHECK(memcmp(got, frame, 300) == 0);
	rig_destroy(&g);
}

#define STAT(field) offsetof(struct vt_net_rxq_stats, field)

VT_TEST(num_buffers_larger_than_the_buffers_used_drops_the_frame)
{
	for (int packed = 0; packed < 2; packed++) {
		/* 600 bytes in 256-byte buffers: 3 used, 5 claimed. */
		struct lie lie = { .num_buffers = 5 };
		lie_once(packed, 600, &lie, -EBADMSG, STAT(bad_num_buffers));
		/* Even one claimed more than the ring holds. */
		lie.num_buffers = QSIZE + 1;
		lie_once(packed, 100, &lie, -EBADMSG, STAT(bad_num_buffers));
	}
}

VT_TEST(num_buffers_of_zero_drops_the_frame)
{
	for (int packed = 0; packed < 2; packed++) {
		struct lie lie = { .num_buffers = -1 };
		lie_once(packed, 100, &lie, -EBADMSG, STAT(bad_num_buffers));
	}
}

VT_TEST(a_used_length_past_the_buffer_drops_the_frame_without_reading_past)
{
	for (int packed = 0; packed < 2; packed++) {
		/* Past the first (only) buffer, then past the last of three. */
		struct lie lie = { .extra_len = 4096 };
		lie_once(packed, 100, &lie, -EBADMSG, STAT(bad_length));
		lie_once(packed, 600, &lie, -EBADMSG, STAT(bad_length));
	}
}

VT_TEST(a_used_length_shorter_than_the_header_drops_the_frame)
{
	for (int packed = 0; packed < 2; packed++) {
		/* One buffer holds the frame; the device claims it wrote 10 bytes. */
		struct lie lie = { .short_header = true };
		lie_once(packed, 100, &lie, -EBADMSG, STAT(bad_header));
	}
}

VT_TEST(a_frame_longer_than_the_callers_buffer_is_dropped_and_reported)
{
	struct rig g;
	uint64_t seed = 3;
	REQUIRE_EQ(rig_init(&g, NET_F(MRG_RXBUF), false, 256), 0);
	fill_rx(&g);
	uint8_t frame[1000], got[1001];
	make_frame(frame, 1000, &seed);
	REQUIRE(device_deliver(&g, frame, 1000, NULL) > 0);
	memset(got, POISON, sizeof(got));
	struct vt_net_rx_info info;
	CHECK_EQ(vt_net_rxq_recv(g.rx, got, 999, &info), -EMSGSIZE);
	CHECK_EQ(info.len, 1000);
	CHECK_EQ(got[999], POISON);
	struct vt_net_rxq_stats rs;
	vt_net_rxq_get_stats(g.rx, &rs);
	CHECK_EQ(rs.too_big, 1);
	rig_destroy(&g);
}

/* ---------------------------------------------------------------- engines */

VT_TEST(a_full_transmit_ring_says_eagain_until_frames_are_reclaimed)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 0, false, 0), 0);
	uint8_t frame[60] = { 0 };
	unsigned int sent = 0;
	while (vt_net_txq_send(g.tx, frame, sizeof(frame), NULL) == 0)
		sent++;
	CHECK_EQ(sent, QSIZE);
	CHECK_EQ(vt_net_txq_send(g.tx, frame, sizeof(frame), NULL), -EAGAIN);
	CHECK_EQ(vt_net_txq_in_flight(g.tx), QSIZE);
	vt_net_txq_kick(g.tx);
	uint8_t seen[100];
	REQUIRE_EQ(device_take_tx(&g, seen, sizeof(seen)), 60);
	CHECK_EQ(vt_net_txq_reclaim(g.tx, NULL, 8), 1);
	CHECK_EQ(vt_net_txq_send(g.tx, frame, sizeof(frame), NULL), 0);
	/* Limits: empty and oversized frames never reach the ring. */
	CHECK_EQ(vt_net_txq_send(g.tx, frame, 0, NULL), -EINVAL);
	CHECK_EQ(vt_net_txq_send(g.tx, frame, VT_NET_DEFAULT_FRAME + 1, NULL), -EMSGSIZE);
	struct vt_net_txq_stats ts;
	vt_net_txq_get_stats(g.tx, &ts);
	CHECK_EQ(ts.rejected, 2);
	CHECK(ts.ring_full >= 1);
	/* After a reset, the tokens handed back free their slots. */
	void *token;
	unsigned int forgotten = 0;
	while ((token = vt_vq_drv_detach_unused(g.drv[TXQ])))
		forgotten += vt_net_txq_forget(g.tx, token, NULL) == 0;
	CHECK_EQ(forgotten, QSIZE);
	CHECK_EQ(vt_net_txq_in_flight(g.tx), 0);
	CHECK_EQ(vt_net_txq_forget(g.tx, g.tx, NULL), -EINVAL);
	rig_destroy(&g);
}

/*
 * Bursts of random sizes (1 to more than the ring holds) of random frames: the burst posts what
 * fits, the device sees each frame byte for byte in the order given, and the cookies come back
 * in that order from reclaims that span several of the ring's bursts.
 */
static void send_bursts(bool packed)
{
	struct rig g;
	uint64_t seed = vt_test_seed() ^ packed;
	REQUIRE_EQ(rig_init(&g, 0, packed, 0), 0);
	enum { MAXB = QSIZE + QSIZE / 2 };
	static uint8_t frames[MAXB][1514], seen[1514];
	struct iovec iov[MAXB];
	void *cookies[MAXB], *back[MAXB + 1];
	unsigned int rounds = (unsigned int)vt_test_scaled(200), next_cookie = 1;
	for (unsigned int r = 0; r < rounds && !vt_test_failed; r++) {
		unsigned int n = 1 + (unsigned int)(vt_test_rand(&seed) % MAXB);
		for (unsigned int i = 0; i < n; i++) {
			uint32_t len = 14 + (uint32_t)(vt_test_rand(&seed) % (1514 - 14 + 1));
			make_frame(frames[i], len, &seed);
			iov[i] = (struct iovec){ frames[i], len };
			cookies[i] = (void *)(uintptr_t)next_cookie++;
		}
		int posted = vt_net_txq_send_burst(g.tx, iov, n, cookies);
		REQUIRE_EQ(posted, (int)(n < QSIZE ? n : QSIZE));
		if ((unsigned int)posted < n)
			CHECK_EQ(vt_net_txq_send_burst(g.tx, iov + posted, n - posted, NULL),
				 -EAGAIN);
		next_cookie -= n - (unsigned int)posted; /* the unposted ones are sent next round */
		vt_net_txq_kick(g.tx);
		for (int i = 0; i < posted; i++) {
			REQUIRE_EQ(device_take_tx(&g, seen, sizeof(seen)), (int)iov[i].iov_len);
			CHECK(memcmp(seen, frames[i], iov[i].iov_len) == 0);
		}
		CHECK_EQ(vt_net_txq_reclaim(g.tx, back, MAXB + 1), posted);
		for (int i = 0; i < posted; i++)
			CHECK_EQ(back[i], cookies[i]);
	}
	struct vt_net_txq_stats ts;
	vt_net_txq_get_stats(g.tx, &ts);
	CHECK_EQ(ts.frames, ts.completed);
	CHECK_EQ(ts.frames, (uint64_t)(next_cookie - 1));
	CHECK_EQ(ts.in_flight, 0);
	CHECK_EQ(ts.rejected, 0);
	rig_destroy(&g);
}

VT_TEST(send_bursts_post_what_fits_and_arrive_in_order_byte_for_byte)
{
	send_bursts(false);
	send_bursts(true);
}

VT_TEST(a_send_burst_ends_at_its_first_bad_frame_and_reports_it_once)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 0, false, 0), 0);
	static uint8_t frame[VT_NET_DEFAULT_FRAME + 1];
	struct iovec iov[5];
	for (unsigned int i = 0; i < 5; i++)
		iov[i] = (struct iovec){ frame, 60 };
	iov[2].iov_len = 0;
	iov[4].iov_len = VT_NET_DEFAULT_FRAME + 1;
	CHECK_EQ(vt_net_txq_send_burst(g.tx, iov, 5, NULL), 2);
	CHECK_EQ(vt_net_txq_send_burst(g.tx, iov + 2, 3, NULL), -EINVAL);
	CHECK_EQ(vt_net_txq_send_burst(g.tx, iov + 3, 2, NULL), 1);
	CHECK_EQ(vt_net_txq_send_burst(g.tx, iov + 4, 1, NULL), -EMSGSIZE);
	struct vt_net_txq_stats ts;
	vt_net_txq_get_stats(g.tx, &ts);
	CHECK_EQ(ts.frames, 3);
	CHECK_EQ(ts.in_flight, 3);
	CHECK_EQ(ts.rejected, 2);
	/* A slot filled for a frame the ring never took stays free: the ring still takes QSIZE. */
	CHECK_EQ(vt_net_txq_in_flight(g.tx), 3);
	unsigned int more = 0;
	while (vt_net_txq_send(g.tx, frame, 60, NULL) == 0)
		more++;
	CHECK_EQ(more, QSIZE - 3);
	rig_destroy(&g);
}

VT_TEST(receive_buffers_must_hold_a_frame_unless_mergeable)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, 0, false, 0), 0);
	struct vt_net_rxq *q;
	struct vt_net_rxq_params rp = {
		.vq = g.drv[RXQ], .num = QSIZE, .shm = g.shm, .info = &g.info, .buf_size = 1000
	};
	CHECK_EQ(vt_net_rxq_new(&rp, &q), -EINVAL);
	rp.buf_size = 0;
	REQUIRE_EQ(vt_net_rxq_new(&rp, &q), 0);
	CHECK_EQ(vt_net_rxq_buf_size(q), HDR + VT_NET_DEFAULT_FRAME);
	vt_net_rxq_free(q);
	struct vt_net_info mrg = g.info;
	mrg.features |= NET_F(MRG_RXBUF);
	rp.info = &mrg;
	rp.buf_size = HDR;
	CHECK_EQ(vt_net_rxq_new(&rp, &q), -EINVAL);
	rp.buf_size = 0;
	REQUIRE_EQ(vt_net_rxq_new(&rp, &q), 0);
	CHECK_EQ(vt_net_rxq_buf_size(q), 2048u);
	vt_net_rxq_free(q);
	rig_destroy(&g);
}

/* ---------------------------------------------------------------- control queue */

/* The device answers the command in flight with @ack; returns what the driver's poll says. */
static int ctrl_answer(struct rig *g, uint8_t ack, uint16_t *pairs_asked)
{
	struct vt_vq_chain c;
	struct iovec iov[IOV_MAX];
	if (vt_vq_dev_pop(g->dev[CTRLQ], &c, iov, IOV_MAX) < 0 || c.nwritable != 1)
		return -1000;
	uint8_t cmd[8];
	size_t off = 0;
	for (unsigned int i = 0; i < c.nreadable && off + iov[i].iov_len <= sizeof(cmd); i++) {
		memcpy(cmd + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	if (off != 4 || cmd[0] != VIRTIO_NET_CTRL_MQ || cmd[1] != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET)
		return -1001;
	*pairs_asked = (uint16_t)(cmd[2] | cmd[3] << 8);
	*(uint8_t *)iov[c.nreadable].iov_base = ack;
	vt_vq_dev_push(g->dev[CTRLQ], &c, 1);
	vt_vq_dev_flush(g->dev[CTRLQ]);
	return vt_net_ctrl_poll(g->ctrl);
}

VT_TEST(ctrl_mq_sets_the_pairs_the_device_acknowledges)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, NET_F(CTRL_VQ) | NET_F(MQ), false, 0), 0);
	uint16_t asked = 0;
	CHECK_EQ(vt_net_ctrl_pairs(g.ctrl), 1);
	CHECK_EQ(vt_net_ctrl_poll(g.ctrl), -EINVAL);
	REQUIRE_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 3), 0);
	CHECK_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 2), -EBUSY);
	vt_net_ctrl_kick(g.ctrl);
	CHECK_EQ(vt_net_ctrl_poll(g.ctrl), -EAGAIN);
	CHECK_EQ(ctrl_answer(&g, VIRTIO_NET_OK, &asked), 0);
	CHECK_EQ(asked, 3);
	CHECK_EQ(vt_net_ctrl_pairs(g.ctrl), 3);

	REQUIRE_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 4), 0);
	vt_net_ctrl_kick(g.ctrl);
	CHECK_EQ(ctrl_answer(&g, VIRTIO_NET_ERR, &asked), -EIO);
	CHECK_EQ(vt_net_ctrl_pairs(g.ctrl), 3);
	REQUIRE_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 2), 0);
	vt_net_ctrl_kick(g.ctrl);
	CHECK_EQ(ctrl_answer(&g, 0x55, &asked), -EBADMSG);

	/* Outside 1..max_virtqueue_pairs (4). */
	CHECK_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 0), -EINVAL);
	CHECK_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 5), -EINVAL);
	rig_destroy(&g);
}

VT_TEST(ctrl_mq_needs_ctrl_vq_and_mq)
{
	struct rig g;
	REQUIRE_EQ(rig_init(&g, NET_F(CTRL_VQ), false, 0), 0);
	CHECK_EQ(vt_net_ctrl_mq_pairs_set(g.ctrl, 1), -ENOTSUP);
	rig_destroy(&g);
}
