/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk multiqueue: two request queues of one disk, each with its own driver and device
 * halves, served on two threads at once (also under ThreadSanitizer). Each thread writes random
 * data to its own half of the disk, several requests in flight, reads it back and checks it byte
 * for byte; at the end the backing holds what both wrote.
 */
#include <pthread.h>

#include "test_blk_rig.c"

#define MQ_DISK_SIZE (4u << 20)
#define MQ_BATCH     16
#define MQ_LEN	     8192

struct worker {
	struct vt_blk *blk;
	unsigned int index; /* which half of the disk */
	uint64_t rounds;
	struct rig g;
	char failure[256];
	uint8_t *written; /* what this worker last wrote to each of its slots (test memory) */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct rig_opts o = { .features = w->index ? F(RING_PACKED) | F(EVENT_IDX) : F(EVENT_IDX) };
	uint64_t half = MQ_DISK_SIZE / 2 / SECTOR;
	unsigned int slots = (unsigned int)(half * SECTOR / MQ_LEN);
	uint64_t state = 0x77 + w->index;

	int ret = rig_init(&w->g, w->blk, &o);
	if (ret < 0) {
		snprintf(w->failure, sizeof(w->failure), "rig: %s", strerror(-ret));
		return NULL;
	}
	uint8_t *out = rig_alloc(&w->g, (size_t)MQ_BATCH * MQ_LEN, 4096, 0);
	uint8_t *in = rig_alloc(&w->g, (size_t)MQ_BATCH * MQ_LEN, 4096, 0);
	static _Thread_local struct blk_req req[MQ_BATCH];
	if (!out || !in) {
		snprintf(w->failure, sizeof(w->failure), "out of shared memory");
		return NULL;
	}
	for (uint64_t round = 0; round < w->rounds; round++) {
		/* MQ_BATCH distinct slots of this worker's half. */
		unsigned int slot[MQ_BATCH];
		unsigned int first = (unsigned int)(vt_test_rand(&state) % slots);
		for (unsigned int i = 0; i < MQ_BATCH; i++)
			slot[i] = (first + i * 7) % slots;
		for (int pass = 0; pass < 2; pass++) {
			for (unsigned int i = 0; i < MQ_BATCH; i++) {
				uint64_t sector =
				    w->index * half + (uint64_t)slot[i] * MQ_LEN / SECTOR;
				uint8_t *buf = (pass ? in : out) + (size_t)i * MQ_LEN;
				if (!pass) {
					fill_random(buf, MQ_LEN, vt_test_rand(&state));
					memcpy(w->written + (size_t)slot[i] * MQ_LEN, buf, MQ_LEN);
				}
				req_simple(&w->g, &req[i],
					   pass ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, sector, buf,
					   MQ_LEN);
				if (rig_post(&w->g, &req[i]) < 0) {
					snprintf(w->failure, sizeof(w->failure), "post failed");
					return NULL;
				}
			}
			ret = rig_run(&w->g, MQ_BATCH);
			if (ret < 0) {
				snprintf(w->failure, sizeof(w->failure), "round %llu: run: %s",
					 (unsigned long long)round, strerror(-ret));
				return NULL;
			}
			for (unsigned int i = 0; i < MQ_BATCH; i++)
				if (!req[i].done || *req[i].status != VIRTIO_BLK_S_OK) {
					snprintf(w->failure, sizeof(w->failure),
						 "round %llu: request %u status %d",
						 (unsigned long long)round, i,
						 req[i].done ? *req[i].status : -1);
					return NULL;
				}
		}
		for (unsigned int i = 0; i < MQ_BATCH; i++)
			if (memcmp(in + (size_t)i * MQ_LEN, w->written + (size_t)slot[i] * MQ_LEN,
				   MQ_LEN) != 0) {
				snprintf(w->failure, sizeof(w->failure),
					 "round %llu: slot %u read back differently",
					 (unsigned long long)round, slot[i]);
				return NULL;
			}
	}
	return NULL;
}

/* Runs both workers on @blk to the end; failures are reported. */
static void run_workers(struct worker *w, struct vt_blk *blk, uint64_t rounds)
{
	pthread_t t[2];
	bool started[2] = { false, false };

	for (unsigned int i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].blk = blk;
		w[i].index = i;
		w[i].rounds = rounds;
		w[i].written = calloc(1, MQ_DISK_SIZE / 2);
	}
	for (unsigned int i = 0; i < 2; i++)
		started[i] = w[i].written && pthread_create(&t[i], NULL, worker_main, &w[i]) == 0;
	for (unsigned int i = 0; i < 2; i++) {
		if (!started[i]) {
			VT_FAIL_AT("queue %u: cannot start", i);
			continue;
		}
		pthread_join(t[i], NULL);
		if (w[i].failure[0])
			VT_FAIL_AT("queue %u: %s", i, w[i].failure);
		if (atomic_load(&w[i].g.log.errors))
			VT_FAIL_AT("queue %u logged: %s", i, w[i].g.log.first);
		if (w[i].g.q) {
			struct vt_blk_queue_stats st;
			vt_blk_queue_stats(w[i].g.q, &st);
			CHECK_EQ(st.requests, 2 * MQ_BATCH * rounds);
			CHECK_EQ(st.io_errors, 0);
			CHECK_EQ(st.in_flight, 0);
		}
	}
}

static void finish(struct worker *w)
{
	for (unsigned int i = 0; i < 2; i++) {
		rig_destroy(&w[i].g);
		free(w[i].written);
	}
}

VT_TEST(two_queues_on_two_threads_share_a_file_backed_disk)
{
	struct vt_blk *blk;
	int fd;
	struct log_count lc = { 0 };
	struct vt_log hook = rig_log_hook(&lc);

	REQUIRE(file_disk(MQ_DISK_SIZE, false, false, &hook, &blk, &fd) == 0);
	CHECK(vt_blk_offered_features(blk) & BLKF(MQ));
	CHECK_EQ(vt_blk_num_queues(blk), 2);

	struct worker w[2];
	run_workers(w, blk, vt_test_scaled(200));
	/* The file holds the last thing each worker wrote to each of its slots it touched. */
	uint8_t *back = malloc(MQ_DISK_SIZE / 2);
	REQUIRE(back);
	for (unsigned int i = 0; i < 2; i++) {
		REQUIRE(pread(fd, back, MQ_DISK_SIZE / 2, (off_t)i * (MQ_DISK_SIZE / 2)) ==
			MQ_DISK_SIZE / 2);
		/* Slots never written are zero in both. */
		CHECK(memcmp(back, w[i].written, MQ_DISK_SIZE / 2) == 0);
	}
	free(back);
	finish(w);
	vt_blk_free(blk);
	close(fd);
	CHECK_EQ(atomic_load(&lc.errors), 0);
}

VT_TEST(two_queues_on_two_threads_share_a_ram_disk)
{
	struct vt_blk *blk;
	struct vt_blk_params p = { .size = MQ_DISK_SIZE, .num_queues = 2 };

	REQUIRE(vt_blk_new(&p, &blk) == 0);
	struct worker w[2];
	run_workers(w, blk, vt_test_scaled(500));
	finish(w);
	vt_blk_free(blk);
}
