/* SPDX-License-Identifier: Apache-2.0 */
/* oomguard: lowering the daemon's oom_score_adj, on files and on the real /proc/self. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oomguard.h"

static char path[64];

static void write_file(const char *text) {
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static void assert_file(const char *text) {
        char buf[32] = "";
        FILE *f = fopen(path, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        assert_string_equal(buf, text);
}

static int setup(void **state) {
        int fd;
        strcpy(path, "/tmp/test-oomguard.XXXXXX");
        fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        return 0;
}

static int teardown(void **state) {
        unlink(path);
        return 0;
}

static void test_lowers(void **state) {
        struct ppn_error e = {};
        int v = 1;
        write_file("0\n");
        assert_int_equal(oomguard_apply(path, OOMGUARD_SCORE_ADJ, &v, &e), 0);
        assert_int_equal(v, -900);
        assert_file("-900\n");
}

static void test_keeps_lower(void **state) {
        int v = 1;
        write_file("-1000\n");
        assert_int_equal(oomguard_apply(path, OOMGUARD_SCORE_ADJ, &v, NULL), 0);
        assert_int_equal(v, -1000);
        assert_file("-1000\n");
}

static void test_bad_input(void **state) {
        struct ppn_error e = {};
        static const char *const bad[] = { "", "x\n", "2000\n", "-5000\n", "12abc\n" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_file(bad[i]);
                assert_int_equal(oomguard_apply(path, -900, NULL, &e), -EBADMSG);
                assert_non_null(strstr(e.msg, path));
        }
        assert_int_equal(oomguard_apply(path, -1001, NULL, &e), -EINVAL);
        assert_int_equal(oomguard_apply("/nonexistent/oom_score_adj", -900, NULL, &e), -ENOENT);
        assert_non_null(strstr(e.msg, "/nonexistent/oom_score_adj"));
}

/* CAP_SYS_RESOURCE (24) in the effective set: lowering is possible. Some containers drop it
 * even for root; then root gets the same refusal as an unprivileged user. */
static bool can_lower(void) {
        char line[128];
        unsigned long long eff = 0;
        FILE *f = fopen("/proc/self/status", "re");

        assert_non_null(f);
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "CapEff: %llx", &eff) == 1)
                        break;
        fclose(f);
        return eff & (1ull << 24);
}

/* Removes CAP_SYS_RESOURCE from this process's effective set, as a container or a unit's
 * bounding set leaves root. */
static int drop_sys_resource(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};

        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        d[CAP_TO_INDEX(CAP_SYS_RESOURCE)].effective &= ~CAP_TO_MASK(CAP_SYS_RESOURCE);
        return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

/* The real file, in a child (the change is for life): with CAP_SYS_RESOURCE it is lowered;
 * without it (an unprivileged user, or a container without the capability) the kernel refuses
 * and the words say why. */
static int in_child(uid_t uid, bool privileged, bool drop) {
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
                struct ppn_error e = {};
                int v = 0, r;
                char buf[32] = "";
                FILE *f;

                /* Dumpable again after setuid(), as a daemon started as that user is: its
                 * /proc/self files are its own. */
                if (uid && (setuid(uid) < 0 || prctl(PR_SET_DUMPABLE, 1) < 0))
                        _exit(10);
                if (drop && drop_sys_resource() < 0)
                        _exit(14);
                r = oomguard_apply("/proc/self/oom_score_adj", OOMGUARD_SCORE_ADJ, &v, &e);
                /* The words say what this process is: root without the capability was once told
                 * it "needs root or CAP_SYS_RESOURCE". */
                if (!privileged)
                        _exit(r == -EACCES && strstr(e.msg, uid ? "ppnd is not root and lacks CAP_SYS_RESOURCE"
                                                                : "runs as root, but CAP_SYS_RESOURCE is not in its "
                                                                  "effective capabilities") ? 0 : 11);
                f = fopen("/proc/self/oom_score_adj", "re");
                if (r < 0 || !f || !fgets(buf, sizeof(buf), f))
                        _exit(12);
                _exit(strcmp(buf, "-900\n") == 0 && v == -900 ? 0 : 13);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

static void test_proc_root(void **state) {
        if (geteuid() != 0)
                skip();
        if (!can_lower())
                print_message("# no CAP_SYS_RESOURCE here (container): checking the refusal\n");
        assert_int_equal(in_child(0, can_lower(), false), 0);
}

/* Root with the capability taken away (whatever this host allows): refused, and told so. */
static void test_proc_root_without_cap(void **state) {
        if (geteuid() != 0)
                skip();
        assert_int_equal(in_child(0, false, true), 0);
}

static void test_proc_unprivileged(void **state) {
        if (geteuid() != 0)
                skip();
        assert_int_equal(in_child(65534, false, false), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_lowers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_keeps_lower, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
                cmocka_unit_test(test_proc_root),
                cmocka_unit_test(test_proc_root_without_cap),
                cmocka_unit_test(test_proc_unprivileged),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
