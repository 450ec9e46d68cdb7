/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The etcd client: its parsers on hostile replies (table-driven: what a broken or malicious
 * server, or a man in the middle, could send), then the client against a real etcd started
 * here on 127.0.0.1 (free ports, a temporary data dir, killed at the end): kv, create-only
 * txn, leases, a watch, and failover from a dead endpoint.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "etcd.h"

extern char **environ;

static void test_prefix_end(void **state) {
        char buf[16];
        assert_int_equal(etcd_prefix_end("/ppn/", buf, sizeof(buf)), 5);
        assert_string_equal(buf, "/ppn0");
        assert_int_equal(etcd_prefix_end("a\xff", buf, sizeof(buf)), 1);
        assert_string_equal(buf, "b");
        assert_int_equal(etcd_prefix_end("\xff\xff", buf, sizeof(buf)), 1);
        assert_string_equal(buf, "");
        assert_int_equal(etcd_prefix_end("0123456789abcdef", buf, sizeof(buf)), -ENOBUFS);
}

/* Replies captured from Debian's etcd 3.4.23 gateway (keys "foo", "foo1"), then broken ones. */
static void test_parse_range(void **state) {
        static const char good[] =
                "{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"4\",\"raft_term\":\"2\"},"
                "\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"3\",\"version\":\"2\","
                "\"value\":\"YmFy\"},{\"key\":\"Zm9vMQ==\",\"create_revision\":\"4\",\"mod_revision\":\"4\","
                "\"version\":\"1\"}],\"count\":\"2\"}";
        struct etcd_range r = {};

        assert_int_equal(etcd_parse_range(good, strlen(good), &r, NULL), 0);
        assert_int_equal(r.revision, 4);
        assert_int_equal(r.n_kvs, 2);
        assert_string_equal(r.kvs[0].key, "foo");
        assert_string_equal((char *) r.kvs[0].value, "bar");
        assert_int_equal(r.kvs[0].version, 2);
        assert_int_equal(r.kvs[1].value_len, 0);       /* an empty value is omitted by the gateway */
        etcd_range_done(&r);

        static const struct { const char *body; int want; const char *why; } bad[] = {
                { "", -EPROTO, "not a JSON object" },
                { "[]", -EPROTO, "not a JSON object" },
                { "null", -EPROTO, "not a JSON object" },
                { "{\"header\":[]}", -EPROTO, "header.revision" },
                { "{\"header\":{\"revision\":\"12x\"}}", -EPROTO, "header.revision" },
                { "{\"header\":{\"revision\":true}}", -EPROTO, "header.revision" },
                { "{\"header\":{\"revision\":\"99999999999999999999999\"}}", -EPROTO, "header.revision" },
                { "{\"kvs\":{}}", -EPROTO, "kvs is not an array" },
                { "{\"kvs\":[1]}", -EPROTO, "not an object" },
                { "{\"kvs\":[{\"value\":\"YmFy\"}]}", -EPROTO, "no key" },
                { "{\"kvs\":[{\"key\":5}]}", -EPROTO, "no key" },
                { "{\"kvs\":[{\"key\":\"!!!!\"}]}", -EPROTO, "not valid" },
                { "{\"kvs\":[{\"key\":\"AGZvbw==\"}]}", -EPROTO, "not valid" },      /* "\0foo" */
                { "{\"kvs\":[{\"key\":\"Zm9v\",\"version\":{}}]}", -EPROTO, "not valid" },
                { "{\"kvs\":[{\"key\":\"Zm9v\",\"value\":7}]}", -EPROTO, "no key" },
                { "{\"error\":\"etcdserver: requested lease not found\",\"code\":5,\"message\":\"etcdserver: "
                  "requested lease not found\"}", -ENOENT, "requested lease not found" },
                { "{\"error\":\"x\",\"code\":3,\"message\":\"invalid character\"}", -EIO, "invalid character" },
                { "{\"error\":{},\"code\":\"3\"}", -EIO, "(no message)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct ppn_error err = {};
                int rr = etcd_parse_range(bad[i].body, strlen(bad[i].body), &r, &err);
                if (rr != bad[i].want || !strstr(err.msg, bad[i].why))
                        fail_msg("case %zu (%s): r=%d '%s', want %d '%s'", i, bad[i].body, rr, err.msg, bad[i].want,
                                 bad[i].why);
        }
}

static void test_parse_limits(void **state) {
        /* A value over ETCD_VALUE_MAX: refused, not allocated as asked. */
        size_t n = (ETCD_VALUE_MAX / 3 + 2) * 4;
        char *body = malloc(n + 64);
        struct etcd_range r;
        struct ppn_error err = {};
        int len = sprintf(body, "{\"kvs\":[{\"key\":\"Zm9v\",\"value\":\"");
        memset(body + len, 'A', n);
        strcpy(body + len + n, "\"}]}");
        assert_int_equal(etcd_parse_range(body, strlen(body), &r, &err), -EFBIG);
        free(body);
        /* A reply over ETCD_REPLY_MAX is refused before parsing. */
        assert_int_equal(etcd_parse_range("{}", (size_t) ETCD_REPLY_MAX + 1, &r, &err), -EFBIG);
}

static void test_parse_watch(void **state) {
        static const char created[] = "{\"result\":{\"header\":{\"revision\":\"2\"},\"created\":true}}";
        static const char events[] =
                "{\"result\":{\"header\":{\"revision\":\"4\"},\"events\":[{\"kv\":{\"key\":\"Zm9vMQ==\","
                "\"create_revision\":\"3\",\"mod_revision\":\"3\",\"version\":\"1\",\"value\":\"eA==\"}},"
                "{\"type\":\"DELETE\",\"kv\":{\"key\":\"Zm9vMQ==\",\"mod_revision\":\"4\"}}]}}";
        struct etcd_watch_msg m;

        assert_int_equal(etcd_parse_watch(created, strlen(created), &m, NULL), 0);
        assert_true(m.created);
        assert_int_equal(m.n_events, 0);
        etcd_watch_msg_done(&m);
        assert_int_equal(etcd_parse_watch(events, strlen(events), &m, NULL), 0);
        assert_int_equal(m.revision, 4);
        assert_int_equal(m.n_events, 2);
        assert_int_equal(m.events[0].type, ETCD_EVENT_PUT);
        assert_string_equal((char *) m.events[0].kv.value, "x");
        assert_int_equal(m.events[1].type, ETCD_EVENT_DELETE);
        etcd_watch_msg_done(&m);

        static const char *const bad[] = {
                "{}", "{\"result\":5}", "{\"result\":{\"created\":\"yes\"}}", "{\"result\":{\"events\":{}}}",
                "{\"result\":{\"events\":[{\"type\":\"PUT\"}]}}", "{\"result\":{\"events\":[{\"type\":\"MOVE\",\"kv\":{}}]}}",
                "{\"result\":{\"events\":[{\"kv\":{\"key\":\"%%%\"}}]}}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (etcd_parse_watch(bad[i], strlen(bad[i]), &m, NULL) != -EPROTO)
                        fail_msg("watch case %zu accepted: %s", i, bad[i]);
}

static void test_options(void **state) {
        struct etcd *e = NULL;
        struct ppn_error err = {};
        static const char *const bad[] = { "", "ftp://x", "http://a b", "http://x?y", "," };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                err = (struct ppn_error) {};
                if (etcd_new(&(struct etcd_options) { .endpoints = bad[i] }, &e, &err) != -EINVAL || !err.msg[0])
                        fail_msg("endpoints '%s' accepted", bad[i]);
        }
        assert_int_equal(etcd_new(&(struct etcd_options) { .endpoints = "http://a:1, https://b:2/" }, &e, NULL), 0);
        assert_string_equal(etcd_endpoint(e), "http://a:1");
        etcd_free(e);
}

/* ---- against a real etcd ---- */

static pid_t etcd_pid;
static char etcd_dir[] = "/tmp/test-etcd.XXXXXX";
static char url[64], dead_url[64];

static int free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;
        bind(fd, (struct sockaddr *) &a, sizeof(a));
        getsockname(fd, (struct sockaddr *) &a, &len);
        port = ntohs(a.sin_port);
        close(fd);
        return port;
}

static int start_etcd(void **state) {
        char peer[64], cluster[80], data[64];
        int port = free_port(), pport = free_port();

        if (!mkdtemp(etcd_dir))
                return -1;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
        snprintf(dead_url, sizeof(dead_url), "http://127.0.0.1:%d", free_port());       /* nobody listens */
        snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", pport);
        snprintf(cluster, sizeof(cluster), "t=%s", peer);
        snprintf(data, sizeof(data), "%s/data", etcd_dir);
        const char *argv[] = { "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", url,
                         "--advertise-client-urls", url, "--listen-peer-urls", peer,
                         "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster, NULL };
        char log[80];
        posix_spawn_file_actions_t fa;
        snprintf(log, sizeof(log), "%s/etcd.log", etcd_dir);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        if (posix_spawnp(&etcd_pid, "etcd", &fa, NULL, (char *const *) argv, environ) != 0)
                etcd_pid = 0;   /* not installed: the live tests skip */
        posix_spawn_file_actions_destroy(&fa);
        struct etcd *e = NULL;
        etcd_new(&(struct etcd_options) { .endpoints = url }, &e, NULL);
        for (int i = 0; etcd_pid && i < 200; i++) {
                struct etcd_range r = {};
                if (etcd_range(e, "/", false, &r, NULL) == 0)
                        break;
                usleep(50000);
        }
        etcd_free(e);
        return 0;
}

static int stop_etcd(void **state) {
        char cmd[64];
        if (etcd_pid) {
                kill(etcd_pid, SIGKILL);
                waitpid(etcd_pid, NULL, 0);
        }
        snprintf(cmd, sizeof(cmd), "rm -rf %s", etcd_dir);
        return system(cmd);
}

static struct etcd *client(const char *endpoints) {
        struct etcd *e = NULL;
        if (!etcd_pid)
                skip();
        assert_int_equal(etcd_new(&(struct etcd_options) { .endpoints = endpoints, .timeout_ms = 2000 }, &e, NULL), 0);
        return e;
}

static void test_live_kv(void **state) {
        _cleanup_etcd_ struct etcd *e = client(url);
        struct etcd_range r = {};
        struct ppn_error err = {};
        int64_t rev = 0, deleted = 0;
        static const uint8_t binary[] = { 0, 1, 2, 0xff, '\n' };

        assert_int_equal(etcd_put(e, "/t/a", "one", 3, 0, &rev, &err), 0);
        assert_true(rev > 0);
        assert_int_equal(etcd_put(e, "/t/b", binary, sizeof(binary), 0, NULL, NULL), 0);
        assert_int_equal(etcd_put(e, "/u", "x", 1, 0, NULL, NULL), 0);
        assert_int_equal(etcd_range(e, "/t/", true, &r, &err), 0);
        assert_int_equal(r.n_kvs, 2);
        assert_string_equal(r.kvs[0].key, "/t/a");
        assert_memory_equal(r.kvs[1].value, binary, sizeof(binary));
        assert_int_equal(r.kvs[1].value_len, sizeof(binary));
        etcd_range_done(&r);
        assert_int_equal(etcd_create(e, "/t/a", "two", 3, 0, NULL, &err), -EEXIST);
        assert_int_equal(etcd_create(e, "/t/c", "new", 3, 0, NULL, NULL), 0);
        assert_int_equal(etcd_range(e, "/t/a", false, &r, NULL), 0);
        assert_string_equal((char *) r.kvs[0].value, "one");    /* create-only left it alone */
        assert_int_equal(r.kvs[0].version, 1);
        etcd_range_done(&r);
        assert_int_equal(etcd_delete(e, "/t/", true, &deleted, NULL), 0);
        assert_int_equal(deleted, 3);
        assert_int_equal(etcd_range(e, "/t/", true, &r, NULL), 0);
        assert_int_equal(r.n_kvs, 0);
        etcd_range_done(&r);
}

static void test_live_lease(void **state) {
        _cleanup_etcd_ struct etcd *e = client(url);
        struct etcd_range r = {};
        struct ppn_error err = {};
        int64_t id = 0, ttl = 0;

        assert_int_equal(etcd_lease_grant(e, 5, &id, &ttl, &err), 0);
        assert_int_equal(ttl, 5);
        assert_int_equal(etcd_put(e, "/l/rec", "v", 1, id, NULL, NULL), 0);
        assert_int_equal(etcd_lease_keepalive(e, id, &ttl, NULL), 0);
        assert_int_equal(ttl, 5);
        assert_int_equal(etcd_lease_revoke(e, id, NULL), 0);
        assert_int_equal(etcd_range(e, "/l/rec", false, &r, NULL), 0);
        assert_int_equal(r.n_kvs, 0);                           /* went with its lease */
        etcd_range_done(&r);
        assert_int_equal(etcd_lease_keepalive(e, id, NULL, &err), -ENOENT);
        assert_int_equal(etcd_lease_revoke(e, id, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "lease not found"));
        assert_int_equal(etcd_put(e, "/l/x", "v", 1, 12345, NULL, &err), -ENOENT);     /* no such lease */
}

static void test_live_failover(void **state) {
        char both[160];
        snprintf(both, sizeof(both), "%s,%s", dead_url, url);
        _cleanup_etcd_ struct etcd *e = client(both), *dead = client(dead_url);
        struct etcd_range r = {};
        struct ppn_error err = {};

        assert_int_equal(etcd_put(e, "/f", "1", 1, 0, NULL, &err), 0);
        assert_string_equal(etcd_endpoint(e), url);             /* the live one is used from now on */
        assert_int_equal(etcd_range(dead, "/f", false, &r, &err), -ECONNREFUSED);
        assert_non_null(strstr(err.msg, "etcd unreachable"));
        assert_non_null(strstr(err.msg, dead_url));
}

struct watch_ctx { int puts, deletes; char last[64]; };

static int on_msg(const struct etcd_watch_msg *m, void *userdata) {
        struct watch_ctx *w = userdata;
        for (size_t i = 0; i < m->n_events; i++) {
                if (m->events[i].type == ETCD_EVENT_PUT) {
                        w->puts++;
                        snprintf(w->last, sizeof(w->last), "%s", (char *) m->events[i].kv.value);
                } else
                        w->deletes++;
        }
        return w->deletes ? 1 : 0;      /* stop at the first delete */
}

static void *writer(void *arg) {
        struct etcd *e = NULL;
        usleep(300000);
        etcd_new(&(struct etcd_options) { .endpoints = url }, &e, NULL);
        etcd_put(e, "/w/1", "a", 1, 0, NULL, NULL);
        etcd_put(e, "/w/2", "b", 1, 0, NULL, NULL);
        etcd_put(e, "/elsewhere", "c", 1, 0, NULL, NULL);
        etcd_delete(e, "/w/1", false, NULL, NULL);
        etcd_free(e);
        return NULL;
}

static void test_live_watch(void **state) {
        _cleanup_etcd_ struct etcd *e = client(url);
        struct watch_ctx w = {};
        pthread_t t;
        volatile bool stop = false;

        pthread_create(&t, NULL, writer, NULL);
        assert_int_equal(etcd_watch(e, "/w/", true, 0, on_msg, &w, &stop, NULL), 1);
        pthread_join(t, NULL);
        assert_int_equal(w.puts, 2);                            /* /elsewhere is outside the prefix */
        assert_int_equal(w.deletes, 1);
        assert_string_equal(w.last, "b");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prefix_end),
                cmocka_unit_test(test_parse_range),
                cmocka_unit_test(test_parse_limits),
                cmocka_unit_test(test_parse_watch),
                cmocka_unit_test(test_options),
                cmocka_unit_test(test_live_kv),
                cmocka_unit_test(test_live_lease),
                cmocka_unit_test(test_live_failover),
                cmocka_unit_test(test_live_watch),
        };
        return cmocka_run_group_tests(tests, start_etcd, stop_etcd);
}
