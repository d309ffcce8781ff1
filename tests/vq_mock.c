/* SPDX-License-Identifier: MIT */
/*
 * Mock virtqueue peers for tests (see vq_mock.h): a driver that writes any ring state for a
 * device half to read, and a device that writes any used state for a driver half to read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "vq_mock.h"

#define DEFAULT_GPA  (1ULL << 30)
#define DEFAULT_SIZE (1u << 20)

static uint64_t round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

/* Ring fields are shared with the other half: single, untorn accesses, as ring_access.h does. */
static void store16(vt_le16 *p, uint16_t v)
{
	__atomic_store_n(p, vt_cpu_to_le16(v), __ATOMIC_RELAXED);
}

/* Publishes an index or flag: everything written before it is visible first. */
static void publish16(vt_le16 *p, uint16_t v)
{
	__atomic_store_n(p, vt_cpu_to_le16(v), __ATOMIC_RELEASE);
}

static uint16_t load16(const vt_le16 *p)
{
	/* Acquire: what the peer published with the value is read after it. */
	return vt_le16_to_cpu(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static void store32(vt_le32 *p, uint32_t v)
{
	__atomic_store_n(p, vt_cpu_to_le32(v), __ATOMIC_RELAXED);
}

static uint32_t load32(const vt_le32 *p)
{
	return vt_le32_to_cpu(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static void store64(vt_le64 *p, uint64_t v)
{
	__atomic_store_n(p, vt_cpu_to_le64(v), __ATOMIC_RELAXED);
}

static uint64_t load64(const vt_le64 *p)
{
	return vt_le64_to_cpu(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static void write_split(struct virtq_desc *p, struct vq_mock_desc d)
{
	store64(&p->addr, d.addr);
	store32(&p->len, d.len);
	store16(&p->flags, d.flags);
	store16(&p->next, d.next);
}

static struct vq_mock_desc read_split(const struct virtq_desc *p)
{
	return (struct vq_mock_desc){ load64(&p->addr), load32(&p->len),
				      vt_le16_to_cpu(__atomic_load_n(&p->flags, __ATOMIC_RELAXED)),
				      vt_le16_to_cpu(__atomic_load_n(&p->next, __ATOMIC_RELAXED)) };
}

/* Packed: flags last, with release, since they hand the descriptor over. */
static void write_packed(struct pvirtq_desc *p, struct vq_mock_desc d)
{
	store64(&p->addr, d.addr);
	store32(&p->len, d.len);
	store16(&p->id, d.next);
	publish16(&p->flags, d.flags);
}

static struct vq_mock_desc read_packed(const struct pvirtq_desc *p)
{
	/* Flags first, with acquire: the rest is read after ownership was seen. */
	uint16_t flags = load16(&p->flags);
	return (struct vq_mock_desc){ load64(&p->addr), load32(&p->len), flags,
				      vt_le16_to_cpu(__atomic_load_n(&p->id, __ATOMIC_RELAXED)) };
}

/* ---------------------------------------------------------------- mock driver */

static size_t desc_area_size(const struct vq_mock *m)
{
	return m->packed ? sizeof(struct pvirtq_desc) * m->num : virtq_split_desc_size(m->num);
}

static size_t driver_area_size(const struct vq_mock *m)
{
	return m->packed ? sizeof(struct pvirtq_event_suppress) : virtq_split_avail_size(m->num);
}

static size_t device_area_size(const struct vq_mock *m)
{
	return m->packed ? sizeof(struct pvirtq_event_suppress) : virtq_split_used_size(m->num);
}

int vq_mock_init(struct vq_mock *m, const struct vq_mock_params *params)
{
	*m = (struct vq_mock){
		.num = params->num,
		.packed = params->packed,
		.space = params->space,
		.gpa = params->gpa ? params->gpa : DEFAULT_GPA,
		.size = round_up(params->size ? params->size : DEFAULT_SIZE, VQ_MOCK_PAGE),
		.wrap = true, /* 2.8.1: both wrap counters start at 1 */
		.next_seed = 0x1234567,
	};
	if (m->num == 0 || m->num > VIRTQ_SPLIT_MAX_SIZE)
		return -EINVAL;

	m->map_size = m->size + 2 * (VQ_MOCK_PAGE + VQ_MOCK_CANARY_SIZE);
	m->map =
	    mmap(NULL, m->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->map == MAP_FAILED) {
		m->map = NULL;
		return -ENOMEM;
	}
	/* Guards: a stray access past the canaries faults instead of corrupting the test. */
	if (mprotect(m->map, VQ_MOCK_PAGE, PROT_NONE) < 0 ||
	    mprotect(m->map + m->map_size - VQ_MOCK_PAGE, VQ_MOCK_PAGE, PROT_NONE) < 0) {
		vq_mock_destroy(m);
		return -errno;
	}
	m->mem = m->map + VQ_MOCK_PAGE + VQ_MOCK_CANARY_SIZE;
	memset(m->mem - VQ_MOCK_CANARY_SIZE, VQ_MOCK_CANARY, VQ_MOCK_CANARY_SIZE);
	memset(m->mem + m->size, VQ_MOCK_CANARY, VQ_MOCK_CANARY_SIZE);

	/* Each area on pages of its own, in the spec's order. */
	uint64_t at = m->gpa;
	m->desc_addr = at;
	at = round_up(at + desc_area_size(m), VQ_MOCK_PAGE);
	m->driver_addr = at;
	at = round_up(at + driver_area_size(m), VQ_MOCK_PAGE);
	m->device_addr = at;
	at = round_up(at + device_area_size(m), VQ_MOCK_PAGE);
	m->rings_end = m->heap_next = at;
	if (at - m->gpa > m->size) {
		vq_mock_destroy(m);
		return -ENOSPC;
	}

	int ret = 0;
	if (m->space == VQ_MOCK_MEMTABLE) {
		struct vt_mem_region r = { .gpa = m->gpa, .size = m->size, .hva = m->mem };
		m->table = vt_memtable_new(params->log);
		ret = m->table ? vt_memtable_add(m->table, &r) : -ENOMEM;
		if (ret == 0)
			m->as = vt_memtable_as(m->table);
	} else {
		struct vt_iotlb_params ip = { .log = params->log };
		ret = vt_iotlb_new(&ip, &m->iotlb);
		if (ret == 0)
			ret = vt_iotlb_update(m->iotlb, m->gpa, m->size, m->mem, VT_IOTLB_PERM_RW);
		if (ret == 0)
			m->as = vt_iotlb_as(m->iotlb);
	}
	if (ret < 0)
		vq_mock_destroy(m);
	return ret;
}

void vq_mock_destroy(struct vq_mock *m)
{
	vt_memtable_free(m->table);
	vt_iotlb_free(m->iotlb);
	free(m->snapshot);
	if (m->map)
		munmap(m->map, m->map_size);
	*m = (struct vq_mock){ 0 };
}

void vq_mock_dev_params(const struct vq_mock *m, uint64_t features, struct vt_vq_dev_params *params)
{
	*params = (struct vt_vq_dev_params){
		.num = m->num,
		.features = features,
		.desc_addr = m->desc_addr,
		.driver_addr = m->driver_addr,
		.device_addr = m->device_addr,
		.as = m->as,
		/* A fresh packed ring starts at slot 0 in wrap 1 (2.8.1), which bit 15 encodes. */
		.next_avail = m->packed ? 1u << PVIRTQ_EVENT_WRAP_SHIFT : 0,
		.name = "mock",
	};
}

uint64_t vq_mock_alloc(struct vq_mock *m, size_t size, size_t align)
{
	uint64_t at = round_up(m->heap_next, align ? align : 8);

	if (at + size > m->gpa + m->size || at + size < at)
		return 0;
	m->heap_next = at + size;
	return at;
}

void *vq_mock_ptr(const struct vq_mock *m, uint64_t addr)
{
	if (addr < m->gpa || addr - m->gpa >= m->size)
		return NULL;
	return m->mem + (addr - m->gpa);
}

uint64_t vq_mock_unmapped_addr(const struct vq_mock *m)
{
	return m->gpa + m->size;
}

int vq_mock_iotlb_map(struct vq_mock *m, uint64_t addr, uint64_t size, unsigned int perm)
{
	void *hva = vq_mock_ptr(m, addr);

	if (!m->iotlb || !hva || size > m->size - (addr - m->gpa))
		return -EINVAL;
	return vt_iotlb_update(m->iotlb, addr, size, hva, perm);
}

int vq_mock_iotlb_unmap(struct vq_mock *m, uint64_t addr, uint64_t size)
{
	return m->iotlb ? vt_iotlb_invalidate(m->iotlb, addr, size) : -EINVAL;
}

bool vq_mock_canaries_intact(const struct vq_mock *m)
{
	for (size_t i = 0; i < VQ_MOCK_CANARY_SIZE; i++)
		if (m->mem[-1 - (long)i] != VQ_MOCK_CANARY || m->mem[m->size + i] != VQ_MOCK_CANARY)
			return false;
	return true;
}

void vq_mock_snapshot(struct vq_mock *m)
{
	if (!m->snapshot)
		m->snapshot = malloc(m->size);
	if (m->snapshot)
		memcpy(m->snapshot, m->mem, m->size);
}

static bool in_range(uint64_t addr, uint64_t start, uint64_t size)
{
	return addr >= start && addr - start < size;
}

long vq_mock_first_change(const struct vq_mock *m, bool except_device_area)
{
	if (!m->snapshot)
		return 0;
	for (size_t i = 0; i < m->size; i++) {
		if (m->mem[i] == m->snapshot[i])
			continue;
		uint64_t addr = m->gpa + i;
		if (except_device_area &&
		    (in_range(addr, m->device_addr, device_area_size(m)) ||
		     (m->packed && in_range(addr, m->desc_addr, desc_area_size(m)))))
			continue;
		return (long)i;
	}
	return -1;
}

static struct virtq_desc *split_desc(const struct vq_mock *m)
{
	return vq_mock_ptr(m, m->desc_addr);
}

static struct virtq_avail *split_avail(const struct vq_mock *m)
{
	return vq_mock_ptr(m, m->driver_addr);
}

static struct virtq_used *split_used(const struct vq_mock *m)
{
	return vq_mock_ptr(m, m->device_addr);
}

void vq_mock_set_desc(struct vq_mock *m, uint16_t index, struct vq_mock_desc d)
{
	if (index < m->num) /* a hostile *value* is fine; writing outside the table is not */
		write_split(&split_desc(m)[index], d);
}

struct vq_mock_desc vq_mock_get_desc(const struct vq_mock *m, uint16_t index)
{
	return read_split(&split_desc(m)[index % m->num]);
}

void vq_mock_set_avail_ring(struct vq_mock *m, uint16_t slot, uint16_t head)
{
	store16(&split_avail(m)->ring[slot % m->num], head);
}

void vq_mock_set_avail_idx(struct vq_mock *m, uint16_t idx)
{
	/* Release: ring entries and descriptors before the index that exposes them. */
	publish16(&split_avail(m)->idx, idx);
	m->avail_idx = idx;
}

void vq_mock_set_avail_flags(struct vq_mock *m, uint16_t flags)
{
	store16(&split_avail(m)->flags, flags);
}

void vq_mock_set_used_event(struct vq_mock *m, uint16_t event)
{
	store16(&split_avail(m)->ring[m->num], event);
}

uint16_t vq_mock_used_idx(const struct vq_mock *m)
{
	return load16(&split_used(m)->idx);
}

uint16_t vq_mock_used_flags(const struct vq_mock *m)
{
	return load16(&split_used(m)->flags);
}

uint16_t vq_mock_avail_event(const struct vq_mock *m)
{
	return load16((const vt_le16 *)&split_used(m)->ring[m->num]);
}

void vq_mock_used_elem(const struct vq_mock *m, uint16_t slot, uint32_t *id, uint32_t *len)
{
	const struct virtq_used_elem *e = &split_used(m)->ring[slot % m->num];

	*id = load32(&e->id);
	*len = load32(&e->len);
}

void vq_mock_write_desc_at(struct vq_mock *m, uint64_t addr, struct vq_mock_desc d)
{
	void *p = vq_mock_ptr(m, addr);

	if (!p || m->size - (addr - m->gpa) < sizeof(struct virtq_desc))
		return;
	if (m->packed)
		write_packed(p, d);
	else
		write_split(p, d);
}

uint64_t vq_mock_write_table(struct vq_mock *m, const struct vq_mock_desc *d, unsigned int n)
{
	uint64_t table = vq_mock_alloc(m, (size_t)n * sizeof(struct virtq_desc), 16);

	if (!table)
		return 0;
	for (unsigned int i = 0; i < n; i++)
		vq_mock_write_desc_at(m, table + i * sizeof(struct virtq_desc), d[i]);
	return table;
}

static struct pvirtq_desc *packed_desc(const struct vq_mock *m)
{
	return vq_mock_ptr(m, m->desc_addr);
}

void vq_mock_set_packed_desc(struct vq_mock *m, uint16_t slot, struct vq_mock_desc d)
{
	if (slot < m->num)
		write_packed(&packed_desc(m)[slot], d);
}

struct vq_mock_desc vq_mock_get_packed_desc(const struct vq_mock *m, uint16_t slot)
{
	return read_packed(&packed_desc(m)[slot % m->num]);
}

void vq_mock_set_driver_event(struct vq_mock *m, uint16_t desc, uint16_t flags)
{
	struct pvirtq_event_suppress *e = vq_mock_ptr(m, m->driver_addr);

	store16(&e->desc, desc);
	publish16(&e->flags, flags);
}

void vq_mock_get_device_event(const struct vq_mock *m, uint16_t *desc, uint16_t *flags)
{
	const struct pvirtq_event_suppress *e = vq_mock_ptr(m, m->device_addr);

	*flags = load16(&e->flags);
	*desc = load16(&e->desc);
}

void vq_mock_packed_resume(struct vq_mock *m, uint16_t slot, bool wrap)
{
	m->next_slot = (uint16_t)(slot % m->num);
	m->wrap = wrap;
}

struct vq_mock_desc vq_mock_packed_chain_desc(const struct vq_mock *m,
					      const struct vq_mock_chain *c, unsigned int i)
{
	struct vq_mock_desc d = vq_mock_get_packed_desc(m, (uint16_t)((c->head + i) % m->num));

	if (i == 0)
		d.flags = c->first_flags;
	return d;
}

void vq_mock_packed_set_chain_desc(struct vq_mock *m, struct vq_mock_chain *c, unsigned int i,
				   struct vq_mock_desc d)
{
	uint16_t slot = (uint16_t)((c->head + i) % m->num);

	if (i == 0) {
		/* Still held back: the slot keeps the flags it had until vq_mock_publish. */
		c->first_flags = d.flags;
		d.flags = vq_mock_get_packed_desc(m, slot).flags;
	}
	vq_mock_set_packed_desc(m, slot, d);
}

/* Buffers for the segments, readable ones patterned, writable ones poisoned. */
static int fill_segments(struct vq_mock *m, const struct vq_mock_seg *segs, unsigned int n,
			 struct vq_mock_chain *c)
{
	uint64_t stream = 0;

	c->nsegs = n;
	c->readable_bytes = c->writable_bytes = 0;
	for (unsigned int i = 0; i < n; i++) {
		uint64_t addr = vq_mock_alloc(m, segs[i].len, 8);
		if (!addr)
			return -ENOSPC;
		uint8_t *p = vq_mock_ptr(m, addr);
		c->addr[i] = addr;
		c->len[i] = segs[i].len;
		c->writable[i] = segs[i].writable;
		if (segs[i].writable) {
			memset(p, VQ_MOCK_POISON, segs[i].len);
			c->writable_bytes += segs[i].len;
			continue;
		}
		for (uint32_t k = 0; k < segs[i].len; k++)
			p[k] = vq_mock_pattern(c->seed, stream + k);
		stream += segs[i].len;
		c->readable_bytes += segs[i].len;
	}
	return 0;
}

static int build_split(struct vq_mock *m, unsigned int n, unsigned int options,
		       struct vq_mock_chain *c)
{
	uint16_t head = m->next_desc;

	c->head = c->id = head;
	if (options & VQ_MOCK_INDIRECT) {
		struct vq_mock_desc table[VQ_MOCK_MAX_SEGS];
		for (unsigned int i = 0; i < n; i++) {
			bool last = i + 1 == n;
			table[i] = (struct vq_mock_desc){
				.addr = c->addr[i],
				.len = c->len[i],
				.flags = (uint16_t)((c->writable[i] ? VIRTQ_DESC_F_WRITE : 0) |
						    (last ? 0 : VIRTQ_DESC_F_NEXT)),
				.next = (uint16_t)(last ? 0 : i + 1),
			};
			c->desc[i] = (uint16_t)i;
		}
		c->table = vq_mock_write_table(m, table, n);
		if (!c->table)
			return -ENOSPC;
		c->indirect = true;
		c->ndesc = 1;
		struct vq_mock_desc ring = { c->table, n * (uint32_t)sizeof(struct virtq_desc),
					     VIRTQ_DESC_F_INDIRECT, 0 };
		vq_mock_set_desc(m, head, ring);
	} else {
		if (n > m->num)
			return -EINVAL;
		for (unsigned int i = 0; i < n; i++)
			c->desc[i] = (uint16_t)((head + i) % m->num);
		for (unsigned int i = 0; i < n; i++) {
			bool last = i + 1 == n;
			uint16_t flags = (uint16_t)((c->writable[i] ? VIRTQ_DESC_F_WRITE : 0) |
						    (last ? 0 : VIRTQ_DESC_F_NEXT));
			vq_mock_set_desc(m, c->desc[i],
					 (struct vq_mock_desc){ c->addr[i], c->len[i], flags,
								last ? 0 : c->desc[i + 1] });
		}
		c->ndesc = (uint16_t)n;
	}
	m->next_desc = (uint16_t)((head + c->ndesc) % m->num);
	return 0;
}

static int build_packed(struct vq_mock *m, unsigned int n, unsigned int options,
			struct vq_mock_chain *c)
{
	uint16_t id = m->next_id;
	unsigned int ndesc = (options & VQ_MOCK_INDIRECT) ? 1 : n;

	if (ndesc > m->num)
		return -EINVAL;
	c->head = m->next_slot;
	c->wrap = m->wrap;
	c->id = id;
	c->ndesc = (uint16_t)ndesc;
	if (options & VQ_MOCK_INDIRECT) {
		struct vq_mock_desc table[VQ_MOCK_MAX_SEGS];
		for (unsigned int i = 0; i < n; i++) {
			table[i] = (struct vq_mock_desc){
				.addr = c->addr[i],
				.len = c->len[i],
				.flags = c->writable[i] ? VIRTQ_DESC_F_WRITE : 0,
			};
			c->desc[i] = (uint16_t)i;
		}
		c->table = vq_mock_write_table(m, table, n);
		if (!c->table)
			return -ENOSPC;
		c->indirect = true;
	}

	uint16_t slot = m->next_slot;
	bool wrap = m->wrap;
	uint32_t table_len = n * (uint32_t)sizeof(struct pvirtq_desc);
	for (unsigned int i = 0; i < ndesc; i++) {
		bool last = i + 1 == ndesc;
		struct vq_mock_desc d;
		if (c->indirect)
			d = (struct vq_mock_desc){ c->table, table_len, VIRTQ_DESC_F_INDIRECT, id };
		else
			d = (struct vq_mock_desc){ c->addr[i], c->len[i],
						   c->writable[i] ? VIRTQ_DESC_F_WRITE : 0, id };
		if (!last)
			d.flags |= VIRTQ_DESC_F_NEXT;
		d.flags |= vq_mock_packed_avail_bits(wrap);
		if (!c->indirect)
			c->desc[i] = slot;
		if (i == 0) {
			/* The first descriptor's flags hand the whole chain over: held back. */
			c->first_flags = d.flags;
			d.flags = vt_le16_to_cpu(packed_desc(m)[slot].flags);
		}
		write_packed(&packed_desc(m)[slot], d);
		if (++slot == m->num) {
			slot = 0;
			wrap = !wrap;
		}
	}
	m->next_slot = slot;
	m->wrap = wrap;
	m->next_id = (uint16_t)((id + 1) % m->num);
	return 0;
}

int vq_mock_build(struct vq_mock *m, const struct vq_mock_seg *segs, unsigned int n,
		  unsigned int options, struct vq_mock_chain *c)
{
	if (n == 0 || n > VQ_MOCK_MAX_SEGS)
		return -EINVAL;
	memset(c, 0, sizeof(*c));
	c->seed = m->next_seed;
	m->next_seed = m->next_seed * 1103515245u + 12345u;
	int ret = fill_segments(m, segs, n, c);
	if (ret < 0)
		return ret;
	return m->packed ? build_packed(m, n, options, c) : build_split(m, n, options, c);
}

void vq_mock_publish(struct vq_mock *m, const struct vq_mock_chain *c)
{
	if (m->packed) {
		/* Release: the whole chain before the flags that make it available. */
		publish16(&packed_desc(m)[c->head].flags, c->first_flags);
		return;
	}
	vq_mock_set_avail_ring(m, m->avail_idx, c->head);
	vq_mock_set_avail_idx(m, (uint16_t)(m->avail_idx + 1));
}

int vq_mock_move_segment(struct vq_mock *m, struct vq_mock_chain *c, unsigned int i, uint64_t addr)
{
	uint8_t *from = i < c->nsegs ? vq_mock_ptr(m, c->addr[i]) : NULL;
	uint8_t *to = vq_mock_ptr(m, addr);

	if (c->indirect || !from || !to || c->len[i] > m->size - (addr - m->gpa))
		return -EINVAL;
	memmove(to, from, c->len[i]);
	c->addr[i] = addr;
	/* The flags as they are: a packed chain's first ones stay unpublished until publish. */
	if (m->packed) {
		struct vq_mock_desc d = vq_mock_get_packed_desc(m, c->desc[i]);
		d.addr = addr;
		vq_mock_set_packed_desc(m, c->desc[i], d);
	} else {
		struct vq_mock_desc d = vq_mock_get_desc(m, c->desc[i]);
		d.addr = addr;
		vq_mock_set_desc(m, c->desc[i], d);
	}
	return 0;
}

int vq_mock_add(struct vq_mock *m, const struct vq_mock_seg *segs, unsigned int n,
		unsigned int options, struct vq_mock_chain *c)
{
	int ret = vq_mock_build(m, segs, n, options, c);

	if (ret == 0)
		vq_mock_publish(m, c);
	return ret;
}

bool vq_mock_check_iov(const struct vq_mock *m, const struct vq_mock_chain *c,
		       const struct vt_vq_chain *chain, const struct iovec *iov, char *why,
		       size_t why_size)
{
	char scratch[1];

	if (!why) {
		why = scratch;
		why_size = sizeof(scratch);
	}
	if (chain->id != c->id || chain->ndesc != c->ndesc) {
		snprintf(why, why_size, "chain id %u ndesc %u, expected id %u ndesc %u", chain->id,
			 chain->ndesc, c->id, c->ndesc);
		return false;
	}
	if (chain->readable_bytes != c->readable_bytes ||
	    chain->writable_bytes != c->writable_bytes) {
		snprintf(why, why_size, "%u readable and %u writable bytes, expected %u and %u",
			 chain->readable_bytes, chain->writable_bytes, c->readable_bytes,
			 c->writable_bytes);
		return false;
	}

	/* The readable iovecs, concatenated, are the pattern. */
	uint64_t stream = 0;
	for (unsigned int i = 0; i < chain->nreadable; i++) {
		const uint8_t *p = iov[i].iov_base;
		for (size_t k = 0; k < iov[i].iov_len; k++, stream++) {
			if (p[k] != vq_mock_pattern(c->seed, stream)) {
				snprintf(why, why_size, "readable byte %llu differs",
					 (unsigned long long)stream);
				return false;
			}
		}
	}
	if (stream != c->readable_bytes) {
		snprintf(why, why_size, "readable iovecs hold %llu bytes, expected %u",
			 (unsigned long long)stream, c->readable_bytes);
		return false;
	}

	/* The writable iovecs, in order, cover exactly the writable buffers. */
	unsigned int seg = 0;
	uint64_t off = 0;
	for (unsigned int i = chain->nreadable; i < chain->nreadable + chain->nwritable; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;
		while (left) {
			while (seg < c->nsegs && (!c->writable[seg] || off == c->len[seg])) {
				seg++;
				off = 0;
			}
			if (seg == c->nsegs) {
				snprintf(why, why_size, "writable iovec %u beyond the buffers", i);
				return false;
			}
			const uint8_t *want = (const uint8_t *)vq_mock_ptr(m, c->addr[seg]) + off;
			size_t piece = c->len[seg] - off < left ? c->len[seg] - off : left;
			if (p != want) {
				snprintf(why, why_size, "writable iovec %u at %p, expected %p", i,
					 (const void *)p, (const void *)want);
				return false;
			}
			p += piece;
			off += piece;
			left -= piece;
		}
	}
	return true;
}

/* ---------------------------------------------------------------- mock device */

int vq_mock_dev_attach(struct vq_mock_dev *d, const struct vt_vq_drv *drv, unsigned int num,
		       bool packed, const struct vt_shm *shm)
{
	*d = (struct vq_mock_dev){ .num = num, .packed = packed, .wrap = true, .used_wrap = true };
	d->table = vt_memtable_new(NULL);
	if (!d->table)
		return -ENOMEM;
	/* Same process: the device sees the driver's shared memory where the driver does. */
	for (unsigned int i = 0; i < vt_shm_count(shm); i++) {
		const struct vt_shm_region *r = vt_shm_region(shm, i);
		struct vt_mem_region mr = { .gpa = r->gpa,
					    .size = r->size,
					    .hva = r->hva,
					    .uaddr = (uint64_t)(uintptr_t)r->hva };
		int ret = vt_memtable_add(d->table, &mr);
		if (ret < 0) {
			vq_mock_dev_detach(d);
			return ret;
		}
	}
	d->as = vt_memtable_as(d->table);
	vt_vq_drv_addrs(drv, &d->desc_addr, &d->driver_addr, &d->device_addr);

	size_t desc_size = packed ? sizeof(struct pvirtq_desc) * num : virtq_split_desc_size(num);
	size_t driver_size =
	    packed ? sizeof(struct pvirtq_event_suppress) : virtq_split_avail_size(num);
	size_t device_size =
	    packed ? sizeof(struct pvirtq_event_suppress) : virtq_split_used_size(num);
	void *desc, *driver, *device;
	int ret = vt_as_map_contig(&d->as, d->desc_addr, desc_size, VT_ACCESS_RW, &desc, NULL);
	if (ret == 0)
		ret = vt_as_map_contig(&d->as, d->driver_addr, driver_size, VT_ACCESS_RW, &driver,
				       NULL);
	if (ret == 0)
		ret = vt_as_map_contig(&d->as, d->device_addr, device_size, VT_ACCESS_RW, &device,
				       NULL);
	if (ret < 0) {
		vq_mock_dev_detach(d);
		return ret;
	}
	if (packed) {
		d->pdesc = desc;
		d->driver_event = driver;
		d->device_event = device;
	} else {
		d->desc = desc;
		d->avail = driver;
		d->used = device;
	}
	return 0;
}

void vq_mock_dev_detach(struct vq_mock_dev *d)
{
	vt_memtable_free(d->table);
	d->table = NULL;
}

uint16_t vq_mock_dev_avail_idx(const struct vq_mock_dev *d)
{
	return load16(&d->avail->idx);
}

uint16_t vq_mock_dev_avail_flags(const struct vq_mock_dev *d)
{
	return load16(&d->avail->flags);
}

uint16_t vq_mock_dev_avail_ring(const struct vq_mock_dev *d, uint16_t slot)
{
	return load16(&d->avail->ring[slot % d->num]);
}

uint16_t vq_mock_dev_used_event(const struct vq_mock_dev *d)
{
	return load16(&d->avail->ring[d->num]);
}

struct vq_mock_desc vq_mock_dev_desc(const struct vq_mock_dev *d, uint16_t index)
{
	return read_split(&d->desc[index % d->num]);
}

void vq_mock_dev_set_used_elem(struct vq_mock_dev *d, uint16_t slot, uint32_t id, uint32_t len)
{
	struct virtq_used_elem *e = &d->used->ring[slot % d->num];

	store32(&e->id, id);
	store32(&e->len, len);
}

void vq_mock_dev_set_used_idx(struct vq_mock_dev *d, uint16_t idx)
{
	/* Release: the used entries (and buffer contents) before the index. */
	publish16(&d->used->idx, idx);
	d->used_idx = idx;
}

void vq_mock_dev_set_used_flags(struct vq_mock_dev *d, uint16_t flags)
{
	store16(&d->used->flags, flags);
}

void vq_mock_dev_set_avail_event(struct vq_mock_dev *d, uint16_t event)
{
	store16((vt_le16 *)&d->used->ring[d->num], event);
}

struct vq_mock_desc vq_mock_dev_packed_desc(const struct vq_mock_dev *d, uint16_t slot)
{
	return read_packed(&d->pdesc[slot % d->num]);
}

void vq_mock_dev_set_packed_desc(struct vq_mock_dev *d, uint16_t slot, struct vq_mock_desc desc)
{
	write_packed(&d->pdesc[slot % d->num], desc);
}

void vq_mock_dev_get_driver_event(const struct vq_mock_dev *d, uint16_t *desc, uint16_t *flags)
{
	*flags = load16(&d->driver_event->flags);
	*desc = load16(&d->driver_event->desc);
}

void vq_mock_dev_set_device_event(struct vq_mock_dev *d, uint16_t desc, uint16_t flags)
{
	store16(&d->device_event->desc, desc);
	publish16(&d->device_event->flags, flags);
}

/* Adds one segment, with its host bytes, to @c. */
static int take_segment(struct vq_mock_dev *d, struct vq_mock_dev_chain *c, struct vq_mock_desc s)
{
	if (c->nsegs == VQ_MOCK_MAX_SEGS)
		return -E2BIG;
	void *host = NULL;
	if (s.len && vt_as_map_contig(&d->as, s.addr, s.len, VT_ACCESS_RW, &host, NULL) < 0)
		return -EFAULT;
	c->seg[c->nsegs] = s;
	c->host[c->nsegs++] = host;
	if (s.flags & VIRTQ_DESC_F_WRITE)
		c->writable_bytes += s.len;
	else
		c->readable_bytes += s.len;
	return 0;
}

static int take_table(struct vq_mock_dev *d, struct vq_mock_dev_chain *c, struct vq_mock_desc ind)
{
	unsigned int count = ind.len / sizeof(struct virtq_desc);
	void *table;

	c->indirect = true;
	if (count == 0 ||
	    vt_as_map_contig(&d->as, ind.addr, ind.len, VT_ACCESS_READ, &table, NULL) < 0)
		return -EFAULT;
	if (d->packed) {
		/* Packed tables are sequential (2.8.7). */
		for (unsigned int i = 0; i < count; i++) {
			int ret = take_segment(d, c, read_packed((struct pvirtq_desc *)table + i));
			if (ret < 0)
				return ret;
		}
		return 0;
	}
	unsigned int i = 0;
	for (unsigned int steps = 0; steps < count; steps++) {
		struct vq_mock_desc s = read_split((struct virtq_desc *)table + i);
		int ret = take_segment(d, c, s);
		if (ret < 0 || !(s.flags & VIRTQ_DESC_F_NEXT))
			return ret;
		i = s.next % count;
	}
	return -E2BIG;
}

static int take_split(struct vq_mock_dev *d, struct vq_mock_dev_chain *c)
{
	if (vq_mock_dev_avail_idx(d) == d->last_avail)
		return -EAGAIN;
	uint16_t head = vq_mock_dev_avail_ring(d, d->last_avail);
	c->id = head;
	uint16_t i = head;
	for (unsigned int steps = 0; steps < d->num; steps++) {
		struct vq_mock_desc s = vq_mock_dev_desc(d, i);
		if (steps == 0)
			c->ring_desc = s;
		c->ndesc++;
		int ret =
		    (s.flags & VIRTQ_DESC_F_INDIRECT) ? take_table(d, c, s) : take_segment(d, c, s);
		if (ret < 0)
			return ret;
		if ((s.flags & VIRTQ_DESC_F_INDIRECT) || !(s.flags & VIRTQ_DESC_F_NEXT)) {
			d->last_avail++;
			return 0;
		}
		i = s.next;
	}
	return -E2BIG;
}

static int take_packed(struct vq_mock_dev *d, struct vq_mock_dev_chain *c)
{
	uint16_t slot = d->next_slot;
	bool wrap = d->wrap;

	for (unsigned int steps = 0; steps < d->num; steps++) {
		struct vq_mock_desc s = vq_mock_dev_packed_desc(d, slot);
		bool avail = (s.flags & VIRTQ_DESC_F_AVAIL) != 0;
		bool used = (s.flags & VIRTQ_DESC_F_USED) != 0;
		if (avail != wrap || used == wrap)
			return steps == 0 ? -EAGAIN : -EFAULT; /* a chain cut short */
		if (steps == 0)
			c->ring_desc = s;
		c->ndesc++;
		c->id = s.next;
		int ret =
		    (s.flags & VIRTQ_DESC_F_INDIRECT) ? take_table(d, c, s) : take_segment(d, c, s);
		if (ret < 0)
			return ret;
		if (++slot == d->num) {
			slot = 0;
			wrap = !wrap;
		}
		if (!(s.flags & VIRTQ_DESC_F_NEXT)) {
			d->next_slot = slot;
			d->wrap = wrap;
			return 0;
		}
	}
	return -E2BIG;
}

int vq_mock_dev_take(struct vq_mock_dev *d, struct vq_mock_dev_chain *c)
{
	memset(c, 0, sizeof(*c));
	return d->packed ? take_packed(d, c) : take_split(d, c);
}

void vq_mock_dev_complete(struct vq_mock_dev *d, uint16_t id, uint16_t ndesc, uint32_t len)
{
	if (!d->packed) {
		vq_mock_dev_set_used_elem(d, d->used_idx, id, len);
		vq_mock_dev_set_used_idx(d, (uint16_t)(d->used_idx + 1));
		return;
	}
	uint16_t flags = vq_mock_packed_used_bits(d->used_wrap);
	if (len)
		flags |= VIRTQ_DESC_F_WRITE;
	vq_mock_dev_set_packed_desc(d, d->used_slot, (struct vq_mock_desc){ 0, len, flags, id });
	d->used_slot = (uint16_t)(d->used_slot + ndesc);
	if (d->used_slot >= d->num) {
		d->used_slot = (uint16_t)(d->used_slot - d->num);
		d->used_wrap = !d->used_wrap;
	}
}
