/* SPDX-License-Identifier: Apache-2.0 */
#include "etcd.h"

/* Called through pointers (libcurl is loaded when first needed), where the header's type-checking
 * macros cannot apply. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <string.h>

#include "jsonutil.h"
#include "log.h"

struct etcd {
        CURL *curl;
        char *endpoints[ETCD_ENDPOINTS_MAX];
        size_t n_endpoints;
        size_t current;                 /* the endpoint that answered last */
        char *ca, *cert, *key;
        unsigned timeout_ms;
};

/* ---- base64 (nettle) ---- */

static char *b64_encode(const void *data, size_t len) {
        char *out = malloc(BASE64_ENCODE_RAW_LENGTH(len) + 1);
        if (!out)
                return NULL;
        base64_encode_raw(out, len, data);
        out[BASE64_ENCODE_RAW_LENGTH(len)] = '\0';
        return out;
}

/* Decodes into a NUL-terminated heap buffer; -EPROTO if not base64, -EFBIG over max. */
static int b64_decode(const char *text, size_t max, uint8_t **ret, size_t *ret_len) {
        size_t in_len = strlen(text), out_len = BASE64_DECODE_LENGTH(in_len);
        struct base64_decode_ctx ctx;
        _cleanup_free_ uint8_t *out = NULL;

        if (out_len > max + 3)
                return -EFBIG;
        out = malloc(out_len + 1);
        if (!out)
                return -ENOMEM;
        base64_decode_init(&ctx);
        if (!base64_decode_update(&ctx, &out_len, out, in_len, text) || !base64_decode_final(&ctx))
                return -EPROTO;
        if (out_len > max)
                return -EFBIG;
        out[out_len] = 0;
        *ret_len = out_len;
        *ret = TAKE_PTR(out);
        return 0;
}

/* ---- parsing replies (pure) ---- */

static int parse_object(const char *body, size_t len, json_object **ret, struct ppn_error *err) {
        json_tokener *tok;
        json_object *o;

        if (len > ETCD_REPLY_MAX)
                return ppn_error_set(err, -EFBIG, "etcd reply of %zu bytes is over the %u-byte limit", len,
                                     ETCD_REPLY_MAX);
        if (len > INT32_MAX)
                return -EFBIG;
        tok = json_tokener_new_ex(64);
        if (!tok)
                return -ENOMEM;
        o = json_tokener_parse_ex(tok, body, (int) len);
        json_tokener_free(tok);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                /* body need not be NUL-terminated: quote at most its first 60 bytes. */
                return ppn_error_set(err, -EPROTO, "etcd reply is not a JSON object (%.*s)",
                                     len ? (int) (len < 60 ? len : 60) : 5, len ? body : "empty");
        }
        *ret = o;
        return 0;
}

/* An int64 as etcd's gateway writes it: a string of digits (optionally '-'), or a JSON integer.
 * Missing = 0 (proto3 omits zero values). -EPROTO for any other type or text. */
static int member_i64(json_object *o, const char *key, int64_t *ret) {
        json_object *v;
        const char *s;
        char *end;
        long long x;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return *ret = 0, 0;
        if (json_object_is_type(v, json_type_int))
                return *ret = json_object_get_int64(v), 0;
        if (!json_object_is_type(v, json_type_string))
                return -EPROTO;
        s = json_object_get_string(v);
        if (!*s || strlen(s) > 20)
                return -EPROTO;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (errno || *end)
                return -EPROTO;
        *ret = x;
        return 0;
}

static int member_bool(json_object *o, const char *key, bool *ret) {
        int r = json_member_bool(o, key, ret);
        if (r == -ENOENT)
                return *ret = false, 0;
        return r < 0 ? -EPROTO : 0;
}

/* {"error": ..., "code": N, "message": ...}: etcd's own refusal. */
static int reply_error(json_object *o, struct ppn_error *err) {
        const char *msg = json_member_string(o, "message");
        json_object *e;
        int64_t code = 0;

        if (!json_object_object_get_ex(o, "error", &e))
                return 0;
        if (!msg)
                msg = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "(no message)";
        (void) member_i64(o, "code", &code);
        /* gRPC code 5 is NOT_FOUND ("requested lease not found"). */
        return ppn_error_set(err, code == 5 ? -ENOENT : -EIO, "etcd: %.300s (code %" PRId64 ")", msg, code);
}

static int header_revision(json_object *o, int64_t *ret) {
        json_object *h;
        if (!json_object_object_get_ex(o, "header", &h))
                return *ret = 0, 0;
        if (!json_object_is_type(h, json_type_object))
                return -EPROTO;
        return member_i64(h, "revision", ret);
}

void etcd_kv_done(struct etcd_kv *kv) {
        if (!kv)
                return;
        free(kv->key);
        free(kv->value);
        *kv = (struct etcd_kv) {};
}

static int parse_kv(json_object *o, struct etcd_kv *ret, struct ppn_error *err) {
        struct etcd_kv kv = {};
        const char *k, *v;
        size_t klen = 0;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return ppn_error_set(err, -EPROTO, "etcd reply: a kv is not an object");
        k = json_member_string(o, "key");
        v = json_object_object_get_ex(o, "value", NULL) ? json_member_string(o, "value") : "";
        if (!k || !v)
                return ppn_error_set(err, -EPROTO, "etcd reply: a kv has no key, or a key or value that is not a string");
        r = b64_decode(k, ETCD_KEY_MAX, (uint8_t **) &kv.key, &klen);
        if (r == 0)
                r = b64_decode(v, ETCD_VALUE_MAX, &kv.value, &kv.value_len);
        if (r == 0 && strlen(kv.key) != klen)
                r = -EPROTO;    /* a NUL inside the key */
        if (r == 0 && (member_i64(o, "create_revision", &kv.create_revision) < 0 ||
                       member_i64(o, "mod_revision", &kv.mod_revision) < 0 ||
                       member_i64(o, "version", &kv.version) < 0 || member_i64(o, "lease", &kv.lease) < 0))
                r = -EPROTO;
        if (r < 0) {
                etcd_kv_done(&kv);
                return ppn_error_set(err, r, "etcd reply: a kv %s", r == -EFBIG ? "is over the size limits"
                                                                              : "is not valid (base64, integers)");
        }
        *ret = kv;
        return 0;
}

void etcd_range_done(struct etcd_range *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n_kvs; i++)
                etcd_kv_done(&r->kvs[i]);
        free(r->kvs);
        *r = (struct etcd_range) {};
}

static int parse_range_object(json_object *o, struct etcd_range *ret, struct ppn_error *err) {
        struct etcd_range rg = {};
        json_object *kvs = NULL;
        int r;

        if (header_revision(o, &rg.revision) < 0)
                return ppn_error_set(err, -EPROTO, "etcd reply: header.revision is not an integer");
        if (json_object_object_get_ex(o, "kvs", &kvs) && !json_object_is_type(kvs, json_type_array))
                return ppn_error_set(err, -EPROTO, "etcd reply: kvs is not an array");
        size_t n = kvs ? json_object_array_length(kvs) : 0;
        if (n && !(rg.kvs = calloc(n, sizeof(*rg.kvs))))
                return -ENOMEM;
        for (; rg.n_kvs < n; rg.n_kvs++) {
                r = parse_kv(json_object_array_get_idx(kvs, rg.n_kvs), &rg.kvs[rg.n_kvs], err);
                if (r < 0) {
                        etcd_range_done(&rg);
                        return r;
                }
        }
        *ret = rg;
        return 0;
}

int etcd_parse_range(const char *body, size_t len, struct etcd_range *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        int r = parse_object(body, len, &o, err);
        if (r < 0)
                return r;
        r = reply_error(o, err);
        if (r < 0)
                return r;
        return parse_range_object(o, ret, err);
}

int etcd_parse_reply(const char *body, size_t len, const char *field, int64_t *ret_revision, int64_t *ret_field,
                     struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        int64_t rev = 0, f = 0;
        int r = parse_object(body, len, &o, err);

        if (r < 0)
                return r;
        r = reply_error(o, err);
        if (r < 0)
                return r;
        if (header_revision(o, &rev) < 0 || (field && member_i64(o, field, &f) < 0))
                return ppn_error_set(err, -EPROTO, "etcd reply: %s is not an integer", field ? field : "revision");
        if (ret_revision)
                *ret_revision = rev;
        if (ret_field)
                *ret_field = f;
        return 0;
}

void etcd_watch_msg_done(struct etcd_watch_msg *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_events; i++)
                etcd_kv_done(&m->events[i].kv);
        free(m->events);
        *m = (struct etcd_watch_msg) {};
}

static int parse_event(json_object *o, struct etcd_event *ret, struct ppn_error *err) {
        const char *type;
        json_object *kv;

        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "kv", &kv))
                return ppn_error_set(err, -EPROTO, "etcd watch: an event without a kv");
        type = json_object_object_get_ex(o, "type", NULL) ? json_member_string(o, "type") : "PUT";
        if (!type || (strcmp(type, "PUT") != 0 && strcmp(type, "DELETE") != 0))
                return ppn_error_set(err, -EPROTO, "etcd watch: an event of unknown type");
        ret->type = strcmp(type, "PUT") == 0 ? ETCD_EVENT_PUT : ETCD_EVENT_DELETE;
        return parse_kv(kv, &ret->kv, err);
}

static int parse_watch_result(json_object *res, struct etcd_watch_msg *ret, struct ppn_error *err) {
        struct etcd_watch_msg m = {};
        json_object *evs = NULL;
        int r;

        if (!json_object_is_type(res, json_type_object) || header_revision(res, &m.revision) < 0 ||
            member_bool(res, "created", &m.created) < 0 || member_bool(res, "canceled", &m.canceled) < 0 ||
            member_i64(res, "compact_revision", &m.compact_revision) < 0)
                return ppn_error_set(err, -EPROTO, "etcd watch: a result with fields of the wrong type");
        if (json_object_object_get_ex(res, "events", &evs) && !json_object_is_type(evs, json_type_array))
                return ppn_error_set(err, -EPROTO, "etcd watch: events is not an array");
        size_t n = evs ? json_object_array_length(evs) : 0;
        if (n && !(m.events = calloc(n, sizeof(*m.events))))
                return -ENOMEM;
        for (; m.n_events < n; m.n_events++) {
                r = parse_event(json_object_array_get_idx(evs, m.n_events), &m.events[m.n_events], err);
                if (r < 0) {
                        etcd_watch_msg_done(&m);
                        return r;
                }
        }
        *ret = m;
        return 0;
}

int etcd_parse_watch(const char *body, size_t len, struct etcd_watch_msg *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *o = NULL;
        json_object *res;
        int r = parse_object(body, len, &o, err);

        if (r < 0)
                return r;
        r = reply_error(o, err);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(o, "result", &res))
                return ppn_error_set(err, -EPROTO, "etcd watch: a message without a result");
        return parse_watch_result(res, ret, err);
}

int etcd_prefix_end(const char *prefix, char *buf, size_t len) {
        size_t n = strlen(prefix);

        if (n + 1 > len || len < 2)
                return -ENOBUFS;
        memcpy(buf, prefix, n + 1);
        while (n > 0) {
                if ((unsigned char) buf[n - 1] < 0xff) {
                        buf[n - 1]++;
                        buf[n] = '\0';
                        return (int) n;
                }
                buf[--n] = '\0';
        }
        buf[0] = '\0';          /* every key: range_end "\0", sent as base64 "AA==" */
        return 1;
}

/* ---- the client ---- */

/* libcurl, loaded at the first client (dl_load(), util.h), not at program start: the commands
 * and daemons that never talk to etcd do not pay for loading it and what it pulls in. */
static struct {
        __typeof__(curl_global_init) *curl_global_init;
        __typeof__(curl_easy_init) *curl_easy_init;
        __typeof__(curl_easy_cleanup) *curl_easy_cleanup;
        __typeof__(curl_easy_reset) *curl_easy_reset;
        __typeof__(curl_easy_setopt) *curl_easy_setopt;
        __typeof__(curl_easy_getinfo) *curl_easy_getinfo;
        __typeof__(curl_easy_perform) *curl_easy_perform;
        __typeof__(curl_easy_strerror) *curl_easy_strerror;
        __typeof__(curl_slist_append) *curl_slist_append;
        __typeof__(curl_slist_free_all) *curl_slist_free_all;
} cu;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static struct ppn_error curl_load_err;

static void curl_init_once(void) {
        const struct dl_symbol syms[] = {
                DL_SYMBOL(&cu, curl_global_init),
                DL_SYMBOL(&cu, curl_easy_init),
                DL_SYMBOL(&cu, curl_easy_cleanup),
                DL_SYMBOL(&cu, curl_easy_reset),
                DL_SYMBOL(&cu, curl_easy_setopt),
                DL_SYMBOL(&cu, curl_easy_getinfo),
                DL_SYMBOL(&cu, curl_easy_perform),
                DL_SYMBOL(&cu, curl_easy_strerror),
                DL_SYMBOL(&cu, curl_slist_append),
                DL_SYMBOL(&cu, curl_slist_free_all),
        };

        if (dl_load(PPN_LIBCURL_SONAME, syms, ELEMENTSOF(syms), &curl_load_err) >= 0)
                cu.curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct etcd *etcd_free(struct etcd *e) {
        if (!e)
                return NULL;
        if (e->curl)
                cu.curl_easy_cleanup(e->curl);
        for (size_t i = 0; i < e->n_endpoints; i++)
                free(e->endpoints[i]);
        free(e->ca);
        free(e->cert);
        free(e->key);
        free(e);
        return NULL;
}

static int add_endpoint(struct etcd *e, const char *s, size_t len, struct ppn_error *err) {
        while (len && (s[len - 1] == '/' || s[len - 1] == ' '))
                len--;
        if (len == 0)
                return 0;
        if (e->n_endpoints == ETCD_ENDPOINTS_MAX)
                return ppn_error_set(err, -EINVAL, "more than %d etcd endpoints", ETCD_ENDPOINTS_MAX);
        if (!(len > 7 && strncmp(s, "http://", 7) == 0) && !(len > 8 && strncmp(s, "https://", 8) == 0))
                return ppn_error_set(err, -EINVAL, "etcd endpoint '%.*s' is not an http:// or https:// URL "
                                     "(example: http://127.0.0.1:2379)", (int) len, s);
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) s[i] <= ' ' || s[i] == '?' || s[i] == '#')
                        return ppn_error_set(err, -EINVAL, "etcd endpoint '%.*s' has a space, query or fragment",
                                             (int) len, s);
        e->endpoints[e->n_endpoints] = strndup(s, len);
        if (!e->endpoints[e->n_endpoints])
                return -ENOMEM;
        e->n_endpoints++;
        return 0;
}

static char *dup_opt(const char *s) {
        return s && *s ? strdup(s) : NULL;
}

int etcd_new(const struct etcd_options *o, struct etcd **ret, struct ppn_error *err) {
        _cleanup_(etcd_freep) struct etcd *e = calloc(1, sizeof(*e));
        const char *s = o->endpoints ? o->endpoints : "";
        int r;

        if (!e)
                return -ENOMEM;
        for (const char *c; (c = strchr(s, ',')); s = c + 1) {
                while (*s == ' ')
                        s++;
                r = add_endpoint(e, s, (size_t) (c - s), err);
                if (r < 0)
                        return r;
        }
        while (*s == ' ')
                s++;
        r = add_endpoint(e, s, strlen(s), err);
        if (r < 0)
                return r;
        if (e->n_endpoints == 0)
                return ppn_error_set(err, -EINVAL, "no etcd endpoint given ([fleet] endpoints)");
        e->ca = dup_opt(o->ca);
        e->cert = dup_opt(o->cert);
        e->key = dup_opt(o->key);
        e->timeout_ms = o->timeout_ms ? o->timeout_ms : 3000;
        pthread_once(&curl_once, curl_init_once);
        if (curl_load_err.code < 0)
                return ppn_error_set(err, curl_load_err.code, "%s", curl_load_err.msg);
        e->curl = cu.curl_easy_init();
        if (!e->curl)
                return ppn_error_set(err, -ENOMEM, "cannot set up libcurl");
        *ret = TAKE_PTR(e);
        return 0;
}

const char *etcd_endpoint(const struct etcd *e) {
        return e->endpoints[e->current];
}

struct body {
        char *data;
        size_t len, cap;
        bool too_big;
        /* streaming (watch): objects are cut out of the stream as they complete */
        json_tokener *tok;
        etcd_watch_fn cb;
        void *userdata;
        int cb_result;
        struct ppn_error *err;
        const volatile bool *stop;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct body *b = userdata;
        size_t n = size * nmemb;

        if (b->len + n > ETCD_REPLY_MAX) {
                b->too_big = true;
                return 0;       /* aborts the transfer */
        }
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *d = realloc(b->data, cap);
                if (!d)
                        return 0;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

static void set_common(struct etcd *e, const char *url, const char *json, struct body *b, struct curl_slist *hdr) {
        CURL *c = e->curl;

        cu.curl_easy_reset(c);
        cu.curl_easy_setopt(c, CURLOPT_URL, url);
        cu.curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
        cu.curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        cu.curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        cu.curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
        cu.curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        cu.curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long) e->timeout_ms);
        cu.curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        cu.curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        cu.curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        cu.curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
        cu.curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
        if (e->ca)
                cu.curl_easy_setopt(c, CURLOPT_CAINFO, e->ca);
        if (e->cert)
                cu.curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert);
        if (e->key)
                cu.curl_easy_setopt(c, CURLOPT_SSLKEY, e->key);
}

/* Whether a failure of this endpoint should move the request to the next one. */
static bool should_fail_over(CURLcode rc, long status) {
        if (rc == CURLE_OK)
                return status >= 500 && status != 501;
        return rc != CURLE_WRITE_ERROR && rc != CURLE_ABORTED_BY_CALLBACK && rc != CURLE_OUT_OF_MEMORY;
}

/* POSTs json to path on each endpoint in turn (from the current one) until one answers. */
static int post(struct etcd *e, const char *path, const char *json, bool stream, struct body *b,
                struct ppn_error *err) {
        struct curl_slist *hdr = cu.curl_slist_append(NULL, "Content-Type: application/json");
        char tried[1024] = "";
        size_t used = 0;
        int r = -ECONNREFUSED;

        if (!hdr)
                return -ENOMEM;
        for (size_t i = 0; i < e->n_endpoints; i++) {
                size_t idx = (e->current + i) % e->n_endpoints;
                _cleanup_free_ char *url = NULL;
                long status = 0;
                CURLcode rc;

                if (asprintf(&url, "%s%s", e->endpoints[idx], path) < 0) {
                        r = -ENOMEM;
                        break;
                }
                b->len = 0;
                set_common(e, url, json, b, hdr);
                cu.curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, stream ? 0L : (long) e->timeout_ms);
                rc = cu.curl_easy_perform(e->curl);
                cu.curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
                if (!should_fail_over(rc, status)) {
                        e->current = idx;
                        r = rc == CURLE_OK ? 0 : b->too_big ? -EFBIG : rc == CURLE_ABORTED_BY_CALLBACK ? -ECANCELED : -EIO;
                        if (r == -EFBIG)
                                ppn_error_set(err, r, "etcd %s: reply over the %u-byte limit", e->endpoints[idx],
                                              ETCD_REPLY_MAX);
                        else if (r == -EIO)
                                ppn_error_set(err, r, "etcd %s: %s", e->endpoints[idx], cu.curl_easy_strerror(rc));
                        break;
                }
                if (used < sizeof(tried))
                        used += (size_t) snprintf(tried + used, sizeof(tried) - used, "%s%s: %s", used ? "; " : "",
                                                  e->endpoints[idx],
                                                  rc == CURLE_OK ? "HTTP error" : cu.curl_easy_strerror(rc));
        }
        cu.curl_slist_free_all(hdr);
        if (r == -ECONNREFUSED)
                ppn_error_set(err, r, "etcd unreachable (%s)", tried);
        return r;
}

/* Builds {"key": b64(key), ["range_end": ...]} into o. */
static int add_key(json_object *o, const char *key, bool prefix) {
        _cleanup_free_ char *k = b64_encode(key, strlen(key)), *end = NULL;
        char buf[ETCD_KEY_MAX + 2];
        int n;

        if (!k)
                return -ENOMEM;
        json_object_object_add(o, "key", json_object_new_string(k));
        if (!prefix)
                return 0;
        n = etcd_prefix_end(key, buf, sizeof(buf));
        if (n < 0)
                return n;
        end = b64_encode(buf, (size_t) n);
        if (!end)
                return -ENOMEM;
        json_object_object_add(o, "range_end", json_object_new_string(end));
        return 0;
}

static int call(struct etcd *e, const char *path, json_object *req, struct body *b, struct ppn_error *err) {
        const char *json = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
        if (!json)
                return -ENOMEM;
        return post(e, path, json, false, b, err);
}

static void body_done(struct body *b) { free(b->data); }

int etcd_range(struct etcd *e, const char *key, bool prefix, struct etcd_range *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *req = json_object_new_object();
        _cleanup_(body_done) struct body b = {};
        int r;

        if (!req || add_key(req, key, prefix) < 0)
                return -ENOMEM;
        r = call(e, "/v3/kv/range", req, &b, err);
        if (r < 0)
                return r;
        return etcd_parse_range(b.data ? b.data : "", b.len, ret, err);
}

static json_object *put_request(const char *key, const void *value, size_t len, int64_t lease) {
        _cleanup_json_ json_object *req = json_object_new_object();
        _cleanup_free_ char *v = b64_encode(value, len);
        char lease_s[24];

        if (!req || !v || add_key(req, key, false) < 0)
                return NULL;
        json_object_object_add(req, "value", json_object_new_string(v));
        if (lease) {
                snprintf(lease_s, sizeof(lease_s), "%" PRId64, lease);
                json_object_object_add(req, "lease", json_object_new_string(lease_s));
        }
        return TAKE_PTR(req);
}

int etcd_put(struct etcd *e, const char *key, const void *value, size_t len, int64_t lease, int64_t *ret_revision,
             struct ppn_error *err) {
        _cleanup_json_ json_object *req = NULL;
        _cleanup_(body_done) struct body b = {};
        int r;

        if (len > ETCD_VALUE_MAX)
                return ppn_error_set(err, -EFBIG, "etcd value of %zu bytes is over the limit", len);
        req = put_request(key, value, len, lease);
        if (!req)
                return -ENOMEM;
        r = call(e, "/v3/kv/put", req, &b, err);
        if (r < 0)
                return r;
        return etcd_parse_reply(b.data ? b.data : "", b.len, NULL, ret_revision, NULL, err);
}

int etcd_create(struct etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                int64_t *ret_revision, struct ppn_error *err) {
        _cleanup_json_ json_object *req = json_object_new_object(), *cmp = json_object_new_object();
        _cleanup_(body_done) struct body b = {};
        _cleanup_json_ json_object *reply = NULL;
        json_object *put = put_request(key, value, len, lease), *op = json_object_new_object();
        bool ok = false;
        int r;

        if (!req || !cmp || !put || !op || add_key(cmp, key, false) < 0) {
                json_object_put(put);
                json_object_put(op);
                return -ENOMEM;
        }
        json_object_object_add(cmp, "target", json_object_new_string("CREATE"));
        json_object_object_add(cmp, "result", json_object_new_string("EQUAL"));
        json_object_object_add(cmp, "create_revision", json_object_new_string("0"));
        json_object_object_add(op, "request_put", put);
        json_object_object_add(req, "compare", json_object_new_array());
        json_object_array_add(json_object_object_get(req, "compare"), json_object_get(cmp));
        json_object_object_add(req, "success", json_object_new_array());
        json_object_array_add(json_object_object_get(req, "success"), op);
        r = call(e, "/v3/kv/txn", req, &b, err);
        if (r == 0)
                r = etcd_parse_reply(b.data ? b.data : "", b.len, NULL, ret_revision, NULL, err);
        if (r == 0)
                r = parse_object(b.data, b.len, &reply, err);
        if (r < 0)
                return r;
        if (member_bool(reply, "succeeded", &ok) < 0)
                return ppn_error_set(err, -EPROTO, "etcd txn reply: succeeded is not a boolean");
        return ok ? 0 : ppn_error_set(err, -EEXIST, "etcd key '%s' already exists", key);
}

int etcd_delete(struct etcd *e, const char *key, bool prefix, int64_t *ret_deleted, struct ppn_error *err) {
        _cleanup_json_ json_object *req = json_object_new_object();
        _cleanup_(body_done) struct body b = {};
        int r;

        if (!req || add_key(req, key, prefix) < 0)
                return -ENOMEM;
        r = call(e, "/v3/kv/deleterange", req, &b, err);
        if (r < 0)
                return r;
        return etcd_parse_reply(b.data ? b.data : "", b.len, "deleted", NULL, ret_deleted, err);
}

static int lease_call(struct etcd *e, const char *path, const char *id_key, int64_t id, const char *field,
                      struct body *b, int64_t *ret, struct ppn_error *err) {
        _cleanup_json_ json_object *req = json_object_new_object();
        char s[24];
        int r;

        if (!req)
                return -ENOMEM;
        snprintf(s, sizeof(s), "%" PRId64, id);
        json_object_object_add(req, id_key, json_object_new_string(s));
        r = call(e, path, req, b, err);
        if (r < 0)
                return r;
        return etcd_parse_reply(b->data ? b->data : "", b->len, field, NULL, ret, err);
}

int etcd_lease_grant(struct etcd *e, int64_t ttl_sec, int64_t *ret_id, int64_t *ret_ttl, struct ppn_error *err) {
        _cleanup_(body_done) struct body b = {};
        _cleanup_json_ json_object *o = NULL;
        int64_t id = 0, ttl = 0;
        int r = lease_call(e, "/v3/lease/grant", "TTL", ttl_sec, "TTL", &b, &ttl, err);

        if (r < 0)
                return r;
        r = parse_object(b.data, b.len, &o, err);
        if (r < 0)
                return r;
        if (member_i64(o, "ID", &id) < 0 || id <= 0 || ttl <= 0)
                return ppn_error_set(err, -EPROTO, "etcd lease grant: no lease id or TTL in the reply");
        *ret_id = id;
        if (ret_ttl)
                *ret_ttl = ttl;
        return 0;
}

/* The gateway wraps keepalive replies in {"result": {...}} (it is a stream of one). */
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ret_ttl, struct ppn_error *err) {
        _cleanup_(body_done) struct body b = {};
        _cleanup_json_ json_object *o = NULL;
        json_object *res;
        int64_t ttl = 0;
        int r = lease_call(e, "/v3/lease/keepalive", "ID", id, NULL, &b, NULL, err);

        if (r < 0)
                return r;
        r = parse_object(b.data, b.len, &o, err);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(o, "result", &res) || !json_object_is_type(res, json_type_object) ||
            member_i64(res, "TTL", &ttl) < 0)
                return ppn_error_set(err, -EPROTO, "etcd lease keepalive: no result in the reply");
        if (ttl <= 0)
                return ppn_error_set(err, -ENOENT, "etcd lease %" PRId64 " has expired", id);
        if (ret_ttl)
                *ret_ttl = ttl;
        return 0;
}

int etcd_lease_revoke(struct etcd *e, int64_t id, struct ppn_error *err) {
        _cleanup_(body_done) struct body b = {};
        return lease_call(e, "/v3/lease/revoke", "ID", id, NULL, &b, NULL, err);
}

/* ---- watch: a stream of JSON objects, cut out with json-c's incremental tokenizer ---- */

static int deliver(struct body *b, json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        struct etcd_watch_msg m = {};
        int r = etcd_parse_watch(s, strlen(s), &m, b->err);

        if (r < 0)
                return r;
        r = b->cb(&m, b->userdata);
        etcd_watch_msg_done(&m);
        return r;
}

static size_t on_stream(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct body *b = userdata;
        size_t n = size * nmemb, off = 0;

        while (off < n) {
                json_object *o = json_tokener_parse_ex(b->tok, ptr + off, (int) (n - off));
                enum json_tokener_error je = json_tokener_get_error(b->tok);
                size_t used = json_tokener_get_parse_end(b->tok);

                if (je == json_tokener_continue)
                        return n;       /* the rest of this object comes later */
                if (!o || je != json_tokener_success) {
                        json_object_put(o);
                        b->cb_result = ppn_error_set(b->err, -EPROTO, "etcd watch: the stream is not JSON");
                        return 0;
                }
                json_tokener_reset(b->tok);
                b->cb_result = deliver(b, o);
                json_object_put(o);
                if (b->cb_result != 0)
                        return 0;
                off += used ? used : n - off;
                while (off < n && (ptr[off] == '\n' || ptr[off] == '\r' || ptr[off] == ' '))
                        off++;
        }
        return n;
}

static int on_progress(void *userdata, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
        struct body *b = userdata;
        return b->stop && *b->stop ? 1 : 0;
}

static json_object *watch_request(const char *key, bool prefix, int64_t start_revision) {
        _cleanup_json_ json_object *req = json_object_new_object();
        json_object *create = json_object_new_object();
        char s[24];

        if (!req || !create || add_key(create, key, prefix) < 0) {
                json_object_put(create);
                return NULL;
        }
        if (start_revision > 0) {
                snprintf(s, sizeof(s), "%" PRId64, start_revision);
                json_object_object_add(create, "start_revision", json_object_new_string(s));
        }
        json_object_object_add(req, "create_request", create);
        return TAKE_PTR(req);
}

int etcd_watch(struct etcd *e, const char *key, bool prefix, int64_t start_revision, etcd_watch_fn cb,
               void *userdata, const volatile bool *stop, struct ppn_error *err) {
        _cleanup_json_ json_object *req = watch_request(key, prefix, start_revision);
        struct body b = { .cb = cb, .userdata = userdata, .err = err, .stop = stop };
        struct curl_slist *hdr;
        CURLcode rc = CURLE_FAILED_INIT;
        long status = 0;
        int r;

        if (!req)
                return -ENOMEM;
        b.tok = json_tokener_new_ex(64);
        hdr = cu.curl_slist_append(NULL, "Content-Type: application/json");
        if (!b.tok || !hdr) {
                json_tokener_free(b.tok);
                cu.curl_slist_free_all(hdr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < e->n_endpoints; i++) {
                size_t idx = (e->current + i) % e->n_endpoints;
                _cleanup_free_ char *url = NULL;
                if (asprintf(&url, "%s/v3/watch", e->endpoints[idx]) < 0)
                        break;
                set_common(e, url, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &b, hdr);
                cu.curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_stream);
                cu.curl_easy_setopt(e->curl, CURLOPT_NOPROGRESS, 0L);
                cu.curl_easy_setopt(e->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
                cu.curl_easy_setopt(e->curl, CURLOPT_XFERINFODATA, &b);
                json_tokener_reset(b.tok);
                rc = cu.curl_easy_perform(e->curl);
                cu.curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
                if (status > 0 || rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK) {
                        e->current = idx;
                        break;  /* this endpoint answered: its stream ended, for whatever reason */
                }
        }
        json_tokener_free(b.tok);
        cu.curl_slist_free_all(hdr);
        if (b.cb_result != 0)
                return b.cb_result;
        if (rc == CURLE_ABORTED_BY_CALLBACK)
                return 0;
        r = status > 0 ? -ECONNRESET : -ECONNREFUSED;
        return ppn_error_set(err, r, "etcd watch on %s: %s", e->endpoints[e->current],
                             status > 0 ? "the stream ended" : cu.curl_easy_strerror(rc));
}
