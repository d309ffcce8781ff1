/* SPDX-License-Identifier: MIT */
/*
 * `virtue blk`: an fio-like workload on a vhost-user-blk back-end through virtue's front-end and
 * virtio-blk driver. One thread per queue keeps --iodepth requests in flight; every request's
 * latency goes into a fixed-size histogram; --verify writes a pattern that is a function of the
 * byte offset and a seed (pattern_word) and checks every read against it, so a write pass and a
 * later read pass (or another program: tests/interop/cli_blk.py) agree on every byte.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <virtue/blk_driver.h>
#include <virtue/features.h>
#include <virtue/spec/endian.h>
#include <virtue/spec/virtio_config.h>

#include "cli.h"
#include "hist.h"

#define SECTOR		    512u
#define MAX_QUEUES	    64
#define MAX_SEGMENTS	    256
#define DEFAULT_QUEUE_SIZE  128
#define MAX_QUEUE_SIZE	    1024
#define MAX_REPORTED_ERRORS 10

enum rw_mode { RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE, RW_RANDRW };
static const char *const rw_names[] = { "read", "write", "randread", "randwrite", "randrw" };

enum {
	OPT_RW = 1,
	OPT_MIX,
	OPT_BS,
	OPT_DEPTH,
	OPT_QUEUES,
	OPT_SIZE,
	OPT_RUNTIME,
	OPT_COUNT,
	OPT_VERIFY,
	OPT_SEED,
	OPT_PROGRESS,
	OPT_JSON,
	OPT_QSIZE,
	OPT_NO_FLUSH,
	OPT_RECONNECT
};

struct blk_options {
	struct cli_common c;
	enum rw_mode rw;
	unsigned int rwmixread; /* percent of reads in randrw */
	uint64_t bs;
	unsigned int iodepth, queues, queue_size;
	uint64_t size; /* 0: the capacity */
	uint64_t runtime_ms, count;
	bool verify, progress, json, flush, reconnect;
	uint64_t seed;
};

/*
 * The pattern --verify writes: the 8-byte little-endian word at byte offset @offset (a multiple
 * of 8) of the disk is
 *   x = seed * 0x9E3779B97F4A7C15 + offset             (mod 2^64)
 *   x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9           (mod 2^64)
 *   word = x ^ (x >> 29)
 * Each step is a bijection, so no two words of a disk are alike: data written at the wrong
 * place, or by another seed, never passes.
 */
static inline uint64_t pattern_word(uint64_t seed, uint64_t offset)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + offset;
	x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
	return x ^ (x >> 29);
}

static void pattern_fill(uint64_t seed, uint64_t offset, void *buf, size_t len)
{
	uint8_t *b = buf;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = vt_cpu_to_le64(pattern_word(seed, offset + i));
		memcpy(b + i, &w, 8);
	}
}

/* The first byte of @buf (at disk offset @offset) that is not the pattern, or -1. */
static int64_t pattern_check(uint64_t seed, uint64_t offset, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = vt_cpu_to_le64(pattern_word(seed, offset + i));
		if (memcmp(b + i, &w, 8) == 0)
			continue;
		const uint8_t *want = (const uint8_t *)&w;
		for (size_t k = 0; k < 8; k++)
			if (b[i + k] != want[k])
				return (int64_t)(i + k);
	}
	return -1;
}

/* ---------------------------------------------------------------- the run */

struct slot {
	void *buf;
	uint64_t offset;
	uint64_t start_ns;
	bool write;
	bool check; /* a read to compare with the pattern */
};

enum phase { PHASE_MAIN, PHASE_VERIFY };

struct job {
	struct run *run;
	unsigned int index;
	pthread_t thread;
	struct cli_blk_queue q;
	struct slot *slots;
	unsigned int *free_slots, nfree;
	struct vt_blk_completion *done;
	uint64_t rng;
	/* Sequential modes walk this part of the span; the verify pass reads it back. */
	uint64_t first_block, nblocks, cursor;
	uint64_t quota, submitted;
	bool have_retry; /* an op the ring had no room for */
	uint64_t stalled_since;
	uint64_t retry_offset;
	bool retry_write;
	struct hist lat[2]; /* read, write: nanoseconds */
	uint64_t ops[2], bytes[2];
	_Atomic uint64_t live_ops[2], live_bytes[2]; /* for the progress line */
	uint64_t io_errors, verify_errors;
	uint64_t verify_checked[2]; /* by phase: reads in the run, the read-back pass */
	uint64_t start_ns, end_ns;  /* of this job's part of the phase */
	int fatal;
	char fatal_msg[200];
};

struct run {
	struct blk_options o;
	struct cli_device d;
	struct vt_blk_info info;
	uint64_t blocks; /* span / bs */
	uint64_t seg_size;
	unsigned int nseg, queue_size;
	struct job *jobs;
	_Atomic uint64_t *written; /* bitmap of blocks written (with --verify) */
	atomic_bool stop;
	atomic_uint reported; /* error lines printed */
	atomic_uint running;
	enum phase phase;
	/* --reconnect: the jobs meet here; the last one in reconnects for all. */
	pthread_mutex_t meet_lock;
	pthread_cond_t meet_cond;
	unsigned int parked;
	uint64_t meet_gen;
	int meet_rc;
	unsigned int reconnects;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = 1;
	signal(sig, SIG_DFL); /* a second one ends the process */
}

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static bool is_random(enum rw_mode m)
{
	return m == RW_RANDREAD || m == RW_RANDWRITE || m == RW_RANDRW;
}

static bool has_writes(enum rw_mode m)
{
	return m == RW_WRITE || m == RW_RANDWRITE || m == RW_RANDRW;
}

static void job_fail(struct job *j, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_fail(struct job *j, int rc, const char *fmt, ...)
{
	va_list ap;

	if (j->fatal)
		return;
	j->fatal = rc ? rc : -EIO;
	va_start(ap, fmt);
	vsnprintf(j->fatal_msg, sizeof(j->fatal_msg), fmt, ap);
	va_end(ap);
	atomic_store(&j->run->stop, true);
}

static bool report_more(struct run *r)
{
	return atomic_fetch_add(&r->reported, 1) < MAX_REPORTED_ERRORS;
}

static void mark_written(struct run *r, uint64_t block)
{
	atomic_fetch_or_explicit(&r->written[block / 64], 1ull << (block % 64),
				 memory_order_relaxed);
}

static bool was_written(struct run *r, uint64_t block)
{
	return (atomic_load_explicit(&r->written[block / 64], memory_order_relaxed) >>
		(block % 64)) &
	       1;
}

/* The next request this job makes in this phase: false when it is done. */
static bool next_op(struct job *j, uint64_t *offset, bool *write)
{
	struct run *r = j->run;
	const struct blk_options *o = &r->o;

	if (j->have_retry) {
		j->have_retry = false;
		*offset = j->retry_offset;
		*write = j->retry_write;
		return true;
	}
	if (atomic_load_explicit(&r->stop, memory_order_relaxed))
		return false;
	if (r->phase == PHASE_VERIFY) {
		while (j->cursor < j->nblocks && !was_written(r, j->first_block + j->cursor))
			j->cursor++;
		if (j->cursor >= j->nblocks)
			return false;
		*offset = (j->first_block + j->cursor++) * o->bs;
		*write = false;
		return true;
	}
	if (j->submitted >= j->quota)
		return false;
	uint64_t block;
	if (is_random(o->rw)) {
		block = rng_next(&j->rng) % r->blocks;
	} else {
		block = j->first_block + j->cursor;
		if (++j->cursor == j->nblocks)
			j->cursor = 0;
	}
	switch (o->rw) {
	case RW_WRITE:
	case RW_RANDWRITE:
		*write = true;
		break;
	case RW_RANDRW:
		*write = rng_next(&j->rng) % 100 >= o->rwmixread;
		break;
	default:
		*write = false;
	}
	*offset = block * o->bs;
	return true;
}

static int submit(struct job *j, struct slot *s)
{
	struct run *r = j->run;
	struct iovec iov[MAX_SEGMENTS];
	uint8_t *p = s->buf;

	for (unsigned int i = 0; i < r->nseg; i++) {
		uint64_t left = r->o.bs - (uint64_t)i * r->seg_size;
		iov[i] = (struct iovec){ p + (uint64_t)i * r->seg_size,
					 left < r->seg_size ? left : r->seg_size };
	}
	uint64_t sector = s->offset / SECTOR;
	return s->write ? vt_blk_driver_queue_write(j->q.engine, sector, iov, r->nseg, s)
			: vt_blk_driver_queue_read(j->q.engine, sector, iov, r->nseg, s);
}

static void complete(struct job *j, const struct vt_blk_completion *c, uint64_t now)
{
	struct run *r = j->run;
	struct slot *s = c->cookie;
	unsigned int dir = s->write;

	if (c->result != 0) {
		j->io_errors++;
		if (report_more(r))
			cli_err("I/O error: %s of %" PRIu64 " bytes at offset %" PRIu64
				" (queue %u): %s",
				s->write ? "write" : "read", r->o.bs, s->offset, j->index,
				c->result == -ENOTSUP ? "unsupported" : "VIRTIO_BLK_S_IOERR");
	} else {
		if (s->check) {
			j->verify_checked[r->phase]++;
			int64_t at = pattern_check(r->o.seed, s->offset, s->buf, r->o.bs);
			if (at >= 0) {
				j->verify_errors++;
				uint64_t want = vt_cpu_to_le64(
				    pattern_word(r->o.seed, (s->offset + (uint64_t)at) & ~7ull));
				if (report_more(r))
					cli_err("verify: mismatch at byte %" PRIu64
						" (block at offset %" PRIu64
						"): read 0x%02x, expected 0x%02x",
						s->offset + (uint64_t)at, s->offset,
						((const uint8_t *)s->buf)[at],
						((const uint8_t
						      *)&want)[(s->offset + (uint64_t)at) & 7]);
			}
		}
		if (s->write && r->written)
			mark_written(r, s->offset / r->o.bs);
		if (r->phase == PHASE_MAIN) {
			hist_record(&j->lat[dir], now - s->start_ns);
			j->ops[dir]++;
			j->bytes[dir] += r->o.bs;
			atomic_store_explicit(&j->live_ops[dir], j->ops[dir], memory_order_relaxed);
			atomic_store_explicit(&j->live_bytes[dir], j->bytes[dir],
					      memory_order_relaxed);
		}
	}
	j->free_slots[j->nfree++] = (unsigned int)(s - j->slots);
}

/* The back-end is gone: wait for it to come back and hand it the device (bounded). */
static int reconnect_now(struct run *r)
{
	cli_err("the back-end closed the connection: waiting up to %u ms for it to come back",
		r->o.c.connect_timeout_ms);
	int rc = vt_vu_frontend_reconnect(r->d.fe);
	if (rc == 0) {
		r->reconnects++;
		cli_err("reconnected: requests in flight go on with the new back-end");
	}
	return rc;
}

/*
 * --reconnect, on a job whose queue lost its back-end: collects what was completed (the rings
 * must hold no used buffer when the device is handed over), then waits for the other jobs to do
 * the same; the last one in reconnects for everybody. Jobs that ended count as in.
 */
static int job_reconnect(struct job *j)
{
	struct run *r = j->run;
	int n;

	while ((n = vt_blk_driver_queue_poll(j->q.engine, j->done, r->o.iodepth)) > 0) {
		uint64_t now = cli_now_ns();
		for (int i = 0; i < n; i++)
			complete(j, &j->done[i], now);
	}
	pthread_mutex_lock(&r->meet_lock);
	uint64_t gen = r->meet_gen;
	r->parked++;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (r->o.c.timeout_ms + r->o.c.connect_timeout_ms) / 1000 + 1;
	int rc = 0;
	while (r->meet_gen == gen) {
		if (r->parked >= atomic_load(&r->running)) {
			r->meet_rc = reconnect_now(r);
			r->parked = 0;
			r->meet_gen++;
			pthread_cond_broadcast(&r->meet_cond);
			break;
		}
		if (pthread_cond_timedwait(&r->meet_cond, &r->meet_lock, &deadline) == ETIMEDOUT) {
			r->parked--;
			rc = -ETIMEDOUT;
			break;
		}
	}
	if (rc == 0)
		rc = r->meet_rc;
	pthread_mutex_unlock(&r->meet_lock);
	return rc;
}

static bool connection_lost(int rc)
{
	return rc == -ECONNRESET || rc == -ENOTCONN;
}

/* One phase on this job's queue: keep iodepth requests in flight until next_op runs out. */
static void job_run(struct job *j)
{
	struct run *r = j->run;
	const struct blk_options *o = &r->o;
	bool verify_reads = o->verify && (o->rw == RW_READ || o->rw == RW_RANDREAD);

	for (;;) {
		bool added = false;
		uint64_t offset;
		bool write;
		while (j->nfree > 0 && !j->fatal && next_op(j, &offset, &write)) {
			struct slot *s = &j->slots[j->free_slots[j->nfree - 1]];
			s->offset = offset;
			s->write = write;
			/*
			 * Which reads to check: every one in read modes and the verify pass; in
			 * randrw those of blocks written earlier in this run (decided now: a
			 * write completing later may land before or after this read).
			 */
			s->check =
			    !write && (verify_reads || r->phase == PHASE_VERIFY ||
				       (o->verify && r->written && was_written(r, offset / o->bs)));
			if (write && o->verify)
				pattern_fill(o->seed, offset, s->buf, o->bs);
			s->start_ns = cli_now_ns();
			int rc = submit(j, s);
			if (rc == -EAGAIN) {
				j->have_retry = true;
				j->retry_offset = offset;
				j->retry_write = write;
				break;
			}
			if (rc < 0) {
				job_fail(j, rc, "%s at offset %" PRIu64 " refused: %s",
					 write ? "write" : "read", offset, strerror(-rc));
				break;
			}
			j->nfree--;
			j->submitted++;
			added = true;
		}
		if (added) {
			int rc = vt_vu_frontend_kick(r->d.fe, j->index);
			if (rc < 0)
				job_fail(j, rc, "kick: %s", strerror(-rc));
		}
		unsigned int in_flight = o->iodepth - j->nfree;
		if (in_flight == 0 && j->have_retry && !j->fatal) {
			/*
			 * No room with nothing of ours in flight: DMA space (the bounce window)
			 * that other queues hold. Wait for them, within the timeout.
			 */
			uint64_t now = cli_now_ns();
			if (!j->stalled_since)
				j->stalled_since = now;
			if (now - j->stalled_since > o->c.timeout_ms * 1000000ull)
				job_fail(j, -ENOSPC, "queue %u: no room for a request for %u ms",
					 j->index, o->c.timeout_ms);
			else
				usleep(100);
			continue;
		}
		j->stalled_since = 0;
		if (in_flight == 0)
			return; /* nothing more to do, or a failure with nothing left out */
		int n = cli_blk_queue_reap(&r->d, &j->q, j->done, o->iodepth, (int)o->c.timeout_ms);
		if (n < 0 && o->reconnect && connection_lost(n)) {
			n = job_reconnect(j);
			if (n == 0)
				continue;
			job_fail(j, n, "queue %u: reconnecting: %s", j->index, strerror(-n));
			return;
		}
		if (n < 0) {
			job_fail(j, n, "queue %u with %u request(s) in flight: %s", j->index,
				 in_flight, cli_blk_error(n));
			return;
		}
		uint64_t now = cli_now_ns();
		for (int i = 0; i < n; i++)
			complete(j, &j->done[i], now);
	}
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	j->start_ns = cli_now_ns();
	job_run(j);
	j->end_ns = cli_now_ns();
	/* Under the lock: jobs waiting to reconnect count the ones still running. */
	pthread_mutex_lock(&j->run->meet_lock);
	atomic_fetch_sub(&j->run->running, 1);
	pthread_cond_broadcast(&j->run->meet_cond);
	pthread_mutex_unlock(&j->run->meet_lock);
	return NULL;
}

/* ---------------------------------------------------------------- reporting */

static double mb_per_s(uint64_t bytes, double seconds)
{
	return seconds > 0 ? (double)bytes / seconds / 1e6 : 0;
}

static void progress_line(struct run *r, double elapsed, uint64_t *last_ops, uint64_t *last_bytes,
			  double dt, bool tty)
{
	uint64_t ops[2] = { 0, 0 }, bytes[2] = { 0, 0 };
	for (unsigned int i = 0; i < r->o.queues; i++)
		for (int d = 0; d < 2; d++) {
			ops[d] +=
			    atomic_load_explicit(&r->jobs[i].live_ops[d], memory_order_relaxed);
			bytes[d] +=
			    atomic_load_explicit(&r->jobs[i].live_bytes[d], memory_order_relaxed);
		}
	char line[256];
	int len = snprintf(line, sizeof(line), "[%5.1fs]", elapsed);
	for (int d = 0; d < 2; d++) {
		bool shown =
		    d ? has_writes(r->o.rw) : r->o.rw != RW_WRITE && r->o.rw != RW_RANDWRITE;
		if (!shown)
			continue;
		double iops = dt > 0 ? (double)(ops[d] - last_ops[d]) / dt : 0;
		len += snprintf(line + len, sizeof(line) - (size_t)len, " %s %.0f IOPS %.1f MB/s",
				d ? "write" : "read", iops, mb_per_s(bytes[d] - last_bytes[d], dt));
		last_ops[d] = ops[d];
		last_bytes[d] = bytes[d];
	}
	fprintf(stderr, tty ? "\r%s\033[K" : "%s\n", line);
	fflush(stderr);
}

static void print_lat_text(const char *name, const struct hist *h, uint64_t bytes, double secs)
{
	if (h->count == 0)
		return;
	printf("  %-5s %10.0f IOPS %9.1f MB/s  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  "
	       "(mean %.1f, max %.1f)  %" PRIu64 " ops\n",
	       name, secs > 0 ? (double)h->count / secs : 0, mb_per_s(bytes, secs),
	       (double)hist_percentile(h, 50) / 1e3, (double)hist_percentile(h, 99) / 1e3,
	       (double)hist_percentile(h, 99.9) / 1e3, (double)h->sum / (double)h->count / 1e3,
	       (double)h->max / 1e3, h->count);
}

static void print_lat_json(const char *name, const struct hist *h, uint64_t bytes, double secs)
{
	printf("\"%s\":{\"ops\":%" PRIu64 ",\"bytes\":%" PRIu64
	       ",\"iops\":%.1f,\"mb_s\":%.3f,\"lat_us\":{\"mean\":%.2f,\"p50\":%.2f,\"p99\":%.2f,"
	       "\"p99.9\":%.2f,\"min\":%.2f,\"max\":%.2f}}",
	       name, h->count, bytes, secs > 0 ? (double)h->count / secs : 0, mb_per_s(bytes, secs),
	       h->count ? (double)h->sum / (double)h->count / 1e3 : 0,
	       (double)hist_percentile(h, 50) / 1e3, (double)hist_percentile(h, 99) / 1e3,
	       (double)hist_percentile(h, 99.9) / 1e3, h->count ? (double)h->min / 1e3 : 0,
	       (double)h->max / 1e3);
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* ---------------------------------------------------------------- setup */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: virtue blk --socket PATH [options]\n"
	    "An fio-like workload on a vhost-user-blk back-end, one thread per queue.\n"
	    "  --rw MODE              read, write, randread, randwrite or randrw (default read)\n"
	    "  --rwmixread PCT        randrw: percent of reads (default 50)\n"
	    "  --bs SIZE              bytes per request, e.g. 4k, 64k (default 4k)\n"
	    "  --iodepth N            requests in flight per queue (default 1)\n"
	    "  --queues N             request queues, one thread each (default 1)\n"
	    "  --size SIZE            span of the disk used, from offset 0 (default: all of it)\n"
	    "  --runtime SECONDS      run this long (also 500ms)\n"
	    "  --count N              run this many requests in all\n"
	    "                         (neither: one pass over the span, size/bs requests)\n"
	    "  --verify               writes carry the pattern below, reads are checked against\n"
	    "                         it (read, randread: every read, so the disk must hold the\n"
	    "                         pattern, e.g. from a write pass with the same --seed;\n"
	    "                         randrw: reads of blocks written earlier in the run); after\n"
	    "                         a run with writes every block written is read back and\n"
	    "                         checked. Exit 1 on any mismatch or I/O error.\n"
	    "  --seed N               the pattern's seed (default 1)\n"
	    "  --queue-size N         ring entries (default 128, more for deep queues)\n"
	    "  --no-flush             no FLUSH after writing\n"
	    "  --reconnect            when the back-end goes away, wait for it to come back\n"
	    "                         (--connect-timeout) and go on: requests in flight are\n"
	    "                         completed by the new one (vhost-user inflight tracking\n"
	    "                         when it offers it, the rebased ring otherwise)\n"
	    "  --progress             a progress line each second (default when stderr is a tty)\n"
	    "  --json                 the summary as one JSON object on stdout\n"
	    "%s"
	    "The pattern: the 8-byte little-endian word at byte offset O (a multiple of 8) is\n"
	    "  x = seed * 0x9E3779B97F4A7C15 + O; x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9;\n"
	    "  word = x ^ (x >> 29)   (all mod 2^64)\n"
	    "Exit status: 0, 1 when the device or the run failed (or --verify found a mismatch\n"
	    "or an I/O error), 2 for a bad command line.\n",
	    cli_common_help);
}

static int parse_args(int argc, char **argv, struct blk_options *o)
{
	static const struct option options[] = {
		{ "rw", required_argument, NULL, OPT_RW },
		{ "rwmixread", required_argument, NULL, OPT_MIX },
		{ "bs", required_argument, NULL, OPT_BS },
		{ "iodepth", required_argument, NULL, OPT_DEPTH },
		{ "queues", required_argument, NULL, OPT_QUEUES },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "runtime", required_argument, NULL, OPT_RUNTIME },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "verify", no_argument, NULL, OPT_VERIFY },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "progress", no_argument, NULL, OPT_PROGRESS },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "queue-size", required_argument, NULL, OPT_QSIZE },
		{ "no-flush", no_argument, NULL, OPT_NO_FLUSH },
		{ "reconnect", no_argument, NULL, OPT_RECONNECT },
		CLI_COMMON_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt, index = -1;

	*o = (struct blk_options){ .rw = RW_READ,
				   .rwmixread = 50,
				   .bs = 4096,
				   .iodepth = 1,
				   .queues = 1,
				   .seed = 1,
				   .flush = true };
	cli_common_defaults(&o->c);
	while ((opt = getopt_long(argc, argv, "h", options, &index)) != -1) {
		bool bad = false;
		switch (opt) {
		case 'h':
			usage(stdout);
			exit(0);
		case OPT_RW:
			bad = true;
			for (unsigned int i = 0; i < sizeof(rw_names) / sizeof(rw_names[0]); i++)
				if (strcmp(optarg, rw_names[i]) == 0) {
					o->rw = (enum rw_mode)i;
					bad = false;
				}
			break;
		case OPT_MIX:
			bad = cli_parse_uint(optarg, 0, 100, &v) < 0;
			o->rwmixread = (unsigned int)v;
			break;
		case OPT_BS:
			bad = cli_parse_size(optarg, &o->bs) < 0 || o->bs < SECTOR ||
			      o->bs % SECTOR || o->bs > (1u << 30);
			break;
		case OPT_DEPTH:
			bad = cli_parse_uint(optarg, 1, MAX_QUEUE_SIZE, &v) < 0;
			o->iodepth = (unsigned int)v;
			break;
		case OPT_QUEUES:
			bad = cli_parse_uint(optarg, 1, MAX_QUEUES, &v) < 0;
			o->queues = (unsigned int)v;
			break;
		case OPT_SIZE:
			bad = cli_parse_size(optarg, &o->size) < 0 || o->size == 0;
			break;
		case OPT_RUNTIME:
			bad = cli_parse_seconds(optarg, &o->runtime_ms) < 0 || o->runtime_ms == 0;
			break;
		case OPT_COUNT:
			bad = cli_parse_uint(optarg, 1, UINT64_MAX, &o->count) < 0;
			break;
		case OPT_VERIFY:
			o->verify = true;
			break;
		case OPT_SEED:
			bad = cli_parse_uint(optarg, 0, UINT64_MAX, &o->seed) < 0;
			break;
		case OPT_PROGRESS:
			o->progress = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_QSIZE:
			bad = cli_parse_uint(optarg, 4, MAX_QUEUE_SIZE, &v) < 0;
			o->queue_size = (unsigned int)v;
			break;
		case OPT_NO_FLUSH:
			o->flush = false;
			break;
		case OPT_RECONNECT:
			o->reconnect = true;
			break;
		default: {
			int rc = cli_common_option(&o->c, opt, optarg);
			if (rc < 0)
				return -1;
			if (rc == 0) {
				usage(stderr);
				return -1;
			}
		}
		}
		index = -1;
		if (bad) {
			cli_err("bad value for --%s: '%s' (see --help)",
				index >= 0 ? options[index].name : "?", optarg ? optarg : "");
			return -1;
		}
	}
	if (optind < argc) {
		cli_err("unexpected argument '%s'", argv[optind]);
		return -1;
	}
	if (cli_common_finish(&o->c) < 0)
		return -1;
	if (o->c.device_id != VIRTIO_ID_BLOCK) {
		cli_err("virtue blk drives block devices only (--device blk)");
		return -1;
	}
	return 0;
}

static uint64_t pow2_at_least64(uint64_t v)
{
	uint64_t p = 1;
	while (p < v)
		p <<= 1;
	return p;
}

/*
 * Memory the run needs: data buffers, engine slots, rings and indirect tables per queue. The
 * shared memory (and the bounce window) hand out power-of-two blocks: a power of two, with room.
 */
static uint64_t memory_needed(const struct blk_options *o, unsigned int queue_size)
{
	uint64_t bs = pow2_at_least64(o->bs < 4096 ? 4096 : o->bs);
	uint64_t per_queue = (uint64_t)o->iodepth * bs + (uint64_t)queue_size * 4096 + (64u << 10);
	return pow2_at_least64((uint64_t)o->queues * per_queue + (1u << 20));
}

/* Connects, negotiates, checks the workload against the device, starts the queues. */
static int setup(struct run *r)
{
	struct blk_options *o = &r->o;

	/* The ring: room for iodepth requests of header, segments and status without INDIRECT. */
	unsigned int want = o->queue_size;
	if (!want) {
		uint64_t segs = (o->bs + 4095) / 4096 + 2;
		uint64_t need = (uint64_t)o->iodepth * (segs < 8 ? segs : 8);
		want = need <= DEFAULT_QUEUE_SIZE ? DEFAULT_QUEUE_SIZE
						  : (unsigned int)pow2_at_least64(need);
		if (want > MAX_QUEUE_SIZE)
			want = MAX_QUEUE_SIZE;
	}
	r->queue_size = want;
	uint64_t mem = memory_needed(o, want);
	if (cli_connect(&o->c, mem, o->c.dma == VT_DMA_BOUNCE ? mem : 0, &r->d) < 0)
		return -1;
	if (cli_negotiate(&o->c, &r->d) < 0)
		return -1;
	uint64_t features = vt_vu_frontend_features(r->d.fe);
	if (cli_blk_config(&r->d, features, &r->info) < 0)
		return -1;

	FILE *hdr = o->json ? stderr : stdout;
	cli_print_negotiated(hdr, &o->c, &r->d);

	unsigned int queues = r->info.num_queues;
	if (queues > vt_vu_frontend_num_queues(r->d.fe))
		queues = vt_vu_frontend_num_queues(r->d.fe);
	if (o->queues > queues) {
		cli_err("--queues %u: the device has %u request queue(s)", o->queues, queues);
		return -1;
	}
	if (o->bs % r->info.blk_size) {
		cli_err("--bs %" PRIu64 ": not a multiple of the device's block size %u", o->bs,
			r->info.blk_size);
		return -1;
	}
	if (has_writes(o->rw) && r->info.read_only) {
		cli_err("--rw %s: the device is read-only (VIRTIO_BLK_F_RO)", rw_names[o->rw]);
		return -1;
	}
	uint64_t span = o->size ? o->size : r->info.capacity_bytes;
	if (span > r->info.capacity_bytes) {
		cli_err("--size %" PRIu64 ": the device holds %" PRIu64 " bytes", span,
			r->info.capacity_bytes);
		return -1;
	}
	r->blocks = span / o->bs;
	if (r->blocks < o->queues) {
		cli_err("the span (%" PRIu64 " bytes) holds fewer blocks of %" PRIu64
			" than there are queues",
			span, o->bs);
		return -1;
	}
	/* Segments: one per request, unless size_max cuts it. */
	r->seg_size = o->bs;
	if (r->info.size_max && r->info.size_max < o->bs) {
		r->seg_size = r->info.size_max >= r->info.blk_size
				  ? r->info.size_max / r->info.blk_size * r->info.blk_size
				  : r->info.size_max;
	}
	r->nseg = (unsigned int)((o->bs + r->seg_size - 1) / r->seg_size);

	for (unsigned int i = 0; i < o->queues; i++) {
		struct job *j = &r->jobs[i];
		if (cli_blk_queue_open(&r->d, &r->info, i, r->queue_size, &j->q) < 0)
			return -1;
		unsigned int max = vt_blk_driver_queue_max_segments(j->q.engine);
		if (r->nseg > max || r->nseg > MAX_SEGMENTS) {
			cli_err("--bs %" PRIu64 " takes %u segments of at most %" PRIu64
				" bytes; the device takes %u per request",
				o->bs, r->nseg, r->seg_size,
				max < MAX_SEGMENTS ? max : MAX_SEGMENTS);
			return -1;
		}
	}
	int rc = vt_vu_frontend_ready(r->d.fe);
	if (rc < 0) {
		cli_err("DRIVER_OK: %s", strerror(-rc));
		return -1;
	}
	return 0;
}

static void jobs_init(struct run *r)
{
	struct blk_options *o = &r->o;
	uint64_t total = o->count ? o->count : o->runtime_ms ? UINT64_MAX : r->blocks;

	for (unsigned int i = 0; i < o->queues; i++) {
		struct job *j = &r->jobs[i];
		j->run = r;
		j->index = i;
		j->rng = o->seed ^ (0x5851F42D4C957F2Dull * (i + 1));
		uint64_t share = r->blocks / o->queues, extra = r->blocks % o->queues;
		j->first_block = i * share + (i < extra ? i : extra);
		j->nblocks = share + (i < extra);
		if (total == UINT64_MAX)
			j->quota = UINT64_MAX;
		else
			j->quota = total / o->queues + (i < total % o->queues);
		hist_init(&j->lat[0]);
		hist_init(&j->lat[1]);
	}
}

/* Buffers and slots, after the engines exist (they take shared memory first). */
static int jobs_alloc(struct run *r)
{
	struct blk_options *o = &r->o;
	for (unsigned int i = 0; i < o->queues; i++) {
		struct job *j = &r->jobs[i];
		j->slots = calloc(o->iodepth, sizeof(*j->slots));
		j->free_slots = calloc(o->iodepth, sizeof(*j->free_slots));
		j->done = calloc(o->iodepth, sizeof(*j->done));
		if (!j->slots || !j->free_slots || !j->done)
			return -ENOMEM;
		for (unsigned int k = 0; k < o->iodepth; k++) {
			int rc = vt_shm_alloc(r->d.shm, o->bs, 4096, &j->slots[k].buf);
			if (rc < 0) {
				cli_err("buffers: %s", strerror(-rc));
				return rc;
			}
			memset(j->slots[k].buf, 0, o->bs);
			j->free_slots[j->nfree++] = o->iodepth - 1 - k;
		}
	}
	return 0;
}

/* Runs one phase on every queue; returns its duration in seconds. */
static double run_phase(struct run *r, enum phase phase)
{
	struct blk_options *o = &r->o;
	bool tty = isatty(STDERR_FILENO);
	bool progress = phase == PHASE_MAIN && (o->progress || (tty && !o->json));
	uint64_t last_ops[2] = { 0, 0 }, last_bytes[2] = { 0, 0 };

	r->phase = phase;
	atomic_store(&r->stop, false);
	for (unsigned int i = 0; i < o->queues; i++) {
		r->jobs[i].cursor = 0;
		r->jobs[i].have_retry = false;
	}
	uint64_t start = cli_now_ns(), last = start;
	unsigned int started = 0;
	atomic_store(&r->running, o->queues);
	for (; started < o->queues; started++) {
		int rc =
		    pthread_create(&r->jobs[started].thread, NULL, job_main, &r->jobs[started]);
		if (rc) {
			job_fail(&r->jobs[started], -rc, "thread: %s", strerror(rc));
			atomic_fetch_sub(&r->running, o->queues - started);
			break;
		}
	}
	bool printed = false;
	while (atomic_load(&r->running) > 0) {
		usleep(20000);
		uint64_t now = cli_now_ns();
		if (interrupted)
			atomic_store(&r->stop, true);
		if (phase == PHASE_MAIN && o->runtime_ms &&
		    now - start >= o->runtime_ms * 1000000ull)
			atomic_store(&r->stop, true);
		if (progress && now - last >= 1000000000ull) {
			progress_line(r, (double)(now - start) / 1e9, last_ops, last_bytes,
				      (double)(now - last) / 1e9, tty);
			last = now;
			printed = true;
		}
	}
	/* From the first job's start to the last one's end: not the polling above. */
	uint64_t first = UINT64_MAX, end = 0;
	for (unsigned int i = 0; i < started; i++) {
		pthread_join(r->jobs[i].thread, NULL);
		if (r->jobs[i].start_ns < first)
			first = r->jobs[i].start_ns;
		if (r->jobs[i].end_ns > end)
			end = r->jobs[i].end_ns;
	}
	double secs = end > first ? (double)(end - first) / 1e9 : 0;
	if (printed && tty)
		fputc('\n', stderr);
	return secs;
}

/* One FLUSH on queue 0 after writing, when the device takes it. */
static int flush_device(struct run *r)
{
	struct job *j = &r->jobs[0];
	struct vt_blk_completion c;

	if (!r->info.flush)
		return 0;
	int rc = vt_blk_driver_queue_flush(j->q.engine, NULL);
	if (rc == 0)
		rc = vt_vu_frontend_kick(r->d.fe, 0);
	while (rc == 0) {
		rc = cli_blk_queue_reap(&r->d, &j->q, &c, 1, (int)r->o.c.timeout_ms);
		if (rc == 1) {
			rc = c.result;
			break;
		}
		/* The FLUSH is in the ring: the new back-end takes it. */
		if (r->o.reconnect && connection_lost(rc))
			rc = reconnect_now(r);
	}
	if (rc < 0)
		cli_err("FLUSH: %s", rc == -EIO ? "VIRTIO_BLK_S_IOERR" : cli_blk_error(rc));
	return rc;
}

static void teardown(struct run *r)
{
	if (r->d.fe)
		vt_vu_frontend_reset(r->d.fe, NULL, NULL);
	if (r->jobs) {
		for (unsigned int i = 0; i < r->o.queues; i++) {
			struct job *j = &r->jobs[i];
			if (j->slots && r->d.shm)
				for (unsigned int k = 0; k < r->o.iodepth; k++)
					if (j->slots[k].buf)
						vt_shm_release(r->d.shm, j->slots[k].buf, r->o.bs);
			free(j->slots);
			free(j->free_slots);
			free(j->done);
			cli_blk_queue_close(&j->q);
		}
		free(r->jobs);
	}
	free(r->written);
	cli_close(&r->d);
}

int cli_blk_main(int argc, char **argv)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return CLI_EXIT_FAIL;
	if (parse_args(argc, argv, &r->o) < 0) {
		free(r);
		return CLI_EXIT_USAGE;
	}
	struct blk_options *o = &r->o;
	int status = CLI_EXIT_FAIL;
	pthread_mutex_init(&r->meet_lock, NULL);
	pthread_cond_init(&r->meet_cond, NULL);

	/* Jobs before setup (it opens a queue per job); their shares once the span is known. */
	r->jobs = calloc(o->queues, sizeof(*r->jobs));
	if (!r->jobs || setup(r) < 0)
		goto out;
	jobs_init(r);
	if (jobs_alloc(r) < 0)
		goto out;
	if (o->verify && has_writes(o->rw)) {
		r->written = calloc((r->blocks + 63) / 64, sizeof(*r->written));
		if (!r->written)
			goto out;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	double secs = run_phase(r, PHASE_MAIN);

	struct hist all[3];
	uint64_t bytes[3] = { 0, 0, 0 }, io_errors = 0, checked[2] = { 0, 0 }, mismatches = 0;
	const char *fatal = NULL;
	for (int d = 0; d < 3; d++)
		hist_init(&all[d]);
	for (unsigned int i = 0; i < o->queues; i++) {
		struct job *j = &r->jobs[i];
		for (int d = 0; d < 2; d++) {
			hist_merge(&all[d], &j->lat[d]);
			hist_merge(&all[2], &j->lat[d]);
			bytes[d] += j->bytes[d];
			bytes[2] += j->bytes[d];
		}
		if (j->fatal && !fatal)
			fatal = j->fatal_msg;
	}
	bool wrote = all[1].count > 0;
	int flush_rc = 0;
	if (!fatal && wrote && o->flush)
		flush_rc = flush_device(r);
	double verify_secs = 0;
	if (!fatal && r->written && !interrupted)
		verify_secs = run_phase(r, PHASE_VERIFY);
	for (unsigned int i = 0; i < o->queues; i++) {
		struct job *j = &r->jobs[i];
		io_errors += j->io_errors;
		checked[0] += j->verify_checked[0];
		checked[1] += j->verify_checked[1];
		mismatches += j->verify_errors;
		if (j->fatal && !fatal)
			fatal = j->fatal_msg;
	}
	if (fatal)
		cli_err("%s", fatal);

	if (o->json) {
		char names[1024];
		vt_features_str(VIRTIO_ID_BLOCK, vt_vu_frontend_features(r->d.fe), names,
				sizeof(names));
		printf("{\"rw\":\"%s\",\"bs\":%" PRIu64 ",\"iodepth\":%u,\"queues\":%u,"
		       "\"span\":%" PRIu64 ",\"dma\":\"%s\",\"restricted\":%s,\"features\":",
		       rw_names[o->rw], o->bs, o->iodepth, o->queues, r->blocks * o->bs,
		       vt_dma_mode_name(vt_dma_mode(vt_vu_frontend_dma(r->d.fe))),
		       o->c.restricted ? "true" : "false");
		json_string(names);
		printf(",\"seconds\":%.3f,", secs);
		print_lat_json("all", &all[2], bytes[2], secs);
		putchar(',');
		print_lat_json("read", &all[0], bytes[0], secs);
		putchar(',');
		print_lat_json("write", &all[1], bytes[1], secs);
		printf(",\"io_errors\":%" PRIu64 ",\"verify\":{\"enabled\":%s,\"checked\":%" PRIu64
		       ",\"read_back\":%" PRIu64 ",\"mismatches\":%" PRIu64 ",\"seed\":%" PRIu64
		       "},\"flush\":%s,\"reconnects\":%u,\"error\":",
		       io_errors, o->verify ? "true" : "false", checked[0], checked[1], mismatches,
		       o->seed, flush_rc ? "false" : "true", r->reconnects);
		if (fatal)
			json_string(fatal);
		else
			printf("null");
		printf("}\n");
	} else {
		printf("blk %s: bs %" PRIu64 ", iodepth %u, %u queue(s), span %" PRIu64
		       " bytes, dma %s: %" PRIu64 " requests in %.2f s%s\n",
		       rw_names[o->rw], o->bs, o->iodepth, o->queues, r->blocks * o->bs,
		       vt_dma_mode_name(vt_dma_mode(vt_vu_frontend_dma(r->d.fe))), all[2].count,
		       secs, interrupted ? " (interrupted)" : "");
		print_lat_text("read", &all[0], bytes[0], secs);
		print_lat_text("write", &all[1], bytes[1], secs);
		if (all[0].count && all[1].count)
			print_lat_text("all", &all[2], bytes[2], secs);
		printf("  errors: %" PRIu64 " I/O error(s)%s\n", io_errors,
		       fatal ? ", the run failed" : "");
		if (r->reconnects)
			printf("  reconnects: %u (the back-end went away and came back)\n",
			       r->reconnects);
		if (o->verify && r->written)
			printf("  verify: %" PRIu64 " read(s) checked, %" PRIu64
			       " written block(s) read back in %.2f s, %" PRIu64
			       " mismatch(es) (seed %" PRIu64 ")\n",
			       checked[0], checked[1], verify_secs, mismatches, o->seed);
		else if (o->verify)
			printf("  verify: %" PRIu64 " read(s) checked, %" PRIu64
			       " mismatch(es) (seed %" PRIu64 ")\n",
			       checked[0], mismatches, o->seed);
	}
	fflush(stdout);
	status = 0;
	if (fatal || flush_rc < 0 || mismatches || (o->verify && io_errors))
		status = CLI_EXIT_FAIL;
out:
	teardown(r);
	pthread_cond_destroy(&r->meet_cond);
	pthread_mutex_destroy(&r->meet_lock);
	free(r);
	return status;
}
