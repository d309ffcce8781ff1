/* SPDX-License-Identifier: MIT */
/*
 * vhost-user front-end, memory: which memory the back-end gets (the driver's memfd regions, or
 * only a bounce window), the DMA object, the IOTLB messages its IOMMU modes publish, the table of
 * live mappings that misses are answered from, and the back-end channel thread that receives
 * those misses, access failures and config changes.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "transport/vhost_user_frontend_impl.h"
#include "virtue/platform.h"

#define DEFAULT_BOUNCE_WINDOW (4ull << 20)
#define DEFAULT_BOUNCE_GPA    (1ull << 40)
/* Live mappings the table holds: the DMA API's own bound, plus premapped regions. */
#define MAPPED_MAX_ENTRIES (1u << 18)

/* ------------------------------------------------------------------ memory table */

static struct vhost_user_memory_region region_desc(const struct vt_shm_region *r)
{
	return (struct vhost_user_memory_region){
		.guest_phys_addr = r->gpa,
		.memory_size = r->size,
		.userspace_addr = (uint64_t)(uintptr_t)r->hva,
		.mmap_offset = r->fd_offset,
	};
}

int fe_mem_share(struct vt_vu_frontend *fe)
{
	struct vt_shm *shm = fe->shared;
	unsigned int count = 0, total = vt_shm_count(shm);
	int rc;

	for (unsigned int i = 0; i < total; i++)
		if (vt_shm_region(shm, i)->fd >= 0)
			count++;
	if (count == 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: no memfd region to share with the back-end",
		       fe->name);
		return -EINVAL;
	}
	if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
		if (count > fe->max_mem_slots) {
			vt_log(fe->log, VT_LOG_ERROR, "%s: %u regions, the back-end takes %u",
			       fe->name, count, fe->max_mem_slots);
			return -ENOSPC;
		}
		for (unsigned int i = 0; i < total; i++) {
			const struct vt_shm_region *r = vt_shm_region(shm, i);
			if (r->fd < 0)
				continue;
			struct vt_vu_msg msg = {
				.hdr = { .request = VHOST_USER_ADD_MEM_REG,
					 .size = sizeof(struct vhost_user_memory_single) },
				.fds = { r->fd },
				.nfds = 1,
			};
			msg.payload.memreg.region = region_desc(r);
			rc = fe_request(fe, &msg, true);
			if (rc < 0)
				return rc;
			fe->regions_added = true;
		}
		return 0;
	}
	if (count > VHOST_MEMORY_BASELINE_NREGIONS) {
		vt_log(fe->log, VT_LOG_ERROR,
		       "%s: %u regions: SET_MEM_TABLE carries %u (no CONFIGURE_MEM_SLOTS)",
		       fe->name, count, VHOST_MEMORY_BASELINE_NREGIONS);
		return -ENOSPC;
	}
	struct vt_vu_msg msg = { .hdr.request = VHOST_USER_SET_MEM_TABLE };
	for (unsigned int i = 0; i < total; i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		if (r->fd < 0)
			continue;
		msg.payload.memory.regions[msg.nfds] = region_desc(r);
		msg.fds[msg.nfds++] = r->fd;
	}
	msg.payload.memory.nregions = msg.nfds;
	msg.hdr.size = (uint32_t)(offsetof(struct vhost_user_memory, regions) +
				  msg.nfds * sizeof(struct vhost_user_memory_region));
	return fe_request(fe, &msg, true);
}

void fe_mem_unshare(struct vt_vu_frontend *fe)
{
	if (fe->regions_added && fe->shared && !fe->broken) {
		for (unsigned int i = 0; i < vt_shm_count(fe->shared); i++) {
			const struct vt_shm_region *r = vt_shm_region(fe->shared, i);
			if (r->fd < 0)
				continue;
			struct vt_vu_msg msg = {
				.hdr = { .request = VHOST_USER_REM_MEM_REG,
					 .size = sizeof(struct vhost_user_memory_single) },
			};
			msg.payload.memreg.region = region_desc(r);
			fe_request(fe, &msg, true);
		}
	}
	fe->regions_added = false;
	fe->shared = NULL;
	if (fe->bounce) {
		vt_shm_free(fe->bounce);
		fe->bounce = NULL;
	}
}

/* ------------------------------------------------------------------ IOTLB publishing */

/*
 * @pipelined: not waited for. An UPDATE from the DMA API's map: the table already has it, so a
 * back-end that reads the buffer before it processed the UPDATE misses and is answered from the
 * table; the acknowledgements are collected before the kick that makes the buffer available, so
 * it normally does not. An INVALIDATE only from lazy mode's flush, which then waits for all of
 * them (fe_iotlb_sync) before any IOVA is reused; strict unmaps wait for each.
 */
/* The IOTLB_MSG of an UPDATE or INVALIDATE. */
static void iotlb_msg(struct vt_vu_msg *msg, uint8_t type, uint64_t iova, uint64_t size,
		      uint64_t uaddr, unsigned int perm)
{
	*msg = (struct vt_vu_msg){
		.hdr = { .request = VHOST_USER_IOTLB_MSG, .size = sizeof(struct vhost_iotlb_msg) },
	};
	msg->payload.iotlb = (struct vhost_iotlb_msg){
		.iova = iova,
		.size = size,
		.uaddr = uaddr,
		.perm = (uint8_t)perm,
		.type = type,
	};
}

static int send_iotlb_locked(struct vt_vu_frontend *fe, uint8_t type, uint64_t iova, uint64_t size,
			     uint64_t uaddr, unsigned int perm, bool pipelined)
{
	struct vt_vu_msg msg;
	iotlb_msg(&msg, type, iova, size, uaddr, perm);
	int rc = pipelined ? fe_request_pipelined_locked(fe, &msg, 1)
			   : fe_request_locked(fe, &msg, true);
	if (rc == 0)
		atomic_fetch_add_explicit(type == VHOST_IOTLB_UPDATE ? &fe->iotlb_updates
								     : &fe->iotlb_invalidations,
					  1, memory_order_relaxed);
	return rc;
}

/*
 * The table first, then the back-end: a miss answered meanwhile only repeats this update. A
 * refused update leaves the table as it was. VT_ACCESS_READ/WRITE are VHOST_ACCESS_RO/WO.
 *
 * The table is the IOMMU; a back-end's IOTLB only caches it. With no back-end connected (the
 * connection is latched broken, waiting for vt_vu_frontend_reconnect) a mapping or unmapping
 * changes the table alone and succeeds: the next back-end starts empty and learns the table
 * through misses, so the driver can go on posting buffers while its back-end restarts.
 */
static int fe_iotlb_update(void *opaque, uint64_t iova, uint64_t size, uint64_t uaddr,
			   unsigned int perm)
{
	struct vt_vu_frontend *fe = opaque;

	pthread_mutex_lock(&fe->io_lock);
	int rc = vt_iotlb_update(fe->mapped, iova, size, (void *)(uintptr_t)uaddr, perm);
	if (rc == 0) {
		rc = send_iotlb_locked(fe, VHOST_IOTLB_UPDATE, iova, size, uaddr, perm, true);
		if (rc < 0 && fe->broken)
			rc = 0;
		else if (rc < 0)
			vt_iotlb_invalidate(fe->mapped, iova, size);
	}
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

/* A burst's UPDATEs are sent this many at a time (messages on the stack). */
#define FE_UPDATE_GROUP 16u
_Static_assert(FE_UPDATE_GROUP <= FE_MAX_PIPELINED_ACKS,
	       "a group's acknowledgements must fit the pipeline's bound");

/*
 * A DMA burst's maps: as fe_iotlb_update for each, but the table takes them under one lock and
 * the back-end gets each group's UPDATEs in one sendmsg (vt_vu_msg_send_many) rather than a
 * system call per buffer.
 */
static unsigned int fe_iotlb_update_burst(void *opaque, const struct vt_dma_iotlb_map *maps,
					  unsigned int count, int *error)
{
	struct vt_vu_frontend *fe = opaque;
	struct vt_iotlb_entry e[FE_UPDATE_GROUP];
	struct vt_vu_msg msgs[FE_UPDATE_GROUP];
	unsigned int done = 0;

	pthread_mutex_lock(&fe->io_lock);
	while (done < count) {
		unsigned int want = count - done < FE_UPDATE_GROUP ? count - done : FE_UPDATE_GROUP;
		for (unsigned int i = 0; i < want; i++) {
			const struct vt_dma_iotlb_map *m = &maps[done + i];
			e[i] = (struct vt_iotlb_entry){ .iova = m->iova,
							.size = m->size,
							.hva = (void *)(uintptr_t)m->uaddr,
							.perm = m->perm };
		}
		int table_rc = 0;
		unsigned int made = vt_iotlb_update_burst(fe->mapped, e, want, &table_rc);
		for (unsigned int i = 0; i < made; i++) {
			const struct vt_dma_iotlb_map *m = &maps[done + i];
			iotlb_msg(&msgs[i], VHOST_IOTLB_UPDATE, m->iova, m->size, m->uaddr,
				  m->perm);
		}
		int rc = made ? fe_request_pipelined_locked(fe, msgs, made) : 0;
		if (rc == 0)
			atomic_fetch_add_explicit(&fe->iotlb_updates, made, memory_order_relaxed);
		else if (!fe->broken) {
			/* Not published: the table forgets them too, as fe_iotlb_update does. */
			for (unsigned int i = 0; i < made; i++)
				vt_iotlb_invalidate(fe->mapped, e[i].iova, e[i].size);
			*error = rc;
			break;
		}
		/* Sent, or no back-end (then the table alone is the IOMMU, see fe_iotlb_update). */
		done += made;
		if (made < want) {
			*error = table_rc;
			break;
		}
	}
	pthread_mutex_unlock(&fe->io_lock);
	return done;
}

/* The table first: from here on no miss is answered for the range, then the back-end forgets. */
static int invalidate(struct vt_vu_frontend *fe, uint64_t iova, uint64_t size, bool wait)
{
	pthread_mutex_lock(&fe->io_lock);
	vt_iotlb_invalidate(fe->mapped, iova, size);
	int rc = send_iotlb_locked(fe, VHOST_IOTLB_INVALIDATE, iova, size, 0, 0, !wait);
	if (rc < 0 && fe->broken)
		rc = 0;
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

static int fe_iotlb_invalidate(void *opaque, uint64_t iova, uint64_t size)
{
	return invalidate(opaque, iova, size, true);
}

static int fe_iotlb_invalidate_nowait(void *opaque, uint64_t iova, uint64_t size)
{
	return invalidate(opaque, iova, size, false);
}

/* Every acknowledgement owed: the invalidations sent without waiting have taken effect. */
static int fe_iotlb_sync(void *opaque)
{
	struct vt_vu_frontend *fe = opaque;

	pthread_mutex_lock(&fe->io_lock);
	int rc = fe_collect_acks_locked(fe);
	if (rc < 0 && fe->broken)
		rc = 0; /* no back-end: the table alone is the IOMMU */
	pthread_mutex_unlock(&fe->io_lock);
	return rc;
}

static const struct vt_dma_iotlb_ops fe_iotlb_ops = {
	.update = fe_iotlb_update,
	.update_burst = fe_iotlb_update_burst,
	.invalidate = fe_iotlb_invalidate,
	.invalidate_nowait = fe_iotlb_invalidate_nowait,
	.sync = fe_iotlb_sync,
};

/* ------------------------------------------------------------------ DMA object */

static int bounce_memory(struct vt_vu_frontend *fe, uint64_t size)
{
	const struct vt_shm_region *r;
	uint64_t gpa =
	    fe->params.bounce_window_gpa ? fe->params.bounce_window_gpa : DEFAULT_BOUNCE_GPA;
	int rc = vt_shm_new(&fe->bounce);
	if (rc == 0)
		rc = vt_shm_add_memfd(fe->bounce, size, gpa, &r);
	if (rc < 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: bounce window of %llu bytes: %s", fe->name,
		       (unsigned long long)size, strerror(-rc));
		return rc;
	}
	fe->window_iova = r->gpa;
	fe->window_size = r->size;
	return 0;
}

int fe_dma_create(struct vt_vu_frontend *fe)
{
	enum vt_dma_mode mode = vt_driver_dma_mode(fe->drv);
	uint64_t window =
	    fe->params.bounce_window_size ? fe->params.bounce_window_size : DEFAULT_BOUNCE_WINDOW;
	int rc;

	/*
	 * Bounce: the back-end is given the window and nothing else, in memory of its own. The
	 * other modes share the driver's memory; under ACCESS_PLATFORM the back-end still reaches
	 * it only through translations this front-end publishes.
	 */
	if (mode == VT_DMA_BOUNCE) {
		rc = bounce_memory(fe, window);
		if (rc < 0)
			return rc;
		fe->shared = fe->bounce;
	} else if (!fe->params.shm) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: no shared memory given (params.shm)", fe->name);
		return -EINVAL;
	} else {
		fe->shared = fe->params.shm;
	}
	rc = fe_mem_share(fe);
	if (rc == 0 && fe->platform) {
		struct vt_iotlb_params ip = { .max_entries = MAPPED_MAX_ENTRIES,
					      .full_policy = VT_IOTLB_FULL_REFUSE,
					      .log = fe->log };
		struct vt_iotlb *mapped;
		rc = vt_iotlb_new(&ip, &mapped);
		if (rc == 0) {
			pthread_mutex_lock(&fe->io_lock);
			fe->mapped = mapped;
			pthread_mutex_unlock(&fe->io_lock);
		}
	}
	if (rc < 0)
		goto fail;

	struct vt_dma_params dp = {
		.mode = mode,
		.shm = fe->shared,
		.log = fe->log,
		.iotlb_ops = &fe_iotlb_ops,
		.iotlb_opaque = fe,
		.lazy_batch = fe->params.lazy_batch,
		.bounce_window_size = fe->window_size,
	};
	rc = vt_dma_new(&dp, &fe->dma);
	if (rc < 0) {
		vt_log(fe->log, VT_LOG_ERROR, "%s: DMA (%s): %s", fe->name, vt_dma_mode_name(mode),
		       strerror(-rc));
		goto fail;
	}
	if (mode == VT_DMA_BOUNCE && fe->platform) {
		/* The window is the device's whole view: published once, read-write. */
		const struct vt_shm_region *r = vt_shm_region(fe->bounce, 0);
		rc = fe_iotlb_update(fe, r->gpa, r->size, (uint64_t)(uintptr_t)r->hva,
				     VT_IOTLB_PERM_RW);
		if (rc < 0)
			goto fail;
		fe->window_mapped = true;
	}
	return 0;
fail:
	fe_dma_destroy(fe);
	fe_mem_unshare(fe);
	return rc;
}

void fe_dma_destroy(struct vt_vu_frontend *fe)
{
	if (fe->dma) {
		vt_dma_free(fe->dma); /* lazy: the last invalidations; premapped: its regions */
		fe->dma = NULL;
	}
	if (fe->window_mapped) {
		fe_iotlb_invalidate(fe, fe->window_iova, fe->window_size);
		fe->window_mapped = false;
	}
	pthread_mutex_lock(&fe->io_lock);
	struct vt_iotlb *mapped = fe->mapped;
	fe->mapped = NULL;
	pthread_mutex_unlock(&fe->io_lock);
	if (mapped)
		vt_iotlb_free(mapped);
}

int fe_ring_addr(struct vt_vu_frontend *fe, uint64_t bus, uint64_t len, uint64_t *out)
{
	void *hva;

	/* Under ACCESS_PLATFORM ring addresses are IOVAs, like every other address. */
	if (fe->platform) {
		*out = bus;
		return 0;
	}
	int rc = vt_vu_frontend_bus_to_hva(fe, bus, len, VT_ACCESS_RW, &hva);
	if (rc == 0)
		*out = (uint64_t)(uintptr_t)hva;
	return rc;
}

int vt_vu_frontend_bus_to_hva(struct vt_vu_frontend *fe, uint64_t bus, uint64_t len,
			      unsigned int access, void **hva)
{
	if (len == 0 || bus + len < bus)
		return -EINVAL;
	if (fe->platform) {
		struct vt_iotlb_entry e;
		int rc = -EFAULT;
		pthread_mutex_lock(&fe->io_lock);
		if (fe->mapped && vt_iotlb_lookup(fe->mapped, bus, &e) == 0) {
			if (bus + len - e.iova > e.size)
				rc = -EFAULT;
			else if ((e.perm & access) != access)
				rc = -EACCES;
			else {
				*hva = (uint8_t *)e.hva + (bus - e.iova);
				rc = 0;
			}
		}
		pthread_mutex_unlock(&fe->io_lock);
		return rc;
	}
	struct vt_shm *shm = fe->shared ? fe->shared : fe->params.shm;
	for (unsigned int i = 0; shm && i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		if (bus >= r->gpa && bus - r->gpa < r->size && len <= r->size - (bus - r->gpa)) {
			*hva = (uint8_t *)r->hva + (bus - r->gpa);
			return 0;
		}
	}
	return -EFAULT;
}

/* ------------------------------------------------------------------ faults */

void fe_fault(struct vt_vu_frontend *fe, uint64_t iova, unsigned int perm)
{
	uint64_t one = 1;

	atomic_store_explicit(&fe->last_fault_iova, iova, memory_order_relaxed);
	atomic_store_explicit(&fe->last_fault_perm, perm, memory_order_relaxed);
	/* The eventfd write publishes the fault to vt_vu_frontend_wait's poll. */
	if (write(fe->fault_fd, &one, sizeof(one)) < 0) {
		/* Saturated: the fault is already visible. */
	}
}

void fe_clear_fault(struct vt_vu_frontend *fe)
{
	uint64_t v;

	if (fe->fault_fd >= 0 && read(fe->fault_fd, &v, sizeof(v)) < 0) {
		/* Nothing pending (EAGAIN). */
	}
}

/* ------------------------------------------------------------------ the back-end channel */

static const char *perm_name(unsigned int perm)
{
	static const char *const names[] = { "none", "read", "write", "read-write" };
	return names[perm & 3];
}

/*
 * Answers a miss only from the table: the address mapped with the access asked. -EPROTO when no
 * table exists (ACCESS_PLATFORM not negotiated: the back-end has no business missing).
 */
static int answer_miss(struct vt_vu_frontend *fe, const struct vhost_iotlb_msg *m)
{
	unsigned int need = m->perm & VHOST_ACCESS_RW;
	struct vt_iotlb_entry e;
	bool mapped = false;
	uint64_t suppressed;
	int rc = -ENOENT;

	pthread_mutex_lock(&fe->io_lock);
	if (!fe->mapped) {
		pthread_mutex_unlock(&fe->io_lock);
		return -EPROTO;
	}
	atomic_fetch_add_explicit(&fe->misses, 1, memory_order_relaxed);
	if (need && m->perm == need && vt_iotlb_lookup(fe->mapped, m->iova, &e) == 0)
		mapped = (e.perm & need) == need;
	if (mapped)
		rc = send_iotlb_locked(fe, VHOST_IOTLB_UPDATE, e.iova, e.size,
				       (uint64_t)(uintptr_t)e.hva, e.perm, false);
	pthread_mutex_unlock(&fe->io_lock);
	if (rc == 0) {
		atomic_fetch_add_explicit(&fe->misses_answered, 1, memory_order_relaxed);
		vt_log(fe->log, VT_LOG_DEBUG, "%s: IOTLB miss at 0x%llx answered", fe->name,
		       (unsigned long long)m->iova);
		return 0;
	}
	if (mapped)
		return 0; /* the update itself failed (logged; the connection is latched) */
	atomic_fetch_add_explicit(&fe->misses_denied, 1, memory_order_relaxed);
	fe_fault(fe, m->iova, m->perm);
	if (fe_ratelimit(&fe->miss_log, &suppressed))
		vt_log(fe->log, VT_LOG_ERROR,
		       "%s: IOTLB miss for %s at iova 0x%llx: not mapped with that access, not "
		       "answered: the back-end's access must fail (%llu more suppressed)",
		       fe->name, perm_name(m->perm), (unsigned long long)m->iova,
		       (unsigned long long)suppressed);
	return 0;
}

static void access_fail(struct vt_vu_frontend *fe, const struct vhost_iotlb_msg *m)
{
	uint64_t suppressed;

	atomic_fetch_add_explicit(&fe->access_fails, 1, memory_order_relaxed);
	fe_fault(fe, m->iova, m->perm);
	if (fe_ratelimit(&fe->fail_log, &suppressed))
		vt_log(fe->log, VT_LOG_ERROR,
		       "%s: back-end reports a failed %s access at iova 0x%llx (%llu more "
		       "suppressed)",
		       fe->name, perm_name(m->perm), (unsigned long long)m->iova,
		       (unsigned long long)suppressed);
}

static int bad_message(struct vt_vu_frontend *fe, const struct vt_vu_msg *msg, const char *why)
{
	uint64_t suppressed;

	atomic_fetch_add_explicit(&fe->bad_backend_messages, 1, memory_order_relaxed);
	if (fe_ratelimit(&fe->bad_log, &suppressed))
		vt_log(fe->log, VT_LOG_ERROR,
		       "%s: back-end channel: request %u (%u bytes) refused: %s (%llu more "
		       "suppressed)",
		       fe->name, msg->hdr.request, msg->hdr.size, why,
		       (unsigned long long)suppressed);
	return -EPROTO;
}

static int channel_message(struct vt_vu_frontend *fe, struct vt_vu_msg *msg)
{
	if (msg->nfds) {
		vt_vu_msg_close_fds(msg);
		return bad_message(fe, msg, "fds on a request that carries none");
	}
	if (msg->hdr.flags & VHOST_USER_REPLY_MASK)
		return bad_message(fe, msg, "a reply where a request was expected");
	switch (msg->hdr.request) {
	case VHOST_USER_BACKEND_IOTLB_MSG:
		if (msg->hdr.size != sizeof(struct vhost_iotlb_msg))
			return bad_message(fe, msg, "IOTLB message of the wrong size");
		if (msg->payload.iotlb.type == VHOST_IOTLB_MISS) {
			if (answer_miss(fe, &msg->payload.iotlb) < 0)
				return bad_message(fe, msg, "IOTLB miss without ACCESS_PLATFORM");
			return 0;
		}
		if (msg->payload.iotlb.type == VHOST_IOTLB_ACCESS_FAIL) {
			access_fail(fe, &msg->payload.iotlb);
			return 0;
		}
		return bad_message(fe, msg, "IOTLB message type not sent by a back-end");
	case VHOST_USER_BACKEND_CONFIG_CHANGE_MSG:
		if (msg->hdr.size != 0 && msg->hdr.size != sizeof(uint64_t))
			return bad_message(fe, msg, "CONFIG_CHANGE_MSG of the wrong size");
		/* Release: a config read that sees the new generation retries after it. */
		atomic_fetch_add_explicit(&fe->config_generation, 1, memory_order_release);
		atomic_fetch_add_explicit(&fe->config_changes, 1, memory_order_relaxed);
		if (fe->params.config_changed)
			fe->params.config_changed(fe->params.opaque);
		return 0;
	default:
		return bad_message(fe, msg, "request not supported on the back-end channel");
	}
}

static void *channel_main(void *arg)
{
	struct vt_vu_frontend *fe = arg;
	struct vt_vu_msg *msg = calloc(1, sizeof(*msg));

	while (msg) {
		struct pollfd pfd[2] = { { .fd = fe->chan, .events = POLLIN },
					 { .fd = fe->chan_stop, .events = POLLIN } };
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		int rc = vt_vu_msg_recv(fe->chan, msg);
		if (rc == -ECONNRESET)
			break;
		if (rc < 0) {
			bad_message(fe, msg, "unreadable: the channel is closed");
			break;
		}
		rc = channel_message(fe, msg);
		if (msg->hdr.flags & VHOST_USER_NEED_REPLY) {
			struct vt_vu_msg reply = {
				.hdr = { .request = msg->hdr.request,
					 .flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK,
					 .size = sizeof(uint64_t) },
			};
			reply.payload.u64 = rc < 0 ? 1 : 0;
			vt_vu_msg_send(fe->chan, &reply);
		}
	}
	/* A back-end that asks again now gets an error at once instead of waiting on us. */
	shutdown(fe->chan, SHUT_RDWR);
	free(msg);
	return NULL;
}

int fe_channel_start(struct vt_vu_frontend *fe)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	struct vt_vu_msg msg = {
		.hdr.request = VHOST_USER_SET_BACKEND_REQ_FD,
		.fds = { sv[1] },
		.nfds = 1,
	};
	int rc = fe_request(fe, &msg, true);
	close(sv[1]);
	if (rc < 0) {
		close(sv[0]);
		return rc;
	}
	/* Bounds a message that starts and stalls, and our replies to a back-end that stops. */
	struct timeval tv = { .tv_sec = fe->timeout_ms / 1000,
			      .tv_usec = (fe->timeout_ms % 1000) * 1000 };
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	fe->chan = sv[0];
	rc = pthread_create(&fe->chan_thread, NULL, channel_main, fe);
	if (rc) {
		close(fe->chan);
		fe->chan = -1;
		return -rc;
	}
	fe->chan_running = true;
	return 0;
}

void fe_channel_stop(struct vt_vu_frontend *fe)
{
	uint64_t one = 1;

	if (fe->chan_running) {
		if (write(fe->chan_stop, &one, sizeof(one)) < 0) {
			/* Cannot fail on a fresh eventfd. */
		}
		pthread_join(fe->chan_thread, NULL);
		fe->chan_running = false;
		/* Consumed, so that a channel started again (reconnect) does not stop at once. */
		if (read(fe->chan_stop, &one, sizeof(one)) < 0) {
			/* Cannot fail: the write above made it readable. */
		}
	}
	if (fe->chan >= 0)
		close(fe->chan);
	fe->chan = -1;
}
