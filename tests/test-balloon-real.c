/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The QMP client and the balloon module against real QEMU 7.2 and the test guest: inflate a
 * 1024 MiB guest to 512 MiB and back through our client, see `actual` and the guest's
 * MemTotal follow, read real guest statistics, and see DeviceNotActive from a VM without a
 * balloon device and a clear error from a QEMU that vanished. One guest with a balloon is
 * booted for the whole program; the one without is booted by its own test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "balloon.h"
#include "qmp.h"
#include "testvm.h"
#include "util.h"
#include "vmlink.h"

#define CMD_TIMEOUT_MS 30000
/* QMP under TCG on 2 cores shared with other builds: generous, still bounded. */
#define QMP_TIMEOUT_USEC (UINT64_C(10) * 1000000)
/* Measured 0.6-1.5 s for 1024 -> 512 MiB under TCG; allow for a loaded machine. */
#define SETTLE_USEC (UINT64_C(60) * 1000000)
#define FLOOR (256 * MIB)

static struct testvm *vm;
static sd_event *loop;
static struct qmp *q;
static unsigned n_balloon_change;
static uint64_t last_change_actual;

static void on_balloon_change(struct qmp *c, const struct qmp_event *ev, void *userdata) {
        uint64_t actual;
        if (balloon_event_actual(ev, &actual) == 0) {
                n_balloon_change++;
                last_change_actual = actual;
        }
}

static void on_ready(struct qmp *c, void *userdata) {
        *(bool *) userdata = true;
}

static void on_disconnected(struct qmp *c, const struct qmp_error *reason, void *userdata) {
        printf("# disconnected: %s\n", reason->error.msg);
}

/* Runs the loop until *flag or max_usec. */
static bool run_until(const bool *flag, uint64_t max_usec) {
        uint64_t end = now_usec() + max_usec;
        while (!*flag && now_usec() < end)
                assert_true(sd_event_run(loop, end - now_usec()) >= 0);
        return *flag;
}

/* The daemon's way: our own sd-event loop, an async connect; sync calls work on it too. */
static int setup(void **state) {
        static const struct qmp_callbacks cb = { .ready = on_ready, .disconnected = on_disconnected };
        struct testvm_opts o = { .mem_mib = 1024 };
        struct qmp_error err = { 0 };
        bool ready = false;

        if (testvm_boot(&o, &vm) < 0)
                return -1;
        if (sd_event_new(&loop) < 0)
                return -1;
        if (qmp_connect(loop, testvm_qmp_path(vm), QMP_TIMEOUT_USEC, &cb, &ready, &q, &err) < 0) {
                printf("# %s\n", err.error.msg);
                return -1;
        }
        if (!run_until(&ready, 2 * QMP_TIMEOUT_USEC))
                return -1;
        qmp_set_event_handler(q, QMP_EVENT_BALLOON_CHANGE, on_balloon_change, NULL);
        return 0;
}

static int teardown(void **state) {
        q = qmp_free(q);
        loop = sd_event_unref(loop);
        vm = testvm_kill(vm);
        return 0;
}

static long guest_meminfo_kib(struct testvm *v, const char *key) {
        _cleanup_free_ char *out = NULL;
        const char *p;

        assert_int_equal(testvm_exec(v, "cat /proc/meminfo", CMD_TIMEOUT_MS, &out), 0);
        p = strstr(out, key);
        assert_non_null(p);
        return strtol(p + strlen(key), NULL, 10);
}

static uint64_t query_actual(void) {
        struct qmp_error err = { 0 };
        uint64_t actual = 0;

        if (balloon_query_sync(q, QMP_TIMEOUT_USEC, &actual, &err) < 0)
                fail_msg("%s", err.error.msg);
        return actual;
}

/* Polls query-balloon every 50 ms until it says `want`; returns the microseconds it took. */
static uint64_t wait_actual(uint64_t want) {
        uint64_t t0 = now_usec(), actual;
        struct timespec ts = { 0, 50 * 1000 * 1000 };

        while ((actual = query_actual()) != want) {
                if (now_usec() - t0 > SETTLE_USEC)
                        fail_msg("actual stuck at %" PRIu64 " MiB, want %" PRIu64 " MiB",
                                 actual / MIB, want / MIB);
                nanosleep(&ts, NULL);
        }
        return now_usec() - t0;
}

static void test_greeting_and_peer(void **state) {
        struct qmp_version v;
        pid_t pid = 0;

        assert_int_equal(qmp_qemu_version(q, &v), 0);
        printf("# QEMU %u.%u.%u (%s)\n", v.major, v.minor, v.micro, v.package);
        assert_int_equal(v.major, 7);
        assert_int_equal(v.minor, 2);
        /* SO_PEERCRED names QEMU itself: what the daemon moves into the VM's cgroup. */
        assert_int_equal(qmp_peer_pid(q, &pid), 0);
        assert_int_equal(pid, testvm_pid(vm));
        assert_int_equal(query_actual(), 1024 * MIB);
}

/* Acceptance 2: inflate to 512 MiB, `actual` gets there, MemTotal shrinks. */
static void test_inflate_to_512(void **state) {
        long before = guest_meminfo_kib(vm, "MemTotal:"), after;
        struct qmp_error err = { 0 };
        uint64_t t, t0;

        n_balloon_change = 0;
        if (balloon_set_target_sync(q, 512 * MIB, FLOOR, QMP_TIMEOUT_USEC, &err) < 0)
                fail_msg("%s", err.error.msg);
        t = wait_actual(512 * MIB);
        after = guest_meminfo_kib(vm, "MemTotal:");
        printf("# inflate 1024 -> 512 MiB: actual reached in %" PRIu64 " ms; MemTotal %ld -> %ld MiB\n",
               t / 1000, before / 1024, after / 1024);
        /* The balloon's 512 MiB leave MemTotal (no deflate-on-oom): allow 32 MiB of slack. */
        assert_true(before - after >= (512 - 32) * 1024);
        /* BALLOON_CHANGE is rate-limited to 1/s; its last word is the truth within ~1 s. */
        t0 = now_usec();
        while (last_change_actual != 512 * MIB && now_usec() - t0 < 5 * 1000000) {
                struct timespec ts = { 0, 100 * 1000 * 1000 };
                nanosleep(&ts, NULL);
                query_actual(); /* runs the loop, which reads the events */
        }
        printf("# %u BALLOON_CHANGE events, last actual %" PRIu64 " MiB\n", n_balloon_change,
               last_change_actual / MIB);
        assert_true(n_balloon_change >= 1);
        assert_int_equal(last_change_actual, 512 * MIB);
}

/* Refused targets never reach QEMU: the guest stays where it is. */
static void test_refused_targets(void **state) {
        struct qmp_error err = { 0 };

        assert_int_equal(balloon_set_target_sync(q, 0, FLOOR, QMP_TIMEOUT_USEC, &err), -EINVAL);
        assert_int_equal(balloon_set_target_sync(q, 100 * MIB, FLOOR, QMP_TIMEOUT_USEC, &err), -ERANGE);
        assert_non_null(strstr(err.error.msg, testvm_qmp_path(vm)));
        assert_int_equal(query_actual(), 512 * MIB);
}

/* Acceptance 2: real guest statistics once polling is on. The driver reports once when it
 * starts; with polling every 1 s, last-update must move on and the numbers follow the balloon. */
static void test_guest_stats(void **state) {
        struct qmp_error err = { 0 };
        struct balloon_stats s = { 0 };
        uint64_t t0, first, total = 0, free_mem = 0, avail = 0, now_s;

        if (balloon_read_stats_sync(q, NULL, QMP_TIMEOUT_USEC, &s, &err) < 0)
                fail_msg("%s", err.error.msg);
        first = s.last_update;
        printf("# before polling: last-update %" PRIu64 ", known %#x\n", s.last_update, s.known);
        if (balloon_enable_stats_sync(q, NULL, 1, QMP_TIMEOUT_USEC, &err) < 0)
                fail_msg("%s", err.error.msg);
        t0 = now_usec();
        do {
                struct timespec ts = { 0, 250 * 1000 * 1000 };
                nanosleep(&ts, NULL);
                if (balloon_read_stats_sync(q, NULL, QMP_TIMEOUT_USEC, &s, &err) < 0)
                        fail_msg("%s", err.error.msg);
        } while (s.last_update <= first && now_usec() - t0 < 30 * 1000000);
        assert_true(s.last_update > first);
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_TOTAL_MEMORY, &total), 0);
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_FREE_MEMORY, &free_mem), 0);
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_AVAILABLE_MEMORY, &avail), 0);
        printf("# stats updated after %" PRIu64 " ms: total %" PRIu64 " MiB, free %" PRIu64
               " MiB, available %" PRIu64 " MiB, known %#x, extra %u\n", (now_usec() - t0) / 1000,
               total / MIB, free_mem / MIB, avail / MIB, s.known, s.n_extra);
        /* The guest is ballooned to 512 MiB: it sees about that much, and has some free. */
        assert_in_range(total, 400 * MIB, 512 * MIB);
        assert_true(free_mem > 0 && free_mem <= total);
        assert_true(avail <= total);
        now_s = now_realtime_usec() / 1000000;
        assert_in_range(s.last_update, now_s - 60, now_s + 5);
}

struct answer {
        bool answered;
        int code;
        uint64_t actual;
};

/* No assertions inside callbacks: cmocka would jump out of the middle of the loop. */
static void on_poll(struct qmp *c, uint64_t actual, const struct qmp_error *err, void *userdata) {
        struct answer *a = userdata;
        a->answered = true;
        a->code = err ? err->error.code : 0;
        a->actual = actual;
}

static void on_set(struct qmp *c, const struct qmp_error *err, void *userdata) {
        struct answer *a = userdata;
        a->answered = true;
        a->code = err ? err->error.code : 0;
}

/* Acceptance 2, deflate back, the way the daemon will: async calls from the sd-event loop. */
static void test_deflate_async(void **state) {
        long before = guest_meminfo_kib(vm, "MemTotal:"), after;
        struct answer set = { 0 }, poll = { 0 };
        uint64_t t0 = now_usec();

        assert_int_equal(balloon_set_target(q, 1024 * MIB, FLOOR, QMP_TIMEOUT_USEC, on_set, &set, NULL), 0);
        assert_true(run_until(&set.answered, QMP_TIMEOUT_USEC));
        assert_int_equal(set.code, 0);
        while (poll.actual != 1024 * MIB && now_usec() - t0 < SETTLE_USEC) {
                struct timespec ts = { 0, 50 * 1000 * 1000 };
                poll = (struct answer) { 0 };
                assert_int_equal(balloon_query(q, QMP_TIMEOUT_USEC, on_poll, &poll, NULL), 0);
                assert_true(run_until(&poll.answered, 2 * QMP_TIMEOUT_USEC));
                assert_int_equal(poll.code, 0);
                if (poll.actual != 1024 * MIB)
                        nanosleep(&ts, NULL);
        }
        assert_int_equal(poll.actual, 1024 * MIB);
        after = guest_meminfo_kib(vm, "MemTotal:");
        printf("# deflate 512 -> 1024 MiB in %" PRIu64 " ms; MemTotal %ld -> %ld MiB\n",
               (now_usec() - t0) / 1000, before / 1024, after / 1024);
        assert_true(after - before >= (512 - 32) * 1024);
        assert_int_equal(qmp_pending(q), 0);
}

/* Acceptance 3: no balloon device -> DeviceNotActive, reported as such; then QEMU vanishes. */
static void test_no_balloon_device(void **state) {
        struct testvm_opts o = { .mem_mib = 512, .no_balloon = true };
        _cleanup_qmp_ struct qmp *c = NULL;
        struct qmp_error err = { 0 };
        struct balloon_stats s;
        struct testvm *nb = NULL;
        uint64_t actual = 0;
        char path[256];

        assert_int_equal(testvm_boot(&o, &nb), 0);
        snprintf(path, sizeof(path), "%s", testvm_qmp_path(nb));
        if (qmp_connect_sync(path, QMP_TIMEOUT_USEC, &c, &err) < 0)
                fail_msg("%s", err.error.msg);
        assert_int_equal(balloon_query_sync(c, QMP_TIMEOUT_USEC, &actual, &err), -ENODEV);
        assert_true(qmp_error_has_class(&err, "DeviceNotActive"));
        printf("# %s\n", err.error.msg);
        assert_int_equal(balloon_set_target_sync(c, 256 * MIB, FLOOR, QMP_TIMEOUT_USEC, &err), -ENODEV);
        assert_true(qmp_error_has_class(&err, "DeviceNotActive"));
        assert_int_equal(balloon_read_stats_sync(c, NULL, QMP_TIMEOUT_USEC, &s, &err), -ENOENT);
        assert_true(qmp_error_has_class(&err, "DeviceNotFound"));
        /* A vanished QEMU: a clear error naming the socket, no crash, nothing leaked. */
        nb = testvm_kill(nb);
        assert_int_equal(balloon_query_sync(c, QMP_TIMEOUT_USEC, &actual, &err), -ECONNRESET);
        printf("# %s\n", err.error.msg);
        assert_non_null(strstr(err.error.msg, path));
        assert_non_null(strstr(err.error.msg, "QEMU closed"));
        assert_false(qmp_is_ready(c));
        assert_int_equal(actual, 0);
}

/* Adoption reads the balloon's free-page-reporting property (the policy's rules per VM depend
 * on it): vmlink on a guest booted with it on, then one with it off. */
static void test_free_page_reporting_detected(void **state) {
        for (int on = 1; on >= 0; on--) {
                struct testvm_opts o = { .mem_mib = 256, .free_page_reporting = on };
                struct vmlink_options lo = { .stats_interval_sec = 1, .retry_max_usec = 1000000,
                                             .timeout_usec = QMP_TIMEOUT_USEC };
                struct testvm *g = NULL;
                struct vmlink *l = NULL;
                uint64_t end;

                assert_int_equal(testvm_boot(&o, &g), 0);
                assert_int_equal(vmlink_new(loop, on ? "fpr-on" : "fpr-off", testvm_qmp_path(g), &lo, NULL, NULL, &l), 0);
                end = now_usec() + 6 * QMP_TIMEOUT_USEC;
                while (vmlink_get_state(l) != VMLINK_RUNNING && now_usec() < end)
                        assert_true(sd_event_run(loop, end - now_usec()) >= 0);
                assert_int_equal(vmlink_get_state(l), VMLINK_RUNNING);
                assert_true(vmlink_last(l)->balloon);
                assert_int_equal(vmlink_last(l)->free_page_reporting, on);
                printf("# free-page-reporting=%s: detected %s\n", on ? "on" : "off",
                       vmlink_last(l)->free_page_reporting ? "on" : "off");
                vmlink_free(l);
                testvm_kill(g);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_greeting_and_peer),
                cmocka_unit_test(test_inflate_to_512),
                cmocka_unit_test(test_refused_targets),
                cmocka_unit_test(test_guest_stats),
                cmocka_unit_test(test_deflate_async),
                cmocka_unit_test(test_no_balloon_device),
                cmocka_unit_test(test_free_page_reporting_detected),
        };
        return cmocka_run_group_tests_name("balloon-real", tests, setup, teardown);
}
