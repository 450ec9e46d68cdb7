/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The policies the simulator compares, each on its own cadence, reading only what it would
 * read on a real node:
 *   ppnd     our policy (src/policy.c, the same function the daemon calls), every 1 s,
 *            guest stats every 1 s, host MemAvailable now
 *   mom      oVirt MOM's default rules (bench/baseline-mom.c), policy every 10 s over
 *            10-sample averages taken every 5 s, guest stats every 5 s
 *   proxmox  Proxmox VE's auto-ballooning (bench/baseline-pve.c), every 10 s, guest stats
 *            every 2 s
 */

#include <stddef.h>
#include <stdint.h>

#include "sim-model.h"

struct sim_driver {
        const char *name;
        uint64_t tick_usec;        /* policy cadence */
        uint64_t stats_usec;       /* guest statistics interval */
        uint64_t sample_usec;      /* monitor sampling (0 = none) */
        void *(*start)(const struct sim *s);
        void (*sample)(void *ctx, const struct sim *s);
        int (*tick)(void *ctx, struct sim *s);
        void (*stop)(void *ctx);
};

extern const struct sim_driver sim_drivers[];
extern const size_t sim_n_drivers;
