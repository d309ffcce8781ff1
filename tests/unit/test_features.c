/* SPDX-License-Identifier: MIT */
/* Feature and status names: the strings every log line and CLI shows. */
#include <errno.h>
#include <stddef.h>

/* The umbrella header, so that it is known to compile on its own. */
#include <virtue/virtue.h>
#include <virtue/spec/virtio_blk.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_net.h>

#include "harness.h"

VT_TEST(every_transport_bit_of_virtio_1_3_has_its_name)
{
	static const struct {
		unsigned int bit;
		const char *name;
	} expect[] = {
		{ 24, "NOTIFY_ON_EMPTY" },
		{ 27, "ANY_LAYOUT" },
		{ 28, "INDIRECT_DESC" },
		{ 29, "EVENT_IDX" },
		{ 30, "PROTOCOL_FEATURES" },
		{ 32, "VERSION_1" },
		{ 33, "ACCESS_PLATFORM" },
		{ 34, "RING_PACKED" },
		{ 35, "IN_ORDER" },
		{ 36, "ORDER_PLATFORM" },
		{ 37, "SR_IOV" },
		{ 38, "NOTIFICATION_DATA" },
		{ 39, "NOTIF_CONFIG_DATA" },
		{ 40, "RING_RESET" },
		{ 41, "ADMIN_VQ" },
	};
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		const char *n = vt_feature_name(VIRTIO_ID_BLOCK, expect[i].bit);
		REQUIRE(n != NULL);
		CHECK_STR(n, expect[i].name);
		/* Transport bits read the same for every device type. */
		CHECK_STR(vt_feature_name(VIRTIO_ID_NET, expect[i].bit), expect[i].name);
		CHECK_STR(vt_feature_name(0, expect[i].bit), expect[i].name);
	}
}

VT_TEST(device_bits_are_named_per_device_type)
{
	CHECK_STR(vt_feature_name(VIRTIO_ID_BLOCK, 5), "RO");
	CHECK_STR(vt_feature_name(VIRTIO_ID_NET, 5), "MAC");
	CHECK_STR(vt_feature_name(VIRTIO_ID_BLOCK, VIRTIO_BLK_F_WRITE_ZEROES), "WRITE_ZEROES");
	CHECK_STR(vt_feature_name(VIRTIO_ID_NET, VIRTIO_NET_F_SPEED_DUPLEX), "SPEED_DUPLEX");
	CHECK_STR(vt_feature_name(VIRTIO_ID_NET, VIRTIO_NET_F_HOST_USO), "HOST_USO");
	CHECK(vt_feature_name(0, 5) == NULL);
	CHECK(vt_feature_name(VIRTIO_ID_BLOCK, 3) == NULL);
	CHECK(vt_feature_name(VIRTIO_ID_BLOCK, 64) == NULL);
}

VT_TEST(features_str_names_known_bits_and_numbers_unknown_ones)
{
	char buf[256];
	uint64_t f = VT_BIT(VIRTIO_BLK_F_FLUSH) | VT_BIT(VIRTIO_F_VERSION_1) |
		     VT_BIT(VIRTIO_F_ACCESS_PLATFORM) | VT_BIT(45);
	size_t n = vt_features_str(VIRTIO_ID_BLOCK, f, buf, sizeof(buf));
	CHECK_STR(buf, "FLUSH VERSION_1 ACCESS_PLATFORM bit45");
	CHECK_EQ(n, strlen(buf));
	vt_features_str(VIRTIO_ID_BLOCK, 0, buf, sizeof(buf));
	CHECK_STR(buf, "(none)");
}

VT_TEST(features_str_truncates_safely_and_reports_full_length)
{
	char small[8];
	uint64_t f = VT_BIT(VIRTIO_F_VERSION_1) | VT_BIT(VIRTIO_F_RING_PACKED);
	size_t n = vt_features_str(0, f, small, sizeof(small));
	CHECK_EQ(n, strlen("VERSION_1 RING_PACKED"));
	CHECK_EQ(strlen(small), sizeof(small) - 1);
	CHECK(memcmp(small, "VERSION", 7) == 0);
	/* size 0 writes nothing and still measures. */
	CHECK_EQ(vt_features_str(0, f, NULL, 0), n);
}

VT_TEST(feature_parse_accepts_bare_and_prefixed_names)
{
	unsigned int bit = 0;
	CHECK_EQ(vt_feature_parse(VIRTIO_ID_NET, "MRG_RXBUF", &bit), 0);
	CHECK_EQ(bit, VIRTIO_NET_F_MRG_RXBUF);
	CHECK_EQ(vt_feature_parse(VIRTIO_ID_NET, "VIRTIO_F_ACCESS_PLATFORM", &bit), 0);
	CHECK_EQ(bit, 33);
	CHECK_EQ(vt_feature_parse(VIRTIO_ID_BLOCK, "virtio_blk_f_discard", &bit), 0);
	CHECK_EQ(bit, VIRTIO_BLK_F_DISCARD);
	CHECK_EQ(vt_feature_parse(VIRTIO_ID_BLOCK, "MRG_RXBUF", &bit), -ENOENT);
}

VT_TEST(status_str_names_each_bit)
{
	char buf[128];
	vt_status_str(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
			  VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_NEEDS_RESET,
		      buf, sizeof(buf));
	CHECK_STR(buf, "ACKNOWLEDGE DRIVER FEATURES_OK DEVICE_NEEDS_RESET");
	vt_status_str(0, buf, sizeof(buf));
	CHECK_STR(buf, "(reset)");
	vt_status_str(0x20, buf, sizeof(buf));
	CHECK_STR(buf, "bit5");
}

VT_TEST(wire_layouts_have_the_spec_sizes)
{
	CHECK_EQ(sizeof(struct virtio_blk_outhdr), 16);
	CHECK_EQ(sizeof(struct virtio_blk_discard_write_zeroes), 16);
	CHECK_EQ(offsetof(struct virtio_blk_config, blk_size), 20);
	CHECK_EQ(offsetof(struct virtio_blk_config, num_queues), 34);
	CHECK_EQ(offsetof(struct virtio_blk_config, max_discard_sectors), 36);
	CHECK_EQ(offsetof(struct virtio_blk_config, write_zeroes_may_unmap), 56);
	CHECK_EQ(offsetof(struct virtio_blk_config, max_secure_erase_sectors), 60);
	CHECK_EQ(sizeof(struct virtio_net_hdr), 12);
	CHECK_EQ(sizeof(struct virtio_net_hdr_hash), 20);
	CHECK_EQ(offsetof(struct virtio_net_config, mtu), 10);
	CHECK_EQ(offsetof(struct virtio_net_config, speed), 12);
	CHECK_EQ(offsetof(struct virtio_net_config, supported_hash_types), 20);
}

#include <virtue/spec/virtio_ring.h>

VT_TEST(ring_layouts_have_the_spec_sizes)
{
	CHECK_EQ(sizeof(struct virtq_desc), 16);
	CHECK_EQ(sizeof(struct virtq_used_elem), 8);
	CHECK_EQ(sizeof(struct pvirtq_desc), 16);
	CHECK_EQ(sizeof(struct pvirtq_event_suppress), 4);
	CHECK_EQ(virtq_split_avail_size(256), 4 + 2 * 256 + 2);
	CHECK_EQ(virtq_split_used_size(256), 4 + 8 * 256 + 2);
	/* vring_need_event: notify when new passed event since old, in 16-bit arithmetic. */
	CHECK(vring_need_event(5, 6, 5));
	CHECK(!vring_need_event(6, 6, 5));
	CHECK(vring_need_event(0xffff, 1, 0xfffe));
}

VT_TEST(le_helpers_round_trip)
{
	uint8_t raw[8];
	vt_le32 v = vt_cpu_to_le32(0x11223344);
	memcpy(raw, &v, 4);
	CHECK_EQ(raw[0], 0x44);
	CHECK_EQ(raw[3], 0x11);
	CHECK_EQ(vt_le32_to_cpu(v), 0x11223344);
	CHECK_EQ(vt_le16_to_cpu(vt_cpu_to_le16(0xbeef)), 0xbeef);
	CHECK(vt_le64_to_cpu(vt_cpu_to_le64(0x0102030405060708ULL)) == 0x0102030405060708ULL);
}
