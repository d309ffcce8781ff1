/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the input is a small IOTLB (capacity, full policy, window at address 0 or at the
 * top of the address space) and a list of updates, invalidations and translations, each checked
 * against the byte-by-byte model of iotlb_model.h; any disagreement traps. Input layout, as
 * written by gen_iotlb_seeds.py:
 *   byte 0  capacity 8 + b % 57;  byte 1  bit 0 evict when full, bit 1 window at the top,
 *           bit 2 with the page table, over a window of 4 pages (and room for every entry: see
 *           iotlb_model_init), where an update with bit 1 of y maps a whole page (op_update)
 *   then 7-byte operations: kind, a (le16), b (le16), x, y   (see run_op)
 */
#include <errno.h>
#include <stdio.h>

#include <virtue/iotlb.h>

/* Relative to this file: the fuzz executable is built without tests/ on its include path. */
#include "../iotlb_model.h"

#define WINDOW		  1024u
#define PAGE_TABLE_WINDOW (4 * PAGE) /* a window of whole pages, with the page table */
#define PAGE		  4096u
#define OP_SIZE		  7u

/* Permission or access from byte @x: mostly valid, and invalid (0, 4-7) from 0xf8 up. */
static unsigned int perm_from_byte(uint8_t x)
{
	return x < 0xf8 ? 1u + x % 3u : x & 7u;
}

static void op_update(struct iotlb_model *m, uint16_t a, uint16_t b, uint8_t x, uint8_t y)
{
	uint32_t window = m->size, lo = a % window;
	uint64_t size = b % (window + 64);
	unsigned int perm = perm_from_byte(x);
	uint64_t h = 0;

	if (window >= 2 * PAGE && (y & 2)) {
		/* A whole page onto a whole host page: what the page table holds. */
		lo = a % (window / PAGE) * PAGE;
		iotlb_model_update(m, lo, PAGE, perm,
				   (uint64_t)(y >> 2) % (2 * window / PAGE) * PAGE);
		return;
	}
	/* Past the window: at the top that is past 2^64 (so fails), elsewhere it is cut to fit. */
	if (size > window - lo && m->base + window != 0)
		size = window - lo;
	if (size <= window - lo)
		h = y & 1 ? lo : (uint64_t)(y >> 1) * 61 % (2 * window - size + 1);
	iotlb_model_update(m, lo, size, perm, h);
}

static void run_op(struct iotlb_model *m, const uint8_t *op)
{
	uint16_t a = (uint16_t)(op[1] | op[2] << 8), b = (uint16_t)(op[3] | op[4] << 8);
	/* An address in the window or up to 64 bytes either side, a length up to past it. */
	uint64_t iova = m->base + a % (m->size + 128) - 64, len = b % (m->size + 128);
	unsigned int kind = op[0] % 16;

	if (kind <= 5)
		op_update(m, a, b, op[5], op[6]);
	else if (kind <= 9)
		iotlb_model_invalidate(m, iova, len);
	else if (kind == 10)
		iotlb_model_invalidate_all(m);
	else
		iotlb_model_translate(m, iova, len, perm_from_byte(op[5]),
				      op[6] % (IOTLB_MODEL_IOV_MAX + 1));
}

static void drop_log(void *opaque, enum vt_log_level level, const char *message)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vt_log quiet = { .fn = drop_log };
	struct iotlb_model m;

	if (size < 2)
		return 0;
	unsigned int capacity = 8 + data[0] % 57;
	enum vt_iotlb_full_policy policy = data[1] & 1 ? VT_IOTLB_FULL_EVICT : VT_IOTLB_FULL_REFUSE;
	int page_table = (data[1] & 4) != 0;
	uint32_t window = page_table ? PAGE_TABLE_WINDOW : WINDOW;
	uint64_t base = data[1] & 2 ? 0 - (uint64_t)window : 0;
	if (page_table)
		capacity = window; /* as many as the window has bytes: never full */
	int ret = iotlb_model_init(&m, base, window, capacity, policy, page_table, &quiet);
	if (ret == -ENOMEM)
		return 0;
	if (ret != 0) {
		fprintf(stderr, "vt_iotlb_new: %d\n", ret);
		__builtin_trap();
	}

	for (size_t off = 2; off + OP_SIZE <= size; off += OP_SIZE) {
		run_op(&m, data + off);
		if (m.failed) {
			/* A crash is what makes the fuzzer keep the input: say why, then trap. */
			fprintf(stderr, "%s (operation at input offset %zu)\n", m.failure, off);
			__builtin_trap();
		}
	}
	iotlb_model_destroy(&m);
	return 0;
}
