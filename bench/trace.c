/* SPDX-License-Identifier: Apache-2.0 */
#include "trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_MAX_VMS 4096

struct trace *trace_free(struct trace *t) {
        if (!t)
                return NULL;
        free(t->vms);
        free(t->ws_mib);
        free(t->io_mib);
        free(t);
        return NULL;
}

static void trace_freep(struct trace **t) { trace_free(*t); }

/* key=value with a MiB or plain number; 0 or -EINVAL. */
static int field_u64(const char *line, const char *key, uint64_t scale, uint64_t *ret) {
        char pat[48];
        snprintf(pat, sizeof pat, " %s=", key);
        const char *p = strstr(line, pat);
        if (!p)
                return -EINVAL;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p + strlen(pat), &end, 10);
        if (errno || (*end && *end != ' ' && *end != '\n'))
                return -EINVAL;
        *ret = (uint64_t) v * scale;
        return 0;
}

static int field_str(const char *line, const char *key, char *buf, size_t len) {
        char pat[48];
        snprintf(pat, sizeof pat, " %s=", key);
        const char *p = strstr(line, pat);
        if (!p)
                return -EINVAL;
        p += strlen(pat);
        size_t n = strcspn(p, " \n");
        if (n == 0 || n >= len)
                return -EINVAL;
        memcpy(buf, p, n);
        buf[n] = 0;
        return 0;
}

static int parse_vm(struct trace *t, const char *line) {
        if (t->n_vms >= TRACE_MAX_VMS)
                return -EINVAL;
        struct trace_vm *v = realloc(t->vms, (t->n_vms + 1) * sizeof *v);
        if (!v)
                return -ENOMEM;
        t->vms = v;
        v = &t->vms[t->n_vms];
        *v = (struct trace_vm) {};
        if (field_str(line, "name", v->name, sizeof v->name) < 0 ||
            field_str(line, "kind", v->kind, sizeof v->kind) < 0 ||
            field_u64(line, "max_mib", MIB, &v->max) < 0 ||
            field_u64(line, "min_mib", MIB, &v->min) < 0 ||
            field_u64(line, "shares", 1, &v->shares) < 0 ||
            field_u64(line, "cache_mib", MIB, &v->cache) < 0 ||
            field_u64(line, "init_mib", MIB, &v->init) < 0 ||
            v->min > v->max || v->init > v->max || v->init < v->min)
                return -EINVAL;
        if (strstr(line, " files_mib=") && field_u64(line, "files_mib", MIB, &v->files) < 0)
                return -EINVAL;
        t->n_vms++;
        return 0;
}

static int parse_row(struct trace *t, const char *line) {
        if (t->n_vms == 0)
                return -EINVAL;
        uint32_t *ws = realloc(t->ws_mib, (t->seconds + 1) * t->n_vms * sizeof *ws);
        if (!ws)
                return -ENOMEM;
        t->ws_mib = ws;
        uint32_t *io = realloc(t->io_mib, (t->seconds + 1) * t->n_vms * sizeof *io);
        if (!io)
                return -ENOMEM;
        t->io_mib = io;
        char *end;
        errno = 0;
        unsigned long s = strtoul(line, &end, 10);
        if (errno || s != t->seconds)
                return -EINVAL;
        for (size_t i = 0; i < t->n_vms; i++) {
                if (*end != ',')
                        return -EINVAL;
                const char *cell = end + 1;
                unsigned long v = strtoul(cell, &end, 10), r = 0;
                if (end == cell || v > UINT32_MAX)
                        return -EINVAL;
                if (*end == ':') {
                        cell = end + 1;
                        r = strtoul(cell, &end, 10);
                        if (end == cell || r > UINT32_MAX)
                                return -EINVAL;
                }
                ws[t->seconds * t->n_vms + i] = (uint32_t) v;
                io[t->seconds * t->n_vms + i] = (uint32_t) r;
        }
        if (*end && *end != '\n')
                return -EINVAL;
        t->seconds++;
        return 0;
}

static int parse_line(struct trace *t, const char *line) {
        if (line[0] == '#' || line[0] == '\n')
                return 0;
        if (strncmp(line, "node ", 5) == 0)
                return (field_u64(line, "physical_mib", MIB, &t->physical) < 0 ||
                        field_u64(line, "reserve_mib", MIB, &t->reserve) < 0 ||
                        field_u64(line, "base_mib", MIB, &t->base) < 0) ? -EINVAL : 0;
        if (strncmp(line, "vm ", 3) == 0)
                return parse_vm(t, line);
        if (strncmp(line, "t,", 2) == 0)
                return 0;
        return parse_row(t, line);
}

static void set_name(struct trace *t, const char *path) {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        size_t n = strcspn(b, ".");
        if (n >= sizeof t->name)
                n = sizeof t->name - 1;
        memcpy(t->name, b, n);
        t->name[n] = 0;
}

int trace_load(const char *path, struct trace **ret, struct ppn_error *err) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return ppn_error_set(err, -errno, "cannot open trace %s: %m", path);
        _cleanup_(trace_freep) struct trace *t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        set_name(t, path);
        char line[65536];
        unsigned lineno = 0;
        while (fgets(line, sizeof line, f)) {
                lineno++;
                int r = parse_line(t, line);
                if (r < 0)
                        return ppn_error_set(err, r, "%s:%u: not a trace line (see bench/trace.h)",
                                             path, lineno);
        }
        if (t->n_vms == 0 || t->seconds == 0 || t->physical <= t->reserve)
                return ppn_error_set(err, -EINVAL, "%s: no VMs, no samples or no node line", path);
        *ret = TAKE_PTR(t);
        return 0;
}

uint64_t trace_ws(const struct trace *t, size_t i, size_t s) {
        if (s >= t->seconds)
                s = t->seconds - 1;
        return (uint64_t) t->ws_mib[s * t->n_vms + i] * MIB;
}

uint64_t trace_io(const struct trace *t, size_t i, size_t s) {
        if (!t->io_mib)
                return 0;
        if (s >= t->seconds)
                s = t->seconds - 1;
        return (uint64_t) t->io_mib[s * t->n_vms + i] * MIB;
}
