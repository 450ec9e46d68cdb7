/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Logging to stderr with syslog levels. When stderr is the journal (JOURNAL_STREAM set), lines
 * carry the "<N>" level prefix so journald keeps the priority. Library code logs at debug only
 * (full QMP JSON, file paths tried); the daemon and CLI decide what the user reads.
 */

#include <syslog.h>

#include "util.h"

void log_set_max_level(int level);
int log_get_max_level(void);
/* Parses "debug", "info", "notice", "warning", "err"/"error" into a syslog level. */
int log_level_from_string(const char *s);
void log_set_ident(const char *ident);

/* Returns -abs(err) if err != 0, else 0, so callers can `return log_error_errno(r, ...)`. */
int log_internal(int level, int err, const char *file, int line, const char *fmt, ...) _printf_(5, 6);

#define log_full_errno(level, err, ...) log_internal(level, err, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)
