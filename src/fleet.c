/* SPDX-License-Identifier: Apache-2.0 */
#include "fleet.h"

#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <nettle/eddsa.h>
#include <nettle/sha2.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "jsonutil.h"

/* ---- hex and names ---- */

void fleet_hex(const uint8_t *data, size_t len, char *ret) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < len; i++) {
                ret[2 * i] = digits[data[i] >> 4];
                ret[2 * i + 1] = digits[data[i] & 15];
        }
        ret[2 * len] = '\0';
}

static int hexval(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int fleet_unhex(const char *text, uint8_t *ret, size_t len) {
        if (strlen(text) != 2 * len)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                ret[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

static bool hex_of_len(const char *s, size_t len) {
        if (strlen(s) != len)
                return false;
        for (size_t i = 0; i < len; i++)
                if (hexval(s[i]) < 0)
                        return false;
        return true;
}

bool fleet_id_valid(const char *id) {
        return id && hex_of_len(id, FLEET_ID_LEN);
}

void fleet_key_names(const uint8_t pub[FLEET_KEY_SIZE], char ret_id[FLEET_ID_LEN + 1],
                     char ret_fpr[FLEET_FPR_LEN + 1]) {
        struct sha256_ctx ctx;
        uint8_t d[SHA256_DIGEST_SIZE];

        sha256_init(&ctx);
        sha256_update(&ctx, FLEET_KEY_SIZE, pub);
        sha256_digest(&ctx, sizeof(d), d);
        if (ret_fpr)
                fleet_hex(d, sizeof(d), ret_fpr);
        if (ret_id)
                fleet_hex(d, FLEET_ID_LEN / 2, ret_id);
}

/* ---- the key file: "ppn-node-key-v1 <hex private key>\n", mode 0600 ---- */

char *fleet_identity_path(const char *ledger_path) {
        return path_beside(ledger_path, FLEET_KEY_FILE);
}

static void identity_from_priv(const uint8_t priv[FLEET_KEY_SIZE], struct fleet_identity *ret) {
        memcpy(ret->priv, priv, FLEET_KEY_SIZE);
        ed25519_sha512_public_key(ret->pub, priv);
        fleet_key_names(ret->pub, ret->id, ret->fingerprint);
}

int fleet_identity_create(const char *path, struct fleet_identity *ret, struct ppn_error *err) {
        uint8_t priv[FLEET_KEY_SIZE];
        char hex[2 * FLEET_KEY_SIZE + 1], line[128];
        _cleanup_close_ int fd = -1;
        int n;

        if (getrandom(priv, sizeof(priv), 0) != (ssize_t) sizeof(priv))
                return ppn_error_set(err, -errno, "cannot read random bytes for a node key: %m");
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return ppn_error_set(err, -errno, errno == EEXIST
                                     ? "node key '%s' already exists; this node has its identity (ppnctl node show)"
                                     : "cannot create the node key '%s': %m", path);
        fleet_hex(priv, sizeof(priv), hex);
        n = snprintf(line, sizeof(line), "ppn-node-key-v1 %s\n", hex);
        if (write(fd, line, (size_t) n) != n || fsync(fd) < 0) {
                int e = errno;
                unlink(path);
                return ppn_error_set(err, -e, "cannot write the node key '%s': %s", path, strerror(e));
        }
        identity_from_priv(priv, ret);
        explicit_bzero(priv, sizeof(priv));
        explicit_bzero(line, sizeof(line));
        return 0;
}

int fleet_identity_load(const char *path, struct fleet_identity *ret, struct ppn_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_free_ char *text = NULL;
        uint8_t priv[FLEET_KEY_SIZE];
        struct stat st;
        size_t len = 0;
        int r;

        if (fd < 0)
                return ppn_error_set(err, -errno, errno == ENOENT
                                     ? "no node key '%s'; create it with 'ppnctl node init'"
                                     : "cannot open the node key '%s': %m", path);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return ppn_error_set(err, -EINVAL, "node key '%s' is not a regular file", path);
        if (st.st_mode & 077)
                return ppn_error_set(err, -EPERM, "node key '%s' may be read by others (mode %04o); "
                                     "chmod 600 it, and make a new one if it may have leaked", path,
                                     (unsigned) (st.st_mode & 07777));
        r = read_full_fd(fd, 256, &text, &len);
        if (r < 0 || len != 16 + 2 * FLEET_KEY_SIZE + 1 || strncmp(text, "ppn-node-key-v1 ", 16) != 0 ||
            text[len - 1] != '\n')
                return ppn_error_set(err, -EINVAL, "node key '%s' is not a ppn node key", path);
        text[len - 1] = '\0';
        if (fleet_unhex(text + 16, priv, sizeof(priv)) < 0)
                return ppn_error_set(err, -EINVAL, "node key '%s' is not a ppn node key", path);
        identity_from_priv(priv, ret);
        explicit_bzero(priv, sizeof(priv));
        explicit_bzero(text, len);
        return 0;
}

/* ---- capacity ---- */

char *fleet_capacity_encode(const struct fleet_capacity *c) {
        _cleanup_json_ json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "node", json_object_new_string(c->node));
        json_object_object_add(o, "physical_bytes", json_object_new_uint64(c->physical_bytes));
        json_object_object_add(o, "reserve_bytes", json_object_new_uint64(c->reserve_bytes));
        json_object_object_add(o, "reserved_min_bytes", json_object_new_uint64(c->reserved_min_bytes));
        json_object_object_add(o, "lent_bytes", json_object_new_uint64(c->lent_bytes));
        json_object_object_add(o, "pool_available_bytes", json_object_new_int64(c->pool_available_bytes));
        json_object_object_add(o, "committed_bytes", json_object_new_uint64(c->committed_bytes));
        json_object_object_add(o, "free_bytes", json_object_new_int64(c->free_bytes));
        json_object_object_add(o, "psi_some_avg10", c->psi_some_avg10 < 0 ? NULL
                                                    : json_object_new_double(c->psi_some_avg10));
        json_object_object_add(o, "vms", json_object_new_uint64(c->n_vms));
        json_object_object_add(o, "seq", json_object_new_uint64(c->seq));
        json_object_object_add(o, "time_usec", json_object_new_int64(c->time_usec));
        return strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

static int parse_doc(const char *text, size_t len, json_object **ret, struct ppn_error *err) {
        json_tokener *tok;
        json_object *o;

        if (len > 65536 || len > INT32_MAX)
                return ppn_error_set(err, -EINVAL, "record of %zu bytes is too long", len);
        tok = json_tokener_new_ex(16);
        if (!tok)
                return -ENOMEM;
        o = json_tokener_parse_ex(tok, text, (int) len);
        if (o && json_tokener_get_parse_end(tok) != len) {
                json_object_put(o);
                o = NULL;
        }
        json_tokener_free(tok);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return ppn_error_set(err, -EINVAL, "record is not one JSON object");
        }
        *ret = o;
        return 0;
}

/* Non-negative integer member below 2^62 (sizes stay far from overflow). */
static int get_u(json_object *o, const char *key, uint64_t *ret, struct ppn_error *err) {
        int64_t v;
        if (json_member_int64(o, key, &v) < 0 || v < 0 || v > INT64_C(1) << 62)
                return ppn_error_set(err, -EINVAL, "'%s' is missing or not an integer in range", key);
        *ret = (uint64_t) v;
        return 0;
}

static int get_i(json_object *o, const char *key, int64_t *ret, struct ppn_error *err) {
        int64_t v;
        if (json_member_int64(o, key, &v) < 0 || v < -(INT64_C(1) << 62) || v > INT64_C(1) << 62)
                return ppn_error_set(err, -EINVAL, "'%s' is missing or not an integer in range", key);
        *ret = v;
        return 0;
}

static int get_id(json_object *o, const char *key, size_t len, char *ret, struct ppn_error *err) {
        const char *s = json_member_string(o, key);
        if (!s || !hex_of_len(s, len))
                return ppn_error_set(err, -EINVAL, "'%s' is missing or not %zu hex digits", key, len);
        memcpy(ret, s, len + 1);
        return 0;
}

static int get_psi(json_object *o, double *ret, struct ppn_error *err) {
        json_object *v;
        if (!json_object_object_get_ex(o, "psi_some_avg10", &v) || json_object_is_type(v, json_type_null))
                return *ret = -1, 0;
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return ppn_error_set(err, -EINVAL, "'psi_some_avg10' is not a number");
        *ret = json_object_get_double(v);
        if (!(*ret >= 0 && *ret <= 100))
                return ppn_error_set(err, -EINVAL, "'psi_some_avg10' is not a percentage");
        return 0;
}

int fleet_capacity_decode(const char *text, size_t len, struct fleet_capacity *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        struct fleet_capacity c = {};
        int r = parse_doc(text, len, &o, err);

        if (r < 0)
                return r;
        if ((r = get_id(o, "node", FLEET_ID_LEN, c.node, err)) < 0 ||
            (r = get_u(o, "physical_bytes", &c.physical_bytes, err)) < 0 ||
            (r = get_u(o, "reserve_bytes", &c.reserve_bytes, err)) < 0 ||
            (r = get_u(o, "reserved_min_bytes", &c.reserved_min_bytes, err)) < 0 ||
            (r = get_u(o, "lent_bytes", &c.lent_bytes, err)) < 0 ||
            (r = get_i(o, "pool_available_bytes", &c.pool_available_bytes, err)) < 0 ||
            (r = get_u(o, "committed_bytes", &c.committed_bytes, err)) < 0 ||
            (r = get_i(o, "free_bytes", &c.free_bytes, err)) < 0 ||
            (r = get_psi(o, &c.psi_some_avg10, err)) < 0 ||
            (r = get_u(o, "vms", &c.n_vms, err)) < 0 ||
            (r = get_u(o, "seq", &c.seq, err)) < 0 ||
            (r = get_i(o, "time_usec", &c.time_usec, err)) < 0)
                return r;
        *ret = c;
        return 0;
}

static uint64_t moved(int64_t a, int64_t b) {
        return a > b ? (uint64_t) (a - b) : (uint64_t) (b - a);
}

/* The first byte figure that moved by more than threshold, or NULL. */
static const char *figure_moved(const struct fleet_capacity *last, const struct fleet_capacity *now,
                                uint64_t threshold, uint64_t *ret_by) {
        const struct { const char *name; int64_t a, b; } figs[] = {
                { "physical", (int64_t) last->physical_bytes, (int64_t) now->physical_bytes },
                { "reserve", (int64_t) last->reserve_bytes, (int64_t) now->reserve_bytes },
                { "reserved_min", (int64_t) last->reserved_min_bytes, (int64_t) now->reserved_min_bytes },
                { "lent", (int64_t) last->lent_bytes, (int64_t) now->lent_bytes },
                { "pool_available", last->pool_available_bytes, now->pool_available_bytes },
                { "committed", (int64_t) last->committed_bytes, (int64_t) now->committed_bytes },
                { "free", last->free_bytes, now->free_bytes },
        };
        for (size_t i = 0; i < ELEMENTSOF(figs); i++)
                if (moved(figs[i].a, figs[i].b) > threshold) {
                        *ret_by = moved(figs[i].a, figs[i].b);
                        return figs[i].name;
                }
        return NULL;
}

const char *fleet_should_publish(const struct fleet_capacity *last, uint64_t last_usec,
                                 const struct fleet_capacity *now, uint64_t now_usec,
                                 const struct fleet_publish_rule *rule, char *buf, size_t len) {
        const char *fig;
        uint64_t by = 0;

        if (!last)
                return snprintf(buf, len, "first record"), buf;
        fig = figure_moved(last, now, rule->threshold_bytes, &by);
        if (fig)
                return snprintf(buf, len, "%s moved by %" PRIu64 " MiB", fig, by / MIB), buf;
        if (last->n_vms != now->n_vms)
                return snprintf(buf, len, "VM count %" PRIu64 " -> %" PRIu64, last->n_vms, now->n_vms), buf;
        if ((last->psi_some_avg10 < 0) != (now->psi_some_avg10 < 0) ||
            fabs(last->psi_some_avg10 - now->psi_some_avg10) > rule->psi_points)
                return snprintf(buf, len, "host PSI moved"), buf;
        if (now_usec - last_usec >= rule->republish_usec)
                return snprintf(buf, len, "%" PRIu64 " s since the last write", (now_usec - last_usec) / USEC_PER_SEC), buf;
        return NULL;
}

/* ---- grants and revocations ---- */

/* The exact bytes a signature covers: one field per line, in a fixed order, so two encoders
 * cannot disagree about what was signed (the JSON around it may be re-serialized freely). */
static int grant_message(const struct fleet_grant *g, char *buf, size_t len) {
        return snprintf(buf, len, "ppn-grant-v1\nid=%s\nlender=%s\nborrower=%s\nbytes=%" PRIu64
                        "\nnot_before=%" PRId64 "\nexpires=%" PRId64 "\nnonce=%s\nfence=%" PRId64 "\n",
                        g->id, g->lender, g->borrower, g->bytes, g->not_before, g->expires, g->nonce, g->fence);
}

static int revocation_message(const struct fleet_revocation *v, char *buf, size_t len) {
        return snprintf(buf, len, "ppn-revoke-v1\ngrant=%s\nlender=%s\ntime=%" PRId64 "\n", v->grant, v->lender,
                        v->time);
}

int fleet_grant_sign(struct fleet_grant *g, const struct fleet_identity *lender) {
        char msg[512];
        int n = grant_message(g, msg, sizeof(msg));

        if (strcmp(g->lender, lender->id) != 0 || n < 0 || (size_t) n >= sizeof(msg))
                return -EINVAL;
        ed25519_sha512_sign(lender->pub, lender->priv, (size_t) n, (const uint8_t *) msg, g->signature);
        return 0;
}

int fleet_revocation_sign(struct fleet_revocation *v, const struct fleet_identity *lender) {
        char msg[256];
        int n = revocation_message(v, msg, sizeof(msg));

        if (strcmp(v->lender, lender->id) != 0 || n < 0 || (size_t) n >= sizeof(msg))
                return -EINVAL;
        ed25519_sha512_sign(lender->pub, lender->priv, (size_t) n, (const uint8_t *) msg, v->signature);
        return 0;
}

static void add_sig(json_object *o, const uint8_t sig[FLEET_SIG_SIZE]) {
        char hex[2 * FLEET_SIG_SIZE + 1];
        fleet_hex(sig, FLEET_SIG_SIZE, hex);
        json_object_object_add(o, "signature", json_object_new_string(hex));
}

char *fleet_grant_encode(const struct fleet_grant *g) {
        _cleanup_json_ json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_object_new_string(g->id));
        json_object_object_add(o, "lender", json_object_new_string(g->lender));
        json_object_object_add(o, "borrower", json_object_new_string(g->borrower));
        json_object_object_add(o, "bytes", json_object_new_uint64(g->bytes));
        json_object_object_add(o, "not_before", json_object_new_int64(g->not_before));
        json_object_object_add(o, "expires", json_object_new_int64(g->expires));
        json_object_object_add(o, "nonce", json_object_new_string(g->nonce));
        json_object_object_add(o, "fence", json_object_new_int64(g->fence));
        add_sig(o, g->signature);
        return strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

char *fleet_revocation_encode(const struct fleet_revocation *v) {
        _cleanup_json_ json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "grant", json_object_new_string(v->grant));
        json_object_object_add(o, "lender", json_object_new_string(v->lender));
        json_object_object_add(o, "time", json_object_new_int64(v->time));
        add_sig(o, v->signature);
        return strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

static int get_sig(json_object *o, uint8_t ret[FLEET_SIG_SIZE], struct ppn_error *err) {
        const char *s = json_member_string(o, "signature");
        if (!s || fleet_unhex(s, ret, FLEET_SIG_SIZE) < 0)
                return ppn_error_set(err, -EINVAL, "'signature' is missing or not %d hex digits", 2 * FLEET_SIG_SIZE);
        return 0;
}

int fleet_grant_decode(const char *text, size_t len, struct fleet_grant *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        struct fleet_grant g = {};
        int r = parse_doc(text, len, &o, err);

        if (r < 0)
                return r;
        if ((r = get_id(o, "id", FLEET_GRANT_ID_LEN, g.id, err)) < 0 ||
            (r = get_id(o, "lender", FLEET_ID_LEN, g.lender, err)) < 0 ||
            (r = get_id(o, "borrower", FLEET_ID_LEN, g.borrower, err)) < 0 ||
            (r = get_u(o, "bytes", &g.bytes, err)) < 0 ||
            (r = get_i(o, "not_before", &g.not_before, err)) < 0 ||
            (r = get_i(o, "expires", &g.expires, err)) < 0 ||
            (r = get_id(o, "nonce", FLEET_GRANT_ID_LEN, g.nonce, err)) < 0 ||
            (r = get_i(o, "fence", &g.fence, err)) < 0 || (r = get_sig(o, g.signature, err)) < 0)
                return r;
        if (g.bytes == 0 || g.expires <= g.not_before || g.fence <= 0)
                return ppn_error_set(err, -EINVAL, "bytes, validity window or fence out of range");
        *ret = g;
        return 0;
}

int fleet_revocation_decode(const char *text, size_t len, struct fleet_revocation *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        struct fleet_revocation v = {};
        int r = parse_doc(text, len, &o, err);

        if (r < 0)
                return r;
        if ((r = get_id(o, "grant", FLEET_GRANT_ID_LEN, v.grant, err)) < 0 ||
            (r = get_id(o, "lender", FLEET_ID_LEN, v.lender, err)) < 0 ||
            (r = get_i(o, "time", &v.time, err)) < 0 || (r = get_sig(o, v.signature, err)) < 0)
                return r;
        *ret = v;
        return 0;
}

const struct fleet_trusted *fleet_trusted_find(const struct fleet_trusted *t, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(t[i].id, id) == 0)
                        return &t[i];
        return NULL;
}

bool fleet_revocation_valid(const struct fleet_revocation *v, const struct fleet_trusted *trusted, size_t n) {
        const struct fleet_trusted *k = fleet_trusted_find(trusted, n, v->lender);
        char msg[256];
        int len = revocation_message(v, msg, sizeof(msg));

        return k && len > 0 && (size_t) len < sizeof(msg) &&
               ed25519_sha512_verify(k->pub, (size_t) len, (const uint8_t *) msg, v->signature);
}

const char *fleet_verdict_to_string(enum fleet_verdict v) {
        static const char *const names[] = {
                [FLEET_VALID] = "valid", [FLEET_VALID_ELSEWHERE] = "valid-elsewhere",
                [FLEET_MALFORMED] = "malformed", [FLEET_REWRITTEN] = "rewritten",
                [FLEET_UNTRUSTED_LENDER] = "untrusted-lender", [FLEET_BAD_SIGNATURE] = "bad-signature",
                [FLEET_UNTRUSTED_BORROWER] = "untrusted-borrower", [FLEET_NOT_YET_VALID] = "not-yet-valid",
                [FLEET_EXPIRED] = "expired", [FLEET_REVOKED] = "revoked",
        };
        return (size_t) v < ELEMENTSOF(names) && names[v] ? names[v] : "unknown";
}

static void verdict(struct fleet_check *ret, enum fleet_verdict v, const char *fmt, ...) _printf_(3, 4);
static void verdict(struct fleet_check *ret, enum fleet_verdict v, const char *fmt, ...) {
        va_list ap;
        ret->verdict = v;
        va_start(ap, fmt);
        vsnprintf(ret->reason, sizeof(ret->reason), fmt, ap);
        va_end(ap);
}

static bool revoked(const struct fleet_grant *g, const struct fleet_view *view) {
        for (size_t i = 0; i < view->n_revocations; i++) {
                const struct fleet_revocation *v = &view->revocations[i];
                if (strcmp(v->grant, g->id) == 0 && strcmp(v->lender, g->lender) == 0 &&
                    fleet_revocation_valid(v, view->trusted, view->n_trusted))
                        return true;
        }
        return false;
}

/* Checks in order of what can be known without trusting the content, so the reason given is
 * the most basic thing wrong: the store, the key, the signature, then the content. */
void fleet_grant_check(const struct fleet_grant *g, const char *key_id, int64_t version,
                       const struct fleet_view *view, struct fleet_check *ret) {
        const struct fleet_trusted *lender;
        char msg[512];
        int n;

        if (strcmp(g->id, key_id) != 0)
                return verdict(ret, FLEET_REWRITTEN, "the grant's id does not match its etcd key %s", key_id);
        if (version != 1)
                return verdict(ret, FLEET_REWRITTEN, "the grant was rewritten in etcd (version %" PRId64 "); "
                               "grants are written once", version);
        lender = fleet_trusted_find(view->trusted, view->n_trusted, g->lender);
        if (!lender)
                return verdict(ret, FLEET_UNTRUSTED_LENDER, "lender %s is not a trusted node here "
                               "(pair it with 'ppnctl fleet trust')", g->lender);
        n = grant_message(g, msg, sizeof(msg));
        if (n < 0 || (size_t) n >= sizeof(msg) ||
            !ed25519_sha512_verify(lender->pub, (size_t) n, (const uint8_t *) msg, g->signature))
                return verdict(ret, FLEET_BAD_SIGNATURE, "the signature does not verify under lender %s's key "
                               "(forged or altered)", g->lender);
        if (!fleet_trusted_find(view->trusted, view->n_trusted, g->borrower))
                return verdict(ret, FLEET_UNTRUSTED_BORROWER, "borrower %s is not a trusted node here", g->borrower);
        if (revoked(g, view))
                return verdict(ret, FLEET_REVOKED, "revoked by its lender");
        if (view->now < g->not_before)
                return verdict(ret, FLEET_NOT_YET_VALID, "valid from %" PRId64 ", %" PRId64 " s from now by this "
                               "node's clock", g->not_before, g->not_before - view->now);
        if (view->now >= g->expires)
                return verdict(ret, FLEET_EXPIRED, "expired at %" PRId64 ", %" PRId64 " s ago by this node's clock",
                               g->expires, view->now - g->expires);
        if (strcmp(g->borrower, view->self) != 0)
                return verdict(ret, FLEET_VALID_ELSEWHERE, "sound, but names node %s, not this one", g->borrower);
        verdict(ret, FLEET_VALID, "honoured here until %" PRId64 " (%" PRId64 " s)", g->expires,
                g->expires - view->now);
}
