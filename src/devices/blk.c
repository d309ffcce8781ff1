/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk disk: opening the backing (file, block device or RAM), the features it offers,
 * and its configuration space (5.2.4), of which the driver may write `writeback` only.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <virtue/spec/virtio_config.h>

#include "blk_impl.h"

#define BLK_F(bit) VT_BIT(VIRTIO_BLK_F_##bit)

static unsigned int log2_floor(uint64_t v)
{
	unsigned int n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

/* Capacity and block sizes of an opened backing. */
static int blk_probe(struct vt_blk *blk, const char *path)
{
	struct stat st;

	if (fstat(blk->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes = 0;
		int logical = 0;
		unsigned int physical = 0;
		if (ioctl(blk->fd, BLKGETSIZE64, &bytes) < 0 ||
		    ioctl(blk->fd, BLKSSZGET, &logical) < 0 ||
		    ioctl(blk->fd, BLKPBSZGET, &physical) < 0)
			return -errno;
		blk->is_bdev = true;
		blk->capacity = bytes >> VIRTIO_BLK_SECTOR_SHIFT;
		if (logical >= VIRTIO_BLK_SECTOR_SIZE && (logical & (logical - 1)) == 0)
			blk->blk_size = (uint32_t)logical;
		if (physical > blk->blk_size)
			blk->physical_block_exp = (uint8_t)log2_floor(physical / blk->blk_size);
	} else if (S_ISREG(st.st_mode)) {
		blk->capacity = (uint64_t)st.st_size >> VIRTIO_BLK_SECTOR_SHIFT;
		if (st.st_blksize > VIRTIO_BLK_SECTOR_SIZE)
			blk->physical_block_exp =
			    (uint8_t)log2_floor((uint64_t)st.st_blksize / VIRTIO_BLK_SECTOR_SIZE);
	} else {
		vt_log(blk->log, VT_LOG_ERROR,
		       "blk: %s is neither a regular file nor a block device", path);
		return -EINVAL;
	}
	return 0;
}

static int blk_open(struct vt_blk *blk, const struct vt_blk_params *p)
{
	int flags = (p->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;

	blk->fd = open(p->path, flags | (p->direct ? O_DIRECT : 0));
	if (blk->fd < 0) {
		int err = errno;
		vt_log(blk->log, VT_LOG_ERROR, "blk: cannot open %s%s: %s", p->path,
		       p->direct ? " with O_DIRECT" : "", strerror(err));
		return -err;
	}
	if (p->direct) {
		/* Requests whose buffers O_DIRECT refuses (alignment) go through the page cache. */
		blk->fd_buffered = open(p->path, flags);
		if (blk->fd_buffered < 0)
			return -errno;
	}
	return blk_probe(blk, p->path);
}

static int blk_ram(struct vt_blk *blk, uint64_t size)
{
	/* Anonymous memory reads back as zeroes, and is only committed where written. */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	blk->ram = p;
	blk->ram_size = size;
	blk->capacity = size >> VIRTIO_BLK_SECTOR_SHIFT;
	blk->physical_block_exp = 3; /* pages */
	return 0;
}

static uint64_t blk_features(const struct vt_blk *blk)
{
	uint64_t f =
	    BLK_F(SIZE_MAX) | BLK_F(SEG_MAX) | BLK_F(BLK_SIZE) | BLK_F(FLUSH) | BLK_F(TOPOLOGY);

	if (blk->num_queues > 1)
		f |= BLK_F(MQ);
	if (blk->read_only)
		f |= BLK_F(RO);
	else
		f |= BLK_F(DISCARD) | BLK_F(WRITE_ZEROES) | BLK_F(CONFIG_WCE);
	return f;
}

int vt_blk_new(const struct vt_blk_params *p, struct vt_blk **out)
{
	*out = NULL;
	if (!p || p->num_queues > VT_BLK_MAX_QUEUES || p->queue_size > VT_BLK_MAX_QUEUE_SIZE ||
	    (p->queue_size && p->queue_size < 3))
		return -EINVAL;
	if (p->path ? p->size != 0
		    : p->size == 0 || p->size % VIRTIO_BLK_SECTOR_SIZE != 0 || p->direct)
		return -EINVAL;
	if (p->serial && strlen(p->serial) > VIRTIO_BLK_ID_BYTES)
		return -EINVAL;

	struct vt_blk *blk = calloc(1, sizeof(*blk));
	if (!blk)
		return -ENOMEM;
	blk->fd = blk->fd_buffered = -1;
	blk->log = p->log;
	blk->read_only = p->read_only;
	blk->direct = p->direct;
	blk->sync_io = p->sync_io;
	blk->num_queues = p->num_queues ? p->num_queues : 1;
	blk->queue_size = p->queue_size ? p->queue_size : VT_BLK_DEFAULT_QUEUE_SIZE;
	blk->blk_size = VIRTIO_BLK_SECTOR_SIZE;
	/* NUL padded; exactly 20 bytes has no terminator (5.2.6). */
	strncpy(blk->serial, p->serial ? p->serial : VT_BLK_DEFAULT_SERIAL, sizeof(blk->serial));

	int ret = p->path ? blk_open(blk, p) : blk_ram(blk, p->size);
	if (ret < 0) {
		vt_blk_free(blk);
		return ret;
	}
	blk->offered = blk_features(blk);
	atomic_init(&blk->writeback, 1);
	*out = blk;
	return 0;
}

void vt_blk_free(struct vt_blk *blk)
{
	if (!blk)
		return;
	if (blk->fd >= 0)
		close(blk->fd);
	if (blk->fd_buffered >= 0)
		close(blk->fd_buffered);
	if (blk->ram)
		munmap(blk->ram, blk->ram_size);
	free(blk);
}

uint64_t vt_blk_offered_features(const struct vt_blk *blk)
{
	return blk->offered;
}

int vt_blk_features_ok(struct vt_blk *blk, uint64_t negotiated)
{
	/* 5.2.5: CONFIG_WCE without FLUSH starts writethrough, as the driver cannot flush. */
	bool wce = negotiated & BLK_F(CONFIG_WCE);
	bool flush = negotiated & BLK_F(FLUSH);
	atomic_store(&blk->writeback, wce && !flush ? 0u : 1u);
	atomic_store(&blk->negotiated, negotiated);
	return 0;
}

void vt_blk_config(const struct vt_blk *blk, struct virtio_blk_config *c)
{
	memset(c, 0, sizeof(*c));
	c->capacity = vt_cpu_to_le64(blk->capacity);
	c->size_max = vt_cpu_to_le32(VT_BLK_SIZE_MAX);
	/* The header and the status take a descriptor each. */
	c->seg_max = vt_cpu_to_le32(blk->queue_size - 2);
	c->blk_size = vt_cpu_to_le32(blk->blk_size);
	c->topology.physical_block_exp = blk->physical_block_exp;
	c->topology.min_io_size = vt_cpu_to_le16(1);
	c->writeback = (uint8_t)atomic_load(&((struct vt_blk *)blk)->writeback);
	c->num_queues = vt_cpu_to_le16((uint16_t)blk->num_queues);
	if (!blk->read_only) {
		uint32_t align = blk->blk_size / VIRTIO_BLK_SECTOR_SIZE;
		c->max_discard_sectors = vt_cpu_to_le32(VT_BLK_MAX_DISCARD_SECTORS);
		c->max_discard_seg = vt_cpu_to_le32(VT_BLK_MAX_DISCARD_SEG);
		c->discard_sector_alignment = vt_cpu_to_le32(align);
		c->max_write_zeroes_sectors = vt_cpu_to_le32(VT_BLK_MAX_DISCARD_SECTORS);
		c->max_write_zeroes_seg = vt_cpu_to_le32(VT_BLK_MAX_DISCARD_SEG);
		c->write_zeroes_may_unmap = 1;
	}
}

int vt_blk_config_write(struct vt_blk *blk, uint32_t offset, const void *buf, uint32_t len)
{
	const uint32_t at = offsetof(struct virtio_blk_config, writeback);

	/* 5.2.4: writeback is the one field a driver writes, and only with CONFIG_WCE. */
	if (offset != at || len != 1 || !(atomic_load(&blk->negotiated) & BLK_F(CONFIG_WCE)))
		return -EPERM;
	uint8_t v = *(const uint8_t *)buf;
	if (v > 1)
		return -EINVAL;
	atomic_store(&blk->writeback, v);
	return 0;
}

uint64_t vt_blk_capacity(const struct vt_blk *blk)
{
	return blk->capacity;
}

unsigned int vt_blk_num_queues(const struct vt_blk *blk)
{
	return blk->num_queues;
}

int vt_blk_flush_all(struct vt_blk *blk)
{
	if (blk->fd < 0)
		return 0;
	if (fdatasync(blk->fd) < 0)
		return -errno;
	return 0;
}
