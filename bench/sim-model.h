/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The simulated node: guests whose working sets and file reads follow a trace, balloons that
 * move toward their targets at measured rates, free page reporting, deflate-on-oom, the
 * statistics guests would publish, and the host's memory. Pure and deterministic (no clock,
 * no I/O): bench/sim.c drives it in steps of SIM_STEP_USEC and a policy driver reads stats and
 * sets targets between steps. Every guest runs as `ppnctl start` and Proxmox start it:
 * free-page-reporting=on and deflate-on-oom=on (struct sim's two flags; tests turn them off).
 *
 * The guest (all sizes bytes):
 *   usable    = actual − SIM_KERNEL                (kernel, page tables, balloon driver)
 *   resident  = min(ws, usable)                    anonymous memory in RAM
 *   swapped   = ws − resident                      the rest is in the guest's swap
 *   cache     page cache. Each step it first fills with the hot file set (cache_mib: the
 *             files the workload re-reads), then grows by what the programs read (IO of the
 *             trace), up to hot + files_mib, never past usable − resident (free memory only:
 *             reading more evicts older cache). Anonymous growth and the balloon reclaim it
 *             first (before any anonymous page goes to swap); nothing else does.
 *   available = usable − resident                  (cache is reclaimable: MemAvailable)
 *   free      = available − cache                  (MemFree: what MOM and Proxmox read)
 *
 * Host footprint of a guest ("touched"): what it holds touched — kernel + resident + cache,
 * plus memory it touched and freed that free page reporting has not returned yet. Every
 * SIM_REPORT_USEC (2 s), reporting hands back SIM_REPORT_SHARE of the free memory touched
 * since: the guest reports free pages in blocks of ≥ 2 MiB, and what is free in smaller
 * pieces stays (measured: a guest that freed 800 MiB went from 1,033 to ~300 MiB RSS within
 * 5 s, boot RSS ~230 MiB). Page cache is in use, so reporting never returns it. Pages taken by
 * the balloon are discarded by QEMU (touched ≤ actual); pages it gives back are untouched.
 *
 * Balloon: the guest's driver moves actual toward the last commanded target, inflating at
 * SIM_INFLATE_RATE and deflating at SIM_DEFLATE_RATE (QEMU 7.2 under TCG: 1024→512 MiB in
 * 0.6–1.5 s, 256→1024 MiB in 0.1–0.35 s). Inflating reclaims page cache first, then pushes
 * anonymous memory to swap, but not past the swap size: there the balloon stops.
 *
 * deflate-on-oom (QEMU 7.2, Linux's virtio_balloon OOM notifier): when the working set does
 * not fit in usable + swap, the guest takes pages back from its own balloon instead of
 * killing, at SIM_OOM_DEFLATE_RATE (a 600 MiB allocation at 256 MiB took ~2.8 s here), up to
 * max. The allocating program waits meanwhile (stall). The commanded target stays; the driver
 * stops inflating until the host sends a new command. An OOM kill happens only when the
 * balloon is empty (actual = max) or deflate-on-oom is off.
 *
 * Host: used = base + Σ touched. Σ above physical is an overrun: the host swaps the excess
 * (host_swap GiB·s) and every guest stalls for a share of it.
 *
 * Stall (per guest, per step, a fraction of the step capped at 1; workload slowdown =
 * T / (T − stall time)):
 *   SIM_THRASH × swapped / ws              working set partly in guest swap
 *   SIM_THRASH × missing hot cache / (ws + hot cache)    re-read files not cached
 *   1                                       waiting for deflate-on-oom, or OOM-killed
 *   SIM_THRASH × host excess / Σ touched    the host is swapping guest memory
 *
 * Metrics (per run):
 *   footprint_gib_min  ∫ Σ touched dt, GiB·min (host memory really backing guests)
 *   reclaimed_gib_s    ∫ Σ (max − actual) dt
 *   pressure_s         Σ over VMs of the time with available < max(64 MiB, 5 % of actual),
 *                      or part of the working set in swap
 *   oom_episodes       OOM kills: a working set beyond usable + swap with nothing left to
 *                      deflate; counted once at onset, oom_s the total time in them
 *   host_overrun_s     time base + Σ touched > physical; host_swap_gib_s ∫ the excess
 *   stall_s            per VM (g->stall_s); slowdown_max = the worst VM's slowdown
 *   commands           balloon commands sent
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
#define SIM_OOM_DEFLATE_RATE (256.0 * MIB)
#define SIM_REPORT_USEC (2 * 1000000ULL)
#define SIM_REPORT_SHARE 0.90
#define SIM_SWAP_TOUCH 0.10                     /* of swapped bytes, per second */
#define SIM_REFAULT 0.02                        /* of missing hot cache, per second */
#define SIM_THRASH 10.0
#define SIM_PAGE 4096.0

struct sim_guest {
        const struct trace_vm *spec;
        uint64_t actual, target, touched;
        bool inflating;                         /* the driver still chases a smaller target */
        uint64_t ws, resident, swapped, cache, available, free;
        uint64_t oom_deflated;                  /* bytes deflate-on-oom took back, cumulative */
        double swap_in, major_faults;           /* cumulative, bytes / count */
        double stall_s;                         /* cumulative */
        double guest_stall_s;                   /* the part the guest sees (not the host's swap) */
        /* Last published statistics (what a policy may read). */
        uint64_t pub_available, pub_free, pub_total, pub_cache, pub_swap_in, pub_major_faults;
        uint64_t pub_stall_usec;                /* guest_stall_s (PSI-like), cumulative: host swap
                                                 * shows in a guest as lost time, not as its own
                                                 * memory stall */
        uint64_t pub_usec;                      /* 0 = never published */
        uint64_t pub_touched;                   /* touched when they were published: what the
                                                 * fast signal counts spent from */
        bool oom;                               /* in an OOM episode */
        bool deflating_oom;                     /* deflate-on-oom at work this step */
};

struct sim_metrics {
        double footprint_gib_min, reclaimed_gib_s, pressure_s, host_overrun_s, host_swap_gib_s;
        double oom_s;
        unsigned oom_episodes, commands;
        double min_host_available;               /* bytes (can be negative: overrun) */
};

struct sim {
        const struct trace *trace;
        bool reporting, deflate_on_oom;          /* both on after sim_init */
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

/* Host memory as /proc/meminfo would show it. Used = base + Σ touched. */
uint64_t sim_host_used(const struct sim *s);
uint64_t sim_host_available(const struct sim *s);   /* physical − used, 0 when overrun */

/* A policy sends a balloon command (each call is counted as one command). */
void sim_set_target(struct sim *s, size_t i, uint64_t target);

/* The guest counts under pressure now (metric pressure_s): available < max(64 MiB, 5 % of
 * actual), or part of its working set in swap. */
bool sim_guest_pressed(const struct sim_guest *g);

/* The worst VM's slowdown so far: max over VMs of T / (T − stall), T = now. */
double sim_slowdown_max(const struct sim *s);

/* Bounds any policy meets on trace t (sim-model.c explains why): the least footprint with no
 * VM ever under pressure (GiB·min), and the seconds in which even that does not fit the host,
 * each of which has a VM under pressure or the host overrun. */
double sim_floor_footprint(const struct trace *t);
double sim_floor_unfit(const struct trace *t);
