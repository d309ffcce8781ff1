/* SPDX-License-Identifier: MIT */
/* Address-space helpers over the generic interface: copies and contiguous mapping. */
#include <errno.h>
#include <string.h>

#include <virtue/as.h>
#include <virtue/memtable.h>

#include "harness.h"

static uint8_t host[0x10000];

/* 32 regions of 0x100 bytes at gpa 0x100*i, placed on the host in reverse order. */
static struct vt_memtable *fragmented(void)
{
	struct vt_memtable *t = vt_memtable_new(NULL);
	for (unsigned int i = 0; t && i < 32; i++) {
		struct vt_mem_region r = { .gpa = 0x100 * i,
					   .size = 0x100,
					   .hva = host + 0x100 * (31 - i) };
		if (vt_memtable_add(t, &r) < 0)
			return NULL;
	}
	return t;
}

VT_TEST(read_and_write_cross_many_regions_in_pieces)
{
	struct vt_memtable *t = fragmented();
	REQUIRE(t);
	struct vt_as as = vt_memtable_as(t);
	uint8_t out[0x1f00], in[0x1f00];
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (uint8_t)(i * 7 + 3);
	/* 0x1f00 bytes from 0x80: 32 pieces, more than one translate call can return. */
	REQUIRE_EQ(vt_as_write(&as, 0x80, out, sizeof(out), NULL), 0);
	CHECK(host[0x100 * 31 + 0x80] == out[0]);
	CHECK(host[0x100 * 30] == out[0x80]);
	REQUIRE_EQ(vt_as_read(&as, 0x80, in, sizeof(in), NULL), 0);
	CHECK(memcmp(in, out, sizeof(in)) == 0);
	vt_memtable_free(t);
}

VT_TEST(read_past_the_end_faults_and_reports_where)
{
	struct vt_memtable *t = fragmented();
	REQUIRE(t);
	struct vt_as as = vt_memtable_as(t);
	uint8_t buf[0x200];
	struct vt_as_fault f = { 0 };
	CHECK_EQ(vt_as_read(&as, 0x1f80, buf, sizeof(buf), &f), -EFAULT);
	CHECK(f.addr == 0x2000);
	CHECK_EQ(vt_as_read(&as, UINT64_MAX - 2, buf, 8, &f), -EOVERFLOW);
	vt_memtable_free(t);
}

VT_TEST(map_contig_needs_one_host_range)
{
	struct vt_memtable *t = fragmented();
	REQUIRE(t);
	struct vt_as as = vt_memtable_as(t);
	void *p = NULL;
	CHECK_EQ(vt_as_map_contig(&as, 0x110, 0x20, VT_ACCESS_READ, &p, NULL), 0);
	CHECK(p == host + 0x100 * 30 + 0x10);
	CHECK_EQ(vt_as_map_contig(&as, 0xf0, 0x20, VT_ACCESS_READ, &p, NULL), -ENOBUFS);
	CHECK_EQ(vt_as_map_contig(&as, 0x5000, 0x20, VT_ACCESS_READ, &p, NULL), -EFAULT);
	CHECK_EQ(vt_as_map_contig(&as, 0x0, 0, VT_ACCESS_READ, &p, NULL), -EINVAL);
	vt_memtable_free(t);
}

VT_TEST(generation_is_visible_through_the_interface)
{
	struct vt_memtable *t = fragmented();
	REQUIRE(t);
	struct vt_as as = vt_memtable_as(t);
	uint64_t g = vt_as_generation(&as);
	REQUIRE_EQ(vt_memtable_remove(t, 0x100, 0x100), 0);
	CHECK(vt_as_generation(&as) != g);
	vt_memtable_free(t);
}
