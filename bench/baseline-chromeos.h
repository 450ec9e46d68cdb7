/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A ChromeOS vm_concierge-style balloon policy for the simulator (platform2
 * vm_tools/concierge/mm/balloon*): the balloon is sized so that guest and host keep equal
 * slack above their critical levels (the midpoint), a stalled inflation is undone, and a
 * resize blocks requests in the opposite direction for a while. Rules, per VM, every 5 s:
 *
 *   stall      the balloon is inflating (target below actual), the last resize was ≥ 4 s ago
 *              and actual fell by less than 15 MiB/s since the last check → deflate 128 MiB
 *              (high priority);
 *   sizing     guest slack = guest available − 400 MiB (guest critical level); host slack =
 *              (host available − host critical) / number of VMs (concierge balances one VM
 *              against the host; on a node of n VMs each is given an equal part of the host);
 *              delta = (guest slack − host slack) / 2: > 0 inflates by delta, < 0 deflates;
 *              the balloon never holds more than ¾ of the guest (actual ≥ max / 4) nor goes
 *              below the VM's minimum; changes of at most 1 % of max are not made;
 *   priority   an inflation is high priority when host slack < 0, a deflation when guest
 *              slack < 0, else low;
 *   blocking   a resize blocks opposite-direction requests of equal or lower priority for
 *              10 s (after a high-priority resize) or 100 s (after a low-priority one).
 * The host critical level is a parameter: 5.2 % of RAM by default in this model, the node's
 * reserve in the simulator's "matched" variant. Pure: no clock, no I/O.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CROS_TICK_USEC (5 * 1000000ULL)
#define CROS_GUEST_CRITICAL (400 * MIB)
#define CROS_HOST_CRITICAL_PERMILLE 52
#define CROS_STALL_AFTER_USEC (4 * 1000000ULL)
#define CROS_STALL_RATE (15 * MIB)               /* bytes/s */
#define CROS_STALL_DEFLATE (128 * MIB)
#define CROS_BLOCK_HIGH_USEC (10 * 1000000ULL)
#define CROS_BLOCK_LOW_USEC (100 * 1000000ULL)

#include "util.h"

struct cros_state {
        uint64_t resize_usec;        /* last resize (0 = none) */
        int dir;                     /* its direction: −1 inflate (smaller guest), +1 deflate */
        bool high;                   /* its priority */
        uint64_t check_usec, check_actual;   /* previous call, for the stall rate */
};

struct cros_vm {
        uint64_t min, max, target, actual;
        uint64_t guest_available;    /* the guest's MemAvailable */
};

struct cros_host {
        uint64_t now_usec;
        uint64_t available;          /* host MemAvailable */
        uint64_t critical;           /* host critical level, bytes */
        size_t n_vms;
};

/* One decision for one VM. Returns the new target, or 0 (nothing to send). Updates *st. */
uint64_t cros_decide(const struct cros_host *h, const struct cros_vm *v, struct cros_state *st);
