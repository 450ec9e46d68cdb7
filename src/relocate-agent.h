/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnd's receiving side of live moves (docs/relocation.md), on a thread of its own (etcd and
 * QMP I/O never run on the daemon's event loop). It reads /ppn/moves/ every
 * RELOCATE_POLL_USEC; for a request naming this node, sealed by a trusted node, it:
 *   1. refuses (a sealed answer with the reason) anything it cannot take: extra QEMU options,
 *      a disk not reachable here at the same path, a name or uuid already here, a grant that
 *      fleet_grant_check() does not honour for the source by this node's clock or that this
 *      node did not lend, a minimum the lending (or, without a grant, the pool) cannot hold —
 *      the shortfall named;
 *   2. admits the entry (ledger_vm_add_on_grant or ledger_vm_add: the pool counts it from
 *      now on, while the VM still runs on the source) with the default QMP socket, which
 *      stays absent, so the controller leaves the VM alone until it is adopted;
 *   3. starts QEMU from the entry with -S and -incoming defer, its monitor at
 *      RUNTIME/NAME.incoming.qmp, places it in its cgroup, runs migrate-incoming on
 *      [fleet] migration-address and the first free port of the configured range, and answers;
 *   4. follows the migration; on completion it writes the outcome "adopted" (create-only),
 *      renames the monitor socket to the entry's RUNTIME/NAME.qmp (the controller connects)
 *      and resumes the vCPUs. If the source wrote "aborted" first, QEMU failed or died, or
 *      [fleet] migration-timeout passed: "aborted", QEMU killed, the entry removed and the
 *      lending given its capacity back — the ledger as before.
 */

#include "util.h"

#define RELOCATE_POLL_USEC (200 * USEC_PER_MSEC)

struct ppn_config;
struct relocate_agent;

/* NULL (and 0) when [fleet] enabled = no. */
int relocate_agent_from_config(const struct ppn_config *cfg, struct relocate_agent **ret, struct ppn_error *err);
/* Stops the thread; a move in progress is aborted (the source resumes the VM). */
struct relocate_agent *relocate_agent_free(struct relocate_agent *a);
