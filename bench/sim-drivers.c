/* SPDX-License-Identifier: Apache-2.0 */
#include "sim-drivers.h"

#include <errno.h>
#include <stdlib.h>

#include "baseline-mom.h"
#include "baseline-pve.h"
#include "policy.h"

#define SEC 1000000ULL

/* ---- ours: src/policy.c, exactly as ppnd calls it ---- */

struct ours {
        struct policy_tunables t;
        struct policy_vm_state *st;
        struct policy_vm *vms;
        struct policy_decision *dec;
};

static void ours_stop(void *ctx) {
        struct ours *o = ctx;
        if (!o)
                return;
        free(o->st);
        free(o->vms);
        free(o->dec);
        free(o);
}

static void *ours_start(const struct sim *s) {
        struct ours *o = calloc(1, sizeof *o);
        if (!o)
                return NULL;
        policy_tunables_default(&o->t);
        o->st = calloc(s->n, sizeof *o->st);
        o->vms = calloc(s->n, sizeof *o->vms);
        o->dec = calloc(s->n, sizeof *o->dec);
        if (!o->st || !o->vms || !o->dec) {
                ours_stop(o);
                return NULL;
        }
        return o;
}

static struct policy_vm ours_vm(const struct sim_guest *g, const struct policy_vm_state *st) {
        return (struct policy_vm) {
                .name = g->spec->name, .min = g->spec->min, .max = g->spec->max,
                .shares = g->spec->shares, .target = g->target, .actual = g->actual,
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

static int ours_tick(void *ctx, struct sim *s) {
        struct ours *o = ctx;
        for (size_t i = 0; i < s->n; i++)
                o->vms[i] = ours_vm(&s->g[i], &o->st[i]);
        struct policy_node node = {
                .now_usec = s->now_usec, .physical = s->trace->physical,
                .reserve = s->trace->reserve, .host_available = sim_host_available(s),
                .host_available_known = true, .psi_known = false,
        };
        int r = policy_decide(&o->t, &node, o->vms, s->n, o->dec, NULL);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n; i++) {
                o->st[i] = o->dec[i].state;
                if (o->dec[i].apply)
                        sim_set_target(s, i, o->dec[i].target);
                else
                        s->g[i].target = o->dec[i].target;
        }
        return 0;
}

/* ---- oVirt MOM ---- */

struct mom {
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

static void *mom_start(const struct sim *s) {
        struct mom *m = calloc(1, sizeof *m);
        if (!m)
                return NULL;
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
                uint64_t target = mom_decide(host_free_pct, &mg);
                if (target)
                        sim_set_target(s, i, target);
        }
        return 0;
}

/* ---- Proxmox VE ---- */

static void *pve_start(const struct sim *s) {
        return calloc(s->n + 1, sizeof(struct pve_vm));
}

static int pve_tick(void *ctx, struct sim *s) {
        struct pve_vm *vms = ctx;
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
        int64_t goal = pve_goal(s->trace->physical, sim_host_available(s));
        int r = pve_compute_alg1(vms, s->n, goal, PVE_MAXCHANGE, res);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n; i++)
                if (res[i] && res[i] != vms[i].balloon)
                        sim_set_target(s, i, (uint64_t) res[i]);
        return 0;
}

const struct sim_driver sim_drivers[] = {
        { "ppnd", 1 * SEC, 1 * SEC, 0, ours_start, NULL, ours_tick, ours_stop },
        { "mom", MOM_POLICY_USEC, MOM_SAMPLE_USEC, MOM_SAMPLE_USEC, mom_start, mom_sample,
          mom_tick, mom_stop },
        { "proxmox", PVE_CYCLE_USEC, PVE_STATS_USEC, 0, pve_start, NULL, pve_tick, free },
};
const size_t sim_n_drivers = ELEMENTSOF(sim_drivers);
