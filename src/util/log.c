/* SPDX-License-Identifier: MIT */
/* The logging hook's one implementation: format, filter by level, hand to the sink. */
#include <stdarg.h>
#include <stdio.h>

#include <virtue/log.h>

static const char *const level_names[] = { "error", "warning", "info", "debug" };

void vt_log(const struct vt_log *log, enum vt_log_level level, const char *fmt, ...)
{
	enum vt_log_level max = log ? log->max_level : VT_LOG_WARN;
	if (level > max)
		return;

	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);

	if (log && log->fn) {
		log->fn(log->opaque, level, message);
		return;
	}
	unsigned int idx = (unsigned int)level < 4 ? (unsigned int)level : 3;
	fprintf(stderr, "virtue: %s: %s\n", level_names[idx], message);
}
