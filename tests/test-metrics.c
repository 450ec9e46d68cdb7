/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics renderer on literal snapshots (golden text, unknowns left out, escaping, bounded
 * error classes), promtool's verdict on the output, and the HTTP endpoint on a real socket
 * driven by an sd-event loop while a client thread scrapes it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "metrics.h"

#define VM1 { .name = "db", .state = "running", .min_bytes = 1024 * MIB, .max_bytes = 2048 * MIB, \
              .target_bytes = 1536 * MIB, .actual_bytes = 1500 * MIB, .guest_available_bytes = 700 * MIB, \
              .stats_age_usec = 1250000, .cpu_weight = 100, .override_active = true }
#define VM2 { .name = "web", .state = "absent", .min_bytes = 512 * MIB, .max_bytes = 1024 * MIB, \
              .target_bytes = METRICS_UNKNOWN, .actual_bytes = METRICS_UNKNOWN, \
              .guest_available_bytes = METRICS_UNKNOWN, .stats_age_usec = METRICS_UNKNOWN, .cpu_weight = 300, \
              .stuck = true }
#define NODE { .physical_bytes = 8 * GIB, .reserve_bytes = 1 * GIB, .reserved_min_bytes = 1536 * MIB, \
               .pool_available_bytes = 5632 * (int64_t) MIB, .committed_bytes = 2524 * MIB, \
               .free_bytes = 4644 * (int64_t) MIB, .host_available_bytes = 5 * GIB, .psi_some_avg10 = 1.25, \
               .n_vms = 2, .n_running = 1 }

static char *render(const struct metrics_snapshot *s) {
        char *text = NULL;
        size_t len = 0;

        assert_int_equal(metrics_render(s, &text, &len), 0);
        assert_int_equal(strlen(text), len);
        return text;
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t cap = 0;
        ssize_t n;

        assert_non_null(f);
        n = getdelim(&buf, &cap, '\0', f);
        assert_true(n >= 0);
        fclose(f);
        return buf;
}

static void counters_fill(struct metrics_counters *c) {
        *c = (struct metrics_counters) { .balloon_commands = 7, .reconnects = 2, .stats_deferred = 5, .early_rounds = 4,
                                         .fast_periods = { 40, 3 },
                                         .fast_reads = { 6, 2, 3 } };
        metrics_count_decision(c, POLICY_REASON_STEADY);
        metrics_count_decision(c, POLICY_REASON_STEADY);
        metrics_count_decision(c, POLICY_REASON_GROW_PRESSURE);
        metrics_count_decision(c, (enum policy_reason) 999); /* ignored */
        metrics_count_error(c, "DeviceNotActive");
        metrics_count_error(c, NULL);
        metrics_count_error(c, "DeviceNotActive");
}

/* The whole text for a known snapshot: any change of a name, unit or help is deliberate. */
static void test_golden(void **state) {
        struct metrics_vm vms[] = { VM1, VM2 };
        struct metrics_counters c;
        counters_fill(&c);
        struct metrics_snapshot s = { .node = NODE, .vms = vms, .n_vms = 2, .counters = &c, .version = "1.2.3" };
        char path[4096];
        char *got = render(&s), *want;

        snprintf(path, sizeof(path), "%s/metrics/two-vms.prom", getenv("PPN_FIXTURES"));
        want = read_file(path);
        if (strcmp(got, want) != 0) {
                if (getenv("PPN_UPDATE_GOLDEN")) {
                        FILE *f = fopen(path, "we");
                        fputs(got, f);
                        fclose(f);
                }
                print_error("rendered text differs from %s:\n%s\n", path, got);
                fail();
        }
        free(got);
        free(want);
}

static void test_unknown_left_out(void **state) {
        struct metrics_vm vms[] = { VM2 };
        struct metrics_snapshot s = { .node = NODE, .vms = vms, .n_vms = 1 };
        char *t;

        s.node.host_available_bytes = METRICS_UNKNOWN;
        s.node.psi_some_avg10 = -1;
        t = render(&s);
        assert_null(strstr(t, "ppn_vm_target_bytes"));
        assert_null(strstr(t, "ppn_vm_actual_bytes"));
        assert_null(strstr(t, "ppn_vm_guest_available_bytes"));
        assert_null(strstr(t, "ppn_vm_stats_age_seconds"));
        assert_null(strstr(t, "ppn_node_host_available_bytes"));
        assert_null(strstr(t, "ppn_node_memory_pressure"));
        assert_non_null(strstr(t, "ppn_vm_min_bytes{vm=\"web\"} 536870912\n"));
        assert_non_null(strstr(t, "ppn_vm_state{vm=\"web\",state=\"absent\"} 1\n"));
        assert_non_null(strstr(t, "ppn_vm_state{vm=\"web\",state=\"running\"} 0\n"));
        assert_non_null(strstr(t, "ppn_vm_balloon_stuck{vm=\"web\"} 1\n"));
        /* Counters are present (zero) even when nobody passed any. */
        assert_non_null(strstr(t, "ppn_balloon_commands_total 0\n"));
        assert_non_null(strstr(t, "ppn_stats_reads_deferred_total 0\n"));
        assert_non_null(strstr(t, "ppn_rounds_early_total 0\n"));
        assert_non_null(strstr(t, "ppn_decisions_total{reason=\"steady\"} 0\n"));
        free(t);
}

static void test_no_vms_negative_pool(void **state) {
        struct metrics_snapshot s = { .node = NODE };
        char *t;

        s.node.pool_available_bytes = -(int64_t) (512 * MIB);
        s.node.free_bytes = -1;
        t = render(&s);
        assert_non_null(strstr(t, "ppn_node_pool_available_bytes -536870912\n"));
        assert_non_null(strstr(t, "ppn_node_free_bytes -1\n"));
        assert_null(strstr(t, "ppn_vm_"));
        free(t);
}

static void test_escaping_and_unknown_state(void **state) {
        struct metrics_vm vms[] = { VM1 };
        struct metrics_counters c = { 0 };
        struct metrics_snapshot s = { .node = NODE, .vms = vms, .n_vms = 1, .counters = &c };
        char *t;

        snprintf(vms[0].state, sizeof(vms[0].state), "weird");
        metrics_count_error(&c, "Odd\"Class\\with\nnewline");
        t = render(&s);
        assert_non_null(strstr(t, "ppn_qmp_errors_total{class=\"Odd\\\"Class\\\\with\\nnewline\"} 1\n"));
        assert_non_null(strstr(t, "ppn_vm_state{vm=\"db\",state=\"error\"} 1\n"));
        free(t);
}

/* A peer inventing classes cannot grow the table: the last slot becomes "other". */
static void test_error_classes_bounded(void **state) {
        struct metrics_counters c = { 0 };
        char name[32];

        for (int i = 0; i < 100; i++) {
                snprintf(name, sizeof(name), "Class%d", i);
                metrics_count_error(&c, name);
        }
        metrics_count_error(&c, "Class0");
        assert_int_equal(c.n_error_classes, METRICS_ERROR_CLASSES_MAX);
        assert_string_equal(c.errors[0].class, "Class0");
        assert_int_equal(c.errors[0].count, 2);
        assert_string_equal(c.errors[METRICS_ERROR_CLASSES_MAX - 1].class, "other");
        assert_int_equal(c.errors[METRICS_ERROR_CLASSES_MAX - 1].count, 100 - (METRICS_ERROR_CLASSES_MAX - 1));
}

/* promtool's linter: names, units, help, counter suffixes, syntax. */
static void test_promtool(void **state) {
        struct metrics_vm vms[] = { VM1, VM2 };
        struct metrics_counters c;
        counters_fill(&c);
        struct metrics_snapshot s = { .node = NODE, .vms = vms, .n_vms = 2, .counters = &c };
        char *t = render(&s);
        FILE *p;
        int st;

        if (system("command -v promtool >/dev/null 2>&1") != 0) {
                free(t);
                print_message("promtool not installed (Debian package prometheus)\n");
                skip();
        }
        p = popen("promtool check metrics >&2", "w");
        assert_non_null(p);
        fputs(t, p);
        st = pclose(p);
        free(t);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- the server ---- */

struct scrape {
        uint16_t port;
        const char *request;
        char *reply;
        size_t cap;
        int fd_done;
};

static int fill_cb(void *userdata, struct metrics_snapshot *ret) {
        static const struct metrics_vm vms[] = { VM1 };
        int *fills = userdata;

        (*fills)++;
        *ret = (struct metrics_snapshot) { .node = NODE, .vms = vms, .n_vms = 1 };
        return *fills > 2 ? -EIO : 0; /* the third scrape fails: a 500 */
}

static const struct metrics_source source = { .fill = fill_cb };

static void *client(void *arg) {
        struct scrape *sc = arg;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(sc->port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        size_t got = 0;
        ssize_t n;

        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
            write(fd, sc->request, strlen(sc->request)) == (ssize_t) strlen(sc->request))
                while (got < sc->cap - 1 && (n = read(fd, sc->reply + got, sc->cap - 1 - got)) > 0)
                        got += (size_t) n;
        sc->reply[got] = '\0';
        close(fd);
        (void) !write(sc->fd_done, "x", 1);
        return NULL;
}

static int on_done(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        *(bool *) userdata = true;
        return 0;
}

/* One request through the server, the loop running here while a thread plays the client. */
static void scrape(sd_event *e, struct metrics_server *srv, const char *request, char *reply, size_t len) {
        _cleanup_(sd_event_source_unrefp) sd_event_source *src = NULL;
        struct scrape *sc = calloc(1, sizeof(*sc));
        bool done = false;
        int p[2];
        pthread_t t;

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        sc->port = metrics_server_port(srv);
        sc->request = request;
        sc->cap = len;
        sc->reply = malloc(len);
        assert_non_null(sc->reply);
        sc->fd_done = p[1];
        assert_true(sd_event_add_io(e, &src, p[0], EPOLLIN, on_done, &done) >= 0);
        assert_int_equal(pthread_create(&t, NULL, client, sc), 0);
        while (!done)
                assert_true(sd_event_run(e, UINT64_MAX) >= 0);
        pthread_join(t, NULL);
        snprintf(reply, len, "%s", sc->reply);
        close(p[0]);
        close(p[1]);
        free(sc->reply);
        free(sc);
}

static void test_server(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(metrics_server_freep) struct metrics_server *srv = NULL;
        struct metrics_server_options o = { .address = "127.0.0.1", .port = 0 };
        struct ppn_error err = { 0 };
        static char reply[65536];
        int fills = 0;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(metrics_server_new(e, &o, &source, &fills, &srv, &err), 0);
        assert_true(metrics_server_port(srv) > 0);

        scrape(e, srv, "GET /metrics HTTP/1.0\r\n\r\n", reply, sizeof(reply));
        assert_non_null(strstr(reply, "HTTP/1.1 200"));
        assert_non_null(strstr(reply, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert_non_null(strstr(reply, "\r\n\r\n# HELP ppn_build_info"));
        assert_non_null(strstr(reply, "ppn_vm_actual_bytes{vm=\"db\"} 1572864000\n"));
        assert_int_equal(metrics_server_scrapes(srv), 1);

        scrape(e, srv, "GET /other HTTP/1.0\r\n\r\n", reply, sizeof(reply));
        assert_non_null(strstr(reply, "HTTP/1.1 404"));
        scrape(e, srv, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", reply, sizeof(reply));
        assert_non_null(strstr(reply, "HTTP/1.1 405"));
        assert_non_null(strstr(reply, "Allow: GET, HEAD"));
        scrape(e, srv, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", reply, sizeof(reply));
        assert_non_null(strstr(reply, "HTTP/1.1 200"));
        scrape(e, srv, "GET /metrics HTTP/1.0\r\n\r\n", reply, sizeof(reply));
        assert_non_null(strstr(reply, "HTTP/1.1 500"));
        assert_int_equal(fills, 3);
        assert_int_equal(metrics_server_scrapes(srv), 2);
}

/* 3,000 VMs: ~1.8 MB of text, sent a piece at a time as it is rendered. Over HTTP/1.0 (no chunked
 * encoding) the body is byte for byte what metrics_render() gives for the same snapshot, with
 * every VM and the counters at the end; the source gets its snapshot back at once. */
#define BIG_VMS 3000
static struct metrics_vm big_vms[BIG_VMS];
static int big_fill(void *userdata, struct metrics_snapshot *ret) {
        struct metrics_counters *c = userdata;
        *ret = (struct metrics_snapshot) { .node = NODE, .vms = big_vms, .n_vms = BIG_VMS, .counters = c, .version = "1.2.3" };
        return 0;
}
static int big_done_calls;
static void big_done(void *userdata, struct metrics_snapshot *s) {
        big_done_calls++;
}

static void test_server_streams_big(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(metrics_server_freep) struct metrics_server *srv = NULL;
        static const struct metrics_source big = { .fill = big_fill, .done = big_done };
        struct metrics_server_options o = { .address = "127.0.0.1", .port = 0 };
        struct ppn_error err = { 0 };
        struct metrics_counters c;
        size_t cap = 16 * 1024 * 1024;
        char *reply = malloc(cap), *want;

        assert_non_null(reply);
        counters_fill(&c);
        for (size_t i = 0; i < BIG_VMS; i++) {
                big_vms[i] = (struct metrics_vm) VM1;
                snprintf(big_vms[i].name, sizeof(big_vms[i].name), "vm%04zu", i);
                big_vms[i].actual_bytes = i * MIB;
        }
        struct metrics_snapshot s = { .node = NODE, .vms = big_vms, .n_vms = BIG_VMS, .counters = &c, .version = "1.2.3" };
        want = render(&s);
        assert_true(strlen(want) > 1024 * 1024);
        print_message("# %zu bytes of text for %d VMs\n", strlen(want), BIG_VMS);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(metrics_server_new(e, &o, &big, &c, &srv, &err), 0);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        scrape(e, srv, "GET /metrics HTTP/1.0\r\n\r\n", reply, cap);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        /* Not paced by the loop's timer: one piece per 250 ms took 25 s for this text. Generous:
         * a loaded machine sends it in well under a second. */
        double took = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (took > 10)
                fail_msg("the scrape took %.1f s", took);
        assert_int_equal(big_done_calls, 1);
        char *body = strstr(reply, "\r\n\r\n");
        assert_non_null(strstr(reply, "HTTP/1.1 200"));
        assert_non_null(body);
        if (strcmp(body + 4, want) != 0)
                fail_msg("streamed body (%zu bytes) differs from the rendered text (%zu bytes)", strlen(body + 4),
                         strlen(want));
        /* HTTP/1.1: chunked, ending with the counters and the last chunk. */
        scrape(e, srv, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", reply, cap);
        assert_non_null(strstr(reply, "Transfer-Encoding: chunked"));
        assert_non_null(strstr(reply, "ppn_vm_state{vm=\"vm2999\",state=\"running\"} 1\n"));
        assert_non_null(strstr(reply, "\r\n0\r\n\r\n"));
        free(want);
        free(reply);
}

/* Runs the loop for about ms milliseconds. */
static void run_for(sd_event *e, unsigned ms) {
        for (unsigned i = 0; i < ms / 10; i++)
                assert_true(sd_event_run(e, 10 * 1000) >= 0);
}

/* More idle clients than the connection limit (16), then all gone: the endpoint must answer
 * again (it once stopped for good, its listening socket never watched again). alarm() turns a
 * wedge into a failure instead of a hang. */
static void test_server_survives_connection_flood(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(metrics_server_freep) struct metrics_server *srv = NULL;
        struct metrics_server_options o = { .address = "127.0.0.1", .port = 0 };
        struct ppn_error err = { 0 };
        static char reply[65536];
        int fills = 0, fds[40];

        alarm(30);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(metrics_server_new(e, &o, &source, &fills, &srv, &err), 0);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(metrics_server_port(srv)) };
                inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
                fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                assert_true(fds[i] >= 0);
                (void) connect(fds[i], (struct sockaddr *) &a, sizeof(a));   /* EINPROGRESS is fine */
                run_for(e, 10);
        }
        run_for(e, 200);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        run_for(e, 200);
        scrape(e, srv, "GET /metrics HTTP/1.0\r\n\r\n", reply, sizeof(reply));
        alarm(0);
        assert_non_null(strstr(reply, "HTTP/1.1 200"));
}

static void test_server_errors(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(metrics_server_freep) struct metrics_server *a = NULL;
        struct metrics_server *b = NULL;
        struct metrics_server_options o = { .address = "localhost", .port = 0 };
        struct ppn_error err = { 0 };
        char want[256];
        int fills = 0;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(metrics_server_new(e, &o, &source, &fills, &b, &err), -EINVAL);
        assert_string_equal(err.msg, "metrics address 'localhost' is not a numeric IPv4 or IPv6 address; "
                                     "use e.g. 127.0.0.1 or ::1 in [metrics] address");
        o.address = "127.0.0.1";
        assert_int_equal(metrics_server_new(e, &o, &source, &fills, &a, &err), 0);
        o.port = metrics_server_port(a);
        assert_int_equal(metrics_server_new(e, &o, &source, &fills, &b, &err), -EADDRINUSE);
        snprintf(want, sizeof(want), "cannot listen for metrics on 127.0.0.1 port %u: Address already in use; "
                 "choose another [metrics] port or set enabled = no", o.port);
        assert_string_equal(err.msg, want);
        assert_null(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_golden),
                cmocka_unit_test(test_unknown_left_out),
                cmocka_unit_test(test_no_vms_negative_pool),
                cmocka_unit_test(test_escaping_and_unknown_state),
                cmocka_unit_test(test_error_classes_bounded),
                cmocka_unit_test(test_promtool),
                cmocka_unit_test(test_server),
                cmocka_unit_test(test_server_survives_connection_flood),
                cmocka_unit_test(test_server_streams_big),
                cmocka_unit_test(test_server_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
