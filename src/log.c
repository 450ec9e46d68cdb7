/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"

#include <stdlib.h>
#include <string.h>

static int max_level = LOG_INFO;
static const char *ident = NULL;

void log_set_max_level(int level) { max_level = level; }
int log_get_max_level(void) { return max_level; }
void log_set_ident(const char *i) { ident = i; }

int log_level_from_string(const char *s) {
        static const struct { const char *name; int level; } table[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "warn", LOG_WARNING }, { "err", LOG_ERR },
                { "error", LOG_ERR }, { "crit", LOG_CRIT },
        };
        for (size_t i = 0; s && i < ELEMENTSOF(table); i++)
                if (strcmp(s, table[i].name) == 0)
                        return table[i].level;
        return -EINVAL;
}

int log_internal(int level, int err, const char *file, int line, const char *fmt, ...) {
        int saved = errno;
        va_list ap;

        err = err < 0 ? -err : err;
        if (level <= max_level) {
                static int journal = -1;
                if (journal < 0)
                        journal = getenv("JOURNAL_STREAM") != NULL;
                if (journal)
                        fprintf(stderr, "<%d>", level);
                else if (ident)
                        fprintf(stderr, "%s: ", ident);
                if (max_level >= LOG_DEBUG)
                        fprintf(stderr, "(%s:%d) ", file, line);
                errno = err;
                va_start(ap, fmt);
                vfprintf(stderr, fmt, ap);
                va_end(ap);
                fputc('\n', stderr);
        }
        errno = saved;
        return -err;
}
