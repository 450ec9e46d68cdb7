/* SPDX-License-Identifier: Apache-2.0 */
/* Live moves: sealed messages and query-migrate (pure; see relocate.h). */
#include <errno.h>
#include <json-c/json.h>
#include <nettle/eddsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "relocate.h"

#define SEAL_DOMAIN "ppn-move-v1\n"

char *relocate_key(const char *move, const char *part) {
        char *k = NULL;
        return asprintf(&k, RELOCATE_PREFIX "%s/%s", move, part) < 0 ? NULL : k;
}

/* The signed bytes: a domain tag, then the body, so a move message never verifies as anything else. */
static char *seal_message(const char *body, size_t *ret_len) {
        char *m = NULL;
        int n = asprintf(&m, SEAL_DOMAIN "%s", body);
        if (n < 0)
                return NULL;
        *ret_len = (size_t) n;
        return m;
}

char *relocate_seal(const struct fleet_identity *id, struct json_object *body) {
        const char *text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
        uint8_t sig[FLEET_SIG_SIZE];
        char hex[2 * FLEET_SIG_SIZE + 1];
        size_t n;
        _cleanup_free_ char *msg = text ? seal_message(text, &n) : NULL;
        if (!msg)
                return NULL;
        ed25519_sha512_sign(id->pub, id->priv, n, (const uint8_t *) msg, sig);
        fleet_hex(sig, sizeof(sig), hex);
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "body", json_object_new_string(text));
        json_object_object_add(o, "signer", json_object_new_string(id->id));
        json_object_object_add(o, "signature", json_object_new_string(hex));
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        char *ret = s ? strdup(s) : NULL;
        json_object_put(o);
        return ret;
}

static json_object *parse_object(const char *text, size_t len) {
        if (len > RELOCATE_BODY_MAX)
                return NULL;
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return NULL;
        json_object *o = json_tokener_parse_ex(tok, text, (int) len);
        bool whole = json_tokener_get_error(tok) == json_tokener_success && tok->char_offset == (int) len;
        json_tokener_free(tok);
        if (!o || !whole || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static int check_signature(json_object *env, const char *signer, const struct fleet_trusted *trusted, size_t n,
                           const char **ret_body, struct ppn_error *err) {
        const char *body = json_member_string(env, "body"), *who = json_member_string(env, "signer"),
                   *sighex = json_member_string(env, "signature");
        uint8_t sig[FLEET_SIG_SIZE];
        if (!body || !who || !sighex || fleet_unhex(sighex, sig, sizeof(sig)) < 0)
                return ppn_error_set(err, -EINVAL, "not a sealed message (body, signer, signature)");
        if (signer && strcmp(who, signer) != 0)
                return ppn_error_set(err, -EPERM, "sealed by node %.12s, not by node %.12s", who, signer);
        signer = who;
        const struct fleet_trusted *k = fleet_trusted_find(trusted, n, signer);
        if (!k)
                return ppn_error_set(err, -EPERM, "node %s is not trusted here (ppnctl fleet trust)", signer);
        size_t len;
        _cleanup_free_ char *msg = seal_message(body, &len);
        if (!msg)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        if (!ed25519_sha512_verify(k->pub, len, (const uint8_t *) msg, sig))
                return ppn_error_set(err, -EPERM, "the signature does not verify under node %.12s's key", signer);
        *ret_body = body;
        return 0;
}

int relocate_open(const char *text, size_t len, const char *signer, const struct fleet_trusted *trusted, size_t n,
                  const char *kind, const char *move, json_object **ret_body, struct ppn_error *err) {
        json_object *env = parse_object(text, len), *body = NULL;
        const char *b = NULL;
        int r;
        if (!env)
                return ppn_error_set(err, -EINVAL, "not a JSON object of at most %u bytes", RELOCATE_BODY_MAX);
        r = check_signature(env, signer, trusted, n, &b, err);
        if (r == 0 && !(body = parse_object(b, strlen(b))))
                r = ppn_error_set(err, -EINVAL, "its body is not a JSON object");
        if (r == 0 && (!json_member_string(body, "kind") || strcmp(json_member_string(body, "kind"), kind) != 0))
                r = ppn_error_set(err, -EINVAL, "not a move %s", kind);
        if (r == 0 && (!json_member_string(body, "move") || strcmp(json_member_string(body, "move"), move) != 0))
                r = ppn_error_set(err, -EINVAL, "written for another move");
        if (r == 0 && (!json_member_string(body, "node") ||
                       strcmp(json_member_string(body, "node"), json_member_string(env, "signer")) != 0))
                r = ppn_error_set(err, -EPERM, "its body names another node than its signer");
        json_object_put(env);
        if (r < 0) {
                json_object_put(body);
                return r;
        }
        *ret_body = body;
        return 0;
}

static json_object *new_body(const char *kind, const char *move, const char *node) {
        json_object *o = json_object_new_object();
        if (o) {
                json_object_object_add(o, "kind", json_object_new_string(kind));
                json_object_object_add(o, "move", json_object_new_string(move));
                json_object_object_add(o, "node", json_object_new_string(node));
        }
        return o;
}

json_object *relocate_request_to_json(const struct relocate_request *r) {
        json_object *o = new_body("request", r->move, r->source), *vm = ledger_vm_to_json(&r->vm);
        if (!o || !vm) {
                json_object_put(o);
                json_object_put(vm);
                return NULL;
        }
        json_object_object_add(o, "dest", json_object_new_string(r->dest));
        json_object_object_add(o, "grant", json_object_new_string(r->grant));
        json_object_object_add(o, "time", json_object_new_int64(r->time));
        json_object_object_add(o, "vm", vm);
        json_object_object_add(o, "deflate-on-oom", json_object_new_boolean(!r->no_deflate_on_oom));
        json_object_object_add(o, "free-page-reporting", json_object_new_boolean(!r->no_free_page_reporting));
        return o;
}

static int id_member(json_object *o, const char *key, char *buf, size_t len, bool empty_ok, struct ppn_error *err) {
        if (json_member_text(o, key, buf, len) < 0 || strlen(buf) != len - 1 || !fleet_id_valid(buf)) {
                if (empty_ok && json_member_string(o, key) && !*json_member_string(o, key)) {
                        buf[0] = 0;
                        return 0;
                }
                return ppn_error_set(err, -EINVAL, "'%s' is not a %zu-character hex id", key, len - 1);
        }
        return 0;
}

int relocate_request_from_json(json_object *body, struct relocate_request *ret, struct ppn_error *err) {
        struct relocate_request r = {};
        json_object *vm;
        bool deflate = true, fpr = true;
        int k;
        if ((k = id_member(body, "move", r.move, sizeof(r.move), false, err)) < 0 ||
            (k = id_member(body, "node", r.source, sizeof(r.source), false, err)) < 0 ||
            (k = id_member(body, "dest", r.dest, sizeof(r.dest), false, err)) < 0 ||
            (k = id_member(body, "grant", r.grant, sizeof(r.grant), true, err)) < 0)
                return ppn_error_prefix(err, k, "move request");
        if (json_member_int64(body, "time", &r.time) < 0)
                return ppn_error_set(err, -EINVAL, "move request: 'time' is not an integer");
        if (json_member_bool(body, "deflate-on-oom", &deflate) == -EINVAL ||
            json_member_bool(body, "free-page-reporting", &fpr) == -EINVAL)
                return ppn_error_set(err, -EINVAL, "move request: 'deflate-on-oom' or 'free-page-reporting' is not "
                                     "true or false");
        r.no_deflate_on_oom = !deflate;
        r.no_free_page_reporting = !fpr;
        if (!json_object_object_get_ex(body, "vm", &vm) || ledger_vm_from_json(vm, &r.vm, err) < 0)
                return ppn_error_prefix(err, -EINVAL, "move request: 'vm'");
        if (!ledger_name_valid(r.vm.name) || !ledger_uuid_valid(r.vm.uuid)) {
                ledger_vm_done(&r.vm);
                return ppn_error_set(err, -EINVAL, "move request: the VM needs a valid name and uuid");
        }
        *ret = r;
        return 0;
}

void relocate_request_done(struct relocate_request *r) {
        ledger_vm_done(&r->vm);
}

json_object *relocate_answer_to_json(const char *move, const char *node, const struct relocate_answer *a) {
        json_object *o = new_body("answer", move, node);
        if (!o)
                return NULL;
        json_object_object_add(o, "ok", json_object_new_boolean(a->ok));
        json_object_object_add(o, "reason", json_object_new_string(a->reason));
        json_object_object_add(o, "address", json_object_new_string(a->address));
        json_object_object_add(o, "port", json_object_new_int(a->port));
        return o;
}

int relocate_answer_from_json(json_object *body, struct relocate_answer *ret, struct ppn_error *err) {
        struct relocate_answer a = {};
        int64_t port;
        if (json_member_bool(body, "ok", &a.ok) < 0 || json_member_text(body, "reason", a.reason, sizeof(a.reason)) < 0 ||
            json_member_text(body, "address", a.address, sizeof(a.address)) < 0 ||
            json_member_int64(body, "port", &port) < 0 || port < 0 || port > 65535 || (a.ok && port == 0))
                return ppn_error_set(err, -EINVAL, "move answer: want ok, reason, address and a port");
        a.port = (uint16_t) port;
        *ret = a;
        return 0;
}

json_object *relocate_outcome_to_json(const char *move, const char *node, enum relocate_outcome oc,
                                      const char *reason) {
        json_object *o = new_body("outcome", move, node);
        if (o) {
                json_object_object_add(o, "outcome", json_object_new_string(oc == RELOCATE_ADOPTED ? "adopted" : "aborted"));
                json_object_object_add(o, "reason", json_object_new_string(reason ? reason : ""));
        }
        return o;
}

int relocate_outcome_from_json(json_object *body, enum relocate_outcome *ret, char *reason, size_t len,
                               struct ppn_error *err) {
        const char *s = json_member_string(body, "outcome");
        if (!s || (strcmp(s, "adopted") != 0 && strcmp(s, "aborted") != 0))
                return ppn_error_set(err, -EINVAL, "move outcome: want \"adopted\" or \"aborted\"");
        *ret = strcmp(s, "adopted") == 0 ? RELOCATE_ADOPTED : RELOCATE_ABORTED;
        if (json_member_text(body, "reason", reason, len) < 0)
                reason[0] = 0;
        return 0;
}

bool relocate_address_allowed(const char *list, const char *addr) {
        size_t n = strlen(addr);
        for (const char *p = list; p && *p;) {
                p += strspn(p, " ,");
                size_t k = strcspn(p, " ,");
                if (k && k == n && strncmp(p, addr, n) == 0)
                        return true;
                p += k;
        }
        return false;
}

static uint64_t member_u64(json_object *o, const char *key) {
        uint64_t v = 0;
        return json_member_uint64(o, key, &v) < 0 ? 0 : v;
}

void relocate_progress_parse(json_object *reply, struct relocate_progress *ret) {
        json_object *ram = NULL;
        *ret = (struct relocate_progress) {};
        if (json_member_text(reply, "status", ret->status, sizeof(ret->status)) < 0)
                snprintf(ret->status, sizeof(ret->status), "none");
        json_member_text(reply, "error-desc", ret->error, sizeof(ret->error));
        ret->total_time_ms = member_u64(reply, "total-time");
        ret->downtime_ms = member_u64(reply, "downtime");
        ret->expected_downtime_ms = member_u64(reply, "expected-downtime");
        if (json_object_object_get_ex(reply, "ram", &ram) && json_object_is_type(ram, json_type_object)) {
                ret->total_bytes = member_u64(ram, "total");
                ret->transferred_bytes = member_u64(ram, "transferred");
                ret->remaining_bytes = member_u64(ram, "remaining");
                ret->dirty_pages_rate = member_u64(ram, "dirty-pages-rate");
        }
}

json_object *relocate_progress_to_json(const struct relocate_progress *p) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "status", json_object_new_string(p->status));
        json_object_object_add(o, "total_bytes", json_object_new_uint64(p->total_bytes));
        json_object_object_add(o, "transferred_bytes", json_object_new_uint64(p->transferred_bytes));
        json_object_object_add(o, "remaining_bytes", json_object_new_uint64(p->remaining_bytes));
        json_object_object_add(o, "total_time_ms", json_object_new_uint64(p->total_time_ms));
        json_object_object_add(o, "downtime_ms", json_object_new_uint64(p->downtime_ms));
        if (p->error[0])
                json_object_object_add(o, "error", json_object_new_string(p->error));
        return o;
}
