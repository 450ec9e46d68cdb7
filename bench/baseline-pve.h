/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Proxmox VE's auto-ballooning, re-implemented for the simulator from its published source:
 * proxmox/pve-manager `PVE/AutoBalloon.pm` (compute_alg1) and `PVE/Service/pvestatd.pm`
 * (auto_balloning, run every 10 s; guest statistics polled every 2 s).
 *
 *   goal = MemTotal · 80 % − (MemTotal − MemAvailable)         (pvestatd; > 10 MiB grows,
 *                                                              < −10 MiB shrinks, else nothing)
 *   desired = balloon_min + alloc · shares / Σ shares, clamped to [balloon_min, maxmem],
 *   at most 100 MiB per VM per cycle; growth first to VMs with little free memory, shrink
 *   first from VMs with free > balloon_min / 4, then from all.
 * Pure: no clock, no I/O.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PVE_CYCLE_USEC (10 * 1000000ULL)
#define PVE_STATS_USEC (2 * 1000000ULL)
#define PVE_MAXCHANGE ((int64_t) 100 * 1024 * 1024)
#define PVE_TARGET_PCT 80   /* node option ballooning-target, default 80 */

struct pve_vm {
        int64_t balloon;         /* query-balloon actual (0 = no balloon driver: skipped) */
        int64_t balloon_min;     /* config "balloon" (0 = not set: skipped) */
        int64_t maxmem;          /* config "memory" */
        int64_t freemem;         /* guest stat-free-memory, 0 = unknown */
        unsigned shares;         /* 0 = excluded; the perl code reads 0 as "skip" too */
};

/* pvestatd's goal from host /proc/meminfo. */
int64_t pve_goal(uint64_t memtotal, uint64_t memavailable);
/* The same with another ballooning-target (percent of MemTotal; the default is 80). */
int64_t pve_goal_pct(uint64_t memtotal, uint64_t memavailable, double target_pct);

/* compute_alg1. ret_targets[i] = new balloon size for VM i, or 0 = no entry in the result.
 * pvestatd then sends `balloon` for every entry different from the current actual.
 * Returns 0 or -ENOMEM. */
int pve_compute_alg1(const struct pve_vm *vms, size_t n, int64_t goal, int64_t maxchange,
                     int64_t *ret_targets);
