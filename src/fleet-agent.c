/* SPDX-License-Identifier: Apache-2.0 */
#include "fleet-agent.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "ledger.h"
#include "log.h"

/* ---- the snapshot: a sorted copy of the /ppn/ prefix ---- */

static void entry_done(struct fleet_entry *e) {
        free(e->key);
        free(e->value);
}

void fleet_snapshot_done(struct fleet_snapshot *s) {
        for (size_t i = 0; i < s->n; i++)
                entry_done(&s->v[i]);
        free(s->v);
        *s = (struct fleet_snapshot) {};
}

static struct fleet_entry entry_take(struct etcd_kv *kv) {
        struct fleet_entry e = { .key = kv->key, .value = (char *) kv->value, .value_len = kv->value_len,
                                 .version = kv->version, .mod_revision = kv->mod_revision };
        kv->key = NULL;
        kv->value = NULL;
        return e;
}

int fleet_snapshot_load(struct fleet_snapshot *s, struct etcd_range *r) {
        struct fleet_entry *v = r->n_kvs ? calloc(r->n_kvs, sizeof(*v)) : NULL;

        if (r->n_kvs && !v)
                return -ENOMEM;
        fleet_snapshot_done(s);
        for (size_t i = 0; i < r->n_kvs; i++)
                v[i] = entry_take(&r->kvs[i]);
        s->v = v;
        s->n = r->n_kvs;
        s->revision = r->revision;
        return 0;
}

/* Binary search: index of key, or where it would go (*found false). */
static size_t find(const struct fleet_snapshot *s, const char *key, bool *found) {
        size_t lo = 0, hi = s->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(s->v[mid].key, key);
                if (c == 0)
                        return *found = true, mid;
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

int fleet_snapshot_apply(struct fleet_snapshot *s, const struct etcd_event *ev) {
        bool found;
        size_t i = find(s, ev->kv.key, &found);
        struct etcd_kv kv = ev->kv;

        if (ev->kv.mod_revision > s->revision)
                s->revision = ev->kv.mod_revision;
        if (ev->type == ETCD_EVENT_DELETE) {
                if (found) {
                        entry_done(&s->v[i]);
                        memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
                        s->n--;
                }
                return 0;
        }
        kv.key = strdup(ev->kv.key);
        kv.value = malloc(ev->kv.value_len + 1);
        if (!kv.key || !kv.value) {
                free(kv.key);
                free(kv.value);
                return -ENOMEM;
        }
        memcpy(kv.value, ev->kv.value, ev->kv.value_len + 1);
        if (!found && s->n >= FLEET_SNAPSHOT_MAX) {
                free(kv.key);
                free(kv.value);
                return 0;       /* whoever floods /ppn/ does not get to fill our memory */
        }
        if (found) {
                entry_done(&s->v[i]);
                s->v[i] = entry_take(&kv);
                return 0;
        }
        struct fleet_entry *n = realloc(s->v, (s->n + 1) * sizeof(*n));
        if (!n) {
                free(kv.key);
                free(kv.value);
                return -ENOMEM;
        }
        s->v = n;
        memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
        s->v[i] = entry_take(&kv);
        s->n++;
        return 0;
}

/* ---- the report ---- */

/* "/ppn/nodes/<id>/capacity" -> id and "capacity"; false if not of that shape. */
static bool split_node_key(const char *key, char id[FLEET_ID_LEN + 1], const char **ret_leaf) {
        const char *p = key + strlen(FLEET_PREFIX "nodes/");
        if (strncmp(key, FLEET_PREFIX "nodes/", strlen(FLEET_PREFIX "nodes/")) != 0 || strlen(p) < FLEET_ID_LEN + 2 ||
            p[FLEET_ID_LEN] != '/')
                return false;
        memcpy(id, p, FLEET_ID_LEN);
        id[FLEET_ID_LEN] = '\0';
        *ret_leaf = p + FLEET_ID_LEN + 1;
        return fleet_id_valid(id);
}

static json_object *capacity_json(const struct fleet_capacity *c, int64_t now_usec, uint64_t stale_usec) {
        _cleanup_free_ char *text = fleet_capacity_encode(c);
        json_object *o = text ? json_tokener_parse(text) : NULL;
        int64_t age = now_usec - c->time_usec;

        if (!o)
                return NULL;
        json_object_object_add(o, "age_sec", json_object_new_double((double) age / 1e6));
        json_object_object_add(o, "stale", json_object_new_boolean(age < 0 || (uint64_t) age > stale_usec));
        return o;
}

/* One node's object in the report, created on first mention. */
static json_object *node_obj(json_object *nodes, const char *id, const struct fleet_view *view) {
        json_object *o;
        if (json_object_object_get_ex(nodes, id, &o))
                return o;
        o = json_object_new_object();
        json_object_object_add(o, "node", json_object_new_string(id));
        json_object_object_add(o, "self", json_object_new_boolean(strcmp(id, view->self) == 0));
        json_object_object_add(o, "trusted", json_object_new_boolean(
                                       fleet_trusted_find(view->trusted, view->n_trusted, id) != NULL));
        json_object_object_add(nodes, id, o);
        return o;
}

static void report_node(json_object *nodes, const struct fleet_entry *e, const struct fleet_view *view,
                        int64_t now_usec) {
        char id[FLEET_ID_LEN + 1];
        const char *leaf;
        struct ppn_error err = {};
        struct fleet_capacity c;

        if (!split_node_key(e->key, id, &leaf))
                return;
        json_object *o = node_obj(nodes, id, view);
        if (strcmp(leaf, "key") == 0) {
                json_object *k = json_tokener_parse(e->value);
                const char *pub = k && json_object_is_type(k, json_type_object)
                                          ? json_object_get_string(json_object_object_get(k, "public_key")) : NULL;
                json_object_object_add(o, "public_key", pub ? json_object_new_string(pub) : NULL);
                json_object_put(k);
        } else if (strcmp(leaf, "capacity") == 0) {
                if (fleet_capacity_decode(e->value, e->value_len, &c, &err) < 0 || strcmp(c.node, id) != 0)
                        json_object_object_add(o, "capacity_error", json_object_new_string(
                                                       err.msg[0] ? err.msg : "the record names another node"));
                else
                        json_object_object_add(o, "capacity", capacity_json(&c, now_usec, 90000000));
        }
}

static json_object *grant_json(const struct fleet_entry *e, const struct fleet_view *view) {
        const char *key_id = e->key + strlen(FLEET_PREFIX "grants/");
        json_object *o = json_object_new_object();
        struct ppn_error err = {};
        struct fleet_check chk = {};
        struct fleet_grant g;

        json_object_object_add(o, "id", json_object_new_string(key_id));
        if (fleet_grant_decode(e->value, e->value_len, &g, &err) < 0) {
                json_object_object_add(o, "status", json_object_new_string(fleet_verdict_to_string(FLEET_MALFORMED)));
                json_object_object_add(o, "honoured", json_object_new_boolean(false));
                json_object_object_add(o, "reason", json_object_new_string(err.msg));
                return o;
        }
        fleet_grant_check(&g, key_id, e->version, view, &chk);
        json_object_object_add(o, "lender", json_object_new_string(g.lender));
        json_object_object_add(o, "borrower", json_object_new_string(g.borrower));
        json_object_object_add(o, "bytes", json_object_new_uint64(g.bytes));
        json_object_object_add(o, "not_before", json_object_new_int64(g.not_before));
        json_object_object_add(o, "expires", json_object_new_int64(g.expires));
        json_object_object_add(o, "fence", json_object_new_int64(g.fence));
        json_object_object_add(o, "status", json_object_new_string(fleet_verdict_to_string(chk.verdict)));
        json_object_object_add(o, "honoured", json_object_new_boolean(chk.verdict == FLEET_VALID));
        json_object_object_add(o, "reason", json_object_new_string(chk.reason));
        return o;
}

/* The snapshot's revocations (decoded; whether each is genuine is fleet_grant_check's
 * business: a forged one is ignored, never obeyed), followed by the view's own. */
static struct fleet_revocation *collect_revocations(const struct fleet_snapshot *s, const struct fleet_view *view,
                                                    size_t *ret_n) {
        struct fleet_revocation *v = calloc(s->n + view->n_revocations + 1, sizeof(*v));
        size_t n = 0;

        for (size_t i = 0; v && i < s->n; i++) {
                if (strncmp(s->v[i].key, FLEET_PREFIX "revocations/", strlen(FLEET_PREFIX "revocations/")) != 0)
                        continue;
                if (fleet_revocation_decode(s->v[i].value, s->v[i].value_len, &v[n], NULL) == 0)
                        n++;
        }
        for (size_t i = 0; v && i < view->n_revocations; i++)
                v[n++] = view->revocations[i];
        *ret_n = n;
        return v;
}

json_object *fleet_report(const struct fleet_snapshot *s, const struct fleet_view *view, int64_t now_usec) {
        json_object *o = json_object_new_object(), *nodes = json_object_new_object(), *grants = json_object_new_array();
        json_object *list = json_object_new_array();
        struct fleet_view v = *view;
        _cleanup_free_ struct fleet_revocation *revs = collect_revocations(s, view, &v.n_revocations);

        v.revocations = revs;
        for (size_t i = 0; i < s->n; i++) {
                if (strncmp(s->v[i].key, FLEET_PREFIX "nodes/", strlen(FLEET_PREFIX "nodes/")) == 0)
                        report_node(nodes, &s->v[i], &v, now_usec);
                else if (strncmp(s->v[i].key, FLEET_PREFIX "grants/", strlen(FLEET_PREFIX "grants/")) == 0)
                        json_object_array_add(grants, grant_json(&s->v[i], &v));
        }
        json_object_object_foreach(nodes, k, val) {
                (void) k;
                json_object_array_add(list, json_object_get(val));
        }
        json_object_put(nodes);
        json_object_object_add(o, "self", json_object_new_string(view->self));
        json_object_object_add(o, "revision", json_object_new_int64(s->revision));
        json_object_object_add(o, "nodes", list);
        json_object_object_add(o, "grants", grants);
        return o;
}

/* The ledger's hex keys as a view wants them, this node's own first; bad rows are skipped. */
int fleet_trusted_convert(const struct ledger_trusted *t, size_t n, const struct fleet_identity *self,
                          struct fleet_trusted **ret, size_t *ret_n) {
        struct fleet_trusted *v;
        size_t k = 0;

        v = calloc(n + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        memcpy(v[k].id, self->id, sizeof(self->id));
        memcpy(v[k++].pub, self->pub, FLEET_KEY_SIZE);
        for (size_t i = 0; i < n; i++) {
                if (!fleet_id_valid(t[i].id) || fleet_unhex(t[i].public_key, v[k].pub, FLEET_KEY_SIZE) < 0)
                        continue;
                memcpy(v[k++].id, t[i].id, sizeof(t[i].id));
        }
        *ret = v;
        *ret_n = k;
        return 0;
}

int fleet_trusted_from_ledger(const char *ledger_path, const struct fleet_identity *self,
                              struct fleet_trusted **ret, size_t *ret_n, struct ppn_error *err) {
        _cleanup_(ledger_closep) struct ledger *l = NULL;
        _cleanup_free_ struct ledger_trusted *t = NULL;
        size_t n = 0;
        int r = ledger_open(ledger_path, &(struct ledger_options) { .read_only = true }, &l, err);

        if (r == 0)
                r = ledger_trust_list(l, &t, &n, err);
        return r < 0 ? r : fleet_trusted_convert(t, n, self, ret, ret_n);
}

/* ---- the agent ---- */

struct fleet_agent {
        struct fleet_agent_options o;
        struct fleet_identity id;
        char *endpoints, *ca, *cert, *key, *ledger_path;
        pthread_t publisher, watcher;
        bool publisher_started, watcher_started;
        volatile bool stop;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        /* under lock */
        struct fleet_capacity latest;
        bool have_latest;
        struct fleet_snapshot snap;
        bool synced;                    /* snap reflects etcd (the watch is running) */
        bool reachable;
        char error[256];
        uint64_t records_written;
        struct fleet_trusted *trusted;
        size_t n_trusted;
        /* Genuine revocations ever seen by this run, kept when etcd deletes them: whoever can
         * write to etcd must not be able to revive a revoked grant by deleting its revocation. */
        struct fleet_revocation *revoked;
        size_t n_revoked;
};

static void sleep_usec(struct fleet_agent *a, uint64_t usec) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t) (usec / USEC_PER_SEC);
        ts.tv_nsec += (long) (usec % USEC_PER_SEC) * (long) NSEC_PER_USEC;
        if (ts.tv_nsec >= (long) NSEC_PER_SEC) {
                ts.tv_sec++;
                ts.tv_nsec -= (long) NSEC_PER_SEC;
        }
        pthread_mutex_lock(&a->lock);
        if (!a->stop)
                pthread_cond_timedwait(&a->wake, &a->lock, &ts);
        pthread_mutex_unlock(&a->lock);
}

static void set_reachable(struct fleet_agent *a, bool ok, const char *why) {
        pthread_mutex_lock(&a->lock);
        if (a->reachable != ok)
                log_info("fleet: etcd %s%s%s", ok ? "reachable again" : "unreachable", ok ? "" : ": ", ok ? "" : why);
        a->reachable = ok;
        snprintf(a->error, sizeof(a->error), "%s", ok ? "" : why);
        pthread_mutex_unlock(&a->lock);
}

static struct etcd_options etcd_opts(const struct fleet_agent *a) {
        return (struct etcd_options) { .endpoints = a->endpoints, .ca = a->ca, .cert = a->cert, .key = a->key,
                                       .timeout_ms = 2000 };
}

struct publisher {
        struct etcd *e;
        int64_t lease;
        uint64_t renew_at;              /* monotonic usec */
        struct fleet_capacity last;
        uint64_t last_usec;
        bool have_last;
        uint64_t seq;
};

static int publish_key(struct fleet_agent *a, struct publisher *p, struct ppn_error *err) {
        char key[128], pub[2 * FLEET_KEY_SIZE + 1], value[256];
        fleet_hex(a->id.pub, FLEET_KEY_SIZE, pub);
        snprintf(key, sizeof(key), FLEET_PREFIX "nodes/%s/key", a->id.id);
        snprintf(value, sizeof(value), "{\"node\":\"%s\",\"public_key\":\"%s\"}", a->id.id, pub);
        return etcd_put(p->e, key, value, strlen(value), 0, NULL, err);
}

static int ensure_lease(struct fleet_agent *a, struct publisher *p, struct ppn_error *err) {
        int64_t ttl_sec = (int64_t) (a->o.lease_usec / USEC_PER_SEC);
        int r;

        if (p->lease && now_usec() < p->renew_at)
                return 0;
        if (p->lease) {
                r = etcd_lease_keepalive(p->e, p->lease, NULL, err);
                if (r == 0) {
                        p->renew_at = now_usec() + a->o.lease_usec / 3;
                        return 0;
                }
                if (r != -ENOENT)
                        return r;
                log_info("fleet: lease %" PRId64 " expired; taking a new one", p->lease);
        }
        p->lease = 0;
        p->have_last = false;   /* the record went with the lease: write it again at once */
        r = etcd_lease_grant(p->e, ttl_sec, &p->lease, NULL, err);
        if (r == 0)
                r = publish_key(a, p, err);
        if (r == 0)
                p->renew_at = now_usec() + a->o.lease_usec / 3;
        return r;
}

static int maybe_publish(struct fleet_agent *a, struct publisher *p, struct ppn_error *err) {
        struct fleet_capacity now;
        char why[128], key[128];
        _cleanup_free_ char *text = NULL;
        uint64_t t = now_usec();
        bool have;
        int r;

        pthread_mutex_lock(&a->lock);
        now = a->latest;
        have = a->have_latest;
        pthread_mutex_unlock(&a->lock);
        if (!have || !fleet_should_publish(p->have_last ? &p->last : NULL, p->last_usec, &now, t, &a->o.rule, why,
                                           sizeof(why)))
                return 0;
        memcpy(now.node, a->id.id, sizeof(now.node));
        now.seq = ++p->seq;
        now.time_usec = (int64_t) now_realtime_usec();
        text = fleet_capacity_encode(&now);
        if (!text)
                return -ENOMEM;
        snprintf(key, sizeof(key), FLEET_PREFIX "nodes/%s/capacity", a->id.id);
        r = etcd_put(p->e, key, text, strlen(text), p->lease, NULL, err);
        if (r < 0)
                return r;
        log_debug("fleet: capacity record %" PRIu64 " written (%s)", now.seq, why);
        p->last = now;
        p->last_usec = t;
        p->have_last = true;
        pthread_mutex_lock(&a->lock);
        a->records_written++;
        pthread_mutex_unlock(&a->lock);
        return 0;
}

static void *publisher_main(void *userdata) {
        struct fleet_agent *a = userdata;
        struct publisher p = {};
        struct etcd_options eo = etcd_opts(a);
        struct ppn_error err = {};

        if (etcd_new(&eo, &p.e, &err) < 0) {
                set_reachable(a, false, err.msg);
                return NULL;
        }
        bool failed = false;
        while (!a->stop) {
                err = (struct ppn_error) {};
                int r = ensure_lease(a, &p, &err);
                if (r == 0 && failed)
                        p.have_last = false;    /* back after an outage: a fresh record at once */
                if (r == 0)
                        r = maybe_publish(a, &p, &err);
                failed = r < 0;
                if (r < 0 && r != -ENOMEM)
                        set_reachable(a, false, err.msg[0] ? err.msg : strerror(-r));
                else if (r == 0)
                        set_reachable(a, true, "");
                sleep_usec(a, r < 0 ? USEC_PER_SEC : 200 * USEC_PER_MSEC);
        }
        if (p.lease)
                (void) etcd_lease_revoke(p.e, p.lease, NULL);   /* our record goes at once, not in a TTL */
        etcd_free(p.e);
        return NULL;
}

#define REVOKED_MAX 65536

/* Remembers a genuine revocation that is about to leave the snapshot (under lock). */
static void remember_revocation(struct fleet_agent *a, const struct fleet_entry *e) {
        struct fleet_revocation v;

        if (strncmp(e->key, FLEET_PREFIX "revocations/", strlen(FLEET_PREFIX "revocations/")) != 0 ||
            fleet_revocation_decode(e->value, e->value_len, &v, NULL) < 0 ||
            !fleet_revocation_valid(&v, a->trusted, a->n_trusted) || a->n_revoked >= REVOKED_MAX)
                return;
        for (size_t i = 0; i < a->n_revoked; i++)
                if (strcmp(a->revoked[i].grant, v.grant) == 0 && strcmp(a->revoked[i].lender, v.lender) == 0)
                        return;
        struct fleet_revocation *n = realloc(a->revoked, (a->n_revoked + 1) * sizeof(*n));
        if (!n)
                return;
        a->revoked = n;
        a->revoked[a->n_revoked++] = v;
}

static void remember_all(struct fleet_agent *a) {
        for (size_t i = 0; i < a->snap.n; i++)
                remember_revocation(a, &a->snap.v[i]);
}

static int on_watch(const struct etcd_watch_msg *m, void *userdata) {
        struct fleet_agent *a = userdata;
        int r = 0;

        if (m->canceled)
                return -ECANCELED;      /* compacted past our revision: read it all again */
        pthread_mutex_lock(&a->lock);
        remember_all(a);        /* before a DELETE can take one away */
        for (size_t i = 0; r == 0 && i < m->n_events; i++)
                r = fleet_snapshot_apply(&a->snap, &m->events[i]);
        if (m->revision > a->snap.revision)
                a->snap.revision = m->revision;
        a->synced = true;
        pthread_mutex_unlock(&a->lock);
        return r;
}

static void *watcher_main(void *userdata) {
        struct fleet_agent *a = userdata;
        struct etcd_options eo = etcd_opts(a);
        _cleanup_etcd_ struct etcd *e = NULL;
        struct ppn_error err = {};

        if (etcd_new(&eo, &e, &err) < 0)
                return NULL;
        while (!a->stop) {
                struct etcd_range rg = {};
                int r;

                err = (struct ppn_error) {};
                r = etcd_range(e, FLEET_PREFIX, true, &rg, &err);
                if (r == 0) {
                        pthread_mutex_lock(&a->lock);
                        remember_all(a);
                        r = fleet_snapshot_load(&a->snap, &rg);
                        a->synced = r == 0;
                        pthread_mutex_unlock(&a->lock);
                        etcd_range_done(&rg);
                }
                if (r == 0)
                        r = etcd_watch(e, FLEET_PREFIX, true, a->snap.revision + 1, on_watch, a, &a->stop, &err);
                pthread_mutex_lock(&a->lock);
                a->synced = false;
                pthread_mutex_unlock(&a->lock);
                if (r < 0 && !a->stop)
                        log_debug("fleet: watch ended: %s", err.msg[0] ? err.msg : strerror(-r));
                sleep_usec(a, 500 * USEC_PER_MSEC);
        }
        return NULL;
}

static char *dup_or_empty(const char *s) {
        return strdup(s ? s : "");
}

int fleet_agent_start(const struct fleet_agent_options *o, struct fleet_agent **ret, struct ppn_error *err) {
        _cleanup_(etcd_freep) struct etcd *check = NULL;
        struct fleet_agent *a;
        int r = etcd_new(&o->etcd, &check, err);  /* the options are checked here, once */

        if (r < 0)
                return r;
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->o = *o;
        a->id = *o->identity;
        a->endpoints = dup_or_empty(o->etcd.endpoints);
        a->ca = dup_or_empty(o->etcd.ca);
        a->cert = dup_or_empty(o->etcd.cert);
        a->key = dup_or_empty(o->etcd.key);
        a->ledger_path = dup_or_empty(o->ledger_path);
        pthread_mutex_init(&a->lock, NULL);
        pthread_cond_init(&a->wake, NULL);
        if (!a->endpoints || !a->ca || !a->cert || !a->key || !a->ledger_path) {
                fleet_agent_free(a);
                return -ENOMEM;
        }
        r = -pthread_create(&a->publisher, NULL, publisher_main, a);
        a->publisher_started = r == 0;
        if (r == 0)
                r = -pthread_create(&a->watcher, NULL, watcher_main, a);
        a->watcher_started = r == 0;
        if (r < 0) {
                fleet_agent_free(a);
                return ppn_error_set(err, r, "cannot start the fleet threads: %s", strerror(-r));
        }
        *ret = a;
        return 0;
}

struct fleet_agent *fleet_agent_free(struct fleet_agent *a) {
        if (!a)
                return NULL;
        pthread_mutex_lock(&a->lock);
        a->stop = true;
        pthread_cond_broadcast(&a->wake);
        pthread_mutex_unlock(&a->lock);
        if (a->publisher_started)
                pthread_join(a->publisher, NULL);
        if (a->watcher_started)
                pthread_join(a->watcher, NULL);
        fleet_snapshot_done(&a->snap);
        explicit_bzero(&a->id, sizeof(a->id));
        free(a->trusted);
        free(a->revoked);
        free(a->endpoints);
        free(a->ca);
        free(a->cert);
        free(a->key);
        free(a->ledger_path);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->wake);
        free(a);
        return NULL;
}

void fleet_agent_update(struct fleet_agent *a, const struct fleet_capacity *c, const struct ledger_trusted *t,
                        size_t n) {
        struct fleet_trusted *v = NULL;
        size_t k = 0;
        bool ok = fleet_trusted_convert(t, n, &a->id, &v, &k) == 0;

        pthread_mutex_lock(&a->lock);
        if (ok) {
                free(a->trusted);
                a->trusted = v;
                a->n_trusted = k;
        }
        a->latest = *c;
        a->have_latest = true;
        pthread_cond_broadcast(&a->wake);
        pthread_mutex_unlock(&a->lock);
}

json_object *fleet_agent_report(struct fleet_agent *a) {
        int64_t now = (int64_t) now_realtime_usec();
        json_object *o;

        pthread_mutex_lock(&a->lock);
        struct fleet_view view = { .self = a->id.id, .trusted = a->trusted, .n_trusted = a->n_trusted,
                                   .revocations = a->revoked, .n_revocations = a->n_revoked, .now = now / (int64_t) USEC_PER_SEC };
        o = fleet_report(&a->snap, &view, now);
        if (o) {
                json_object_object_add(o, "reachable", json_object_new_boolean(a->reachable));
                json_object_object_add(o, "synced", json_object_new_boolean(a->synced));
                json_object_object_add(o, "etcd_error", a->error[0] ? json_object_new_string(a->error) : NULL);
                json_object_object_add(o, "records_written", json_object_new_uint64(a->records_written));
        }
        pthread_mutex_unlock(&a->lock);
        return o;
}

int fleet_agent_from_config(const struct ppn_config *cfg, struct fleet_agent **ret, struct ppn_error *err) {
        _cleanup_free_ char *path = NULL;
        struct fleet_identity id;
        int r;

        *ret = NULL;
        if (!cfg->fleet_enabled)
                return 0;
        path = fleet_identity_path(cfg->ledger_path);
        if (!path)
                return -ENOMEM;
        r = fleet_identity_load(path, &id, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "[fleet] enabled");
        struct fleet_agent_options o = {
                .etcd = { .endpoints = cfg->fleet_endpoints, .ca = cfg->fleet_ca, .cert = cfg->fleet_cert,
                          .key = cfg->fleet_key },
                .ledger_path = cfg->ledger_path,
                .identity = &id,
                .lease_usec = cfg->fleet_lease_usec,
                .rule = { .threshold_bytes = cfg->fleet_threshold_bytes, .psi_points = 5,
                          .republish_usec = cfg->fleet_republish_usec },
        };
        r = fleet_agent_start(&o, ret, err);
        if (r == 0)
                log_info("fleet: node %s publishing to %s", id.id, cfg->fleet_endpoints);
        explicit_bzero(&id, sizeof(id));
        return r;
}
