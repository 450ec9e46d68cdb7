/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What QEMU read from a VM's disks: query-blockstats, summed over the VM's block devices.
 * A host-side signal (QEMU's own counters of the I/O it served; invariant 3 in
 * docs/design.md): nothing inside the guest is read. The policy tells a page cache the guest
 * re-reads from one read once by it (docs/policy.md, "Re-read cache").
 *
 * QEMU 7.2 answers query-blockstats with an array, one entry per block device (its backing
 * chain under "backing"/"parent"), each with "stats": {"rd_bytes": N, ...}: the bytes the
 * guest read through that device since QEMU started. Only the top level of each entry is
 * counted (a backing file's reads are part of its device's).
 */

#include <json-c/json.h>
#include <stdint.h>

#include "qmp.h"
#include "util.h"

/* Σ stats.rd_bytes over the reply's entries (0 for an empty array). 0, or -EBADMSG with words
 * (not an array, an entry without stats, rd_bytes missing or not a non-negative integer). */
int blockstats_read_decode(json_object *reply, uint64_t *ret_bytes, struct ppn_error *err);

/* Asynchronous query-blockstats: fn gets the sum (0 and err set on failure), exactly once. */
typedef void (*blockstats_fn)(struct qmp *q, uint64_t read_bytes, const struct qmp_error *err, void *userdata);
int blockstats_query(struct qmp *q, uint64_t timeout_usec, blockstats_fn fn, void *userdata,
                     struct qmp_error *err);
