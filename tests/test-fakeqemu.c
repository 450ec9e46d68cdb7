/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fake QEMU program (tests/fake-qemu-main.c, the one fake of tests/fake-qemu.h), driven
 * through the project's own QMP client and balloon module — the code ppnd uses — so the fake
 * is known to speak what the daemon expects: greeting and negotiation, query-balloon, balloon
 * (with QEMU's refusal of 0 and its cap at RAM), qom-list, stats unknown until polling is
 * enabled, actual moving toward the target over time, unknown commands refused, sockets
 * removed on SIGTERM; its greeting is the recorded one; without a balloon it refuses as QEMU
 * does; its silent, half and stalling monitors misbehave as the fault tests need. Here the
 * fake stands in for the scale benchmark's many QEMUs (and, one at a time, for the QEMUs of
 * the fault tests). With --meminfo it also stands in for the host's memory: its meminfo file
 * follows the guests' balloon sizes; with --pid-per-vm each VM has a process of its own, whose
 * resident set moves with that VM's bursts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "balloon.h"
#include "hostmem.h"
#include "qmp.h"
#include "util.h"

#define TIMEOUT (2 * 1000000ULL)

struct fake {
        char dir[64];
        pid_t pid;
        FILE *out;
};

static struct fake F;

static void sock_path(unsigned i, char *buf, size_t len) {
        snprintf(buf, len, "%s/vm%04u.sock", F.dir, i);
}

/* Starts the fake with 3 VMs of 2 GiB on a node of 10 GiB (--meminfo), waits for its "ready"
 * line. */
static int setup(void **state) {
        const char *build = getenv("PPN_BUILD_ROOT");
        char exe[512], line[64];
        snprintf(exe, sizeof exe, "%s/tests/fake-qemu", build ? build : "build");
        strcpy(F.dir, "/tmp/ppn-fakeqemu-test.XXXXXX");
        assert_non_null(mkdtemp(F.dir));
        int p[2];
        assert_int_equal(pipe(p), 0);
        F.pid = fork();
        assert_true(F.pid >= 0);
        if (F.pid == 0) {
                dup2(p[1], 1);
                close(p[0]);
                char mi[128];
                snprintf(mi, sizeof mi, "%s/meminfo:10G", F.dir);
                execl(exe, exe, "--dir", F.dir, "--count", "3", "--max", "2G", "--meminfo", mi, (char *) NULL);
                _exit(127);
        }
        close(p[1]);
        F.out = fdopen(p[0], "r");
        assert_non_null(fgets(line, sizeof line, F.out));
        assert_string_equal(line, "ready 3\n");
        return 0;
}

static int teardown(void **state) {
        if (F.pid > 0) {
                kill(F.pid, SIGKILL);
                waitpid(F.pid, NULL, 0);
        }
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", F.dir);
        return system(cmd) == 0 ? 0 : -1;
}

static struct qmp *connect_vm(unsigned i) {
        char path[128];
        struct qmp *q = NULL;
        struct qmp_error e = {};
        sock_path(i, path, sizeof path);
        assert_int_equal(qmp_connect_sync(path, TIMEOUT, &q, &e), 0);
        struct qmp_version v;
        assert_int_equal(qmp_qemu_version(q, &v), 0);
        assert_int_equal(v.major, 7);
        return q;
}

static void test_balloon_query_and_set(void **state) {
        _cleanup_(qmp_freep) struct qmp *q = connect_vm(1);
        struct qmp_error e = {};
        uint64_t actual;
        assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        assert_int_equal(actual, 2 * GIB);
        /* 2 GiB -> 1.5 GiB at 0.5 GiB/s: about 1 s, not at once. */
        assert_int_equal(balloon_set_target_sync(q, 1536 * MIB, 64 * MIB, TIMEOUT, &e), 0);
        assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        assert_true(actual > 1536 * MIB && actual <= 2 * GIB);
        uint64_t t0 = now_usec();
        while (actual > 1536 * MIB && now_usec() - t0 < 5 * 1000000ULL) {
                usleep(50000);
                assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        }
        assert_int_equal(actual, 1536 * MIB);
        assert_true(now_usec() - t0 >= 700000);
        /* Above RAM is capped, as QEMU does; deflating is fast. */
        assert_int_equal(balloon_set_target_sync(q, 8 * GIB, 64 * MIB, TIMEOUT, &e), 0);
        usleep(400000);
        assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        assert_int_equal(actual, 2 * GIB);
}

static void test_zero_and_unknown_refused(void **state) {
        _cleanup_(qmp_freep) struct qmp *q = connect_vm(0);
        struct qmp_error e = {};
        json_object *args = json_object_new_object();
        json_object_object_add(args, "value", json_object_new_int64(0));
        assert_true(qmp_call_sync(q, "balloon", args, TIMEOUT, NULL, &e) < 0);
        assert_true(qmp_error_has_class(&e, "GenericError"));
        assert_non_null(strstr(e.desc, "expects a size"));
        e = (struct qmp_error) {};
        assert_true(qmp_call_sync(q, "query-cpus-fast", NULL, TIMEOUT, NULL, &e) < 0);
        assert_true(qmp_error_has_class(&e, "CommandNotFound"));
}

static void test_stats_unknown_until_enabled(void **state) {
        _cleanup_(qmp_freep) struct qmp *q = connect_vm(2);
        struct qmp_error e = {};
        struct balloon_stats s;
        uint64_t v;
        assert_int_equal(balloon_read_stats_sync(q, "balloon0", TIMEOUT, &s, &e), 0);
        assert_int_equal(s.last_update, 0);
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_AVAILABLE_MEMORY, &v), -ENODATA);
        assert_int_equal(balloon_enable_stats_sync(q, "balloon0", 1, TIMEOUT, &e), 0);
        assert_int_equal(balloon_read_stats_sync(q, "balloon0", TIMEOUT, &s, &e), 0);
        assert_true(s.last_update > 0 && s.last_update <= (uint64_t) time(NULL));
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_TOTAL_MEMORY, &v), 0);
        assert_int_equal(v, 2 * GIB);
        uint64_t avail;
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_AVAILABLE_MEMORY, &avail), 0);
        /* use = 30 % ± 10 % of 2 GiB (VM 2 is not a burst VM). */
        assert_true(avail >= 2 * GIB - 700 * MIB && avail <= 2 * GIB - 500 * MIB);
}

static void test_qom_list_names_the_balloon(void **state) {
        _cleanup_(qmp_freep) struct qmp *q = connect_vm(0);
        struct qmp_error e = {};
        json_object *args = json_object_new_object(), *reply = NULL;
        json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
        assert_int_equal(qmp_call_sync(q, "qom-list", args, TIMEOUT, &reply, &e), 0);
        /* QEMU's recorded answer (adoption.qmp): the "type" property, then the balloon. */
        assert_int_equal(json_object_array_length(reply), 2);
        json_object *name, *type, *el = json_object_array_get_idx(reply, 1);
        assert_true(json_object_object_get_ex(el, "name", &name));
        assert_true(json_object_object_get_ex(el, "type", &type));
        assert_string_equal(json_object_get_string(name), "balloon0");
        assert_non_null(strstr(json_object_get_string(type), "virtio-balloon"));
        json_object_put(reply);
}

/* A second fake with one VM on DIR/one.sock and the given options; returns its pid. */
static pid_t spawn_one(const char *opt1, const char *opt2, const char *opt3) {
        const char *build = getenv("PPN_BUILD_ROOT");
        char exe[512], path[128];
        snprintf(exe, sizeof exe, "%s/tests/fake-qemu", build ? build : "build");
        snprintf(path, sizeof path, "%s/one.sock", F.dir);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (!freopen("/dev/null", "w", stdout))
                        _exit(127);
                execl(exe, exe, "--socket", path, "--max", "1G", opt1, opt2, opt3, (char *) NULL);
                _exit(127);
        }
        struct stat st;
        for (int i = 0; i < 200 && stat(path, &st) < 0; i++)
                usleep(10000);
        usleep(20000);
        return pid;
}

static void stop_one(pid_t pid) {
        kill(pid, SIGTERM);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
}

/* The greeting is QEMU 7.2's, as recorded (tests/fixtures/qmp/), not one of the fake's own. */
static void test_greeting_is_recorded(void **state) {
        _cleanup_(qmp_freep) struct qmp *q = connect_vm(0);
        struct qmp_version v;
        assert_int_equal(qmp_qemu_version(q, &v), 0);
        assert_int_equal(v.minor, 2);
        assert_int_equal(v.micro, 22);
        assert_string_equal(v.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
}

/* Without a balloon device: QEMU's recorded refusals, and no balloon among the peripherals. */
static void test_no_balloon(void **state) {
        pid_t pid = spawn_one("--no-balloon", NULL, NULL);
        char path[128];
        struct qmp *q = NULL;
        struct qmp_error e = {};
        uint64_t actual;
        json_object *args = json_object_new_object(), *reply = NULL;
        snprintf(path, sizeof path, "%s/one.sock", F.dir);
        assert_int_equal(qmp_connect_sync(path, TIMEOUT, &q, &e), 0);
        assert_true(balloon_query_sync(q, TIMEOUT, &actual, &e) < 0);
        assert_true(qmp_error_has_class(&e, "DeviceNotActive"));
        e = (struct qmp_error) {};
        assert_true(balloon_set_target_sync(q, 512 * MIB, 64 * MIB, TIMEOUT, &e) < 0);
        assert_true(qmp_error_has_class(&e, "DeviceNotActive"));
        e = (struct qmp_error) {};
        json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
        assert_int_equal(qmp_call_sync(q, "qom-list", args, TIMEOUT, &reply, &e), 0);
        assert_int_equal(json_object_array_length(reply), 1);
        json_object_put(reply);
        struct balloon_stats s;
        assert_true(balloon_read_stats_sync(q, "balloon0", TIMEOUT, &s, &e) < 0);
        assert_true(qmp_error_has_class(&e, "DeviceNotFound"));
        assert_non_null(strstr(e.desc, "/machine/peripheral/balloon0"));
        qmp_free(q);
        stop_one(pid);
}

/* The misbehaving monitors: no greeting, half a greeting, answers that stop. */
static void test_misbehaving_monitors(void **state) {
        char path[128];
        struct qmp *q = NULL;
        struct qmp_error e = {};
        uint64_t actual;
        snprintf(path, sizeof path, "%s/one.sock", F.dir);
        const char *const modes[] = { "silent", "half" };
        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                pid_t pid = spawn_one("--monitor", modes[i], NULL);
                e = (struct qmp_error) {};
                assert_true(qmp_connect_sync(path, 300000, &q, &e) < 0);
                assert_null(q);
                stop_one(pid);
        }
        /* stall, answering 3: capabilities, two queries, then nothing. */
        pid_t pid = spawn_one("--monitor", "stall", "--answer=3");
        e = (struct qmp_error) {};
        assert_int_equal(qmp_connect_sync(path, TIMEOUT, &q, &e), 0);
        assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        assert_int_equal(actual, 1 * GIB);
        assert_int_equal(balloon_query_sync(q, TIMEOUT, &actual, &e), 0);
        assert_int_equal(balloon_query_sync(q, 300000, &actual, &e), -ETIMEDOUT);
        qmp_free(q);
        stop_one(pid);
}

/* The node's meminfo: MemTotal the node, MemAvailable = MemFree = the node less 1 GiB for the
 * host and less every guest's balloon size, rewritten as a balloon moves. */
static void test_meminfo_follows_balloons(void **state) {
        _cleanup_(qmp_freep) struct qmp *q0 = connect_vm(0);
        _cleanup_(qmp_freep) struct qmp *q1 = connect_vm(1);
        _cleanup_(qmp_freep) struct qmp *q2 = connect_vm(2);
        struct qmp *qs[] = { q0, q1, q2 };
        struct qmp_error e = {};
        struct hostmem_meminfo mi;
        char path[128];
        uint64_t actual, sum = 0;
        snprintf(path, sizeof path, "%s/meminfo", F.dir);
        assert_int_equal(balloon_set_target_sync(q0, GIB, 64 * MIB, TIMEOUT, &e), 0);
        uint64_t t0 = now_usec();
        do {
                usleep(50000);
                assert_int_equal(balloon_query_sync(q0, TIMEOUT, &actual, &e), 0);
        } while (actual > GIB && now_usec() - t0 < 5 * 1000000ULL);
        assert_int_equal(actual, GIB);
        for (size_t i = 0; i < 3; i++) {
                assert_int_equal(balloon_query_sync(qs[i], TIMEOUT, &actual, &e), 0);
                sum += actual;
        }
        assert_int_equal(sum, 5 * GIB);
        usleep(300000);         /* rewritten every 100 ms */
        assert_int_equal(hostmem_read_meminfo(path, &mi, NULL), 0);
        assert_int_equal(mi.total, 10 * GIB);
        assert_true(mi.has_available);
        assert_int_equal(mi.available, 10 * GIB - GIB - sum);
        assert_int_equal(mi.free, mi.available);
        assert_int_equal(balloon_set_target_sync(q0, 2 * GIB, 64 * MIB, TIMEOUT, &e), 0);
}

/* The resident set of pid from /proc/PID/statm, bytes (0 if unreadable). */
static uint64_t statm_rss(pid_t pid) {
        char path[64];
        unsigned long size, resident;
        snprintf(path, sizeof path, "/proc/%d/statm", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return 0;
        int n = fscanf(f, "%lu %lu", &size, &resident);
        fclose(f);
        return n == 2 ? (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE) : 0;
}

/* --pid-per-vm: each VM's socket is listened on by a process of its own (what SO_PEERCRED
 * gives a client: not the fake, and not another VM's), whose resident set rises by
 * --burst-touch during that VM's bursts and falls after; the holders go with the fake. */
static void test_pid_per_vm(void **state) {
        const char *build = getenv("PPN_BUILD_ROOT");
        char exe[512], dir[] = "/tmp/ppn-fakeqemu-pids.XXXXXX", line[64], path[128];
        snprintf(exe, sizeof exe, "%s/tests/fake-qemu", build ? build : "build");
        assert_non_null(mkdtemp(dir));
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t fake = fork();
        assert_true(fake >= 0);
        if (fake == 0) {
                dup2(p[1], 1);
                close(p[0]);
                execl(exe, exe, "--dir", dir, "--count", "2", "--max", "2G", "--pid-per-vm", "--burst-every", "1",
                      "--burst-len", "1", "--burst-cycle", "2", "--burst-touch", "48M", (char *) NULL);
                _exit(127);
        }
        close(p[1]);
        FILE *out = fdopen(p[0], "r");
        assert_non_null(fgets(line, sizeof line, out));
        assert_string_equal(line, "ready 2\n");
        pid_t pids[2];
        struct qmp *qs[2];
        for (unsigned i = 0; i < 2; i++) {
                struct qmp_error e = {};
                snprintf(path, sizeof path, "%s/vm%04u.sock", dir, i);
                qs[i] = NULL;
                assert_int_equal(qmp_connect_sync(path, TIMEOUT, &qs[i], &e), 0);
                assert_int_equal(qmp_peer_pid(qs[i], &pids[i]), 0);
                assert_true(pids[i] > 0 && pids[i] != fake);
        }
        assert_true(pids[0] != pids[1]);
        /* Two cycles of 2 s, sampled every 50 ms: each holder's RSS rises by the touch and falls. */
        uint64_t lo[2] = { UINT64_MAX, UINT64_MAX }, hi[2] = { 0, 0 };
        for (unsigned k = 0; k < 80; k++) {
                for (unsigned i = 0; i < 2; i++) {
                        uint64_t r = statm_rss(pids[i]);
                        assert_true(r > 0);
                        lo[i] = r < lo[i] ? r : lo[i];
                        hi[i] = r > hi[i] ? r : hi[i];
                }
                usleep(50000);
        }
        for (unsigned i = 0; i < 2; i++) {
                if (hi[i] - lo[i] < 40 * MIB)
                        fail_msg("holder %u: RSS %" PRIu64 "..%" PRIu64 " KiB, no 48 MiB burst", i, lo[i] / 1024, hi[i] / 1024);
                qmp_free(qs[i]);
        }
        assert_int_equal(kill(fake, SIGTERM), 0);
        assert_int_equal(waitpid(fake, NULL, 0), fake);
        fclose(out);
        /* Gone, or a zombie with its memory freed until whoever inherited it reaps it. */
        for (unsigned i = 0; i < 2; i++) {
                uint64_t t0 = now_usec();
                while (statm_rss(pids[i]) > 0 && now_usec() - t0 < 2000000)
                        usleep(20000);
                assert_int_equal(statm_rss(pids[i]), 0);
        }
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

/* Last: SIGTERM removes every socket and reports the commands served. */
static void test_sigterm_cleans_up(void **state) {
        char path[128], line[1024];
        struct stat st;
        assert_int_equal(kill(F.pid, SIGTERM), 0);
        assert_non_null(fgets(line, sizeof line, F.out));
        assert_non_null(strstr(line, "\"query-balloon\":"));
        assert_int_equal(waitpid(F.pid, NULL, 0), F.pid);
        F.pid = 0;
        for (unsigned i = 0; i < 3; i++) {
                sock_path(i, path, sizeof path);
                assert_int_equal(stat(path, &st), -1);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_balloon_query_and_set),
                cmocka_unit_test(test_zero_and_unknown_refused),
                cmocka_unit_test(test_stats_unknown_until_enabled),
                cmocka_unit_test(test_qom_list_names_the_balloon),
                cmocka_unit_test(test_greeting_is_recorded),
                cmocka_unit_test(test_no_balloon),
                cmocka_unit_test(test_misbehaving_monitors),
                cmocka_unit_test(test_meminfo_follows_balloons),
                cmocka_unit_test(test_pid_per_vm),
                cmocka_unit_test(test_sigterm_cleans_up),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
