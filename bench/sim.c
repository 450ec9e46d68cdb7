/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppn-sim: replays guest-demand traces through our policy and the two baselines and prints
 * one JSON record per measurement (JSON lines) on stdout:
 *   {"part":"sim","trace":T,"policy":P,"metric":M,"value":V,"unit":U}
 *
 *   ppn-sim TRACE.csv...
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
        void *ctx = d->start(&s);
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
                emit(t->name, d->name, "reclaimed", s.m.reclaimed_gib_s, "GiB*s");
                emit(t->name, d->name, "pressure", s.m.pressure_s, "VM*s");
                emit(t->name, d->name, "oom_events", s.m.oom_events, "count");
                emit(t->name, d->name, "host_overrun", s.m.host_overrun_s, "s");
                emit(t->name, d->name, "commands", s.m.commands, "count");
                if (f.idle >= 0 && f.busy >= 0)
                        emit(t->name, d->name, "free_4g", f.seconds, "s");
        }
        sim_done(&s);
        return r;
}

int main(int argc, char **argv) {
        if (argc < 2) {
                fprintf(stderr, "usage: ppn-sim TRACE.csv...\n");
                return 2;
        }
        for (int a = 1; a < argc; a++) {
                struct ppn_error err = {};
                struct trace *t = NULL;
                if (trace_load(argv[a], &t, &err) < 0) {
                        fprintf(stderr, "ppn-sim: %s\n", err.msg);
                        return 1;
                }
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
