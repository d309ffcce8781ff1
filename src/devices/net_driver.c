/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net driver's engines: transmit (a header, then the frame, from slots of shared
 * memory), receive (the ring kept filled with buffers of one size, frames collected across
 * MRG_RXBUF's buffers with num_buffers checked against what was used), and the control queue's
 * MQ command. Everything the device wrote is checked before it is believed (5.1.6.4).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/net_driver.h>

#include "devices/slot_pool.h"

#define NET_F(bit)   VT_BIT(VIRTIO_NET_F_##bit)
#define SLOT_ALIGN   64u
#define MAX_BUF_SIZE (1u << 20)

/* The virtqueue's used_len_clamped counter moved: the device claimed more than was posted. */
static bool clamped_since(struct vt_vq_drv *vq, uint64_t *seen)
{
	struct vt_vq_drv_stats vs;
	vt_vq_drv_get_stats(vq, &vs);
	if (vs.used_len_clamped == *seen)
		return false;
	*seen = vs.used_len_clamped;
	return true;
}

/* ---------------------------------------------------------------- transmit */

struct tx_slot {
	uint8_t *mem; /* header, then frame_room bytes */
	void *cookie;
	bool busy;
};

struct vt_net_txq {
	struct vt_vq_drv *vq;
	struct vt_shm *shm;
	const char *name;
	const struct vt_log *log;
	unsigned int num;
	uint32_t hdr_len, frame_room;
	struct slot_pool pool; /* header and copied frame of each transmit */
	struct tx_slot *slots;
	struct iovec *sg; /* scratch for send_sg: num entries */
	struct vt_net_txq_stats stats;
};

void vt_net_txq_free(struct vt_net_txq *q)
{
	if (!q)
		return;
	slot_pool_fini(&q->pool);
	free(q->slots);
	free(q->sg);
	free(q);
}

int vt_net_txq_new(const struct vt_net_txq_params *p, struct vt_net_txq **out)
{
	*out = NULL;
	if (!p || !p->vq || !p->shm || p->num == 0 || p->num > 32768 ||
	    p->frame_room > VT_NET_MAX_FRAME)
		return -EINVAL;
	struct vt_net_txq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->vq = p->vq;
	q->shm = p->shm;
	q->name = p->name ? p->name : "net-tx";
	q->log = p->log;
	q->num = p->num;
	q->hdr_len = vt_net_hdr_len(p->features);
	q->frame_room = p->frame_room ? p->frame_room : VT_NET_DEFAULT_FRAME;
	q->slots = calloc(q->num, sizeof(*q->slots));
	q->sg = calloc(q->num, sizeof(*q->sg));
	int ret = q->slots && q->sg ? 0 : -ENOMEM;
	if (ret == 0)
		ret = slot_pool_init(&q->pool, q->shm, q->num, q->hdr_len + q->frame_room);
	if (ret < 0) {
		vt_net_txq_free(q);
		return ret;
	}
	for (unsigned int i = 0; i < q->num; i++)
		q->slots[i].mem = slot_pool_mem(&q->pool, i);
	*out = q;
	return 0;
}

static struct tx_slot *tx_slot_of(struct vt_net_txq *q, void *token)
{
	unsigned int i;

	if (!slot_index_of(q->slots, sizeof(*q->slots), q->num, token, &i))
		return NULL;
	return q->slots[i].busy ? &q->slots[i] : NULL;
}

static void tx_slot_put(struct vt_net_txq *q, struct tx_slot *s)
{
	s->busy = false;
	slot_pool_put(&q->pool, (unsigned int)(s - q->slots));
	q->stats.in_flight--;
}

/* What a ring add's failure means to a sender, with nothing posted. */
static int tx_add_error(struct vt_net_txq *q, int rc)
{
	if (rc == -ENOSPC) {
		q->stats.ring_full++;
		return -EAGAIN;
	}
	return vt_vq_drv_is_broken(q->vq) ? -EPROTO : rc;
}

/* Slot @s holds a posted frame of @frame_len bytes. */
static void tx_account(struct vt_net_txq *q, struct tx_slot *s, size_t frame_len, void *cookie)
{
	s->busy = true;
	s->cookie = cookie;
	q->stats.frames++;
	q->stats.bytes += frame_len;
	q->stats.in_flight++;
}

/* Posts slot @s with @sg[0 .. count): the error mapping shared by both sends. */
static int tx_post(struct vt_net_txq *q, struct tx_slot *s, const struct iovec *sg,
		   unsigned int count, size_t frame_len, void *cookie)
{
	int rc = vt_vq_drv_add(q->vq, sg, count, 0, s);
	if (rc < 0) {
		slot_pool_put(&q->pool, (unsigned int)(s - q->slots));
		return tx_add_error(q, rc);
	}
	tx_account(q, s, frame_len, cookie);
	return 0;
}

/* Whether a frame of @len bytes fits a copying send: 0, or the error it gets. */
static int tx_len_error(const struct vt_net_txq *q, size_t len)
{
	if (len == 0)
		return -EINVAL;
	return len > q->frame_room ? -EMSGSIZE : 0;
}

/* A frame refused before reaching the ring: counted once, when its error is returned. */
static int tx_reject(struct vt_net_txq *q, int err)
{
	q->stats.rejected++;
	return err;
}

/*
 * 5.1.6.2: a zeroed header asks for no offload (flags 0, GSO_NONE), and num_buffers is 0 on
 * transmit. Returns the header's segment.
 */
static struct iovec tx_header(struct vt_net_txq *q, struct tx_slot *s)
{
	memset(s->mem, 0, q->hdr_len);
	return (struct iovec){ s->mem, q->hdr_len };
}

/* The header, then a copy of the frame behind it: the one segment a copying send posts. */
static struct iovec tx_fill(struct vt_net_txq *q, struct tx_slot *s, const void *frame, size_t len)
{
	struct iovec sg = tx_header(q, s);
	memcpy(s->mem + q->hdr_len, frame, len);
	sg.iov_len += len;
	return sg;
}

/* Frames per ring burst: the stack arrays below. */
#define TX_BURST 64

/* Up to TX_BURST frames of a send burst: how many were posted, or the first one's error. */
static int tx_send_chunk(struct vt_net_txq *q, const struct iovec *frames, unsigned int n,
			 void *const *cookies)
{
	unsigned int idx[TX_BURST];
	struct iovec sg[TX_BURST];
	void *tokens[TX_BURST];
	unsigned int k = 0;
	int err = 0;

	/* Slots are peeked, filled and taken only for what the ring took: the rest stay free. */
	unsigned int avail = slot_pool_peek_n(&q->pool, idx, n);
	for (; k < n; k++) {
		/* A bad frame is refused as such, whether or not a slot is free for it. */
		err = tx_len_error(q, frames[k].iov_len);
		if (err < 0)
			break;
		if (k == avail) {
			q->stats.ring_full++;
			err = -EAGAIN;
			break;
		}
		struct tx_slot *s = &q->slots[idx[k]];
		sg[k] = tx_fill(q, s, frames[k].iov_base, frames[k].iov_len);
		tokens[k] = s;
	}
	if (k == 0)
		return err == -EAGAIN ? err : tx_reject(q, err);
	int posted = vt_vq_drv_add_burst(q->vq, sg, k, false, tokens);
	if (posted < 0)
		return tx_add_error(q, posted);
	slot_pool_take_n(&q->pool, (unsigned int)posted);
	for (int j = 0; j < posted; j++)
		tx_account(q, tokens[j], frames[j].iov_len, cookies ? cookies[j] : NULL);
	return posted;
}

int vt_net_txq_send_burst(struct vt_net_txq *q, const struct iovec *frames, unsigned int n,
			  void *const *cookies)
{
	unsigned int done = 0;

	while (done < n) {
		unsigned int want = n - done < TX_BURST ? n - done : TX_BURST;
		int ret = tx_send_chunk(q, frames + done, want, cookies ? cookies + done : NULL);
		if (ret < 0)
			return done ? (int)done : ret;
		done += (unsigned int)ret;
		if ((unsigned int)ret < want)
			break;
	}
	return (int)done;
}

/* A burst of one: the same checks, slot handling and error mapping. */
int vt_net_txq_send(struct vt_net_txq *q, const void *frame, size_t len, void *cookie)
{
	struct iovec f = { (void *)(uintptr_t)frame, len };
	int ret = vt_net_txq_send_burst(q, &f, 1, &cookie);
	return ret < 0 ? ret : 0;
}

int vt_net_txq_send_sg(struct vt_net_txq *q, const struct iovec *iov, unsigned int iovcnt,
		       void *cookie)
{
	size_t len = 0;
	if (iovcnt == 0 || iovcnt >= q->num)
		return tx_reject(q, -EINVAL);
	for (unsigned int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len == 0)
			return tx_reject(q, -EINVAL);
		len += iov[i].iov_len;
	}
	if (len > VT_NET_MAX_FRAME)
		return tx_reject(q, -EMSGSIZE);
	unsigned int i;
	if (!slot_pool_take(&q->pool, &i)) {
		q->stats.ring_full++;
		return -EAGAIN;
	}
	struct tx_slot *s = &q->slots[i];
	q->sg[0] = tx_header(q, s);
	memcpy(q->sg + 1, iov, iovcnt * sizeof(*iov));
	return tx_post(q, s, q->sg, 1 + iovcnt, len, cookie);
}

bool vt_net_txq_kick(struct vt_net_txq *q)
{
	return vt_vq_drv_kick_prepare(q->vq);
}

int vt_net_txq_reclaim(struct vt_net_txq *q, void **cookies, unsigned int max)
{
	unsigned int n = 0;
	while (n < max) {
		void *tokens[TX_BURST];
		uint32_t lens[TX_BURST];
		unsigned int want = max - n < TX_BURST ? max - n : TX_BURST;
		int got = vt_vq_drv_get_burst(q->vq, tokens, lens, want);
		if (got < 0)
			return n ? (int)n : got;
		for (int j = 0; j < got; j++) {
			struct tx_slot *s = tx_slot_of(q, tokens[j]);
			if (!s)
				continue; /* the ring checks tokens: cannot happen */
			if (cookies)
				cookies[n] = s->cookie;
			tx_slot_put(q, s);
			q->stats.completed++;
			n++;
		}
		if ((unsigned int)got < want)
			break;
	}
	return (int)n;
}

int vt_net_txq_forget(struct vt_net_txq *q, void *token, void **cookie)
{
	struct tx_slot *s = tx_slot_of(q, token);
	if (!s)
		return -EINVAL;
	if (cookie)
		*cookie = s->cookie;
	tx_slot_put(q, s);
	return 0;
}

unsigned int vt_net_txq_in_flight(const struct vt_net_txq *q)
{
	return q->stats.in_flight;
}

void vt_net_txq_get_stats(const struct vt_net_txq *q, struct vt_net_txq_stats *stats)
{
	*stats = q->stats;
	struct vt_vq_drv_stats vs; /* the ring counts kicks; a second count could only drift */
	vt_vq_drv_get_stats(q->vq, &vs);
	stats->kicks = vs.kicks, stats->kicks_suppressed = vs.kicks_suppressed;
}

/* ---------------------------------------------------------------- receive */

struct rx_slot {
	uint8_t *mem;
	bool posted;
};

struct vt_net_rxq {
	struct vt_vq_drv *vq;
	struct vt_shm *shm;
	const char *name;
	const struct vt_log *log;
	struct vt_net_info info;
	unsigned int num;
	uint32_t hdr_len, buf_size;
	bool mergeable;
	struct slot_pool pool; /* the receive buffers */
	struct rx_slot *slots;
	uint64_t clamped_seen;
	bool logged;
	struct vt_net_rxq_stats stats;
};

void vt_net_rxq_free(struct vt_net_rxq *q)
{
	if (!q)
		return;
	slot_pool_fini(&q->pool);
	free(q->slots);
	free(q);
}

int vt_net_rxq_new(const struct vt_net_rxq_params *p, struct vt_net_rxq **out)
{
	*out = NULL;
	if (!p || !p->vq || !p->shm || !p->info || p->num == 0 || p->num > 32768)
		return -EINVAL;
	bool mergeable = (p->info->features & NET_F(MRG_RXBUF)) != 0;
	uint32_t hdr_len = vt_net_hdr_len(p->info->features);
	uint32_t whole = hdr_len + p->info->max_frame;
	uint32_t size = p->buf_size ? p->buf_size : (mergeable ? 2048u : whole);
	/*
	 * 5.1.6.3.1: without MRG_RXBUF (and without the GSO features, which this driver never
	 * accepts) every buffer must hold a whole frame; with it, at least the header.
	 */
	if (size > MAX_BUF_SIZE || size < (mergeable ? hdr_len + 1 : whole))
		return -EINVAL;
	struct vt_net_rxq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->vq = p->vq;
	q->shm = p->shm;
	q->name = p->name ? p->name : "net-rx";
	q->log = p->log;
	q->info = *p->info;
	q->num = p->num;
	q->hdr_len = hdr_len;
	q->buf_size = size;
	q->mergeable = mergeable;
	q->slots = calloc(q->num, sizeof(*q->slots));
	int ret = q->slots ? 0 : -ENOMEM;
	if (ret == 0)
		ret = slot_pool_init(&q->pool, q->shm, q->num, size);
	if (ret < 0) {
		vt_net_rxq_free(q);
		return ret;
	}
	for (unsigned int i = 0; i < q->num; i++)
		q->slots[i].mem = slot_pool_mem(&q->pool, i);
	struct vt_vq_drv_stats vs;
	vt_vq_drv_get_stats(q->vq, &vs);
	q->clamped_seen = vs.used_len_clamped;
	*out = q;
	return 0;
}

static struct rx_slot *rx_slot_of(struct vt_net_rxq *q, void *token)
{
	unsigned int i;

	if (!slot_index_of(q->slots, sizeof(*q->slots), q->num, token, &i))
		return NULL;
	return q->slots[i].posted ? &q->slots[i] : NULL;
}

static void rx_slot_put(struct vt_net_rxq *q, struct rx_slot *s)
{
	s->posted = false;
	slot_pool_put(&q->pool, (unsigned int)(s - q->slots));
	q->stats.posted_now--;
}

/* Receive buffers per ring burst. */
#define RX_BURST 64

int vt_net_rxq_fill(struct vt_net_rxq *q)
{
	int posted = 0;
	unsigned int idx[RX_BURST];
	struct iovec sg[RX_BURST];
	void *tokens[RX_BURST];

	for (;;) {
		unsigned int n = slot_pool_peek_n(&q->pool, idx, RX_BURST);
		if (n == 0)
			break;
		for (unsigned int k = 0; k < n; k++) {
			sg[k] = (struct iovec){ q->slots[idx[k]].mem, q->buf_size };
			tokens[k] = &q->slots[idx[k]];
		}
		int rc = vt_vq_drv_add_burst(q->vq, sg, n, true, tokens);
		if (rc == -ENOSPC)
			break;
		if (rc < 0) {
			if (posted)
				break;
			return vt_vq_drv_is_broken(q->vq) ? -EPROTO : rc;
		}
		slot_pool_take_n(&q->pool, (unsigned int)rc);
		for (int k = 0; k < rc; k++)
			q->slots[idx[k]].posted = true;
		q->stats.posted += (unsigned int)rc;
		q->stats.posted_now += (unsigned int)rc;
		posted += rc;
		if ((unsigned int)rc < n)
			break;
	}
	return posted;
}

bool vt_net_rxq_kick(struct vt_net_rxq *q)
{
	return vt_vq_drv_kick_prepare(q->vq);
}

/* One used buffer: its slot and the bytes written; 0, -EAGAIN, -EPROTO. */
static int rx_get(struct vt_net_rxq *q, struct rx_slot **slot, uint32_t *len, bool *clamped)
{
	void *token;
	for (;;) {
		int rc = vt_vq_drv_get(q->vq, &token, len);
		if (rc < 0)
			return rc;
		*slot = rx_slot_of(q, token);
		if (*slot)
			break; /* the ring checks tokens: anything else cannot happen */
	}
	q->stats.buffers++;
	/* A length past the buffer was clamped to it by the ring; only then can the counter move.
	 */
	*clamped = *len == q->buf_size && clamped_since(q->vq, &q->clamped_seen);
	return 0;
}

static int rx_violation(struct vt_net_rxq *q, uint64_t *counter, const char *what, uint32_t a,
			uint32_t b)
{
	(*counter)++;
	if (!q->logged) {
		q->logged = true;
		vt_log(q->log, VT_LOG_WARN,
		       "%s: frame dropped: %s (%u, %u; 5.1.6.4); later ones only counted", q->name,
		       what, a, b);
	}
	return -EBADMSG;
}

/* Frees up to @n more used buffers of a frame being dropped (those the device returned). */
static void rx_drain(struct vt_net_rxq *q, unsigned int n)
{
	while (n--) {
		struct rx_slot *s;
		uint32_t len;
		bool clamped;
		if (rx_get(q, &s, &len, &clamped) < 0)
			return;
		rx_slot_put(q, s);
	}
}

int vt_net_rxq_recv(struct vt_net_rxq *q, void *buf, size_t cap, struct vt_net_rx_info *info)
{
	struct vt_net_rx_info scratch;
	struct rx_slot *s;
	uint32_t len;
	bool clamped;

	if (!info)
		info = &scratch;
	int rc = rx_get(q, &s, &len, &clamped);
	if (rc == -EAGAIN)
		return 0;
	if (rc < 0)
		return rc;
	memset(info, 0, sizeof(*info));
	if (len < q->hdr_len) {
		rx_slot_put(q, s);
		return rx_violation(q, &q->stats.bad_header, "used length shorter than the header",
				    len, q->hdr_len);
	}
	/* One read of the device-written header: what follows is decided on this copy. */
	memcpy(&info->hdr, s->mem, sizeof(info->hdr));
	uint16_t nb = q->mergeable ? vt_le16_to_cpu(info->hdr.num_buffers) : 1;
	if (clamped) {
		rx_slot_put(q, s);
		if (nb > 1 && nb <= q->num)
			rx_drain(q, nb - 1u);
		return rx_violation(q, &q->stats.bad_length, "used length past the buffer", len,
				    q->buf_size);
	}
	if (nb == 0 || nb > q->num) {
		rx_slot_put(q, s);
		return rx_violation(q, &q->stats.bad_num_buffers, "num_buffers outside the ring",
				    nb, q->num);
	}

	uint8_t *out = buf;
	uint64_t total = len - q->hdr_len;
	if (total <= cap)
		memcpy(out, s->mem + q->hdr_len, total);
	rx_slot_put(q, s);
	for (unsigned int i = 1; i < nb; i++) {
		rc = rx_get(q, &s, &len, &clamped);
		if (rc == -EAGAIN)
			/* 5.1.6.4: all buffers of a packet are used together. */
			return rx_violation(q, &q->stats.bad_num_buffers,
					    "num_buffers more than the buffers used", nb, i);
		if (rc < 0)
			return rc;
		if (clamped) {
			rx_slot_put(q, s);
			rx_drain(q, nb - 1u - i);
			return rx_violation(q, &q->stats.bad_length, "used length past the buffer",
					    len, q->buf_size);
		}
		if (total + len <= cap)
			memcpy(out + total, s->mem, len);
		total += len;
		rx_slot_put(q, s);
	}
	info->num_buffers = nb;
	info->len = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	if (total < VT_NET_ETH_HLEN) {
		q->stats.runts++;
		return -EBADMSG;
	}
	if (total > cap) {
		q->stats.too_big++;
		return -EMSGSIZE;
	}
	q->stats.frames++;
	q->stats.bytes += total;
	return 1;
}

int vt_net_rxq_forget(struct vt_net_rxq *q, void *token)
{
	struct rx_slot *s = rx_slot_of(q, token);
	if (!s)
		return -EINVAL;
	rx_slot_put(q, s);
	return 0;
}

uint32_t vt_net_rxq_buf_size(const struct vt_net_rxq *q)
{
	return q->buf_size;
}

void vt_net_rxq_get_stats(const struct vt_net_rxq *q, struct vt_net_rxq_stats *stats)
{
	*stats = q->stats;
	struct vt_vq_drv_stats vs; /* the ring counts kicks; a second count could only drift */
	vt_vq_drv_get_stats(q->vq, &vs);
	stats->kicks = vs.kicks, stats->kicks_suppressed = vs.kicks_suppressed;
}

/* ---------------------------------------------------------------- control queue */

/* One command: class and command, its data, the ack byte the device writes (5.1.6.5). */
struct ctrl_cmd {
	struct virtio_net_ctrl_hdr hdr;
	struct virtio_net_ctrl_mq mq;
	uint8_t ack;
};

#define CTRL_ACK_UNWRITTEN 0xffu

struct vt_net_ctrl {
	struct vt_vq_drv *vq;
	struct vt_shm *shm;
	struct vt_net_info info;
	struct ctrl_cmd *cmd; /* in shared memory */
	bool busy;
	uint16_t pairs, pairs_asked;
};

int vt_net_ctrl_new(const struct vt_net_ctrl_params *p, struct vt_net_ctrl **out)
{
	*out = NULL;
	if (!p || !p->vq || !p->shm || !p->info)
		return -EINVAL;
	struct vt_net_ctrl *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	void *mem = NULL;
	int rc = vt_shm_alloc(p->shm, sizeof(struct ctrl_cmd), SLOT_ALIGN, &mem);
	if (rc < 0) {
		free(c);
		return rc;
	}
	c->vq = p->vq;
	c->shm = p->shm;
	c->info = *p->info;
	c->cmd = mem;
	c->pairs = 1;
	*out = c;
	return 0;
}

void vt_net_ctrl_free(struct vt_net_ctrl *c)
{
	if (!c)
		return;
	vt_shm_release(c->shm, c->cmd, sizeof(struct ctrl_cmd));
	free(c);
}

int vt_net_ctrl_mq_pairs_set(struct vt_net_ctrl *c, uint16_t pairs)
{
	uint64_t need = NET_F(CTRL_VQ) | NET_F(MQ);
	if ((c->info.features & need) != need)
		return -ENOTSUP;
	if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || pairs > c->info.max_virtqueue_pairs)
		return -EINVAL;
	if (c->busy)
		return -EBUSY;
	c->cmd->hdr.class = VIRTIO_NET_CTRL_MQ;
	c->cmd->hdr.cmd = VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET;
	c->cmd->mq.virtqueue_pairs = vt_cpu_to_le16(pairs);
	c->cmd->ack = CTRL_ACK_UNWRITTEN;
	struct iovec sg[3] = {
		{ &c->cmd->hdr, sizeof(c->cmd->hdr) },
		{ &c->cmd->mq, sizeof(c->cmd->mq) },
		{ &c->cmd->ack, sizeof(c->cmd->ack) },
	};
	int rc = vt_vq_drv_add(c->vq, sg, 2, 1, c->cmd);
	if (rc < 0)
		return vt_vq_drv_is_broken(c->vq) ? -EPROTO : rc;
	c->busy = true;
	c->pairs_asked = pairs;
	return 0;
}

bool vt_net_ctrl_kick(struct vt_net_ctrl *c)
{
	return vt_vq_drv_kick_prepare(c->vq);
}

int vt_net_ctrl_poll(struct vt_net_ctrl *c)
{
	if (!c->busy)
		return -EINVAL;
	void *token;
	uint32_t len;
	int rc = vt_vq_drv_get(c->vq, &token, &len);
	if (rc < 0)
		return rc;
	c->busy = false;
	if (token != c->cmd || len < 1)
		return -EBADMSG;
	uint8_t ack = c->cmd->ack;
	if (ack == VIRTIO_NET_ERR)
		return -EIO;
	if (ack != VIRTIO_NET_OK)
		return -EBADMSG;
	c->pairs = c->pairs_asked;
	return 0;
}

uint16_t vt_net_ctrl_pairs(const struct vt_net_ctrl *c)
{
	return c->pairs;
}

int vt_net_ctrl_forget(struct vt_net_ctrl *c, void *token)
{
	if (!c->busy || token != c->cmd)
		return -EINVAL;
	c->busy = false;
	return 0;
}
