/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * oVirt MOM's default balloon policy, re-implemented for the simulator from its published
 * rules: oVirt/mom `doc/balloon.rules` and the variant oVirt deploys, oVirt/vdsm
 * `static/etc/vdsm/mom.d/02-balloon.policy` (this follows the vdsm file: balloon_min is
 * max(guest minimum, used + free share), grow is computed with the same free share, and the
 * "guest_qos" rule restores a guest below its minimum).
 *
 * MOM's inputs are averages ("StatAvg") over its sample history (10 samples; host and guest
 * monitors sample every 5 s, the policy runs every 10 s):
 *   host_free_pct = avg(MemFree + Buffers + Cached) / MemTotal
 *   per guest: avg(balloon_cur) and avg(mem_unused) (guest free memory), balloon_cur now.
 * Pure: no clock, no I/O.
 */

#include <stdbool.h>
#include <stdint.h>

#define MOM_HISTORY 10                   /* sample-history-length */
#define MOM_SAMPLE_USEC (5 * 1000000ULL) /* host-monitor-interval, guest-monitor-interval */
#define MOM_POLICY_USEC (10 * 1000000ULL)/* policy-engine-interval */

struct mom_guest {
        uint64_t balloon_cur;      /* actual now */
        uint64_t balloon_min, balloon_max;
        double avg_cur;            /* StatAvg "balloon_cur", bytes */
        double avg_unused;         /* StatAvg "mem_unused", bytes */
        bool valid;                /* the guest reported mem_unused: MOM skips it otherwise */
};

/* The two host thresholds of the rules (fractions of MemTotal). Defaults: 0.20 and 0.05. */
struct mom_thresholds {
        double pressure;           /* host free below this: shrink guests */
        double critical;           /* at or below this: guest free share goes negative */
};
extern const struct mom_thresholds mom_default_thresholds;

/* One policy run for one guest. Returns the new balloon target (bytes), or 0 when MOM would
 * not call the controller ("change not big enough", not ballooned, invalid stats). */
uint64_t mom_decide(double host_free_pct, const struct mom_guest *g);
/* The same with other host thresholds (the simulator's "matched" variant). */
uint64_t mom_decide_with(const struct mom_thresholds *th, double host_free_pct,
                         const struct mom_guest *g);

/* A fixed-length sample history with MOM's StatAvg (mean of what it holds). */
struct mom_history {
        double v[MOM_HISTORY];
        unsigned n, next;
};
void mom_history_push(struct mom_history *h, double v);
double mom_history_avg(const struct mom_history *h);
