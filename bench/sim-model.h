/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The simulated node: guests whose working sets follow a trace, balloons that move toward
 * their targets at measured rates, the statistics guests would publish, and the host's
 * memory. Pure and deterministic (no clock, no I/O): bench/sim.c drives it in steps of
 * SIM_STEP_USEC and a policy driver reads stats and sets targets between steps.
 *
 * The guest (all sizes bytes):
 *   usable    = actual − SIM_KERNEL                (kernel, page tables, balloon driver)
 *   resident  = min(ws, usable)                    anonymous memory in RAM
 *   swapped   = ws − resident                      the rest is in the guest's swap
 *   cache     = min(cache wanted, usable − resident)     page cache fills what is left
 *   available = usable − resident                  (cache is reclaimable: MemAvailable)
 *   free      = available − cache                  (MemFree: what MOM and Proxmox read)
 *   total     = actual                             (no deflate-on-oom: MemTotal shrinks)
 * Swap-in while swapped > 0: SIM_SWAP_TOUCH of the swapped pages per second (a working set
 * that does not fit is touched again and again); major faults = swap-in pages + page-cache
 * refaults (SIM_REFAULT of the missing cache per second).
 *
 * Balloon: actual moves toward the target every step, inflating at SIM_INFLATE_RATE and
 * deflating at SIM_DEFLATE_RATE (notes/qemu-facts.md, QEMU 7.2 under TCG: 1024→512 MiB in
 * 0.6–1.5 s, 256→1024 MiB in 0.1–0.35 s). Inflating can push anonymous memory to swap, but
 * not past the swap size: then the balloon stops (the guest's balloon allocation fails).
 *
 * Metrics (per run):
 *   reclaimed_gib_s  ∫ Σ (max − actual) dt: memory the balloons keep away from the guests
 *   pressure_s       Σ over VMs of the time with available < max(64 MiB, 5 % of actual),
 *                    or with part of the working set in swap
 *   oom_events       an OOM event is counted when a guest's working set exceeds what it can
 *                    hold at all — usable + SIM_SWAP — i.e. the guest's OOM killer must
 *                    kill; counted at onset and again every SIM_OOM_REPEAT_USEC while it
 *                    lasts (the killed service restarts and is killed again)
 *   host_overrun_s   time the host's RSS of all guests + base exceeds physical (the host
 *                    would swap or kill a QEMU)
 *   commands         balloon commands sent
 * Host RSS of a guest = the memory it touched (high-water mark of kernel + resident + cache
 * since the balloon last took it away), never more than actual.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace.h"

#define SIM_STEP_USEC 100000ULL                 /* 0.1 s */
#define SIM_KERNEL (96 * MIB)
#define SIM_SWAP (512 * MIB)
#define SIM_INFLATE_RATE (512.0 * MIB)           /* bytes/s */
#define SIM_DEFLATE_RATE (2048.0 * MIB)
#define SIM_SWAP_TOUCH 0.10                     /* of swapped bytes, per second */
#define SIM_REFAULT 0.02                        /* of missing page cache, per second */
#define SIM_OOM_REPEAT_USEC (10 * 1000000ULL)
#define SIM_PAGE 4096.0

struct sim_guest {
        const struct trace_vm *spec;
        uint64_t actual, target, touched;
        uint64_t ws, resident, swapped, cache, available, free;
        double swap_in, major_faults;           /* cumulative, bytes / count */
        /* Last published statistics (what a policy may read). */
        uint64_t pub_available, pub_free, pub_total, pub_swap_in, pub_major_faults;
        uint64_t pub_usec;                      /* 0 = never published */
        bool oom;                               /* in an OOM episode */
        uint64_t oom_next_usec;
};

struct sim_metrics {
        double reclaimed_gib_s, pressure_s, host_overrun_s;
        unsigned oom_events, commands;
        double min_host_available;               /* bytes (can be negative: overrun) */
};

struct sim {
        const struct trace *trace;
        uint64_t now_usec;
        size_t n;
        struct sim_guest *g;
        struct sim_metrics m;
};

/* Sets up the node at t = 0: actual = target = init, touched = what the guest uses then. */
int sim_init(struct sim *s, const struct trace *t);
void sim_done(struct sim *s);

/* Advances one step: working sets from the trace, balloons, guest state, metrics. */
void sim_step(struct sim *s);

/* The guest publishes its statistics now (the balloon driver's stats interval). */
void sim_publish(struct sim *s, size_t i);

/* Host memory as /proc/meminfo would show it. Used = base + Σ RSS. */
uint64_t sim_host_used(const struct sim *s);
uint64_t sim_host_available(const struct sim *s);   /* physical − used, 0 when overrun */

/* A policy sends a balloon command (each call is counted as one command). */
void sim_set_target(struct sim *s, size_t i, uint64_t target);
