/* SPDX-License-Identifier: Apache-2.0 */
#include "hostmem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* /proc/meminfo is ~1.5 KiB, /proc/PID/status ~1.5 KiB; 64 KiB leaves room for any kernel. */
#define PROC_FILE_MAX (64 * 1024)

/* Reads a whole small file into a NUL-terminated heap buffer. -EFBIG at PROC_FILE_MAX or more. */
static int read_small_file(const char *path, char **ret_buf) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        /* PROC_FILE_MAX - 1: a file of PROC_FILE_MAX bytes or more is refused. */
        return read_full_fd(fd, PROC_FILE_MAX - 1, ret_buf, NULL);
}

/* Parses a decimal number at *p, advancing it. Leading blanks skipped. */
static int parse_number(const char **p, uint64_t *ret) {
        const char *s = *p;
        uint64_t v = 0;

        while (*s == ' ' || *s == '\t')
                s++;
        if (*s < '0' || *s > '9')
                return -EINVAL;
        for (; *s >= '0' && *s <= '9'; s++) {
                if (v > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *p = s;
        *ret = v;
        return 0;
}

static const struct {
        const char *key;
        size_t offset;
} meminfo_fields[] = {
        { "MemTotal", offsetof(struct hostmem_meminfo, total) },
        { "MemFree", offsetof(struct hostmem_meminfo, free) },
        { "MemAvailable", offsetof(struct hostmem_meminfo, available) },
        { "Buffers", offsetof(struct hostmem_meminfo, buffers) },
        { "Cached", offsetof(struct hostmem_meminfo, cached) },
        { "SwapTotal", offsetof(struct hostmem_meminfo, swap_total) },
        { "SwapFree", offsetof(struct hostmem_meminfo, swap_free) },
};

/* Parses "Key:   123 kB" (the value of one line) into bytes. */
static int meminfo_value(const char *p, uint64_t *ret) {
        uint64_t kib;
        int r = parse_number(&p, &kib);
        if (r < 0)
                return r;
        while (*p == ' ')
                p++;
        if (strncmp(p, "kB", 2) != 0)
                return -EINVAL;
        if (kib > UINT64_MAX / 1024)
                return -ERANGE;
        *ret = kib * 1024;
        return 0;
}

int hostmem_parse_meminfo(const char *buf, struct hostmem_meminfo *ret) {
        struct hostmem_meminfo m = { 0 };
        unsigned seen = 0;

        for (const char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                const char *colon = strchr(line, ':');
                const char *eol = strchrnul(line, '\n');
                if (!colon || colon > eol)
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(meminfo_fields); i++) {
                        size_t klen = strlen(meminfo_fields[i].key);
                        if ((size_t) (colon - line) != klen || strncmp(line, meminfo_fields[i].key, klen) != 0)
                                continue;
                        int r = meminfo_value(colon + 1, (uint64_t *) ((char *) &m + meminfo_fields[i].offset));
                        if (r < 0)
                                return r;
                        seen |= 1u << i;
                }
        }
        if ((seen & 3u) != 3u)     /* MemTotal and MemFree are required */
                return -EINVAL;
        m.has_available = seen & 4u;
        if (!m.has_available)
                m.available = m.free + m.buffers + m.cached;
        *ret = m;
        return 0;
}

int hostmem_read_meminfo(const char *path, struct hostmem_meminfo *ret, struct ppn_error *err) {
        _cleanup_free_ char *buf = NULL;
        int r = read_small_file(path, &buf);
        if (r < 0)
                return ppn_error_set(err, r, "reading %s: %s", path, strerror(-r));
        r = hostmem_parse_meminfo(buf, ret);
        if (r < 0)
                return ppn_error_set(err, r, "parsing %s: no MemTotal/MemFree or a malformed value", path);
        return 0;
}

int hostmem_parse_vmstat_alloc(const char *buf, uint64_t *ret_pages) {
        uint64_t sum = 0, v;
        bool seen = false;

        for (const char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                if (strncmp(line, "pgalloc_", 8) != 0)
                        continue;
                const char *p = line + 8 + strcspn(line + 8, " \n");
                if (*p != ' ' || parse_number(&p, &v) < 0 || (*p != '\n' && *p != '\0') || v > UINT64_MAX - sum)
                        return -EINVAL;
                sum += v;
                seen = true;
        }
        if (!seen)
                return -ENODATA;
        *ret_pages = sum;
        return 0;
}

int hostmem_read_vmstat_alloc(const char *path, uint64_t *ret_pages, struct ppn_error *err) {
        _cleanup_free_ char *buf = NULL;
        int r = read_small_file(path, &buf);
        if (r < 0)
                return ppn_error_set(err, r, "reading %s: %s", path, strerror(-r));
        r = hostmem_parse_vmstat_alloc(buf, ret_pages);
        if (r < 0)
                return ppn_error_set(err, r, "parsing %s: %s", path,
                                     r == -ENODATA ? "no pgalloc_ counters" : "a malformed pgalloc_ value");
        return 0;
}

/* Parses the fields after "some"/"full": avg10=X avg60=X avg300=X total=N. */
static int psi_parse_line(const char *p, struct hostmem_psi_line *ret) {
        struct hostmem_psi_line l = { .valid = true };
        int n = 0;

        if (sscanf(p, " avg10=%lf avg60=%lf avg300=%lf total=%" SCNu64 "%n",
                   &l.avg10, &l.avg60, &l.avg300, &l.total_usec, &n) != 4 || n == 0)
                return -EINVAL;
        if (l.avg10 < 0 || l.avg10 > 100 || l.avg60 < 0 || l.avg60 > 100 || l.avg300 < 0 || l.avg300 > 100)
                return -EINVAL;
        *ret = l;
        return 0;
}

int hostmem_parse_psi(const char *buf, struct hostmem_psi *ret) {
        struct hostmem_psi psi = { 0 };

        for (const char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                struct hostmem_psi_line *l = NULL;
                if (strncmp(line, "some ", 5) == 0)
                        l = &psi.some;
                else if (strncmp(line, "full ", 5) == 0)
                        l = &psi.full;
                else
                        continue;
                int r = psi_parse_line(line + 4, l);
                if (r < 0)
                        return r;
        }
        if (!psi.some.valid)
                return -EINVAL;
        *ret = psi;
        return 0;
}

int hostmem_read_psi(const char *path, struct hostmem_psi *ret, struct ppn_error *err) {
        _cleanup_free_ char *buf = NULL;
        int r = read_small_file(path, &buf);
        if (r == -ENOENT || r == -EOPNOTSUPP) {
                log_debug("%s: %s; memory pressure (PSI) not available", path, strerror(-r));
                return 0;
        }
        if (r < 0)
                return ppn_error_set(err, r, "reading %s: %s", path, strerror(-r));
        r = hostmem_parse_psi(buf, ret);
        if (r < 0)
                return ppn_error_set(err, r, "parsing %s: expected \"some avg10=… avg60=… avg300=… total=…\"", path);
        return 1;
}

int hostmem_parse_pid_status_rss(const char *buf, uint64_t *ret_bytes) {
        for (const char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
                if (strncmp(line, "VmRSS:", 6) == 0)
                        return meminfo_value(line + 6, ret_bytes);
        return -ENODATA;
}

static int read_pid_file(const char *proc_root, pid_t pid, const char *name, char **ret_buf, struct ppn_error *err) {
        char path[4096];
        int r;

        if (snprintf(path, sizeof(path), "%s/%d/%s", proc_root, (int) pid, name) >= (int) sizeof(path))
                return ppn_error_set(err, -ENAMETOOLONG, "proc root %s: path too long", proc_root);
        r = read_small_file(path, ret_buf);
        if (r == -ENOENT)
                return ppn_error_set(err, -ESRCH, "process %d: %s missing (the process exited?)", (int) pid, path);
        if (r < 0)
                return ppn_error_set(err, r, "reading %s: %s", path, strerror(-r));
        return 0;
}

int hostmem_read_pid_rss(const char *proc_root, pid_t pid, uint64_t *ret_bytes, struct ppn_error *err) {
        _cleanup_free_ char *buf = NULL;
        int r = read_pid_file(proc_root, pid, "status", &buf, err);
        if (r < 0)
                return r;
        r = hostmem_parse_pid_status_rss(buf, ret_bytes);
        if (r < 0)
                return ppn_error_set(err, r, "process %d: no valid VmRSS in %s/%d/status", (int) pid, proc_root, (int) pid);
        return 0;
}
