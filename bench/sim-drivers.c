/* SPDX-License-Identifier: Apache-2.0 */
#include "sim-drivers.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline-chromeos.h"
#include "baseline-hyperv.h"
#include "baseline-mom.h"
#include "baseline-pve.h"
#include "baseline-tmo.h"
#include "baseline-xen.h"
#include "fastgrow.h"
#include "policy.h"

#define SEC 1000000ULL

/* ---- ours: src/policy.c, exactly as ppnd calls it ---- */

struct ours {
        struct policy_tunables t;
        uint64_t *target;          /* the target in force (ppnd's own record) */
        struct policy_vm_state *st;
        struct policy_vm *vms;
        struct policy_decision *dec;
        bool verbose;              /* PPN_SIM_DEBUG names this driver: print its decisions */
        /* The fast signal, as ppnd keeps it (manager-round.c): its tunables, each VM's samples,
         * and what it may grant (the policy's free at its last tick, less what was handed out). */
        struct fastgrow_tunables ft;
        struct fastgrow_state *fs;
        int64_t fast_free;
        bool decided;              /* a tick has run: the fast signal acts only after one */
};

static void ours_stop(void *ctx) {
        struct ours *o = ctx;
        if (!o)
                return;
        free(o->target);
        free(o->fs);
        free(o->st);
        free(o->vms);
        free(o->dec);
        free(o);
}

static void *ours_start(const struct sim *s, bool matched) {
        struct ours *o = calloc(1, sizeof *o);
        if (!o)
                return NULL;
        policy_tunables_default(&o->t);
        fastgrow_tunables_default(&o->ft);
        o->t.free_page_reporting = matched ? POLICY_FPR_YES : POLICY_FPR_NO;
        const char *debug = getenv("PPN_SIM_DEBUG");
        o->verbose = debug && strcmp(debug, matched ? "ppnd-fpr" : "ppnd") == 0;
        o->target = calloc(s->n, sizeof *o->target);
        o->fs = calloc(s->n, sizeof *o->fs);
        o->st = calloc(s->n, sizeof *o->st);
        o->vms = calloc(s->n, sizeof *o->vms);
        o->dec = calloc(s->n, sizeof *o->dec);
        if (!o->target || !o->fs || !o->st || !o->vms || !o->dec) {
                ours_stop(o);
                return NULL;
        }
        for (size_t i = 0; i < s->n; i++)
                o->target[i] = s->g[i].target;
        return o;
}

static struct policy_vm ours_vm(const struct sim_guest *g, uint64_t target,
                                const struct policy_vm_state *st) {
        return (struct policy_vm) {
                .name = g->spec->name, .min = g->spec->min, .max = g->spec->max,
                .shares = g->spec->shares, .target = target, .actual = g->actual,
                .driver = POLICY_DRIVER_OK,
                .stats = {
                        .available = g->pub_usec ? g->pub_available : POLICY_STAT_UNKNOWN,
                        .free = g->pub_usec ? g->pub_free : POLICY_STAT_UNKNOWN,
                        .total = g->pub_usec ? g->pub_total : POLICY_STAT_UNKNOWN,
                        .swap_in = g->pub_swap_in, .swap_out = 0,
                        .major_faults = g->pub_major_faults,
                        .last_update_usec = g->pub_usec,
                },
                .state = *st,
        };
}

/* PPN_SIM_DEBUG=ppnd|ppnd-fpr (with sim.c's per-second line): every decision that is not
 * "steady", and every VM the simulator counts under pressure, one line each on stderr. */
static void ours_trace(const struct sim *s, const struct policy_decision *dec,
                       const struct policy_summary *sum) {
        unsigned long long t = s->now_usec / SEC;
        fprintf(stderr, "%4llu tick free=%llu wanted=%llu short=%d contended=%d %s\n", t,
                (unsigned long long) (sum->free / MIB),
                (unsigned long long) (sum->reclaim_wanted / MIB), sum->node_short,
                sum->contended, sum->why);
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                bool pressed = sim_guest_pressed(g);
                if (dec[i].reason == POLICY_REASON_STEADY && !dec[i].apply && !pressed)
                        continue;
                fprintf(stderr, "%4llu   %s %s%s%s target=%llu actual=%llu avail=%llu use=%llu "
                        "need=%llu fair=%llu: %s\n", t, g->spec->name,
                        policy_reason_to_string(dec[i].reason), dec[i].apply ? " sent" : "",
                        pressed ? " PRESSED" : "", (unsigned long long) (dec[i].target / MIB),
                        (unsigned long long) (g->actual / MIB),
                        (unsigned long long) (g->available / MIB),
                        (unsigned long long) (dec[i].use / MIB),
                        (unsigned long long) (dec[i].need / MIB),
                        (unsigned long long) (dec[i].fair_share / MIB), dec[i].why);
        }
}

static int ours_tick(void *ctx, struct sim *s) {
        struct ours *o = ctx;
        for (size_t i = 0; i < s->n; i++)
                o->vms[i] = ours_vm(&s->g[i], o->target[i], &o->st[i]);
        struct policy_node node = {
                .now_usec = s->now_usec, .physical = s->trace->physical,
                .reserve = s->trace->reserve, .host_available = sim_host_available(s),
                .host_available_known = true, .psi_known = false,
        };
        struct policy_summary sum;
        int r = policy_decide(&o->t, &node, o->vms, s->n, o->dec, &sum);
        if (r < 0)
                return r;
        if (o->verbose)
                ours_trace(s, o->dec, &sum);
        o->fast_free = (int64_t) sum.free - (int64_t) sum.granted;
        o->decided = true;
        for (size_t i = 0; i < s->n; i++) {
                o->st[i] = o->dec[i].state;
                o->target[i] = o->dec[i].target;
                if (o->dec[i].apply)
                        sim_set_target(s, i, o->dec[i].target);
        }
        return 0;
}

/* The daemon's fast signal (src/fastgrow.h; ppnd's 200 ms timer, manager-round.c): each guest's
 * host footprint stands for its QEMU's RSS, and its statistics count as asked when published.
 * Every VM is sampled every period: ppnd's gates and read cap save reads, and by their rules
 * (docs/policy.md) never grow a VM later than a sample every period would, but one period later
 * at most where the rest of the host allocated meanwhile. A grow is granted as ppnd grants it
 * (fast_grow()): from the larger of target and size, up to what the policy had free at its last
 * tick less what was handed out since (fastgrow_grant(), as ppnd's); the policy sees it as its
 * own growth. */
static int ours_fast(void *ctx, struct sim *s) {
        struct ours *o = ctx;

        if (!o->decided || o->fast_free < (int64_t) FASTGROW_GRANT_MIN)
                return 0;
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                struct fastgrow_decision d;
                if (!g->pub_usec)
                        continue;
                struct fastgrow_vm in = {
                        .rss = g->touched, .stats_update = g->pub_usec, .stats_age_usec = s->now_usec - g->pub_usec,
                        .rss_at_ask = g->pub_touched, .available = g->pub_available, .size = g->actual,
                        .target = o->target[i], .max = g->spec->max,
                };
                if (fastgrow_sample(&o->ft, &o->fs[i], &in, s->now_usec, &d) < 0 || !d.grow)
                        continue;
                uint64_t from = o->target[i] > g->actual ? o->target[i] : g->actual;
                uint64_t grant = fastgrow_grant(o->fast_free, from, d.target);
                if (grant == 0)
                        continue;
                o->target[i] = from + grant;
                o->st[i].last_grow_usec = s->now_usec;
                o->fast_free -= (int64_t) grant;
                sim_set_target(s, i, o->target[i]);
                if (o->verbose)
                        fprintf(stderr, "%6.1f   %s grow-fast sent target=%llu: %s\n", (double) s->now_usec / SEC,
                                g->spec->name, (unsigned long long) (o->target[i] / MIB), d.why);
        }
        return 0;
}

/* ---- oVirt MOM ---- */

struct mom {
        struct mom_thresholds th;
        struct mom_history host_free;
        struct mom_history *cur, *unused;
};

static void mom_stop(void *ctx) {
        struct mom *m = ctx;
        if (!m)
                return;
        free(m->cur);
        free(m->unused);
        free(m);
}

/* ppnd's host low mark: max(256 MiB, 5 % of physical) (policy_tunables_default). */
static double host_low_frac(const struct sim *s) {
        double low = fmax(256.0 * MIB, 0.05 * (double) s->trace->physical);
        return low / (double) s->trace->physical;
}

static void *mom_start(const struct sim *s, bool matched) {
        struct mom *m = calloc(1, sizeof *m);
        if (!m)
                return NULL;
        m->th = mom_default_thresholds;
        if (matched)
                m->th = (struct mom_thresholds) {
                        .pressure = (double) s->trace->reserve / (double) s->trace->physical,
                        .critical = host_low_frac(s),
                };
        m->cur = calloc(s->n, sizeof *m->cur);
        m->unused = calloc(s->n, sizeof *m->unused);
        if (!m->cur || !m->unused) {
                mom_stop(m);
                return NULL;
        }
        return m;
}

/* Host monitor: MemFree + Buffers + Cached ≈ physical − used here (no host page cache);
 * guest monitor: balloon_cur and mem_unused (the guest's last published free memory). */
static void mom_sample(void *ctx, const struct sim *s) {
        struct mom *m = ctx;
        mom_history_push(&m->host_free, (double) sim_host_available(s));
        for (size_t i = 0; i < s->n; i++) {
                if (!s->g[i].pub_usec)
                        continue;
                mom_history_push(&m->cur[i], (double) s->g[i].actual);
                mom_history_push(&m->unused[i], (double) s->g[i].pub_free);
        }
}

static int mom_tick(void *ctx, struct sim *s) {
        struct mom *m = ctx;
        double host_free_pct = mom_history_avg(&m->host_free) / (double) s->trace->physical;
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                struct mom_guest mg = {
                        .balloon_cur = g->actual, .balloon_min = g->spec->min,
                        .balloon_max = g->spec->max, .avg_cur = mom_history_avg(&m->cur[i]),
                        .avg_unused = mom_history_avg(&m->unused[i]), .valid = m->cur[i].n > 0,
                };
                uint64_t target = mom_decide_with(&m->th, host_free_pct, &mg);
                if (target)
                        sim_set_target(s, i, target);
        }
        return 0;
}

/* ---- Proxmox VE ---- */

struct pve {
        double target_pct;
        struct pve_vm vms[];
};

static void *pve_start(const struct sim *s, bool matched) {
        struct pve *p = calloc(1, sizeof *p + (s->n + 1) * sizeof(struct pve_vm));
        if (!p)
                return NULL;
        p->target_pct = matched ? 100.0 * (double) (s->trace->physical - s->trace->reserve) /
                                  (double) s->trace->physical
                                : PVE_TARGET_PCT;
        return p;
}

static int pve_tick(void *ctx, struct sim *s) {
        struct pve *p = ctx;
        struct pve_vm *vms = p->vms;
        _cleanup_free_ int64_t *res = calloc(s->n + 1, sizeof *res);
        if (!res)
                return -ENOMEM;
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                vms[i] = (struct pve_vm) {
                        .balloon = (int64_t) g->actual, .balloon_min = (int64_t) g->spec->min,
                        .maxmem = (int64_t) g->spec->max,
                        .freemem = g->pub_usec ? (int64_t) g->pub_free : 0,
                        .shares = (unsigned) g->spec->shares,
                };
        }
        int64_t goal = pve_goal_pct(s->trace->physical, sim_host_available(s), p->target_pct);
        int r = pve_compute_alg1(vms, s->n, goal, PVE_MAXCHANGE, res);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n; i++)
                if (res[i] && res[i] != vms[i].balloon)
                        sim_set_target(s, i, (uint64_t) res[i]);
        return 0;
}

/* ---- no controller: every VM at its maximum ---- */

static void *none_start(const struct sim *s, bool matched) {
        (void) s;
        (void) matched;
        return calloc(1, 1);
}

static int none_tick(void *ctx, struct sim *s) {
        (void) ctx;
        (void) s;
        return 0;
}

/* ---- Hyper-V-style buffer ---- */

static void *per_vm_start(const struct sim *s, size_t size) {
        return calloc(s->n + 1, size);
}

static void *hv_start(const struct sim *s, bool matched) {
        (void) matched;
        return per_vm_start(s, sizeof(uint64_t));
}

/* Sends target i when it differs from the last one by at least ppnd's minimum step (the
 * same "no tiny commands" rule for every policy that has none of its own). */
static void send_if_changed(struct sim *s, size_t i, uint64_t target) {
        const struct sim_guest *g = &s->g[i];
        uint64_t step = g->spec->max / 100 > 16 * MIB ? g->spec->max / 100 : 16 * MIB;
        uint64_t d = target > g->target ? target - g->target : g->target - target;
        if (d >= step || (target != g->target && (target == g->spec->min || target == g->spec->max)))
                sim_set_target(s, i, target);
}

static int hv_tick(void *ctx, struct sim *s) {
        uint64_t *targets = ctx;
        _cleanup_free_ struct hv_vm *vms = calloc(s->n + 1, sizeof *vms);
        if (!vms)
                return -ENOMEM;
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                uint64_t committed = g->pub_usec && g->actual > g->pub_available ?
                                     g->actual - g->pub_available : g->actual;
                vms[i] = (struct hv_vm) { .min = g->spec->min, .max = g->spec->max,
                                          .committed = committed, .weight = 5000 };
        }
        hv_targets(vms, s->n, s->trace->physical - s->trace->reserve, HV_BUFFER_PCT, targets);
        for (size_t i = 0; i < s->n; i++)
                send_if_changed(s, i, targets[i]);
        return 0;
}

/* ---- Xen squeezed ---- */

static int xen_tick(void *ctx, struct sim *s) {
        uint64_t *targets = ctx;
        _cleanup_free_ uint64_t *mins = calloc(2 * s->n + 1, sizeof *mins);
        if (!mins)
                return -ENOMEM;
        uint64_t *maxes = mins + s->n;
        for (size_t i = 0; i < s->n; i++) {
                mins[i] = s->g[i].spec->min;
                maxes[i] = s->g[i].spec->max;
        }
        xen_targets(mins, maxes, s->n, s->trace->physical - s->trace->reserve, targets);
        for (size_t i = 0; i < s->n; i++)
                if (targets[i] != s->g[i].target)
                        sim_set_target(s, i, targets[i]);
        return 0;
}

/* ---- ChromeOS vm_concierge-style ---- */

struct cros {
        uint64_t critical;
        struct cros_state st[];
};

static void *cros_start(const struct sim *s, bool matched) {
        struct cros *c = calloc(1, sizeof *c + (s->n + 1) * sizeof(struct cros_state));
        if (!c)
                return NULL;
        c->critical = matched ? s->trace->reserve
                              : s->trace->physical / 1000 * CROS_HOST_CRITICAL_PERMILLE;
        return c;
}

static int cros_tick(void *ctx, struct sim *s) {
        struct cros *c = ctx;
        struct cros_host h = { .now_usec = s->now_usec, .available = sim_host_available(s),
                               .critical = c->critical, .n_vms = s->n };
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                if (!g->pub_usec)
                        continue;
                struct cros_vm v = { .min = g->spec->min, .max = g->spec->max, .target = g->target,
                                     .actual = g->actual, .guest_available = g->pub_available };
                uint64_t target = cros_decide(&h, &v, &c->st[i]);
                if (target)
                        sim_set_target(s, i, target);
        }
        return 0;
}

/* ---- TMO / Senpai-style ---- */

static void *tmo_start(const struct sim *s, bool matched) {
        (void) matched;
        return per_vm_start(s, sizeof(struct tmo_state));
}

static int tmo_drive(void *ctx, struct sim *s) {
        struct tmo_state *st = ctx;
        for (size_t i = 0; i < s->n; i++) {
                const struct sim_guest *g = &s->g[i];
                if (!g->pub_usec)
                        continue;
                uint64_t limit = tmo_tick(&st[i], g->pub_stall_usec, g->actual, g->spec->min,
                                          g->spec->max);
                if (limit != g->target)
                        sim_set_target(s, i, limit);
        }
        return 0;
}

#define MOM_VDSM_POLICY_USEC (15 * SEC)

const struct sim_driver sim_drivers[] = {
        { "none", 10 * SEC, 10 * SEC, 0, none_start, NULL, none_tick, free, false },
        { "ppnd", 1 * SEC, 1 * SEC, 0, ours_start, NULL, ours_tick, ours_stop, false, ours_fast },
        { "ppnd-10s", 10 * SEC, 1 * SEC, 0, ours_start, NULL, ours_tick, ours_stop, false, ours_fast },
        { "ppnd-fpr", 1 * SEC, 1 * SEC, 0, ours_start, NULL, ours_tick, ours_stop, true, ours_fast },
        { "ppnd-fpr-nofast", 1 * SEC, 1 * SEC, 0, ours_start, NULL, ours_tick, ours_stop, true, NULL },
        { "mom", MOM_POLICY_USEC, MOM_SAMPLE_USEC, MOM_SAMPLE_USEC, mom_start, mom_sample,
          mom_tick, mom_stop, false },
        { "mom-matched", MOM_POLICY_USEC, MOM_SAMPLE_USEC, MOM_SAMPLE_USEC, mom_start, mom_sample,
          mom_tick, mom_stop, true },
        { "mom-vdsm", MOM_VDSM_POLICY_USEC, MOM_SAMPLE_USEC, MOM_SAMPLE_USEC, mom_start,
          mom_sample, mom_tick, mom_stop, false },
        { "mom-vdsm-matched", MOM_VDSM_POLICY_USEC, MOM_SAMPLE_USEC, MOM_SAMPLE_USEC, mom_start,
          mom_sample, mom_tick, mom_stop, true },
        { "proxmox", PVE_CYCLE_USEC, PVE_STATS_USEC, 0, pve_start, NULL, pve_tick, free, false },
        { "proxmox-matched", PVE_CYCLE_USEC, PVE_STATS_USEC, 0, pve_start, NULL, pve_tick, free,
          true },
        { "hyperv", HV_TICK_USEC, 1 * SEC, 0, hv_start, NULL, hv_tick, free, false },
        { "xen", XEN_TICK_USEC, XEN_TICK_USEC, 0, hv_start, NULL, xen_tick, free, false },
        { "chromeos", CROS_TICK_USEC, CROS_TICK_USEC, 0, cros_start, NULL, cros_tick, free, false },
        { "chromeos-matched", CROS_TICK_USEC, CROS_TICK_USEC, 0, cros_start, NULL, cros_tick, free,
          true },
        { "tmo", TMO_TICK_USEC, 1 * SEC, 0, tmo_start, NULL, tmo_drive, free, false },
};
const size_t sim_n_drivers = ELEMENTSOF(sim_drivers);
