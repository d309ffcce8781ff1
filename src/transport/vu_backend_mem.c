/* SPDX-License-Identifier: MIT */
/*
 * vhost-user back-end: the front-end's memory (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) and the
 * device IOTLB (IOTLB_MSG). Every region is checked before it is mapped (sizes, overflow, the fd
 * really holds that many bytes: mapping past the end of a file would turn a device access into
 * SIGBUS), and the table is swapped only with every I/O thread quiesced and every request in
 * flight completed, so no thread ever touches an unmapped range.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/vu_backend_impl.h"
#include "virtue/platform.h"

static int map_region(struct vt_vhost_backend *be, const struct vhost_user_memory_region *r, int fd,
		      struct vu_region *out)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t size = r->memory_size;
	struct stat st;

	if (size == 0 || r->guest_phys_addr + size - 1 < r->guest_phys_addr ||
	    r->userspace_addr + size - 1 < r->userspace_addr ||
	    r->mmap_offset + size < r->mmap_offset) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: region gpa 0x%llx size 0x%llx offset 0x%llx wraps or is empty",
		       be->name, (unsigned long long)r->guest_phys_addr, (unsigned long long)size,
		       (unsigned long long)r->mmap_offset);
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < r->mmap_offset + size) {
		vt_log(
		    be->log, VT_LOG_ERROR,
		    "%s: region gpa 0x%llx: offset 0x%llx + size 0x%llx past the fd's %lld bytes",
		    be->name, (unsigned long long)r->guest_phys_addr,
		    (unsigned long long)r->mmap_offset, (unsigned long long)size,
		    (long long)st.st_size);
		return -EINVAL;
	}
	uint64_t aligned = r->mmap_offset & ~(page - 1);
	uint64_t lead = r->mmap_offset - aligned;
	if (size > (uint64_t)SIZE_MAX - lead)
		return -EOVERFLOW;
	void *base = mmap(NULL, (size_t)(lead + size), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_NORESERVE, fd, (off_t)aligned);
	if (base == MAP_FAILED) {
		int err = -errno;
		vt_log(be->log, VT_LOG_ERROR, "%s: region gpa 0x%llx size 0x%llx: mmap: %s",
		       be->name, (unsigned long long)r->guest_phys_addr, (unsigned long long)size,
		       strerror(-err));
		return err;
	}
	*out = (struct vu_region){
		.gpa = r->guest_phys_addr,
		.size = size,
		.uaddr = r->userspace_addr,
		.map_base = base,
		.map_len = (size_t)(lead + size),
	};
	return 0;
}

static void unmap_region(struct vu_region *r)
{
	if (r->map_base)
		munmap(r->map_base, r->map_len);
	r->map_base = NULL;
}

static struct vt_mem_region table_entry(const struct vu_region *r)
{
	return (struct vt_mem_region){
		.gpa = r->gpa,
		.size = r->size,
		.hva = (uint8_t *)r->map_base + (r->map_len - r->size),
		.uaddr = r->uaddr,
	};
}

/* Regions must not overlap in driver-physical addresses: try them on a scratch table first. */
static int check_no_overlap(struct vt_vhost_backend *be, const struct vu_region *regions,
			    unsigned int n)
{
	struct vt_memtable *scratch = vt_memtable_new(be->log);
	int rc = 0;

	if (!scratch)
		return -ENOMEM;
	for (unsigned int i = 0; i < n && rc == 0; i++) {
		struct vt_mem_region e = table_entry(&regions[i]);
		rc = vt_memtable_add(scratch, &e);
	}
	vt_memtable_free(scratch);
	if (rc < 0)
		vt_log(be->log, VT_LOG_ERROR, "%s: memory regions overlap or are too many",
		       be->name);
	return rc;
}

int vu_mem_set_table(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_user_memory *m = &msg->payload.memory;
	struct vu_region fresh[VHOST_MEMORY_BASELINE_NREGIONS] = { 0 };
	unsigned int n = m->nregions, mapped = 0;
	int rc = 0;

	for (; mapped < n; mapped++) {
		rc = map_region(be, &m->regions[mapped], msg->fds[mapped], &fresh[mapped]);
		if (rc < 0)
			goto undo;
	}
	rc = check_no_overlap(be, fresh, n);
	if (rc < 0)
		goto undo;

	struct vu_region *old = malloc(sizeof(*old) * (be->nregions ? be->nregions : 1));
	if (!old) {
		rc = -ENOMEM;
		goto undo;
	}
	unsigned int nold = be->nregions;
	memcpy(old, be->regions, sizeof(*old) * nold);

	vu_quiesce(be);
	/* Requests in flight point into the old mappings: complete them first. */
	vu_drain_all_locked(be);
	vt_memtable_clear(be->mem);
	for (unsigned int i = 0; i < n; i++) {
		struct vt_mem_region e = table_entry(&fresh[i]);
		vt_memtable_add(be->mem, &e); /* cannot fail: checked on the scratch table */
		be->regions[i] = fresh[i];
	}
	be->nregions = n;
	/* IOTLB entries hold host addresses inside the old mappings. */
	vt_iotlb_invalidate_all(be->iotlb);
	vu_unquiesce(be);

	for (unsigned int i = 0; i < nold; i++)
		unmap_region(&old[i]);
	free(old);
	return 0;
undo:
	for (unsigned int i = 0; i < mapped; i++)
		unmap_region(&fresh[i]);
	return rc;
}

int vu_mem_add_region(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vu_region r = { 0 };
	int rc;

	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
		return -ENOTSUP;
	if (be->nregions >= VT_MEMTABLE_MAX_REGIONS)
		return -ENOSPC;
	rc = map_region(be, &msg->payload.memreg.region, msg->fds[0], &r);
	if (rc < 0)
		return rc;
	struct vt_mem_region e = table_entry(&r);
	vu_quiesce(be);
	rc = vt_memtable_add(be->mem, &e);
	if (rc == 0)
		be->regions[be->nregions++] = r;
	vu_unquiesce(be);
	if (rc < 0) {
		vt_log(be->log, VT_LOG_ERROR, "%s: ADD_MEM_REG gpa 0x%llx overlaps a region",
		       be->name, (unsigned long long)r.gpa);
		unmap_region(&r);
	}
	return rc;
}

int vu_mem_rem_region(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_user_memory_region *m = &msg->payload.memreg.region;
	unsigned int i;

	if (!vu_has_protocol(be, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
		return -ENOTSUP;
	for (i = 0; i < be->nregions; i++) {
		const struct vu_region *r = &be->regions[i];
		if (r->gpa == m->guest_phys_addr && r->size == m->memory_size &&
		    r->uaddr == m->userspace_addr)
			break;
	}
	if (i == be->nregions) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: REM_MEM_REG gpa 0x%llx size 0x%llx: no such region", be->name,
		       (unsigned long long)m->guest_phys_addr, (unsigned long long)m->memory_size);
		return -ENOENT;
	}
	struct vu_region gone = be->regions[i];
	vu_quiesce(be);
	vu_drain_all_locked(be);
	vt_memtable_remove(be->mem, gone.gpa, gone.size);
	be->regions[i] = be->regions[--be->nregions];
	vt_iotlb_invalidate_all(be->iotlb);
	vu_unquiesce(be);
	unmap_region(&gone);
	return 0;
}

void vu_mem_unmap_all(struct vt_vhost_backend *be)
{
	if (!be->regions || !be->nregions)
		return;
	vu_quiesce(be);
	vu_drain_all_locked(be);
	vt_memtable_clear(be->mem);
	vt_iotlb_invalidate_all(be->iotlb);
	vu_unquiesce(be);
	for (unsigned int i = 0; i < be->nregions; i++)
		unmap_region(&be->regions[i]);
	be->nregions = 0;
}

/* ------------------------------------------------------------------ IOTLB */

static int iotlb_update(struct vt_vhost_backend *be, const struct vhost_iotlb_msg *m)
{
	void *hva;

	if (m->size == 0 || m->perm == 0 || (m->perm & ~VHOST_ACCESS_RW)) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: IOTLB UPDATE iova 0x%llx size 0x%llx perm %u invalid", be->name,
		       (unsigned long long)m->iova, (unsigned long long)m->size, m->perm);
		return -EINVAL;
	}
	/* The front-end names its own addresses; they must lie in memory it shared. */
	int rc = vt_memtable_uaddr_to_hva(be->mem, m->uaddr, m->size, &hva);
	if (rc < 0) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: IOTLB UPDATE iova 0x%llx size 0x%llx: uaddr 0x%llx not in one shared "
		       "region",
		       be->name, (unsigned long long)m->iova, (unsigned long long)m->size,
		       (unsigned long long)m->uaddr);
		return rc;
	}
	/* VHOST_ACCESS_RO/WO/RW are the IOTLB's READ/WRITE bits. */
	rc = vt_iotlb_update(be->iotlb, m->iova, m->size, hva, m->perm);
	if (rc < 0)
		return rc;
	atomic_fetch_add_explicit(&be->iotlb_updates, 1, memory_order_relaxed);
	/*
	 * Parked queues retry. seq_cst against queue_park: a queue that parks after this bump sees
	 * it; one that parked before is counted here. No wake-up when none waits.
	 */
	atomic_fetch_add_explicit(&be->iotlb_seq, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&be->parked_queues, memory_order_seq_cst) > 0)
		vu_wake_all(be);
	return 0;
}

static int iotlb_invalidate(struct vt_vhost_backend *be, const struct vhost_iotlb_msg *m)
{
	if (m->size == 0)
		return -EINVAL;
	uint64_t size = m->size;
	if (m->iova + size < m->iova)
		size = 0 - m->iova; /* up to the top of the space */
	int rc = size ? vt_iotlb_invalidate(be->iotlb, m->iova, size) : 0;
	if (rc < 0)
		return rc;
	/*
	 * The front-end may reuse the range once we answer. vt_iotlb_invalidate already keeps new
	 * translations away; waiting for every I/O thread to finish its current pass retires ring
	 * pointers taken before it (the ring re-resolves them on the new generation), and draining
	 * completes requests whose buffers the kernel may still be filling. A well-behaved driver
	 * never unmaps a buffer in flight, so the drain usually finds nothing to wait for.
	 */
	vu_quiesce(be);
	vu_drain_all_locked(be);
	vu_unquiesce(be);
	atomic_fetch_add_explicit(&be->iotlb_invalidates, 1, memory_order_relaxed);
	return 0;
}

int vu_iotlb_msg(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_iotlb_msg *m = &msg->payload.iotlb;

	if (!be->features_set || !vt_uses_platform_dma(be->features)) {
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: IOTLB message without VIRTIO_F_ACCESS_PLATFORM negotiated", be->name);
		return -EPROTO;
	}
	switch (m->type) {
	case VHOST_IOTLB_UPDATE:
		return iotlb_update(be, m);
	case VHOST_IOTLB_INVALIDATE:
		return iotlb_invalidate(be, m);
	default:
		vt_log(be->log, VT_LOG_ERROR,
		       "%s: IOTLB message type %u not accepted from a front-end", be->name,
		       m->type);
		return -EINVAL;
	}
}
