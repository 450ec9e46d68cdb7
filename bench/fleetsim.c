/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fleet scale: N simulated nodes in one process publishing their capacity through one real
 * etcd with ppnd's own code (etcd client, fleet_should_publish, fleet_capacity_encode, a lease
 * kept alive every third of its TTL), then W watchers of /ppn/revocations/ and R revocations:
 * how long each takes, from the moment its put is sent, to reach each watcher.
 *
 *   ppn-fleetsim ENDPOINT ETCD_PID NODES SECONDS WATCHERS REVOCATIONS SEED
 *
 * The nodes' figures (fixed before any result was seen): every simulated second each node's
 * committed memory takes a uniform step in [-16, +16] MiB, and with probability 1/1800 a VM
 * starts or stops (reserved minimum ±1-4 GiB, VM count ±1): a node whose VMs churn about
 * once every 30 minutes and whose guests drift. The threshold rule is ppnd's default (64 MiB,
 * 60 s republish, lease TTL 15 s).
 *
 * Prints one JSON record per measurement ({"part":"fleet", "nodes", "metric", "value", "unit"}).
 * etcd's CPU comes from /proc/ETCD_PID/stat (utime + stime), its writes from
 * /proc/ETCD_PID/io (write_bytes: what reached the block layer).
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"
#include "fleet.h"

#define THREADS 8
#define LEASE_SEC 15

static const char *endpoint;
static unsigned n_nodes;
static volatile bool stop;

struct counters { uint64_t puts, keepalives, errors; };

struct worker {
        pthread_t thread;
        unsigned first, count;
        uint64_t seed;
        struct counters c;
        pthread_mutex_t lock;
};

struct simnode {
        struct fleet_capacity cur, last;
        uint64_t last_usec;
        bool have_last;
        int64_t lease;
        uint64_t renew_at;
};

static uint64_t rnd(uint64_t *s) {      /* splitmix64: reproducible from the seed */
        uint64_t z = (*s += 0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
}

static void node_init(struct simnode *n, unsigned i, uint64_t *s) {
        snprintf(n->cur.node, sizeof(n->cur.node), "%032x", i);
        n->cur.physical_bytes = 256 * GIB;
        n->cur.reserve_bytes = 8 * GIB;
        n->cur.n_vms = 20 + rnd(s) % 20;
        n->cur.reserved_min_bytes = n->cur.n_vms * 4 * GIB;
        n->cur.committed_bytes = n->cur.n_vms * 6 * GIB;
        n->cur.psi_some_avg10 = 0;
}

static void node_step(struct simnode *n, uint64_t *s) {
        struct fleet_capacity *c = &n->cur;
        int64_t step = (int64_t) (rnd(s) % (33 * MIB)) - (int64_t) (16 * MIB);
        if (step < 0 && (uint64_t) -step > c->committed_bytes)
                step = 0;
        c->committed_bytes += (uint64_t) step;
        if (rnd(s) % 1800 == 0) {
                uint64_t min = (1 + rnd(s) % 4) * GIB;
                bool start = rnd(s) % 2 == 0 || c->n_vms == 0 || c->reserved_min_bytes < min;
                c->n_vms += start ? 1 : -1;
                c->reserved_min_bytes += start ? min : -min;
                c->committed_bytes += start ? 2 * min : (c->committed_bytes > 2 * min ? -2 * min : 0);
        }
        int64_t cap = (int64_t) (c->physical_bytes - c->reserve_bytes);
        c->pool_available_bytes = cap - (int64_t) c->reserved_min_bytes;
        c->free_bytes = cap - (int64_t) c->committed_bytes;
}

static uint64_t mono_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void count(struct worker *w, uint64_t *field) {
        pthread_mutex_lock(&w->lock);
        (*field)++;
        pthread_mutex_unlock(&w->lock);
}

static void node_tick(struct worker *w, struct etcd *e, struct simnode *n, uint64_t *s) {
        static const struct fleet_publish_rule rule = { .threshold_bytes = 64 * MIB, .psi_points = 5,
                                                        .republish_usec = 60000000 };
        uint64_t now = mono_usec();
        char why[128], key[96];

        node_step(n, s);
        if (!n->lease) {
                if (etcd_lease_grant(e, LEASE_SEC, &n->lease, NULL, NULL) < 0)
                        return count(w, &w->c.errors);
                n->renew_at = now + LEASE_SEC * 1000000 / 3;
        } else if (now >= n->renew_at) {
                if (etcd_lease_keepalive(e, n->lease, NULL, NULL) < 0)
                        return count(w, &w->c.errors);
                n->renew_at = now + LEASE_SEC * 1000000 / 3;
                count(w, &w->c.keepalives);
        }
        if (!fleet_should_publish(n->have_last ? &n->last : NULL, n->last_usec, &n->cur, now, &rule, why, sizeof(why)))
                return;
        n->cur.seq++;
        n->cur.time_usec = (int64_t) now;
        char *text = fleet_capacity_encode(&n->cur);
        snprintf(key, sizeof(key), "/ppn/nodes/%s/capacity", n->cur.node);
        if (!text || etcd_put(e, key, text, strlen(text), n->lease, NULL, NULL) < 0)
                count(w, &w->c.errors);
        else {
                n->last = n->cur;
                n->last_usec = now;
                n->have_last = true;
                count(w, &w->c.puts);
        }
        free(text);
}

/* Each node ticks once a second; a worker spreads its nodes over the second. */
static void *worker_main(void *arg) {
        struct worker *w = arg;
        struct simnode *nodes = calloc(w->count, sizeof(*nodes));
        struct etcd *e = NULL;
        uint64_t s = w->seed;

        etcd_new(&(struct etcd_options) { .endpoints = endpoint, .timeout_ms = 5000 }, &e, NULL);
        for (unsigned i = 0; i < w->count; i++)
                node_init(&nodes[i], w->first + i, &s);
        for (uint64_t sec = 0; !stop; sec++) {
                uint64_t start = mono_usec();
                for (unsigned i = 0; i < w->count && !stop; i++) {
                        uint64_t due = start + 1000000ull * i / w->count;
                        uint64_t t = mono_usec();
                        if (t < due)
                                usleep((useconds_t) (due - t));
                        node_tick(w, e, &nodes[i], &s);
                }
                uint64_t t = mono_usec();
                if (t < start + 1000000)
                        usleep((useconds_t) (start + 1000000 - t));
        }
        etcd_free(e);
        free(nodes);
        return NULL;
}

static struct counters total(struct worker *w, unsigned n) {
        struct counters c = {};
        for (unsigned i = 0; i < n; i++) {
                pthread_mutex_lock(&w[i].lock);
                c.puts += w[i].c.puts;
                c.keepalives += w[i].c.keepalives;
                c.errors += w[i].c.errors;
                pthread_mutex_unlock(&w[i].lock);
        }
        return c;
}

static double etcd_cpu_sec(int pid) {
        char path[64], buf[1024];
        unsigned long ut = 0, st = 0;
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return NAN;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
                return NAN;
        return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static double etcd_write_bytes(int pid) {
        char path[64], line[128];
        double v = NAN;
        snprintf(path, sizeof(path), "/proc/%d/io", pid);
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "write_bytes: %lf", &v) == 1)
                        break;
        if (f)
                fclose(f);
        return v;
}

static int64_t etcd_revision(struct etcd *e) {
        struct etcd_range r = {};
        if (etcd_range(e, "/ppn/none", false, &r, NULL) < 0)
                return -1;
        int64_t rev = r.revision;
        etcd_range_done(&r);
        return rev;
}

static void rec(const char *metric, double value, const char *unit) {
        printf("{\"part\":\"fleet\",\"nodes\":%u,\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", n_nodes,
               metric, value, unit);
        fflush(stdout);
}

/* ---- revocation propagation: W watch streams on one curl multi handle ---- */

struct watcher {
        CURL *h;
        json_tokener *tok;
        bool created;
        int got;                        /* revocations seen */
        double *lat;                    /* per revocation, seconds; <0 = not yet */
};

static uint64_t *put_start_usec;        /* when each revocation's put was sent */
static int n_revocations;

static int revocation_index(const char *key) {
        const char *p = strrchr(key, '-');
        return p ? atoi(p + 1) : -1;
}

static void on_message(struct watcher *w, json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        struct etcd_watch_msg m = {};
        uint64_t now = mono_usec();

        if (etcd_parse_watch(s, strlen(s), &m, NULL) < 0)
                return;
        if (m.created)
                w->created = true;
        for (size_t i = 0; i < m.n_events; i++) {
                int k = revocation_index(m.events[i].kv.key);
                if (k >= 0 && k < n_revocations && w->lat[k] < 0) {
                        /* From just before the revocation's put was sent (an event can arrive
                         * before the put's own reply). */
                        uint64_t t = __atomic_load_n(&put_start_usec[k], __ATOMIC_ACQUIRE);
                        w->lat[k] = t && now > t ? (double) (now - t) / 1e6 : 0;
                        w->got++;
                }
        }
        etcd_watch_msg_done(&m);
}

static size_t on_stream(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct watcher *w = userdata;
        size_t n = size * nmemb, off = 0;
        while (off < n) {
                json_object *o = json_tokener_parse_ex(w->tok, ptr + off, (int) (n - off));
                if (json_tokener_get_error(w->tok) == json_tokener_continue)
                        return n;
                size_t used = json_tokener_get_parse_end(w->tok);
                json_tokener_reset(w->tok);
                if (o)
                        on_message(w, o);
                json_object_put(o);
                off += used ? used : n - off;
                while (off < n && (ptr[off] == '\n' || ptr[off] == '\r'))
                        off++;
        }
        return n;
}

struct revoker { struct etcd *e; int n; volatile bool done; };

static void *revoker_main(void *arg) {
        struct revoker *r = arg;
        char key[96];
        for (int k = 0; k < r->n; k++) {
                usleep(500000);
                snprintf(key, sizeof(key), "/ppn/revocations/bench-%d", k);
                __atomic_store_n(&put_start_usec[k], mono_usec(), __ATOMIC_RELEASE);
                (void) etcd_put(r->e, key, "{}", 2, 0, NULL, NULL);
        }
        __atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
        return NULL;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static void propagation(unsigned n_watchers, int revocations) {
        struct watcher *ws = calloc(n_watchers, sizeof(*ws));
        CURLM *multi = curl_multi_init();
        struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
        char url[256];
        static const char body[] = "{\"create_request\":{\"key\":\"L3Bwbi9yZXZvY2F0aW9ucy8=\","
                                   "\"range_end\":\"L3Bwbi9yZXZvY2F0aW9uczA=\"}}";   /* /ppn/revocations/ */
        int running = 0;

        n_revocations = revocations;
        put_start_usec = calloc((size_t) revocations, sizeof(*put_start_usec));
        snprintf(url, sizeof(url), "%s/v3/watch", endpoint);
        curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
        for (unsigned i = 0; i < n_watchers; i++) {
                struct watcher *w = &ws[i];
                w->tok = json_tokener_new();
                w->lat = malloc((size_t) revocations * sizeof(double));
                for (int k = 0; k < revocations; k++)
                        w->lat[k] = -1;
                w->h = curl_easy_init();
                curl_easy_setopt(w->h, CURLOPT_URL, url);
                curl_easy_setopt(w->h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, hdr);
                curl_easy_setopt(w->h, CURLOPT_WRITEFUNCTION, on_stream);
                curl_easy_setopt(w->h, CURLOPT_WRITEDATA, w);
                curl_easy_setopt(w->h, CURLOPT_FORBID_REUSE, 1L);
                curl_multi_add_handle(multi, w->h);
        }
        /* Open every stream and wait for etcd to confirm each watch. */
        uint64_t t0 = mono_usec();
        unsigned created = 0;
        while (created < n_watchers && mono_usec() - t0 < 60000000) {
                curl_multi_perform(multi, &running);
                curl_multi_poll(multi, NULL, 0, 100, NULL);
                created = 0;
                for (unsigned i = 0; i < n_watchers; i++)
                        created += ws[i].created;
        }
        rec("watchers_open", created, "streams");
        rec("watchers_open_time", (double) (mono_usec() - t0) / 1e6, "s");
        struct etcd *e = NULL;
        etcd_new(&(struct etcd_options) { .endpoints = endpoint }, &e, NULL);
        struct revoker rv = { e, revocations, false };
        pthread_t t;
        pthread_create(&t, NULL, revoker_main, &rv);
        /* Until 5 s after the last revocation was sent (its puts may be slow under load: the
         * clock starts at each put, so a late put is not counted as a missed delivery). */
        uint64_t end = UINT64_MAX;
        while (mono_usec() < end) {
                if (end == UINT64_MAX && __atomic_load_n(&rv.done, __ATOMIC_ACQUIRE))
                        end = mono_usec() + 5000000;
                curl_multi_perform(multi, &running);
                curl_multi_poll(multi, NULL, 0, 20, NULL);
        }
        pthread_join(t, NULL);
        /* Streams that ended (etcd or the network closed them) and watchers that saw nothing. */
        CURLMsg *msg;
        int left, ended = 0, silent = 0;
        while ((msg = curl_multi_info_read(multi, &left)))
                if (msg->msg == CURLMSG_DONE) {
                        ended++;
                        fprintf(stderr, "fleetsim: a watch stream ended: %s\n", curl_easy_strerror(msg->data.result));
                }
        for (unsigned i = 0; i < n_watchers; i++)
                silent += ws[i].got == 0;
        rec("watch_streams_ended", ended, "streams");
        rec("watchers_without_events", silent, "watchers");
        size_t n = 0, missing = 0;
        double *all = malloc(n_watchers * (size_t) revocations * sizeof(double));
        for (unsigned i = 0; i < n_watchers; i++)
                for (int k = 0; k < revocations; k++) {
                        if (ws[i].lat[k] >= 0)
                                all[n++] = ws[i].lat[k];
                        else
                                missing++;
                }
        qsort(all, n, sizeof(double), cmp_double);
        if (n) {
                rec("revocation_p50", all[n / 2] * 1000, "ms");
                rec("revocation_p99", all[(size_t) ((double) n * 0.99)] * 1000, "ms");
                rec("revocation_max", all[n - 1] * 1000, "ms");
        }
        rec("revocation_deliveries", (double) n, "events");
        rec("revocation_missing", (double) missing, "events");
        for (unsigned i = 0; i < n_watchers; i++) {
                curl_multi_remove_handle(multi, ws[i].h);
                curl_easy_cleanup(ws[i].h);
                json_tokener_free(ws[i].tok);
                free(ws[i].lat);
        }
        curl_multi_cleanup(multi);
        curl_slist_free_all(hdr);
        etcd_free(e);
        free(all);
        free(ws);
        free(put_start_usec);
}

int main(int argc, char **argv) {
        if (argc != 8) {
                fprintf(stderr, "usage: ppn-fleetsim ENDPOINT ETCD_PID NODES SECONDS WATCHERS REVOCATIONS SEED\n");
                return 2;
        }
        endpoint = argv[1];
        int pid = atoi(argv[2]);
        n_nodes = (unsigned) atoi(argv[3]);
        unsigned seconds = (unsigned) atoi(argv[4]), watchers = (unsigned) atoi(argv[5]);
        int revocations = atoi(argv[6]);
        uint64_t seed = strtoull(argv[7], NULL, 10);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        struct worker w[THREADS] = {};
        unsigned per = (n_nodes + THREADS - 1) / THREADS;
        for (unsigned i = 0; i < THREADS; i++) {
                w[i].first = i * per;
                w[i].count = i * per >= n_nodes ? 0 : (n_nodes - i * per < per ? n_nodes - i * per : per);
                w[i].seed = seed + i;
                pthread_mutex_init(&w[i].lock, NULL);
                pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        }
        /* Warm-up: every node's first record, then one republish period into steady state. */
        struct etcd *e = NULL;
        etcd_new(&(struct etcd_options) { .endpoints = endpoint }, &e, NULL);
        const char *warm = getenv("FLEET_WARMUP");     /* seconds; default one republish period + 10 s */
        sleep(warm ? (unsigned) atoi(warm) : 70);
        struct counters c0 = total(w, THREADS);
        double cpu0 = etcd_cpu_sec(pid), io0 = etcd_write_bytes(pid);
        int64_t rev0 = etcd_revision(e);
        uint64_t t0 = mono_usec();
        sleep(seconds);
        struct counters c1 = total(w, THREADS);
        double cpu1 = etcd_cpu_sec(pid), io1 = etcd_write_bytes(pid), dt = (double) (mono_usec() - t0) / 1e6;
        int64_t rev1 = etcd_revision(e);
        rec("writes_per_s", (double) (c1.puts - c0.puts) / dt, "writes/s");
        rec("etcd_revisions_per_s", (double) (rev1 - rev0) / dt, "revisions/s");
        rec("keepalives_per_s", (double) (c1.keepalives - c0.keepalives) / dt, "requests/s");
        rec("errors", (double) (c1.errors - c0.errors), "requests");
        rec("etcd_cpu", (cpu1 - cpu0) / dt * 100, "% of one core");
        rec("etcd_disk_writes", (io1 - io0) / dt / 1024, "KiB/s");
        rec("window", dt, "s");
        /* Revocation propagation with the publishers still running (the load a fleet carries). */
        propagation(watchers, revocations);
        stop = true;
        for (unsigned i = 0; i < THREADS; i++)
                pthread_join(w[i].thread, NULL);
        etcd_free(e);
        return 0;
}
