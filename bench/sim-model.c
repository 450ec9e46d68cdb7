/* SPDX-License-Identifier: Apache-2.0 */
#include "sim-model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define USEC 1000000.0

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* What the guest's anonymous memory needs beyond what it can hold at all (RAM + swap). */
static uint64_t oom_shortfall(const struct sim_guest *g) {
        uint64_t need = SIM_KERNEL + g->ws, room = g->actual + SIM_SWAP;
        return need > room ? need - room : 0;
}

/* The page cache after this step's evictions and reads (see the header). */
static uint64_t next_cache(const struct sim_guest *g, uint64_t room, uint64_t io, double dt) {
        uint64_t hot = g->spec->cache, cache = min_u64(g->cache, room);
        cache = max_u64(cache, min_u64(hot, room));
        uint64_t grown = cache + (uint64_t) ((double) io * dt);
        uint64_t limit = min_u64(room, max_u64(cache, hot + g->spec->files));
        return min_u64(grown, limit);
}

/* Recomputes the guest's memory split from actual, ws and this step's file reads. */
static void guest_split(struct sim_guest *g, uint64_t io, double dt) {
        uint64_t usable = g->actual > SIM_KERNEL ? g->actual - SIM_KERNEL : 0;
        g->resident = min_u64(g->ws, usable);
        g->swapped = min_u64(g->ws - g->resident, SIM_SWAP);
        g->available = usable - g->resident;
        g->cache = next_cache(g, g->available, io, dt);
        g->free = g->available - g->cache;
        uint64_t in_use = SIM_KERNEL + g->resident + g->cache;
        g->touched = min_u64(max_u64(g->touched, in_use), g->actual);
}

int sim_init(struct sim *s, const struct trace *t) {
        *s = (struct sim) { .trace = t, .n = t->n_vms, .reporting = true, .deflate_on_oom = true };
        s->g = calloc(t->n_vms, sizeof *s->g);
        if (!s->g)
                return -ENOMEM;
        for (size_t i = 0; i < s->n; i++) {
                struct sim_guest *g = &s->g[i];
                g->spec = &t->vms[i];
                g->actual = g->target = g->spec->init;
                g->ws = trace_ws(t, i, 0);
                guest_split(g, 0, 0);
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
        if (g->target < g->actual && g->inflating) {
                uint64_t step = (uint64_t) ceil(SIM_INFLATE_RATE * dt);
                uint64_t to = g->actual - min_u64(step, g->actual - g->target);
                uint64_t floor = inflate_floor(g);
                if (to < floor)
                        to = floor < g->actual ? floor : g->actual;
                g->actual = to;
                /* Pages in the balloon are discarded by QEMU: the host gets them back. */
                g->touched = min_u64(g->touched, g->actual);
                if (g->actual == g->target)
                        g->inflating = false;
        } else if (g->target > g->actual) {
                uint64_t step = (uint64_t) ceil(SIM_DEFLATE_RATE * dt);
                g->actual += min_u64(step, g->target - g->actual);
        }
}

/* deflate-on-oom: the guest takes pages back from its balloon instead of killing. */
static void deflate_on_oom(struct sim_guest *g, double dt) {
        uint64_t short_by = oom_shortfall(g);
        g->deflating_oom = false;
        if (!short_by || g->actual >= g->spec->max)
                return;
        uint64_t step = min_u64((uint64_t) ceil(SIM_OOM_DEFLATE_RATE * dt), g->spec->max - g->actual);
        g->actual += min_u64(step, short_by);
        g->oom_deflated += min_u64(step, short_by);
        g->inflating = false;
        g->deflating_oom = true;
}

static void count_faults(struct sim_guest *g, double dt) {
        uint64_t hot = g->spec->cache, missing = hot - min_u64(hot, g->cache);
        double swap_in = (double) g->swapped * SIM_SWAP_TOUCH * dt;
        double refault = (double) missing * SIM_REFAULT * dt;
        g->swap_in += swap_in;
        g->major_faults += (swap_in + refault) / SIM_PAGE;
}

/* This step's stall of the guest's workload, before the host's share (a fraction ≤ 1). */
static double guest_stall(const struct sim_guest *g) {
        if (g->oom || g->deflating_oom)
                return 1.0;
        double s = 0;
        if (g->ws > 0)
                s += SIM_THRASH * (double) g->swapped / (double) g->ws;
        uint64_t hot = g->spec->cache, missing = hot - min_u64(hot, g->cache);
        if (missing)
                s += SIM_THRASH * (double) missing / (double) (g->ws + hot);
        return s;
}

bool sim_guest_pressed(const struct sim_guest *g) {
        return g->available < max_u64(64 * MIB, g->actual / 20) || g->swapped > 0;
}

static void count_guest(struct sim *s, struct sim_guest *g, double dt) {
        if (sim_guest_pressed(g))
                s->m.pressure_s += dt;
        s->m.reclaimed_gib_s += (double) (g->spec->max - g->actual) / GIB * dt;
        s->m.footprint_gib_min += (double) g->touched / GIB * dt / 60.0;
        bool oom = oom_shortfall(g) > 0 && !g->deflating_oom;
        if (oom && !g->oom)
                s->m.oom_episodes++;
        if (oom)
                s->m.oom_s += dt;
        g->oom = oom;
}

/* Free page reporting: the free memory the guest touched goes back in ≥ 2 MiB blocks. */
static void report_free_pages(struct sim_guest *g) {
        uint64_t in_use = SIM_KERNEL + g->resident + g->cache;
        if (g->touched > in_use)
                g->touched = in_use + (uint64_t) ((double) (g->touched - in_use) * (1 - SIM_REPORT_SHARE));
}

static void step_guest(struct sim *s, size_t i, size_t sec, double dt) {
        struct sim_guest *g = &s->g[i];
        g->ws = trace_ws(s->trace, i, sec);
        move_balloon(g, dt);
        if (s->deflate_on_oom)
                deflate_on_oom(g, dt);
        else
                g->deflating_oom = false;
        guest_split(g, trace_io(s->trace, i, sec), dt);
        if (s->reporting && s->now_usec % SIM_REPORT_USEC == 0)
                report_free_pages(g);
        count_faults(g, dt);
        count_guest(s, g, dt);
}

void sim_step(struct sim *s) {
        double dt = SIM_STEP_USEC / USEC;
        s->now_usec += SIM_STEP_USEC;
        size_t sec = (size_t) (s->now_usec / 1000000ULL);
        for (size_t i = 0; i < s->n; i++)
                step_guest(s, i, sec, dt);
        uint64_t used = sim_host_used(s);
        double avail = (double) s->trace->physical - (double) used;
        double host_share = 0;
        if (avail < 0) {
                s->m.host_overrun_s += dt;
                s->m.host_swap_gib_s += -avail / GIB * dt;
                host_share = SIM_THRASH * -avail / (double) (used - s->trace->base);
        }
        for (size_t i = 0; i < s->n; i++) {
                struct sim_guest *g = &s->g[i];
                double own = fmin(1.0, guest_stall(g));
                g->guest_stall_s += own * dt;
                g->stall_s += fmin(1.0, own + host_share) * dt;
        }
        if (avail < s->m.min_host_available)
                s->m.min_host_available = avail;
}

void sim_publish(struct sim *s, size_t i) {
        struct sim_guest *g = &s->g[i];
        g->pub_available = g->available;
        g->pub_free = g->free;
        g->pub_total = g->actual;
        g->pub_cache = g->cache;
        g->pub_swap_in = (uint64_t) g->swap_in;
        g->pub_major_faults = (uint64_t) g->major_faults;
        g->pub_stall_usec = (uint64_t) (g->guest_stall_s * USEC);
        g->pub_usec = s->now_usec ? s->now_usec : 1;
        g->pub_touched = g->touched;
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
        s->g[i].inflating = target < s->g[i].actual;
        s->m.commands++;
}

double sim_slowdown_max(const struct sim *s) {
        double t = (double) s->now_usec / USEC, worst = 1.0;
        for (size_t i = 0; i < s->n && t > 0; i++) {
                double work = fmax(t - s->g[i].stall_s, t / 100.0);
                worst = fmax(worst, t / work);
        }
        return worst;
}

/* What VM i of t holds touched at second sec at the least with no page of its working set in
 * swap: its kernel and the working set, as much of it as its max leaves room for. */
static uint64_t floor_touched(const struct trace *t, size_t i, size_t sec) {
        uint64_t room = t->vms[i].max > SIM_KERNEL ? t->vms[i].max - SIM_KERNEL : 0;
        uint64_t ws = trace_ws(t, i, sec);
        return SIM_KERNEL + (ws < room ? ws : room);
}

/* The least host footprint of any policy under which no VM of t is ever under pressure
 * (GiB·min): such a VM has its whole working set resident (no guest swap), and a guest holds
 * touched at least its kernel and what is resident (sim-model.h), cache and unreported free
 * memory being extra. A working set beyond max − kernel cannot be all resident under any
 * policy; only the part that can counts. Per VM and second, SIM_KERNEL + min(ws, max −
 * SIM_KERNEL), the working set being constant within a second. bench/sim.c emits it as policy "floor". */
double sim_floor_footprint(const struct trace *t) {
        double sum = 0;
        for (size_t sec = 0; sec < t->seconds; sec++)
                for (size_t i = 0; i < t->n_vms; i++)
                        sum += (double) floor_touched(t, i, sec);
        return sum / GIB / 60.0;
}

/* Seconds in which even the pressure-free floor does not fit the host: base + Σ (SIM_KERNEL +
 * min(ws, max − SIM_KERNEL)) > physical, over the simulator's own steps (sim_step(): the step
 * ending at now reads the working set of second now / 1 s). In such a step every policy has a VM
 * under pressure or the host overrun: a VM not under pressure has no page in swap, so its whole
 * working set is resident and it holds touched at least SIM_KERNEL + ws (sim-model.h), and if
 * every VM did, base + Σ touched would exceed physical. So pressure + host overrun ≥ this, in
 * seconds, for every run of t (tests/test-sim-model.c, and bench/report.py on every run).
 * bench/sim.c emits it as policy "floor", metric "unfit". */
double sim_floor_unfit(const struct trace *t) {
        uint64_t end = (uint64_t) t->seconds * 1000000ULL;
        double unfit = 0;
        for (uint64_t now = 0; now < end;) {
                now += SIM_STEP_USEC;
                size_t sec = (size_t) (now / 1000000ULL);
                uint64_t need = t->base;
                for (size_t i = 0; i < t->n_vms; i++)
                        need += floor_touched(t, i, sec);
                if (need > t->physical)
                        unfit += SIM_STEP_USEC / 1e6;
        }
        return unfit;
}
