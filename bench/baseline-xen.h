/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Xen squeezed's balancing rule for the simulator (xapi-project/squeezed, doc/design): every
 * domain has a range [dynamic-min, dynamic-max] and every domain gets the same fraction of its
 * range, the largest fraction for which Σ targets fit the memory the host can give (capacity:
 * physical − the host's reserve). It reads no guest statistics at all. Rebalanced every 10 s.
 * Pure: no clock, no I/O.
 */

#include <stddef.h>
#include <stdint.h>

#define XEN_TICK_USEC (10 * 1000000ULL)

/* f = (capacity − Σ min) / Σ (max − min), within [0, 1]; target_i = min_i + f · (max_i − min_i).
 * mins and maxes have n entries; ret_targets too. */
void xen_targets(const uint64_t *mins, const uint64_t *maxes, size_t n, uint64_t capacity,
                 uint64_t *ret_targets);
