/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A client of etcd v3's JSON gateway (the grpc-gateway every etcd 3.4 server runs on its client
 * URL: POST /v3/kv/range, /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange, /v3/lease/grant,
 * /v3/lease/keepalive, /v3/lease/revoke and the streaming /v3/watch), over libcurl.
 *
 * Keys and values travel base64-encoded; 64-bit integers arrive as JSON strings ("revision":
 * "42"). Everything etcd answers is hostile input: a reply is parsed only up to
 * ETCD_REPLY_MAX bytes, each field must have its expected JSON type, base64 must decode, and a
 * value longer than ETCD_VALUE_MAX is refused. The parsers (etcd_parse_*) are pure and tested
 * on their own; the I/O functions are blocking and meant for a thread of their own (ppnd) or a
 * short-lived program (ppnctl), never for the daemon's event loop.
 *
 * Several endpoints: a request goes to the endpoint that last answered; if it cannot be
 * reached (connection refused, timeout, TLS failure, HTTP 5xx) the next one is tried, each at
 * most once per request. A gRPC error in a reply (an etcd answer, e.g. "lease not found") is
 * not a reason to fail over and is returned as such.
 *
 * Thread safety: one struct etcd per thread (each owns its curl handle).
 *
 * Returns: 0 or -errno. -ECONNREFUSED: no endpoint answered (err names each and why);
 * -EPROTO: a reply that is not what etcd sends; -ENOENT: no such key or lease; -EEXIST: a
 * create-only put found the key; -EFBIG: a reply or value over the limits.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define ETCD_REPLY_MAX (32u << 20)       /* bytes of one reply (a range of 100,000 small keys) */
#define ETCD_VALUE_MAX (1u << 20)        /* bytes of one decoded value (etcd's default is 1.5 MiB) */
#define ETCD_KEY_MAX 4096u               /* bytes of one decoded key */
#define ETCD_ENDPOINTS_MAX 16

struct etcd_options {
        const char *endpoints;          /* "http://127.0.0.1:2379,https://10.0.0.2:2379" */
        const char *ca;                 /* PEM file of the CA that signs the servers; NULL/"" = system */
        const char *cert;               /* client certificate (PEM); NULL/"" = none */
        const char *key;                /* its private key (PEM) */
        unsigned timeout_ms;            /* one request, connect included; 0 = 3000 */
};

struct etcd_kv {
        char *key;                      /* NUL-terminated (keys holding NUL are refused) */
        uint8_t *value;                 /* value_len bytes, plus a NUL so text can be read as such */
        size_t value_len;
        int64_t create_revision;
        int64_t mod_revision;
        int64_t version;
        int64_t lease;
};

struct etcd_range {
        int64_t revision;               /* the store's revision when read */
        struct etcd_kv *kvs;
        size_t n_kvs;
};

enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };

struct etcd_event {
        enum etcd_event_type type;
        struct etcd_kv kv;
};

/* One message of a watch stream: header revision and the events it carries (maybe none: the
 * "created" reply, a progress notification). canceled: etcd ended the watch (compaction). */
struct etcd_watch_msg {
        int64_t revision;
        bool created;
        bool canceled;
        int64_t compact_revision;
        struct etcd_event *events;
        size_t n_events;
};

struct etcd;

/* Checks the options (endpoint URLs must be http:// or https://, at most ETCD_ENDPOINTS_MAX)
 * and sets up the client; nothing is sent. -EINVAL with words for bad options. */
int etcd_new(const struct etcd_options *o, struct etcd **ret, struct ppn_error *err);
struct etcd *etcd_free(struct etcd *e);
static inline void etcd_freep(struct etcd **e) { etcd_free(*e); }
#define _cleanup_etcd_ _cleanup_(etcd_freep)

/* The endpoint that answered last (or the first). */
const char *etcd_endpoint(const struct etcd *e);

/* Reads key, or with prefix=true every key starting with it, sorted by key. */
int etcd_range(struct etcd *e, const char *key, bool prefix, struct etcd_range *ret, struct ppn_error *err);
/* Writes key = value (lease 0 = none). *ret_revision (may be NULL): the revision it made. */
int etcd_put(struct etcd *e, const char *key, const void *value, size_t len, int64_t lease,
             int64_t *ret_revision, struct ppn_error *err);
/* Writes key only if it does not exist (one txn); -EEXIST if it does. */
int etcd_create(struct etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                int64_t *ret_revision, struct ppn_error *err);
/* Deletes key (or the prefix); *ret_deleted (may be NULL): how many. */
int etcd_delete(struct etcd *e, const char *key, bool prefix, int64_t *ret_deleted, struct ppn_error *err);

int etcd_lease_grant(struct etcd *e, int64_t ttl_sec, int64_t *ret_id, int64_t *ret_ttl, struct ppn_error *err);
/* Renews a lease; -ENOENT if it has expired (or never existed). *ret_ttl (may be NULL). */
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ret_ttl, struct ppn_error *err);
int etcd_lease_revoke(struct etcd *e, int64_t id, struct ppn_error *err);

/*
 * Watches key (or the prefix) from start_revision (0 = now) and calls cb for every message
 * until cb returns non-zero (that value is returned), *stop becomes true (checked by curl's
 * progress callback, about once a second on an idle stream; returns 0), the stream ends
 * (-ECONNRESET) or fails. Blocks: run it in a
 * thread. A stream that stays silent is detected by TCP keepalive (5 s idle, 2 s probes).
 */
typedef int (*etcd_watch_fn)(const struct etcd_watch_msg *m, void *userdata);
int etcd_watch(struct etcd *e, const char *key, bool prefix, int64_t start_revision, etcd_watch_fn cb,
               void *userdata, const volatile bool *stop, struct ppn_error *err);

void etcd_kv_done(struct etcd_kv *kv);
void etcd_range_done(struct etcd_range *r);
void etcd_watch_msg_done(struct etcd_watch_msg *m);

/* ---- pure parts, exposed for tests ---- */

/* The key one past every key starting with prefix (etcd's range_end for a prefix): the prefix
 * with its last byte below 0xff incremented and what follows dropped; "\0" (all keys) when
 * every byte is 0xff. Writes at most len bytes. Returns the length, or -ENOBUFS. */
int etcd_prefix_end(const char *prefix, char *buf, size_t len);

/* A reply body of /v3/kv/range (len bytes, need not be NUL-terminated). */
int etcd_parse_range(const char *body, size_t len, struct etcd_range *ret, struct ppn_error *err);
/* One object of a watch stream ({"result": {...}} or {"error": {...}}). */
int etcd_parse_watch(const char *body, size_t len, struct etcd_watch_msg *ret, struct ppn_error *err);
/* The header revision of a put/delete/txn/lease reply, and the named integer field (NULL =
 * none; a missing one reads as 0, as etcd omits zero values). A reply carrying "error" (or
 * gRPC's "code"/"message") is -EIO with etcd's words, -ENOENT for "not found". */
int etcd_parse_reply(const char *body, size_t len, const char *field, int64_t *ret_revision,
                     int64_t *ret_field, struct ppn_error *err);
