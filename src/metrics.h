/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Prometheus metrics: a pure renderer (a snapshot struct in, text exposition format 0.0.4 out)
 * and a small HTTP server (libmicrohttpd) that runs on the daemon's sd-event loop and asks its
 * owner for a fresh snapshot on every scrape of /metrics.
 *
 * Names follow Prometheus conventions: base units (bytes, seconds, ratio 0-1), `_total` for
 * counters, one metric per quantity with labels for the VM (`vm`) or the category (`state`,
 * `reason`, `class`). A value nobody knows (a VM not connected has no balloon actual) is left
 * out rather than reported as 0 or NaN, so an alert on it never fires on a guess.
 *
 * Exposed (all gauges unless _total):
 *   ppn_build_info{version}                     1
 *   ppn_node_physical_bytes                     RAM the ledger hands out
 *   ppn_node_reserve_bytes                      kept back for the host
 *   ppn_node_reserved_min_bytes                 Σ VM minimums
 *   ppn_node_pool_available_bytes               physical - reserve - Σ min
 *   ppn_node_committed_bytes                    Σ balloon actuals (unknown counted at max)
 *   ppn_node_free_bytes                         physical - reserve - committed
 *   ppn_node_host_available_bytes               /proc/meminfo MemAvailable
 *   ppn_node_memory_pressure_some_avg10_ratio   PSI memory "some" avg10 / 100
 *   ppn_node_vms, ppn_node_vms_running
 *   ppn_vm_min_bytes{vm} ppn_vm_max_bytes{vm} ppn_vm_target_bytes{vm} ppn_vm_actual_bytes{vm}
 *   ppn_vm_guest_available_bytes{vm} ppn_vm_cpu_weight{vm} ppn_vm_stats_age_seconds{vm}
 *   ppn_vm_state{vm,state}                      1 for the VM's state, 0 for the others
 *   ppn_vm_override_active{vm} ppn_vm_balloon_stuck{vm}   0 or 1
 *   ppn_balloon_commands_total                  balloon targets sent to QEMU
 *   ppn_qmp_errors_total{class}                 QEMU's error class, or transport/timeout
 *   ppn_decisions_total{reason}                 controller decisions by policy reason
 *   ppn_qmp_reconnects_total                    QMP connections established after the first
 *   ppn_stats_reads_deferred_total              rounds a settled VM's statistics were not read
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "policy.h"
#include "util.h"

#define METRICS_UNKNOWN UINT64_MAX      /* a gauge nobody knows: left out of the output */

/* The VM states a link can be in; every VM gets one ppn_vm_state sample per entry. */
extern const char *const metrics_vm_states[];
extern const size_t metrics_n_vm_states;

struct metrics_vm {
        char name[64];
        char state[16];                 /* one of metrics_vm_states; anything else counts as "error" */
        uint64_t min_bytes, max_bytes;
        uint64_t target_bytes, actual_bytes, guest_available_bytes; /* METRICS_UNKNOWN: omitted */
        uint64_t stats_age_usec;        /* METRICS_UNKNOWN: omitted */
        uint64_t cpu_weight;
        bool override_active;
        bool stuck;
};

struct metrics_node {
        uint64_t physical_bytes, reserve_bytes, reserved_min_bytes;
        int64_t pool_available_bytes;   /* negative when the ledger is over-committed */
        uint64_t committed_bytes;
        int64_t free_bytes;
        uint64_t host_available_bytes;  /* METRICS_UNKNOWN: omitted */
        double psi_some_avg10;          /* percent, as the kernel prints it; < 0: omitted */
        uint64_t n_vms, n_running;
};

/* QMP error classes are QEMU's words: a few distinct ones in practice. Classes beyond this
 * many are counted under "other" so a misbehaving peer cannot grow the output. */
#define METRICS_ERROR_CLASSES_MAX 16
#define METRICS_CLASS_MAX 48

struct metrics_counters {
        uint64_t balloon_commands;
        uint64_t reconnects;
        uint64_t stats_deferred;        /* settle.h: a settled VM's statistics not read this round */
        uint64_t early_rounds;          /* rounds started between ticks: the host gone over capacity */
        uint64_t fast_periods[2];       /* fast signal periods with the host quiet [0] (no VM read) or busy [1] */
        uint64_t fast_reads[3];         /* in busy periods, QEMUs read [0] or not: bounded out [1]
                                         * (fastgrow_bounded_out()), deferred [2] ([controller] fast-signal-reads) */
        uint64_t decisions[_POLICY_REASON_MAX];
        size_t n_error_classes;
        struct {
                char class[METRICS_CLASS_MAX];
                uint64_t count;
        } errors[METRICS_ERROR_CLASSES_MAX];
};

/* Counts one QMP error of `class` ("" or NULL: "transport"). */
void metrics_count_error(struct metrics_counters *c, const char *class);
/* Counts one decision; out-of-range reasons are ignored. */
void metrics_count_decision(struct metrics_counters *c, enum policy_reason reason);

struct metrics_snapshot {
        struct metrics_node node;
        const struct metrics_vm *vms;
        size_t n_vms;
        const struct metrics_counters *counters;        /* NULL: all zero */
        const char *version;                            /* ppn_build_info; NULL: this build's */
};

/*
 * Renders s as Prometheus text exposition (version 0.0.4): each family's # HELP and # TYPE
 * once, then its samples; label values escaped (\\, \", \n). Returns 0 with a NUL-terminated
 * *ret_text (caller frees) and its length, or -ENOMEM.
 */
int metrics_render(const struct metrics_snapshot *s, char **ret_text, size_t *ret_len);

/* ---- the HTTP endpoint ---- */

/*
 * Fills *ret for one scrape. The vms array belongs to the callee and must stay valid until
 * done() is called with the same snapshot (after rendering). Returns 0 or a negative errno
 * (answered with 500).
 */
struct metrics_source {
        int (*fill)(void *userdata, struct metrics_snapshot *ret);
        void (*done)(void *userdata, struct metrics_snapshot *s);
};

struct metrics_server_options {
        const char *address;            /* numeric IPv4 or IPv6 address, e.g. 127.0.0.1 or ::1 */
        uint16_t port;                  /* 0: any free port (tests; see metrics_server_port) */
};

struct metrics_server;

/*
 * Listens on address:port and serves GET /metrics (text/plain; version=0.0.4) on the sd-event
 * loop e: single-threaded, so fill() may read the owner's state without locks. Other paths
 * answer 404, other methods 405. Connections idle for 10 s are closed; at most 16 at once.
 * Errors (address not numeric, port in use) say what to change.
 */
int metrics_server_new(sd_event *e, const struct metrics_server_options *o, const struct metrics_source *src,
                       void *userdata, struct metrics_server **ret, struct ppn_error *err);
struct metrics_server *metrics_server_free(struct metrics_server *s);
static inline void metrics_server_freep(struct metrics_server **s) { metrics_server_free(*s); }

/* The port actually bound (useful with port 0). */
uint16_t metrics_server_port(const struct metrics_server *s);
/* Scrapes served so far (tests). */
uint64_t metrics_server_scrapes(const struct metrics_server *s);
