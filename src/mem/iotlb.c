/* SPDX-License-Identifier: MIT */
/*
 * The device-side IOTLB: IOVA ranges kept sorted in one fixed-capacity array split in two, a dense
 * array of start addresses that binary search walks and a parallel array with the rest of each
 * entry, so a lookup touches few cache lines. A reader-writer lock lets data-path threads translate
 * concurrently while the control path updates and invalidates.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/iotlb.h>

#define IOTLB_CACHELINE 64
#define NO_ENTRY	UINT_MAX

/* Everything about an entry but its start, which lives in the array that is searched. */
struct iotlb_slot {
	uint64_t last; /* inclusive, so that an entry can end at 2^64 - 1 */
	uintptr_t hva; /* host address of the entry's first byte */
	unsigned int perm;
};

struct vt_iotlb {
	/* Read by every translation; written only under the write lock (hint aside). */
	uint64_t *start; /* ascending; start[i] > slot[i - 1].last (no overlap) */
	struct iotlb_slot *slot;
	unsigned int count;
	unsigned int capacity;
	/*
	 * Index of the entry that answered last. A hint only: always re-checked, so a stale value
	 * after an update costs one binary search. Relaxed atomic because translations on several
	 * threads share it; stored only when it changes, to keep the line shared-clean.
	 */
	_Atomic unsigned int hint;
	_Atomic uint64_t generation;

	/* Control-path state, written only under the write lock. */
	enum vt_iotlb_full_policy full_policy;
	uint64_t rng; /* picks eviction victims */
	uint64_t evictions;
	uint64_t invalidations;
	bool full_reported; /* one log line per episode of fullness, not one per update */
	const struct vt_log *log;

	/* Every reader writes the lock word: keep it off the read-mostly line above. */
	_Alignas(IOTLB_CACHELINE) pthread_rwlock_t lock;
	/* Bumped by concurrent translations, relaxed: statistics order nothing. */
	_Alignas(IOTLB_CACHELINE) _Atomic uint64_t hits;
	_Atomic uint64_t misses;
	_Atomic uint64_t denied;
};

/*
 * The entries of [first, end) hold bytes of the range an update or invalidation covers; the first
 * may keep bytes below the range (head) and the last bytes above it (tail), both of one entry
 * when the range falls inside it, which is why a split needs a slot more than there was.
 */
struct overlap {
	unsigned int first;
	unsigned int end;
	bool head;
	bool tail;
};

static void read_lock(struct vt_iotlb *t)
{
	/* Fails only on deadlock or reader-count overflow, neither possible with this usage. */
	(void)pthread_rwlock_rdlock(&t->lock);
}

static void write_lock(struct vt_iotlb *t)
{
	(void)pthread_rwlock_wrlock(&t->lock);
}

static void unlock(struct vt_iotlb *t)
{
	(void)pthread_rwlock_unlock(&t->lock);
}

static bool valid_access(unsigned int access)
{
	return access != 0 && (access & ~(unsigned int)VT_ACCESS_RW) == 0;
}

static void bump_generation(struct vt_iotlb *t)
{
	/*
	 * Release: publishes the table change made just before under the write lock to whoever
	 * reads the generation (acquire, vt_iotlb_generation) to validate a cached host pointer.
	 */
	atomic_fetch_add_explicit(&t->generation, 1, memory_order_release);
}

/*
 * xorshift64*: victims only need to be spread over the table, so that no access pattern keeps
 * evicting the same hot entry; a fixed seed keeps runs reproducible.
 */
static uint64_t next_random(struct vt_iotlb *t)
{
	uint64_t x = t->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

int vt_iotlb_new(const struct vt_iotlb_params *params, struct vt_iotlb **out)
{
	struct vt_iotlb_params p = params ? *params : (struct vt_iotlb_params){0};
	pthread_rwlockattr_t attr;
	struct vt_iotlb *t;
	int ret;

	*out = NULL;
	if (p.max_entries == 0)
		p.max_entries = VT_IOTLB_DEFAULT_MAX_ENTRIES;
	if (p.max_entries > VT_IOTLB_MAX_ENTRIES ||
	    (p.full_policy != VT_IOTLB_FULL_REFUSE && p.full_policy != VT_IOTLB_FULL_EVICT))
		return -EINVAL;

	/* Rounded up to the alignment, as aligned_alloc asks; the struct's size already is. */
	t = aligned_alloc(IOTLB_CACHELINE, sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	/* All the room there will ever be, so that update and translate never allocate. */
	t->start = malloc(p.max_entries * sizeof(t->start[0]));
	t->slot = malloc(p.max_entries * sizeof(t->slot[0]));
	if (!t->start || !t->slot) {
		ret = -ENOMEM;
		goto err_free;
	}
	t->capacity = p.max_entries;
	t->full_policy = p.full_policy;
	t->rng = 0x9e3779b97f4a7c15ULL;
	t->log = p.log;

	ret = -pthread_rwlockattr_init(&attr);
	if (ret)
		goto err_free;
#ifdef __GLIBC__
	/*
	 * glibc prefers readers by default: data-path threads translating back to back would starve
	 * an invalidation, which the driver waits for. Readers never take the lock recursively.
	 */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
	ret = -pthread_rwlock_init(&t->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (ret)
		goto err_free;
	*out = t;
	return 0;

err_free:
	free(t->start);
	free(t->slot);
	free(t);
	return ret;
}

void vt_iotlb_free(struct vt_iotlb *iotlb)
{
	if (!iotlb)
		return;
	pthread_rwlock_destroy(&iotlb->lock);
	free(iotlb->start);
	free(iotlb->slot);
	free(iotlb);
}

uint64_t vt_iotlb_generation(const struct vt_iotlb *iotlb)
{
	/* Acquire: pairs with the release in bump_generation. */
	return atomic_load_explicit(&iotlb->generation, memory_order_acquire);
}

/* Index of the first entry whose start is above @addr (0..count). */
static unsigned int upper_bound(const uint64_t *start, unsigned int count, uint64_t addr)
{
	unsigned int lo = 0, n = count;

	while (n) {
		unsigned int half = n / 2;
		if (start[lo + half] <= addr) {
			lo += half + 1;
			n -= half + 1;
		} else {
			n = half;
		}
	}
	return lo;
}

static unsigned int find_entry(const struct vt_iotlb *t, uint64_t addr, unsigned int hint)
{
	if (hint < t->count && t->start[hint] <= addr && addr <= t->slot[hint].last)
		return hint;
	unsigned int i = upper_bound(t->start, t->count, addr);
	if (i == 0 || addr > t->slot[i - 1].last)
		return NO_ENTRY;
	return i - 1;
}

static struct overlap find_overlap(const struct vt_iotlb *t, uint64_t iova, uint64_t last)
{
	struct overlap o;
	unsigned int i = upper_bound(t->start, t->count, iova);

	/* The entry starting at or below @iova overlaps only if it reaches it. */
	if (i > 0 && t->slot[i - 1].last >= iova)
		i--;
	o.first = i;
	o.end = i + upper_bound(t->start + i, t->count - i, last);
	o.head = o.first < o.end && t->start[o.first] < iova;
	o.tail = o.first < o.end && t->slot[o.end - 1].last > last;
	return o;
}

/* Entries left once the range of @o is cut out and @inserted entries are put in. */
static unsigned int entries_after(const struct vt_iotlb *t, const struct overlap *o,
				  unsigned int inserted)
{
	return t->count - (o->end - o->first) + o->head + o->tail + inserted;
}

/*
 * Whether mapping [iova, ...) as @entry changes what a byte it covers translates to: a peer that
 * repeats an update (one per queue that missed) should not make every cached pointer re-resolve.
 */
static bool changes_translation(const struct vt_iotlb *t, const struct overlap *o, uint64_t iova,
				const struct iotlb_slot *entry)
{
	uint64_t delta = (uint64_t)entry->hva - iova;

	for (unsigned int i = o->first; i < o->end; i++) {
		if (t->slot[i].perm != entry->perm ||
		    (uint64_t)t->slot[i].hva - t->start[i] != delta)
			return true;
	}
	return false;
}

static void remove_entry(struct vt_iotlb *t, unsigned int i)
{
	memmove(&t->start[i], &t->start[i + 1], (t->count - i - 1) * sizeof(t->start[0]));
	memmove(&t->slot[i], &t->slot[i + 1], (t->count - i - 1) * sizeof(t->slot[0]));
	t->count--;
}

/*
 * Evicts until the result of the operation on @o fits. Victims are random entries outside @o
 * (evicting one that the operation rewrites frees nothing), or with @others false or none left,
 * the tail and then the head that the operation would have kept: removing a translation is always
 * safe for a cache, the device misses and asks again. Returns the number of entries evicted.
 */
static unsigned int make_room(struct vt_iotlb *t, struct overlap *o, unsigned int need, bool others)
{
	unsigned int evicted = 0;

	while (need > t->capacity) {
		unsigned int outside = t->count - (o->end - o->first);
		if (others && outside) {
			/* Multiply-shift: 32 random bits onto [0, outside), no division. */
			unsigned int v = (unsigned int)(((next_random(t) >> 32) * outside) >> 32);
			if (v >= o->first) {
				v += o->end - o->first;
			} else {
				o->first--;
				o->end--;
			}
			remove_entry(t, v);
		} else if (o->tail) {
			o->tail = false;
		} else if (o->head) {
			o->head = false;
		} else {
			break; /* unreachable: need <= capacity once only the new entry is left */
		}
		need--;
		evicted++;
	}
	return evicted;
}

/*
 * Replaces the entries of @o by what is left of them outside [iova, last], with @entry (NULL for
 * an invalidation) in between. The caller has made sure the result fits.
 */
static void splice(struct vt_iotlb *t, const struct overlap *o, uint64_t iova, uint64_t last,
		   const struct iotlb_slot *entry)
{
	unsigned int keep = o->head + (entry != NULL) + o->tail;
	struct iotlb_slot head = {0}, tail = {0};
	uint64_t head_start = 0, tail_start = 0;
	unsigned int w = o->first;

	/* Saved first: the move below may overwrite them. */
	if (o->head) {
		head_start = t->start[o->first];
		head = t->slot[o->first];
	}
	if (o->tail) {
		tail_start = t->start[o->end - 1];
		tail = t->slot[o->end - 1];
	}
	memmove(&t->start[o->first + keep], &t->start[o->end],
		(t->count - o->end) * sizeof(t->start[0]));
	memmove(&t->slot[o->first + keep], &t->slot[o->end],
		(t->count - o->end) * sizeof(t->slot[0]));
	t->count = entries_after(t, o, entry != NULL);

	if (o->head) {
		t->start[w] = head_start;
		t->slot[w] = head;
		t->slot[w].last = iova - 1; /* head_start < iova */
		w++;
	}
	if (entry) {
		t->start[w] = iova;
		t->slot[w] = *entry;
		w++;
	}
	if (o->tail) {
		/* last < tail.last: no wrap */
		t->start[w] = last + 1;
		t->slot[w] = tail;
		t->slot[w].hva = tail.hva + (uintptr_t)(last + 1 - tail_start);
	}
}

static void report_full(struct vt_iotlb *t, uint64_t iova, uint64_t size)
{
	if (t->full_reported)
		return;
	t->full_reported = true;
	if (t->full_policy == VT_IOTLB_FULL_REFUSE)
		vt_log(t->log, VT_LOG_ERROR,
		       "IOTLB full (%u entries): update iova 0x%llx size 0x%llx refused",
		       t->capacity, (unsigned long long)iova, (unsigned long long)size);
	else
		vt_log(t->log, VT_LOG_WARN,
		       "IOTLB full (%u entries): evicting entries to make room", t->capacity);
}

int vt_iotlb_update(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size, void *hva,
		    unsigned int perm)
{
	struct vt_iotlb *t = iotlb;
	uintptr_t host = (uintptr_t)hva;

	if (size == 0 || !valid_access(perm))
		return -EINVAL;
	if (iova + size - 1 < iova)
		return -EOVERFLOW;
	/* A host range that wraps cannot be memory; refusing it keeps host arithmetic exact. */
	if (host == 0 || size - 1 > UINTPTR_MAX - host)
		return -EINVAL;

	uint64_t last = iova + size - 1;
	struct iotlb_slot entry = {.last = last, .hva = host, .perm = perm};
	unsigned int evicted = 0;

	write_lock(t);
	struct overlap o = find_overlap(t, iova, last);
	unsigned int need = entries_after(t, &o, 1);
	bool changed = changes_translation(t, &o, iova, &entry);
	if (need > t->capacity) {
		report_full(t, iova, size);
		if (t->full_policy == VT_IOTLB_FULL_REFUSE) {
			unlock(t);
			return -ENOSPC;
		}
		evicted = make_room(t, &o, need, true);
		t->evictions += evicted;
	}
	splice(t, &o, iova, last, &entry);
	if (changed || evicted)
		bump_generation(t);
	unlock(t);
	return 0;
}

int vt_iotlb_invalidate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t size)
{
	struct vt_iotlb *t = iotlb;

	if (size == 0)
		return 0;
	if (iova + size - 1 < iova)
		return -EOVERFLOW;

	uint64_t last = iova + size - 1;

	write_lock(t);
	struct overlap o = find_overlap(t, iova, last);
	if (o.first == o.end) {
		unlock(t);
		return 0;
	}
	unsigned int need = entries_after(t, &o, 0);
	if (need > t->capacity) {
		/*
		 * Cutting a hole in an entry of a full table. An invalidation must not fail (the
		 * driver is about to reuse the memory), so room is made: by eviction when that is
		 * the policy, else by dropping the part above the hole, which only costs a miss.
		 */
		t->evictions += make_room(t, &o, need, t->full_policy == VT_IOTLB_FULL_EVICT);
	}
	splice(t, &o, iova, last, NULL);
	t->invalidations++;
	if (t->count < t->capacity)
		t->full_reported = false;
	bump_generation(t);
	unlock(t);
	return 0;
}

void vt_iotlb_invalidate_all(struct vt_iotlb *iotlb)
{
	struct vt_iotlb *t = iotlb;

	write_lock(t);
	if (t->count)
		t->invalidations++;
	t->count = 0;
	t->full_reported = false;
	bump_generation(t);
	unlock(t);
}

int vt_iotlb_translate(struct vt_iotlb *iotlb, uint64_t iova, uint64_t len, unsigned int access,
		       struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
		       struct vt_as_fault *fault)
{
	struct vt_iotlb *t = iotlb;
	unsigned int n = 0;
	int ret = 0;

	*iov_count = 0;
	if (!valid_access(access))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (iova + len - 1 < iova)
		return -EOVERFLOW;

	uint64_t addr = iova, last = iova + len - 1;

	read_lock(t);
	unsigned int hint = atomic_load_explicit(&t->hint, memory_order_relaxed);
	unsigned int i = find_entry(t, addr, hint);
	for (;;) {
		if (i == NO_ENTRY) {
			ret = -EFAULT;
			break;
		}
		const struct iotlb_slot *s = &t->slot[i];
		if ((s->perm & access) != access) {
			ret = -EACCES;
			break;
		}
		uint64_t end = s->last < last ? s->last : last;
		uintptr_t base = s->hva + (uintptr_t)(addr - t->start[i]);
		size_t piece = (size_t)(end - addr + 1);
		if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == base) {
			iov[n - 1].iov_len += piece;
		} else {
			if (n == iov_max) {
				ret = -ENOBUFS;
				break;
			}
			iov[n].iov_base = (void *)base;
			iov[n].iov_len = piece;
			n++;
		}
		if (end == last)
			break;
		/* Entries do not overlap, so the next byte can only be in the next entry. */
		addr = end + 1;
		i++;
		if (i == t->count || t->start[i] != addr)
			i = NO_ENTRY;
	}
	if (ret == 0 && i != hint)
		atomic_store_explicit(&t->hint, i, memory_order_relaxed);
	unlock(t);

	switch (ret) {
	case 0:
		*iov_count = n;
		atomic_fetch_add_explicit(&t->hits, 1, memory_order_relaxed);
		break;
	case -ENOBUFS:
		*iov_count = n;
		break;
	case -EFAULT:
	case -EACCES:
		if (fault) {
			fault->addr = addr;
			fault->access = access;
		}
		atomic_fetch_add_explicit(ret == -EFAULT ? &t->misses : &t->denied, 1,
					  memory_order_relaxed);
		break;
	}
	return ret;
}

int vt_iotlb_lookup(struct vt_iotlb *iotlb, uint64_t iova, struct vt_iotlb_entry *entry)
{
	struct vt_iotlb *t = iotlb;
	int ret = -ENOENT;

	read_lock(t);
	unsigned int i = find_entry(t, iova, atomic_load_explicit(&t->hint, memory_order_relaxed));
	if (i != NO_ENTRY) {
		entry->iova = t->start[i];
		/* Fits: no entry spans all 2^64 addresses, update's size could not express it. */
		entry->size = t->slot[i].last - t->start[i] + 1;
		entry->hva = (void *)t->slot[i].hva;
		entry->perm = t->slot[i].perm;
		ret = 0;
	}
	unlock(t);
	return ret;
}

void vt_iotlb_get_stats(struct vt_iotlb *iotlb, struct vt_iotlb_stats *stats)
{
	struct vt_iotlb *t = iotlb;

	read_lock(t);
	stats->evictions = t->evictions;
	stats->invalidations = t->invalidations;
	stats->entries = t->count;
	unlock(t);
	stats->hits = atomic_load_explicit(&t->hits, memory_order_relaxed);
	stats->misses = atomic_load_explicit(&t->misses, memory_order_relaxed);
	stats->denied = atomic_load_explicit(&t->denied, memory_order_relaxed);
}

static int iotlb_as_translate(void *impl, uint64_t addr, uint64_t len, unsigned int access,
			      struct iovec *iov, unsigned int iov_max, unsigned int *iov_count,
			      struct vt_as_fault *fault)
{
	return vt_iotlb_translate(impl, addr, len, access, iov, iov_max, iov_count, fault);
}

static uint64_t iotlb_as_generation(const void *impl)
{
	return vt_iotlb_generation(impl);
}

static const struct vt_as_ops iotlb_as_ops = {
	.translate = iotlb_as_translate,
	.generation = iotlb_as_generation,
};

struct vt_as vt_iotlb_as(struct vt_iotlb *iotlb)
{
	return (struct vt_as){.ops = &iotlb_as_ops, .impl = iotlb};
}
