/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-mom.h"

#include <math.h>

/* Constants of the default rules (oVirt/mom doc/balloon.rules; vdsm 02-balloon.policy). */
#define MIN_GUEST_FREE_PERCENT 0.20      /* free memory an unconstrained guest keeps */
#define MAX_BALLOON_CHANGE_PERCENT 0.05  /* at most 5 % of current memory per run */
#define MIN_BALLOON_CHANGE_PERCENT 0.0025/* skip changes under 0.25 % of current memory */

static bool change_big_enough(const struct mom_guest *g, double new_val) {
        return fabs(new_val - (double) g->balloon_cur) >
               MIN_BALLOON_CHANGE_PERCENT * (double) g->balloon_cur;
}

const struct mom_thresholds mom_default_thresholds = { .pressure = 0.20, .critical = 0.05 };

/* The share of its memory a guest may keep free, scaled by host pressure. */
static double guest_free_percent(const struct mom_thresholds *th, double host_free_pct) {
        if (host_free_pct <= th->critical)
                return -0.05 + host_free_pct;  /* "force guest to swap" */
        return MIN_GUEST_FREE_PERCENT * (host_free_pct / th->pressure);
}

static double balloon_floor(const struct mom_guest *g, double free_pct) {
        double used = g->avg_cur - g->avg_unused;
        double want = used + free_pct * (double) g->balloon_cur;
        return fmax((double) g->balloon_min, want);
}

static uint64_t shrink_guest(const struct mom_thresholds *th, double host_free_pct,
                             const struct mom_guest *g) {
        double size = (double) g->balloon_cur * (1 - MAX_BALLOON_CHANGE_PERCENT);
        double floor = balloon_floor(g, guest_free_percent(th, host_free_pct));
        if (size < floor)
                size = floor;
        if (size <= (double) g->balloon_cur && change_big_enough(g, size))
                return (uint64_t) size;
        return 0;
}

static uint64_t grow_guest(const struct mom_thresholds *th, double host_free_pct,
                           const struct mom_guest *g) {
        if (g->balloon_cur >= g->balloon_max)
                return 0;
        double size = (double) g->balloon_cur * (1 + MAX_BALLOON_CHANGE_PERCENT);
        double floor = balloon_floor(g, guest_free_percent(th, host_free_pct));
        if (size < floor)
                size = floor;
        if (size > (double) g->balloon_max)
                size = (double) g->balloon_max;
        return change_big_enough(g, size) ? (uint64_t) size : 0;
}

uint64_t mom_decide(double host_free_pct, const struct mom_guest *g) {
        return mom_decide_with(&mom_default_thresholds, host_free_pct, g);
}

uint64_t mom_decide_with(const struct mom_thresholds *th, double host_free_pct,
                         const struct mom_guest *g) {
        uint64_t target = 0;
        if (g->valid)
                target = host_free_pct < th->pressure ? shrink_guest(th, host_free_pct, g)
                                                      : grow_guest(th, host_free_pct, g);
        /* guest_qos runs after the balloon rules and wins for a guest under its minimum. */
        if (g->balloon_cur < g->balloon_min)
                target = g->balloon_min;
        return target;
}

void mom_history_push(struct mom_history *h, double v) {
        h->v[h->next] = v;
        h->next = (h->next + 1) % MOM_HISTORY;
        if (h->n < MOM_HISTORY)
                h->n++;
}

double mom_history_avg(const struct mom_history *h) {
        double s = 0;
        for (unsigned i = 0; i < h->n; i++)
                s += h->v[i];
        return h->n ? s / h->n : 0;
}
