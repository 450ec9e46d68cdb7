/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Live moves between nodes (docs/relocation.md): the pure parts. The messages the source and
 * the destination exchange through etcd, each sealed with its writer's node key, and the
 * reading of QEMU's query-migrate.
 *
 * etcd keys of one move (MOVE: 32 hex characters chosen by the source):
 *   /ppn/moves/MOVE/request   sealed by the source: who, where, which grant, the ledger entry
 *   /ppn/moves/MOVE/answer    sealed by the destination: refused (reason) or address and port
 *   /ppn/moves/MOVE/outcome   create-only, sealed by whichever side writes it first:
 *                             "adopted" (the destination resumes the VM) or "aborted" (the
 *                             source resumes it). The first write decides; the other side obeys.
 *
 * A sealed value is {"body": TEXT, "signer": NODE, "signature": HEX}: the signature is over the
 * body's bytes as stored, so no canonical JSON is needed. Every body carries its kind and the
 * move id, so no message can stand in for another or for another move.
 */

#include <stdbool.h>
#include <stdint.h>

#include "fleet.h"
#include "ledger-entry.h"
#include "util.h"

#define RELOCATE_PREFIX FLEET_PREFIX "moves/"
#define RELOCATE_SKEW_SEC 300           /* a request older or newer than this by the receiver's clock is refused */
#define RELOCATE_BODY_MAX (64u << 10)
/* A migration whose byte count has not moved for this long is cancelled by the source: a cut
 * network stalls the stream without failing it (TCP retransmits for many minutes), while a
 * healthy stream moves every poll, even when capped by --max-bandwidth. */
#define RELOCATE_STALL_USEC (20 * USEC_PER_SEC)

struct json_object;

/* "/ppn/moves/MOVE/PART"; NULL on -ENOMEM. */
char *relocate_key(const char *move, const char *part);

/* Seals body (takes no reference) with the node's key: malloc'd text, NULL on -ENOMEM. */
char *relocate_seal(const struct fleet_identity *id, struct json_object *body);
/* Opens a sealed value read from etcd (hostile): it must be signed by `signer` (NULL: any
 * node) with a trusted key, and its body a JSON object of kind `kind` for move `move` whose
 * "node" is the signer. *ret_body: a new reference.
 * -EINVAL / -EPERM with the reason in err. */
int relocate_open(const char *text, size_t len, const char *signer, const struct fleet_trusted *trusted, size_t n,
                  const char *kind, const char *move, struct json_object **ret_body, struct ppn_error *err);

struct relocate_request {
        char move[FLEET_GRANT_ID_LEN + 1];
        char source[FLEET_ID_LEN + 1];
        char dest[FLEET_ID_LEN + 1];
        char grant[FLEET_GRANT_ID_LEN + 1];     /* "" = the destination's own pool */
        int64_t time;                           /* the source's clock, unix seconds */
        struct ledger_vm vm;
        /* The source QEMU's balloon options (`ppnctl start --no-deflate-on-oom` and
         * `--no-free-page-reporting` are not in the entry): the destination's QEMU must have the
         * same device, or the guest arrives with other features than it negotiated. JSON
         * "deflate-on-oom" and "free-page-reporting"; absent = on, ppnctl start's default. */
        bool no_deflate_on_oom, no_free_page_reporting;
};

struct json_object *relocate_request_to_json(const struct relocate_request *r);
/* The fields of an opened request body; the entry is validated for form (not admitted). */
int relocate_request_from_json(struct json_object *body, struct relocate_request *ret, struct ppn_error *err);
void relocate_request_done(struct relocate_request *r);

struct relocate_answer {
        bool ok;
        char reason[512];
        char address[64];
        uint16_t port;
};
struct json_object *relocate_answer_to_json(const char *move, const char *node, const struct relocate_answer *a);
int relocate_answer_from_json(struct json_object *body, struct relocate_answer *ret, struct ppn_error *err);

enum relocate_outcome { RELOCATE_ADOPTED, RELOCATE_ABORTED };
struct json_object *relocate_outcome_to_json(const char *move, const char *node, enum relocate_outcome o,
                                             const char *reason);
int relocate_outcome_from_json(struct json_object *body, enum relocate_outcome *ret, char *reason, size_t len,
                               struct ppn_error *err);

/* Whether addr is one of the comma-separated addresses in list (exact text, spaces ignored). */
bool relocate_address_allowed(const char *list, const char *addr);

/* QEMU's query-migrate, as far as a move needs it. Missing figures read as 0. */
struct relocate_progress {
        char status[32];                /* "none", "setup", "active", "completed", "failed", ... */
        uint64_t total_bytes, transferred_bytes, remaining_bytes;
        uint64_t total_time_ms, downtime_ms, expected_downtime_ms;
        uint64_t dirty_pages_rate;
        char error[256];                /* error-desc when failed */
};
void relocate_progress_parse(struct json_object *reply, struct relocate_progress *ret);
struct json_object *relocate_progress_to_json(const struct relocate_progress *p);
