/* SPDX-License-Identifier: MIT */
/*
 * vhost-user back-end: rings and the I/O threads that run them. The control thread collects a
 * ring's settings (SET_VRING_NUM/ADDR/BASE, the kick, call and err fds) and starts it when the
 * kick fd arrives; GET_VRING_BASE stops it after its requests complete. An I/O thread waits on the
 * kick fds and model event fds of its queues, and polls the model; a queue that meets an IOTLB
 * miss asks the front-end and parks until an UPDATE arrives, without holding up its neighbours.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "transport/vu_backend_impl.h"
#include "virtue/platform.h"

/* Polls a queue this many times per wake-up before letting its neighbours run. */
#define VU_POLL_BUDGET 16
#define VU_WAKE_TAG    UINT64_MAX

static uint64_t tag_of(unsigned int index, bool model_event)
{
	return ((uint64_t)index << 1) | (model_event ? 1 : 0);
}

static void drain_eventfd(int fd)
{
	uint64_t v;

	if (fd >= 0 && read(fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing pending; the fd is non-blocking or level-checked by epoll. */
	}
}

static void signal_call(struct vu_queue *q)
{
	uint64_t one = 1;

	if (q->call_fd < 0)
		return;
	if (write(q->call_fd, &one, sizeof(one)) == sizeof(one))
		atomic_fetch_add_explicit(&q->calls, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ queue failure paths */

static void queue_break(struct vu_queue *q, const char *why)
{
	struct vt_vhost_backend *be = q->be;
	uint64_t one = 1;

	if (q->broken)
		return;
	q->broken = true;
	vt_log(be->log, VT_LOG_ERROR, "%s: stopped: %s", q->name, why);
	vt_device_needs_reset(be->dev, why);
	if (q->err_fd >= 0 && write(q->err_fd, &one, sizeof(one)) < 0) {
		/* The front-end learns it from GET_STATUS (NEEDS_RESET) as well. */
	}
}

static uint8_t vhost_perm(unsigned int access)
{
	return (uint8_t)(access & VHOST_ACCESS_RW);
}

/* Tells the front-end about a fault on its back-end channel: a MISS or an ACCESS_FAIL. */
static int send_fault(struct vu_queue *q, const struct vt_as_fault *fault, uint8_t type)
{
	struct vt_vu_msg msg = { 0 };

	msg.hdr.request = VHOST_USER_BACKEND_IOTLB_MSG;
	msg.hdr.size = sizeof(msg.payload.iotlb);
	msg.payload.iotlb = (struct vhost_iotlb_msg){
		.iova = fault->addr,
		.perm = vhost_perm(fault->access),
		.type = type,
	};
	return vu_backend_send(q->be, &msg);
}

/*
 * Parked queues are counted so that an IOTLB UPDATE wakes the I/O threads only when one waits
 * (under vIOMMU strict or lazy mapping there is an UPDATE per request).
 */
static void set_parked(struct vu_queue *q, bool parked)
{
	if (q->parked == parked)
		return;
	q->parked = parked;
	atomic_fetch_add_explicit(&q->be->parked_queues, parked ? 1 : -1, memory_order_seq_cst);
}

/*
 * The ring reported an unreachable address: ask the front-end, park until it answers. Returns
 * true when an UPDATE may have arrived meanwhile (retry now rather than wait for a wake-up).
 */
static bool queue_park(struct vu_queue *q, uint64_t seq_before)
{
	struct vt_vhost_backend *be = q->be;
	struct vt_as_fault fault = vt_vq_dev_fault(q->vq);
	int rc = send_fault(q, &fault, VHOST_IOTLB_MISS);
	if (rc < 0) {
		char why[128];
		snprintf(why, sizeof(why),
			 "IOTLB miss at 0x%llx and no back-end channel to ask (%s)",
			 (unsigned long long)fault.addr, strerror(-rc));
		queue_break(q, why);
		return false;
	}
	atomic_fetch_add_explicit(&q->misses, 1, memory_order_relaxed);
	q->parked_seq = seq_before;
	/*
	 * Counted before seq is read again, while iotlb_update bumps seq before reading the count
	 * (both seq_cst): either it sees this queue parked and wakes us, or we see its UPDATE here.
	 */
	set_parked(q, true);
	return atomic_load_explicit(&be->iotlb_seq, memory_order_seq_cst) != seq_before;
}

/* A permission fault is the driver's error: tell the front-end, as an IOMMU fault would. */
static void report_access_fail(struct vu_queue *q)
{
	struct vt_as_fault fault = vt_vq_dev_fault(q->vq);
	send_fault(q, &fault, VHOST_IOTLB_ACCESS_FAIL);
}

/* ------------------------------------------------------------------ the I/O thread */

/*
 * The control thread takes a worker's lock through its gate and holds the gate until it lets
 * go: a worker busy with a hostile ring re-locks only through the gate, so it cannot starve the
 * control thread (pthread mutexes are not fair).
 */
static void control_lock(struct vu_worker *w)
{
	pthread_mutex_lock(&w->gate);
	pthread_mutex_lock(&w->lock);
}

static void control_unlock(struct vu_worker *w)
{
	pthread_mutex_unlock(&w->lock);
	pthread_mutex_unlock(&w->gate);
}

static bool queue_runnable(const struct vu_queue *q)
{
	return q->running && !q->broken && (q->enabled || !q->be->protocol_features_acked);
}

/*
 * Returns true when the budget ran out with work left (the thread wakes itself again).
 * *worked (if given) is set when the model did something.
 */
static bool queue_run(struct vu_queue *q, bool *worked)
{
	struct vt_vhost_backend *be = q->be;

	if (!queue_runnable(q))
		return false;
	if (q->parked) {
		/* Pairs with the release in iotlb_update: the new entry is visible if seq moved. */
		if (atomic_load_explicit(&be->iotlb_seq, memory_order_acquire) == q->parked_seq)
			return false;
		set_parked(q, false);
	}
	for (unsigned int i = 0; i < VU_POLL_BUDGET; i++) {
		uint64_t seq = atomic_load_explicit(&be->iotlb_seq, memory_order_acquire);
		bool notify = false;
		int rc = be->params.queue_ops->poll(q->engine, &notify);
		if (notify)
			signal_call(q);
		if (rc == -EFAULT)
			return queue_park(q, seq);
		if (rc == -EPROTO) {
			enum vt_vq_error err = vt_vq_dev_error(q->vq);
			if (err == VT_VQ_ERR_PERMISSION)
				report_access_fail(q);
			queue_break(q, err ? vt_vq_error_str(err) : "malformed request");
			return false;
		}
		if (rc < 0) {
			char why[96];
			snprintf(why, sizeof(why), "device model failed: %s", strerror(-rc));
			queue_break(q, why);
			return false;
		}
		if (rc == 0)
			return false;
		if (worked)
			*worked = true;
	}
	return true;
}

/* A spin-wait hint to the CPU (and its sibling thread); nothing where there is none. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * params.poll_us: runs this worker's queues until none has had work for that long, releasing
 * the lock between rounds so that a control thread gets in. Notifications stay enabled: a kick
 * that comes meanwhile only costs its eventfd.
 */
static void worker_poll(struct vu_worker *w)
{
	struct vt_vhost_backend *be = w->be;
	uint64_t window = (uint64_t)be->params.poll_us * 1000u;
	uint64_t idle_since = mono_ns();

	while (mono_ns() - idle_since < window) {
		pthread_mutex_lock(&w->gate);
		pthread_mutex_lock(&w->lock);
		pthread_mutex_unlock(&w->gate);
		bool worked = false;
		if (!w->exit)
			for (unsigned int i = w->index; i < be->params.num_queues;
			     i += be->nworkers)
				queue_run(&be->queues[i], &worked);
		bool exiting = w->exit;
		pthread_mutex_unlock(&w->lock);
		if (exiting)
			return;
		if (worked)
			idle_since = mono_ns();
		else
			cpu_relax();
	}
}

static void *worker_main(void *arg)
{
	struct vu_worker *w = arg;
	struct vt_vhost_backend *be = w->be;
	struct epoll_event ev[32];

	for (;;) {
		if (be->params.poll_us)
			worker_poll(w);
		int n = epoll_wait(w->epfd, ev, 32, -1);
		if (n < 0 && errno != EINTR)
			break;
		/* Through the gate: a control thread waiting for this worker gets in first. */
		pthread_mutex_lock(&w->gate);
		pthread_mutex_lock(&w->lock);
		pthread_mutex_unlock(&w->gate);
		if (w->exit) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		bool rerun_all = false;
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;
			if (tag == VU_WAKE_TAG) {
				drain_eventfd(w->wake_fd);
				rerun_all = true;
				continue;
			}
			struct vu_queue *q = &be->queues[tag >> 1];
			if (!q->running)
				continue;
			if (tag & 1) {
				drain_eventfd(q->event_fd);
			} else {
				drain_eventfd(q->kick_fd);
				atomic_fetch_add_explicit(&q->kicks, 1, memory_order_relaxed);
			}
			if (queue_run(q, NULL))
				rerun_all = true;
		}
		if (rerun_all) {
			bool more = false;
			for (unsigned int i = w->index; i < be->params.num_queues;
			     i += be->nworkers)
				more |= queue_run(&be->queues[i], NULL);
			if (more) {
				uint64_t one = 1;
				if (write(w->wake_fd, &one, sizeof(one)) < 0) {
					/* Counter saturated: a wake-up is pending anyway. */
				}
			}
		}
		pthread_mutex_unlock(&w->lock);
	}
	return NULL;
}

int vu_workers_start(struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->nworkers; i++) {
		struct vu_worker *w = &be->workers[i];
		w->be = be;
		w->index = i;
		pthread_mutex_init(&w->lock, NULL);
		pthread_mutex_init(&w->gate, NULL);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->epfd < 0 || w->wake_fd < 0)
			return -errno;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = VU_WAKE_TAG };
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
			return -errno;
		int rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc)
			return -rc;
		w->thread_started = true;
	}
	return 0;
}

void vu_workers_stop(struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->nworkers; i++) {
		struct vu_worker *w = &be->workers[i];
		if (w->thread_started) {
			control_lock(w);
			w->exit = true;
			control_unlock(w);
			uint64_t one = 1;
			if (write(w->wake_fd, &one, sizeof(one)) < 0) {
				/* Saturated counter: the thread is awake anyway. */
			}
			pthread_join(w->thread, NULL);
			w->thread_started = false;
		}
		if (w->epfd > 0)
			close(w->epfd);
		if (w->wake_fd > 0)
			close(w->wake_fd);
		w->epfd = w->wake_fd = -1;
	}
}

void vu_quiesce(struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->nworkers; i++)
		control_lock(&be->workers[i]);
}

void vu_unquiesce(struct vt_vhost_backend *be)
{
	for (unsigned int i = be->nworkers; i-- > 0;)
		control_unlock(&be->workers[i]);
}

void vu_wake_all(struct vt_vhost_backend *be)
{
	uint64_t one = 1;

	for (unsigned int i = 0; i < be->nworkers; i++)
		if (write(be->workers[i].wake_fd, &one, sizeof(one)) < 0) {
			/* Saturated counter: a wake-up is pending anyway. */
		}
}

static void queue_drain_locked(struct vu_queue *q)
{
	bool notify = false;

	if (!q->running)
		return;
	int rc = q->be->params.queue_ops->drain(q->engine, &notify);
	if (notify)
		signal_call(q);
	if (rc < 0)
		vt_log(q->be->log, VT_LOG_ERROR, "%s: requests in flight not completed: %s",
		       q->name, strerror(-rc));
}

void vu_drain_all_locked(struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->params.num_queues; i++)
		queue_drain_locked(&be->queues[i]);
}

bool vu_any_queue_running(const struct vt_vhost_backend *be)
{
	for (unsigned int i = 0; i < be->params.num_queues; i++)
		if (be->queues[i].running)
			return true;
	return false;
}

/* ------------------------------------------------------------------ start and stop */

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Stops a running queue; its requests complete first. Returns the next avail index. */
static uint16_t queue_stop(struct vu_queue *q)
{
	struct vu_worker *w = q->worker;
	uint16_t next = q->base;

	control_lock(w);
	if (q->running) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, q->kick_fd, NULL);
		if (q->event_fd >= 0)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, q->event_fd, NULL);
		queue_drain_locked(q);
		next = vt_vq_dev_next_avail(q->vq);
		q->be->params.queue_ops->stop(q->engine);
		vt_vq_dev_free(q->vq);
		q->vq = NULL;
		q->engine = NULL;
		q->event_fd = -1;
		q->running = false;
		set_parked(q, false);
		q->base = next;
	}
	control_unlock(w);
	close_fd(&q->kick_fd);
	return next;
}

void vu_queue_init(struct vt_vhost_backend *be, struct vu_queue *q, unsigned int index)
{
	q->be = be;
	q->index = index;
	q->worker = &be->workers[index % (be->nworkers ? be->nworkers : 1)];
	snprintf(q->name, sizeof(q->name), "%s:q%u", be->name, index);
	q->num = 0;
	q->have_addr = false;
	q->base = 0;
	q->kick_fd = q->call_fd = q->err_fd = q->event_fd = -1;
	q->enabled = false;
	q->running = false;
	q->broken = false;
	q->parked = false;
}

void vu_queue_reset(struct vu_queue *q)
{
	queue_stop(q);
	control_lock(q->worker);
	close_fd(&q->call_fd);
	control_unlock(q->worker);
	close_fd(&q->err_fd);
	q->num = 0;
	q->have_addr = false;
	q->base = 0;
	q->enabled = false;
	q->broken = false;
}

static unsigned int used_area_size(const struct vt_vhost_backend *be, unsigned int num)
{
	if (be->features & VT_BIT(VIRTIO_F_RING_PACKED))
		return 4;
	return 4 + 8 * num + 2;
}

static unsigned int driver_area_size(const struct vt_vhost_backend *be, unsigned int num)
{
	if (be->features & VT_BIT(VIRTIO_F_RING_PACKED))
		return 4;
	return 4 + 2 * num + 2;
}

/*
 * Ring addresses are IOVAs under ACCESS_PLATFORM (translated like any buffer), otherwise the
 * front-end's own addresses, converted here to driver-physical ones so that the ring code reads
 * rings and buffers through the same memory table.
 */
static int ring_addrs(struct vt_vhost_backend *be, const struct vu_queue *q, uint64_t *desc,
		      uint64_t *driver, uint64_t *device)
{
	const struct vhost_vring_addr *a = &q->addr;

	if (vt_uses_platform_dma(be->features)) {
		*desc = a->desc_user_addr;
		*driver = a->avail_user_addr;
		*device = a->used_user_addr;
		return 0;
	}
	if (vt_memtable_uaddr_to_gpa(be->mem, a->desc_user_addr, 16ull * q->num, desc) < 0 ||
	    vt_memtable_uaddr_to_gpa(be->mem, a->avail_user_addr, driver_area_size(be, q->num),
				     driver) < 0 ||
	    vt_memtable_uaddr_to_gpa(be->mem, a->used_user_addr, used_area_size(be, q->num),
				     device) < 0)
		return -EFAULT;
	return 0;
}

static int queue_start(struct vt_vhost_backend *be, struct vu_queue *q)
{
	uint64_t desc, driver, device;
	struct vt_vq_dev *vq = NULL;
	void *engine = NULL;
	int rc;

	if (!be->features_set || !q->num || !q->have_addr) {
		vt_log(be->log, VT_LOG_ERROR, "%s: kick fd before %s", q->name,
		       !be->features_set ? "SET_FEATURES"
		       : !q->num	 ? "SET_VRING_NUM"
					 : "SET_VRING_ADDR");
		return -EPROTO;
	}
	rc = ring_addrs(be, q, &desc, &driver, &device);
	if (rc < 0) {
		vt_log(be->log, VT_LOG_ERROR, "%s: ring addresses outside the shared memory",
		       q->name);
		return rc;
	}
	struct vt_vq_dev_params p = {
		.num = q->num,
		.features = be->features,
		.desc_addr = desc,
		.driver_addr = driver,
		.device_addr = device,
		.as = vt_uses_platform_dma(be->features) ? vt_iotlb_as(be->iotlb)
							 : vt_memtable_as(be->mem),
		.next_avail = q->base,
		.max_chain = be->params.max_chain,
		.inflight = vu_inflight_region(be, q),
		.name = q->name,
		.log = be->log,
	};
	rc = vt_vq_dev_new(&p, &vq);
	if (rc < 0) {
		vt_log(be->log, VT_LOG_ERROR, "%s: ring parameters refused: %s", q->name,
		       strerror(-rc));
		return rc;
	}
	rc = be->params.queue_ops->start(be->params.opaque, q->index, vq, be->features, &engine);
	if (rc < 0) {
		vt_log(be->log, VT_LOG_ERROR, "%s: device model refused the queue: %s", q->name,
		       strerror(-rc));
		vt_vq_dev_free(vq);
		return rc;
	}
	int event_fd = be->params.queue_ops->event_fd ? be->params.queue_ops->event_fd(engine) : -1;

	struct vu_worker *w = q->worker;
	control_lock(w);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag_of(q->index, false) };
	rc = epoll_ctl(w->epfd, EPOLL_CTL_ADD, q->kick_fd, &ev) < 0 ? -errno : 0;
	if (rc == 0 && event_fd >= 0) {
		ev.data.u64 = tag_of(q->index, true);
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, event_fd, &ev) < 0) {
			rc = -errno;
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, q->kick_fd, NULL);
		}
	}
	if (rc == 0) {
		q->vq = vq;
		q->engine = engine;
		q->event_fd = event_fd;
		q->running = true;
		q->broken = false;
	}
	control_unlock(w);
	if (rc < 0) {
		be->params.queue_ops->stop(engine);
		vt_vq_dev_free(vq);
		return rc;
	}
	/* Buffers may have been made available before the kick fd arrived: look once. */
	uint64_t one = 1;
	if (write(w->wake_fd, &one, sizeof(one)) < 0) {
		/* Saturated counter: a wake-up is pending anyway. */
	}
	return 0;
}

/* ------------------------------------------------------------------ ring messages */

static struct vu_queue *queue_of(struct vt_vhost_backend *be, uint32_t index, const char *what)
{
	if (index >= be->params.num_queues) {
		vt_log(be->log, VT_LOG_ERROR, "%s: %s for queue %u: the device has %u", be->name,
		       what, index, be->params.num_queues);
		return NULL;
	}
	return &be->queues[index];
}

int vu_set_vring_num(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vu_queue *q = queue_of(be, msg->payload.state.index, "SET_VRING_NUM");
	uint32_t num = msg->payload.state.num;

	if (!q)
		return -EINVAL;
	if (q->running)
		return -EBUSY;
	if (num == 0 || num > be->params.max_queue_size) {
		vt_log(be->log, VT_LOG_ERROR, "%s: queue size %u (1..%u)", q->name, num,
		       be->params.max_queue_size);
		return -EINVAL;
	}
	q->num = num;
	return 0;
}

int vu_set_vring_addr(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	const struct vhost_vring_addr *a = &msg->payload.addr;
	struct vu_queue *q = queue_of(be, a->index, "SET_VRING_ADDR");

	if (!q)
		return -EINVAL;
	if (a->flags & VHOST_VRING_F_LOG) {
		vt_log(be->log, VT_LOG_ERROR, "%s: used-ring logging asked, LOG_ALL not offered",
		       q->name);
		return -ENOTSUP;
	}
	if (q->running)
		return -EBUSY;
	q->addr = *a;
	q->have_addr = true;
	/* Without an IOMMU the addresses can be checked now; IOVAs only when translated. */
	if (be->features_set && !vt_uses_platform_dma(be->features) && q->num) {
		uint64_t d, drv, dev;
		if (ring_addrs(be, q, &d, &drv, &dev) < 0) {
			vt_log(be->log, VT_LOG_ERROR,
			       "%s: ring addresses outside the shared memory", q->name);
			q->have_addr = false;
			return -EFAULT;
		}
	}
	return 0;
}

int vu_set_vring_base(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vu_queue *q = queue_of(be, msg->payload.state.index, "SET_VRING_BASE");
	uint32_t num = msg->payload.state.num;

	if (!q)
		return -EINVAL;
	if (q->running)
		return -EBUSY;
	/* Packed rings: newer front-ends put the used index in bits 16..31; it equals avail here.
	 */
	q->base = (uint16_t)num;
	return 0;
}

int vu_get_vring_base(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vu_queue *q = queue_of(be, msg->payload.state.index, "GET_VRING_BASE");

	if (!q)
		return -EINVAL;
	uint16_t next = queue_stop(q);
	uint32_t num = next;
	/* Every request completed: the packed used position equals the avail one. */
	if (be->features & VT_BIT(VIRTIO_F_RING_PACKED))
		num |= (uint32_t)next << 16;
	msg->payload.state.num = num;
	msg->hdr.size = sizeof(msg->payload.state);
	return 0;
}

int vu_set_vring_fd(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	uint32_t index = (uint32_t)(msg->payload.u64 & VHOST_USER_VRING_IDX_MASK);
	const char *what = vt_vu_request_name(msg->hdr.request);
	struct vu_queue *q = queue_of(be, index, what);
	int fd = msg->nfds ? msg->fds[0] : -1;

	if (!q)
		return -EINVAL;
	switch (msg->hdr.request) {
	case VHOST_USER_SET_VRING_KICK:
		if (fd < 0) {
			/* Polling mode (no kick fd) would need INBAND_NOTIFICATIONS: not offered.
			 */
			vt_log(be->log, VT_LOG_ERROR, "%s: SET_VRING_KICK without an fd", q->name);
			return -ENOTSUP;
		}
		queue_stop(q);
		q->kick_fd = fd;
		msg->fds[0] = -1;
		int rc = queue_start(be, q);
		if (rc < 0)
			close_fd(&q->kick_fd); /* refused: the fd goes with the message */
		return rc;
	case VHOST_USER_SET_VRING_CALL:
		/* The I/O thread signals call_fd: swap it under its lock. */
		control_lock(q->worker);
		close_fd(&q->call_fd);
		q->call_fd = fd;
		control_unlock(q->worker);
		break;
	default:
		control_lock(q->worker);
		close_fd(&q->err_fd);
		q->err_fd = fd;
		control_unlock(q->worker);
		break;
	}
	if (fd >= 0)
		msg->fds[0] = -1;
	return 0;
}

int vu_set_vring_enable(struct vt_vhost_backend *be, struct vt_vu_msg *msg)
{
	struct vu_queue *q = queue_of(be, msg->payload.state.index, "SET_VRING_ENABLE");

	if (!q)
		return -EINVAL;
	if (msg->payload.state.num > 1)
		return -EINVAL;
	control_lock(q->worker);
	q->enabled = msg->payload.state.num == 1;
	control_unlock(q->worker);
	if (q->enabled) {
		uint64_t one = 1;
		if (write(q->worker->wake_fd, &one, sizeof(one)) < 0) {
			/* Saturated counter: a wake-up is pending anyway. */
		}
	}
	return 0;
}

int vt_vhost_backend_get_queue_stats(struct vt_vhost_backend *be, unsigned int index,
				     struct vt_vhost_backend_queue_stats *stats)
{
	if (index >= be->params.num_queues)
		return -EINVAL;
	struct vu_queue *q = &be->queues[index];
	control_lock(q->worker);
	*stats = (struct vt_vhost_backend_queue_stats){
		.running = q->running,
		.enabled = q->enabled || !be->protocol_features_acked,
		.broken = q->broken,
		.parked = q->parked,
		.kicks = atomic_load_explicit(&q->kicks, memory_order_relaxed),
		.calls = atomic_load_explicit(&q->calls, memory_order_relaxed),
		.misses = atomic_load_explicit(&q->misses, memory_order_relaxed),
	};
	control_unlock(q->worker);
	return 0;
}
