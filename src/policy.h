/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The balloon policy: pure. A snapshot of the node and its VMs in, one decision per VM out.
 * No I/O, no clock reads (time is node.now_usec), no globals: the daemon calls it every tick
 * (1 s) and the benchmark simulator drives the very same function with traces.
 * docs/policy.md explains the rules and numbers to an operator.
 *
 * Units: sizes in bytes, times in microseconds on ONE monotonic clock chosen by the caller.
 * QEMU's guest-stats "last-update" is wall-clock seconds: the caller converts it to that clock
 * (mono_now - (real_now - last_update * 1e6)) before filling policy_guest_stats.
 *
 * Per-VM memory the policy needs between ticks lives in struct policy_vm_state: the caller
 * zero-initialises it when it adopts a VM, passes it in with every snapshot, and stores
 * decision.state back after the tick. If applying a decision fails (QMP error), the caller may
 * keep the old state instead: nothing is lost, rates are recomputed over the longer interval.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* What QEMU reports for a statistic the guest has not published. */
#define POLICY_STAT_UNKNOWN UINT64_MAX

/* [policy] free-page-reporting: which rule set applies to a VM. NO: every VM's target is a
 * promise the capacity covers (classic). YES: every VM returns its free memory (reporting
 * rules). AUTO: each VM as its balloon says (policy_vm.reports_free_pages). */
enum policy_fpr {
        POLICY_FPR_NO,
        POLICY_FPR_YES,
        POLICY_FPR_AUTO,
};

/* Tunables. policy_tunables_default() documents every default and why. */
struct policy_tunables {
        uint64_t headroom_bytes;          /* free memory left above a guest's use: at least … */
        unsigned headroom_pct;            /* … or this % of its use, whichever is larger */
        uint64_t pressure_available_bytes;/* guest available below max(this, pct of actual) = pressure */
        unsigned pressure_available_pct;
        uint64_t swap_in_burst;           /* guest swap-in, bytes/s, at or above which = pressure (0 = off) */
        uint64_t major_fault_burst;       /* guest major faults/s at or above which = pressure (0 = off) */
        uint64_t grow_step_bytes;         /* growth under pressure: at least this … */
        unsigned grow_step_pct;           /* … or this % of the current target, at once */
        unsigned shrink_pct;              /* one tick reclaims at most this % of the excess … */
        uint64_t min_step_bytes;          /* … and no change is smaller than max(this, */
        unsigned min_step_permille;       /*    this ‰ of the VM's maximum) */
        uint64_t host_low_bytes;          /* host MemAvailable below max(this, pct of physical) */
        unsigned host_low_pct;            /*    = the node needs memory back */
        double psi_some_threshold;        /* host memory PSI some avg10 (%) above = node needs memory */
        uint64_t stale_usec;              /* guest stats older than this are stale: hold */
        uint64_t stuck_usec;              /* no progress toward the target for this long = stuck */
        uint64_t stuck_retry_usec;        /* a stuck balloon is tried again after this long */
        uint64_t override_usec;           /* length of a lease made from a change behind our back */
        uint64_t shrink_hold_usec;        /* after growing a VM, no idle reclaim from it for this long */
        unsigned idle_tax_pct;            /* idle memory tax when choosing donors (0..99) */
        unsigned active_cpu_pct;          /* QEMU using at least this % of one CPU over a tick = the VM is active … */
        uint64_t active_hold_usec;        /* … and stays so this long: its page cache is not idle memory (0 = off) */
        enum policy_fpr free_page_reporting; /* which VMs return free memory to the host (QEMU
                                           * free-page-reporting=on): for them growth is paid from
                                           * host MemAvailable and their targets above what they
                                           * hold cost nothing (see policy_vm.reports_free_pages) */
};

/* Fills the documented defaults. */
void policy_tunables_default(struct policy_tunables *ret);
/* Checks ranges (percentages ≤ 100, idle tax ≤ 99, steps > 0, …). 0 or -EINVAL with words. */
int policy_tunables_check(const struct policy_tunables *t, struct ppn_error *err);

enum policy_driver {
        POLICY_DRIVER_OK,            /* QMP connected, balloon device present */
        POLICY_DRIVER_NO_BALLOON,    /* QMP says DeviceNotActive: pass actual = max */
        POLICY_DRIVER_DISCONNECTED,  /* QMP not connected / QEMU absent */
};

/* Guest statistics as published by the balloon driver (QMP qom-get guest-stats). */
struct policy_guest_stats {
        uint64_t available;          /* stat-available-memory, bytes, or POLICY_STAT_UNKNOWN */
        uint64_t free;               /* stat-free-memory */
        uint64_t total;              /* stat-total-memory */
        uint64_t swap_in;            /* stat-swap-in, cumulative bytes (UNKNOWN allowed) */
        uint64_t swap_out;           /* stat-swap-out, cumulative bytes: informational, not used */
        uint64_t major_faults;       /* stat-major-faults, cumulative count (UNKNOWN allowed) */
        uint64_t last_update_usec;   /* on the caller's clock; 0 = never updated */
};

enum policy_lease_kind {
        POLICY_LEASE_NONE,
        POLICY_LEASE_OPERATOR,       /* ppnctl balloon VM SIZE --for D: target = lease, applied */
        POLICY_LEASE_DETECTED,       /* someone else moved the balloon: follow actual, send nothing */
};

/* Per-VM memory between ticks. Zero = freshly adopted. The caller sets and clears operator
 * leases with policy_lease_set()/policy_lease_clear(); everything else is policy-owned. */
struct policy_vm_state {
        /* Previous guest sample, for counter rates. Rates are per second over the last two
         * distinct samples (by last_update); a counter that goes backwards (guest reboot)
         * restarts the baseline with rate 0. */
        uint64_t prev_update_usec;
        uint64_t prev_swap_in;
        uint64_t prev_major_faults;
        uint64_t swap_in_rate;       /* bytes/s */
        uint64_t major_fault_rate;   /* faults/s */
        uint64_t prev_use;           /* actual − available at the previous sample */
        uint64_t use_growth_rate;    /* bytes/s the guest's use grew between the last two (0 if it fell) */
        uint64_t prev_cpu_usec;      /* QEMU's CPU time at the previous tick (policy_vm.cpu_usec) */
        uint64_t prev_cpu_at_usec;   /* when it was read (0 = never) */
        uint64_t active_usec;        /* last tick QEMU used ≥ active_cpu_pct of a CPU, its balloon
                                      * not inflating (0 = never) */

        /* The balloon's progress toward the current target. */
        uint64_t set_usec;           /* when the target was set (0 = unknown: first tick) */
        uint64_t set_target;         /* the target then */
        uint64_t actual_at_set;      /* actual then */
        uint64_t best_distance;      /* closest |actual - target| since then */
        uint64_t progress_usec;      /* when best_distance last improved (or was met) */
        uint64_t stuck_since_usec;   /* 0 = not stuck */
        uint64_t stuck_actual;       /* actual when found stuck; moving off it un-sticks */
        uint64_t last_grow_usec;     /* last time the policy grew this VM */
        uint64_t rise_sample_usec;   /* actual rose above the target: last_update of the guest
                                      * sample in hand then (0 = no rise being judged) */

        /* Override lease. */
        enum policy_lease_kind lease_kind;
        uint64_t lease_target;       /* operator: the size asked; detected: the actual followed */
        uint64_t lease_expiry_usec;
};

/* One VM in the snapshot. */
struct policy_vm {
        const char *name;            /* for the caller's logs; the policy does not read it */
        uint64_t min;                /* ledger balloon minimum (reservation) */
        uint64_t max;                /* ledger maximum (boot RAM) */
        uint64_t shares;             /* ledger memory shares (0 = only its minimum under contention) */
        uint64_t target;             /* target in force (last applied; actual at adoption) */
        uint64_t actual;             /* query-balloon actual */
        enum policy_driver driver;
        /* DISCONNECTED and never measured since the daemon started (being adopted): counted at
         * its target (what QEMU may hold: its max) when memory is handed out, at its min when
         * the pool decides whether it is over-committed. No VM is cut on account of one that has
         * not been read yet; none grows into memory it may hold. */
        bool unmeasured;
        bool reports_free_pages;     /* its balloon has free-page-reporting on (QMP qom-get) */
        struct policy_guest_stats stats;
        /* QEMU's own CPU time (utime + stime of its process, cumulative, µs), read on the host:
         * nothing inside the guest. POLICY_STAT_UNKNOWN when not read; a constant (0 in the
         * simulator) makes the VM never active. */
        uint64_t cpu_usec;
        struct policy_vm_state state;
};

/* The node in the snapshot. */
struct policy_node {
        uint64_t now_usec;
        uint64_t physical;           /* RAM the pool manages (ledger node physical) */
        uint64_t reserve;            /* host reserve; capacity = physical - reserve */
        uint64_t host_available;     /* /proc/meminfo MemAvailable */
        bool host_available_known;
        double psi_some_avg10;       /* /proc/pressure/memory some avg10, percent */
        bool psi_known;              /* false: PSI absent, the signal is ignored */
};

/* Why a decision was taken; stable names for metrics ("decisions by reason"). */
enum policy_reason {
        POLICY_REASON_STEADY,          /* within its band: nothing to do */
        POLICY_REASON_GROW_PRESSURE,   /* guest under pressure: one large step */
        POLICY_REASON_GROW_HEADROOM,   /* use + headroom above target */
        POLICY_REASON_WAIT_MEMORY,     /* wants to grow, no memory free yet (reclaim under way) */
        POLICY_REASON_SHRINK_NODE,     /* idle memory reclaimed: node short (MemAvailable/PSI) */
        POLICY_REASON_SHRINK_DEMAND,   /* idle memory reclaimed for another VM's demand */
        POLICY_REASON_SHRINK_FAIR,     /* above its fair share under contention */
        POLICY_REASON_SHRINK_OVERCOMMIT, /* Σ targets above capacity */
        POLICY_REASON_SMALL_CHANGE,    /* a change smaller than the minimum step, or hysteresis */
        POLICY_REASON_CLAMP,           /* target outside [min, max] (ledger changed): corrected */
        POLICY_REASON_HOLD_BAD_CONFIG, /* min > max or max 0 */
        POLICY_REASON_HOLD_DISCONNECTED,
        POLICY_REASON_HOLD_NO_BALLOON,
        POLICY_REASON_HOLD_NO_STATS,   /* unknown (2^64-1) or never updated */
        POLICY_REASON_HOLD_STALE_STATS,
        POLICY_REASON_HOLD_BAD_STATS,  /* total 0, available > total, values above max, … */
        POLICY_REASON_STUCK,           /* balloon made no progress: fixed at its actual */
        POLICY_REASON_LEASE,           /* operator lease */
        POLICY_REASON_OVERRIDE,        /* detected change behind our back: followed, not fought */
        POLICY_REASON_GUEST_DEFLATED,  /* the guest took memory itself (deflate-on-oom): adopted */
        _POLICY_REASON_MAX,
};

/* "steady", "grow-pressure", … Never NULL for a valid reason. */
const char *policy_reason_to_string(enum policy_reason r);

#define POLICY_WHY_MAX 160

struct policy_decision {
        uint64_t target;             /* the VM's target after this tick: store it as vm.target */
        bool apply;                  /* send target to the balloon now */
        bool pinned;                 /* held, stuck or leased: not moved by the pool this tick */
        enum policy_reason reason;
        char why[POLICY_WHY_MAX];    /* one line for the operator: the numbers behind reason */
        /* What the policy saw (for status and metrics; 0 when stats are not usable). */
        uint64_t use;                /* actual - guest available */
        uint64_t need;               /* use + headroom (+ a growth step under pressure), in [min, max] */
        uint64_t fair_share;         /* entitlement under contention (= need when uncontended) */
        bool pressure;
        bool reporting;              /* the free page reporting rules applied to this VM */
        struct policy_vm_state state; /* store back */
};

struct policy_summary {
        uint64_t capacity;           /* physical - reserve */
        uint64_t committed;          /* Σ max(target, actual) before the tick */
        uint64_t targets_before;     /* Σ targets (clamped to [min, max]) before */
        uint64_t targets_after;      /* Σ decision.target */
        uint64_t free;               /* memory granted from: capacity - committed, ≤ host MemAvailable - low */
        uint64_t granted;            /* of free, what this tick's decisions handed out */
        uint64_t reclaim_wanted;     /* bytes the pool asked donors for this tick */
        bool node_short;             /* host MemAvailable low or PSI above threshold */
        bool contended;              /* Σ need > what the pool can give */
        size_t reporting;            /* VMs under the free page reporting rules */
        char why[POLICY_WHY_MAX];
};

/*
 * One tick. vms[i] → decisions[i] (n entries, caller-allocated). summary may be NULL.
 * Guarantees (tests/test-policy.c proves each):
 *  - min ≤ decision.target ≤ max for every VM with a sane config;
 *  - a VM held for missing, stale or bad stats, or a lost driver, keeps its target
 *    (clamped to [min, max]);
 *  - if Σ over pinned VMs of their decision targets plus Σ over the others of their clamped
 *    input targets fits the capacity, so does Σ decision.target (growth only spends free memory);
 *  - deterministic: same input, same output.
 * Returns 0, -EINVAL if a pointer is NULL with n > 0, -ENOMEM (scratch space, O(n)).
 * Cost: O(n) plus, for what is reclaimed on demand, O(log n) per minimum step (the donors in a
 * heap by ρ; before it, a pass over every VM per step).
 */
int policy_decide(const struct policy_tunables *t, const struct policy_node *node,
                  const struct policy_vm *vms, size_t n,
                  struct policy_decision *decisions, struct policy_summary *summary);

/* Operator leases (ppnctl balloon VM SIZE --for D / ppnctl release VM). The policy clamps the
 * lease to [min, max] when it applies it; it ends at expiry_usec. Setting a lease also clears a
 * stuck mark: the operator's size is tried. Clearing one returns the VM to the pool at once. */
void policy_lease_set(struct policy_vm_state *s, uint64_t target, uint64_t expiry_usec);
void policy_lease_clear(struct policy_vm_state *s);

/* The host's low mark for a node of physical bytes: max(host_low_bytes, host_low_pct of it).
 * Under it the node is short; under a sixteenth of it the host is over capacity (a real node
 * swaps there, or its OOM killer picks a QEMU). */
uint64_t policy_host_low(const struct policy_tunables *t, uint64_t physical);
bool policy_host_over(const struct policy_tunables *t, uint64_t physical, uint64_t host_available);

/* Whether the free page reporting rules apply to a VM whose balloon reports free pages or not
 * (policy_vm.reports_free_pages) under t. Only those rules use QEMU's CPU time (policy_vm.cpu_usec,
 * the active rule): for the other VMs the caller need not read it. */
bool policy_vm_reports(const struct policy_tunables *t, bool reports_free_pages);

/* The minimum step for a VM of this maximum: max(min_step_bytes, min_step_permille ‰ of max). */
uint64_t policy_min_step(const struct policy_tunables *t, uint64_t max);
