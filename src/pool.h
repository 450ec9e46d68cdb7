/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Pool accounting and admission. Pure: literal structs in, figures or a verdict out; no I/O,
 * no clock, no SQLite. The ledger calls pool_admit() inside its write transaction with the
 * state before and after a change; the daemon calls pool_compute() with live balloon actuals.
 *
 *   capacity       = physical − reserve
 *   reserved_min   = Σ min over all VMs
 *   lent           = Σ bytes of this node's active lending grants (docs/fleet.md): capacity
 *                    held for another node's VMs, so local VMs cannot take it
 *   pool_available = capacity − reserved_min − lent (invariant: never driven below 0)
 *   committed      = lent + Σ actual, counting a VM whose actual is unknown at its max (its boot
 *                    size: the most it can hold, so the figure never flatters the node)
 *   free           = capacity − committed           (negative when the node is overcommitted)
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct pool_node {
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t lent_bytes;    /* held for borrowers (0 when the node lends nothing) */
};

struct pool_vm {
        const char *name;
        uint64_t min_bytes;
        uint64_t max_bytes;
        uint64_t actual_bytes;  /* balloon actual, meaningful only if actual_known */
        bool actual_known;
};

struct pool_figures {
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t reserved_min_bytes;
        uint64_t lent_bytes;
        int64_t pool_available_bytes;
        uint64_t committed_bytes;
        int64_t free_bytes;
        size_t n_vms;
        size_t n_actual_known;   /* VMs whose actual was known; the rest count at max */
};

/* Fills *ret with the figures above. Sums saturate at INT64_MAX rather than wrap. */
void pool_compute(const struct pool_node *node, const struct pool_vm *vms, size_t n_vms,
                  struct pool_figures *ret);

/*
 * Admission: may the pool go from `before` to `after`? `what` names the change for the
 * message, e.g. "admitting 'web' (min 2048 MiB)" or "setting physical to 4096 MiB".
 * A change is refused only if it leaves pool_available negative AND lowers it: removing a VM
 * or lowering a minimum is always allowed, even on a node that is already short.
 * Returns 0 if admitted, -ENOSPC if refused; then err says (exact form, tested):
 *   "refused: <what> needs N MiB but the pool has M MiB available (short by S MiB);
 *    biggest reservations: db 4096 MiB, cache 2048 MiB"
 * where N = the drop in pool_available, M = pool_available before, S = N − M, and up to three
 * of the largest minimums held before the change are named ("none" if no VM holds one).
 */
int pool_admit(const struct pool_node *before_node, const struct pool_vm *before, size_t n_before,
               const struct pool_node *after_node, const struct pool_vm *after, size_t n_after,
               const char *what, struct ppn_error *err);

/* Formats bytes as MiB for messages: "2048 MiB", or "1.5 MiB" when not whole. Returns buf. */
char *pool_format_mib(int64_t bytes, char *buf, size_t len);
#define POOL_MIB_MAX 32
