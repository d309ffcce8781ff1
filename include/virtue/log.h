/* SPDX-License-Identifier: MIT */
/*
 * Logging hook. The library never prints on its own behalf except through this hook; every object
 * that can log takes a `const struct vt_log *` at creation (NULL: errors and warnings to stderr).
 */
#ifndef VIRTUE_LOG_H
#define VIRTUE_LOG_H

enum vt_log_level {
	VT_LOG_ERROR = 0,
	VT_LOG_WARN = 1,
	VT_LOG_INFO = 2,
	VT_LOG_DEBUG = 3,
};

typedef void (*vt_log_fn)(void *opaque, enum vt_log_level level, const char *message);

struct vt_log {
	vt_log_fn fn; /* NULL: write to stderr */
	void *opaque;
	enum vt_log_level max_level; /* messages above this level are dropped */
};

/* Formats and emits one line (no trailing newline needed) through @log. */
void vt_log(const struct vt_log *log, enum vt_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
