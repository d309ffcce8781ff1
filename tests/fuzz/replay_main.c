/* SPDX-License-Identifier: MIT */
/*
 * Stand-in for libFuzzer's main in builds without it: feeds every file of the given directories
 * (the seed corpus) to LLVMFuzzerTestOneInput once, so the corpus is a regression test everywhere.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
		fclose(f);
		return -1;
	}
	size_t size = (size_t)st.st_size;
	uint8_t *data = malloc(size ? size : 1);
	if (!data || fread(data, 1, size, f) != size) {
		free(data);
		fclose(f);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int inputs = 0, errors = 0;

	for (int i = 1; i < argc; i++) {
		DIR *dir = opendir(argv[i]);
		if (!dir) {
			errors += replay_file(argv[i]) != 0;
			inputs++;
			continue;
		}
		struct dirent *de;
		while ((de = readdir(dir)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			errors += replay_file(path) != 0;
			inputs++;
		}
		closedir(dir);
	}
	printf("replayed %u inputs, %u unreadable\n", inputs, errors);
	/* An empty corpus would make this test pass without testing anything. */
	return (inputs == 0 || errors) ? 1 : 0;
}
