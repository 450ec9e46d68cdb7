/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmlink against a fake QEMU on a real Unix socket (same sd-event loop): adoption after the
 * socket appears, balloon discovery, statistics enabling, sampling, the floor on targets, and
 * QEMU going away and coming back. The real QEMU is exercised by test-ppnd-vm (suite vm); this
 * runs under the sanitizers and covers cases QEMU will not produce on demand (no balloon).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "vmlink.h"

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, " \
                 "\"capabilities\": [\"oob\"]}}\r\n"

struct fake {
        sd_event *e;
        char dir[64], path[128];
        int lfd, cfd;
        sd_event_source *lsrc, *csrc;
        char buf[16384];
        size_t len;
        bool has_balloon;
        int64_t stats_interval;         /* from qom-set */
        int64_t target;                 /* from balloon */
        uint64_t actual;                /* query-balloon answers this */
        uint64_t last_update;           /* guest-stats last-update */
        unsigned n_query, n_stats;      /* query-balloon and qom-get guest-stats served */
        unsigned n_state_changes, n_sampled;
        enum vmlink_state last_state;
};

static void fake_reply(struct fake *f, json_object *id, const char *ret_json) {
        char line[2048];
        int n = snprintf(line, sizeof(line), "{%s, \"id\": %s}\r\n", ret_json, json_object_to_json_string(id));
        assert_int_equal(send(f->cfd, line, (size_t) n, MSG_NOSIGNAL), n);
}

static void fake_command(struct fake *f, json_object *cmd) {
        json_object *exe, *id = NULL, *args = NULL, *v;
        const char *name;

        assert_true(json_object_object_get_ex(cmd, "execute", &exe));
        json_object_object_get_ex(cmd, "id", &id);
        json_object_object_get_ex(cmd, "arguments", &args);
        name = json_object_get_string(exe);
        if (strcmp(name, "qom-list") == 0)
                fake_reply(f, id, f->has_balloon ?
                           "\"return\": [{\"name\": \"type\", \"type\": \"string\"}, "
                           "{\"name\": \"balloon0\", \"type\": \"child<virtio-balloon-pci>\"}]" :
                           "\"return\": [{\"name\": \"type\", \"type\": \"string\"}]");
        else if (strcmp(name, "qom-set") == 0) {
                assert_true(json_object_object_get_ex(args, "value", &v));
                f->stats_interval = json_object_get_int64(v);
                fake_reply(f, id, "\"return\": {}");
        } else if (strcmp(name, "query-balloon") == 0) {
                char ret[128];
                snprintf(ret, sizeof(ret), "\"return\": {\"actual\": %" PRIu64 "}", f->actual);
                f->n_query++;
                fake_reply(f, id, f->has_balloon ? ret :
                           "\"error\": {\"class\": \"DeviceNotActive\", \"desc\": \"No balloon device has been activated\"}");
        } else if (strcmp(name, "qom-get") == 0) {
                char ret[1024];
                snprintf(ret, sizeof(ret), "\"return\": {\"stats\": {\"stat-available-memory\": 419430400, "
                         "\"stat-free-memory\": 314572800, \"stat-total-memory\": 805306368, \"stat-swap-in\": 0, "
                         "\"stat-swap-out\": 0, \"stat-major-faults\": 7, \"stat-minor-faults\": 1000, "
                         "\"stat-disk-caches\": 18446744073709551615, \"stat-htlb-pgalloc\": 0, "
                         "\"stat-htlb-pgfail\": 0}, \"last-update\": %" PRIu64 "}", f->last_update);
                f->n_stats++;
                fake_reply(f, id, ret);
        } else if (strcmp(name, "balloon") == 0) {
                assert_true(json_object_object_get_ex(args, "value", &v));
                f->target = json_object_get_int64(v);
                fake_reply(f, id, "\"return\": {}");
        } else
                fake_reply(f, id, "\"return\": {}");    /* qmp_capabilities */
}

static int on_fake_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct fake *f = userdata;
        ssize_t n = recv(fd, f->buf + f->len, sizeof(f->buf) - f->len - 1, MSG_DONTWAIT);
        char *nl;

        if (n <= 0) {
                f->csrc = sd_event_source_disable_unref(f->csrc);
                close(f->cfd);
                f->cfd = -1;
                return 0;
        }
        f->len += (size_t) n;
        while ((nl = memchr(f->buf, '\n', f->len))) {
                json_object *cmd;
                *nl = '\0';
                cmd = json_tokener_parse(f->buf);
                assert_non_null(cmd);
                fake_command(f, cmd);
                json_object_put(cmd);
                memmove(f->buf, nl + 1, f->len - (size_t) (nl + 1 - f->buf));
                f->len -= (size_t) (nl + 1 - f->buf);
        }
        return 0;
}

static int on_fake_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct fake *f = userdata;

        f->cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(f->cfd >= 0);
        f->len = 0;
        assert_int_equal(send(f->cfd, GREETING, strlen(GREETING), MSG_NOSIGNAL), (ssize_t) strlen(GREETING));
        assert_int_equal(sd_event_add_io(f->e, &f->csrc, f->cfd, EPOLLIN, on_fake_conn, f), 0);
        return 0;
}

/* QEMU starts: its QMP socket appears. */
static void fake_start(struct fake *f) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        strcpy(sa.sun_path, f->path);
        f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_int_equal(bind(f->lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(f->lfd, 4), 0);
        assert_int_equal(sd_event_add_io(f->e, &f->lsrc, f->lfd, EPOLLIN, on_fake_accept, f), 0);
}

/* QEMU exits: the connection and the socket go. */
static void fake_stop(struct fake *f) {
        f->csrc = sd_event_source_disable_unref(f->csrc);
        f->lsrc = sd_event_source_disable_unref(f->lsrc);
        if (f->cfd >= 0)
                close(f->cfd);
        if (f->lfd >= 0)
                close(f->lfd);
        f->cfd = f->lfd = -1;
        unlink(f->path);
}

static void on_state(struct vmlink *l, enum vmlink_state old, const char *why, void *userdata) {
        struct fake *f = userdata;
        f->n_state_changes++;
        f->last_state = vmlink_get_state(l);
}

static void on_sampled(struct vmlink *l, void *userdata) {
        ((struct fake *) userdata)->n_sampled++;
}

static const struct vmlink_callbacks cbs = { .state_changed = on_state, .sampled = on_sampled };
static const struct vmlink_options opts = { .stats_interval_sec = 2, .retry_max_usec = 400000 };

/* Runs the loop until l is in state want, at most max_ms; returns the ms it took or -1. */
static long run_until_state(struct fake *f, struct vmlink *l, enum vmlink_state want, unsigned max_ms) {
        uint64_t t0 = now_usec();
        while (now_usec() - t0 < max_ms * 1000ULL) {
                if (vmlink_get_state(l) == want)
                        return (long) ((now_usec() - t0) / 1000);
                sd_event_run(f->e, 10000);
        }
        return vmlink_get_state(l) == want ? (long) max_ms : -1;
}

static int setup(void **state) {
        struct fake *f = calloc(1, sizeof(*f));

        snprintf(f->dir, sizeof(f->dir), "/tmp/test-vmlink-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/qmp.sock", f->dir);
        f->lfd = f->cfd = -1;
        f->has_balloon = true;
        f->actual = 768 * MIB;
        f->last_update = 1795946222;
        assert_int_equal(sd_event_new(&f->e), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fake *f = *state;
        fake_stop(f);
        sd_event_unref(f->e);
        rmdir(f->dir);
        free(f);
        return 0;
}

static void test_absent_then_adopted(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        long ms;

        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        assert_int_equal(vmlink_pid(l), 0);
        assert_non_null(strstr(vmlink_why(l), "absent"));
        assert_int_equal(vmlink_sample(l), -ENOTCONN);
        /* Backoff grows while absent (100, 200, 400 ms ceiling)... */
        for (int i = 0; i < 60; i++)
                sd_event_run(f->e, 10000);
        /* ...and QEMU appearing is noticed within the ceiling. */
        fake_start(f);
        ms = run_until_state(f, l, VMLINK_RUNNING, 2000);
        assert_true(ms >= 0 && ms <= 600);
        /* The pid is the socket's peer: here the test process itself. */
        assert_int_equal(vmlink_pid(l), getpid());
        assert_int_equal(f->stats_interval, 2);
        assert_true(vmlink_last(l)->balloon);
        vmlink_free(l);
}

static void test_sample_and_target(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        const struct vmlink_sample *x;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(vmlink_sample(l), 0);
        assert_int_equal(vmlink_sample(l), -EBUSY);     /* one round at a time */
        for (int i = 0; i < 100 && f->n_sampled == 0; i++)
                sd_event_run(f->e, 10000);
        assert_int_equal(f->n_sampled, 1);
        x = vmlink_last(l);
        assert_int_equal(x->actual, 768 * MIB);
        assert_true(x->actual_usec > 0);
        assert_int_equal(x->available, 400 * MIB);
        assert_int_equal(x->free, 300 * MIB);
        assert_int_equal(x->total, 768 * MIB);
        assert_int_equal(x->major_faults, 7);
        assert_int_equal(x->stats_update_sec, 1795946222);
        /* Below the floor: refused, nothing sent. */
        assert_int_equal(vmlink_set_target(l, 100 * MIB, 256 * MIB), -ERANGE);
        assert_int_equal(vmlink_set_target(l, 0, 0), -EINVAL);
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 256 * MIB), 0);
        for (int i = 0; i < 50 && f->target == 0; i++)
                sd_event_run(f->e, 10000);
        assert_int_equal(f->target, 512 * MIB);
        vmlink_free(l);
}

/* One sampling round; returns vmlink_sample()'s answer after the replies are in. */
static int sample_round(struct fake *f, struct vmlink *l) {
        unsigned before = f->n_sampled;
        int r = vmlink_sample(l);

        for (int i = 0; r == 0 && i < 100 && f->n_sampled == before; i++)
                sd_event_run(f->e, 10000);
        if (r == 0)
                assert_int_equal(f->n_sampled, before + 1);
        return r;
}

static void fake_balloon_change(struct fake *f, struct vmlink *l, uint64_t actual) {
        char line[256];
        int n = snprintf(line, sizeof(line), "{\"timestamp\": {\"seconds\": 1795946222, \"microseconds\": 5}, "
                         "\"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": %" PRIu64 "}}\r\n", actual);
        assert_int_equal(send(f->cfd, line, (size_t) n, MSG_NOSIGNAL), n);
        for (int i = 0; i < 5; i++)
                sd_event_run(f->e, 10000);
}

/* query-balloon only when QEMU's events cannot tell: after a BALLOON_CHANGE (its value may be
 * an intermediate one), while a target sent is not reached, never for a balloon at rest. The
 * statistics only once the guest's next report can be due. */
static void test_events_spare_queries(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 1);
        assert_int_equal(f->n_stats, 1);
        /* At rest: the actual is known, nothing moved it; the (old) statistics are asked again. */
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 1);
        assert_int_equal(f->n_stats, 2);
        /* The guest moved the balloon itself: the event's value at once, the truth next round. */
        fake_balloon_change(f, l, 700 * MIB);
        assert_int_equal(vmlink_last(l)->actual, 700 * MIB);
        f->actual = 640 * MIB;
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 2);
        assert_int_equal(vmlink_last(l)->actual, 640 * MIB);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 2);
        /* A target on its way is polled every round until the actual is there. */
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 256 * MIB), 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 4);
        f->actual = 512 * MIB;
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_query, 5);
        assert_int_equal(vmlink_last(l)->actual, 512 * MIB);
        /* Fresh statistics (interval 2 s): the next report cannot be due yet, nothing to ask. */
        f->last_update = now_realtime_usec() / 1000000;
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(f->n_stats, 8);
        assert_int_equal(sample_round(f, l), 1);
        assert_int_equal(f->n_stats, 8);
        assert_int_equal(f->n_query, 5);
        vmlink_free(l);
}

static void test_exit_noticed_and_readopted(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        unsigned changes;
        long ms;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        changes = f->n_state_changes;
        fake_stop(f);
        /* EOF is seen on the next loop iteration: no polling delay. */
        ms = run_until_state(f, l, VMLINK_ABSENT, 1000);
        assert_true(ms >= 0 && ms <= 50);
        assert_int_equal(f->n_state_changes, changes + 1);
        assert_non_null(strstr(vmlink_why(l), "went away"));
        assert_int_equal(vmlink_pid(l), 0);
        assert_int_equal(vmlink_sample(l), -ENOTCONN);
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 0), -ENOTCONN);
        /* It comes back on the same socket: adopted again, retry restarted at 100 ms. */
        fake_start(f);
        ms = run_until_state(f, l, VMLINK_RUNNING, 2000);
        assert_true(ms >= 0 && ms <= 500);
        vmlink_free(l);
}

static void test_no_balloon(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        f->has_balloon = false;
        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_non_null(strstr(vmlink_why(l), "no balloon device"));
        assert_int_equal(f->stats_interval, 0);         /* nothing to enable */
        assert_int_equal(vmlink_sample(l), 0);
        for (int i = 0; i < 100 && f->n_sampled == 0; i++)
                sd_event_run(f->e, 10000);
        assert_false(vmlink_last(l)->balloon);
        assert_int_equal(vmlink_last(l)->actual_usec, 0);
        vmlink_free(l);
}

static void test_path_change(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", NULL, &opts, &cbs, f, &l), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        assert_non_null(strstr(vmlink_why(l), "no QMP socket"));
        assert_int_equal(vmlink_set_path(l, f->path), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(vmlink_set_path(l, NULL), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        vmlink_free(l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_absent_then_adopted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sample_and_target, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_spare_queries, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exit_noticed_and_readopted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_balloon, setup, teardown),
                cmocka_unit_test_setup_teardown(test_path_change, setup, teardown),
        };
        return cmocka_run_group_tests_name("vmlink", tests, NULL, NULL);
}
