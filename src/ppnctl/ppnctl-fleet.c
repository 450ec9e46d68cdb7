/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl node init|id, fleet [list] | trust, lend, grant revoke: the node's identity, pairing,
 * and lending (docs/fleet.md). The CLI talks to etcd itself (blocking is fine here); `fleet`
 * prefers ppnd's own view (its watch, its clock) and reads etcd directly when ppnd does not
 * answer or has the fleet off.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "control-client.h"
#include "etcd.h"
#include "fleet-agent.h"
#include "fleet.h"
#include "jsonutil.h"
#include "ledger.h"
#include "ppnctl.h"

int ctl_load_identity(const struct ctl_globals *g, struct fleet_identity *ret) {
        _cleanup_free_ char *path = fleet_identity_path(g->ledger);
        struct ppn_error e = {};
        int r;

        if (!path)
                return ctl_fail(NULL, -ENOMEM);
        r = fleet_identity_load(path, ret, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

int ctl_open_etcd(const struct ctl_globals *g, struct etcd **ret) {
        struct etcd_options o = { .endpoints = g->etcd_endpoints, .ca = g->etcd_ca, .cert = g->etcd_cert,
                                  .key = g->etcd_key };
        struct ppn_error e = {};
        int r = etcd_new(&o, ret, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

static void print_identity(const struct fleet_identity *id, bool json) {
        if (json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "node", json_object_new_string(id->id));
                json_object_object_add(o, "fingerprint", json_object_new_string(id->fingerprint));
                ctl_print_json(o);
                return;
        }
        printf("node %s\nfingerprint %s\n", id->id, id->fingerprint);
}

int ctl_node_init(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_free_ char *path = fleet_identity_path(g->ledger);
        struct fleet_identity id;
        struct ppn_error e = {};
        bool json = args->json;
        int r;

        if (!path)
                return ctl_fail(NULL, -ENOMEM);
        r = fleet_identity_create(path, &id, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        print_identity(&id, json);
        if (!json)
                fprintf(stderr, "ppnctl: key written to %s (mode 0600); give the fingerprint to the operators of "
                        "the other nodes out of band: they confirm it with 'ppnctl fleet trust %s FINGERPRINT'\n",
                        path, id.id);
        explicit_bzero(&id, sizeof(id));
        return CTL_OK;
}

int ctl_node_id(const struct ctl_globals *g, const struct ctl_args *args) {
        struct fleet_identity id;
        bool json = args->json;
        int r;

        r = ctl_load_identity(g, &id);
        if (r)
                return r;
        print_identity(&id, json);
        explicit_bzero(&id, sizeof(id));
        return CTL_OK;
}

/* ---- pairing: the fingerprint the operator confirmed must be the key etcd carries ---- */

static int fetch_public_key(struct etcd *e, const char *node, uint8_t pub[FLEET_KEY_SIZE], struct ppn_error *err) {
        _cleanup_(etcd_range_done) struct etcd_range rg = {};
        json_object *o;
        char key[128];
        int r;

        snprintf(key, sizeof(key), FLEET_PREFIX "nodes/%s/key", node);
        r = etcd_range(e, key, false, &rg, err);
        if (r < 0)
                return r;
        if (rg.n_kvs != 1)
                return ppn_error_set(err, -ENOENT, "node %s has not published its key in etcd (is its ppnd running "
                                     "with [fleet] enabled?)", node);
        o = json_tokener_parse((const char *) rg.kvs[0].value);
        const char *hex = o ? json_member_string(o, "public_key") : NULL;
        r = hex ? fleet_unhex(hex, pub, FLEET_KEY_SIZE) : -EINVAL;
        json_object_put(o);
        return r < 0 ? ppn_error_set(err, -EINVAL, "node %s's published key is not an ed25519 key", node) : 0;
}

static int fleet_trust(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_etcd_ struct etcd *e = NULL;
        _cleanup_ledger_ struct ledger *l = NULL;
        uint8_t pub[FLEET_KEY_SIZE];
        char id[FLEET_ID_LEN + 1], fpr[FLEET_FPR_LEN + 1], hex[2 * FLEET_KEY_SIZE + 1];
        struct ppn_error err = {};
        char **argv = args->argv;
        int r;

        if (!fleet_id_valid(argv[1]))
                return ctl_usage_error(args, "'%s' is not a node id (%d hex digits)", argv[1],
                                       FLEET_ID_LEN);
        r = ctl_open_etcd(g, &e);
        if (r)
                return r;
        r = fetch_public_key(e, argv[1], pub, &err);
        if (r < 0)
                return ctl_fail(&err, r);
        fleet_key_names(pub, id, fpr);
        if (strcmp(id, argv[1]) != 0)
                return ctl_fail(&err, ppn_error_set(&err, -EPERM, "the key etcd holds for node %s is not that node's "
                                                   "key (it is %s's); nothing trusted", argv[1], id));
        if (strcasecmp(fpr, argv[2]) != 0)
                return ctl_fail(&err, ppn_error_set(&err, -EPERM, "fingerprint mismatch: etcd's key for node %s has "
                                                   "fingerprint %s, not %s; do not trust it until the node's operator "
                                                   "confirms what 'ppnctl node id' says there", argv[1], fpr, argv[2]));
        fleet_hex(pub, FLEET_KEY_SIZE, hex);
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_trust_add(l, id, hex, getuid(), &err);
        if (r < 0)
                return ctl_fail(&err, r);
        printf("trusted node %s\n", id);
        return CTL_OK;
}

/* ---- listing ---- */

static int report_direct(const struct ctl_globals *g, json_object **ret) {
        _cleanup_etcd_ struct etcd *e = NULL;
        _cleanup_(etcd_range_done) struct etcd_range rg = {};
        _cleanup_(fleet_snapshot_done) struct fleet_snapshot snap = {};
        _cleanup_free_ struct fleet_trusted *trusted = NULL;
        struct fleet_identity id;
        struct ppn_error err = {};
        size_t n = 0;
        int64_t now = (int64_t) now_realtime_usec();
        int r = ctl_load_identity(g, &id);

        if (r == 0)
                r = ctl_open_etcd(g, &e);
        if (r)
                return r;
        r = fleet_trusted_from_ledger(g->ledger, &id, &trusted, &n, &err);
        if (r == 0)
                r = etcd_range(e, FLEET_PREFIX, true, &rg, &err);
        if (r == 0)
                r = fleet_snapshot_load(&snap, &rg);
        if (r < 0)
                return ctl_fail(&err, r);
        *ret = fleet_report(&snap, &(struct fleet_view) { .self = id.id, .trusted = trusted, .n_trusted = n,
                                                          .now = now / 1000000 }, now);
        json_object_object_add(*ret, "source", json_object_new_string("etcd"));
        explicit_bzero(&id, sizeof(id));
        return 0;
}

static void print_nodes(json_object *nodes) {
        printf("%-32s %-4s %-8s %9s %9s %9s %5s %7s\n", "NODE", "", "TRUST", "PHYSICAL", "AVAILABLE", "FREE", "VMS", "AGE");
        for (size_t i = 0; i < json_object_array_length(nodes); i++) {
                json_object *n = json_object_array_get_idx(nodes, i), *c = json_object_object_get(n, "capacity");
                char a[32], b[32], d[32], age[32] = "-";
                bool self = false, trusted = false, stale = false;
                json_member_bool(n, "self", &self);
                json_member_bool(n, "trusted", &trusted);
                if (c) {
                        json_member_bool(c, "stale", &stale);
                        snprintf(age, sizeof(age), "%.0fs%s", json_object_get_double(json_object_object_get(c, "age_sec")),
                                 stale ? "!" : "");
                }
                printf("%-32s %-4s %-8s %9s %9s %9s %5" PRId64 " %7s\n", json_member_string(n, "node"),
                       self ? "self" : "", trusted ? "yes" : "no",
                       c ? ctl_size(json_object_get_int64(json_object_object_get(c, "physical_bytes")), a, sizeof(a)) : "-",
                       c ? ctl_size(json_object_get_int64(json_object_object_get(c, "pool_available_bytes")), b, sizeof(b)) : "-",
                       c ? ctl_size(json_object_get_int64(json_object_object_get(c, "free_bytes")), d, sizeof(d)) : "-",
                       c ? json_object_get_int64(json_object_object_get(c, "vms")) : 0, age);
        }
}

static void print_grants(json_object *grants) {
        if (json_object_array_length(grants) == 0)
                return;
        printf("\n%-32s %-12s %-12s %8s %-18s %s\n", "GRANT", "LENDER", "BORROWER", "SIZE", "STATUS", "REASON");
        for (size_t i = 0; i < json_object_array_length(grants); i++) {
                json_object *x = json_object_array_get_idx(grants, i);
                const char *lender = json_member_string(x, "lender"), *borrower = json_member_string(x, "borrower");
                char size[32];
                printf("%-32s %-12.12s %-12.12s %8s %-18s %s\n", json_member_string(x, "id"), lender ? lender : "-",
                       borrower ? borrower : "-",
                       ctl_size(json_object_get_int64(json_object_object_get(x, "bytes")), size, sizeof(size)),
                       json_member_string(x, "status"), json_member_string(x, "reason"));
        }
}

static int fleet_list(const struct ctl_globals *g, const struct ctl_args *args) {
        json_object *report = NULL;
        bool json = args->json;
        int r;

        if (control_client_call(g->socket, "fleet", NULL, &report, NULL) == 0)
                json_object_object_add(report, "source", json_object_new_string("ppnd"));
        else {
                json_object_put(report);
                report = NULL;
                r = report_direct(g, &report);
                if (r)
                        return r;
        }
        if (json) {
                ctl_print_json(report);
                return CTL_OK;
        }
        print_nodes(json_object_object_get(report, "nodes"));
        print_grants(json_object_object_get(report, "grants"));
        json_object_put(report);
        return CTL_OK;
}

const struct ctl_command ctl_fleet_commands[] = {
        { .name = "list", .run = fleet_list, .usage = "fleet list [--json]",
          .help = "the nodes, their capacity and staleness, and the grants as this node judges them (the "
                  "default)", .json = true },
        { .name = "trust", .run = fleet_trust, .usage = "fleet trust ID FINGERPRINT",
          .help = "pair with node ID once its key's fingerprint is confirmed out of band",
          .min_args = 2, .max_args = 2, .args_error = "expected a node id and its fingerprint" },
        {},
};

/* ---- lending ---- */

/* The operands and --for of lend; 0 or CTL_ERR_USAGE (printed). */
static int parse_lend_args(const struct ctl_args *args, const char **borrower, uint64_t *bytes, uint64_t *for_usec) {
        const char *v = ctl_arg(args, "for");

        if (!v || parse_duration(v, for_usec) < 0 || *for_usec < 1000000 || *for_usec > UINT64_C(366) * 86400000000)
                return ctl_usage_error(args, v ? "--for needs a duration from 1s to 366d" :
                                                 "expected a borrower, a size and --for");
        if (!fleet_id_valid(args->argv[1]))
                return ctl_usage_error(args, "'%s' is not a node id (%d hex digits)", args->argv[1], FLEET_ID_LEN);
        if (parse_size(args->argv[2], bytes) < 0 || *bytes < MIB || *bytes > LEDGER_SIZE_MAX)
                return ctl_usage_error(args, "'%s' is not a size from 1M to 1P", args->argv[2]);
        *borrower = args->argv[1];
        return 0;
}

static void random_hex(char *ret) {
        uint8_t b[FLEET_GRANT_ID_LEN / 2];
        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                abort();        /* getrandom on a 16-byte request only fails without a kernel RNG */
        fleet_hex(b, sizeof(b), ret);
}

static int is_trusted(const struct ctl_globals *g, const struct fleet_identity *self, const char *node) {
        _cleanup_free_ struct fleet_trusted *t = NULL;
        struct ppn_error err = {};
        size_t n = 0;
        int r = fleet_trusted_from_ledger(g->ledger, self, &t, &n, &err);
        if (r < 0)
                return ctl_fail(&err, r);
        if (!fleet_trusted_find(t, n, node) || strcmp(node, self->id) == 0)
                return ctl_fail(&err, ppn_error_set(&err, -EPERM, "node %s is not a paired node (or is this one); "
                                                   "pair it first with 'ppnctl fleet trust'", node));
        return 0;
}

/* The grant goes to etcd after the ledger holds the capacity; if etcd refuses, the lending is
 * revoked again so that no capacity stays held for a grant nobody can see. */
int ctl_lend(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_etcd_ struct etcd *e = NULL;
        _cleanup_free_ char *text = NULL;
        struct fleet_identity id;
        struct fleet_grant gr = {};
        struct ppn_error err = {};
        const char *borrower = NULL;
        uint64_t bytes = 0, for_usec = 0;
        char key[128], size[32];
        int r = parse_lend_args(args, &borrower, &bytes, &for_usec);

        if (r < 0)
                return r;
        if ((r = ctl_load_identity(g, &id)) || (r = is_trusted(g, &id, borrower)) || (r = ctl_open_etcd(g, &e)) ||
            (r = ctl_open_ledger(g, true, &l)))
                return r;
        random_hex(gr.id);
        random_hex(gr.nonce);
        memcpy(gr.lender, id.id, sizeof(gr.lender));
        memcpy(gr.borrower, borrower, sizeof(gr.borrower));
        gr.bytes = bytes;
        gr.not_before = (int64_t) (now_realtime_usec() / 1000000);
        gr.expires = gr.not_before + (int64_t) (for_usec / 1000000);
        struct ledger_lend lend = { .bytes = bytes, .not_before = gr.not_before, .expires = gr.expires };
        memcpy(lend.grant_id, gr.id, sizeof(lend.grant_id));
        memcpy(lend.borrower, borrower, sizeof(lend.borrower));
        r = ledger_lend_add(l, &lend, getuid(), &gr.fence, &err);
        if (r < 0) {
                explicit_bzero(&id, sizeof(id));
                return ctl_fail(&err, r);
        }
        r = fleet_grant_sign(&gr, &id);
        explicit_bzero(&id, sizeof(id));
        text = r == 0 ? fleet_grant_encode(&gr) : NULL;
        snprintf(key, sizeof(key), FLEET_PREFIX "grants/%s", gr.id);
        r = text ? etcd_create(e, key, text, strlen(text), 0, NULL, &err) : ppn_error_set(&err, -ENOMEM, "out of memory");
        if (r < 0) {
                struct ppn_error undo = {};
                if (ledger_lend_revoke(l, gr.id, getuid(), &undo) < 0)
                        fprintf(stderr, "ppnctl: %s\n", undo.msg);
                return ctl_fail(&err, ppn_error_prefix(&err, r, "the grant was not published, the capacity is "
                                                       "back in the pool"));
        }
        if (g->json) {
                json_object *o = json_tokener_parse(text);
                ctl_print_json(o);
        } else
                printf("grant %s: %s to node %s until %" PRId64 " (fence %" PRId64 ")\n", gr.id,
                       ctl_size((int64_t) bytes, size, sizeof(size)), borrower, gr.expires, gr.fence);
        return CTL_OK;
}

/* The grant must be one of this node's active lendings: nothing is written otherwise. */
static int active_lending(const struct ctl_globals *g, const char *grant_id) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        struct ppn_error err = {};
        int64_t now = (int64_t) (now_realtime_usec() / 1000000);
        int r = ctl_load_state(g, false, &st);

        if (r)
                return r;
        for (size_t i = 0; i < st->n_lends; i++)
                if (strcmp(st->lends[i].grant_id, grant_id) == 0 && !st->lends[i].revoked && st->lends[i].expires > now)
                        return 0;
        return ctl_fail(&err, ppn_error_set(&err, -ENOENT, "grant %s is not an active lending of this node "
                                            "(only its lender revokes a grant; see 'ppnctl fleet')", grant_id));
}

static int grant_revoke(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_etcd_ struct etcd *e = NULL;
        _cleanup_free_ char *text = NULL;
        struct fleet_identity id;
        struct fleet_revocation v = {};
        struct ppn_error err = {};
        char key[128];
        char **argv = args->argv;
        int r;

        if (strlen(argv[1]) != FLEET_GRANT_ID_LEN)
                return ctl_usage_error(args, "expected a grant id (%d hex digits)", FLEET_GRANT_ID_LEN);
        if ((r = ctl_load_identity(g, &id)) || (r = ctl_open_etcd(g, &e)) || (r = ctl_open_ledger(g, true, &l)) ||
            (r = active_lending(g, argv[1])))
                return r;
        memcpy(v.grant, argv[1], sizeof(v.grant));
        memcpy(v.lender, id.id, sizeof(v.lender));
        v.time = (int64_t) (now_realtime_usec() / 1000000);
        r = fleet_revocation_sign(&v, &id);
        explicit_bzero(&id, sizeof(id));
        text = r == 0 ? fleet_revocation_encode(&v) : NULL;
        if (!text)
                return ctl_fail(NULL, -ENOMEM);
        /* etcd first: a revocation nobody sees must not free the capacity the borrower may use.
         * A put, not a create: whatever someone parked at that key is replaced (only a genuine
         * revocation counts, and writing it twice is harmless). */
        snprintf(key, sizeof(key), FLEET_PREFIX "revocations/%s", v.grant);
        r = etcd_put(e, key, text, strlen(text), 0, NULL, &err);
        if (r < 0)
                return ctl_fail(&err, r);
        r = ledger_lend_revoke(l, v.grant, getuid(), &err);
        if (r < 0)
                return ctl_fail(&err, r);
        printf("grant %s revoked\n", v.grant);
        return CTL_OK;
}

const struct ctl_command ctl_grant_commands[] = {
        { .name = "revoke", .run = grant_revoke, .usage = "grant revoke ID",
          .help = "revoke a grant this node made (signed; every node drops it)",
          .min_args = 1, .max_args = 1, .args_error = "expected a grant id (32 hex digits)" },
        {},
};
