/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The capability ledger: an SQLite file holding the node settings, one entry per VM and an
 * audit log of every change. The records themselves and their validation are in
 * ledger-entry.h (pure); this module is the store.
 *
 * Guarantees:
 * - Schema versioned in PRAGMA user_version; migrations run on open in one transaction. A file
 *   with a newer schema than LEDGER_SCHEMA_VERSION, a file that is not SQLite, an SQLite file
 *   that is not a ledger, or a truncated file is refused with a clear error before anything
 *   is written to it (the header is checked before SQLite touches the file).
 * - WAL journal, synchronous=FULL: a committed change survives a crash of the process or the
 *   host; a crash mid-transaction leaves the previous state.
 * - Every write is one BEGIN IMMEDIATE transaction that reads the current state, applies the
 *   change in memory, validates every entry, runs pool_admit() on before/after, writes the
 *   rows and one audit row per changed field, and commits. Refused or invalid changes write
 *   nothing. Because the read happens under the write lock, concurrent writers cannot lose
 *   each other's updates.
 * - Lock contention is waited out: SQLite's busy timeout plus a retry loop with jittered
 *   backoff up to opts.busy_timeout_ms (default 10 s); only after that does a caller see
 *   -EBUSY (with words), never SQLite's "database is locked".
 * - Change notification: ledger_changed() compares PRAGMA data_version on this (long-lived)
 *   connection with the last value seen. data_version changes when any OTHER connection
 *   commits (it costs one read of the WAL index, no I/O on the file), so a daemon polling it
 *   from a 250–1000 ms timer notices CLI changes within that period. Chosen over inotify
 *   because it cannot miss a commit or report one that was rolled back.
 *
 * All functions return 0 or -errno: -ENOENT (no such VM / no ledger file), -EEXIST, -EINVAL
 * (invalid input), -ENOSPC (refused by admission), -EBUSY (lock not obtained in time),
 * -EPROTO (the file is not a usable ledger), -EIO (SQLite failure); err carries the words.
 * uid is the caller to record in the audit log (the CLI passes getuid(), the daemon the peer
 * credential of the request).
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger-entry.h"
#include "util.h"

#define LEDGER_SCHEMA_VERSION 4

/* Mode of a ledger file this module creates (and of its -wal and -shm, which SQLite gives the
 * main file's mode): the owner writes, its group may read, nobody else may. The umask may
 * narrow it further. An existing file keeps its mode. */
#define LEDGER_FILE_MODE 0640

struct ledger;
struct json_object;

struct ledger_options {
        const char *meminfo_path;   /* for the physical default; NULL = /proc/meminfo */
        bool read_only;             /* never creates, migrates or writes; file must exist */
        unsigned busy_timeout_ms;   /* total wait for a lock; 0 = 10000 */
};

int ledger_open(const char *path, const struct ledger_options *opts, struct ledger **ret,
                struct ppn_error *err);
struct ledger *ledger_close(struct ledger *l);
static inline void ledger_closep(struct ledger **l) { ledger_close(*l); }
#define _cleanup_ledger_ _cleanup_(ledger_closep)

/* Capacity this node lends (docs/fleet.md): held for a borrower's VMs, counted by admission. */
struct ledger_lend {
        int64_t fence;                          /* never reused: names this lending in its grant */
        char grant_id[33];
        char borrower[33];
        uint64_t bytes;
        int64_t not_before, expires;            /* unix seconds */
        bool revoked;
};

/* A node whose public key the operator confirmed (ppnctl fleet trust). Hex text. */
struct ledger_trusted {
        char id[33];
        char public_key[65];
};

/* A consistent snapshot of the whole ledger (one read transaction), VMs sorted by name. */
struct ledger_state {
        struct ledger_node_settings settings;   /* as stored (0 = default) */
        struct ledger_node node;                /* effective; valid only if node_ok */
        bool node_ok;
        char node_error[512];                   /* why not, when !node_ok */
        struct ledger_vm *vms;
        size_t n_vms;
        struct ledger_lend *lends;              /* every lending ever recorded, by fence */
        size_t n_lends;
        struct ledger_trusted *trusted;         /* nodes paired with this one, by id */
        size_t n_trusted;
};
int ledger_load(struct ledger *l, struct ledger_state **ret, struct ppn_error *err);
struct ledger_state *ledger_state_free(struct ledger_state *s);
static inline void ledger_state_freep(struct ledger_state **s) { ledger_state_free(*s); }
/* The snapshot as pool input: a malloc'd array of n_vms (+1 zeroed) entries whose names point
 * into st, actuals unknown (the daemon fills them in). NULL on -ENOMEM. */
struct pool_vm;
struct pool_vm *ledger_state_pool_vms(const struct ledger_state *st);
/* Finds a VM in a snapshot; NULL if absent. */
const struct ledger_vm *ledger_state_find(const struct ledger_state *s, const char *name);

/* Convenience single reads. ledger_vm_get: -ENOENT if absent; *ret owned by the caller
 * (ledger_vm_done). ledger_node_get: -EINVAL if the defaults cannot be resolved. */
int ledger_vm_get(struct ledger *l, const char *name, struct ledger_vm *ret, struct ppn_error *err);
int ledger_node_get(struct ledger *l, struct ledger_node *ret, struct ppn_error *err);

/* Adds a VM (validated, admitted). An empty vm->uuid gets a fresh v4 uuid from
 * /dev/urandom; ret_uuid (may be NULL) receives the uuid stored. -EEXIST if the name or uuid
 * is taken. */
int ledger_vm_add(struct ledger *l, const struct ledger_vm *vm, uid_t uid,
                  char ret_uuid[LEDGER_UUID_LEN + 1], struct ppn_error *err);
/* Applies "key=value" pairs (ledger_vm_assign keys) atomically: all or none. */
int ledger_vm_set(struct ledger *l, const char *name, const char *const *pairs, size_t n_pairs, uid_t uid,
                  struct ppn_error *err);
int ledger_vm_remove(struct ledger *l, const char *name, uid_t uid, struct ppn_error *err);
/* Removes the entry only if it is still exactly `expected` (every field, as JSON), in one
 * transaction: a move exports an entry, then removes it, and a 'vm set' made in between must
 * not be lost with it. -ESTALE (nothing changed) if it differs, -ENOENT if it is gone. */
int ledger_vm_remove_unchanged(struct ledger *l, const struct ledger_vm *expected, uid_t uid, struct ppn_error *err);
/* Node settings, "physical=16G", "reserve=1G", "min-floor=128M", value "default" unsets.
 * Validated against every VM (floor) and admitted (capacity). */
int ledger_node_set(struct ledger *l, const char *const *pairs, size_t n_pairs, uid_t uid, struct ppn_error *err);

/* Manual override lease: target in [min, max], expires (unix seconds) in the future is the
 * caller's business (the controller ignores an expired lease). -EINVAL outside the range. */
int ledger_override_set(struct ledger *l, const char *name, uint64_t target_bytes, int64_t expires,
                        uid_t uid, struct ppn_error *err);
int ledger_override_clear(struct ledger *l, const char *name, uid_t uid, struct ppn_error *err);

/* Audit log, oldest first; vm NULL = all (node changes have vm NULL). Values are text:
 * sizes in bytes, lists comma- or space-joined, NULL for "unset"/"did not exist". */
struct ledger_audit {
        int64_t time_usec;   /* CLOCK_REALTIME */
        uid_t uid;
        char *vm;            /* NULL for node settings */
        char *field;
        char *old_value;
        char *new_value;
};
int ledger_history(struct ledger *l, const char *vm, struct ledger_audit **ret, size_t *ret_n,
                   struct ppn_error *err);
void ledger_audit_free(struct ledger_audit *a, size_t n);

/* Export: {"schema": 1, "node": {settings}, "vms": [...]}. */
int ledger_export(struct ledger *l, struct json_object **ret, struct ppn_error *err);
/* Import such a document as one transaction: node settings (if "node" is present) replaced,
 * each VM added or, if its name exists, replaced (uuid must then match); with `replace`, VMs
 * absent from the document are removed. Every entry validated, the result admitted as a whole.
 * A bad entry: -EINVAL, err names it ("vms[2] ('web'): min_bytes: ..."); nothing changes. */
int ledger_import(struct ledger *l, struct json_object *doc, bool replace, uid_t uid,
                  struct ppn_error *err);

/* 1 if another connection committed since the last call (or since open), 0 if not, <0 error. */
int ledger_changed(struct ledger *l);

/* PRAGMA integrity_check: 0 if "ok", -EPROTO with the first problem in err. */
int ledger_integrity_check(struct ledger *l, struct ppn_error *err);

/* ---- the fleet (schema 2) ---- */

/* Σ bytes of lendings neither revoked nor expired at `now` (unix seconds). */
uint64_t ledger_state_lent(const struct ledger_state *st, int64_t now);
/* Records a lending after admitting it (pool_available must cover it, as for a VM's minimum);
 * *ret_fence is its fence. -ENOSPC with the shortfall named if the pool cannot. Audited. */
int ledger_lend_add(struct ledger *l, const struct ledger_lend *lend, uid_t uid, int64_t *ret_fence,
                    struct ppn_error *err);
/* Marks an active lending revoked (its capacity returns to the pool). -ENOENT if none. */
int ledger_lend_revoke(struct ledger *l, const char *grant_id, uid_t uid, struct ppn_error *err);
/* A VM admitted on a lending (a live move from the borrower): in one transaction, its minimum
 * is taken out of the active lending grant_id to `borrower` and the entry added, so the pool's
 * figures do not move. -ENOSPC if the lending is not active or holds less than the minimum.
 * ledger_vm_remove_to_grant undoes it (a move that failed): the entry goes, the lending gets
 * the minimum back. Both audited. */
int ledger_vm_add_on_grant(struct ledger *l, const struct ledger_vm *vm, const char *grant_id, const char *borrower,
                           uid_t uid, struct ppn_error *err);
int ledger_vm_remove_to_grant(struct ledger *l, const struct ledger_vm *vm, const char *grant_id, uid_t uid,
                              struct ppn_error *err);
/* Trusts (or re-trusts) a node's key. Audited. */
int ledger_trust_add(struct ledger *l, const char *id, const char *public_key, uid_t uid, struct ppn_error *err);
int ledger_trust_list(struct ledger *l, struct ledger_trusted **ret, size_t *ret_n, struct ppn_error *err);
