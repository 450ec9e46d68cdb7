/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-pve.h"

#include <errno.h>
#include <stdlib.h>

#include "util.h"

#define PVE_DEADBAND ((int64_t) 10 * 1024 * 1024)  /* |goal| ≤ 10 MiB: do nothing */
#define PVE_DEFAULT_SHARES 1000

int64_t pve_goal(uint64_t memtotal, uint64_t memavailable) {
        return pve_goal_pct(memtotal, memavailable, PVE_TARGET_PCT);
}

int64_t pve_goal_pct(uint64_t memtotal, uint64_t memavailable, double target_pct) {
        int64_t used = (int64_t) memtotal - (int64_t) memavailable;
        return (int64_t) ((double) memtotal * target_pct / 100.0) - used;
}

/* The working state of one compute_alg1 call: res[] with "defined" flags (perl hash). */
struct alg {
        const struct pve_vm *vms;
        int64_t *res;
        bool *defined;
        bool *done;
        int64_t maxchange;
};

static unsigned shares_of(const struct pve_vm *d) { return d->shares ? d->shares : PVE_DEFAULT_SHARES; }

/* New balloon for one VM in one pass toward desired; false = nothing to do (done). */
static bool step_one(const struct alg *a, size_t i, int64_t desired, int64_t bytes, int64_t *ret) {
        const struct pve_vm *d = &a->vms[i];
        if (bytes > 0 && desired - d->balloon > 0) {          /* grow */
                int64_t nw = d->balloon + a->maxchange;
                *ret = nw > desired ? desired : nw;
        } else if (desired - d->balloon < 0) {                /* shrink */
                int64_t nw = d->balloon - a->maxchange;
                *ret = nw > desired ? nw : desired;
        } else
                return false;
        return true;
}

/* One pass of the perl while loop; returns the bytes changed, sets *repeat and *progress. */
static int64_t pass(const struct alg *a, const size_t *ids, size_t n, int64_t rest, int64_t bytes,
                    bool *repeat, int64_t *progress) {
        double shares_total = 0, alloc_old = 0;
        for (size_t k = 0; k < n; k++) {
                size_t i = ids[k];
                if (a->done[i])
                        continue;
                int64_t balloon = a->defined[i] ? a->res[i] : a->vms[i].balloon;
                alloc_old += (double) (balloon - a->vms[i].balloon_min);
                shares_total += shares_of(&a->vms[i]);
        }
        double alloc_new = alloc_old + (double) rest;
        int64_t changes = 0;
        for (size_t k = 0; k < n; k++) {
                size_t i = ids[k];
                const struct pve_vm *d = &a->vms[i];
                if (a->done[i])
                        continue;
                int64_t desired = d->balloon_min + (int64_t) ((alloc_new / shares_total) * shares_of(d));
                if (desired > d->maxmem) {
                        desired = d->maxmem;
                        *repeat = true;
                } else if (desired < d->balloon_min) {
                        desired = d->balloon_min;
                        *repeat = true;
                }
                int64_t balloon;
                if (!step_one(a, i, desired, bytes, &balloon)) {
                        a->done[i] = true;
                        continue;
                }
                int64_t diff = balloon - d->balloon;
                if (diff == 0)
                        continue;
                int64_t old = a->defined[i] ? a->res[i] : d->balloon;
                a->res[i] = balloon;
                a->defined[i] = true;
                if (balloon != old) {
                        changes += balloon - old;
                        *progress += diff > 0 ? diff : -diff;
                        *repeat = true;
                }
        }
        return changes;
}

/* The perl $change_func: distribute `bytes` over the VMs in ids; returns what is left. */
static int64_t change(const struct alg *a, const size_t *ids, size_t n, int64_t bytes, bool *done) {
        int64_t rest = bytes, progress = 1;
        bool repeat = true;
        for (size_t i = 0; i < n; i++)
                done[ids[i]] = false;
        while (rest && repeat && progress) {
                repeat = false;
                progress = 0;
                rest -= pass(a, ids, n, rest, bytes, &repeat, &progress);
        }
        return rest;
}

/* Splits the VMs the perl code considers: all, under pressure (1), with free memory (2). */
static void classify(const struct pve_vm *vms, size_t n, size_t *all, size_t *n_all,
                     size_t *l1, size_t *n1, size_t *l2, size_t *n2) {
        *n_all = *n1 = *n2 = 0;
        for (size_t i = 0; i < n; i++) {
                const struct pve_vm *d = &vms[i];
                if (!d->balloon || !d->balloon_min || d->shares == 0)
                        continue;
                all[(*n_all)++] = i;
                if (d->freemem && (double) d->freemem > (double) d->balloon_min * 0.25 &&
                    d->balloon >= d->balloon_min)
                        l2[(*n2)++] = i;
                else
                        l1[(*n1)++] = i;
        }
}

int pve_compute_alg1(const struct pve_vm *vms, size_t n, int64_t goal, int64_t maxchange,
                     int64_t *ret_targets) {
        _cleanup_free_ size_t *ids = calloc(3 * n + 1, sizeof *ids);
        _cleanup_free_ int64_t *res = calloc(n + 1, sizeof *res);
        _cleanup_free_ bool *flags = calloc(2 * n + 1, sizeof *flags);
        if (!ids || !res || !flags)
                return -ENOMEM;
        size_t *all = ids, *l1 = ids + n, *l2 = ids + 2 * n, n_all, n1, n2;
        classify(vms, n, all, &n_all, l1, &n1, l2, &n2);
        struct alg a = { .vms = vms, .res = res, .defined = flags, .done = flags + n,
                         .maxchange = maxchange };
        if (goal > PVE_DEADBAND) {
                int64_t rest = change(&a, l1, n1, goal, a.done);     /* pressured VMs first */
                if (rest >= goal)
                        change(&a, all, n_all, rest, a.done);
        } else if (goal < -PVE_DEADBAND) {
                int64_t rest = change(&a, l2, n2, goal, a.done);     /* VMs with free memory first */
                if (rest <= goal)
                        change(&a, all, n_all, rest, a.done);
        }
        for (size_t i = 0; i < n; i++)
                ret_targets[i] = a.defined[i] ? res[i] : 0;
        return 0;
}
