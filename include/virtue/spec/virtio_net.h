/* SPDX-License-Identifier: MIT */
/*
 * virtio-net (virtio 1.3 section 5.1): feature bits, configuration layout, the per-packet header
 * and the control virtqueue's command format.
 */
#ifndef VIRTUE_SPEC_VIRTIO_NET_H
#define VIRTUE_SPEC_VIRTIO_NET_H

#include <stdint.h>

#include "endian.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM		 0
#define VIRTIO_NET_F_GUEST_CSUM		 1
#define VIRTIO_NET_F_CTRL_GUEST_OFFLOADS 2
#define VIRTIO_NET_F_MTU		 3
#define VIRTIO_NET_F_MAC		 5
#define VIRTIO_NET_F_GSO		 6 /* legacy */
#define VIRTIO_NET_F_GUEST_TSO4		 7
#define VIRTIO_NET_F_GUEST_TSO6		 8
#define VIRTIO_NET_F_GUEST_ECN		 9
#define VIRTIO_NET_F_GUEST_UFO		 10
#define VIRTIO_NET_F_HOST_TSO4		 11
#define VIRTIO_NET_F_HOST_TSO6		 12
#define VIRTIO_NET_F_HOST_ECN		 13
#define VIRTIO_NET_F_HOST_UFO		 14
#define VIRTIO_NET_F_MRG_RXBUF		 15
#define VIRTIO_NET_F_STATUS		 16
#define VIRTIO_NET_F_CTRL_VQ		 17
#define VIRTIO_NET_F_CTRL_RX		 18
#define VIRTIO_NET_F_CTRL_VLAN		 19
#define VIRTIO_NET_F_CTRL_RX_EXTRA	 20
#define VIRTIO_NET_F_GUEST_ANNOUNCE	 21
#define VIRTIO_NET_F_MQ			 22
#define VIRTIO_NET_F_CTRL_MAC_ADDR	 23
#define VIRTIO_NET_F_DEVICE_STATS	 50
#define VIRTIO_NET_F_HASH_TUNNEL	 51
#define VIRTIO_NET_F_VQ_NOTF_COAL	 52
#define VIRTIO_NET_F_NOTF_COAL		 53
#define VIRTIO_NET_F_GUEST_USO4		 54
#define VIRTIO_NET_F_GUEST_USO6		 55
#define VIRTIO_NET_F_HOST_USO		 56
#define VIRTIO_NET_F_HASH_REPORT	 57
#define VIRTIO_NET_F_GUEST_HDRLEN	 59
#define VIRTIO_NET_F_RSS		 60
#define VIRTIO_NET_F_RSC_EXT		 61
#define VIRTIO_NET_F_STANDBY		 62
#define VIRTIO_NET_F_SPEED_DUPLEX	 63

#define VIRTIO_NET_S_LINK_UP  1
#define VIRTIO_NET_S_ANNOUNCE 2

/* 5.1.4 Device configuration layout. */
struct virtio_net_config {
	uint8_t mac[6];
	vt_le16 status;
	vt_le16 max_virtqueue_pairs;
	vt_le16 mtu;
	vt_le32 speed;
	uint8_t duplex;
	uint8_t rss_max_key_size;
	vt_le16 rss_max_indirection_table_length;
	vt_le32 supported_hash_types;
	vt_le32 supported_tunnel_types;
};

/* 5.1.6 Device operation: the header in front of every packet. */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_F_RSC_INFO   4

#define VIRTIO_NET_HDR_GSO_NONE	  0
#define VIRTIO_NET_HDR_GSO_TCPV4  1
#define VIRTIO_NET_HDR_GSO_UDP	  3
#define VIRTIO_NET_HDR_GSO_TCPV6  4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#define VIRTIO_NET_HDR_GSO_ECN	  0x80

/* num_buffers is always present in modern devices (VERSION_1), used with MRG_RXBUF. */
struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	vt_le16 hdr_len;
	vt_le16 gso_size;
	vt_le16 csum_start;
	vt_le16 csum_offset;
	vt_le16 num_buffers;
};

/* With HASH_REPORT negotiated the header grows by these fields. */
struct virtio_net_hdr_hash {
	struct virtio_net_hdr hdr;
	vt_le32 hash_value;
	vt_le16 hash_report;
	vt_le16 padding_reserved;
};

/* 5.1.6.5 Control virtqueue: class and command, then command data, then an ack byte. */
struct virtio_net_ctrl_hdr {
	uint8_t class;
	uint8_t cmd;
};

#define VIRTIO_NET_OK  0
#define VIRTIO_NET_ERR 1

#define VIRTIO_NET_CTRL_RX	       0
#define VIRTIO_NET_CTRL_MAC	       1
#define VIRTIO_NET_CTRL_VLAN	       2
#define VIRTIO_NET_CTRL_ANNOUNCE       3
#define VIRTIO_NET_CTRL_MQ	       4
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS 5
#define VIRTIO_NET_CTRL_NOTF_COAL      6
#define VIRTIO_NET_CTRL_STATS	       8

#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN 1
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX 0x8000

struct virtio_net_ctrl_mq {
	vt_le16 virtqueue_pairs;
};

#endif
