/* SPDX-License-Identifier: MIT */
/*
 * Feature and status names. Tables indexed by bit: transport bits (24..41, plus vhost-user's bit
 * 30) for every device, then one table per device type for the device-specific bits.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <virtue/features.h>
#include <virtue/spec/virtio_blk.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_net.h>

#define NAME(prefix, n) [prefix##n] = #n

static const char *const transport_names[64] = {
	NAME(VIRTIO_F_, NOTIFY_ON_EMPTY),
	NAME(VIRTIO_F_, ANY_LAYOUT),
	NAME(VIRTIO_F_, INDIRECT_DESC),
	NAME(VIRTIO_F_, EVENT_IDX),
	[VHOST_USER_F_PROTOCOL_FEATURES] = "PROTOCOL_FEATURES",
	NAME(VIRTIO_F_, VERSION_1),
	NAME(VIRTIO_F_, ACCESS_PLATFORM),
	NAME(VIRTIO_F_, RING_PACKED),
	NAME(VIRTIO_F_, IN_ORDER),
	NAME(VIRTIO_F_, ORDER_PLATFORM),
	NAME(VIRTIO_F_, SR_IOV),
	NAME(VIRTIO_F_, NOTIFICATION_DATA),
	NAME(VIRTIO_F_, NOTIF_CONFIG_DATA),
	NAME(VIRTIO_F_, RING_RESET),
	NAME(VIRTIO_F_, ADMIN_VQ),
};

static const char *const blk_names[64] = {
	NAME(VIRTIO_BLK_F_, BARRIER),	   NAME(VIRTIO_BLK_F_, SIZE_MAX),
	NAME(VIRTIO_BLK_F_, SEG_MAX),	   NAME(VIRTIO_BLK_F_, GEOMETRY),
	NAME(VIRTIO_BLK_F_, RO),	   NAME(VIRTIO_BLK_F_, BLK_SIZE),
	NAME(VIRTIO_BLK_F_, SCSI),	   NAME(VIRTIO_BLK_F_, FLUSH),
	NAME(VIRTIO_BLK_F_, TOPOLOGY),	   NAME(VIRTIO_BLK_F_, CONFIG_WCE),
	NAME(VIRTIO_BLK_F_, MQ),	   NAME(VIRTIO_BLK_F_, DISCARD),
	NAME(VIRTIO_BLK_F_, WRITE_ZEROES), NAME(VIRTIO_BLK_F_, LIFETIME),
	NAME(VIRTIO_BLK_F_, SECURE_ERASE), NAME(VIRTIO_BLK_F_, ZONED),
};

static const char *const net_names[64] = {
	NAME(VIRTIO_NET_F_, CSUM),
	NAME(VIRTIO_NET_F_, GUEST_CSUM),
	NAME(VIRTIO_NET_F_, CTRL_GUEST_OFFLOADS),
	NAME(VIRTIO_NET_F_, MTU),
	NAME(VIRTIO_NET_F_, MAC),
	NAME(VIRTIO_NET_F_, GSO),
	NAME(VIRTIO_NET_F_, GUEST_TSO4),
	NAME(VIRTIO_NET_F_, GUEST_TSO6),
	NAME(VIRTIO_NET_F_, GUEST_ECN),
	NAME(VIRTIO_NET_F_, GUEST_UFO),
	NAME(VIRTIO_NET_F_, HOST_TSO4),
	NAME(VIRTIO_NET_F_, HOST_TSO6),
	NAME(VIRTIO_NET_F_, HOST_ECN),
	NAME(VIRTIO_NET_F_, HOST_UFO),
	NAME(VIRTIO_NET_F_, MRG_RXBUF),
	NAME(VIRTIO_NET_F_, STATUS),
	NAME(VIRTIO_NET_F_, CTRL_VQ),
	NAME(VIRTIO_NET_F_, CTRL_RX),
	NAME(VIRTIO_NET_F_, CTRL_VLAN),
	NAME(VIRTIO_NET_F_, CTRL_RX_EXTRA),
	NAME(VIRTIO_NET_F_, GUEST_ANNOUNCE),
	NAME(VIRTIO_NET_F_, MQ),
	NAME(VIRTIO_NET_F_, CTRL_MAC_ADDR),
	NAME(VIRTIO_NET_F_, DEVICE_STATS),
	NAME(VIRTIO_NET_F_, HASH_TUNNEL),
	NAME(VIRTIO_NET_F_, VQ_NOTF_COAL),
	NAME(VIRTIO_NET_F_, NOTF_COAL),
	NAME(VIRTIO_NET_F_, GUEST_USO4),
	NAME(VIRTIO_NET_F_, GUEST_USO6),
	NAME(VIRTIO_NET_F_, HOST_USO),
	NAME(VIRTIO_NET_F_, HASH_REPORT),
	NAME(VIRTIO_NET_F_, GUEST_HDRLEN),
	NAME(VIRTIO_NET_F_, RSS),
	NAME(VIRTIO_NET_F_, RSC_EXT),
	NAME(VIRTIO_NET_F_, STANDBY),
	NAME(VIRTIO_NET_F_, SPEED_DUPLEX),
};

static const char *const *device_names(uint32_t device_id)
{
	switch (device_id) {
	case VIRTIO_ID_NET:
		return net_names;
	case VIRTIO_ID_BLOCK:
		return blk_names;
	default:
		return NULL;
	}
}

static int is_transport_bit(unsigned int bit)
{
	return bit >= VIRTIO_TRANSPORT_F_START && bit < VIRTIO_TRANSPORT_F_END;
}

const char *vt_feature_name(uint32_t device_id, unsigned int bit)
{
	if (bit >= 64)
		return NULL;
	if (is_transport_bit(bit))
		return transport_names[bit];
	const char *const *names = device_names(device_id);
	return names ? names[bit] : NULL;
}

static const char *strip_prefix(const char *name)
{
	/* Accept "VIRTIO_F_X", "VIRTIO_BLK_F_X", "VHOST_USER_F_X" as well as "X". */
	const char *f = strcasestr(name, "_F_");
	if (f && (strncasecmp(name, "VIRTIO_", 7) == 0 || strncasecmp(name, "VHOST_", 6) == 0))
		return f + 3;
	return name;
}

int vt_feature_parse(uint32_t device_id, const char *name, unsigned int *bit)
{
	const char *bare = strip_prefix(name);
	for (unsigned int b = 0; b < 64; b++) {
		const char *n = vt_feature_name(device_id, b);
		if (n && strcasecmp(n, bare) == 0) {
			*bit = b;
			return 0;
		}
	}
	return -ENOENT;
}

/* Appends @word (space-separated) to @buf, counting the full length as snprintf does. */
static void append(char *buf, size_t size, size_t *len, const char *word)
{
	const char *sep = *len ? " " : "";
	if (*len < size)
		snprintf(buf + *len, size - *len, "%s%s", sep, word);
	*len += strlen(sep) + strlen(word);
}

size_t vt_features_str(uint32_t device_id, uint64_t features, char *buf, size_t size)
{
	size_t len = 0;

	if (size)
		buf[0] = '\0';
	if (!features) {
		append(buf, size, &len, "(none)");
		return len;
	}
	for (unsigned int b = 0; b < 64; b++) {
		if (!(features & (1ULL << b)))
			continue;
		const char *n = vt_feature_name(device_id, b);
		char unknown[16];
		if (!n) {
			snprintf(unknown, sizeof(unknown), "bit%u", b);
			n = unknown;
		}
		append(buf, size, &len, n);
	}
	return len;
}

const char *vt_device_type_name(uint32_t device_id)
{
	switch (device_id) {
	case VIRTIO_ID_NET:
		return "net";
	case VIRTIO_ID_BLOCK:
		return "blk";
	case VIRTIO_ID_CONSOLE:
		return "console";
	case VIRTIO_ID_RNG:
		return "rng";
	default:
		return NULL;
	}
}

size_t vt_status_str(uint8_t status, char *buf, size_t size)
{
	static const struct {
		uint8_t bit;
		const char *name;
	} bits[] = {
		{ VIRTIO_CONFIG_S_ACKNOWLEDGE, "ACKNOWLEDGE" },
		{ VIRTIO_CONFIG_S_DRIVER, "DRIVER" },
		{ VIRTIO_CONFIG_S_FEATURES_OK, "FEATURES_OK" },
		{ VIRTIO_CONFIG_S_DRIVER_OK, "DRIVER_OK" },
		{ VIRTIO_CONFIG_S_NEEDS_RESET, "DEVICE_NEEDS_RESET" },
		{ VIRTIO_CONFIG_S_FAILED, "FAILED" },
	};
	size_t len = 0;
	uint8_t known = 0;

	if (size)
		buf[0] = '\0';
	if (!status) {
		append(buf, size, &len, "(reset)");
		return len;
	}
	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		known |= bits[i].bit;
		if (status & bits[i].bit)
			append(buf, size, &len, bits[i].name);
	}
	for (unsigned int b = 0; b < 8; b++) {
		if ((status & ~known) & (1u << b)) {
			char unknown[16];
			snprintf(unknown, sizeof(unknown), "bit%u", b);
			append(buf, size, &len, unknown);
		}
	}
	return len;
}
