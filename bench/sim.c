/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppn-sim: replays guest-demand traces through our policy and the baselines and prints
 * one JSON record per measurement (JSON lines) on stdout:
 *   {"part":"sim","trace":T,"policy":P,"metric":M,"value":V,"unit":U}
 *
 *   ppn-sim TRACE.csv...
 *   ppn-sim --policies      (the policies compared, one per line)
 *   ppn-sim --decide N      (the policy's own cost per tick for N VMs; see decide_cost)
 *
 * The model is bench/sim-model.h, the policies bench/sim-drivers.h. Events within a step:
 * the model advances 0.1 s, then guests publish statistics (at k·interval + 0.5 s, so a
 * policy never reads a sample taken at its own instant), monitors sample, policies decide.
 * A trace with VMs named "idle" and "busy" also yields free_4g: seconds from the moment the
 * busy VM's working set first changes until the idle VM's actual is 4 GiB below what it was
 * then (null if that never happens within the trace).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "sim-drivers.h"
#include "sim-model.h"
#include "trace.h"
#include "util.h"

#define HALF_SEC 500000ULL

struct free4g {
        long idle, busy;          /* VM indexes, -1 = not this kind of trace */
        uint64_t busy_ws0, onset_usec, actual_at_onset;
        double seconds;           /* NAN until done */
};

static long find_vm(const struct trace *t, const char *name) {
        for (size_t i = 0; i < t->n_vms; i++)
                if (strcmp(t->vms[i].name, name) == 0)
                        return (long) i;
        return -1;
}

static void free4g_watch(struct free4g *f, const struct sim *s) {
        if (f->idle < 0 || f->busy < 0 || !isnan(f->seconds))
                return;
        const struct sim_guest *idle = &s->g[f->idle], *busy = &s->g[f->busy];
        if (!f->onset_usec && busy->ws != f->busy_ws0) {
                f->onset_usec = s->now_usec;
                f->actual_at_onset = idle->actual;
        }
        if (f->onset_usec && idle->actual + 4 * GIB <= f->actual_at_onset)
                f->seconds = (double) (s->now_usec - f->onset_usec) / 1e6;
}

static void emit(const char *trace, const char *policy, const char *metric, double v,
                 const char *unit) {
        if (isnan(v))
                printf("{\"part\":\"sim\",\"trace\":\"%s\",\"policy\":\"%s\",\"metric\":\"%s\","
                       "\"value\":null,\"unit\":\"%s\"}\n", trace, policy, metric, unit);
        else
                printf("{\"part\":\"sim\",\"trace\":\"%s\",\"policy\":\"%s\",\"metric\":\"%s\","
                       "\"value\":%.3f,\"unit\":\"%s\"}\n", trace, policy, metric, v, unit);
}

static void events(const struct sim_driver *d, void *ctx, struct sim *s, int *r) {
        for (size_t i = 0; i < s->n; i++)
                if (s->now_usec % d->stats_usec == HALF_SEC % d->stats_usec)
                        sim_publish(s, i);
        if (d->sample && s->now_usec % d->sample_usec == 0)
                d->sample(ctx, s);
        if (d->fast && s->now_usec % SIM_FAST_USEC == 0 && *r >= 0)
                *r = d->fast(ctx, s);
        if (s->now_usec % d->tick_usec == 0 && *r >= 0)
                *r = d->tick(ctx, s);
}

/* PPN_SIM_DEBUG=POLICY: one line per second on stderr: t, host available, then per VM
 * working set / actual / target in MiB. For checking the model by eye. */
static void debug_line(const struct sim *s) {
        if (s->now_usec % 1000000ULL != 0)
                return;
        fprintf(stderr, "%4llu avail=%llu", (unsigned long long) (s->now_usec / 1000000ULL),
                (unsigned long long) (sim_host_available(s) / MIB));
        for (size_t i = 0; i < s->n; i++)
                fprintf(stderr, " %s=%llu/%llu/%llu%s", s->g[i].spec->name,
                        (unsigned long long) (s->g[i].ws / MIB),
                        (unsigned long long) (s->g[i].actual / MIB),
                        (unsigned long long) (s->g[i].target / MIB), s->g[i].oom ? "!" : "");
        fputc('\n', stderr);
}

static int run_one(const struct trace *t, const struct sim_driver *d) {
        const char *debug = getenv("PPN_SIM_DEBUG");
        struct sim s;
        int r = sim_init(&s, t);
        if (r < 0)
                return r;
        void *ctx = d->start(&s, d->matched);
        if (!ctx) {
                sim_done(&s);
                return -ENOMEM;
        }
        struct free4g f = { .idle = find_vm(t, "idle"), .busy = find_vm(t, "busy"), .seconds = NAN };
        if (f.busy >= 0)
                f.busy_ws0 = trace_ws(t, (size_t) f.busy, 0);
        uint64_t end = (uint64_t) t->seconds * 1000000ULL;
        r = 0;
        while (s.now_usec < end && r >= 0) {
                sim_step(&s);
                events(d, ctx, &s, &r);
                free4g_watch(&f, &s);
                if (debug && strcmp(debug, d->name) == 0)
                        debug_line(&s);
        }
        d->stop(ctx);
        if (r >= 0) {
                emit(t->name, d->name, "footprint", s.m.footprint_gib_min, "GiB*min");
                emit(t->name, d->name, "host_overrun", s.m.host_overrun_s, "s");
                emit(t->name, d->name, "host_swap", s.m.host_swap_gib_s, "GiB*s");
                emit(t->name, d->name, "pressure", s.m.pressure_s, "VM*s");
                emit(t->name, d->name, "oom_episodes", s.m.oom_episodes, "count");
                emit(t->name, d->name, "oom_time", s.m.oom_s, "s");
                emit(t->name, d->name, "slowdown", sim_slowdown_max(&s), "ratio");
                emit(t->name, d->name, "commands", s.m.commands, "count");
                if (f.idle >= 0 && f.busy >= 0)
                        emit(t->name, d->name, "free_4g", f.seconds, "s");
        }
        sim_done(&s);
        return r;
}

/* --decide N: the pure policy's cost for N VMs, a third under pressure and no free memory
 * (the expensive case: growth waits on reclaim from donors). Median of 21 calls, in ms. */
static int decide_cost(size_t n) {
        struct policy_tunables t;
        policy_tunables_default(&t);
        _cleanup_free_ struct policy_vm *vms = calloc(n, sizeof *vms);
        _cleanup_free_ struct policy_decision *dec = calloc(n, sizeof *dec);
        if (!vms || !dec)
                return -ENOMEM;
        uint64_t now = 100 * 1000000ULL;
        for (size_t i = 0; i < n; i++) {
                bool pressed = i % 3 == 0;
                vms[i] = (struct policy_vm) {
                        .min = 512 * MIB, .max = 4 * GIB, .shares = 1000, .target = 2 * GIB,
                        .actual = 2 * GIB, .driver = POLICY_DRIVER_OK,
                        .stats = { .available = pressed ? 16 * MIB : 1200 * MIB, .free = 8 * MIB,
                                   .total = 2 * GIB, .swap_in = 0, .major_faults = 0,
                                   .last_update_usec = now - 500000 },
                };
        }
        struct policy_node node = { .now_usec = now, .physical = n * 2 * GIB + GIB, .reserve = GIB,
                                    .host_available = 8 * GIB, .host_available_known = true };
        double ms[21];
        for (size_t k = 0; k < ELEMENTSOF(ms); k++) {
                uint64_t t0 = now_usec();
                int r = policy_decide(&t, &node, vms, n, dec, NULL);
                if (r < 0)
                        return r;
                ms[k] = (double) (now_usec() - t0) / 1000.0;
        }
        for (size_t a = 1; a < ELEMENTSOF(ms); a++)       /* insertion sort: 21 values */
                for (size_t b = a; b > 0 && ms[b] < ms[b - 1]; b--) {
                        double x = ms[b]; ms[b] = ms[b - 1]; ms[b - 1] = x;
                }
        printf("{\"part\":\"scale\",\"vms\":%zu,\"metric\":\"policy_decide\",\"value\":%.3f,"
               "\"unit\":\"ms\"}\n", n, ms[ELEMENTSOF(ms) / 2]);
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 2 && strcmp(argv[1], "--policies") == 0) {
                for (size_t d = 0; d < sim_n_drivers; d++)
                        puts(sim_drivers[d].name);
                return 0;
        }
        if (argc == 3 && strcmp(argv[1], "--decide") == 0) {
                uint64_t n;
                if (parse_u64(argv[2], &n) < 0 || n == 0 || n > 100000)
                        return 2;
                return decide_cost((size_t) n) < 0 ? 1 : 0;
        }
        if (argc < 2) {
                fprintf(stderr, "usage: ppn-sim TRACE.csv... | ppn-sim --policies | ppn-sim --decide N\n");
                return 2;
        }
        for (int a = 1; a < argc; a++) {
                struct ppn_error err = {};
                struct trace *t = NULL;
                if (trace_load(argv[a], &t, &err) < 0) {
                        fprintf(stderr, "ppn-sim: %s\n", err.msg);
                        return 1;
                }
                emit(t->name, "floor", "footprint", sim_floor_footprint(t), "GiB*min");
                emit(t->name, "floor", "unfit", sim_floor_unfit(t), "s");
                for (size_t d = 0; d < sim_n_drivers; d++) {
                        int r = run_one(t, &sim_drivers[d]);
                        if (r < 0) {
                                fprintf(stderr, "ppn-sim: %s on %s: %s\n", sim_drivers[d].name,
                                        t->name, strerror(-r));
                                trace_free(t);
                                return 1;
                        }
                }
                trace_free(t);
        }
        return 0;
}
