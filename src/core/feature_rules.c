/* SPDX-License-Identifier: MIT */
/*
 * The spec's feature dependencies as data. Each row cites the section that states it; the
 * negotiation code (device.c, driver.c) and the tests read this table and nothing else, so a rule
 * is added here once and enforced on both sides.
 */
#include <errno.h>

#include <virtue/features.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_net.h>

#define B(x)	VT_BIT(x)
#define NET_REQ "5.1.3.1 Feature bit requirements"

static const struct vt_feature_rule rules[] = {
	/* virtio-net, 5.1.3.1. */
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_TSO4, B(VIRTIO_NET_F_GUEST_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_TSO6, B(VIRTIO_NET_F_GUEST_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_ECN, 0,
	  B(VIRTIO_NET_F_GUEST_TSO4) | B(VIRTIO_NET_F_GUEST_TSO6), NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_UFO, B(VIRTIO_NET_F_GUEST_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_USO4, B(VIRTIO_NET_F_GUEST_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_USO6, B(VIRTIO_NET_F_GUEST_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HOST_TSO4, B(VIRTIO_NET_F_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HOST_TSO6, B(VIRTIO_NET_F_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HOST_ECN, 0,
	  B(VIRTIO_NET_F_HOST_TSO4) | B(VIRTIO_NET_F_HOST_TSO6), NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HOST_UFO, B(VIRTIO_NET_F_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HOST_USO, B(VIRTIO_NET_F_CSUM), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_CTRL_RX, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_CTRL_VLAN, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_ANNOUNCE, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_MQ, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_CTRL_MAC_ADDR, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_NOTF_COAL, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_RSC_EXT, 0,
	  B(VIRTIO_NET_F_HOST_TSO4) | B(VIRTIO_NET_F_HOST_TSO6), NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_RSS, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_VQ_NOTF_COAL, B(VIRTIO_NET_F_CTRL_VQ), 0, NET_REQ },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HASH_TUNNEL, B(VIRTIO_NET_F_CTRL_VQ),
	  B(VIRTIO_NET_F_RSS) | B(VIRTIO_NET_F_HASH_REPORT), NET_REQ },
	/* 5.1.4.2: "SHOULD NOT negotiate ... if it does not negotiate VIRTIO_NET_F_CTRL_VQ". */
	{ VIRTIO_ID_NET, VIRTIO_NET_F_HASH_REPORT, B(VIRTIO_NET_F_CTRL_VQ), 0,
	  "5.1.4.2 Device configuration layout, driver requirements" },
	{ VIRTIO_ID_NET, VIRTIO_NET_F_CTRL_RX_EXTRA, B(VIRTIO_NET_F_CTRL_VQ), 0,
	  "5.1.4.2 Device configuration layout, driver requirements" },
	/*
	 * Transport bits. Every bit other than the legacy-only ones presupposes the modern
	 * interface; virtue is modern-only, so each requires VERSION_1 (6.1: "A driver MUST accept
	 * VIRTIO_F_VERSION_1 if it is offered").
	 */
	{ 0, VIRTIO_F_INDIRECT_DESC, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_EVENT_IDX, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_RING_PACKED, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_IN_ORDER, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_ACCESS_PLATFORM, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_ORDER_PLATFORM, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_SR_IOV, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_NOTIFICATION_DATA, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_NOTIF_CONFIG_DATA, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_RING_RESET, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
	{ 0, VIRTIO_F_ADMIN_VQ, B(VIRTIO_F_VERSION_1), 0, "6.1 Reserved Feature Bits" },
};

const struct vt_feature_rule *vt_feature_rules(size_t *count)
{
	*count = sizeof(rules) / sizeof(rules[0]);
	return rules;
}

static int rule_applies(const struct vt_feature_rule *r, uint32_t device_id, uint64_t features)
{
	return (r->device_id == 0 || r->device_id == device_id) && (features & VT_BIT(r->bit));
}

static int rule_holds(const struct vt_feature_rule *r, uint64_t features)
{
	if ((features & r->requires_all) != r->requires_all)
		return 0;
	return r->requires_any == 0 || (features & r->requires_any) != 0;
}

int vt_features_check_deps(uint32_t device_id, uint64_t features,
			   const struct vt_feature_rule **broken)
{
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		if (rule_applies(&rules[i], device_id, features) &&
		    !rule_holds(&rules[i], features)) {
			if (broken)
				*broken = &rules[i];
			return -EINVAL;
		}
	}
	return 0;
}

uint64_t vt_features_close_deps(uint32_t device_id, uint64_t features)
{
	/* Dropping a bit can break another rule (ECN after TSO4 and TSO6 went), so iterate. */
	for (;;) {
		uint64_t before = features;
		for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
			if (rule_applies(&rules[i], device_id, features) &&
			    !rule_holds(&rules[i], features))
				features &= ~VT_BIT(rules[i].bit);
		}
		if (features == before)
			return features;
	}
}
