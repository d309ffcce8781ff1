/* SPDX-License-Identifier: MIT */
/*
 * Negotiation and the status state machine, device and driver side, built from the spec's rules:
 * every dependency rule in the table is tested both ways, on both sides.
 */
#include <errno.h>

#include <virtue/barrier.h>
#include <virtue/device.h>
#include <virtue/driver.h>
#include <virtue/features.h>
#include <virtue/platform.h>
#include <virtue/spec/virtio_blk.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_net.h>

#include "harness.h"

#define V1    VT_BIT(VIRTIO_F_VERSION_1)
#define AP    VT_BIT(VIRTIO_F_ACCESS_PLATFORM)
#define S_ACK VIRTIO_CONFIG_S_ACKNOWLEDGE
#define S_DRV VIRTIO_CONFIG_S_DRIVER
#define S_FOK VIRTIO_CONFIG_S_FEATURES_OK
#define S_DOK VIRTIO_CONFIG_S_DRIVER_OK

/* Counts log lines and config-change notifications. */
struct observer {
	int errors;
	int config_changed;
	int resets;
	int driver_oks;
	int veto; /* features_ok returns this */
	struct vt_device *dev;
	int bump_on_read; /* the transport changes config under the driver's read this often */
};

static void count_log(void *opaque, enum vt_log_level level, const char *msg)
{
	struct observer *o = opaque;
	(void)msg;
	if (level == VT_LOG_ERROR)
		o->errors++;
}

static void on_config_changed(void *opaque)
{
	((struct observer *)opaque)->config_changed++;
}

static void on_reset(void *opaque)
{
	((struct observer *)opaque)->resets++;
}

static void on_driver_ok(void *opaque)
{
	((struct observer *)opaque)->driver_oks++;
}

static int on_features_ok(void *opaque, uint64_t f)
{
	(void)f;
	return ((struct observer *)opaque)->veto;
}

static const struct vt_device_ops observed_ops = {
	.features_ok = on_features_ok,
	.driver_ok = on_driver_ok,
	.reset = on_reset,
	.config_changed = on_config_changed,
};

static struct vt_device *make_device(uint32_t id, uint64_t offered, uint64_t required,
				     struct observer *o, struct vt_log *log)
{
	*log = (struct vt_log){ .fn = count_log, .opaque = o, .max_level = VT_LOG_DEBUG };
	uint8_t config[16] = { 1, 2, 3, 4 };
	struct vt_device_params p = {
		.device_id = id,
		.offered = offered,
		.required = required,
		.config = config,
		.config_size = sizeof(config),
		.ops = &observed_ops,
		.opaque = o,
		.log = log,
	};
	struct vt_device *dev = NULL;
	if (vt_device_new(&p, &dev) < 0)
		return NULL;
	o->dev = dev;
	return dev;
}

/* Drives the device registers by hand, as a (possibly wrong) driver would. */
static int accept_features(struct vt_device *dev, uint64_t features)
{
	vt_device_set_status(dev, 0);
	vt_device_set_status(dev, S_ACK);
	vt_device_set_status(dev, S_ACK | S_DRV);
	vt_device_set_driver_features(dev, features);
	vt_device_set_status(dev, S_ACK | S_DRV | S_FOK);
	return (vt_device_status(dev) & S_FOK) != 0;
}

VT_TEST(device_keeps_features_ok_for_a_valid_subset)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev =
	    make_device(VIRTIO_ID_BLOCK, VT_BIT(VIRTIO_BLK_F_FLUSH) | AP, 0, &o, &log);
	REQUIRE(dev);
	CHECK(accept_features(dev, V1 | VT_BIT(VIRTIO_BLK_F_FLUSH)));
	CHECK(vt_device_features(dev) == (V1 | VT_BIT(VIRTIO_BLK_F_FLUSH)));
	CHECK_EQ(o.errors, 0);
	vt_device_free(dev);
}

VT_TEST(device_refuses_features_ok_for_an_unoffered_bit)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev =
	    make_device(VIRTIO_ID_BLOCK, VT_BIT(VIRTIO_BLK_F_FLUSH), 0, &o, &log);
	REQUIRE(dev);
	CHECK(!accept_features(dev, V1 | VT_BIT(VIRTIO_BLK_F_DISCARD)));
	CHECK(vt_device_features(dev) == 0);
	/* The rest of the write took effect: the driver sees exactly FEATURES_OK missing. */
	CHECK_EQ(vt_device_status(dev), S_ACK | S_DRV);
	CHECK_EQ(o.errors, 1);
	vt_device_free(dev);
}

VT_TEST(device_refuses_features_ok_without_version_1)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev =
	    make_device(VIRTIO_ID_BLOCK, VT_BIT(VIRTIO_BLK_F_FLUSH), 0, &o, &log);
	REQUIRE(dev);
	CHECK(!accept_features(dev, VT_BIT(VIRTIO_BLK_F_FLUSH)));
	vt_device_free(dev);
}

VT_TEST(device_refuses_features_ok_without_a_required_feature)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, AP, AP, &o, &log);
	REQUIRE(dev);
	CHECK(!accept_features(dev, V1));
	CHECK(accept_features(dev, V1 | AP));
	vt_device_free(dev);
}

VT_TEST(device_model_can_veto_features_ok)
{
	struct observer o = { .veto = -EINVAL };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	CHECK(!accept_features(dev, V1));
	o.veto = 0;
	CHECK(accept_features(dev, V1));
	vt_device_free(dev);
}

/* Every named bit of the device type: a device that offers everything. */
static uint64_t all_named(uint32_t id)
{
	uint64_t f = 0;
	for (unsigned int b = 0; b < 64; b++)
		if (vt_feature_name(id, b) && b != VHOST_USER_F_PROTOCOL_FEATURES)
			f |= VT_BIT(b);
	return f;
}

/* Adds what @f needs, transitively (the first alternative of an "any of" rule). */
static uint64_t add_needs(uint32_t id, uint64_t f)
{
	size_t n;
	const struct vt_feature_rule *rules = vt_feature_rules(&n);
	for (;;) {
		uint64_t before = f;
		for (size_t i = 0; i < n; i++) {
			const struct vt_feature_rule *r = &rules[i];
			if ((r->device_id && r->device_id != id) || !(f & VT_BIT(r->bit)))
				continue;
			f |= r->requires_all;
			if (r->requires_any && !(f & r->requires_any))
				f |= r->requires_any & -r->requires_any;
		}
		if (f == before)
			return f;
	}
}

VT_TEST(every_dependency_rule_is_enforced_by_the_device)
{
	size_t n;
	const struct vt_feature_rule *rules = vt_feature_rules(&n);
	REQUIRE(n >= 20);
	for (size_t i = 0; i < n; i++) {
		const struct vt_feature_rule *r = &rules[i];
		uint32_t id = r->device_id ? r->device_id : VIRTIO_ID_NET;
		struct observer o = { 0 };
		struct vt_log log;
		struct vt_device *dev = make_device(id, all_named(id), 0, &o, &log);
		REQUIRE(dev);
		uint64_t bit = VT_BIT(r->bit);
		/* The bit without what it needs: refused. */
		uint64_t without = (bit | V1) & ~r->requires_all & ~r->requires_any;
		if (accept_features(dev, without))
			VT_FAIL_AT("rule %zu: %s accepted without its requirements", i,
				   vt_feature_name(id, r->bit));
		/* With what it needs, each alternative of an "any of" rule in turn: kept. */
		uint64_t any = r->requires_any;
		do {
			uint64_t one = any & -any;
			uint64_t with = add_needs(id, bit | V1 | r->requires_all | one);
			if (!accept_features(dev, with))
				VT_FAIL_AT("rule %zu: %s refused with its requirements", i,
					   vt_feature_name(id, r->bit));
			any &= any - 1;
		} while (any);
		vt_device_free(dev);
	}
}

VT_TEST(driver_drops_a_feature_whose_dependency_it_cannot_accept)
{
	size_t n;
	const struct vt_feature_rule *rules = vt_feature_rules(&n);
	for (size_t i = 0; i < n; i++) {
		const struct vt_feature_rule *r = &rules[i];
		if (r->bit == VIRTIO_F_VERSION_1)
			continue;
		uint32_t id = r->device_id ? r->device_id : VIRTIO_ID_NET;
		struct observer o = { 0 };
		struct vt_log log;
		struct vt_device *dev = make_device(id, all_named(id), 0, &o, &log);
		REQUIRE(dev);
		struct vt_driver *drv = NULL;
		/* The driver supports the bit but none of its requirements (except VERSION_1). */
		struct vt_driver_params p = {
			.ops = &vt_local_transport_ops,
			.transport = dev,
			.supported = VT_BIT(r->bit) | ((r->requires_all | r->requires_any) & V1),
			.log = &log,
		};
		REQUIRE_EQ(vt_driver_new(&p, &drv), 0);
		int ret = vt_driver_negotiate(drv);
		uint64_t expect_has_bit = (r->requires_all & ~V1) == 0 && !(r->requires_any & ~V1);
		CHECK_EQ(ret, 0);
		if (((vt_driver_features(drv) & VT_BIT(r->bit)) != 0) != expect_has_bit)
			VT_FAIL_AT("rule %zu: driver kept/dropped %s wrongly", i,
				   vt_feature_name(id, r->bit));
		CHECK_EQ(vt_features_check_deps(id, vt_driver_features(drv), NULL), 0);
		vt_driver_free(drv);
		vt_device_free(dev);
	}
}

VT_TEST(net_guest_ecn_needs_one_of_tso4_or_tso6)
{
	const struct vt_feature_rule *broken = NULL;
	uint64_t base = V1 | VT_BIT(VIRTIO_NET_F_GUEST_CSUM) | VT_BIT(VIRTIO_NET_F_GUEST_ECN);
	CHECK_EQ(vt_features_check_deps(VIRTIO_ID_NET, base, &broken), -EINVAL);
	REQUIRE(broken != NULL);
	CHECK_EQ(broken->bit, VIRTIO_NET_F_GUEST_ECN);
	CHECK_EQ(
	    vt_features_check_deps(VIRTIO_ID_NET, base | VT_BIT(VIRTIO_NET_F_GUEST_TSO6), NULL), 0);
	/* Dropping CSUM drops TSO6, which then drops ECN: the closure iterates. */
	uint64_t closed = vt_features_close_deps(
	    VIRTIO_ID_NET, V1 | VT_BIT(VIRTIO_NET_F_GUEST_TSO6) | VT_BIT(VIRTIO_NET_F_GUEST_ECN));
	CHECK(closed == V1);
	/* Block devices have no such rule on their bit 9 (FLUSH). */
	CHECK_EQ(vt_features_check_deps(VIRTIO_ID_BLOCK, V1 | VT_BIT(9), NULL), 0);
}

VT_TEST(features_cannot_change_after_features_ok)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(
	    VIRTIO_ID_BLOCK, VT_BIT(VIRTIO_BLK_F_FLUSH) | VT_BIT(VIRTIO_BLK_F_RO), 0, &o, &log);
	REQUIRE(dev);
	REQUIRE(accept_features(dev, V1 | VT_BIT(VIRTIO_BLK_F_FLUSH)));
	CHECK_EQ(vt_device_set_driver_features(dev, V1 | VT_BIT(VIRTIO_BLK_F_RO)), -EBUSY);
	CHECK(vt_device_features(dev) == (V1 | VT_BIT(VIRTIO_BLK_F_FLUSH)));
	CHECK(vt_device_driver_features(dev) == (V1 | VT_BIT(VIRTIO_BLK_F_FLUSH)));
	vt_device_free(dev);
}

VT_TEST(features_written_before_driver_status_are_refused)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	CHECK_EQ(vt_device_set_driver_features(dev, V1), -EPROTO);
	vt_device_free(dev);
}

VT_TEST(status_bits_must_be_set_in_order)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	CHECK_EQ(vt_device_set_status(dev, S_DRV), -EPROTO);
	CHECK_EQ(vt_device_status(dev), 0);
	CHECK_EQ(vt_device_set_status(dev, S_ACK), 0);
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_FOK), -EPROTO);
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV), 0);
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_DOK), -EPROTO);
	vt_device_set_driver_features(dev, V1);
	/* FEATURES_OK and DRIVER_OK at once skips the re-read the spec requires. */
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK), -EPROTO);
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK), 0);
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK), 0);
	CHECK_EQ(o.driver_oks, 1);
	/* Clearing a bit without a reset is refused and changes nothing. */
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK), -EPROTO);
	CHECK_EQ(vt_device_status(dev), S_ACK | S_DRV | S_FOK | S_DOK);
	/* FAILED may be added at any time. */
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK | VIRTIO_CONFIG_S_FAILED),
		 0);
	vt_device_free(dev);
}

VT_TEST(reset_clears_status_and_negotiated_features)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	REQUIRE(accept_features(dev, V1));
	o.resets = 0;
	CHECK_EQ(vt_device_set_status(dev, 0), 0);
	CHECK_EQ(vt_device_status(dev), 0);
	CHECK(vt_device_features(dev) == 0);
	CHECK(vt_device_driver_features(dev) == 0);
	CHECK_EQ(o.resets, 1);
	vt_device_free(dev);
}

VT_TEST(needs_reset_notifies_and_logs_once_until_reset)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	REQUIRE(accept_features(dev, V1));
	REQUIRE_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK), 0);
	vt_device_needs_reset(dev, "avail index moved by more than the queue size");
	vt_device_needs_reset(dev, "again");
	CHECK(vt_device_is_broken(dev));
	CHECK(vt_device_status(dev) & VIRTIO_CONFIG_S_NEEDS_RESET);
	CHECK_EQ(o.config_changed, 1);
	CHECK_EQ(o.errors, 1);
	/* The driver's status writes never clear the device-owned bit... */
	CHECK_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK | VIRTIO_CONFIG_S_FAILED),
		 0);
	CHECK(vt_device_is_broken(dev));
	/* ...only a reset does, and the next breakage is logged again. */
	vt_device_set_status(dev, 0);
	CHECK(!vt_device_is_broken(dev));
	vt_device_needs_reset(dev, "third");
	CHECK_EQ(o.errors, 2);
	vt_device_free(dev);
}

VT_TEST(driver_negotiates_the_common_subset)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(
	    VIRTIO_ID_NET,
	    VT_BIT(VIRTIO_NET_F_MAC) | VT_BIT(VIRTIO_NET_F_MRG_RXBUF) | VT_BIT(VIRTIO_F_EVENT_IDX),
	    0, &o, &log);
	REQUIRE(dev);
	struct vt_driver *drv = NULL;
	struct vt_driver_params p = {
		.ops = &vt_local_transport_ops,
		.transport = dev,
		.supported = VT_BIT(VIRTIO_NET_F_MAC) | VT_BIT(VIRTIO_F_EVENT_IDX) |
			     VT_BIT(VIRTIO_F_RING_PACKED),
		.log = &log,
	};
	REQUIRE_EQ(vt_driver_new(&p, &drv), 0);
	REQUIRE_EQ(vt_driver_negotiate(drv), 0);
	uint64_t expect = V1 | VT_BIT(VIRTIO_NET_F_MAC) | VT_BIT(VIRTIO_F_EVENT_IDX);
	CHECK(vt_driver_features(drv) == expect);
	CHECK(vt_device_features(dev) == expect);
	CHECK_EQ(vt_device_status(dev), S_ACK | S_DRV | S_FOK);
	REQUIRE_EQ(vt_driver_ready(drv), 0);
	CHECK_EQ(vt_device_status(dev), S_ACK | S_DRV | S_FOK | S_DOK);
	CHECK_EQ(vt_driver_dma_mode(drv), VT_DMA_DIRECT);
	vt_driver_free(drv);
	vt_device_free(dev);
}

/* A transport that can lie about what the device offers and bump config under a read. */
static uint64_t fake_offer;
static uint32_t fake_device_id(void *t)
{
	return vt_device_id(((struct observer *)t)->dev);
}
static uint64_t fake_get_features(void *t)
{
	(void)t;
	return fake_offer;
}
static int fake_set_features(void *t, uint64_t f)
{
	return vt_device_set_driver_features(((struct observer *)t)->dev, f);
}
static uint8_t fake_get_status(void *t)
{
	return vt_device_status(((struct observer *)t)->dev);
}
static int fake_set_status(void *t, uint8_t s)
{
	return vt_device_set_status(((struct observer *)t)->dev, s);
}
static int fake_read_config(void *t, uint32_t off, void *buf, uint32_t len)
{
	struct observer *o = t;
	if (o->bump_on_read) {
		uint8_t v = (uint8_t)(0x40 + o->bump_on_read);
		o->bump_on_read--;
		vt_device_config_update(o->dev, 0, &v, 1);
	}
	return vt_device_config_read(o->dev, off, buf, len);
}
static uint32_t fake_generation(void *t)
{
	return vt_device_config_generation(((struct observer *)t)->dev);
}
static const struct vt_transport_ops fake_ops = {
	.device_id = fake_device_id,
	.get_device_features = fake_get_features,
	.set_driver_features = fake_set_features,
	.get_status = fake_get_status,
	.set_status = fake_set_status,
	.read_config = fake_read_config,
	.config_generation = fake_generation,
};

VT_TEST(driver_refuses_a_legacy_device_without_version_1)
{
	struct observer o = { 0 };
	struct vt_log log;
	REQUIRE(make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log));
	fake_offer = VT_BIT(VIRTIO_BLK_F_FLUSH);
	struct vt_driver *drv = NULL;
	struct vt_driver_params p = { .ops = &fake_ops, .transport = &o, .log = &log };
	REQUIRE_EQ(vt_driver_new(&p, &drv), 0);
	CHECK_EQ(vt_driver_negotiate(drv), -ENOTSUP);
	CHECK(vt_device_status(o.dev) & VIRTIO_CONFIG_S_FAILED);
	vt_driver_free(drv);
	vt_device_free(o.dev);
}

VT_TEST(driver_sees_the_device_refuse_features_ok)
{
	struct observer o = { 0 };
	struct vt_log log;
	/* The transport claims an offer the device does not make: the device must refuse. */
	REQUIRE(make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log));
	fake_offer = V1 | VT_BIT(VIRTIO_BLK_F_FLUSH);
	struct vt_driver *drv = NULL;
	struct vt_driver_params p = {
		.ops = &fake_ops,
		.transport = &o,
		.supported = VT_BIT(VIRTIO_BLK_F_FLUSH),
		.log = &log,
	};
	REQUIRE_EQ(vt_driver_new(&p, &drv), 0);
	CHECK_EQ(vt_driver_negotiate(drv), -EPROTO);
	CHECK(vt_driver_features(drv) == 0);
	CHECK(vt_device_status(o.dev) & VIRTIO_CONFIG_S_FAILED);
	CHECK(!(vt_device_status(o.dev) & S_FOK));
	vt_driver_free(drv);
	vt_device_free(o.dev);
}

VT_TEST(driver_config_read_retries_until_generation_is_stable)
{
	struct observer o = { 0 };
	struct vt_log log;
	REQUIRE(make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log));
	fake_offer = V1;
	struct vt_driver *drv = NULL;
	struct vt_driver_params p = { .ops = &fake_ops, .transport = &o, .log = &log };
	REQUIRE_EQ(vt_driver_new(&p, &drv), 0);
	REQUIRE_EQ(vt_driver_negotiate(drv), 0);
	uint32_t gen = vt_device_config_generation(o.dev);
	o.bump_on_read = 3; /* the device changes config during the first three reads */
	uint8_t v = 0;
	CHECK_EQ(vt_driver_config_read(drv, 0, &v, 1), 0);
	CHECK_EQ(v, 0x41); /* the value of the last change, read in a stable generation */
	CHECK_EQ(vt_device_config_generation(o.dev), gen + 3);
	/* A device that never settles: a bounded number of tries, then -EAGAIN. */
	o.bump_on_read = 1000;
	CHECK_EQ(vt_driver_config_read(drv, 0, &v, 1), -EAGAIN);
	vt_driver_free(drv);
	vt_device_free(o.dev);
}

VT_TEST(config_change_notifies_only_after_driver_ok)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, 0, 0, &o, &log);
	REQUIRE(dev);
	uint8_t v = 9;
	CHECK_EQ(vt_device_config_update(dev, 3, &v, 1), 0);
	CHECK_EQ(o.config_changed, 0);
	REQUIRE(accept_features(dev, V1));
	REQUIRE_EQ(vt_device_set_status(dev, S_ACK | S_DRV | S_FOK | S_DOK), 0);
	CHECK_EQ(vt_device_config_update(dev, 3, &v, 1), 0);
	CHECK_EQ(o.config_changed, 1);
	/* Out of range: refused, nothing changes. */
	uint32_t gen = vt_device_config_generation(dev);
	CHECK_EQ(vt_device_config_update(dev, 15, "ab", 2), -EINVAL);
	CHECK_EQ(vt_device_config_read(dev, 16, &v, 1), -EINVAL);
	CHECK_EQ(vt_device_config_read(dev, 0xffffffffu, &v, 2), -EINVAL);
	CHECK_EQ(vt_device_config_generation(dev), gen);
	/* No config_write hook: driver writes are refused. */
	CHECK_EQ(vt_device_config_write(dev, 0, &v, 1), -EPERM);
	vt_device_free(dev);
}

static struct vt_driver *restricted_driver(struct vt_device *dev, struct vt_log *log,
					   uint64_t supported)
{
	struct vt_driver *drv = NULL;
	struct vt_driver_params p = {
		.ops = &vt_local_transport_ops,
		.transport = dev,
		.supported = supported,
		.restricted_memory = true,
		.platform_dma = VT_DMA_IOMMU_STRICT,
		.log = log,
	};
	return vt_driver_new(&p, &drv) == 0 ? drv : NULL;
}

VT_TEST(restricted_memory_fails_cleanly_without_access_platform)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev =
	    make_device(VIRTIO_ID_BLOCK, VT_BIT(VIRTIO_BLK_F_FLUSH), 0, &o, &log);
	REQUIRE(dev);
	struct vt_driver *drv = restricted_driver(dev, &log, AP | VT_BIT(VIRTIO_BLK_F_FLUSH));
	REQUIRE(drv);
	CHECK_EQ(vt_driver_negotiate(drv), -EPERM);
	CHECK(vt_driver_features(drv) == 0);
	CHECK(vt_device_status(dev) & VIRTIO_CONFIG_S_FAILED);
	CHECK(!(vt_device_status(dev) & S_FOK));
	CHECK_EQ(o.errors, 1);
	vt_driver_free(drv);
	vt_device_free(dev);
}

VT_TEST(restricted_memory_fails_when_the_driver_itself_cannot_accept_access_platform)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, AP, 0, &o, &log);
	REQUIRE(dev);
	struct vt_driver *drv = restricted_driver(dev, &log, 0);
	REQUIRE(drv);
	CHECK_EQ(vt_driver_negotiate(drv), -EPERM);
	vt_driver_free(drv);
	vt_device_free(dev);
}

VT_TEST(restricted_memory_negotiates_platform_dma_with_access_platform)
{
	struct observer o = { 0 };
	struct vt_log log;
	struct vt_device *dev = make_device(VIRTIO_ID_BLOCK, AP, 0, &o, &log);
	REQUIRE(dev);
	struct vt_driver *drv = restricted_driver(dev, &log, AP);
	REQUIRE(drv);
	REQUIRE_EQ(vt_driver_negotiate(drv), 0);
	CHECK(vt_uses_platform_dma(vt_driver_features(drv)));
	CHECK(vt_uses_platform_dma(vt_device_features(dev)));
	CHECK_EQ(vt_driver_dma_mode(drv), VT_DMA_IOMMU_STRICT);
	vt_driver_free(drv);
	vt_device_free(dev);
}

VT_TEST(dma_mode_follows_negotiation_not_the_platform)
{
	/* The same platform (an IOMMU), two devices: only the negotiated bit decides. */
	CHECK_EQ(vt_dma_mode_for(V1, VT_DMA_IOMMU_LAZY), VT_DMA_DIRECT);
	CHECK_EQ(vt_dma_mode_for(V1 | AP, VT_DMA_IOMMU_LAZY), VT_DMA_IOMMU_LAZY);
	CHECK_EQ(vt_dma_mode_for(V1 | AP, VT_DMA_BOUNCE), VT_DMA_BOUNCE);
	CHECK(!vt_uses_platform_dma(~AP));
	CHECK(vt_uses_platform_dma(AP));
}

VT_TEST(barrier_kind_follows_order_platform)
{
	CHECK_EQ(vt_barrier_kind(V1), VT_BARRIERS_WEAK);
	CHECK_EQ(vt_barrier_kind(V1 | VT_BIT(VIRTIO_F_ORDER_PLATFORM)), VT_BARRIERS_PLATFORM);
	/* Both strengths run (they are fences; this checks they exist and do not fault). */
	vt_mb(VT_BARRIERS_WEAK);
	vt_rmb(VT_BARRIERS_PLATFORM);
	vt_wmb(VT_BARRIERS_PLATFORM);
	vt_mb(VT_BARRIERS_PLATFORM);
}

VT_TEST(device_refuses_to_require_what_it_does_not_offer)
{
	struct vt_device *dev = NULL;
	struct vt_device_params p = {
		.device_id = VIRTIO_ID_NET,
		.offered = VT_BIT(VIRTIO_NET_F_MQ) | VT_BIT(VIRTIO_NET_F_CTRL_VQ),
		.required = AP,
		.log = &(struct vt_log){ .fn = count_log, .opaque = &(struct observer){ 0 } },
	};
	CHECK_EQ(vt_device_new(&p, &dev), -EINVAL);
	p.required = VT_BIT(VIRTIO_NET_F_MQ); /* MQ needs CTRL_VQ, which is not required */
	CHECK_EQ(vt_device_new(&p, &dev), -EINVAL);
	p.required = VT_BIT(VIRTIO_NET_F_MQ) | VT_BIT(VIRTIO_NET_F_CTRL_VQ);
	CHECK_EQ(vt_device_new(&p, &dev), 0);
	vt_device_free(dev);
}
