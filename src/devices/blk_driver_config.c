/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk driver's view of the configuration space (5.2.4): each field read only when its
 * feature is negotiated and the bytes given hold it, values no request could satisfy refused, and
 * the result printed for people.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <virtue/blk_driver.h>

#define BLK_F(bit) VT_BIT(VIRTIO_BLK_F_##bit)

/* The end of a config field, to check @len holds it. */
#define FIELD_END(field)                                                                           \
	(offsetof(struct virtio_blk_config, field) + sizeof(((struct virtio_blk_config *)0)->field))

/* Capacity in bytes must fit in 64 bits. */
#define MAX_CAPACITY_SECTORS (UINT64_MAX >> VIRTIO_BLK_SECTOR_SHIFT)
#define MAX_BLK_SIZE	     (64u << 10)

/* Unaligned little-endian reads straight out of the caller's bytes. */
static uint16_t get16(const uint8_t *c, size_t off)
{
	return (uint16_t)(c[off] | c[off + 1] << 8);
}

static uint32_t get32(const uint8_t *c, size_t off)
{
	return (uint32_t)get16(c, off) | (uint32_t)get16(c, off + 2) << 16;
}

static uint64_t get64(const uint8_t *c, size_t off)
{
	return (uint64_t)get32(c, off) | (uint64_t)get32(c, off + 4) << 32;
}

#define GET16(c, field) get16(c, offsetof(struct virtio_blk_config, field))
#define GET32(c, field) get32(c, offsetof(struct virtio_blk_config, field))
#define GET64(c, field) get64(c, offsetof(struct virtio_blk_config, field))
#define GET8(c, field)	((c)[offsetof(struct virtio_blk_config, field)])

int vt_blk_config_decode(const void *config, size_t len, uint64_t features,
			 struct vt_blk_info *info)
{
	const uint8_t *c = config;

	memset(info, 0, sizeof(*info));
	if (!config || len < FIELD_END(capacity))
		return -EINVAL;
	info->features = features;
	info->capacity_sectors = GET64(c, capacity);
	if (info->capacity_sectors > MAX_CAPACITY_SECTORS)
		return -EINVAL;
	info->capacity_bytes = info->capacity_sectors << VIRTIO_BLK_SECTOR_SHIFT;

	if (features & BLK_F(SIZE_MAX)) {
		/* 0 means no limit, as Linux reads it: qemu-storage-daemon offers SIZE_MAX with 0.
		 */
		if (len < FIELD_END(size_max))
			return -EINVAL;
		info->size_max = GET32(c, size_max);
	}
	if (features & BLK_F(SEG_MAX)) {
		if (len < FIELD_END(seg_max) || (info->seg_max = GET32(c, seg_max)) == 0)
			return -EINVAL;
	}
	if (features & BLK_F(GEOMETRY)) {
		if (len < FIELD_END(geometry))
			return -EINVAL;
		info->cylinders = GET16(c, geometry.cylinders);
		info->heads = GET8(c, geometry.heads);
		info->sectors_per_track = GET8(c, geometry.sectors);
	}
	info->blk_size = VIRTIO_BLK_SECTOR_SIZE;
	if (features & BLK_F(BLK_SIZE)) {
		if (len < FIELD_END(blk_size))
			return -EINVAL;
		uint32_t b = GET32(c, blk_size);
		if (b < VIRTIO_BLK_SECTOR_SIZE || b > MAX_BLK_SIZE || (b & (b - 1)))
			return -EINVAL;
		info->blk_size = b;
	}
	if (features & BLK_F(TOPOLOGY)) {
		if (len < FIELD_END(topology))
			return -EINVAL;
		info->physical_block_exp = GET8(c, topology.physical_block_exp);
		info->alignment_offset = GET8(c, topology.alignment_offset);
		info->min_io_size = GET16(c, topology.min_io_size);
		info->opt_io_size = GET32(c, topology.opt_io_size);
	}
	info->read_only = (features & BLK_F(RO)) != 0;
	info->flush = (features & BLK_F(FLUSH)) != 0;
	info->config_wce = (features & BLK_F(CONFIG_WCE)) != 0;
	/* 5.2.5: the writeback field says the mode with CONFIG_WCE; without, FLUSH implies it. */
	info->writeback = info->flush;
	if (info->config_wce) {
		if (len < FIELD_END(writeback))
			return -EINVAL;
		info->writeback = GET8(c, writeback) != 0;
	}
	info->num_queues = 1;
	if (features & BLK_F(MQ)) {
		if (len < FIELD_END(num_queues) || (info->num_queues = GET16(c, num_queues)) == 0)
			return -EINVAL;
	}
	if (features & BLK_F(DISCARD)) {
		if (len < FIELD_END(discard_sector_alignment))
			return -EINVAL;
		info->discard = true;
		info->max_discard_sectors = GET32(c, max_discard_sectors);
		info->max_discard_seg = GET32(c, max_discard_seg);
		info->discard_sector_alignment = GET32(c, discard_sector_alignment);
		if (info->max_discard_sectors == 0 || info->max_discard_seg == 0)
			return -EINVAL;
	}
	if (features & BLK_F(WRITE_ZEROES)) {
		if (len < FIELD_END(write_zeroes_may_unmap))
			return -EINVAL;
		info->write_zeroes = true;
		info->max_write_zeroes_sectors = GET32(c, max_write_zeroes_sectors);
		info->max_write_zeroes_seg = GET32(c, max_write_zeroes_seg);
		info->write_zeroes_may_unmap = GET8(c, write_zeroes_may_unmap) != 0;
		if (info->max_write_zeroes_sectors == 0 || info->max_write_zeroes_seg == 0)
			return -EINVAL;
	}
	return 0;
}

/* Appends to a bounded buffer, snprintf-style: *@total counts what the whole text needs. */
static void append(char *buf, size_t size, int *total, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t size, int *total, const char *fmt, ...)
{
	size_t at = (size_t)*total;
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(at < size ? buf + at : NULL, at < size ? size - at : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*total += n;
}

static void human_size(uint64_t bytes, char *out, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned int u = 0;
	uint64_t whole = bytes;

	while (whole >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		whole >>= 10;
		u++;
	}
	if (u && (bytes & ((1ULL << (10 * u)) - 1)) == 0)
		snprintf(out, size, "%llu %s", (unsigned long long)whole, units[u]);
	else if (u)
		snprintf(out, size, "%.2f %s", (double)bytes / (double)(1ULL << (10 * u)),
			 units[u]);
	else
		snprintf(out, size, "%llu B", (unsigned long long)bytes);
}

int vt_blk_info_str(const struct vt_blk_info *info, char *buf, size_t size)
{
	int total = 0;
	char human[32];

	if (size)
		buf[0] = '\0';
	human_size(info->capacity_bytes, human, sizeof(human));
	append(buf, size, &total, "capacity: %llu bytes (%s, %llu sectors of 512)\n",
	       (unsigned long long)info->capacity_bytes, human,
	       (unsigned long long)info->capacity_sectors);
	append(buf, size, &total, "block size: %u%s\n", info->blk_size,
	       (info->features & BLK_F(BLK_SIZE)) ? "" : " (not advertised)");
	if (info->features & BLK_F(TOPOLOGY))
		append(buf, size, &total,
		       "topology: physical block %llu bytes, alignment offset %u, min io %u, "
		       "opt io %u blocks\n",
		       (unsigned long long)info->blk_size << (info->physical_block_exp & 31),
		       info->alignment_offset, info->min_io_size, info->opt_io_size);
	if (info->features & BLK_F(SEG_MAX))
		append(buf, size, &total, "segments per request: %u\n", info->seg_max);
	if (info->features & BLK_F(SIZE_MAX))
		append(buf, size, &total, "segment size max: %u bytes\n", info->size_max);
	if (info->features & BLK_F(GEOMETRY))
		append(buf, size, &total, "geometry: %u cylinders, %u heads, %u sectors\n",
		       info->cylinders, info->heads, info->sectors_per_track);
	append(buf, size, &total, "read-only: %s\n", info->read_only ? "yes" : "no");
	append(buf, size, &total, "cache: %s%s%s\n", info->writeback ? "writeback" : "writethrough",
	       info->flush ? ", flush" : "", info->config_wce ? ", configurable" : "");
	append(buf, size, &total, "queues: %u\n", info->num_queues);
	if (info->discard)
		append(buf, size, &total,
		       "discard: up to %u sectors x %u segments, alignment %u sectors\n",
		       info->max_discard_sectors, info->max_discard_seg,
		       info->discard_sector_alignment);
	else
		append(buf, size, &total, "discard: no\n");
	if (info->write_zeroes)
		append(buf, size, &total, "write zeroes: up to %u sectors x %u segments%s\n",
		       info->max_write_zeroes_sectors, info->max_write_zeroes_seg,
		       info->write_zeroes_may_unmap ? ", may unmap" : "");
	else
		append(buf, size, &total, "write zeroes: no\n");
	return total;
}

char *vt_blk_id_str(const void *id, size_t bytes, char *out)
{
	const uint8_t *b = id;
	size_t n = 0;

	if (bytes > VIRTIO_BLK_ID_BYTES)
		bytes = VIRTIO_BLK_ID_BYTES;
	for (; n < bytes && b[n]; n++)
		out[n] = b[n] >= 0x20 && b[n] < 0x7f ? (char)b[n] : '?';
	out[n] = '\0';
	return out;
}
