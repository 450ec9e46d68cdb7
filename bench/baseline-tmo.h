/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A TMO / Senpai-style pressure-driven reclaim for the simulator (Meta's TMO, ASPLOS'22; the
 * Senpai plugin of facebookincubator/oomd with its defaults): per VM a limit — here the
 * balloon target — is probed down until the guest shows memory stall, and backed off when it
 * does. Every tick (1 s) the stall time since the last tick is added to an integral:
 *   integral > target (10 ms):  limit += limit · min(max_backoff, (integral/target/20)²),
 *                               integral = 0, next probe in 6 ticks;
 *   else, once 6 ticks passed:  limit −= limit · min(max_probe, (target/integral/10)²)
 *                               (max_probe 1 %), integral = 0;
 * within [VM minimum, max]. The stall time is the guest's own (its PSI some), which a guest
 * agent or a guest kernel ≥ 6.12 could export; QEMU 7.2's balloon statistics do not carry it.
 * Pure: no clock, no I/O.
 */

#include <stdbool.h>
#include <stdint.h>

#define TMO_TICK_USEC (1 * 1000000ULL)
#define TMO_INTERVAL 6                 /* ticks between probes */
#define TMO_PRESSURE_USEC 10000        /* 10 ms of stall per interval */
#define TMO_MAX_PROBE 0.01
#define TMO_COEFF_PROBE 10.0
#define TMO_MAX_BACKOFF 1.0
#define TMO_COEFF_BACKOFF 20.0

struct tmo_state {
        bool started;
        uint64_t limit;
        uint64_t integral_usec;
        uint64_t prev_stall_usec;
        unsigned grace;               /* ticks until the next probe */
};

/* One tick for one VM: stall_usec is the guest's cumulative stall time. Returns the limit
 * (the balloon target wanted now). The first call starts at actual. */
uint64_t tmo_tick(struct tmo_state *st, uint64_t stall_usec, uint64_t actual, uint64_t min,
                  uint64_t max);
