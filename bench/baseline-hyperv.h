/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A Hyper-V Dynamic Memory-style policy for the simulator: every VM is given its committed
 * memory plus a buffer (default 20 %), within [minimum, maximum], re-evaluated every second
 * (Linux guests report pressure every 1 s). When the wants do not fit the capacity, every VM
 * keeps its minimum and the rest is divided in proportion to weight × (want − minimum).
 * "Committed" is what the guest's programs and kernel hold (actual − available: Linux's
 * hv_balloon reports committed memory, not page cache). Pure: no clock, no I/O.
 */

#include <stddef.h>
#include <stdint.h>

#define HV_TICK_USEC (1 * 1000000ULL)
#define HV_BUFFER_PCT 20

struct hv_vm {
        uint64_t min, max;
        uint64_t committed;          /* bytes */
        unsigned weight;             /* memory weight (Hyper-V: 0–10000, default 5000) */
};

/* The wanted size of one VM: committed · (100 + buffer)/100 within [min, max]. */
uint64_t hv_want(const struct hv_vm *v, unsigned buffer_pct);

/* Targets for all VMs on a node of `capacity` bytes. ret_targets has n entries. */
void hv_targets(const struct hv_vm *vms, size_t n, uint64_t capacity, unsigned buffer_pct,
                uint64_t *ret_targets);
