/* SPDX-License-Identifier: Apache-2.0 */
#include "util.h"

#include <dlfcn.h>

#include <ctype.h>
#include <stdio.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

_printf_(3, 0) static int error_vset(struct ppn_error *err, int code, const char *fmt, va_list ap) {
        code = code > 0 ? -code : code;
        if (code == 0)
                code = -EIO;
        if (err) {
                err->code = code;
                vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        }
        return code;
}

int ppn_error_set(struct ppn_error *err, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        code = error_vset(err, code, fmt, ap);
        va_end(ap);
        return code;
}

int ppn_error_prefix(struct ppn_error *err, int code, const char *fmt, ...) {
        char prefix[256], old[sizeof(err->msg)];
        va_list ap;

        if (!err)
                return code > 0 ? -code : code;
        if (err->code == 0)
                err->code = code > 0 ? -code : (code ? code : -EIO);
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof(old));
        /* A message longer than msg[] keeps its head: the prefix says where it failed. */
        if (snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old) >= (int) sizeof(err->msg))
                err->msg[sizeof(err->msg) - 1] = '\0';
        return err->code;
}

int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

static const struct {
        const char *suffix;
        unsigned shift;
} size_suffixes[] = {
        { "", 0 }, { "B", 0 },
        { "K", 10 }, { "k", 10 }, { "KiB", 10 }, { "KB", 10 },
        { "M", 20 }, { "m", 20 }, { "MiB", 20 }, { "MB", 20 },
        { "G", 30 }, { "g", 30 }, { "GiB", 30 }, { "GB", 30 },
        { "T", 40 }, { "t", 40 }, { "TiB", 40 }, { "TB", 40 },
};

int parse_size(const char *s, uint64_t *ret_bytes) {
        char *end;
        unsigned long long v;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        for (size_t i = 0; i < ELEMENTSOF(size_suffixes); i++) {
                unsigned shift = size_suffixes[i].shift;
                if (strcmp(end, size_suffixes[i].suffix) != 0)
                        continue;
                if (shift && v > (UINT64_MAX >> shift))
                        return -ERANGE;
                *ret_bytes = (uint64_t) v << shift;
                return 0;
        }
        return -EINVAL;
}

char *put_uint(char *buf, uint64_t n) {
        char tmp[20];
        size_t k = 0;

        do
                tmp[k++] = (char) ('0' + n % 10);
        while ((n /= 10) > 0);
        while (k > 0)
                *buf++ = tmp[--k];
        return buf;
}

/* Copies text of n bytes into buf as snprintf() would (cut to len - 1, terminated). */
static void put_text(char *buf, size_t len, const char *text, size_t n) {
        if (len == 0)
                return;
        if (n > len - 1)
                n = len - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
}

/* bytes/unit with one decimal, rounded as printf("%.1f") rounds the exact quotient (to nearest,
 * ties to even), without floating point or printf: the policy formats sizes for every VM every
 * tick. With tenths = false, the whole number byt/unit. */
static void put_size(char *buf, size_t len, uint64_t bytes, unsigned shift, char unit, bool tenths) {
        uint64_t u = UINT64_C(1) << shift, t = (bytes * 10) >> shift, rem = (bytes * 10) & (u - 1);
        char tmp[32], *e;

        if (!tenths) {
                e = put_uint(tmp, bytes >> shift);
                *e++ = unit;
                put_text(buf, len, tmp, (size_t) (e - tmp));
                return;
        }
        if (rem > u / 2 || (rem == u / 2 && (t & 1)))
                t++;
        e = put_uint(tmp, t / 10);
        *e++ = '.';
        *e++ = (char) ('0' + t % 10);
        *e++ = unit;
        put_text(buf, len, tmp, (size_t) (e - tmp));
}

char *format_size(uint64_t bytes, char *buf, size_t len) {
        static const char units[] = "KMGT";
        char tmp[24];

        for (int i = 3; i >= 0; i--) {
                uint64_t unit = UINT64_C(1) << (10 * (i + 1));
                if (bytes < unit)
                        continue;
                if (bytes % unit == 0)
                        put_size(buf, len, bytes, (unsigned) (10 * (i + 1)), units[i], false);
                else if (((bytes * 10) % unit == 0 || bytes >= 10 * unit) && bytes < (UINT64_C(1) << 59))
                        put_size(buf, len, bytes, (unsigned) (10 * (i + 1)), units[i], true);
                else if ((bytes * 10) % unit == 0 || bytes >= 10 * unit)
                        snprintf(buf, len, "%.1f%c", (double) bytes / (double) unit, units[i]);
                else
                        continue;
                return buf;
        }
        put_text(buf, len, tmp, (size_t) (put_uint(tmp, bytes) - tmp));
        return buf;
}

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

char *path_beside(const char *path, const char *name) {
        const char *slash = strrchr(path, '/');
        char *p = NULL;
        int n = slash ? asprintf(&p, "%.*s/%s", (int) (slash - path), path, name) : asprintf(&p, "%s", name);
        return n < 0 ? NULL : p;
}

uint64_t now_usec(void) { return clock_usec(CLOCK_MONOTONIC); }
uint64_t now_realtime_usec(void) { return clock_usec(CLOCK_REALTIME); }

int parse_duration(const char *s, uint64_t *ret_usec) {
        static const struct { const char *suffix; uint64_t mult; } units[] = {
                { "", USEC_PER_SEC }, { "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC }, { "m", 60 * USEC_PER_SEC },
                { "min", 60 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC }, { "d", 86400 * USEC_PER_SEC },
        };
        char *end;
        unsigned long long v;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                if (strcmp(end, units[i].suffix) != 0)
                        continue;
                if (v > UINT64_MAX / units[i].mult)
                        return -ERANGE;
                *ret_usec = v * units[i].mult;
                return 0;
        }
        return -EINVAL;
}

/* Room for max + 1 bytes (one more than allowed, to see "too large") and the NUL. */
static int grow(char **buf, size_t *size, size_t max) {
        size_t want = *size ? *size * 2 : 4096;
        char *b;

        if (want > max + 2)
                want = max + 2;
        b = realloc(*buf, want);
        if (!b)
                return -ENOMEM;
        *buf = b;
        *size = want;
        return 0;
}

int read_full_fd(int fd, size_t max, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, n = 0;

        for (;;) {
                ssize_t k;

                if (n + 1 >= size && grow(&buf, &size, max) < 0)
                        return -ENOMEM;
                k = read(fd, buf + n, size - n - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max)
                        return -EFBIG;
        }
        buf[n] = '\0';
        if (ret_len)
                *ret_len = n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int dl_load(const char *soname, const struct dl_symbol *syms, size_t n, struct ppn_error *err) {
        void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

        if (!h)
                return ppn_error_set(err, -ENOENT, "cannot load %s: %s", soname, dlerror());
        for (size_t i = 0; i < n; i++) {
                void *f = dlsym(h, syms[i].name);
                if (!f)
                        /* The handle stays open: a library is loaded once and never unloaded. */
                        return ppn_error_set(err, -ENOENT, "cannot load %s: no symbol %s", soname, syms[i].name);
                memcpy(syms[i].slot, &f, sizeof(f));
        }
        return 0;
}

const char *text_fit(const char *s, size_t width, char *buf, size_t len) {
        size_t cols = 0, i = 0, cut = 0;

        /* Count code points (UTF-8 lead bytes); remember where width - 1 columns end. */
        for (; s[i]; i++) {
                if (((unsigned char) s[i] & 0xC0) == 0x80)
                        continue;
                if (cols == width - 1)
                        cut = i;
                cols++;
        }
        if (cols <= width || width == 0) {
                snprintf(buf, len, "%s", width == 0 ? "" : s);
                return buf;
        }
        snprintf(buf, len, "%.*s\xe2\x80\xa6", (int) cut, s);
        return buf;
}
