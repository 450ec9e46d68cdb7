/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The policies the simulator compares, each on its own cadence and defaults, reading only
 * what it would read on a real node (every guest has free page reporting and deflate-on-oom):
 *   none               no controller: every VM stays at its maximum (the realistic default)
 *   ppnd               our policy (src/policy.c, the function the daemon calls), every 1 s,
 *                      guest stats every 1 s, host MemAvailable now; classic rules for every
 *                      VM ([policy] free-page-reporting = no); and the daemon's fast signal
 *                      (src/fastgrow.h) every 200 ms, each guest's host footprint for its
 *                      QEMU's RSS, as ppnd runs by default
 *   ppnd-fpr           the same with the reporting rules for every VM (= yes); every simulated
 *                      guest reports, so this is what the default (auto) does here
 *   ppnd-fpr-nofast    ppnd-fpr without the fast signal (ablation: what the signal buys)
 *   ppnd-10s           the default at a 10 s tick (ablation: what the 1 s tick buys)
 *   mom, mom-vdsm      oVirt MOM's default rules (bench/baseline-mom.c): policy every 10 s
 *                      (standalone MOM) or 15 s (vdsm's), 10-sample averages taken every 5 s
 *   proxmox            Proxmox VE's auto-ballooning (bench/baseline-pve.c), every 10 s, stats 2 s
 *   hyperv             Hyper-V-style committed + 20 % buffer (bench/baseline-hyperv.c), every 1 s
 *   xen                Xen squeezed's equal fraction of each range (bench/baseline-xen.c), 10 s
 *   chromeos           vm_concierge-style midpoint of guest and host slack, stall detection,
 *                      direction blocking (bench/baseline-chromeos.c), every 5 s
 *   tmo                TMO/Senpai-style stall-driven probing (bench/baseline-tmo.c), every 1 s
 * "-matched": the same policy with its host thresholds set to ppnd's: MOM's pressure mark at
 * the node's reserve and its critical mark at ppnd's host low mark, Proxmox's target at
 * physical − reserve, ChromeOS's host critical level at the reserve. Hyper-V and Xen size
 * against capacity = physical − reserve already, as ppnd does.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim-model.h"

struct sim_driver {
        const char *name;
        uint64_t tick_usec;        /* policy cadence */
        uint64_t stats_usec;       /* guest statistics interval */
        uint64_t sample_usec;      /* monitor sampling (0 = none) */
        void *(*start)(const struct sim *s, bool matched);
        void (*sample)(void *ctx, const struct sim *s);
        int (*tick)(void *ctx, struct sim *s);
        void (*stop)(void *ctx);
        bool matched;              /* baselines: the matched variant; ppnd: free_page_reporting */
        int (*fast)(void *ctx, struct sim *s);  /* every SIM_FAST_USEC (NULL: none): ppnd's fast signal */
};

#define SIM_FAST_USEC 200000ULL    /* ppnd's fast signal period */

extern const struct sim_driver sim_drivers[];
extern const size_t sim_n_drivers;
