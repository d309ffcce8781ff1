/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): message header, request codes
 * in both directions, protocol feature bits and payload layouts. Numbers are in the host's byte
 * order, as the protocol specifies (both ends run on the same host).
 */
#ifndef VIRTUE_SPEC_VHOST_USER_H
#define VIRTUE_SPEC_VHOST_USER_H

#include <stdint.h>

/* Header flags. */
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_VERSION	0x1u
#define VHOST_USER_REPLY_MASK	(1u << 2) /* set on every back-end reply */
#define VHOST_USER_NEED_REPLY	(1u << 3) /* REPLY_ACK: the sender wants a u64 status back */

/* Front-end to back-end requests. */
enum vhost_user_request {
	VHOST_USER_NONE = 0,
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_LOG_BASE = 6,
	VHOST_USER_SET_LOG_FD = 7,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_SEND_RARP = 19,
	VHOST_USER_NET_SET_MTU = 20,
	VHOST_USER_SET_BACKEND_REQ_FD = 21,
	VHOST_USER_IOTLB_MSG = 22,
	VHOST_USER_SET_VRING_ENDIAN = 23,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_CREATE_CRYPTO_SESSION = 26,
	VHOST_USER_CLOSE_CRYPTO_SESSION = 27,
	VHOST_USER_POSTCOPY_ADVISE = 28,
	VHOST_USER_POSTCOPY_LISTEN = 29,
	VHOST_USER_POSTCOPY_END = 30,
	VHOST_USER_GET_INFLIGHT_FD = 31,
	VHOST_USER_SET_INFLIGHT_FD = 32,
	VHOST_USER_GPU_SET_SOCKET = 33,
	VHOST_USER_RESET_DEVICE = 34,
	VHOST_USER_VRING_KICK = 35,
	VHOST_USER_GET_MAX_MEM_SLOTS = 36,
	VHOST_USER_ADD_MEM_REG = 37,
	VHOST_USER_REM_MEM_REG = 38,
	VHOST_USER_SET_STATUS = 39,
	VHOST_USER_GET_STATUS = 40,
	VHOST_USER_REQUEST__COUNT,
};

/* Back-end to front-end requests, on the channel given by SET_BACKEND_REQ_FD. */
enum vhost_user_backend_request {
	VHOST_USER_BACKEND_NONE = 0,
	VHOST_USER_BACKEND_IOTLB_MSG = 1,
	VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = 2,
	VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG = 3,
};

/* Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
#define VHOST_USER_PROTOCOL_F_MQ		   0
#define VHOST_USER_PROTOCOL_F_LOG_SHMFD		   1
#define VHOST_USER_PROTOCOL_F_RARP		   2
#define VHOST_USER_PROTOCOL_F_REPLY_ACK		   3
#define VHOST_USER_PROTOCOL_F_NET_MTU		   4
#define VHOST_USER_PROTOCOL_F_BACKEND_REQ	   5
#define VHOST_USER_PROTOCOL_F_CROSS_ENDIAN	   6
#define VHOST_USER_PROTOCOL_F_CRYPTO_SESSION	   7
#define VHOST_USER_PROTOCOL_F_PAGEFAULT		   8
#define VHOST_USER_PROTOCOL_F_CONFIG		   9
#define VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD	   10
#define VHOST_USER_PROTOCOL_F_HOST_NOTIFIER	   11
#define VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD	   12
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE	   13
#define VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS 14
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS  15
#define VHOST_USER_PROTOCOL_F_STATUS		   16

/* Most fds one message carries; the most regions SET_MEM_TABLE describes. */
#define VHOST_USER_MAX_FDS	       8
#define VHOST_MEMORY_BASELINE_NREGIONS 8
/* Largest GET/SET_CONFIG access. */
#define VHOST_USER_MAX_CONFIG_SIZE 256

struct vhost_user_header {
	uint32_t request;
	uint32_t flags;
	uint32_t size; /* payload bytes that follow */
};

/* SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE. */
struct vhost_vring_state {
	uint32_t index;
	uint32_t num;
};

/* SET_VRING_ADDR: ring addresses are IOVAs under ACCESS_PLATFORM, else front-end addresses. */
struct vhost_vring_addr {
	uint32_t index;
	uint32_t flags; /* VHOST_VRING_F_LOG */
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
};
#define VHOST_VRING_F_LOG 0x1u

/* SET_VRING_KICK/CALL/ERR payload: the queue index, and whether an fd came with it. */
#define VHOST_USER_VRING_IDX_MASK  0xffu
#define VHOST_USER_VRING_NOFD_MASK (1u << 8)

struct vhost_user_memory_region {
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
};

/* SET_MEM_TABLE: the header and then nregions regions (the payload size says how many). */
struct vhost_user_memory {
	uint32_t nregions;
	uint32_t padding;
	struct vhost_user_memory_region regions[VHOST_MEMORY_BASELINE_NREGIONS];
};

/* ADD_MEM_REG, REM_MEM_REG. */
struct vhost_user_memory_single {
	uint64_t padding;
	struct vhost_user_memory_region region;
};

/* IOTLB_MSG in both directions (the kernel's struct vhost_iotlb_msg, 32 bytes with padding). */
struct vhost_iotlb_msg {
	uint64_t iova;
	uint64_t size;
	uint64_t uaddr;
	uint8_t perm; /* VHOST_ACCESS_* */
	uint8_t type; /* VHOST_IOTLB_* */
};
#define VHOST_ACCESS_RO		0x1
#define VHOST_ACCESS_WO		0x2
#define VHOST_ACCESS_RW		0x3
#define VHOST_IOTLB_MISS	1
#define VHOST_IOTLB_UPDATE	2
#define VHOST_IOTLB_INVALIDATE	3
#define VHOST_IOTLB_ACCESS_FAIL 4

/* GET_CONFIG, SET_CONFIG: the fixed part, then `size` bytes of config space. */
struct vhost_user_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags; /* VHOST_SET_CONFIG_TYPE_* */
	uint8_t region[VHOST_USER_MAX_CONFIG_SIZE];
};
#define VHOST_USER_CONFIG_HDR_SIZE	12u
#define VHOST_SET_CONFIG_TYPE_FRONTEND	0
#define VHOST_SET_CONFIG_TYPE_MIGRATION 1

/* GET_INFLIGHT_FD, SET_INFLIGHT_FD. */
struct vhost_user_inflight {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
};

/*
 * Inflight tracking (INFLIGHT_SHMFD, "Inflight I/O tracking"): per queue, a region in a shared
 * buffer the front-end keeps across back-end restarts, recording which buffers the back-end had
 * taken and not yet returned. Split layout; each queue's region starts 64-byte aligned.
 */
struct vhost_user_inflight_desc_split {
	uint8_t inflight; /* head descriptor taken and not yet used */
	uint8_t padding[5];
	uint16_t next;	  /* links the last batch of used heads */
	uint64_t counter; /* order in which heads were taken */
};

struct vhost_user_inflight_split {
	uint64_t features;
	uint16_t version; /* 1; 0: not initialized */
	uint16_t desc_num;
	uint16_t last_batch_head;
	uint16_t used_idx; /* used->idx when the last batch was complete */
	struct vhost_user_inflight_desc_split desc[];
};
/* Packed layout: copies of the descriptors taken, in entries linked into a free list. */
struct vhost_user_inflight_desc_packed {
	uint8_t inflight; /* head entry of a buffer taken and not yet used */
	uint8_t padding;
	uint16_t next;	  /* next free entry, or the next entry of the same buffer */
	uint16_t last;	  /* head entry: the buffer's last entry */
	uint16_t num;	  /* head entry: descriptors the buffer occupies */
	uint64_t counter; /* head entry: order in which buffers were taken */
	uint16_t id;	  /* the descriptor as the driver wrote it */
	uint16_t flags;
	uint32_t len;
	uint64_t addr;
};

struct vhost_user_inflight_packed {
	uint64_t features;
	uint16_t version; /* 1; 0: not initialized */
	uint16_t desc_num;
	uint16_t free_head;
	uint16_t old_free_head; /* free_head when the last take or batch completed */
	uint16_t used_idx;
	uint16_t old_used_idx;
	uint8_t used_wrap_counter;
	uint8_t old_used_wrap_counter;
	uint8_t padding[7];
	struct vhost_user_inflight_desc_packed desc[];
};

#define VHOST_USER_INFLIGHT_ALIGN 64

/* The largest payload any request carries. */
union vhost_user_payload {
	uint64_t u64;
	struct vhost_vring_state state;
	struct vhost_vring_addr addr;
	struct vhost_user_memory memory;
	struct vhost_user_memory_single memreg;
	struct vhost_iotlb_msg iotlb;
	struct vhost_user_config config;
	struct vhost_user_inflight inflight;
};

#endif
