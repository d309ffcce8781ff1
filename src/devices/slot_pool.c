/* SPDX-License-Identifier: MIT */
/* Fixed-size slots in shared memory for drivers (slot_pool.h). */
#include "devices/slot_pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_ALIGN 64u /* a cache line: two slots never share one */

int slot_pool_init(struct slot_pool *p, struct vt_shm *shm, unsigned int num, size_t bytes)
{
	*p = (struct slot_pool){ .shm = shm, .num = num };
	p->stride = (bytes + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1);
	p->free = calloc(num, sizeof(*p->free));
	if (!p->free)
		return -ENOMEM;
	void *mem = NULL;
	int ret = vt_shm_alloc(shm, p->stride * num, SLOT_ALIGN, &mem);
	if (ret < 0)
		return ret;
	p->mem = mem;
	p->mem_size = p->stride * num;
	memset(p->mem, 0, p->mem_size);
	for (unsigned int i = 0; i < num; i++)
		p->free[num - 1 - i] = i;
	p->nfree = num;
	return 0;
}

void slot_pool_fini(struct slot_pool *p)
{
	if (p->mem)
		vt_shm_release(p->shm, p->mem, p->mem_size);
	free(p->free);
	*p = (struct slot_pool){ 0 };
}
