/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the manager's files share, and nothing outside src/ppnd/ sees (manager.h is the public
 * contract): the daemon's state, one record per managed VM, and the functions one part calls
 * in another.
 *   manager-vm.c        the VM table: adoption, status figures, ledger changes applied live
 *   manager-round.c     the controller round, the fast signal and the loop (signals, reload)
 *   manager-requests.c  the control socket's requests, the metrics adapter and the event feed
 */

#include "manager.h"

#include "actuator.h"
#include "backend.h"
#include "cgroup.h"
#include "control.h"
#include "fastgrow.h"
#include "fleet-agent.h"
#include "history.h"
#include "ledger.h"
#include "metrics.h"
#include "policy.h"
#include "relocate-agent.h"
#include "settle.h"
#include "status.h"


/* A file of /proc/PID/ read every round or more often: kept open, read with one pread (an
 * open/read/read/close is four system calls, and the open a path walk in procfs). */
struct proc_file {
        int fd;                         /* -1: none */
        pid_t pid;                      /* the process it was opened for */
};

struct managed_vm {
        struct manager *m;
        struct ledger_vm entry;         /* the ledger's record as last loaded */
        struct backend *link;
        struct policy_vm_state pstate;  /* the policy's memory between ticks */
        uint64_t target;                /* target in force; 0 = none yet (take actual) */
        struct policy_decision last;    /* the latest decision (reason, numbers) */
        bool decided;
        bool placed;                    /* QEMU is in its cgroup */
        uint32_t placed_weight;
        char cg_why[192];               /* why CPU placement failed, "" if fine */
        bool lease_applied;             /* the ledger override as last handed to the policy */
        uint64_t lease_target;
        int64_t lease_expires;
        bool in_round;
        bool ever_running;              /* adopted before: the next adoption is a reconnect */
        struct history_ring history;    /* samples for ppnctl history/plot (manager.history_cap) */
        enum actuator_reason vmem_reason; /* the virtio-mem actuator's last recorded reason */
        struct fastgrow_state fast;     /* RSS samples for the fast signal */
        struct proc_file statm;         /* QEMU's /proc/PID/statm (the fast signal), kept open */
        clockid_t cpu_clock;            /* QEMU's CPU-time clock (clock_getcpuclockid()) ... */
        pid_t cpu_clock_pid;            /* ... for this pid (0: none yet) */
        uint64_t cpu_usec;              /* QEMU's CPU time read this round (POLICY_STAT_UNKNOWN: not read) */
        uint64_t rss, rss_usec;         /* QEMU's resident set as last read (0: unknown) and when */
        uint64_t ask_rss;               /* ... when its statistics were last asked (0: not read then) */
        uint64_t rss_alloc;             /* the host's allocation counter read before that (0: unknown) */
        /* Adaptive sampling (settle.h): the size and RSS when the statistics were last asked,
         * and whether something the manager did or was told makes them due at the next round. */
        uint64_t settle_size, settle_rss;
        bool unsettled;
        bool skipped;                   /* this round did not read its statistics (settled) */
};

struct manager {
        sd_event *event;
        sd_event_source *tick_source;
        sd_event_source *ledger_source;
        struct ppn_config *cfg;
        char *config_path;
        struct control *control;
        struct eventlog events;
        struct ledger *ledger;
        struct ledger_state *lstate;
        struct ppn_cgroup *cg;
        struct policy_tunables tunables;
        struct managed_vm **vms;        /* sorted by name, as the ledger lists them */
        size_t n_vms;
        size_t history_cap;             /* samples per VM: [daemon] history-memory shared by all */
        unsigned round_pending;         /* VMs whose sample is still due */
        struct pool_status pool;
        /* What the fast signal may grant: the policy's free memory at its last round, less what
         * that round and fast grows since handed out (decide(), fast_grow()). */
        int64_t fast_free;
        uint64_t ticks;
        char last_status[128];
        size_t status_len[2];           /* the last full [0] and brief [1] status replies' lengths:
                                         * the next one's buffer */
        struct metrics_server *metrics; /* NULL unless [metrics] enabled */
        struct metrics_counters counters;
        /* The policy's input and output, kept between rounds: at 2,000 VMs a fresh calloc()
         * per round was half a megabyte mapped, faulted in and unmapped every second. */
        struct policy_vm *round_vms;
        struct policy_decision *round_decisions;
        size_t round_cap;
        struct fleet_agent *fleet;      /* NULL unless [fleet] enabled; runs off the loop */
        sd_event_source *fast_source;   /* the fast signal's 200 ms timer */
        struct fastgrow_tunables fast_tun;
        /* The host's allocation counter (/proc/vmstat pgalloc_*, bytes) at the fast signal's
         * last two periods (0 = not read): the gate before the per-VM reads (fastgrow_host_quiet). */
        uint64_t alloc_cur, alloc_cur_usec, alloc_prev, alloc_prev_usec;
        uint64_t alloc_latest;          /* the counter's last reading, by the timer or the round (0: unknown) */
        bool host_over;                 /* the host over capacity at the last reading of its MemAvailable,
                                         * by the round or the timer (policy_host_over()) */
        uint64_t fast_held_usec;        /* the fast signal last could not act (no memory free for a grow) */
        struct settle_tunables settle_tun;
        bool verified;                  /* this round read the skipped VMs its policy would shrink */
        /* The fast signal's period under [controller] fast-signal-reads: the VMs it would read,
         * nearest the grow condition first (kept between periods: no allocation per period). */
        struct fastgrow_pick *fast_picks;
        size_t fast_picks_cap;
        const char *proc_dir;
        uint64_t page_size;             /* for /proc/PID/statm */
        struct relocate_agent *relocate;        /* live moves into this node; likewise */
};

/* ---- manager-vm.c ---- */

struct managed_vm *find_vm(struct manager *m, const char *name);

/* The sizes `ppnctl status` shows (STATUS_UNKNOWN where nobody knows), without the text. */
void status_sizes(const struct managed_vm *v, uint64_t *ret_target, uint64_t *ret_actual,
                  uint64_t *ret_available);

/* Everything `ppnctl status` shows for v. */
/* now and real: the monotonic and wall clocks, read once by the caller for all VMs. */
void fill_status(const struct managed_vm *v, uint64_t now, uint64_t real, struct vm_status *s);

/* The QMP link's options from the config in force. */
void link_options(const struct manager *m, struct vmlink_options *o);

struct managed_vm *managed_vm_free(struct managed_vm *v);

/* Sizes every VM's history ring for n VMs sharing [daemon] history-memory. */
void manager_size_histories(struct manager *m, size_t n);

/* Opens the ledger, loads it into the VM table and starts polling it for changes. */
int setup_ledger(struct manager *m, struct ppn_error *err);

/* ---- manager-round.c ---- */

/* Samples every running VM; the last sample to arrive runs decide(). No-op while one is in flight. */
void start_round(struct manager *m);

/* Runs the policy over the VM table and applies its decisions. */
void decide(struct manager *m);

/* ---- manager-requests.c ---- */

/* The control socket with its request table. */
int setup_control(struct manager *m, struct ppn_error *err);

/* The metrics endpoint, if [metrics] enabled. */
int setup_metrics(struct manager *m, struct ppn_error *err);
