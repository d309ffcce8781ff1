/* SPDX-License-Identifier: MIT */
/*
 * The IOTLB under concurrency: reader threads translate while a writer maps, remaps and
 * invalidates. Host memory holds a pattern naming the IOVA each byte may be reached from, so a
 * reader can tell a right translation from a torn or stale one; a per-slot state published after
 * each invalidation returns lets a reader check that no translation starting later still hits.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <virtue/iotlb.h>

#include "harness.h"

#define PAGE	   4096u
#define SLOTS	   16u /* IOVA pages the writer plays with */
#define VERSIONS   4u  /* host pages each slot may map to */
#define IOVA_BASE  0x100000ull
#define READERS	   3
#define WORDS	   (PAGE / 8)
#define MAX_MILLIS 1500
/* Past max_ops or MAX_MILLIS the writer goes on until each reader met a hit and a miss, or this. */
#define MAX_MILLIS_BOTH_OUTCOMES 20000

/*
 * Host page of (slot, version) at index version * SLOTS + slot: the same version of neighbouring
 * slots is contiguous on the host, so a two-slot update and translations across slots merge.
 * Word w of it holds slot << 32 | version << 16 | w.
 */
struct shared {
	struct vt_iotlb *t;
	uint64_t *host;
	/*
	 * Per slot: version << 1 | maybe-mapped. The writer stores it (release) before an update
	 * and after an invalidation returns; a reader that sees the same unmapped value before and
	 * after a translation knows the translation started after the invalidation returned.
	 */
	_Atomic uint64_t state[SLOTS];
	atomic_int stop;
	/*
	 * Readers running, and readers that have met both outcomes: the writer starts when all
	 * run and stops only when all have met both (a reader starved by the scheduler while a
	 * short run went by would otherwise prove nothing, and fail its check by chance).
	 */
	atomic_int started, met_both;
};

struct reader {
	struct shared *s;
	pthread_t thread;
	uint64_t rng;
	uint64_t hits, misses, checked_after_invalidate;
	bool met_both;
	char error[256]; /* first failure; the harness's counters are not thread-safe */
};

static uint64_t host_word(unsigned int slot, unsigned int version, unsigned int word)
{
	return (uint64_t)slot << 32 | (uint64_t)version << 16 | word;
}

static uint64_t *host_page(struct shared *s, unsigned int slot, unsigned int version)
{
	return s->host + (version * SLOTS + slot) * WORDS;
}

static unsigned int page_table_entries(struct vt_iotlb *t)
{
	struct vt_iotlb_stats st;
	vt_iotlb_get_stats(t, &st);
	return st.page_table_entries;
}

static uint64_t millis(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Checks that the iovecs of a translation of [iova, iova + len) show the pattern of those IOVAs,
 * one version per slot. Returns 0 or writes the error.
 */
static int check_content(struct reader *r, uint64_t iova, uint64_t len, const struct iovec *iov,
			 unsigned int n)
{
	unsigned int version[SLOTS];
	uint64_t x = iova;

	memset(version, 0xff, sizeof(version));
	for (unsigned int i = 0; i < n; i++) {
		if (iov[i].iov_len % 8 || (uintptr_t)iov[i].iov_base % 8) {
			snprintf(r->error, sizeof(r->error), "iovec %u misaligned", i);
			return -1;
		}
		const uint64_t *p = iov[i].iov_base;
		for (size_t j = 0; j < iov[i].iov_len / 8; j++, x += 8) {
			unsigned int slot = (unsigned int)((x - IOVA_BASE) / PAGE);
			unsigned int word = (unsigned int)((x - IOVA_BASE) % PAGE / 8);
			uint64_t v = p[j];
			if (version[slot] == UINT_MAX)
				version[slot] = (unsigned int)(v >> 16 & 0xffff);
			if (v != host_word(slot, version[slot], word)) {
				snprintf(r->error, sizeof(r->error),
					 "iova 0x%" PRIx64 " reads 0x%" PRIx64 ", expected slot %u "
					 "word %u",
					 x, v, slot, word);
				return -1;
			}
		}
	}
	if (x != iova + len) {
		snprintf(r->error, sizeof(r->error),
			 "iovecs cover %" PRIu64 " of %" PRIu64 " bytes", x - iova, len);
		return -1;
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct shared *s = r->s;

	/* Relaxed: a count the writer polls; it orders nothing. */
	atomic_fetch_add_explicit(&s->started, 1, memory_order_relaxed);
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed) && !r->error[0]) {
		if (!r->met_both && r->hits && r->misses) {
			r->met_both = true;
			/* Relaxed: as started. */
			atomic_fetch_add_explicit(&s->met_both, 1, memory_order_relaxed);
		}
		struct iovec iov[4];
		struct vt_as_fault fault = { 0 };
		unsigned int n = 0;
		unsigned int slot = (unsigned int)(vt_test_rand(&r->rng) % SLOTS);
		uint64_t iova, len, before = 0;
		int whole_slot = vt_test_rand(&r->rng) & 1;

		if (whole_slot) {
			iova = IOVA_BASE + slot * PAGE;
			len = PAGE;
			/* Acquire: pairs with the writer's release after invalidate returned. */
			before = atomic_load_explicit(&s->state[slot], memory_order_acquire);
		} else {
			/* 8-byte aligned, up to two pages, in the slots: at most 3 entries. */
			uint64_t off = vt_test_rand(&r->rng) % (SLOTS * WORDS) * 8;
			len = 8 * (1 + vt_test_rand(&r->rng) % (2 * WORDS));
			if (off + len > SLOTS * PAGE)
				len = SLOTS * PAGE - off;
			iova = IOVA_BASE + off;
		}
		int ret = vt_iotlb_translate(s->t, iova, len, VT_ACCESS_READ, iov, 4, &n, &fault);
		if (ret == 0) {
			r->hits++;
			if (check_content(r, iova, len, iov, n))
				break;
		} else if (ret == -EFAULT) {
			r->misses++;
			if (fault.addr < iova || fault.addr - iova >= len) {
				snprintf(r->error, sizeof(r->error),
					 "fault at 0x%" PRIx64 " outside 0x%" PRIx64 "+%" PRIu64,
					 fault.addr, iova, len);
				break;
			}
		} else {
			snprintf(r->error, sizeof(r->error),
				 "translate 0x%" PRIx64 "+%" PRIu64 ": %d", iova, len, ret);
			break;
		}
		if (whole_slot) {
			uint64_t after =
			    atomic_load_explicit(&s->state[slot], memory_order_acquire);
			if (before == after && !(before & 1)) {
				r->checked_after_invalidate++;
				if (ret != -EFAULT) {
					snprintf(r->error, sizeof(r->error),
						 "slot %u hit after its invalidation returned",
						 slot);
					break;
				}
			}
		}
	}
	return NULL;
}

struct writer {
	struct shared *s;
	uint64_t rng, ops, max_ops;
	uint64_t version[SLOTS];
	unsigned int most_pages; /* the most page table entries seen live */
	int failed;
};

/* Before an update: readers may see the slot mapped from now on. */
static void mark_mapped(struct writer *w, unsigned int slot)
{
	atomic_store_explicit(&w->s->state[slot], ++w->version[slot] << 1 | 1,
			      memory_order_release);
}

/* After the invalidation returned: no translation that starts now may hit. */
static void mark_unmapped(struct writer *w, unsigned int slot)
{
	atomic_store_explicit(&w->s->state[slot], ++w->version[slot] << 1, memory_order_release);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct shared *s = w->s;

	while (atomic_load_explicit(&s->started, memory_order_relaxed) < READERS)
		sched_yield();
	uint64_t now = millis(), deadline = now + MAX_MILLIS;
	uint64_t hard_deadline = now + MAX_MILLIS_BOTH_OUTCOMES;
	bool enough = false;

	for (w->ops = 0; !w->failed; w->ops++) {
		if (w->ops % 256 == 0) {
			struct vt_iotlb_stats st;
			vt_iotlb_get_stats(s->t, &st);
			if (st.page_table_entries > w->most_pages)
				w->most_pages = st.page_table_entries;
			now = millis();
			enough |= w->ops >= w->max_ops || now > deadline;
			if (now > hard_deadline ||
			    (enough &&
			     atomic_load_explicit(&s->met_both, memory_order_relaxed) == READERS))
				break;
		}
		uint64_t k = vt_test_rand(&w->rng) % 1000;
		unsigned int slot = (unsigned int)(vt_test_rand(&w->rng) % SLOTS);
		unsigned int version = (unsigned int)(vt_test_rand(&w->rng) % VERSIONS);
		uint64_t iova = IOVA_BASE + slot * PAGE;

		if (k < 400) {
			mark_mapped(w, slot);
			w->failed |= vt_iotlb_update(s->t, iova, PAGE, host_page(s, slot, version),
						     VT_IOTLB_PERM_RW) != 0;
		} else if (k < 550 && slot + 1 < SLOTS) {
			/* One entry over two slots, host-contiguous by the layout. */
			mark_mapped(w, slot);
			mark_mapped(w, slot + 1);
			w->failed |=
			    vt_iotlb_update(s->t, iova, 2 * PAGE, host_page(s, slot, version),
					    VT_IOTLB_PERM_RW) != 0;
		} else if (k < 850) {
			unsigned int n = 0;
			w->failed |= vt_iotlb_invalidate(s->t, iova, PAGE) != 0;
			w->failed |= vt_iotlb_translate(s->t, iova, 1, VT_ACCESS_READ, NULL, 0, &n,
							NULL) != -EFAULT;
			mark_unmapped(w, slot);
		} else if (k < 998) {
			/* Half a slot: the state stays "maybe mapped". */
			w->failed |=
			    vt_iotlb_invalidate(s->t, iova + (k & 1) * PAGE / 2, PAGE / 2) != 0;
		} else {
			vt_iotlb_invalidate_all(s->t);
			for (unsigned int i = 0; i < SLOTS; i++)
				mark_unmapped(w, i);
		}
	}
	atomic_store_explicit(&s->stop, 1, memory_order_relaxed);
	return NULL;
}

/*
 * @page_table_pages as struct vt_iotlb_params has it: with the page table, the writer's one-page
 * entries live there, its two-page ones and what a half-page invalidation leaves in the sorted
 * array; without, all of them in the sorted array.
 */
static void readers_race_a_writer(unsigned int page_table_pages)
{
	struct shared s = { 0 };
	struct reader readers[READERS];
	struct writer w = { .s = &s, .max_ops = vt_test_scaled(400000) };
	struct vt_iotlb_params p = { .max_entries = 64, .page_table_pages = page_table_pages };
	pthread_t writer;
	uint64_t seed = vt_test_seed();

	/* Page aligned: a page of it can back a page table entry. */
	s.host = aligned_alloc(PAGE, (size_t)SLOTS * VERSIONS * PAGE);
	REQUIRE(s.host);
	for (unsigned int v = 0; v < VERSIONS; v++)
		for (unsigned int slot = 0; slot < SLOTS; slot++)
			for (unsigned int i = 0; i < WORDS; i++)
				host_page(&s, slot, v)[i] = host_word(slot, v, i);
	REQUIRE_EQ(vt_iotlb_new(&p, &s.t), 0);

	w.rng = seed;
	for (unsigned int i = 0; i < READERS; i++) {
		readers[i] = (struct reader){ .s = &s, .rng = seed + i + 1 };
		REQUIRE_EQ(pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]), 0);
	}
	REQUIRE_EQ(pthread_create(&writer, NULL, writer_main, &w), 0);
	pthread_join(writer, NULL);
	for (unsigned int i = 0; i < READERS; i++)
		pthread_join(readers[i].thread, NULL);

	CHECK(!w.failed);
	/* The run raced the table it was meant to race. */
	if (page_table_pages == VT_IOTLB_NO_PAGE_TABLE)
		CHECK_EQ(w.most_pages, 0);
	else
		CHECK(w.most_pages > 0);
	for (unsigned int i = 0; i < READERS; i++) {
		struct reader *r = &readers[i];
		if (r->error[0])
			VT_FAIL_AT("reader %u (seed 0x%" PRIx64 "): %s", i, seed, r->error);
		/* A run in which readers never met both outcomes proved nothing. */
		CHECK(r->hits > 0);
		CHECK(r->misses > 0);
	}
	printf("  writer ops %" PRIu64 "; reader 0: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
	       " checked after invalidation\n",
	       w.ops, readers[0].hits, readers[0].misses, readers[0].checked_after_invalidate);
	vt_iotlb_free(s.t);
	free(s.host);
}

VT_TEST(readers_see_right_content_or_miss_while_writer_changes_mappings)
{
	readers_race_a_writer(0);
}

VT_TEST(readers_see_right_content_or_miss_while_writer_changes_sorted_entries_only)
{
	readers_race_a_writer(VT_IOTLB_NO_PAGE_TABLE);
}

/*
 * A round in four phases, published by the writer: 0 unmapped (the invalidation returned),
 * 1 update under way, 2 mapped (the update returned), 3 invalidation under way.
 */
struct handshake {
	struct vt_iotlb *t;
	uint64_t *page;
	_Atomic uint64_t phase;
	_Atomic uint64_t seen; /* the last phase the reader checked a whole translation in */
	atomic_int stop;       /* set by the writer when done, by the reader on error */
	char error[256];
};

static void *handshake_reader(void *arg)
{
	struct handshake *h = arg;

	while (!atomic_load_explicit(&h->stop, memory_order_acquire)) {
		struct iovec iov;
		unsigned int n;
		/* Acquire: pairs with the writer's release after update or invalidate returned. */
		uint64_t before = atomic_load_explicit(&h->phase, memory_order_acquire);
		int ret =
		    vt_iotlb_translate(h->t, IOVA_BASE, PAGE, VT_ACCESS_READ, &iov, 1, &n, NULL);
		uint64_t after = atomic_load_explicit(&h->phase, memory_order_acquire);

		if (before != after)
			continue; /* raced with a change: either answer is right */
		if (before % 4 == 0 && ret != -EFAULT) {
			snprintf(h->error, sizeof(h->error),
				 "phase %" PRIu64 ": translate after invalidate returned gave %d",
				 before, ret);
			break;
		}
		if (before % 4 == 2 && (ret != 0 || iov.iov_base != h->page)) {
			snprintf(h->error, sizeof(h->error),
				 "phase %" PRIu64 ": translate after update returned gave %d",
				 before, ret);
			break;
		}
		atomic_store_explicit(&h->seen, before, memory_order_release);
	}
	/* Release: publishes the error to the writer, which stops waiting for this thread. */
	atomic_store_explicit(&h->stop, 1, memory_order_release);
	return NULL;
}

static void handshake_set(struct handshake *h, uint64_t phase)
{
	atomic_store_explicit(&h->phase, phase, memory_order_release);
}

/* Waits until the reader has checked a translation that started in @phase (or gave up). */
static void handshake_wait(struct handshake *h, uint64_t phase)
{
	while (atomic_load_explicit(&h->seen, memory_order_acquire) != phase &&
	       !atomic_load_explicit(&h->stop, memory_order_acquire))
		sched_yield();
}

static void misses_after_invalidate(unsigned int page_table_pages)
{
	struct handshake h = { 0 };
	struct vt_iotlb_params p = { .max_entries = 8, .page_table_pages = page_table_pages };
	pthread_t reader;
	uint64_t rounds = vt_test_scaled(20000), phase = 0;

	h.page = aligned_alloc(PAGE, PAGE); /* page aligned: see readers_race_a_writer */
	REQUIRE(h.page);
	memset(h.page, 0, PAGE);
	REQUIRE_EQ(vt_iotlb_new(&p, &h.t), 0);
	atomic_store(&h.seen, UINT64_MAX);
	REQUIRE_EQ(pthread_create(&reader, NULL, handshake_reader, &h), 0);
	for (uint64_t round = 0; round < rounds && !atomic_load(&h.stop); round++) {
		handshake_set(&h, ++phase);
		CHECK_EQ(vt_iotlb_update(h.t, IOVA_BASE, PAGE, h.page, VT_IOTLB_PERM_RO), 0);
		if (round == 0)
			CHECK_EQ(page_table_entries(h.t),
				 page_table_pages == VT_IOTLB_NO_PAGE_TABLE ? 0 : 1);
		handshake_set(&h, ++phase);
		handshake_wait(&h, phase);
		handshake_set(&h, ++phase);
		CHECK_EQ(vt_iotlb_invalidate(h.t, IOVA_BASE, PAGE), 0);
		handshake_set(&h, ++phase);
		handshake_wait(&h, phase);
	}
	atomic_store_explicit(&h.stop, 1, memory_order_relaxed);
	pthread_join(reader, NULL);
	if (h.error[0])
		VT_FAIL_AT("reader: %s", h.error);
	vt_iotlb_free(h.t);
	free(h.page);
}

/* A page's entry in the page table (the update fits a page), and a sorted entry. */
VT_TEST(translate_after_invalidate_returns_misses_on_another_thread)
{
	misses_after_invalidate(0);
}

VT_TEST(translate_after_invalidate_of_a_sorted_entry_returns_misses_on_another_thread)
{
	misses_after_invalidate(VT_IOTLB_NO_PAGE_TABLE);
}

/*
 * One IOVA page mapped, invalidated and mapped again to another host page, over and over: each
 * update fills the hole its invalidation left, the in-place revival of vt_iotlb_update. A
 * translation that starts after an update began and ends before the next invalidation may miss
 * (the update not yet seen) or hit the new host page, never the page of an earlier life: that
 * would be a host address torn from the permission it was read with.
 */
struct revival {
	struct vt_iotlb *t;
	uint64_t *host; /* VERSIONS pages, page v holding host_word(0, v, w) */
	/* life << 8 | version << 1 | mapped, stored (release) before each update and after each
	 * invalidation returned. */
	_Atomic uint64_t state;
	atomic_int stop, started;
	/*
	 * Set by the reader at its first checked hit: the writer goes on until then (a reader
	 * starved by the scheduler while the lives went by would prove nothing).
	 */
	atomic_int checked_one;
	uint64_t stale;	  /* reader: hits on an earlier life's page; want 0 */
	uint64_t checked; /* reader: hits checked against the current life */
	char error[256];
};

static void *revival_reader(void *arg)
{
	struct revival *v = arg;

	atomic_fetch_add_explicit(&v->started, 1, memory_order_relaxed);
	while (!atomic_load_explicit(&v->stop, memory_order_relaxed)) {
		struct iovec iov;
		unsigned int n = 0;
		/* Acquire: pairs with the writer's release stores of the state. */
		uint64_t before = atomic_load_explicit(&v->state, memory_order_acquire);
		int ret =
		    vt_iotlb_translate(v->t, IOVA_BASE, PAGE, VT_ACCESS_READ, &iov, 1, &n, NULL);
		uint64_t after = atomic_load_explicit(&v->state, memory_order_acquire);

		if (ret != 0 && ret != -EFAULT) {
			snprintf(v->error, sizeof(v->error), "translate gave %d", ret);
			break;
		}
		if (ret != 0 || before != after || !(before & 1))
			continue;
		uint64_t want = before >> 1 & 0x7f;
		uint64_t got = ((const uint64_t *)iov.iov_base)[0] >> 16 & 0xffff;
		if (v->checked++ == 0)
			atomic_store_explicit(&v->checked_one, 1, memory_order_relaxed);
		v->stale += got != want;
	}
	return NULL;
}

static void hole_mapped_again(unsigned int page_table_pages)
{
	struct revival v = { 0 };
	struct vt_iotlb_params p = { .max_entries = 8, .page_table_pages = page_table_pages };
	pthread_t reader;
	uint64_t lives = vt_test_scaled(300000), life;

	v.host = aligned_alloc(PAGE, (size_t)VERSIONS * PAGE); /* see readers_race_a_writer */
	REQUIRE(v.host);
	for (unsigned int ver = 0; ver < VERSIONS; ver++)
		for (unsigned int i = 0; i < WORDS; i++)
			v.host[ver * WORDS + i] = host_word(0, ver, i);
	REQUIRE_EQ(vt_iotlb_new(&p, &v.t), 0);
	REQUIRE_EQ(pthread_create(&reader, NULL, revival_reader, &v), 0);
	while (!atomic_load_explicit(&v.started, memory_order_relaxed))
		sched_yield();

	uint64_t now = millis(), deadline = now + MAX_MILLIS;
	uint64_t hard_deadline = now + MAX_MILLIS_BOTH_OUTCOMES;
	for (life = 1;; life++) {
		if (life % 1024 == 0) {
			now = millis();
			bool enough = life > lives || now > deadline;
			if (now > hard_deadline ||
			    (enough && atomic_load_explicit(&v.checked_one, memory_order_relaxed)))
				break;
		}
		unsigned int ver = (unsigned int)(life % VERSIONS);
		atomic_store_explicit(&v.state, life << 8 | ver << 1 | 1, memory_order_release);
		CHECK_EQ(
		    vt_iotlb_update(v.t, IOVA_BASE, PAGE, &v.host[ver * WORDS], VT_IOTLB_PERM_RO),
		    0);
		if (life == 1)
			CHECK_EQ(page_table_entries(v.t),
				 page_table_pages == VT_IOTLB_NO_PAGE_TABLE ? 0 : 1);
		CHECK_EQ(vt_iotlb_invalidate(v.t, IOVA_BASE, PAGE), 0);
		atomic_store_explicit(&v.state, life << 8, memory_order_release);
	}
	atomic_store_explicit(&v.stop, 1, memory_order_relaxed);
	pthread_join(reader, NULL);
	if (v.error[0])
		VT_FAIL_AT("reader: %s", v.error);
	CHECK_EQ(v.stale, 0);
	CHECK(v.checked > 0); /* a run that checked nothing proved nothing */
	/* Every life after the first fills the hole in place (the entry is kept dead). */
	struct vt_iotlb_stats st;
	vt_iotlb_get_stats(v.t, &st);
	CHECK_EQ(st.invalidations, life - 1);
	printf("  %" PRIu64 " lives; reader checked %" PRIu64 " hits\n", life - 1, v.checked);
	vt_iotlb_free(v.t);
	free(v.host);
}

VT_TEST(a_hole_mapped_again_never_shows_a_previous_host_page_to_a_concurrent_reader)
{
	hole_mapped_again(0);
}

VT_TEST(a_dead_sorted_entry_mapped_again_never_shows_a_previous_host_page_to_a_concurrent_reader)
{
	hole_mapped_again(VT_IOTLB_NO_PAGE_TABLE);
}

struct batch_peer {
	struct vt_iotlb *t;
	void *page;
	atomic_int about_to_write, done;
	int ret;
};

static void *update_from_another_thread(void *arg)
{
	struct batch_peer *p = arg;

	atomic_store_explicit(&p->about_to_write, 1, memory_order_release);
	p->ret = vt_iotlb_update(p->t, IOVA_BASE + PAGE, PAGE, p->page, VT_IOTLB_PERM_RW);
	atomic_store_explicit(&p->done, 1, memory_order_release);
	return NULL;
}

static void *translate_from_another_thread(void *arg)
{
	struct batch_peer *p = arg;
	struct iovec iov;
	unsigned int n;

	p->ret = vt_iotlb_translate(p->t, IOVA_BASE, PAGE, VT_ACCESS_READ, &iov, 1, &n, NULL);
	if (p->ret == 0 && iov.iov_base != p->page)
		p->ret = -EINVAL;
	atomic_store_explicit(&p->done, 1, memory_order_release);
	return NULL;
}

VT_TEST(a_writer_batch_holds_other_writers_off_until_its_end_and_readers_not_at_all)
{
	struct vt_iotlb *t;
	uint64_t *pages = aligned_alloc(PAGE, 2 * PAGE);
	pthread_t writer, reader;

	REQUIRE(pages);
	memset(pages, 0, 2 * PAGE);
	REQUIRE_EQ(vt_iotlb_new(NULL, &t), 0);
	struct batch_peer w = { .t = t, .page = pages + WORDS };
	struct batch_peer r = { .t = t, .page = pages };

	vt_iotlb_batch_begin(t);
	vt_iotlb_batch_begin(t); /* nests */
	/* The batch's own thread writes without the lock it holds. */
	REQUIRE_EQ(vt_iotlb_update(t, IOVA_BASE, PAGE, pages, VT_IOTLB_PERM_RO), 0);
	vt_iotlb_batch_end(t);
	REQUIRE_EQ(pthread_create(&writer, NULL, update_from_another_thread, &w), 0);
	/* A reader on another thread translates at once, the batch still open. */
	REQUIRE_EQ(pthread_create(&reader, NULL, translate_from_another_thread, &r), 0);
	pthread_join(reader, NULL);
	CHECK_EQ(r.ret, 0);
	/*
	 * The writer is about to update IOVA_BASE + PAGE; given time to get into the lock, it
	 * must still be waiting when this thread maps the same page elsewhere, and its update
	 * must land after the batch ends: the last word is the writer's, whatever the timing.
	 */
	while (!atomic_load_explicit(&w.about_to_write, memory_order_acquire))
		sched_yield();
	usleep(20000);
	CHECK(!atomic_load_explicit(&w.done, memory_order_acquire));
	REQUIRE_EQ(vt_iotlb_update(t, IOVA_BASE + PAGE, PAGE, pages, VT_IOTLB_PERM_RO), 0);
	vt_iotlb_batch_end(t);
	pthread_join(writer, NULL);
	CHECK_EQ(w.ret, 0);
	struct vt_iotlb_entry e;
	CHECK_EQ(vt_iotlb_lookup(t, IOVA_BASE + PAGE, &e), 0);
	CHECK(e.hva == pages + WORDS);
	CHECK_EQ(e.perm, VT_IOTLB_PERM_RW);
	/* Ended: this thread waits for the lock like any other writer again (no deadlock). */
	CHECK_EQ(vt_iotlb_invalidate(t, IOVA_BASE, 2 * PAGE), 0);
	/* An end without a batch is refused and leaves the lock free for the next writer. */
	CHECK_EQ(vt_iotlb_batch_end(t), -EINVAL);
	atomic_store(&w.done, 0);
	REQUIRE_EQ(pthread_create(&writer, NULL, update_from_another_thread, &w), 0);
	pthread_join(writer, NULL);
	CHECK_EQ(w.ret, 0);
	vt_iotlb_free(t);
	free(pages);
}

/*
 * A page walker (vt_as_page_entry, as a ring's burst reads the page table) against a writer that
 * maps one IOVA page to a fresh host page each round and then invalidates it. The rule a walker
 * relies on: an entry loaded after a generation is at least as new as it, so a walker that loaded
 * the generation an invalidation published must not see the host page that invalidation killed.
 * (x86 orders these loads anyway; a weakly ordered CPU, or a compiler, would not without the
 * acquire loads and the release publication.)
 */
#define WALK_ROUNDS 4096u

struct walk_race {
	struct vt_iotlb *t;
	struct vt_as as;
	uint8_t *host;				 /* WALK_ROUNDS pages, one per round */
	_Atomic uint64_t killed_at[WALK_ROUNDS]; /* the generation round k's invalidation left */
	atomic_int stop;
	_Atomic uint64_t walks; /* the writer waits for a walk in every round: they overlap */
	uint64_t seen, stale;
};

static void *walker(void *arg)
{
	struct walk_race *w = arg;

	while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
		uint64_t gen = vt_as_generation(&w->as);
		uint64_t pte = vt_as_page_entry(&w->as, IOVA_BASE);
		atomic_fetch_add_explicit(&w->walks, 1, memory_order_relaxed);
		if (!pte)
			continue;
		w->seen++;
		uint64_t k = ((pte & ~(uint64_t)(PAGE - 1)) - (uint64_t)(uintptr_t)w->host) / PAGE;
		uint64_t killed = k < WALK_ROUNDS
				      ? atomic_load_explicit(&w->killed_at[k], memory_order_relaxed)
				      : 1;
		if (k >= WALK_ROUNDS || (killed && killed <= gen))
			w->stale++;
	}
	return NULL;
}

VT_TEST(a_page_walker_never_sees_a_page_killed_before_the_generation_it_loaded)
{
	struct walk_race *w = calloc(1, sizeof(*w));
	pthread_t reader;

	REQUIRE(w);
	w->host = aligned_alloc(PAGE, (size_t)WALK_ROUNDS * PAGE);
	REQUIRE(w->host);
	REQUIRE_EQ(vt_iotlb_new(NULL, &w->t), 0);
	w->as = vt_iotlb_as(w->t);
	REQUIRE(w->as.page_table != NULL);
	REQUIRE_EQ(pthread_create(&reader, NULL, walker, w), 0);
	/* Bounded in time too: on a loaded machine every round may wait for the walker. */
	uint64_t deadline = millis() + MAX_MILLIS;
	for (unsigned int k = 0; k < WALK_ROUNDS && millis() < deadline; k++) {
		CHECK_EQ(vt_iotlb_update(w->t, IOVA_BASE, PAGE, w->host + (size_t)k * PAGE,
					 VT_IOTLB_PERM_RO),
			 0);
		if (k == 0)
			CHECK_EQ(page_table_entries(w->t), 1);
		/*
		 * The walker walks at least once while the page is mapped (unless the deadline
		 * passes first: a scheduler may starve it), and the invalidation then races its
		 * next walks.
		 */
		uint64_t walked = atomic_load_explicit(&w->walks, memory_order_relaxed);
		while (atomic_load_explicit(&w->walks, memory_order_relaxed) == walked &&
		       millis() < deadline)
			sched_yield();
		CHECK_EQ(vt_iotlb_invalidate(w->t, IOVA_BASE, PAGE), 0);
		atomic_store_explicit(&w->killed_at[k], vt_iotlb_generation(w->t),
				      memory_order_relaxed);
	}
	atomic_store_explicit(&w->stop, 1, memory_order_release);
	pthread_join(reader, NULL);
	CHECK_EQ(w->stale, 0);
	/* The race happened: the walker met mapped pages. */
	CHECK(w->seen > 0);
	if (getenv("WALKDBG") || w->seen == 0)
		fprintf(stderr,
			"  note: the walker met a mapped page %" PRIu64 " times in %" PRIu64
			" walks\n",
			w->seen, (uint64_t)atomic_load(&w->walks));
	vt_iotlb_free(w->t);
	free(w->host);
	free(w);
}
