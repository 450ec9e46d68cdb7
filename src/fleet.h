/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The fleet layer's pure parts (docs/fleet.md): node identity (ed25519, nettle), the capacity
 * record a node publishes and the rule that decides when to rewrite it, and lending grants and
 * revocations with their signatures and verification. No I/O here except the key file
 * (fleet_identity_*); etcd is fleet-agent's business, the clock is the caller's.
 *
 * etcd key schema (all values JSON):
 *   /ppn/nodes/<id>/key          {"node", "public_key"}            written by ppnd, no lease
 *   /ppn/nodes/<id>/capacity     fleet_capacity                    under a lease (TTL ~15 s)
 *   /ppn/grants/<grant id>       fleet_grant + "signature"         create-only, never rewritten
 *   /ppn/revocations/<grant id>  fleet_revocation + "signature"    create-only
 *
 * A grant is honoured by a node only if (fleet_grant_check): it decodes, its key names its id,
 * it was never rewritten in etcd (version 1), its lender's key is trusted here, its signature
 * verifies under that key, its borrower is a trusted node, it is inside [not_before, expires)
 * by the caller's clock, no revocation signed by its lender exists, and it names this node.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define FLEET_KEY_SIZE 32               /* ed25519 public and private key */
#define FLEET_SIG_SIZE 64
#define FLEET_ID_LEN 32                 /* node id: hex of the first 16 bytes of sha256(public key) */
#define FLEET_FPR_LEN 64                /* fingerprint: hex of the whole sha256(public key) */
#define FLEET_GRANT_ID_LEN 32           /* hex of 16 random bytes */
#define FLEET_PREFIX "/ppn/"
#define FLEET_KEY_FILE "node.key"       /* beside the ledger */

struct fleet_identity {
        uint8_t pub[FLEET_KEY_SIZE];
        uint8_t priv[FLEET_KEY_SIZE];
        char id[FLEET_ID_LEN + 1];
        char fingerprint[FLEET_FPR_LEN + 1];
};

/* Computes the id and fingerprint of a public key. */
void fleet_key_names(const uint8_t pub[FLEET_KEY_SIZE], char ret_id[FLEET_ID_LEN + 1],
                     char ret_fpr[FLEET_FPR_LEN + 1]);
/* The key file's path: FLEET_KEY_FILE in the ledger's folder. NULL on -ENOMEM. */
char *fleet_identity_path(const char *ledger_path);
/* Creates a new key pair at path (mode 0600, refuses to overwrite: -EEXIST). */
int fleet_identity_create(const char *path, struct fleet_identity *ret, struct ppn_error *err);
/* Loads it; refuses a file others may read (-EPERM) or of the wrong form (-EINVAL). */
int fleet_identity_load(const char *path, struct fleet_identity *ret, struct ppn_error *err);

/* hex <-> bytes; fleet_unhex: 0 or -EINVAL (wrong length or not hex). */
void fleet_hex(const uint8_t *data, size_t len, char *ret);
int fleet_unhex(const char *text, uint8_t *ret, size_t len);
bool fleet_id_valid(const char *id);

/* ---- capacity records ---- */

struct fleet_capacity {
        char node[FLEET_ID_LEN + 1];
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t reserved_min_bytes;    /* Σ VM minimums */
        uint64_t lent_bytes;            /* held for borrowers by active grants */
        int64_t pool_available_bytes;
        uint64_t committed_bytes;
        int64_t free_bytes;
        double psi_some_avg10;          /* host memory PSI, percent; < 0 unknown */
        uint64_t n_vms;
        uint64_t seq;                   /* +1 per record written by this ppnd run */
        int64_t time_usec;              /* wall clock of the writer when written */
};

/* JSON text (malloc'd) or NULL on -ENOMEM. */
char *fleet_capacity_encode(const struct fleet_capacity *c);
/* Decodes a record read from etcd (hostile): every field present with its type and in range.
 * -EINVAL with err saying which field. */
int fleet_capacity_decode(const char *text, size_t len, struct fleet_capacity *ret, struct ppn_error *err);

struct fleet_publish_rule {
        uint64_t threshold_bytes;       /* a byte figure moving by more than this */
        double psi_points;              /* PSI moving by more than this many points */
        uint64_t republish_usec;        /* rewrite at least this often */
};

/*
 * Whether to write `now` when `last` was written at last_usec (monotonic; last NULL = never
 * written). Returns the reason ("first", "pool_available moved by 512 MiB", "60 s since the
 * last write", "VM count changed") or NULL to hold.
 */
const char *fleet_should_publish(const struct fleet_capacity *last, uint64_t last_usec,
                                 const struct fleet_capacity *now, uint64_t now_usec,
                                 const struct fleet_publish_rule *rule, char *buf, size_t len);

/* ---- grants ---- */

struct fleet_grant {
        char id[FLEET_GRANT_ID_LEN + 1];
        char lender[FLEET_ID_LEN + 1];
        char borrower[FLEET_ID_LEN + 1];
        uint64_t bytes;
        int64_t not_before;             /* unix seconds, absolute */
        int64_t expires;                /* unix seconds, absolute (exclusive) */
        char nonce[FLEET_GRANT_ID_LEN + 1];
        int64_t fence;                  /* the lender's ledger sequence of this lending: never reused */
        uint8_t signature[FLEET_SIG_SIZE];
};

struct fleet_revocation {
        char grant[FLEET_GRANT_ID_LEN + 1];
        char lender[FLEET_ID_LEN + 1];
        int64_t time;                   /* unix seconds, when revoked */
        uint8_t signature[FLEET_SIG_SIZE];
};

/* Signs (fills signature) with the lender's identity; g->lender must be its id. */
int fleet_grant_sign(struct fleet_grant *g, const struct fleet_identity *lender);
int fleet_revocation_sign(struct fleet_revocation *v, const struct fleet_identity *lender);
char *fleet_grant_encode(const struct fleet_grant *g);
char *fleet_revocation_encode(const struct fleet_revocation *v);
int fleet_grant_decode(const char *text, size_t len, struct fleet_grant *ret, struct ppn_error *err);
int fleet_revocation_decode(const char *text, size_t len, struct fleet_revocation *ret, struct ppn_error *err);

struct fleet_trusted {
        char id[FLEET_ID_LEN + 1];
        uint8_t pub[FLEET_KEY_SIZE];
};

enum fleet_verdict {
        FLEET_VALID,                    /* honoured here (names this node) */
        FLEET_VALID_ELSEWHERE,          /* sound, but names another node */
        FLEET_MALFORMED,
        FLEET_REWRITTEN,                /* the etcd key was written more than once, or names another id */
        FLEET_UNTRUSTED_LENDER,
        FLEET_BAD_SIGNATURE,
        FLEET_UNTRUSTED_BORROWER,
        FLEET_NOT_YET_VALID,
        FLEET_EXPIRED,
        FLEET_REVOKED,
};
const char *fleet_verdict_to_string(enum fleet_verdict v);

struct fleet_check {
        enum fleet_verdict verdict;
        char reason[200];
};

/* What a node needs to judge one grant. */
struct fleet_view {
        const char *self;                       /* this node's id */
        const struct fleet_trusted *trusted;    /* including this node's own key */
        size_t n_trusted;
        const struct fleet_revocation *revocations;     /* as decoded; checked here */
        size_t n_revocations;
        int64_t now;                            /* this node's wall clock, unix seconds */
};

/* Judges grant g, read from etcd key `key_id` (the id in its key) whose etcd version was
 * `version` (1 = written once). Pure. */
void fleet_grant_check(const struct fleet_grant *g, const char *key_id, int64_t version,
                       const struct fleet_view *view, struct fleet_check *ret);
/* Whether revocation v is genuine: its lender is trusted and its signature verifies. */
bool fleet_revocation_valid(const struct fleet_revocation *v, const struct fleet_trusted *trusted, size_t n);
const struct fleet_trusted *fleet_trusted_find(const struct fleet_trusted *t, size_t n, const char *id);
