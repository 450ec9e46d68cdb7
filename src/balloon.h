/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * balloon: one VM's virtio-balloon over its QMP connection (qmp.h).
 *
 *   target   "balloon" {"value": bytes}: the guest size wanted (not the balloon's size). QEMU
 *            acknowledges at once; the guest gets there over time (1024 -> 512 MiB takes
 *            0.6-1.5 s under TCG). A target of 0, or below the caller's floor, is refused
 *            here before anything is sent: a plain balloon driven to 1 MiB deadlocks the guest.
 *   actual   "query-balloon": the guest's current size in bytes. BALLOON_CHANGE events carry
 *            the same number but are rate-limited to 1/s; poll this for the truth.
 *   stats    "qom-set guest-stats-polling-interval N" on /machine/peripheral/<device id>
 *            makes the guest report every N s; "qom-get guest-stats" reads the last report.
 *
 * Every operation exists as an asynchronous call (returns at once; the callback runs from the
 * client's sd-event loop, exactly once, also on failure) and as a _sync call (runs the
 * client's loop itself; for the CLI and tests, see qmp_call_sync()).
 *
 * Errors: QEMU's as qmp.h describes them. Notably a VM without a balloon device answers
 * balloon/query-balloon with class "DeviceNotActive" (code -ENODEV), and the QOM calls on a
 * device id that does not exist with "DeviceNotFound" (-ENOENT). A reply that does not have the
 * documented shape gives -EBADMSG (class ""). Refused arguments give -EINVAL / -ERANGE.
 */

#include <stdint.h>

#include "qmp.h"

/* The device id the project gives the balloon (-device virtio-balloon-pci,id=balloon0). */
#define BALLOON_DEVICE_DEFAULT "balloon0"

/* QEMU's "value" is an int64. */
#define BALLOON_TARGET_MAX ((uint64_t) INT64_MAX)

/* The statistics of the virtio-balloon driver, as QEMU 7.2 names them in guest-stats. */
enum balloon_stat {
        BALLOON_STAT_SWAP_IN,          /* "stat-swap-in", bytes swapped in */
        BALLOON_STAT_SWAP_OUT,         /* "stat-swap-out", bytes swapped out */
        BALLOON_STAT_MAJOR_FAULTS,     /* "stat-major-faults", count */
        BALLOON_STAT_MINOR_FAULTS,     /* "stat-minor-faults", count */
        BALLOON_STAT_FREE_MEMORY,      /* "stat-free-memory", bytes */
        BALLOON_STAT_TOTAL_MEMORY,     /* "stat-total-memory", bytes */
        BALLOON_STAT_AVAILABLE_MEMORY, /* "stat-available-memory", bytes */
        BALLOON_STAT_DISK_CACHES,      /* "stat-disk-caches", bytes */
        BALLOON_STAT_HTLB_PGALLOC,     /* "stat-htlb-pgalloc", count */
        BALLOON_STAT_HTLB_PGFAIL,      /* "stat-htlb-pgfail", count */
        _BALLOON_STAT_MAX,
};

/*
 * A guest's report. These numbers come from inside the guest: untrusted input.
 * QEMU says "not reported" with the value 18446744073709551615 (2^64-1), and "never reported"
 * with last-update 0. Neither ever reaches value[]: an unknown stat has its bit clear in
 * `known` and value 0; read values through balloon_stats_get(), which refuses unknown ones.
 */
struct balloon_stats {
        uint64_t value[_BALLOON_STAT_MAX];
        uint32_t known;                /* bit (1u << stat) set: value[stat] was reported */
        uint64_t last_update;          /* the guest's last report, s since the epoch; 0 = never */
        unsigned n_extra;              /* stats this code does not know (newer guest kernels) */
};

/* 0 and *ret if the guest reported `stat`, -ENODATA if not, -EINVAL for a bad stat. */
int balloon_stats_get(const struct balloon_stats *s, enum balloon_stat stat, uint64_t *ret);
/* "stat-free-memory", ...; NULL for an invalid stat. */
const char *balloon_stat_to_name(enum balloon_stat stat);

/*
 * Pure decoders (no I/O; separately testable and fuzzed).
 * balloon_stats_decode() takes the "return" value of qom-get guest-stats:
 *   {"stats": {"stat-...": N, ...}, "last-update": N}
 * Stats it does not know are counted in n_extra and otherwise ignored; a stat or last-update
 * that is not a non-negative integer makes the whole report invalid (-EBADMSG), since QEMU
 * itself formats them as uint64 (json-c saturates an integer above 2^64-1 to 2^64-1, which
 * then reads as "not reported"). balloon_stats_parse() does the same from JSON text.
 * Both write *ret only on success.
 */
int balloon_stats_decode(json_object *reply, struct balloon_stats *ret, struct ppn_error *err);
/* The same decoding from the text of the reply's "return" value, without json-c, for text in
 * jsonutil's strict subset with nothing unusual in it (stats and last-update only, no name
 * twice, at most 8 unknown stats). Returns 0 with the result balloon_stats_decode() gives, or
 * -EAGAIN (*ret untouched): then balloon_stats_decode() decides. */
int balloon_stats_decode_text(const char *text, size_t len, struct balloon_stats *ret);
int balloon_stats_parse(const char *text, size_t len, struct balloon_stats *ret,
                        struct ppn_error *err);
/* query-balloon's "return" {"actual": N} -> bytes. 0 or -EBADMSG. */
int balloon_actual_decode(json_object *reply, uint64_t *ret_bytes, struct ppn_error *err);
/* The "actual" of a BALLOON_CHANGE event. 0, -EINVAL (another event) or -EBADMSG. */
int balloon_event_actual(const struct qmp_event *ev, uint64_t *ret_bytes);

/* Checks a target: -EINVAL for 0, -ERANGE below floor_bytes or above BALLOON_TARGET_MAX. */
int balloon_check_target(uint64_t target_bytes, uint64_t floor_bytes, struct ppn_error *err);

typedef void (*balloon_done_fn)(struct qmp *q, const struct qmp_error *err, void *userdata);
typedef void (*balloon_actual_fn)(struct qmp *q, uint64_t actual_bytes,
                                  const struct qmp_error *err, void *userdata);
typedef void (*balloon_stats_fn)(struct qmp *q, const struct balloon_stats *stats,
                                 const struct qmp_error *err, void *userdata);

/*
 * Asynchronous calls. Return 0 when sent (fn then runs exactly once, from the loop), or
 * -errno with err set and fn never called: refused arguments (nothing sent) or qmp_call()'s
 * errors. timeout_usec 0 = QMP_TIMEOUT_DEFAULT_USEC. device_id NULL = BALLOON_DEVICE_DEFAULT.
 * interval_sec 0 turns the guest's reports off.
 */
int balloon_set_target(struct qmp *q, uint64_t target_bytes, uint64_t floor_bytes,
                       uint64_t timeout_usec, balloon_done_fn fn, void *userdata,
                       struct qmp_error *err);
int balloon_query(struct qmp *q, uint64_t timeout_usec, balloon_actual_fn fn, void *userdata,
                  struct qmp_error *err);
int balloon_enable_stats(struct qmp *q, const char *device_id, unsigned interval_sec,
                         uint64_t timeout_usec, balloon_done_fn fn, void *userdata,
                         struct qmp_error *err);
int balloon_read_stats(struct qmp *q, const char *device_id, uint64_t timeout_usec,
                       balloon_stats_fn fn, void *userdata, struct qmp_error *err);

/* Synchronous calls: 0 (and the out-parameter) or -errno with err. */
int balloon_set_target_sync(struct qmp *q, uint64_t target_bytes, uint64_t floor_bytes,
                            uint64_t timeout_usec, struct qmp_error *err);
int balloon_query_sync(struct qmp *q, uint64_t timeout_usec, uint64_t *ret_actual_bytes,
                       struct qmp_error *err);
int balloon_enable_stats_sync(struct qmp *q, const char *device_id, unsigned interval_sec,
                              uint64_t timeout_usec, struct qmp_error *err);
int balloon_read_stats_sync(struct qmp *q, const char *device_id, uint64_t timeout_usec,
                            struct balloon_stats *ret, struct qmp_error *err);
