/* SPDX-License-Identifier: MIT */
/*
 * A minimal test harness: VT_TEST(name) registers a test, CHECK* record failures and go on,
 * REQUIRE* record and leave the test. Each binary prints PASS/FAIL per test and ends with
 * "N passed, N failed"; scripts/test-summary.py adds the binaries up.
 */
#ifndef VIRTUE_TESTS_HARNESS_H
#define VIRTUE_TESTS_HARNESS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*vt_test_fn)(void);

struct vt_test_case {
	const char *name;
	vt_test_fn fn;
};

#define VT_TEST_MAX 512
extern struct vt_test_case vt_tests[VT_TEST_MAX];
extern unsigned int vt_test_count;
extern int vt_test_failed; /* failures in the running test */

static inline void vt_test_register(const char *name, vt_test_fn fn)
{
	if (vt_test_count < VT_TEST_MAX)
		vt_tests[vt_test_count++] = (struct vt_test_case){ name, fn };
}

#define VT_TEST(name)                                                                              \
	static void name(void);                                                                    \
	__attribute__((constructor)) static void vt_register_##name(void)                          \
	{                                                                                          \
		vt_test_register(#name, name);                                                     \
	}                                                                                          \
	static void name(void)

#define VT_FAIL_AT(...)                                                                            \
	do {                                                                                       \
		fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                  \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fprintf(stderr, "\n");                                                             \
		vt_test_failed++;                                                                  \
	} while (0)

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			VT_FAIL_AT("CHECK(%s) failed", #cond);                                     \
	} while (0)

#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			VT_FAIL_AT("REQUIRE(%s) failed", #cond);                                   \
			return;                                                                    \
		}                                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long vt_a_ = (long long)(a), vt_b_ = (long long)(b);                          \
		if (vt_a_ != vt_b_)                                                                \
			VT_FAIL_AT("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, vt_a_, vt_b_);        \
	} while (0)

#define REQUIRE_EQ(a, b)                                                                           \
	do {                                                                                       \
		long long vt_a_ = (long long)(a), vt_b_ = (long long)(b);                          \
		if (vt_a_ != vt_b_) {                                                              \
			VT_FAIL_AT("REQUIRE_EQ(%s, %s): %lld != %lld", #a, #b, vt_a_, vt_b_);      \
			return;                                                                    \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *vt_a_ = (a), *vt_b_ = (b);                                             \
		if (strcmp(vt_a_, vt_b_) != 0)                                                     \
			VT_FAIL_AT("CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b, vt_a_, vt_b_);   \
	} while (0)

/*
 * Percentage of the full iteration count that randomized tests run: VT_TEST_SCALE in the
 * environment (sanitizer runs lower it), default 100.
 */
static inline uint64_t vt_test_scaled(uint64_t full)
{
	const char *s = getenv("VT_TEST_SCALE");
	uint64_t pct = s ? strtoull(s, NULL, 10) : 100;
	uint64_t n = full * pct / 100;
	return n ? n : 1;
}

/* Deterministic per-run seed: VT_TEST_SEED or a fixed default, printed on failure by tests. */
static inline uint64_t vt_test_seed(void)
{
	const char *s = getenv("VT_TEST_SEED");
	return s ? strtoull(s, NULL, 0) : 0x5eed5eedULL;
}

/* xorshift64*: small, fast and good enough for test inputs. */
static inline uint64_t vt_test_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

#endif
