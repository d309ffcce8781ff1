/* SPDX-License-Identifier: MIT */
/*
 * Parsing and validating one virtio-blk request (5.2.6) from the iovecs of its chain. Layout is
 * free (2.7.4), so everything goes by byte offset: the header is the first 16 readable bytes, the
 * status the last writable byte. Nothing here touches the backing; GET_ID is answered in place.
 */
#include <errno.h>
#include <string.h>

#include <virtue/spec/virtio_config.h>

#include "blk_impl.h"

#define HEADER_BYTES  ((uint32_t)sizeof(struct virtio_blk_outhdr))
#define SEGMENT_BYTES ((uint32_t)sizeof(struct virtio_blk_discard_write_zeroes))

/* Copies @len bytes starting @offset bytes into @iov[0 .. n) to @dst; false if they run out. */
static bool iov_copy_out(const struct iovec *iov, unsigned int n, uint64_t offset, void *dst,
			 size_t len)
{
	uint8_t *to = dst;

	for (unsigned int i = 0; i < n && len; i++) {
		if (offset >= iov[i].iov_len) {
			offset -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - offset;
		k = k < len ? k : len;
		memcpy(to, (const uint8_t *)iov[i].iov_base + offset, k);
		to += k;
		len -= k;
		offset = 0;
	}
	return len == 0;
}

/* Copies @len bytes from @src to the start of @iov[0 .. n); returns how many fitted. */
static size_t iov_copy_in(const struct iovec *iov, unsigned int n, const void *src, size_t len)
{
	const uint8_t *from = src;
	size_t done = 0;

	for (unsigned int i = 0; i < n && done < len; i++) {
		size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy(iov[i].iov_base, from + done, k);
		done += k;
	}
	return done;
}

static void finish(struct blk_parsed *r, uint8_t status)
{
	r->op = BLK_OP_NONE;
	r->status = status;
}

static void malformed(struct blk_parsed *r, const char *why)
{
	finish(r, VIRTIO_BLK_S_IOERR);
	r->malformed = true;
	r->why = why;
}

/* True when [sector, sector + sectors) lies inside the disk, without overflowing. */
static bool in_range(const struct vt_blk *blk, uint64_t sector, uint64_t sectors)
{
	return sector <= blk->capacity && sectors <= blk->capacity - sector;
}

/* IN and OUT: the data is the readable bytes after the header (OUT) or the writable ones before
 * the status (IN); the other direction carries nothing but the header or the status. */
static void parse_rw(const struct vt_blk *blk, const struct vt_vq_chain *chain, struct iovec *iov,
		     uint64_t sector, bool in, struct blk_parsed *r)
{
	if (in && chain->readable_bytes != HEADER_BYTES) {
		malformed(r, "IN request with device-readable data");
		return;
	}
	if (!in && chain->writable_bytes != 1) {
		malformed(r, "OUT request with device-writable data");
		return;
	}
	uint64_t len = in ? chain->writable_bytes - 1u : chain->readable_bytes - HEADER_BYTES;
	if (len % VIRTIO_BLK_SECTOR_SIZE) {
		malformed(r, "data length not a multiple of 512");
		return;
	}
	if (!in_range(blk, sector, len >> VIRTIO_BLK_SECTOR_SHIFT)) {
		malformed(r, "sector range past the capacity");
		return;
	}
	r->op = in ? BLK_OP_READ : BLK_OP_WRITE;
	r->offset = sector << VIRTIO_BLK_SECTOR_SHIFT;
	r->len = len;
	if (in) {
		/* The writable part minus its last byte, the status. */
		r->data_first = chain->nreadable;
		r->data_count = chain->nwritable;
		struct iovec *last = &iov[r->data_first + r->data_count - 1];
		if (--last->iov_len == 0)
			r->data_count--;
		return;
	}
	/* The readable part after the header, which may end inside any iovec. */
	uint64_t skip = HEADER_BYTES;
	unsigned int i = 0;
	while (i < chain->nreadable && skip >= iov[i].iov_len)
		skip -= iov[i++].iov_len;
	r->data_first = i;
	r->data_count = chain->nreadable - i;
	if (r->data_count) {
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + skip;
		iov[i].iov_len -= skip;
	}
}

/* DISCARD and WRITE_ZEROES: an array of segments after the header, each checked and copied. */
static void parse_extents(const struct vt_blk *blk, const struct vt_vq_chain *chain,
			  const struct iovec *iov, bool discard, struct blk_parsed *r)
{
	if (chain->writable_bytes != 1) {
		malformed(r, "DISCARD/WRITE_ZEROES with device-writable data");
		return;
	}
	uint32_t payload = chain->readable_bytes - HEADER_BYTES;
	if (payload == 0 || payload % SEGMENT_BYTES) {
		malformed(r, "DISCARD/WRITE_ZEROES payload not a whole number of segments");
		return;
	}
	/* max_discard_seg and max_write_zeroes_seg (5.2.4). */
	if (payload / SEGMENT_BYTES > VT_BLK_MAX_DISCARD_SEG) {
		malformed(r, "more DISCARD/WRITE_ZEROES segments than advertised");
		return;
	}
	uint32_t align = blk->blk_size / VIRTIO_BLK_SECTOR_SIZE;
	r->nextent = payload / SEGMENT_BYTES;
	for (unsigned int k = 0; k < r->nextent; k++) {
		struct virtio_blk_discard_write_zeroes seg;
		iov_copy_out(iov, chain->nreadable, HEADER_BYTES + (uint64_t)k * SEGMENT_BYTES,
			     &seg, sizeof(seg));
		uint64_t sector = vt_le64_to_cpu(seg.sector);
		uint32_t sectors = vt_le32_to_cpu(seg.num_sectors);
		uint32_t flags = vt_le32_to_cpu(seg.flags);
		/* 5.2.6.2: unknown flags, and unmap on a discard, are UNSUPP. */
		if ((flags & ~(uint32_t)VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ||
		    (discard && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))) {
			finish(r, VIRTIO_BLK_S_UNSUPP);
			return;
		}
		if (sectors > VT_BLK_MAX_DISCARD_SECTORS) {
			malformed(r, "segment longer than max_discard/write_zeroes_sectors");
			return;
		}
		if (sector % align || sectors % align) {
			malformed(r, "segment not aligned to discard_sector_alignment");
			return;
		}
		if (!in_range(blk, sector, sectors)) {
			malformed(r, "segment past the capacity");
			return;
		}
		r->extent[k] = (struct blk_extent){
			.offset = sector << VIRTIO_BLK_SECTOR_SHIFT,
			.len = (uint64_t)sectors << VIRTIO_BLK_SECTOR_SHIFT,
			.unmap = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0,
		};
	}
	r->op = discard ? BLK_OP_DISCARD : BLK_OP_WRITE_ZEROES;
}

static void parse_get_id(const struct vt_blk *blk, const struct vt_vq_chain *chain,
			 struct iovec *iov, struct blk_parsed *r)
{
	if (chain->readable_bytes != HEADER_BYTES) {
		malformed(r, "GET_ID with device-readable data");
		return;
	}
	/* As much of the 20-byte, NUL-padded string as the writable part holds before the status.
	 */
	size_t room = chain->writable_bytes - 1u;
	size_t n = room < sizeof(blk->serial) ? room : sizeof(blk->serial);
	r->written =
	    (uint32_t)iov_copy_in(iov + chain->nreadable, chain->nwritable, blk->serial, n);
	finish(r, VIRTIO_BLK_S_OK);
}

int blk_parse(const struct vt_blk *blk, uint64_t negotiated, const struct vt_vq_chain *chain,
	      struct iovec *iov, struct blk_parsed *r)
{
	memset(r, 0, offsetof(struct blk_parsed, extent));
	/* The status is the last writable byte: without one, nothing can be said to the driver. */
	if (chain->writable_bytes == 0 || chain->nwritable == 0)
		return -EPROTO;
	const struct iovec *last = &iov[chain->nreadable + chain->nwritable - 1];
	r->status_p = (uint8_t *)last->iov_base + last->iov_len - 1;

	struct virtio_blk_outhdr hdr;
	if (chain->readable_bytes < HEADER_BYTES ||
	    !iov_copy_out(iov, chain->nreadable, 0, &hdr, sizeof(hdr))) {
		r->type = UINT32_MAX;
		malformed(r, "request header shorter than 16 bytes");
		return 0;
	}
	r->type = vt_le32_to_cpu(hdr.type);
	uint64_t sector = vt_le64_to_cpu(hdr.sector);

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		parse_rw(blk, chain, iov, sector, true, r);
		break;
	case VIRTIO_BLK_T_OUT:
		/* 5.2.6.2: a write to a read-only device fails, writing nothing. */
		if (blk->read_only)
			finish(r, VIRTIO_BLK_S_IOERR);
		else
			parse_rw(blk, chain, iov, sector, false, r);
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (chain->readable_bytes != HEADER_BYTES || chain->writable_bytes != 1)
			malformed(r, "FLUSH carrying data");
		else
			r->op = BLK_OP_FLUSH;
		break;
	case VIRTIO_BLK_T_GET_ID:
		parse_get_id(blk, chain, iov, r);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool discard = r->type == VIRTIO_BLK_T_DISCARD;
		uint64_t need = VT_BIT(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES);
		if (blk->read_only)
			finish(r, VIRTIO_BLK_S_IOERR);
		else if (!(negotiated & need))
			finish(r, VIRTIO_BLK_S_UNSUPP);
		else
			parse_extents(blk, chain, iov, discard, r);
		break;
	}
	default:
		finish(r, VIRTIO_BLK_S_UNSUPP);
		break;
	}
	return 0;
}
