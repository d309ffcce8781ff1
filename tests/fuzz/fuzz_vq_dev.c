/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the device half of both ring formats over fuzzer-controlled ring memory and a
 * fuzzer-chosen address space (the memory table, or an IOTLB with holes and read-only or
 * write-only windows). Whatever the driver wrote, the device half must never hand out an iovec
 * outside driver memory, never return a readable iovec for a write-only mapping (or the reverse),
 * never hand out an id it still holds, and never crash; broken queues must stay broken.
 *
 * Input: [0] format and features (0x40: take buffers in bursts, as many as the device can hold,
 * instead of one pop at a time; 0x80: a packed ring starts in wrap 0), [1] address space (bit 0:
 * IOTLB; bits 1-6: how many 5-byte windows follow: offset, length, permission, 0 making a hole,
 * bit 2 of the permission byte for the whole page at the offset instead of the length; bit 7:
 * the ring areas mapped a page at a time), then the bytes of driver memory (rings and buffers),
 * zero-filled to MEM_SIZE.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/iotlb.h>
#include <virtue/memtable.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/virtqueue.h>

#define MEM_SIZE  (64 * 1024)
#define MEM_GPA	  0x100000ull
#define QUEUE	  16
#define DESC_OFF  0x0000
#define AVAIL_OFF 0x1000
#define USED_OFF  0x2000
#define IOV_MAX	  16
#define WINDOWS	  8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Broken queues log once each; the fuzzer would drown in them. */
static void quiet(void *opaque, enum vt_log_level level, const char *message)
{
	(void)opaque, (void)level, (void)message;
}

static const struct vt_log quiet_log = { .fn = quiet };

static void check_iov(const struct iovec *iov, unsigned int n, const uint8_t *mem)
{
	for (unsigned int i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;
		if (p < mem || p + iov[i].iov_len > mem + MEM_SIZE || iov[i].iov_len == 0)
			__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t mode = data[0], space = data[1];
	data += 2;
	size -= 2;

	uint8_t *mem = aligned_alloc(4096, MEM_SIZE);
	if (!mem)
		return 0;
	memset(mem, 0, MEM_SIZE);

	struct vt_memtable *table = vt_memtable_new(&quiet_log);
	struct vt_iotlb *iotlb = NULL;
	struct vt_mem_region r = { .gpa = MEM_GPA, .size = MEM_SIZE, .hva = mem };
	vt_memtable_add(table, &r);
	struct vt_as as = vt_memtable_as(table);
	/* Permission each byte has, to check what the device half hands out. */
	static uint8_t perm[MEM_SIZE];
	memset(perm, VT_ACCESS_RW, sizeof(perm));

	if (space & 1) {
		struct vt_iotlb_params p = { .max_entries = 64, .log = &quiet_log };
		vt_iotlb_new(&p, &iotlb);
		memset(perm, 0, sizeof(perm));
		/*
		 * The ring areas, mapped as a driver would map them: one entry, or (bit 7) a
		 * page each, as a DMA API maps and a vIOMMU sends them. Then the sorted array
		 * may be empty, and whole-page windows take the page table's quickest fill.
		 */
		if (space & 0x80)
			for (uint32_t off = 0; off < 0x3000; off += 0x1000)
				vt_iotlb_update(iotlb, MEM_GPA + off, 0x1000, mem + off,
						VT_IOTLB_PERM_RW);
		else
			vt_iotlb_update(iotlb, MEM_GPA, 0x3000, mem, VT_IOTLB_PERM_RW);
		memset(perm, VT_ACCESS_RW, 0x3000);
		unsigned int windows = ((space >> 1) & 0x3f) % (WINDOWS + 1);
		for (unsigned int w = 0; w < windows && size >= 5; w++) {
			uint32_t off =
			    0x3000 + (((uint32_t)data[0] << 8 | data[1]) % (MEM_SIZE - 0x3000));
			uint32_t len = 1 + ((uint32_t)data[2] << 8 | data[3]) % 0x2000;
			unsigned int pm = data[4] % 4; /* 0: a hole */
			/*
			 * Bit 2: the page holding off, whole (mem is page aligned): what a DMA API
			 * and a vIOMMU map, which the IOTLB keeps in its page table and a burst's
			 * run reads from there (vt_as_page_entry).
			 */
			if (data[4] & 4) {
				off &= ~0xfffu;
				len = 0x1000;
			}
			data += 5;
			size -= 5;
			if (off + len > MEM_SIZE)
				len = MEM_SIZE - off;
			if (pm)
				vt_iotlb_update(iotlb, MEM_GPA + off, len, mem + off, pm);
			else
				vt_iotlb_invalidate(iotlb, MEM_GPA + off, len);
			memset(perm + off, pm, len);
		}
		as = vt_iotlb_as(iotlb);
	}
	memcpy(mem, data, size < MEM_SIZE ? size : MEM_SIZE);

	uint64_t features = VT_BIT(VIRTIO_F_VERSION_1);
	if (mode & 1)
		features |= VT_BIT(VIRTIO_F_RING_PACKED);
	if (mode & 2)
		features |= VT_BIT(VIRTIO_F_INDIRECT_DESC);
	if (mode & 4)
		features |= VT_BIT(VIRTIO_F_EVENT_IDX);
	if (mode & 8)
		features |= VT_BIT(VIRTIO_F_IN_ORDER);
	struct vt_vq_dev_params vp = {
		.num = QUEUE,
		.features = features,
		.desc_addr = MEM_GPA + DESC_OFF,
		.driver_addr = MEM_GPA + AVAIL_OFF,
		.device_addr = MEM_GPA + USED_OFF,
		.as = as,
		.max_chain = (mode >> 4) & 1 ? 4 : 0,
		/*
		 * A fresh packed ring starts at slot 0 in wrap 1 (2.8.1), as the seeds' flags
		 * say; mode bit 7 starts it in wrap 0, so that both wraps' ownership rules run.
		 */
		.next_avail = (mode & 1) && !(mode & 0x80) ? VT_VQ_PACKED_START : 0,
		.log = &quiet_log,
	};
	struct vt_vq_dev *vq = NULL;
	if (vt_vq_dev_new(&vp, &vq) == 0) {
		struct vt_vq_chain chains[QUEUE];
		unsigned int held = 0;
		for (int round = 0; round < 64; round++) {
			static struct iovec iov[QUEUE * IOV_MAX];
			/* Taken: how many chains (iovecs from iov[k * IOV_MAX]), or the error. */
			int ret;
			if (mode & 0x40) {
				ret = vt_vq_dev_pop_burst(vq, &chains[held], iov, IOV_MAX,
							  QUEUE - held);
			} else {
				ret = vt_vq_dev_pop(vq, &chains[held], iov, IOV_MAX);
				ret = ret == 0 ? 1 : ret;
			}
			if (ret == -EPROTO) {
				/* Broken stays broken. */
				if (vt_vq_dev_pop(vq, &chains[held], iov, IOV_MAX) != -EPROTO ||
				    !vt_vq_dev_is_broken(vq))
					__builtin_trap();
				break;
			}
			if (ret <= 0)
				break;
			for (int k = 0; k < ret; k++) {
				const struct vt_vq_chain *c = &chains[held + k];
				/* An id is handed out once until it is returned. */
				for (unsigned int h = 0; h < held + (unsigned int)k; h++)
					if (chains[h].id == c->id)
						__builtin_trap();
				const struct iovec *ck = &iov[k * IOV_MAX];
				check_iov(ck, c->nreadable + c->nwritable, mem);
				for (unsigned int i = 0; i < c->nreadable + c->nwritable; i++) {
					unsigned int need =
					    i < c->nreadable ? VT_ACCESS_READ : VT_ACCESS_WRITE;
					size_t off = (size_t)((uint8_t *)ck[i].iov_base - mem);
					for (size_t b = 0; b < ck[i].iov_len; b++)
						if (!(perm[off + b] & need))
							__builtin_trap();
				}
			}
			held += (unsigned int)ret;
			/* Return buffers now and then, as a device with some in flight would. */
			if (held == QUEUE || (mode & 0x20) || round % 3 == 0) {
				for (unsigned int h = 0; h < held; h++)
					vt_vq_dev_push(vq, &chains[h], chains[h].writable_bytes);
				vt_vq_dev_flush(vq);
				held = 0;
			}
		}
		vt_vq_dev_enable_notify(vq);
		vt_vq_dev_free(vq);
	}
	vt_iotlb_free(iotlb);
	vt_memtable_free(table);
	free(mem);
	return 0;
}
