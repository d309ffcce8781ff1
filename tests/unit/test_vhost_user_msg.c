/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user back-end's control channel, message by message: what a well-behaved front-end
 * is told (features, config, status), and for each class of bad message what happens: refused
 * with a nonzero REPLY_ACK while the connection stays usable (a GET_FEATURES round trip after it
 * works), or the connection closed and serve() returning -EPROTO. Every test also checks that no
 * fd (those sent with a refused message included) and no memfd mapping outlives it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <virtue/shm.h>
#include <virtue/spec/virtio_config.h>
#include <virtue/spec/virtio_ring.h>

#include "harness.h"
#include "vu_echo.h"
#include "vu_peer.h"

#define F(bit)	    VT_BIT(VIRTIO_F_##bit)
#define P(bit)	    VT_BIT(VHOST_USER_PROTOCOL_F_##bit)
#define NUM_QUEUES  2
#define MAX_QSIZE   256
#define SHM_GPA	    0x100000000ull
#define SHM_SIZE    (1u << 20)
#define CONFIG_SIZE 64
#define PROTOCOL_ALL                                                                               \
	(P(MQ) | P(REPLY_ACK) | P(BACKEND_REQ) | P(CONFIG) | P(RESET_DEVICE) |                     \
	 P(CONFIGURE_MEM_SLOTS) | P(STATUS))
#define MEM_HDR_SIZE ((uint32_t)offsetof(struct vhost_user_memory, regions))
#define MEM_SIZE(n)                                                                                \
	(MEM_HDR_SIZE + (uint32_t)(n) * (uint32_t)sizeof(struct vhost_user_memory_region))
#define NEEDS_RESET VIRTIO_CONFIG_S_NEEDS_RESET

/* ---------------------------------------------------------------- fixture */

struct fx {
	struct vt_vhost_backend *be;
	struct vu_peer peer;
	struct vu_echo echo;
	struct vt_shm *shm;
	const struct vt_shm_region *region;
	uint8_t config[CONFIG_SIZE];
	struct vt_log log;
	pthread_mutex_t log_lock;
	char errors[8192]; /* every error line logged, as far as they fit */
	/* What the model's config_write saw. */
	uint32_t written_offset, written_len;
	int writes;
	int fds_before, maps_before;
};

static void capture_log(void *opaque, enum vt_log_level level, const char *message)
{
	struct fx *f = opaque;

	if (level != VT_LOG_ERROR)
		return;
	pthread_mutex_lock(&f->log_lock);
	size_t used = strlen(f->errors);
	snprintf(f->errors + used, sizeof(f->errors) - used, "%s\n", message);
	pthread_mutex_unlock(&f->log_lock);
}

/* True when an error line of the back-end contains @text (it named the rule broken). */
static bool logged(struct fx *f, const char *text)
{
	pthread_mutex_lock(&f->log_lock);
	bool found = strstr(f->errors, text) != NULL;
	if (!found)
		fprintf(stderr, "  no error line says \"%s\":\n%s", text, f->errors);
	pthread_mutex_unlock(&f->log_lock);
	return found;
}

/* config_write's opaque is the echo model's: the fixture is found through a static. */
static struct fx *current_fx;

/* The model refuses writes to byte 0 (a read-only field) and takes the rest. */
static int model_config_write(void *opaque, uint32_t offset, const void *buf, uint32_t len)
{
	struct fx *f = current_fx;

	if (offset == 0)
		return -EPERM;
	f->written_offset = offset;
	f->written_len = len;
	f->writes++;
	return 0;
}

static int fx_start(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	current_fx = f;
	f->fds_before = vu_count_fds();
	f->maps_before = vu_count_memfd_maps();
	pthread_mutex_init(&f->log_lock, NULL);
	f->log = (struct vt_log){ .fn = capture_log, .opaque = f, .max_level = VT_LOG_ERROR };
	for (unsigned int i = 0; i < CONFIG_SIZE; i++)
		f->config[i] = (uint8_t)(0x80 + i);
	int rc = vt_shm_new(&f->shm);
	if (rc == 0)
		rc = vt_shm_add_memfd(f->shm, SHM_SIZE, SHM_GPA, &f->region);
	if (rc < 0)
		return rc;
	struct vt_vhost_backend_params params = {
		.device_id = VIRTIO_ID_RNG,
		.name = "msg-test",
		.num_queues = NUM_QUEUES,
		.max_queue_size = MAX_QSIZE,
		.config = f->config,
		.config_size = CONFIG_SIZE,
		.config_write = model_config_write,
		.queue_ops = &vu_echo_ops,
		.opaque = &f->echo,
		.num_threads = 1,
		.log = &f->log,
	};
	rc = vt_vhost_backend_new(&params, &f->be);
	if (rc < 0)
		return rc;
	return vu_peer_connect(&f->peer, f->be);
}

/* Ends the connection, expects serve() to have returned @want, and checks for leaks. */
static void fx_finish(struct fx *f, int want)
{
	CHECK_EQ(vu_peer_disconnect(&f->peer), want);
	struct vt_vhost_backend_stats st;
	vt_vhost_backend_get_stats(f->be, &st);
	CHECK_EQ(st.mem_regions, 0);
	vt_vhost_backend_free(f->be);
	vt_shm_free(f->shm);
	CHECK_EQ(vu_count_fds(), f->fds_before);
	CHECK_EQ(vu_count_memfd_maps(), f->maps_before);
	pthread_mutex_destroy(&f->log_lock);
}

static int fx_handshake(struct fx *f, uint64_t features)
{
	return vu_peer_handshake(&f->peer, F(VERSION_1) | features, PROTOCOL_ALL);
}

static struct vt_vhost_backend_stats fx_stats(struct fx *f)
{
	struct vt_vhost_backend_stats st;

	vt_vhost_backend_get_stats(f->be, &st);
	return st;
}

static int make_eventfd(void)
{
	return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

/* Sends @request with a fresh eventfd attached, closing ours: the ack status. */
static int ack_with_eventfd(struct fx *f, uint32_t request, const void *payload, uint32_t size)
{
	int fd = make_eventfd();
	int rc = vu_peer_ack(&f->peer, request, payload, size, &fd, 1);
	close(fd);
	return rc;
}

/* Expects @request to be refused with the connection still usable, and no fd left behind. */
#define CHECK_REFUSED(f, expr)                                                                     \
	do {                                                                                       \
		int fds_ = vu_count_fds();                                                         \
		CHECK_EQ((expr), 1);                                                               \
		CHECK(vu_peer_alive(&(f)->peer));                                                  \
		CHECK_EQ(vu_count_fds(), fds_);                                                    \
	} while (0)

#define CHECK_CLOSED(f)                                                                            \
	do {                                                                                       \
		CHECK(vu_peer_closed(&(f)->peer));                                                 \
		int rc_ = 0;                                                                       \
		CHECK_EQ(vu_peer_wait_serve(&(f)->peer, VU_PEER_WAIT_MS, &rc_), 0);                \
		CHECK_EQ(rc_, -EPROTO);                                                            \
	} while (0)

static struct vhost_user_memory one_region_table(struct fx *f)
{
	struct vhost_user_memory m = { .nregions = 1 };

	m.regions[0] = vu_peer_region(f->region);
	return m;
}

/* ---------------------------------------------------------------- friendly paths */

VT_TEST(handshake_offers_access_platform_and_the_protocol_features)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	uint64_t features = 0, protocol = 0, queues = 0, slots = 0;
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_FEATURES, &features), 0);
	CHECK(features & F(VERSION_1));
	CHECK(features & F(ACCESS_PLATFORM));
	CHECK(features & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES));
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_PROTOCOL_FEATURES, &protocol), 0);
	CHECK_EQ(protocol & PROTOCOL_ALL, PROTOCOL_ALL);
	/* Nothing the back-end has no handler for (logging, postcopy, in-band kicks, ...). */
	CHECK_EQ(protocol & (P(LOG_SHMFD) | P(RARP) | P(NET_MTU) | P(CROSS_ENDIAN) |
			     P(CRYPTO_SESSION) | P(PAGEFAULT) | P(BACKEND_SEND_FD) |
			     P(HOST_NOTIFIER) | P(INBAND_NOTIFICATIONS)),
		 0);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_QUEUE_NUM, &queues), 0);
	CHECK_EQ(queues, NUM_QUEUES);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_MAX_MEM_SLOTS, &slots), 0);
	CHECK_EQ(slots, 509);
	CHECK_EQ(fx_handshake(&f, F(EVENT_IDX)), 0);
	struct vt_vhost_backend_stats st = fx_stats(&f);
	CHECK_EQ(st.features, F(VERSION_1) | F(EVENT_IDX));
	CHECK_EQ(st.protocol_features, PROTOCOL_ALL);
	CHECK_EQ(st.bad_messages, 0);
	fx_finish(&f, 0);
}

VT_TEST(need_reply_is_answered_only_when_reply_ack_is_negotiated)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	/* No protocol features yet: SET_OWNER with NEED_REPLY gets no answer. */
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_SET_OWNER, VU_V1 | VHOST_USER_NEED_REPLY, NULL,
				0, NULL, 0),
		   0);
	uint64_t features = 0;
	/* The next message received is GET_FEATURES' reply, not an ack. */
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_FEATURES, &features), 0);
	CHECK(features & F(VERSION_1));
	fx_finish(&f, 0);
}

VT_TEST(get_config_returns_the_model_config_and_zeros_past_it)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_config c = { .offset = 0, .size = CONFIG_SIZE }, r;
	CHECK_EQ(vu_peer_call(&f.peer, VHOST_USER_GET_CONFIG, &c,
			      VHOST_USER_CONFIG_HDR_SIZE + c.size, &r, sizeof(r)),
		 VHOST_USER_CONFIG_HDR_SIZE + CONFIG_SIZE);
	CHECK_EQ(r.offset, 0);
	CHECK_EQ(r.size, CONFIG_SIZE);
	CHECK(memcmp(r.region, f.config, CONFIG_SIZE) == 0);
	/* A window that runs past the model's config: the rest reads as zero. */
	c = (struct vhost_user_config){ .offset = CONFIG_SIZE - 4, .size = 16 };
	CHECK_EQ(vu_peer_call(&f.peer, VHOST_USER_GET_CONFIG, &c, VHOST_USER_CONFIG_HDR_SIZE + 16,
			      &r, sizeof(r)),
		 VHOST_USER_CONFIG_HDR_SIZE + 16);
	CHECK(memcmp(r.region, f.config + CONFIG_SIZE - 4, 4) == 0);
	static const uint8_t zeros[12];
	CHECK(memcmp(r.region + 4, zeros, 12) == 0);
	fx_finish(&f, 0);
}

VT_TEST(set_config_is_forwarded_to_the_model_and_read_back)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_config c = { .offset = 8, .size = 4, .flags = 0 };
	memcpy(c.region, "\x01\x02\x03\x04", 4);
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_CONFIG, &c, VHOST_USER_CONFIG_HDR_SIZE + 4,
			     NULL, 0),
		 0);
	CHECK_EQ(f.writes, 1);
	CHECK_EQ(f.written_offset, 8);
	CHECK_EQ(f.written_len, 4);
	struct vhost_user_config g = { .offset = 8, .size = 4 }, r;
	CHECK_EQ(vu_peer_call(&f.peer, VHOST_USER_GET_CONFIG, &g, VHOST_USER_CONFIG_HDR_SIZE + 4,
			      &r, sizeof(r)),
		 VHOST_USER_CONFIG_HDR_SIZE + 4);
	CHECK(memcmp(r.region, "\x01\x02\x03\x04", 4) == 0);
	/* The model refuses byte 0; a write past the config never reaches it. */
	c.offset = 0;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_CONFIG, &c,
				      VHOST_USER_CONFIG_HDR_SIZE + 4, NULL, 0));
	c.offset = CONFIG_SIZE - 2;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_CONFIG, &c,
				      VHOST_USER_CONFIG_HDR_SIZE + 4, NULL, 0));
	CHECK_EQ(f.writes, 1);
	fx_finish(&f, 0);
}

VT_TEST(set_status_is_reported_by_get_status)
{
	struct fx f;
	uint64_t status = 0;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(vu_peer_handshake(&f.peer, F(VERSION_1), PROTOCOL_ALL), 0);
	uint64_t all = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
		       VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;
	CHECK_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_STATUS, all), 0);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK_EQ(status, all);
	/* Status does not fit in a byte. */
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_STATUS, 0x100));
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK_EQ(status, all);
	/* After a device reset, FEATURES_OK does not stick until SET_FEATURES again. */
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0), 0);
	CHECK_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_STATUS, all), 0);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK_EQ(status, all & ~(uint64_t)VIRTIO_CONFIG_S_FEATURES_OK);
	fx_finish(&f, 0);
}

/* A split ring of 8 in the shared memory whose avail idx jumps by 100: the queue breaks. */
VT_TEST(get_status_shows_needs_reset_after_a_queue_breaks)
{
	struct fx f;
	uint64_t status = 0;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	uint8_t *mem = f.region->hva;
	memset(mem, 0, 0x3000);
	((struct virtq_avail *)(mem + 0x1000))->idx = 100;
	uint64_t base = (uint64_t)(uintptr_t)mem;
	struct vhost_vring_addr a = { .index = 1,
				      .desc_user_addr = base,
				      .avail_user_addr = base + 0x1000,
				      .used_user_addr = base + 0x2000 };
	int err = make_eventfd(), kick = make_eventfd();
	uint64_t vring_fd_index = 1;
	CHECK_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 1, 8), 0);
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
	CHECK_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_BASE, 1, 0), 0);
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ERR, &vring_fd_index, 8, &err, 1), 0);
	CHECK_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_ENABLE, 1, 1), 0);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK_EQ(status & NEEDS_RESET, 0);
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_KICK, &vring_fd_index, 8, &kick, 1), 0);
	uint64_t one = 1;
	CHECK_EQ(write(kick, &one, 8), 8);
	/* The back-end signals the error eventfd. */
	struct pollfd pfd = { .fd = err, .events = POLLIN };
	CHECK_EQ(poll(&pfd, 1, VU_PEER_WAIT_MS), 1);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK(status & NEEDS_RESET);
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(f.be, 1, &qs), 0);
	CHECK(qs.broken);
	CHECK(logged(&f, "q1"));
	/* RESET_DEVICE clears it. */
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0), 0);
	CHECK_EQ(vu_peer_get_u64(&f.peer, VHOST_USER_GET_STATUS, &status), 0);
	CHECK_EQ(status & NEEDS_RESET, 0);
	CHECK_EQ(vt_vhost_backend_get_queue_stats(f.be, 1, &qs), 0);
	CHECK(!qs.broken && !qs.running);
	close(err);
	close(kick);
	fx_finish(&f, 0);
}

VT_TEST(stop_makes_serve_return_ecanceled)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	vt_vhost_backend_stop(f.be);
	int rc = 0;
	CHECK_EQ(vu_peer_wait_serve(&f.peer, VU_PEER_WAIT_MS, &rc), 0);
	CHECK_EQ(rc, -ECANCELED);
	/* The connection is closed and the memory unmapped. */
	CHECK(vu_peer_closed(&f.peer));
	CHECK_EQ(fx_stats(&f).mem_regions, 0);
	fx_finish(&f, -ECANCELED);
}

VT_TEST(stop_before_serve_makes_the_next_serve_return_ecanceled)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	int rc = vu_peer_disconnect(&f.peer);
	CHECK_EQ(rc, 0);
	vt_vhost_backend_stop(f.be);
	REQUIRE_EQ(vu_peer_connect(&f.peer, f.be), 0);
	CHECK_EQ(vu_peer_wait_serve(&f.peer, VU_PEER_WAIT_MS, &rc), 0);
	CHECK_EQ(rc, -ECANCELED);
	fx_finish(&f, -ECANCELED);
}

VT_TEST(disconnect_returns_zero_and_unmaps_the_memory)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	int maps = vu_count_memfd_maps();
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	CHECK_EQ(fx_stats(&f).mem_regions, 1);
	CHECK_EQ(vu_count_memfd_maps(), maps + 1);
	CHECK_EQ(vu_peer_disconnect(&f.peer), 0);
	CHECK_EQ(fx_stats(&f).mem_regions, 0);
	CHECK_EQ(vu_count_memfd_maps(), maps);
	fx_finish(&f, 0);
}

VT_TEST(add_and_remove_mem_reg_map_and_unmap)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	int maps = vu_count_memfd_maps();
	CHECK_EQ(vu_peer_add_mem_reg(&f.peer, f.region), 0);
	CHECK_EQ(fx_stats(&f).mem_regions, 1);
	CHECK_EQ(vu_count_memfd_maps(), maps + 1);
	/* The same range again overlaps. */
	CHECK_REFUSED(&f, vu_peer_add_mem_reg(&f.peer, f.region));
	CHECK_EQ(vu_count_memfd_maps(), maps + 1);
	CHECK_EQ(vu_peer_rem_mem_reg(&f.peer, f.region), 0);
	CHECK_EQ(fx_stats(&f).mem_regions, 0);
	CHECK_EQ(vu_count_memfd_maps(), maps);
	fx_finish(&f, 0);
}

/* ---------------------------------------------------------------- malformed messages */

VT_TEST(fixed_size_request_with_wrong_payload_size_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	uint64_t big[4] = { F(VERSION_1), 0, 0, 0 };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_FEATURES, big, 4, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_FEATURES, big, 16, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_NUM, big, 12, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_OWNER, big, 8, NULL, 0));
	CHECK(logged(&f, "payload size"));
	CHECK_EQ(fx_stats(&f).bad_messages, 4);
	fx_finish(&f, 0);
}

VT_TEST(request_with_a_reply_and_wrong_payload_size_closes)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	uint64_t junk = 0;
	/* No reply format carries an error: the back-end closes instead of leaving us waiting. */
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_FEATURES, VU_V1, &junk, 8, NULL, 0), 0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(unknown_request_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	uint8_t payload[40] = { 0 };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, 99, payload, sizeof(payload), NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_NONE, NULL, 0, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_LOG_BASE, payload, 16, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_POSTCOPY_ADVISE, NULL, 0, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, 0xffffffffu, payload, 8, NULL, 0));
	CHECK(logged(&f, "unknown request"));
	fx_finish(&f, 0);
}

VT_TEST(wrong_version_bits_close_the_connection)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_FEATURES, 0x2, NULL, 0, NULL, 0), 0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(payload_larger_than_any_request_closes_the_connection)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	uint8_t payload[sizeof(union vhost_user_payload) + 1] = { 0 };
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_SET_FEATURES, VU_V1, payload, sizeof(payload),
				NULL, 0),
		   0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(extra_fds_are_refused_and_closed)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	uint64_t features = F(VERSION_1);
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_FEATURES, &features, 8));
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_OWNER, NULL, 0));
	/* NOFD says no fd comes with it. */
	uint64_t nofd = 0 | VHOST_USER_VRING_NOFD_MASK;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_CALL, &nofd, 8));
	/* Two fds for one. */
	int two[2] = { make_eventfd(), make_eventfd() };
	uint64_t index = 0;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_CALL, &index, 8, two, 2));
	close(two[0]);
	close(two[1]);
	CHECK(logged(&f, "more fds"));
	fx_finish(&f, 0);
}

VT_TEST(missing_fds_are_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	uint64_t index = 0;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_CALL, &index, 8, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_BACKEND_REQ_FD, NULL, 0, NULL, 0));
	struct vhost_user_memory_single one = { .region = vu_peer_region(f.region) };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), NULL, 0));
	CHECK(logged(&f, "fewer fds"));
	CHECK_EQ(fx_stats(&f).mem_regions, 0);
	fx_finish(&f, 0);
}

VT_TEST(more_fds_than_any_request_closes_the_connection)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	int fds[VHOST_USER_MAX_FDS + 1];
	for (unsigned int i = 0; i < VHOST_USER_MAX_FDS + 1; i++)
		fds[i] = make_eventfd();
	uint64_t features = F(VERSION_1);
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_SET_FEATURES, VU_V1, &features, 8, fds,
				VHOST_USER_MAX_FDS + 1),
		   0);
	for (unsigned int i = 0; i < VHOST_USER_MAX_FDS + 1; i++)
		close(fds[i]);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(queue_index_out_of_range_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, NUM_QUEUES, 8));
	CHECK(logged(&f, "the device has 2"));
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_BASE, 1000, 0));
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_ENABLE, NUM_QUEUES, 1));
	struct vhost_vring_addr a = { .index = NUM_QUEUES };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0));
	uint64_t index = 0xff;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_CALL, &index, 8));
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_KICK, &index, 8));
	/* Bits above the index and NOFD are reserved. */
	index = 1u << 9;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_ERR, &index, 8));
	fx_finish(&f, 0);
}

VT_TEST(queue_size_zero_or_over_the_maximum_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, 0));
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, MAX_QSIZE + 1));
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, 0x10000));
	CHECK_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, MAX_QSIZE), 0);
	fx_finish(&f, 0);
}

/* Sets up queue 0's ring in the shared memory: the ack of SET_VRING_ADDR. */
static int ring_setup(struct fx *f, unsigned int index, uint32_t num)
{
	uint64_t base = (uint64_t)(uintptr_t)f->region->hva;
	struct vhost_vring_addr a = { .index = index,
				      .desc_user_addr = base,
				      .avail_user_addr = base + 0x8000,
				      .used_user_addr = base + 0x10000 };
	int rc = vu_peer_ack_state(&f->peer, VHOST_USER_SET_VRING_NUM, index, num);
	if (rc != 0)
		return rc;
	return vu_peer_ack(&f->peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
}

VT_TEST(split_queue_size_not_a_power_of_two_is_refused_at_start)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	/* Packed rings take any size, so SET_VRING_NUM can't tell yet. */
	CHECK_EQ(ring_setup(&f, 0, 100), 0);
	uint64_t index = 0;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_KICK, &index, 8));
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(f.be, 0, &qs), 0);
	CHECK(!qs.running);
	CHECK_EQ(f.echo.starts, 0);
	fx_finish(&f, 0);
}

VT_TEST(set_vring_kick_before_set_vring_addr_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	CHECK_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, 8), 0);
	uint64_t index = 0;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_KICK, &index, 8));
	CHECK(logged(&f, "kick fd before SET_VRING_ADDR"));
	/* And without an fd at all (polling mode is not offered). */
	index = VHOST_USER_VRING_NOFD_MASK;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_KICK, &index, 8, NULL, 0));
	struct vt_vhost_backend_queue_stats qs;
	CHECK_EQ(vt_vhost_backend_get_queue_stats(f.be, 0, &qs), 0);
	CHECK(!qs.running);
	fx_finish(&f, 0);
}

/* ---------------------------------------------------------------- memory table */

/* Refused memory messages leave the table, the mappings and the fd count as they were. */
static void check_mem_refused(struct fx *f, const struct vhost_user_memory *m, uint32_t size,
			      unsigned int nfds, unsigned int regions_before)
{
	int fds[VHOST_USER_MAX_FDS];
	int maps = vu_count_memfd_maps();

	for (unsigned int i = 0; i < nfds; i++)
		fds[i] = dup(f->region->fd);
	CHECK_REFUSED(f, vu_peer_ack(&f->peer, VHOST_USER_SET_MEM_TABLE, m, size, fds, nfds));
	for (unsigned int i = 0; i < nfds; i++)
		close(fds[i]);
	CHECK_EQ(vu_count_memfd_maps(), maps);
	CHECK_EQ(fx_stats(f).mem_regions, regions_before);
}

VT_TEST(mem_table_with_no_regions_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_memory m = { .nregions = 0 };
	check_mem_refused(&f, &m, MEM_SIZE(0), 0, 0);
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	fx_finish(&f, 0);
}

VT_TEST(mem_table_with_more_than_eight_regions_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_memory m = one_region_table(&f);
	m.nregions = 9;
	check_mem_refused(&f, &m, MEM_SIZE(8), 8, 0);
	CHECK(logged(&f, "region count"));
	fx_finish(&f, 0);
}

VT_TEST(mem_table_region_count_and_fd_count_must_agree)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_memory m = one_region_table(&f);
	m.nregions = 2;
	m.regions[1] = m.regions[0];
	m.regions[1].guest_phys_addr += SHM_SIZE;
	check_mem_refused(&f, &m, MEM_SIZE(2), 1, 0);
	m.nregions = 1;
	check_mem_refused(&f, &m, MEM_SIZE(1), 2, 0);
	check_mem_refused(&f, &m, MEM_SIZE(1), 0, 0);
	/* Payload size says two regions, nregions one. */
	check_mem_refused(&f, &m, MEM_SIZE(2), 1, 0);
	fx_finish(&f, 0);
}

VT_TEST(mem_table_offset_plus_size_overflow_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_memory m = one_region_table(&f);
	m.regions[0].mmap_offset = UINT64_MAX - 0xfff;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	m = one_region_table(&f);
	m.regions[0].guest_phys_addr = UINT64_MAX - 0xfff;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	m = one_region_table(&f);
	m.regions[0].userspace_addr = UINT64_MAX - 0xfff;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	m = one_region_table(&f);
	m.regions[0].memory_size = 0;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	fx_finish(&f, 0);
}

VT_TEST(mem_table_region_larger_than_the_memfd_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_memory m = one_region_table(&f);
	m.regions[0].memory_size = 2ull * SHM_SIZE;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	CHECK(logged(&f, "past the fd"));
	m = one_region_table(&f);
	m.regions[0].mmap_offset = 4096;
	check_mem_refused(&f, &m, MEM_SIZE(1), 1, 0);
	/* An fd that is not memory at all. */
	m = one_region_table(&f);
	int ev = make_eventfd();
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_MEM_TABLE, &m, MEM_SIZE(1), &ev, 1));
	close(ev);
	CHECK_EQ(fx_stats(&f).mem_regions, 0);
	fx_finish(&f, 0);
}

VT_TEST(mem_table_with_overlapping_regions_is_refused_and_keeps_the_old_table)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	struct vhost_user_memory m = one_region_table(&f);
	m.nregions = 2;
	m.regions[1] = m.regions[0];
	m.regions[1].guest_phys_addr += SHM_SIZE / 2;
	m.regions[1].memory_size = SHM_SIZE / 2;
	check_mem_refused(&f, &m, MEM_SIZE(2), 2, 1);
	CHECK(logged(&f, "overlap"));
	fx_finish(&f, 0);
}

VT_TEST(rem_mem_reg_of_an_unknown_region_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	CHECK_REFUSED(&f, vu_peer_rem_mem_reg(&f.peer, f.region));
	REQUIRE_EQ(vu_peer_add_mem_reg(&f.peer, f.region), 0);
	struct vhost_user_memory_single m = { .region = vu_peer_region(f.region) };
	m.region.memory_size /= 2;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_REM_MEM_REG, &m, sizeof(m), NULL, 0));
	/* With the region's fd attached, as QEMU sends it: closed all the same. */
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_REM_MEM_REG, &m, sizeof(m)));
	CHECK(logged(&f, "no such region"));
	CHECK_EQ(fx_stats(&f).mem_regions, 1);
	fx_finish(&f, 0);
}

VT_TEST(ring_addresses_outside_the_shared_memory_are_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	REQUIRE_EQ(vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, 8), 0);
	uint64_t base = (uint64_t)(uintptr_t)f.region->hva;
	struct vhost_vring_addr a = { .index = 0,
				      .desc_user_addr = base + SHM_SIZE,
				      .avail_user_addr = base + 0x1000,
				      .used_user_addr = base + 0x2000 };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0));
	CHECK(logged(&f, "outside the shared memory"));
	/* The used ring straddles the end of the region. */
	a.desc_user_addr = base;
	a.used_user_addr = base + SHM_SIZE - 8;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0));
	/* The ring is not startable either. */
	uint64_t index = 0;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_KICK, &index, 8));
	/* Logging is not offered. */
	a.used_user_addr = base + 0x2000;
	a.flags = VHOST_VRING_F_LOG;
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0));
	fx_finish(&f, 0);
}

/* ---------------------------------------------------------------- IOTLB */

static int iotlb(struct fx *f, uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr,
		 uint8_t perm)
{
	struct vhost_iotlb_msg m = {
		.iova = iova, .size = size, .uaddr = uaddr, .perm = perm, .type = type
	};

	return vu_peer_ack(&f->peer, VHOST_USER_IOTLB_MSG, &m, sizeof(m), NULL, 0);
}

VT_TEST(iotlb_msg_without_access_platform_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	uint64_t hva = (uint64_t)(uintptr_t)f.region->hva;
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x1000, hva, VHOST_ACCESS_RW));
	CHECK(logged(&f, "without VIRTIO_F_ACCESS_PLATFORM"));
	CHECK_EQ(fx_stats(&f).iotlb_updates, 0);
	fx_finish(&f, 0);
}

VT_TEST(iotlb_update_with_bad_perm_size_or_uaddr_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, F(ACCESS_PLATFORM)), 0);
	REQUIRE_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	uint64_t hva = (uint64_t)(uintptr_t)f.region->hva;
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x1000, hva, 0));
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x1000, hva, 0x7));
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0, hva, VHOST_ACCESS_RW));
	CHECK_REFUSED(
	    &f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x1000, hva + SHM_SIZE, VHOST_ACCESS_RW));
	CHECK(logged(&f, "not in one shared region"));
	/* Straddling the end of the region. */
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x2000, hva + SHM_SIZE - 0x1000,
				VHOST_ACCESS_RW));
	/* MISS and ACCESS_FAIL travel the other way; INVALIDATE needs a size. */
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_MISS, 0x1000, 0x1000, hva, VHOST_ACCESS_RW));
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_ACCESS_FAIL, 0x1000, 0x1000, hva, VHOST_ACCESS_RW));
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_INVALIDATE, 0x1000, 0, 0, 0));
	CHECK_EQ(fx_stats(&f).iotlb_updates, 0);
	/* A good one is applied; so is an invalidation running to the top of the space. */
	CHECK_EQ(iotlb(&f, VHOST_IOTLB_UPDATE, 0x1000, 0x1000, hva, VHOST_ACCESS_RW), 0);
	CHECK_EQ(fx_stats(&f).iotlb_updates, 1);
	CHECK_EQ(iotlb(&f, VHOST_IOTLB_INVALIDATE, 0x800, UINT64_MAX, 0, 0), 0);
	CHECK_EQ(fx_stats(&f).iotlb_invalidates, 1);
	fx_finish(&f, 0);
}

/* ---------------------------------------------------------------- order and negotiation */

VT_TEST(state_changing_messages_before_set_owner_are_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	uint64_t protocol = PROTOCOL_ALL;
	/* SET_PROTOCOL_FEATURES may come first (it is how REPLY_ACK gets negotiated). */
	REQUIRE_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES, protocol), 0);
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_FEATURES, F(VERSION_1)));
	CHECK(logged(&f, "before SET_OWNER"));
	int maps = vu_count_memfd_maps();
	CHECK_REFUSED(&f, vu_peer_set_mem_table(&f.peer, f.shm));
	CHECK_REFUSED(&f, vu_peer_add_mem_reg(&f.peer, f.region));
	CHECK_EQ(vu_count_memfd_maps(), maps);
	CHECK_REFUSED(&f, vu_peer_ack_state(&f.peer, VHOST_USER_SET_VRING_NUM, 0, 8));
	uint64_t index = 0;
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_CALL, &index, 8));
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_VRING_KICK, &index, 8));
	CHECK_REFUSED(&f, iotlb(&f, VHOST_IOTLB_UPDATE, 0, 0x1000, 0, VHOST_ACCESS_RW));
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_STATUS, 1));
	struct vt_vhost_backend_stats st = fx_stats(&f);
	CHECK_EQ(st.features, 0);
	CHECK_EQ(st.mem_regions, 0);
	/* After SET_OWNER the same messages are taken. */
	CHECK_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0), 0);
	CHECK_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_FEATURES, F(VERSION_1)), 0);
	CHECK_EQ(vu_peer_set_mem_table(&f.peer, f.shm), 0);
	fx_finish(&f, 0);
}

VT_TEST(set_features_with_a_bit_not_offered_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES, PROTOCOL_ALL), 0);
	REQUIRE_EQ(vu_peer_ack(&f.peer, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0), 0);
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_FEATURES, F(VERSION_1) | 1));
	CHECK(logged(&f, "not offered"));
	CHECK_REFUSED(&f,
		      vu_peer_ack_u64(&f.peer, VHOST_USER_SET_FEATURES, F(VERSION_1) | F(SR_IOV)));
	CHECK_EQ(fx_stats(&f).features, 0);
	/* Missing VERSION_1 breaks a dependency rule of the device object. */
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_FEATURES, F(EVENT_IDX)));
	CHECK_EQ(fx_stats(&f).features, 0);
	fx_finish(&f, 0);
}

VT_TEST(set_protocol_features_with_a_bit_not_offered_is_refused)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES, PROTOCOL_ALL), 0);
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES,
					  PROTOCOL_ALL | P(LOG_SHMFD)));
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES,
					  PROTOCOL_ALL | P(INBAND_NOTIFICATIONS)));
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_PROTOCOL_FEATURES, 1ull << 40));
	CHECK_EQ(fx_stats(&f).protocol_features, PROTOCOL_ALL);
	fx_finish(&f, 0);
}

VT_TEST(get_vring_base_with_a_bad_index_closes)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_vring_state s = { .index = NUM_QUEUES };
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_VRING_BASE, VU_V1, &s, sizeof(s), NULL, 0),
		   0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(get_config_past_256_bytes_closes)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	struct vhost_user_config c = { .offset = 200, .size = 100 };
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_CONFIG, VU_V1, &c,
				VHOST_USER_CONFIG_HDR_SIZE + c.size, NULL, 0),
		   0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(get_config_larger_than_256_bytes_closes)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(fx_handshake(&f, 0), 0);
	/* The size field says 257; the payload carries the 256 that fit. */
	struct vhost_user_config c = { .offset = 0, .size = 257 };
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_CONFIG, VU_V1, &c,
				VHOST_USER_CONFIG_HDR_SIZE + 256, NULL, 0),
		   0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}

VT_TEST(config_and_status_without_their_protocol_features)
{
	struct fx f;
	REQUIRE_EQ(fx_start(&f), 0);
	REQUIRE_EQ(vu_peer_handshake(&f.peer, F(VERSION_1), P(REPLY_ACK)), 0);
	struct vhost_user_config c = { .offset = 8, .size = 4 };
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_SET_CONFIG, &c,
				      VHOST_USER_CONFIG_HDR_SIZE + 4, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_ack_u64(&f.peer, VHOST_USER_SET_STATUS, 1));
	CHECK_REFUSED(&f, vu_peer_ack(&f.peer, VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0));
	CHECK_REFUSED(&f, vu_peer_add_mem_reg(&f.peer, f.region));
	CHECK_REFUSED(&f, ack_with_eventfd(&f, VHOST_USER_SET_BACKEND_REQ_FD, NULL, 0));
	CHECK_EQ(f.writes, 0);
	/* GET_STATUS has no way to say no: the back-end closes. */
	REQUIRE_EQ(vu_peer_send(&f.peer, VHOST_USER_GET_STATUS, VU_V1, NULL, 0, NULL, 0), 0);
	CHECK_CLOSED(&f);
	fx_finish(&f, -EPROTO);
}
