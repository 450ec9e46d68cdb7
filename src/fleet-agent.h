/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnd's side of the fleet (docs/fleet.md): two threads of its own, so that etcd I/O never
 * runs on the daemon's event loop.
 *
 * - The publisher keeps a lease (TTL [fleet] lease-ttl, renewed every third of it), writes
 *   /ppn/nodes/<id>/key once per lease and /ppn/nodes/<id>/capacity under the lease when
 *   fleet_should_publish() says so. A lost lease (etcd restarted, or down longer than the TTL)
 *   is replaced and the record written again at once.
 * - The watcher reads the /ppn/ prefix, then follows it with a watch from the next revision,
 *   keeping a copy that fleet_agent_report() judges (fleet_grant_check) on demand, by this
 *   node's clock at that moment: a grant expires here even if etcd still holds it.
 *
 * Sovereignty: the event loop only copies figures in (fleet_agent_update, a mutex held for a
 * struct copy) and a report out; etcd being slow or down blocks neither.
 */

#include "fleet.h"
#include "etcd.h"
#include "util.h"

struct json_object;
struct fleet_agent;

struct fleet_agent_options {
        struct etcd_options etcd;
        const char *ledger_path;        /* for trusted keys (read-only) */
        const struct fleet_identity *identity;
        uint64_t lease_usec;
        struct fleet_publish_rule rule;
};

int fleet_agent_start(const struct fleet_agent_options *o, struct fleet_agent **ret, struct ppn_error *err);
/* Starts the agent as [fleet] says, with the identity beside the ledger; *ret = NULL (and 0)
 * when [fleet] enabled = no. A missing or unreadable key is an error that says what to run. */
struct ppn_config;
int fleet_agent_from_config(const struct ppn_config *cfg, struct fleet_agent **ret, struct ppn_error *err);

/* Stops both threads (within about a second) and revokes the lease if etcd answers. */
struct fleet_agent *fleet_agent_free(struct fleet_agent *a);

/* The latest figures from the daemon (node, seq and time are filled in by the agent) and the
 * ledger's trusted keys (from the daemon's own ledger snapshot: a second SQLite connection in
 * the same process would hide other processes' commits from the daemon's change check). */
struct ledger_trusted;
void fleet_agent_update(struct fleet_agent *a, const struct fleet_capacity *c, const struct ledger_trusted *t,
                        size_t n);

/* {"self", "reachable", "synced", "etcd_error", "records_written", "nodes": [...], "grants": [...]}. NULL on -ENOMEM. */
struct json_object *fleet_agent_report(struct fleet_agent *a);

/* ---- shared with ppnctl: a snapshot of the /ppn/ prefix judged by one node ---- */

struct fleet_entry {
        char *key;
        char *value;
        size_t value_len;
        int64_t version;
        int64_t mod_revision;
};

/* Keys kept from a watch: a fleet of 10,000 nodes holds about 20,000 plus its grants. A range
 * is bounded by ETCD_REPLY_MAX instead. */
#define FLEET_SNAPSHOT_MAX 200000

struct fleet_snapshot {
        struct fleet_entry *v;          /* sorted by key */
        size_t n;
        int64_t revision;
};

void fleet_snapshot_done(struct fleet_snapshot *s);
/* Replaces the snapshot with a range reply (takes the kvs' strings). */
int fleet_snapshot_load(struct fleet_snapshot *s, struct etcd_range *r);
/* Applies one watch event. */
int fleet_snapshot_apply(struct fleet_snapshot *s, const struct etcd_event *ev);

/* Builds the report (nodes with capacity and staleness, grants with verdicts) of snapshot s as
 * seen by view (its self, trusted keys and clock; revocations: those in s and the view's). Pure. */
struct json_object *fleet_report(const struct fleet_snapshot *s, const struct fleet_view *view, int64_t now_usec);

/* Trusted keys as the view wants them: the ledger's list plus this node's own key. Inside ppnd,
 * convert a snapshot's list (fleet_trusted_convert): a read-only second connection opened and
 * closed there hid other processes' commits from the daemon's change check. */
int fleet_trusted_convert(const struct ledger_trusted *t, size_t n, const struct fleet_identity *self,
                          struct fleet_trusted **ret, size_t *ret_n);
int fleet_trusted_from_ledger(const char *ledger_path, const struct fleet_identity *self,
                              struct fleet_trusted **ret, size_t *ret_n, struct ppn_error *err);
