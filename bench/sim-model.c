/* SPDX-License-Identifier: Apache-2.0 */
#include "sim-model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define USEC 1000000.0

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* Recomputes the guest's memory split from actual and ws (see the header). */
static void guest_split(struct sim_guest *g) {
        uint64_t usable = g->actual > SIM_KERNEL ? g->actual - SIM_KERNEL : 0;
        g->resident = min_u64(g->ws, usable);
        g->swapped = g->ws - g->resident;
        g->available = usable - g->resident;
        g->cache = min_u64(g->spec->cache, g->available);
        g->free = g->available - g->cache;
        uint64_t in_use = SIM_KERNEL + g->resident + g->cache;
        g->touched = min_u64(max_u64(g->touched, in_use), g->actual);
}

int sim_init(struct sim *s, const struct trace *t) {
        *s = (struct sim) { .trace = t, .n = t->n_vms };
        s->g = calloc(t->n_vms, sizeof *s->g);
        if (!s->g)
                return -ENOMEM;
        for (size_t i = 0; i < s->n; i++) {
                struct sim_guest *g = &s->g[i];
                g->spec = &t->vms[i];
                g->actual = g->target = g->spec->init;
                g->ws = trace_ws(t, i, 0);
                guest_split(g);
        }
        s->m.min_host_available = INFINITY;
        return 0;
}

void sim_done(struct sim *s) {
        free(s->g);
        s->g = NULL;
}

/* The lowest actual the balloon can reach: the working set may go to swap, not further. */
static uint64_t inflate_floor(const struct sim_guest *g) {
        uint64_t need = SIM_KERNEL + g->ws;
        return need > SIM_SWAP ? need - SIM_SWAP : 0;
}

static void move_balloon(struct sim_guest *g, double dt) {
        if (g->target < g->actual) {
                uint64_t step = (uint64_t) ceil(SIM_INFLATE_RATE * dt);
                uint64_t to = g->actual - min_u64(step, g->actual - g->target);
                uint64_t floor = inflate_floor(g);
                if (to < floor)
                        to = floor < g->actual ? floor : g->actual;
                g->actual = to;
                /* Pages in the balloon are discarded by QEMU: the host gets them back. */
                g->touched = min_u64(g->touched, g->actual);
        } else if (g->target > g->actual) {
                uint64_t step = (uint64_t) ceil(SIM_DEFLATE_RATE * dt);
                g->actual += min_u64(step, g->target - g->actual);
        }
}

static void count_faults(struct sim_guest *g, double dt) {
        double swap_in = (double) g->swapped * SIM_SWAP_TOUCH * dt;
        double refault = (double) (g->spec->cache - g->cache) * SIM_REFAULT * dt;
        g->swap_in += swap_in;
        g->major_faults += (swap_in + refault) / SIM_PAGE;
}

static void count_guest(struct sim *s, struct sim_guest *g, double dt) {
        uint64_t low = max_u64(64 * MIB, g->actual / 20);
        if (g->available < low || g->swapped > 0)
                s->m.pressure_s += dt;
        s->m.reclaimed_gib_s += (double) (g->spec->max - g->actual) / GIB * dt;
        bool oom = g->ws + SIM_KERNEL > g->actual + SIM_SWAP;
        if (oom && (!g->oom || s->now_usec >= g->oom_next_usec)) {
                s->m.oom_events++;
                g->oom_next_usec = s->now_usec + SIM_OOM_REPEAT_USEC;
        }
        g->oom = oom;
}

void sim_step(struct sim *s) {
        double dt = SIM_STEP_USEC / USEC;
        s->now_usec += SIM_STEP_USEC;
        size_t sec = (size_t) (s->now_usec / 1000000ULL);
        for (size_t i = 0; i < s->n; i++) {
                struct sim_guest *g = &s->g[i];
                g->ws = trace_ws(s->trace, i, sec);
                move_balloon(g, dt);
                guest_split(g);
                count_faults(g, dt);
                count_guest(s, g, dt);
        }
        double avail = (double) s->trace->physical - (double) sim_host_used(s);
        if (avail < 0)
                s->m.host_overrun_s += dt;
        if (avail < s->m.min_host_available)
                s->m.min_host_available = avail;
}

void sim_publish(struct sim *s, size_t i) {
        struct sim_guest *g = &s->g[i];
        g->pub_available = g->available;
        g->pub_free = g->free;
        g->pub_total = g->actual;
        g->pub_swap_in = (uint64_t) g->swap_in;
        g->pub_major_faults = (uint64_t) g->major_faults;
        g->pub_usec = s->now_usec ? s->now_usec : 1;
}

uint64_t sim_host_used(const struct sim *s) {
        uint64_t used = s->trace->base;
        for (size_t i = 0; i < s->n; i++)
                used += s->g[i].touched;
        return used;
}

uint64_t sim_host_available(const struct sim *s) {
        uint64_t used = sim_host_used(s);
        return used < s->trace->physical ? s->trace->physical - used : 0;
}

void sim_set_target(struct sim *s, size_t i, uint64_t target) {
        s->g[i].target = target;
        s->m.commands++;
}
