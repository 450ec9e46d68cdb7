/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Small shared helpers: cleanup attributes, the error struct that carries words to the
 * caller, size parsing/formatting, and one read loop. No other I/O except the fd/FILE
 * destructors.
 *
 * Conventions (docs/design.md): functions return -errno; out-parameters are ret_*, last, and are
 * written only on success; destructors accept NULL.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

/* Time units, as unsigned 64-bit counts like the clocks below (cast where a signed sum needs them). */
#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define NSEC_PER_USEC UINT64_C(1000)
#define NSEC_PER_SEC UINT64_C(1000000000)
#define NSEC_PER_MSEC UINT64_C(1000000)

static inline void freep(void *p) { free(*(void **) p); }
static inline void closep(int *fd) { if (*fd >= 0) { int e = errno; close(*fd); errno = e; } }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }

/* a + b, at most UINT64_MAX. */
static inline uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hand ownership out of a cleanup-attributed local: *ret = TAKE_PTR(x); */
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) ({ int _t = (fd); (fd) = -1; _t; })

/* Words for the user about a failure. Optional everywhere: pass NULL when only the code matters. */
struct ppn_error {
        int code;          /* negative errno, 0 if unset */
        char msg[512];
};

/* Sets err (if non-NULL) and returns -abs(code), so callers can `return ppn_error_set(...)`. */
int ppn_error_set(struct ppn_error *err, int code, const char *fmt, ...) _printf_(3, 4);
/* Prefixes an existing message: "prefix: old message". Returns err->code (or code if err NULL). */
int ppn_error_prefix(struct ppn_error *err, int code, const char *fmt, ...) _printf_(3, 4);

/*
 * Parses a size: plain bytes ("1048576"), or a number with a binary suffix K, M, G, T
 * (also "KiB", "MiB", "GiB", "TiB", "k", "m", "g"; "B" alone means bytes).
 * Returns 0 and *ret_bytes, or -EINVAL (not a size) / -ERANGE (overflows 64 bits).
 */
int parse_size(const char *s, uint64_t *ret_bytes);

/* Formats bytes in the largest binary unit that keeps it exact to one decimal ("512M",
 * "1.5G", "4096" for odd byte counts). Returns buf. */
char *format_size(uint64_t bytes, char *buf, size_t len);
#define FORMAT_SIZE_MAX 32

/* n in decimal at buf (room for 20 digits, no NUL written); returns the end. No printf: for text
 * built many times a second (sizes, the id of every QMP command). */
char *put_uint(char *buf, uint64_t n);

/* Parses a decimal unsigned integer, whole string. 0 or -EINVAL/-ERANGE. */
int parse_u64(const char *s, uint64_t *ret);

/* NAME in the folder of PATH ("dir/file" -> "dir/NAME", "file" -> "NAME"). NULL on -ENOMEM. */
char *path_beside(const char *path, const char *name);

/* Copies s into buf cut to at most width display columns (UTF-8 code points), "…" (U+2026)
 * marking a cut: width - 1 columns of s and the mark. Returns buf. The same cut in ppnctl's
 * tables and in ppnd's brief status (a reason as the table will show it). */
const char *text_fit(const char *s, size_t width, char *buf, size_t len);

/* Monotonic clock in microseconds (CLOCK_MONOTONIC); wall clock in microseconds. */
uint64_t now_usec(void);
uint64_t now_realtime_usec(void);

/* Parses a duration: "30" (seconds), "500ms", "30s", "10m", "2h", "1d". Microseconds out. */
int parse_duration(const char *s, uint64_t *ret_usec);

/*
 * Reads fd to end of file into a NUL-terminated heap buffer (grown from 4 KiB, so small files
 * cost little), retrying on EINTR. Returns 0 with *ret and *ret_len (bytes read, NUL not
 * counted; ret_len may be NULL), -EFBIG if the file holds more than max bytes, or -errno.
 */
int read_full_fd(int fd, size_t max, char **ret, size_t *ret_len);

/*
 * A shared library loaded when first needed instead of at program start: libvirt (virtlink.c)
 * and libcurl (etcd.c) pull in some sixty libraries between them, which cost every ppnctl
 * command ~40 ms of CPU in the dynamic loader although only a few commands use them.
 * syms[i].slot points to a function pointer that receives the symbol syms[i].name.
 * 0, or -ENOENT with the loader's words in err (library or symbol missing): the slots are then
 * partly written and must not be used.
 */
struct dl_symbol {
        const char *name;
        void *slot;
};
int dl_load(const char *soname, const struct dl_symbol *syms, size_t n, struct ppn_error *err);
/* One dl_symbol for a function f, stored in the pointer p->f (typed __typeof__(f) *). */
#define DL_SYMBOL(p, f) { #f, &(p)->f }
