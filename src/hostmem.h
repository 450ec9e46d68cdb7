/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Host-side memory signals: /proc/meminfo, memory PSI (/proc/pressure/memory), the host's
 * allocations (/proc/vmstat), and one process's RSS (/proc/PID/status).
 *
 * Every format has a pure parser over a NUL-terminated buffer (tests feed literals) and a
 * reader that takes the path (or the proc root) so tests point it at tests/fixtures/proc/.
 * Conventions: return 0 or -errno; ret_* written only on success; errors that need words go
 * into the optional struct ppn_error. No logging above debug.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* All sizes in bytes (the kernel prints kB = KiB). */
struct hostmem_meminfo {
        uint64_t total;          /* MemTotal */
        uint64_t free;           /* MemFree */
        uint64_t available;      /* MemAvailable (kernel ≥ 3.14); see has_available */
        uint64_t buffers;        /* Buffers */
        uint64_t cached;         /* Cached */
        uint64_t swap_total;     /* SwapTotal */
        uint64_t swap_free;      /* SwapFree */
        bool has_available;      /* false: MemAvailable missing, available = free+buffers+cached */
};

/*
 * Parses /proc/meminfo text. MemTotal and MemFree are required; other fields default to 0
 * (MemAvailable: estimated as MemFree+Buffers+Cached, has_available = false).
 * Returns 0, or -EINVAL if a required field is missing or a value is not a number of kB,
 * -ERANGE if a value overflows 64 bits in bytes.
 */
int hostmem_parse_meminfo(const char *buf, struct hostmem_meminfo *ret);
int hostmem_read_meminfo(const char *path, struct hostmem_meminfo *ret, struct ppn_error *err);

/* One PSI line: percentages of wall time with stalls, and the cumulative stall time. */
struct hostmem_psi_line {
        double avg10, avg60, avg300;   /* percent, 0..100 */
        uint64_t total_usec;           /* cumulative stall time, microseconds */
        bool valid;                    /* the line was present */
};

struct hostmem_psi {
        struct hostmem_psi_line some;  /* at least one task stalled on memory */
        struct hostmem_psi_line full;  /* all non-idle tasks stalled (absent before 5.x for cpu) */
};

/*
 * Parses /proc/pressure/memory text ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0").
 * The "some" line is required, "full" optional. Returns 0 or -EINVAL.
 */
int hostmem_parse_psi(const char *buf, struct hostmem_psi *ret);

/*
 * Reads PSI from path. PSI may be absent (kernel without CONFIG_PSI, or booted psi=0: the file
 * is missing or reading it fails with EOPNOTSUPP): that is not an error.
 * Returns 1 and *ret when present, 0 when absent (*ret untouched), -errno on other failures.
 */
int hostmem_read_psi(const char *path, struct hostmem_psi *ret, struct ppn_error *err);

/* Parses VmRSS from /proc/PID/status text into bytes. -ENODATA if absent (kernel thread,
 * zombie), -EINVAL if malformed. */
int hostmem_parse_pid_status_rss(const char *buf, uint64_t *ret_bytes);

/* Pages the host has allocated since boot, all zones (/proc/vmstat: the sum of its pgalloc_*
 * counters, each counting an order-k allocation as 2^k pages). A cumulative counter: memory
 * freed meanwhile, by a guest's free page reporting say, does not hide an allocation. No
 * process's resident set grows by new memory without it (transparent huge pages count 512).
 * Returns 0, -ENODATA when the text has no pgalloc_ line, -EINVAL when one is malformed. */
int hostmem_parse_vmstat_alloc(const char *buf, uint64_t *ret_pages);
int hostmem_read_vmstat_alloc(const char *path, uint64_t *ret_pages, struct ppn_error *err);

/* Readers under proc_root ("/proc" on a real host, a fixture directory in tests).
 * -ESRCH when the process is gone (its directory is missing). */
int hostmem_read_pid_rss(const char *proc_root, pid_t pid, uint64_t *ret_bytes, struct ppn_error *err);
