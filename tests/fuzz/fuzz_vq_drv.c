/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the driver half of both ring formats against a hostile device: the driver posts a few
 * buffers, then the fuzzer writes whatever it likes where a device may write (the used ring for
 * split, the descriptor ring for packed). The driver must hand back only tokens it posted, each
 * once, never a length above the buffer's writable size, and stay broken once broken; every
 * buffer not collected must come back from detach_unused.
 *
 * Input: [0] format and features (0x10: collect in bursts, of 1 + (the byte >> 5) buffers at
 * most, instead of one get at a time), [1] how many buffers to post, then the device-written
 * bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/dma.h>
#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#define QUEUE	 16
#define MEM_SIZE (256 * 1024)
#define MEM_GPA	 0x200000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(void *opaque, enum vt_log_level level, const char *message)
{
	(void)opaque, (void)level, (void)message;
}

static const struct vt_log quiet_log = { .fn = quiet };

struct posted {
	uint8_t buf[3][64];
	uint32_t writable;
	int state; /* 0 idle, 1 posted, 2 returned */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t mode = data[0];
	unsigned int count = 1 + data[1] % QUEUE;
	data += 2;
	size -= 2;

	static uint8_t mem[MEM_SIZE] __attribute__((aligned(4096)));
	memset(mem, 0, sizeof(mem));
	struct vt_shm *shm = NULL;
	const struct vt_shm_region *region;
	struct vt_dma *dma = NULL;
	struct vt_vq_drv *vq = NULL;
	static struct posted posted[QUEUE];
	memset(posted, 0, sizeof(posted));

	if (vt_shm_new(&shm) < 0 || vt_shm_add_host(shm, mem, MEM_SIZE, MEM_GPA, &region) < 0)
		goto out;
	struct vt_dma_params dp = { .mode = VT_DMA_DIRECT, .shm = shm, .log = &quiet_log };
	if (vt_dma_new(&dp, &dma) < 0)
		goto out;
	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1);
	if (mode & 1)
		features |= VT_BIT(VIRTIO_F_RING_PACKED);
	if (mode & 2)
		features |= VT_BIT(VIRTIO_F_INDIRECT_DESC);
	if (mode & 4)
		features |= VT_BIT(VIRTIO_F_EVENT_IDX);
	if (mode & 8)
		features |= VT_BIT(VIRTIO_F_IN_ORDER);
	struct vt_vq_drv_params qp = {
		.num = QUEUE, .features = features, .dma = dma, .log = &quiet_log
	};
	if (vt_vq_drv_new(&qp, &vq) < 0)
		goto out;

	/* Buffers live in shared memory too (direct DMA needs that). */
	struct posted *pool = NULL;
	if (vt_shm_alloc(shm, sizeof(posted), 64, (void **)&pool) < 0)
		goto out;
	memset(pool, 0, sizeof(posted));
	for (unsigned int i = 0; i < count; i++) {
		unsigned int segs = 1 + (i + mode) % 3, readable = (i % 2) ? 1 : 0;
		if (readable > segs)
			readable = segs;
		struct iovec sg[3];
		pool[i].writable = 0;
		for (unsigned int s = 0; s < segs; s++) {
			sg[s] = (struct iovec){ pool[i].buf[s], 16 + 8 * s };
			if (s >= readable)
				pool[i].writable += (uint32_t)sg[s].iov_len;
		}
		if (vt_vq_drv_add(vq, sg, readable, segs - readable, &pool[i]) < 0)
			break;
		pool[i].state = 1;
	}
	vt_vq_drv_kick_prepare(vq);

	/* The device's turn: anything at all where it may write. */
	uint64_t desc, driver, device;
	vt_vq_drv_addrs(vq, &desc, &driver, &device);
	uint64_t target = (mode & 1) ? desc : device;
	size_t room = (mode & 1) ? 16 * QUEUE : 4 + 8 * QUEUE + 2;
	memcpy(mem + (target - MEM_GPA), data, size < room ? size : room);

	for (int round = 0; round < 2 * QUEUE; round++) {
		void *tokens[8];
		uint32_t lens[8];
		/* Collected: how many (tokens[], lens[]), or the error. */
		int ret;
		if (mode & 0x10) {
			ret = vt_vq_drv_get_burst(vq, tokens, lens, 1 + (mode >> 5));
		} else {
			ret = vt_vq_drv_get(vq, &tokens[0], &lens[0]);
			ret = ret == 0 ? 1 : ret;
		}
		if (ret == -EPROTO) {
			if (!vt_vq_drv_is_broken(vq) ||
			    vt_vq_drv_get(vq, &tokens[0], &lens[0]) != -EPROTO)
				__builtin_trap();
			break;
		}
		if (ret <= 0)
			break;
		for (int k = 0; k < ret; k++) {
			struct posted *p = tokens[k];
			if (p < pool || p >= pool + QUEUE || p->state != 1 || lens[k] > p->writable)
				__builtin_trap();
			p->state = 2;
		}
	}
	vt_vq_drv_enable_cb(vq);
	/* Whatever was not collected comes back exactly once. */
	void *token;
	while ((token = vt_vq_drv_detach_unused(vq)) != NULL) {
		struct posted *p = token;
		if (p < pool || p >= pool + QUEUE || p->state != 1)
			__builtin_trap();
		p->state = 2;
	}
	for (unsigned int i = 0; i < QUEUE; i++)
		if (pool[i].state == 1)
			__builtin_trap();
	vt_shm_release(shm, pool, sizeof(posted));
out:
	vt_vq_drv_free(vq);
	if (dma)
		vt_dma_free(dma);
	vt_shm_free(shm);
	return 0;
}
