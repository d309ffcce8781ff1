/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net driver's view of the configuration space (5.1.4): each field read only when its
 * feature is negotiated and the bytes given hold it, values the spec forbids refused, and the
 * result printed for people.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <virtue/net_driver.h>

#define NET_F(bit) VT_BIT(VIRTIO_NET_F_##bit)

/* The end of a config field, to check @len holds it. */
#define FIELD_END(field)                                                                           \
	(offsetof(struct virtio_net_config, field) + sizeof(((struct virtio_net_config *)0)->field))
#define FIELD_AT(field) offsetof(struct virtio_net_config, field)

/* 5.1.4.1: "The device MUST NOT set mtu to below 68." */
#define MIN_MTU 68u

static uint16_t get16(const uint8_t *c, size_t off)
{
	return (uint16_t)(c[off] | c[off + 1] << 8);
}

uint32_t vt_net_hdr_len(uint64_t features)
{
	/* Only VERSION_1 devices are driven: num_buffers is always there (5.1.6.1). */
	(void)features;
	return (uint32_t)sizeof(struct virtio_net_hdr);
}

int vt_net_config_decode(const void *config, size_t len, uint64_t features,
			 struct vt_net_info *info)
{
	const uint8_t *c = config;

	memset(info, 0, sizeof(*info));
	info->features = features;
	info->hdr_len = vt_net_hdr_len(features);
	info->status = VIRTIO_NET_S_LINK_UP;
	info->link_up = true;
	info->max_virtqueue_pairs = 1;
	info->max_frame = VT_NET_DEFAULT_FRAME;
	if (!c)
		len = 0;

	if (features & NET_F(MAC)) {
		if (len < FIELD_END(mac))
			return -EINVAL;
		info->has_mac = true;
		memcpy(info->mac, c + FIELD_AT(mac), sizeof(info->mac));
	}
	if (features & NET_F(STATUS)) {
		if (len < FIELD_END(status))
			return -EINVAL;
		info->has_status = true;
		info->status = get16(c, FIELD_AT(status));
		info->link_up = (info->status & VIRTIO_NET_S_LINK_UP) != 0;
	}
	if (features & NET_F(MQ)) {
		if (len < FIELD_END(max_virtqueue_pairs))
			return -EINVAL;
		/* 5.1.4.1: between VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN and _MAX inclusive. */
		uint16_t pairs = get16(c, FIELD_AT(max_virtqueue_pairs));
		if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN ||
		    pairs > VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)
			return -EINVAL;
		info->max_virtqueue_pairs = pairs;
	}
	if (features & NET_F(MTU)) {
		if (len < FIELD_END(mtu))
			return -EINVAL;
		info->mtu = get16(c, FIELD_AT(mtu));
		if (info->mtu < MIN_MTU)
			return -EINVAL;
		if (info->mtu + VT_NET_ETH_HLEN > info->max_frame)
			info->max_frame = info->mtu + VT_NET_ETH_HLEN;
	}
	return 0;
}

/* Appends to a bounded buffer, remembering the length the whole text needs (as snprintf). */
struct out {
	char *buf;
	size_t size, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *at = o->len < o->size ? o->buf + o->len : NULL;
	size_t room = o->len < o->size ? o->size - o->len : 0;
	int n = vsnprintf(at, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

int vt_net_info_str(const struct vt_net_info *info, char *buf, size_t size)
{
	struct out o = { buf, size, 0 };
	if (size > 0)
		buf[0] = '\0';
	if (info->has_mac)
		put(&o, "mac: %02x:%02x:%02x:%02x:%02x:%02x\n", info->mac[0], info->mac[1],
		    info->mac[2], info->mac[3], info->mac[4], info->mac[5]);
	else
		put(&o, "mac: (not offered: the driver picks one)\n");
	if (info->has_status)
		put(&o, "link: %s%s\n", info->link_up ? "up" : "down",
		    info->status & VIRTIO_NET_S_ANNOUNCE ? ", announce" : "");
	else
		put(&o, "link: up (no STATUS: assumed)\n");
	put(&o, "queue pairs: %u\n", info->max_virtqueue_pairs);
	if (info->mtu)
		put(&o, "mtu: %u\n", info->mtu);
	else
		put(&o, "mtu: (not advertised)\n");
	put(&o, "max frame: %u bytes\n", info->max_frame);
	put(&o, "header: %u bytes\n", info->hdr_len);
	return (int)o.len;
}
