/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "archive.h"
#include "vm.h"

static const struct vm_disk disks[] = {
        { "/img/a,b.img", "qcow2" },
        { "/img/plain.img", NULL },
};

static struct vm_spec base_spec(void) {
        return (struct vm_spec) {
                .qemu = "qemu-system-x86_64", .name = "web", .uuid = "0b6f2c1e-1d2a-4a4e-9d0b-2f5f1d5e9a11",
                .accel = "tcg", .mem_bytes = 1024 * MIB, .vcpus = 2,
                .qmp_path = "/run/ppn/vm/web/qmp.sock", .ctl_path = "/run/ppn/vm/web/ctl.sock", .log_path = "/run/ppn/vm/web/console,1.log",
                .disks = disks, .n_disks = 2,
        };
}

static char *joined(const struct vm_spec *s) {
        char **argv = NULL;
        struct ppn_error err = {};
        if (vm_build_argv(s, &argv, &err) < 0)
                fail_msg("vm_build_argv: %s", err.msg);
        char *line = vm_argv_to_string(argv);
        strv_free(argv);
        return line;
}

static void test_build_full(void **state) {
        const char *extra[] = { "-kernel", "/g/vmlinuz", "-append", "console=ttyS0 panic=-1", NULL };
        struct vm_spec s = base_spec();
        s.extra = extra;
        s.paused = true;
        char *line = joined(&s);
        assert_string_equal(line,
                "qemu-system-x86_64 -name guest=web -uuid 0b6f2c1e-1d2a-4a4e-9d0b-2f5f1d5e9a11 -accel tcg "
                "-m 1024M -smp 2 -nodefaults -no-user-config -display none -S "
                "-chardev socket,id=ppn-qmp,path=/run/ppn/vm/web/qmp.sock,server=on,wait=off "
                "-mon chardev=ppn-qmp,mode=control "
                "-chardev socket,id=ppn-ctl,path=/run/ppn/vm/web/ctl.sock,server=on,wait=off "
                "-mon chardev=ppn-ctl,mode=control "
                "-chardev file,id=ppn-console,path=/run/ppn/vm/web/console,,1.log,append=on "
                "-serial chardev:ppn-console "
                "-device virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on "
                "-drive file=/img/a,,b.img,format=qcow2,if=virtio "
                "-drive file=/img/plain.img,format=raw,if=virtio "
                "-kernel /g/vmlinuz -append 'console=ttyS0 panic=-1'");
        free(line);
}

/* A virtio-mem region: -m BASE,maxmem,slots, the backend and the device beside the balloon. */
static void test_build_vmem(void **state) {
        struct vm_spec s = base_spec();
        struct ppn_error err = {};
        char **argv = NULL;
        s.mem_bytes = 512 * MIB;
        s.vmem_bytes = 3584 * MIB;
        s.vmem_requested_bytes = 512 * MIB;
        char *line = joined(&s);
        assert_non_null(strstr(line, " -m 512M,maxmem=4096M,slots=1 -smp 2 "));
        assert_non_null(strstr(line, "-device virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on "
                                     "-object memory-backend-ram,id=ppn-vmem0-mem,size=3584M "
                                     "-device virtio-mem-pci,id=ppn-vmem0,memdev=ppn-vmem0-mem,requested-size=512M "));
        free(line);
        s.vmem_requested_bytes = 4096 * MIB;   /* more than the region */
        assert_int_equal(vm_build_argv(&s, &argv, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "not whole 2 MiB blocks, or less than requested"));
        s.vmem_requested_bytes = 0;
        s.vmem_bytes = 3 * MIB;                /* not whole blocks */
        assert_int_equal(vm_build_argv(&s, &argv, &err), -EINVAL);
        assert_null(argv);
}

static void test_build_balloon_settings(void **state) {
        struct vm_spec s = base_spec();
        s.no_deflate_on_oom = true;
        char *line = joined(&s);
        assert_non_null(strstr(line, "deflate-on-oom=off,free-page-reporting=on"));
        free(line);
        s.no_deflate_on_oom = false;
        s.no_free_page_reporting = true;
        line = joined(&s);
        assert_non_null(strstr(line, "deflate-on-oom=on,free-page-reporting=off"));
        free(line);
        s.no_balloon = true;
        s.paused = false;
        s.uuid = NULL;
        s.accel = NULL;          /* the default: KVM, as on a production host */
        s.vcpus = 0;
        line = joined(&s);
        assert_null(strstr(line, "balloon"));
        assert_null(strstr(line, " -S"));
        assert_null(strstr(line, "-uuid"));
        assert_non_null(strstr(line, "-accel kvm -m 1024M -smp 1 "));
        free(line);
}

/* Extra options: each row is one extra vector; want NULL = accepted, else words of the refusal. */
static void test_build_extra_table(void **state) {
        static const struct {
                const char *extra[4];
                const char *refusal;
        } cases[] = {
                { { "-kernel", "/k", NULL }, NULL },
                { { "-device", "virtio-rng-pci", NULL }, NULL },
                { { "-machine", "q35", NULL }, NULL },
                { { "-append", "console=ttyS0 panic=-1", NULL }, NULL },
                { { "-m", "2G", NULL }, "'-m' is refused: memory is the ledger's max" },
                { { "--m", "2G", NULL }, "'--m' is refused" },
                { { "-smp", "4", NULL }, "vCPUs are the ledger's" },
                { { "-qmp", "unix:/x,server", NULL }, "QMP monitor" },
                { { "-monitor", "stdio", NULL }, "QMP monitor" },
                { { "-S", NULL }, "decides when the vCPUs run" },
                { { "-daemonize", NULL }, "must see its errors" },
                { { "-enable-kvm", NULL }, "node setting" },
                { { "-accel", "kvm", NULL }, "node setting" },
                { { "-machine", "pc,accel=kvm", NULL }, "drop accel=" },
                { { "-uuid", "x", NULL }, "identity" },
                { { "-serial", "stdio", NULL }, "log file" },
                { { "-device", "virtio-balloon-pci,id=b2", NULL }, "balloon device is added by ppn-pool" },
                { { "-chardev", "socket,id=ppn-qmp,path=/x", NULL }, "reserved" },
                { { "-kernel", "", NULL }, "empty or has control characters" },
                { { "-append", "a\nb", NULL }, "empty or has control characters" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vm_spec s = base_spec();
                struct ppn_error err = {};
                char **argv = NULL;
                s.extra = cases[i].extra;
                int r = vm_build_argv(&s, &argv, &err);
                if (!cases[i].refusal && r != 0)
                        fail_msg("case %zu refused: %s", i, err.msg);
                if (cases[i].refusal && (r != -EINVAL || !strstr(err.msg, cases[i].refusal)))
                        fail_msg("case %zu: r=%d '%s', want '%s'", i, r, err.msg, cases[i].refusal);
                if (!cases[i].refusal)
                        assert_string_equal(argv[0], "qemu-system-x86_64");
                strv_free(argv);
        }
}

static void test_build_bad_spec(void **state) {
        static const struct vm_disk bad_format[] = { { "/a.img", "vmdk" } };
        static const struct vm_disk bad_path[] = { { "", NULL } };
        struct {
                struct vm_spec s;
                const char *words;
        } cases[] = {
                { base_spec(), "whole number of MiB" },
                { base_spec(), "QMP socket path" },
                { base_spec(), "QMP socket path" },
                { base_spec(), "format 'vmdk'" },
                { base_spec(), "path empty" },
                { base_spec(), "accelerator invalid" },
        };
        cases[0].s.mem_bytes = MIB + 1;
        cases[1].s.qmp_path = "relative.sock";
        cases[2].s.qmp_path = "/a/very/long/path/that/does/not/fit/into/sun_path/because/it/is/longer/than/"
                              "one/hundred/and/eight/bytes.sock";
        cases[3].s.disks = bad_format;
        cases[3].s.n_disks = 1;
        cases[4].s.disks = bad_path;
        cases[4].s.n_disks = 1;
        cases[5].s.accel = "tcg,thread=multi";
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ppn_error err = {};
                char **argv = NULL;
                int r = vm_build_argv(&cases[i].s, &argv, &err);
                if (r != -EINVAL || !strstr(err.msg, cases[i].words))
                        fail_msg("case %zu: r=%d '%s', want '%s'", i, r, err.msg, cases[i].words);
        }
}

static void test_escape_and_quote(void **state) {
        char *e = vm_qemu_escape("a,b,,c");
        assert_string_equal(e, "a,,b,,,,c");
        free(e);
        char *argv[] = { (char *) "q", (char *) "it's", (char *) "", (char *) "a b", (char *) "x=1,y", NULL };
        char *s = vm_argv_to_string(argv);
        assert_string_equal(s, "q 'it'\\''s' '' 'a b' x=1,y");
        free(s);
        char *p = vm_runtime_path("/tmp/rt", "web", VM_QMP_SUFFIX);
        assert_string_equal(p, "/tmp/rt/web.qmp");
        free(p);
}

struct env {
        char *dir, *qmp, *ctl, *log;
};

static int setup_env(void **state) {
        struct env *e = calloc(1, sizeof(*e));
        assert_true(asprintf(&e->dir, "/tmp/test-vm-XXXXXX") > 0);
        assert_non_null(mkdtemp(e->dir));
        assert_true(asprintf(&e->qmp, "%s/rt/vm/t/qmp.sock", e->dir) > 0);
        assert_true(asprintf(&e->log, "%s/rt/vm/t/console.log", e->dir) > 0);
        assert_true(asprintf(&e->ctl, "%s/rt/vm/t/ctl.sock", e->dir) > 0);
        *state = e;
        return 0;
}

static int teardown_env(void **state) {
        struct env *e = *state;
        char *cmd;
        assert_true(asprintf(&cmd, "rm -rf '%s'", e->dir) > 0);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        free(e->dir);
        free(e->qmp);
        free(e->log);
        free(e->ctl);
        free(e);
        return 0;
}

static struct vm_spec env_spec(const struct env *e, const char *qemu, const char *const *extra) {
        return (struct vm_spec) { .qemu = qemu, .name = "t", .mem_bytes = 64 * MIB, .qmp_path = e->qmp,
                                  .ctl_path = e->ctl, .log_path = e->log, .extra = extra, .paused = true,
                                  .accel = getenv("PPN_ACCEL") ? getenv("PPN_ACCEL") : "tcg" };
}

static char **env_argv(const struct vm_spec *s) {
        char **argv = NULL;
        struct ppn_error err = {};
        if (vm_build_argv(s, &argv, &err) < 0)
                fail_msg("%s", err.msg);
        return argv;
}

/* A QEMU that refuses its command line: its own words reach the caller. */
static void test_launch_qemu_error(void **state) {
        struct env *e = *state;
        const char *extra[] = { "-device", "no-such-device-xyz", NULL };
        struct vm_spec s = env_spec(e, "qemu-system-x86_64", extra);
        char **argv = env_argv(&s);
        struct ppn_error err = {};
        pid_t pid;
        int r = vm_launch(&s, argv, 0, &pid, &err);
        assert_int_equal(r, -ECHILD);
        if (!strstr(err.msg, "no-such-device-xyz") || !strstr(err.msg, "exited during start"))
                fail_msg("message: %s", err.msg);
        strv_free(argv);
}

static void test_launch_exec_error(void **state) {
        struct env *e = *state;
        struct vm_spec s = env_spec(e, "/nonexistent/qemu", NULL);
        char **argv = env_argv(&s);
        struct ppn_error err = {};
        pid_t pid;
        assert_int_equal(vm_launch(&s, argv, 0, &pid, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "cannot execute /nonexistent/qemu"));
        strv_free(argv);
}

/* A paused QEMU (no guest needed): launched detached, probed, refused twice, stopped. */
static void test_launch_paused(void **state) {
        struct env *e = *state;
        struct vm_spec s = env_spec(e, "qemu-system-x86_64", NULL);
        char **argv = env_argv(&s);
        struct ppn_error err = {};
        pid_t pid = 0, pid2;
        assert_int_equal(vm_qmp_alive(e->qmp), 0);
        int r = vm_launch(&s, argv, 0, &pid, &err);
        if (r < 0)
                fail_msg("vm_launch: %s", err.msg);
        assert_int_equal(vm_qmp_alive(e->qmp), 1);
        assert_int_equal(vm_qmp_alive(e->ctl), 1);
        assert_int_equal(getsid(pid), pid);   /* own session: outlives the caller's terminal */
        assert_int_equal(vm_launch(&s, argv, 0, &pid2, &err), -EBUSY);
        assert_non_null(strstr(err.msg, "the VM runs"));
        assert_int_equal(vm_wait_exit(pid, 100000), 0);
        kill(pid, SIGTERM);
        assert_int_equal(vm_wait_exit(pid, 10 * 1000000), 1);
        waitpid(pid, NULL, 0);
        assert_int_equal(vm_qmp_alive(e->qmp), 0);
        strv_free(argv);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_build_full),
                cmocka_unit_test(test_build_vmem),
                cmocka_unit_test(test_build_balloon_settings),
                cmocka_unit_test(test_build_extra_table),
                cmocka_unit_test(test_build_bad_spec),
                cmocka_unit_test(test_escape_and_quote),
                cmocka_unit_test_setup_teardown(test_launch_qemu_error, setup_env, teardown_env),
                cmocka_unit_test_setup_teardown(test_launch_exec_error, setup_env, teardown_env),
                cmocka_unit_test_setup_teardown(test_launch_paused, setup_env, teardown_env),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
