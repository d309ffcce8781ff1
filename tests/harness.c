/* SPDX-License-Identifier: MIT */
/* The main() of every unit-test binary: run the registered tests (or those named), report. */
#include "harness.h"

struct vt_test_case vt_tests[VT_TEST_MAX];
unsigned int vt_test_count;
int vt_test_failed;

int main(int argc, char **argv)
{
	unsigned int passed = 0, failed = 0;

	for (unsigned int i = 0; i < vt_test_count; i++) {
		if (argc > 1) {
			int wanted = 0;
			for (int a = 1; a < argc; a++)
				wanted |= strcmp(argv[a], vt_tests[i].name) == 0;
			if (!wanted)
				continue;
		}
		vt_test_failed = 0;
		vt_tests[i].fn();
		if (vt_test_failed) {
			printf("FAIL %s\n", vt_tests[i].name);
			failed++;
		} else {
			printf("PASS %s\n", vt_tests[i].name);
			passed++;
		}
		fflush(stdout);
	}
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
