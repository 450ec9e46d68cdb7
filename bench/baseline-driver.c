/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppn-baseline: drives real guests over QMP with a re-implemented baseline policy (oVirt MOM,
 * bench/baseline-mom.h; Proxmox VE, bench/baseline-pve.h), on each tool's own cadence and
 * reading what each tool reads, for the real-guest overcommit benchmark (bench/overcommit.py).
 *
 *   ppn-baseline mom|pve --physical SIZE --host-use SIZE [--once] VM...
 *   VM = NAME,QMP-SOCKET,QEMU-PID,MIN,MAX     (sizes as ppnctl takes them: 256M, 1G, ...)
 *
 * The node: the benchmark's node is smaller than this machine, so the host memory both tools
 * read is that node's, computed as /proc/meminfo would show it there:
 *   MemTotal = --physical;  MemFree = MemAvailable = physical − host-use − Σ QEMU RSS
 * (MOM's host_free_pct is (MemFree + Buffers + Cached) / MemTotal; nothing else runs on the
 * node, so Buffers + Cached are 0.)
 *   mom: guest statistics every 5 s (stats polling 5 s), host and guest samples every 5 s into
 *        10-sample histories, the policy every 10 s (vdsm's MOM defaults); mem_unused is the
 *        guest's stat-free-memory.
 *   pve: guest statistics polled every 2 s, the auto-ballooning cycle every 10 s (pvestatd),
 *        freemem = stat-free-memory, 100 MiB per VM per cycle.
 * Every balloon command is printed as a JSON line {"t": s, "vm": NAME, "actual": B, "target": B};
 * at the end (SIGTERM/SIGINT, or after one sample and one decision with --once) one line
 * {"commands": N, "errors": N}. Log lines go to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balloon.h"
#include "baseline-mom.h"
#include "baseline-pve.h"
#include "hostmem.h"
#include "qmp.h"
#include "util.h"

#define MAX_VMS 64
#define QMP_TIMEOUT_USEC (10 * 1000000ULL)

enum tool { TOOL_MOM, TOOL_PVE };

struct dvm {
        char *name, *qmp_path;
        pid_t pid;
        uint64_t min, max;
        struct qmp *q;
        uint64_t actual;
        int64_t free_mem;          /* stat-free-memory, -1 = not reported */
        struct mom_history cur, unused;
};

struct driver {
        enum tool tool;
        uint64_t physical, host_use;
        bool once;
        struct dvm vms[MAX_VMS];
        size_t n;
        struct mom_history host_free;
        uint64_t t0;
        unsigned commands, errors;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { stop = sig; }

static int usage(void) {
        fprintf(stderr, "usage: ppn-baseline mom|pve --physical SIZE --host-use SIZE [--once] "
                        "NAME,QMP-SOCKET,QEMU-PID,MIN,MAX...\n");
        return 2;
}

/* NAME,QMP,PID,MIN,MAX into v (strings point into s, which is modified). */
static int parse_vm(char *s, struct dvm *v) {
        char *f[5];
        for (int i = 0; i < 5; i++) {
                f[i] = strsep(&s, ",");
                if (!f[i] || !*f[i])
                        return -EINVAL;
        }
        uint64_t pid;
        if (s || parse_u64(f[2], &pid) < 0 || pid == 0 || parse_size(f[3], &v->min) < 0 ||
            parse_size(f[4], &v->max) < 0 || v->min == 0 || v->min > v->max)
                return -EINVAL;
        v->name = f[0];
        v->qmp_path = f[1];
        v->pid = (pid_t) pid;
        return 0;
}

/* The node's MemAvailable as the tool would read it there (see the top of the file). */
static uint64_t node_available(const struct driver *d) {
        uint64_t used = d->host_use;
        for (size_t i = 0; i < d->n; i++) {
                uint64_t rss = 0;
                if (hostmem_read_pid_rss("/proc", d->vms[i].pid, &rss, NULL) == 0)
                        used += rss;
        }
        return used < d->physical ? d->physical - used : 0;
}

/* Reads actual and stat-free-memory of one VM. */
static int sample_vm(struct dvm *v) {
        struct qmp_error err = {};
        struct balloon_stats st;
        uint64_t fm;
        int r = balloon_query_sync(v->q, QMP_TIMEOUT_USEC, &v->actual, &err);
        if (r < 0) {
                fprintf(stderr, "ppn-baseline: %s: query-balloon: %s\n", v->name, err.class[0] ? err.desc : err.error.msg);
                return r;
        }
        v->free_mem = -1;
        if (balloon_read_stats_sync(v->q, NULL, QMP_TIMEOUT_USEC, &st, &err) == 0 && st.last_update &&
            balloon_stats_get(&st, BALLOON_STAT_FREE_MEMORY, &fm) == 0)
                v->free_mem = (int64_t) fm;
        return 0;
}

static double elapsed_s(const struct driver *d) { return (double) (now_usec() - d->t0) / 1e6; }

static void apply(struct driver *d, struct dvm *v, uint64_t target) {
        struct qmp_error err = {};
        printf("{\"t\": %.2f, \"vm\": \"%s\", \"actual\": %" PRIu64 ", \"target\": %" PRIu64 "}\n",
               elapsed_s(d), v->name, v->actual, target);
        fflush(stdout);
        if (balloon_set_target_sync(v->q, target, v->min, QMP_TIMEOUT_USEC, &err) < 0) {
                fprintf(stderr, "ppn-baseline: %s: balloon %" PRIu64 ": %s\n", v->name, target, err.class[0] ? err.desc : err.error.msg);
                d->errors++;
        } else
                d->commands++;
}

static void mom_sample(struct driver *d) {
        mom_history_push(&d->host_free, (double) node_available(d) / (double) d->physical);
        for (size_t i = 0; i < d->n; i++) {
                struct dvm *v = &d->vms[i];
                if (sample_vm(v) < 0) {
                        d->errors++;
                        continue;
                }
                /* MOM's collectors: a guest without mem_unused gives no sample (the rules skip it). */
                if (v->free_mem >= 0) {
                        mom_history_push(&v->cur, (double) v->actual);
                        mom_history_push(&v->unused, (double) v->free_mem);
                }
        }
}

static void mom_policy(struct driver *d) {
        double host_free_pct = mom_history_avg(&d->host_free);
        for (size_t i = 0; i < d->n; i++) {
                struct dvm *v = &d->vms[i];
                struct mom_guest g = {
                        .balloon_cur = v->actual, .balloon_min = v->min, .balloon_max = v->max,
                        .avg_cur = mom_history_avg(&v->cur), .avg_unused = mom_history_avg(&v->unused),
                        .valid = v->unused.n > 0,
                };
                uint64_t t = mom_decide(host_free_pct, &g);
                if (t)
                        apply(d, v, t);
        }
}

static void pve_cycle(struct driver *d) {
        struct pve_vm pv[MAX_VMS];
        int64_t targets[MAX_VMS];
        int64_t goal = pve_goal(d->physical, node_available(d));
        for (size_t i = 0; i < d->n; i++) {
                struct dvm *v = &d->vms[i];
                bool ok = sample_vm(v) == 0;
                if (!ok)
                        d->errors++;
                pv[i] = (struct pve_vm) {
                        .balloon = ok ? (int64_t) v->actual : 0, .balloon_min = (int64_t) v->min,
                        .maxmem = (int64_t) v->max, .freemem = ok && v->free_mem > 0 ? v->free_mem : 0,
                        .shares = 1000,
                };
        }
        if (pve_compute_alg1(pv, d->n, goal, PVE_MAXCHANGE, targets) < 0)
                return;
        for (size_t i = 0; i < d->n; i++)
                if (targets[i] > 0 && targets[i] != pv[i].balloon)
                        apply(d, &d->vms[i], (uint64_t) targets[i]);
}

static void sleep_until(uint64_t usec) {
        uint64_t now = now_usec();
        if (usec <= now)
                return;
        struct timespec ts = { .tv_sec = (time_t) ((usec - now) / 1000000),
                               .tv_nsec = (long) ((usec - now) % 1000000) * 1000 };
        nanosleep(&ts, NULL);   /* a signal ends it early: the loop checks stop */
}

static void run(struct driver *d) {
        uint64_t sample_every = d->tool == TOOL_MOM ? MOM_SAMPLE_USEC : PVE_CYCLE_USEC;
        uint64_t policy_every = d->tool == TOOL_MOM ? MOM_POLICY_USEC : PVE_CYCLE_USEC;
        uint64_t next_sample = d->t0, next_policy = d->t0 + (d->once ? 0 : policy_every);
        while (!stop) {
                uint64_t now = now_usec();
                if (now >= next_sample) {
                        if (d->tool == TOOL_MOM)
                                mom_sample(d);
                        next_sample += sample_every;
                }
                if (now_usec() >= next_policy) {
                        if (d->tool == TOOL_MOM)
                                mom_policy(d);
                        else
                                pve_cycle(d);
                        next_policy += policy_every;
                        if (d->once)
                                return;
                }
                sleep_until(next_sample < next_policy ? next_sample : next_policy);
        }
}

static int connect_all(struct driver *d) {
        unsigned interval = d->tool == TOOL_MOM ? (unsigned) (MOM_SAMPLE_USEC / 1000000)
                                                 : (unsigned) (PVE_STATS_USEC / 1000000);
        for (size_t i = 0; i < d->n; i++) {
                struct dvm *v = &d->vms[i];
                struct qmp_error err = {};
                if (qmp_connect_sync(v->qmp_path, QMP_TIMEOUT_USEC, &v->q, &err) < 0 ||
                    balloon_enable_stats_sync(v->q, NULL, interval, QMP_TIMEOUT_USEC, &err) < 0) {
                        fprintf(stderr, "ppn-baseline: %s (%s): %s\n", v->name, v->qmp_path, err.class[0] ? err.desc : err.error.msg);
                        return -EIO;
                }
        }
        return 0;
}

static int parse_args(int argc, char **argv, struct driver *d) {
        static const struct option opts[] = {
                { "physical", required_argument, NULL, 'p' },
                { "host-use", required_argument, NULL, 'u' },
                { "once", no_argument, NULL, 'o' },
                {}
        };
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                if (c == 'p' && parse_size(optarg, &d->physical) == 0)
                        continue;
                if (c == 'u' && parse_size(optarg, &d->host_use) == 0)
                        continue;
                if (c == 'o') {
                        d->once = true;
                        continue;
                }
                if (c == 'p' || c == 'u')
                        fprintf(stderr, "ppn-baseline: --%s: '%s' is not a size (e.g. 2G, 256M)\n",
                                c == 'p' ? "physical" : "host-use", optarg);
                return -EINVAL;
        }
        if (optind >= argc || d->physical == 0)
                return -EINVAL;
        if (strcmp(argv[optind], "mom") == 0)
                d->tool = TOOL_MOM;
        else if (strcmp(argv[optind], "pve") == 0)
                d->tool = TOOL_PVE;
        else
                return -EINVAL;
        for (int i = optind + 1; i < argc; i++) {
                if (d->n == MAX_VMS || parse_vm(argv[i], &d->vms[d->n]) < 0) {
                        fprintf(stderr, "ppn-baseline: '%s': want NAME,QMP-SOCKET,QEMU-PID,MIN,MAX "
                                        "(min ≤ max, at most %d VMs)\n", argv[i], MAX_VMS);
                        return -EINVAL;
                }
                d->n++;
        }
        return d->n > 0 ? 0 : -EINVAL;
}

int main(int argc, char **argv) {
        static struct driver d;
        if (parse_args(argc, argv, &d) < 0)
                return usage();
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        int r = connect_all(&d);
        if (r == 0) {
                d.t0 = now_usec();
                run(&d);
        }
        printf("{\"commands\": %u, \"errors\": %u}\n", d.commands, d.errors);
        for (size_t i = 0; i < d.n; i++)
                qmp_free(d.vms[i].q);
        return r < 0 ? 1 : 0;
}
