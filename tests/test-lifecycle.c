/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A VM's life through the ppnctl binary, with real guests and two "nodes" on this machine
 * (separate ledgers, runtime dirs, cgroup parents, image dirs and pool sizes):
 *   start on A paused: QEMU already in its cgroup with the ledger weight before a vCPU ran;
 *   the guest writes a marker (with its uuid) to its virtio disk; export refused while it runs;
 *   stop with a guest that ignores ACPI powerdown: quit after the timeout, no QEMU left, group
 *   gone, entry kept; a QEMU that fails to start: its words reach the user;
 *   archives refused on B: one flipped byte (named), a pool too small (shortfall), a name clash;
 *   move A -> archive, import on B, start on B: same uuid (also the guest's SMBIOS uuid),
 *   marker intact, B's pool holds the minimum, A's released it.
 * The test guest runs no power-button handler unless told to: on A it ignores powerdown
 * (stop ends with quit), on B the test starts one (stop ends with a clean powerdown).
 * QEMU started by ppnctl is reparented to this process (PR_SET_CHILD_SUBREAPER), and killed
 * at exit whatever happens.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "archive.h"
#include "qmp.h"
#include "vm.h"
#include "testvm.h"
#include "util.h"

#define WEIGHT 300
#define MARK_OFFSET_SECTORS 2048

struct node {
        const char *id;
        char *dir, *ledger, *run, *images, *cgparent, *sock, *conf, *log;
        pid_t ppnd;
};

static char *top, *disk, *marker;
static struct node A = { .id = "a" }, B = { .id = "b" };
static pid_t pids[8];
static void daemon_stop(struct node *n);
static size_t n_pids;
static char uuid[64];

/* SIGKILL and reap (we are their subreaper), so their cgroups can be removed right after. */
static void kill_all(void) {
        for (size_t i = 0; i < n_pids; i++)
                if (pids[i] > 0 && kill(pids[i], SIGKILL) == 0)
                        waitpid(pids[i], NULL, 0);
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
}

static char *xprintf(const char *fmt, ...) _printf_(1, 2);
static char *xprintf(const char *fmt, ...) {
        char *s;
        va_list ap;
        va_start(ap, fmt);
        assert_true(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return s;
}

static void node_init(struct node *n) {
        n->dir = xprintf("%s/%s", top, n->id);
        n->ledger = xprintf("%s/ledger.db", n->dir);
        n->run = xprintf("%s/run", n->dir);
        n->images = xprintf("%s/images", n->dir);
        n->cgparent = xprintf("ppn-test-lifecycle-%s-%d", n->id, (int) getpid());
        n->sock = xprintf("%s/ppnd.sock", n->dir);
        n->conf = xprintf("%s/ppnd.conf", n->dir);
        n->log = xprintf("%s/ppnd.log", n->dir);
        assert_int_equal(mkdir(n->dir, 0755), 0);
}

/*
 * Runs ppnctl with node n's settings; returns its exit status and (if ret_out) its stdout +
 * stderr. The output is printed as TAP comments.
 */
static int ctl(const struct node *n, char **ret_out, const char *arg0, ...) {
        const char *argv[32] = { NULL };
        char path[] = "/tmp/ppn-ctl-out-XXXXXX";
        size_t k = 0;
        va_list ap;
        /* PPNCTL_STATUS: another build's ppnctl for "status" (trying the test against a daemon
         * branch); normally unset. */
        argv[k++] = strcmp(arg0, "status") == 0 && getenv("PPNCTL_STATUS") ? getenv("PPNCTL_STATUS") : getenv("PPNCTL");
        argv[k++] = arg0;
        va_start(ap, arg0);
        while (k < 31 && (argv[k] = va_arg(ap, const char *)))
                k++;
        va_end(ap);
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        unlink(path);
        pid_t pid = fork();
        if (pid == 0) {
                setenv("PPN_LEDGER", n->ledger, 1);
                setenv("PPN_RUNTIME_DIR", n->run, 1);
                setenv("PPN_LOG_DIR", n->run, 1);
                setenv("PPN_IMAGE_DIR", n->images, 1);
                setenv("PPN_CGROUP_PARENT", n->cgparent, 1);
                setenv("PPN_SOCKET", n->sock, 1);
                dup2(fd, 1);
                dup2(fd, 2);
                execv(argv[0], (char **) argv);
                _exit(127);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        off_t len = lseek(fd, 0, SEEK_END);
        char *out = calloc(1, (size_t) len + 1);
        assert_int_equal(pread(fd, out, (size_t) len, 0), len);
        close(fd);
        printf("# [%s] ppnctl %s%s%s -> %d\n", n->id, arg0, argv[2] ? " " : "", argv[2] ? argv[2] : "",
               WEXITSTATUS(status));
        for (char *line = out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
                nl = strchr(line, '\n');
                printf("#   %.*s\n", nl ? (int) (nl - line) : (int) strlen(line), line);
        }
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static pid_t started_pid(const char *out) {
        const char *p = strstr(out, "(pid ");
        assert_non_null(p);
        pid_t pid = (pid_t) atoi(p + 5);
        assert_true(pid > 0);
        pids[n_pids++] = pid;
        return pid;
}

/* The guest's command channel: TOP/guest-NAME/ctl.sock, the same path on both nodes (an
 * import drops the archive's QEMU options; the test gives them again on the destination). */
static char *guest_dir(const char *name) { return xprintf("%s/guest-%s", top, name); }

static struct testvm *attach(pid_t pid) {
        _cleanup_free_ char *dir = guest_dir("g"), *ready = xprintf("%s/ready", dir);
        FILE *f = fopen(ready, "we");
        struct testvm *vm = NULL;
        assert_non_null(f);
        fprintf(f, "pid %d\n", (int) pid);
        fclose(f);
        assert_int_equal(testvm_attach(dir, &vm), 0);
        _cleanup_free_ char *out = NULL;
        assert_int_equal(testvm_exec(vm, "echo ready", TESTVM_BOOT_TIMEOUT_MS, &out), 0);
        assert_string_equal(out, "ready\n");
        return vm;
}

static int group_setup(void **state) {
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        atexit(kill_all);
        top = xprintf("/tmp/ppn-test-lifecycle-XXXXXX");
        if (!mkdtemp(top))
                return -1;
        disk = xprintf("%s/g.img", top);
        int fd = open(disk, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || ftruncate(fd, 64 * MIB) < 0)
                return -1;
        close(fd);
        node_init(&A);
        node_init(&B);
        return 0;
}

static void node_cleanup(struct node *n) {
        _cleanup_free_ char *g = xprintf("/sys/fs/cgroup/cpu/%s/vm-g", n->cgparent);
        _cleanup_free_ char *p = xprintf("/sys/fs/cgroup/cpu/%s", n->cgparent);
        rmdir(g);
        rmdir(p);
}

static int group_teardown(void **state) {
        daemon_stop(&A);
        daemon_stop(&B);
        kill_all();
        node_cleanup(&A);
        node_cleanup(&B);
        _cleanup_free_ char *cmd = xprintf("rm -rf '%s'", top);
        return system(cmd) == 0 ? 0 : -1;
}

/* Adds VM NAME on node n: the test guest's kernel, its command channel in TOP/guest-NAME. */
static void add_vm(const struct node *n, const char *name, const char *extra_device) {
        const char *guest = getenv("PPN_GUEST_DIR");
        _cleanup_free_ char *k = xprintf("--qemu-arg=%s/vmlinuz", guest), *i = xprintf("--qemu-arg=%s/initramfs.gz", guest);
        _cleanup_free_ char *gdir = guest_dir(name);
        _cleanup_free_ char *chardev = xprintf("--qemu-arg=socket,id=ctl,path=%s/ctl.sock,server=on,wait=off", gdir);
        mkdir(gdir, 0755);
        _cleanup_free_ char *d = xprintf("--disk=%s", disk), *w = xprintf("--cpu-weight=%d", WEIGHT);
        assert_int_equal(ctl(n, NULL, "vm", "add", name, "--min", "256M", "--max", "512M", w, d, "--qemu-arg=-kernel", k,
                             "--qemu-arg=-initrd", i, "--qemu-arg=-append", "--qemu-arg=console=ttyS0 panic=-1",
                             "--qemu-arg=-no-reboot", "--qemu-arg=-device", "--qemu-arg=virtio-serial-pci",
                             "--qemu-arg=-chardev", chardev, "--qemu-arg=-device",
                             extra_device ? extra_device : "--qemu-arg=virtserialport,chardev=ctl,name=ctl", NULL), 0);
}

/* Gives VM NAME on node n the test guest's QEMU options again with 'vm set' (after an import,
 * which drops them). */
static void set_guest_args(const struct node *n, const char *name) {
        const char *guest = getenv("PPN_GUEST_DIR");
        _cleanup_free_ char *k = xprintf("qemu-arg=%s/vmlinuz", guest), *i = xprintf("qemu-arg=%s/initramfs.gz", guest);
        _cleanup_free_ char *gdir = guest_dir(name);
        _cleanup_free_ char *chardev = xprintf("qemu-arg=socket,id=ctl,path=%s/ctl.sock,server=on,wait=off", gdir);
        assert_int_equal(ctl(n, NULL, "vm", "set", name, "qemu-arg=-kernel", k, "qemu-arg=-initrd", i,
                             "qemu-arg=-append", "qemu-arg=console=ttyS0 panic=-1", "qemu-arg=-no-reboot",
                             "qemu-arg=-device", "qemu-arg=virtio-serial-pci", "qemu-arg=-chardev", chardev,
                             "qemu-arg=-device", "qemu-arg=virtserialport,chardev=ctl,name=ctl", NULL), 0);
}

static bool cgroup_has(pid_t pid, const char *group) {
        _cleanup_free_ char *path = xprintf("/proc/%d/cgroup", (int) pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[512];
        while (f && fgets(line, sizeof(line), f))
                if (strstr(line, group))
                        return true;
        return false;
}

static char *read_text(const char *path) {
        char buf[256] = {};
        int fd = open(path, O_RDONLY);
        if (fd < 0)
                return NULL;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        return n < 0 ? NULL : strdup(buf);
}

static json_object *qmp_ask_vm(const struct node *n, const char *name, const char *cmd) {
        _cleanup_free_ char *sock = xprintf("%s/%s" VM_CTL_SUFFIX, n->run, name);
        struct qmp *q = NULL;
        struct qmp_error qe = {};
        json_object *reply = NULL;
        if (qmp_connect_sync(sock, 0, &q, &qe) < 0 || qmp_call_sync(q, cmd, NULL, 0, &reply, &qe) < 0)
                fail_msg("%s on %s: %s", cmd, sock, qe.error.msg);
        qmp_free(q);
        return reply;
}

static json_object *qmp_ask(const struct node *n, const char *cmd) {
        return qmp_ask_vm(n, "g", cmd);
}

/* ---- the node's daemon ---- */

static void daemon_start(struct node *n) {
        FILE *f = fopen(n->conf, "we");
        assert_non_null(f);
        fprintf(f, "[daemon]\nlog-level = info\nruntime-dir = %s\n[ledger]\npath = %s\n[control]\nsocket = %s\n"
                "[cgroup]\nparent = %s\n[controller]\nstats-interval = 1\ntick = 500ms\n",
                n->run, n->ledger, n->sock, n->cgparent);
        fclose(f);
        mkdir(n->run, 0755);
        pid_t pid = fork();
        if (pid == 0) {
                int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                dup2(fd, 1);
                dup2(fd, 2);
                execl(getenv("PPND"), "ppnd", "--config", n->conf, (char *) NULL);
                _exit(127);
        }
        n->ppnd = pid;
        for (int i = 0; i < 100; i++) {
                if (ctl(n, NULL, "status", NULL) == 0)
                        return;
                usleep(100000);
        }
        fail_msg("ppnd of node %s did not answer on %s (log %s)", n->id, n->sock, n->log);
}

static void daemon_stop(struct node *n) {
        if (n->ppnd <= 0)
                return;
        kill(n->ppnd, SIGTERM);
        waitpid(n->ppnd, NULL, 0);
        n->ppnd = 0;
}

static json_object *status(const struct node *n) {
        _cleanup_free_ char *out = NULL;
        if (ctl(n, &out, "status", "--json", NULL) != 0)
                return NULL;
        return json_tokener_parse(out);
}

static json_object *status_vm(json_object *st, const char *name) {
        json_object *vms, *v, *nm;
        if (!st || !json_object_object_get_ex(st, "vms", &vms))
                return NULL;
        for (size_t i = 0; i < json_object_array_length(vms); i++)
                if ((v = json_object_array_get_idx(vms, i)) && json_object_object_get_ex(v, "name", &nm) &&
                    strcmp(json_object_get_string(nm), name) == 0)
                        return v;
        return NULL;
}

static int64_t get_int(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

/* Waits until the node's daemon runs VM name with QEMU pid; returns the ms it took. */
static long wait_adopted(const struct node *n, const char *name, pid_t pid) {
        uint64_t t0 = now_usec();
        while (now_usec() - t0 < 30 * 1000000ULL) {
                json_object *st = status(n), *v = status_vm(st, name), *state;
                bool ok = v && json_object_object_get_ex(v, "state", &state) &&
                          strcmp(json_object_get_string(state), "running") == 0 && get_int(v, "pid") == pid;
                json_object_put(st);
                if (ok)
                        return (long) ((now_usec() - t0) / 1000);
                usleep(200000);
        }
        fail_msg("ppnd of node %s did not adopt %s (pid %d); log %s", n->id, name, (int) pid, n->log);
        return -1;
}

static pid_t pid_a;
static struct testvm *guest;

/* Acceptance 1: paused QEMU is in its group with its weight before the guest ran. */
static void test_start_paused_in_cgroup(void **state) {
        _cleanup_free_ char *out = NULL, *group = xprintf("cpu:/%s/vm-g", A.cgparent);
        assert_int_equal(ctl(&A, NULL, "node", "set", "physical=4G", "reserve=512M", NULL), 0);
        add_vm(&A, "g", NULL);
        daemon_start(&A);
        assert_int_equal(ctl(&A, &out, "vm", "show", "g", "--json", NULL), 0);
        const char *u = strstr(out, "\"uuid\"");
        assert_non_null(u);
        assert_int_equal(sscanf(u, "\"uuid\": \"%36[0-9a-f-]\"", uuid), 1);
        free(out);
        assert_int_equal(ctl(&A, &out, "start", "g", "--paused", NULL), 0);
        pid_a = started_pid(out);
        assert_true(cgroup_has(pid_a, group));
        _cleanup_free_ char *shares_path = xprintf("/sys/fs/cgroup/cpu/%s/vm-g/cpu.shares", A.cgparent);
        _cleanup_free_ char *shares = read_text(shares_path);
        assert_non_null(shares);
        assert_int_equal(atoi(shares), WEIGHT * 1024 / 100);   /* v1 host: weight 300 = 3072 shares */
        json_object *st = qmp_ask(&A, "query-status"), *v;
        assert_true(json_object_object_get_ex(st, "status", &v));
        assert_string_equal(json_object_get_string(v), "prelaunch");   /* no vCPU has run yet */
        json_object_put(st);
        json_object *bal = qmp_ask(&A, "query-balloon");   /* fails if there were no balloon device */
        assert_true(json_object_object_get_ex(bal, "actual", &v));
        assert_int_equal(json_object_get_int64(v), 512 * MIB);
        json_object_put(bal);
        json_object_put(qmp_ask(&A, "cont"));
        guest = attach(pid_a);
        printf("# ppnd adopted g %ld ms after the guest answered\n", wait_adopted(&A, "g", pid_a));
}

/* The guest writes a marker to its disk; export refuses a running VM. */
static void test_marker_and_export_refused(void **state) {
        _cleanup_free_ char *cmd = xprintf("echo %s | dd of=/dev/vda bs=512 seek=%d conv=fsync 2>/dev/null && "
                                           "cat /sys/class/dmi/id/product_uuid", marker, MARK_OFFSET_SECTORS);
        _cleanup_free_ char *out = NULL, *out2 = NULL, *dir = xprintf("%s/early", top);
        assert_non_null(guest);
        assert_int_equal(testvm_exec(guest, cmd, 30000, &out), 0);
        printf("# guest SMBIOS uuid: %s", out);
        assert_non_null(strcasestr(out, uuid));
        assert_int_equal(ctl(&A, &out2, "export", "g", dir, NULL), 1);
        assert_non_null(strstr(out2, "g is running; stop it first"));
        free(out2);
        assert_int_equal(ctl(&A, &out2, "start", "g", NULL), 1);   /* twice: refused, the first untouched */
        assert_non_null(strstr(out2, "a QEMU already listens there: the VM runs"));
        free(out);
        out = NULL;
        assert_int_equal(testvm_exec(guest, "echo alive", 30000, &out), 0);
        assert_int_equal(access(dir, F_OK), -1);
}

/* Acceptance 4: the guest ignores powerdown; quit after the timeout, nothing left behind. */
static void test_stop_quits(void **state) {
        _cleanup_free_ char *out = NULL, *grp = xprintf("/sys/fs/cgroup/cpu/%s/vm-g", A.cgparent);
        guest = testvm_kill(guest);   /* attached: only disconnects */
        uint64_t t0 = now_usec();
        assert_int_equal(ctl(&A, &out, "stop", "g", "--timeout", "2", NULL), 0);
        uint64_t took = now_usec() - t0;
        printf("# stop took %.2f s\n", (double) took / 1e6);
        assert_non_null(strstr(out, "did not power down in time: quit"));
        assert_true(took >= 2000000);
        assert_int_equal(waitpid(pid_a, NULL, WNOHANG), pid_a);   /* exited (reaped here: subreaper) */
        assert_int_equal(access(grp, F_OK), -1);
        free(out);
        assert_int_equal(ctl(&A, &out, "vm", "show", "g", NULL), 0);   /* the entry stays */
        free(out);
        assert_int_equal(ctl(&A, &out, "stop", "g", NULL), 0);
        assert_non_null(strstr(out, "not running"));
}

/* A VM with a virtio-mem region: QEMU gets the base memory and a region of max − base, plugged at
 * start to what the minimum needs beyond base (paused: no guest needed to read QEMU's view). */
static void test_start_vmem(void **state) {
        static const struct { const char *min; uint64_t requested; } cases[] = {
                { "256M", 0 },           /* min within base: nothing plugged at start */
                { "320M", 64 * MIB },    /* min above base: the rest plugged at start */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *out = NULL;
                json_object *v, *d, *x;
                assert_int_equal(ctl(&A, NULL, "vm", "add", "vm1", "--min", cases[i].min, "--max", "1G", "--base", "256M",
                                     NULL), 0);
                assert_int_equal(ctl(&A, &out, "start", "vm1", "--paused", NULL), 0);
                (void) started_pid(out);
                json_object *sum = qmp_ask_vm(&A, "vm1", "query-memory-size-summary");
                assert_true(json_object_object_get_ex(sum, "base-memory", &v));
                assert_int_equal(json_object_get_int64(v), 256 * MIB);
                json_object_put(sum);
                json_object *devs = qmp_ask_vm(&A, "vm1", "query-memory-devices");
                assert_int_equal(json_object_array_length(devs), 1);
                assert_true(json_object_object_get_ex(json_object_array_get_idx(devs, 0), "data", &d));
                assert_true(json_object_object_get_ex(d, "id", &x));
                assert_string_equal(json_object_get_string(x), "ppn-vmem0");
                assert_true(json_object_object_get_ex(d, "max-size", &x));
                assert_int_equal(json_object_get_int64(x), 768 * MIB);
                assert_true(json_object_object_get_ex(d, "requested-size", &x));
                assert_int_equal(json_object_get_int64(x), cases[i].requested);
                json_object_put(devs);
                /* ppnd adopts the paused VM meanwhile (tick 500 ms): its first hold must not cancel
                 * the plug the guest has not onlined yet (requested above plugged). */
                for (int k = 0; k < 40; k++) {
                        devs = qmp_ask_vm(&A, "vm1", "query-memory-devices");
                        assert_true(json_object_object_get_ex(json_object_array_get_idx(devs, 0), "data", &d));
                        assert_true(json_object_object_get_ex(d, "requested-size", &x));
                        if ((uint64_t) json_object_get_int64(x) < cases[i].requested)
                                fail_msg("requested-size fell to %" PRId64 " (< %" PRIu64 ") %d ms after the start",
                                         json_object_get_int64(x), cases[i].requested, k * 50);
                        json_object_put(devs);
                        usleep(50000);
                }
                free(out);
                out = NULL;
                assert_int_equal(ctl(&A, &out, "stop", "vm1", "--timeout", "1", NULL), 0);
                free(out);
                out = NULL;
                assert_int_equal(ctl(&A, &out, "vm", "remove", "vm1", NULL), 0);
        }
}

/* A QEMU that fails to start: its own error text reaches the user; nothing keeps running. */
static void test_start_failure_words(void **state) {
        _cleanup_free_ char *out = NULL;
        add_vm(&A, "bad", "--qemu-arg=no-such-device-xyz");
        assert_int_equal(ctl(&A, &out, "start", "bad", NULL), 1);
        assert_non_null(strstr(out, "'no-such-device-xyz' is not a valid device model name"));
        free(out);
        assert_int_equal(ctl(&A, &out, "vm", "remove", "bad", NULL), 0);
}

/* A QEMU someone else started (paused: no guest needed for QMP and cgroup). */
static pid_t foreign_qemu(const char *name, bool balloon, uint64_t vmem_bytes, char **ret_qmp) {
        _cleanup_free_ char *dir = xprintf("%s/foreign-%s", top, name);
        char *qmp = xprintf("%s/qmp.sock", dir);
        _cleanup_free_ char *log = xprintf("%s/qemu.log", dir);
        /* Its operator gave ppnctl a monitor of its own (the daemon takes qmp.sock once the
         * ledger names it): RUNTIME/NAME.ppnctl.qmp, see docs/lifecycle.md. */
        _cleanup_free_ char *ctl_sock = xprintf("%s/%s" VM_CTL_SUFFIX, A.run, name);
        struct vm_spec s = { .name = name, .mem_bytes = 128 * MIB, .qmp_path = qmp, .ctl_path = ctl_sock, .log_path = log,
                             .no_balloon = !balloon, .paused = true, .accel = getenv("PPN_ACCEL"),
                             .vmem_bytes = vmem_bytes, .vmem_requested_bytes = vmem_bytes / 2 };
        char **argv = NULL;
        struct ppn_error err = {};
        pid_t pid;
        if (vm_build_argv(&s, &argv, &err) < 0 || vm_launch(&s, argv, 0, &pid, &err) < 0)
                fail_msg("%s", err.msg);
        strv_free(argv);
        pids[n_pids++] = pid;
        *ret_qmp = qmp;
        return pid;
}

/* adopt: a QEMU with a balloon and one without; both put in their group, qmp recorded. */
static void test_adopt(void **state) {
        static const struct { const char *name; bool balloon; uint64_t vmem; const char *words; } cases[] = {
                { "ad1", true, 0, "balloon device present\n" },
                { "ad2", false, 0, "no balloon device: its CPU weight applies, its memory is held fixed" },
                /* A virtio-mem device of someone else's QEMU is found (paused: nothing plugged yet). */
                { "ad3", true, 256 * MIB, "balloon device present; virtio-mem 'ppn-vmem0' (0 of 256M plugged): "
                                          "ppnd plugs and unplugs it" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *qmp = NULL, *out = NULL, *group = xprintf("cpu:/%s/vm-%s", A.cgparent, cases[i].name);
                pid_t pid = foreign_qemu(cases[i].name, cases[i].balloon, cases[i].vmem, &qmp);
                assert_int_equal(ctl(&A, NULL, "vm", "add", cases[i].name, "--min", "128M", "--max", "128M",
                                     "--cpu-weight", "50", NULL), 0);
                assert_int_equal(ctl(&A, &out, "adopt", cases[i].name, "--qmp", qmp, NULL), 0);
                assert_non_null(strstr(out, cases[i].words));
                assert_true(cgroup_has(pid, group));
                free(out);
                assert_int_equal(ctl(&A, &out, "vm", "show", cases[i].name, "--json", NULL), 0);
                assert_non_null(strstr(out, qmp));
                free(out);
                out = NULL;
                printf("# ppnd took %s over %ld ms after adopt\n", cases[i].name, wait_adopted(&A, cases[i].name, pid));
                /* ppnd on A now holds qmp.sock: stop goes through ppnctl's monitor. */
                assert_int_equal(ctl(&A, &out, "stop", cases[i].name, "--timeout", "1", NULL), 0);
                assert_non_null(strstr(out, "stopped"));
                assert_int_equal(waitpid(pid, NULL, WNOHANG), pid);
                free(out);
                assert_int_equal(ctl(&A, &out, "vm", "remove", cases[i].name, NULL), 0);
        }
        _cleanup_free_ char *out = NULL;
        assert_int_equal(ctl(&A, &out, "adopt", "g", "--qmp", "/nonexistent/qmp.sock", NULL), 1);
        assert_non_null(strstr(out, "/nonexistent/qmp.sock"));
}

static char *export_copy(const char *src_name, const char *dst_name) {
        char *dst = xprintf("%s/%s", top, dst_name);
        _cleanup_free_ char *cmd = xprintf("cp -a --sparse=always '%s/%s' '%s'", top, src_name, dst);
        assert_int_equal(system(cmd), 0);
        return dst;
}

static void assert_b_empty(void) {
        _cleanup_free_ char *out = NULL;
        assert_int_equal(ctl(&B, &out, "vm", "list", "--json", NULL), 0);
        assert_null(strstr(out, "\"g\""));
        _cleanup_free_ char *img = xprintf("%s/g", B.images);
        assert_int_equal(access(img, F_OK), -1);
}

/* move of a running VM: stopped first, exported and verified, then the entry removed. A paused
 * QEMU without a kernel stands for the guest (it cannot honour powerdown: quit). */
static void test_move_running(void **state) {
        _cleanup_free_ char *out = NULL, *dir = xprintf("%s/moved-m", top), *img = xprintf("%s/m.img", top);
        _cleanup_free_ char *d = xprintf("--disk=%s", img);
        int fd = open(img, O_WRONLY | O_CREAT | O_EXCL, 0644);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "data", 4, 0), 4);
        close(fd);
        assert_int_equal(ctl(&A, NULL, "vm", "add", "m", "--min", "128M", "--max", "128M", d, NULL), 0);
        assert_int_equal(ctl(&A, &out, "start", "m", "--paused", NULL), 0);
        pid_t pid = started_pid(out);
        free(out);
        /* An export that fails (the target is not empty) keeps the entry. */
        assert_int_equal(ctl(&A, &out, "move", "m", "--to", top, "--timeout", "1", NULL), 1);
        assert_non_null(strstr(out, "exists and is not empty"));
        assert_int_equal(waitpid(pid, NULL, WNOHANG), pid);
        free(out);
        assert_int_equal(ctl(&A, &out, "vm", "show", "m", NULL), 0);
        free(out);
        assert_int_equal(ctl(&A, &out, "move", "m", "--to", dir, NULL), 0);
        assert_non_null(strstr(out, "removed m from this node's ledger"));
        free(out);
        assert_int_equal(ctl(&A, &out, "vm", "show", "m", NULL), 1);
        struct archive_manifest m;
        assert_int_equal(archive_manifest_read(dir, &m, NULL), 0);
        assert_int_equal(archive_verify(dir, &m, NULL, NULL, NULL), 0);
        assert_string_equal(m.name, "m");
        archive_manifest_done(&m);
        assert_int_equal(access(img, F_OK), 0);   /* the source image stays */
}

/* On a terminal, export shows its progress (script(1) gives it one). */
static void test_export_progress_on_tty(void **state) {
        _cleanup_free_ char *dir = xprintf("%s/arch-tty", top), *log = xprintf("%s/tty.out", top);
        _cleanup_free_ char *cmd = xprintf("PPN_LEDGER='%s' script -qec \"'%s' export g '%s'\" /dev/null >'%s' 2>&1",
                                           A.ledger, getenv("PPNCTL"), dir, log);
        assert_int_equal(system(cmd), 0);
        _cleanup_free_ char *out = calloc(1, 65536);
        int fd = open(log, O_RDONLY);
        assert_true(fd >= 0 && read(fd, out, 65535) > 0);
        close(fd);
        assert_non_null(strstr(out, "g.img: 100% (64M of 64M)"));
        assert_non_null(strstr(out, "sha256 verified"));
}

/* Acceptance 3: corrupted archive and too-small pool refused, B unchanged. */
static void test_import_refusals(void **state) {
        _cleanup_free_ char *out = NULL, *arch = xprintf("%s/arch", top);
        assert_int_equal(ctl(&A, &out, "export", "g", arch, NULL), 0);
        _cleanup_free_ char *bad = export_copy("arch", "arch-flipped"), *img = xprintf("%s/g.img", bad);
        int fd = open(img, O_RDWR);
        char c;
        assert_int_equal(pread(fd, &c, 1, MARK_OFFSET_SECTORS * 512), 1);
        c ^= 0x01;
        assert_int_equal(pwrite(fd, &c, 1, MARK_OFFSET_SECTORS * 512), 1);
        close(fd);
        free(out);
        assert_int_equal(ctl(&B, NULL, "node", "set", "physical=700M", "reserve=512M", NULL), 0);
        assert_int_equal(ctl(&B, &out, "import", bad, NULL), 1);
        assert_non_null(strstr(out, "g.img: sha256 mismatch"));
        assert_b_empty();
        free(out);
        assert_int_equal(ctl(&B, &out, "import", arch, NULL), 1);
        assert_non_null(strstr(out, "needs 256 MiB but the pool has 188 MiB available (short by 68 MiB)"));
        assert_b_empty();
        free(out);
        /* A truncated image and a missing one. */
        _cleanup_free_ char *trunc = export_copy("arch", "arch-truncated"), *timg = xprintf("%s/g.img", trunc);
        assert_int_equal(truncate(timg, 32 * MIB), 0);
        assert_int_equal(ctl(&B, &out, "import", trunc, NULL), 1);
        assert_non_null(strstr(out, "g.img: size 33554432, manifest says 67108864"));
        free(out);
        assert_int_equal(unlink(timg), 0);
        assert_int_equal(ctl(&B, &out, "import", trunc, NULL), 1);
        assert_non_null(strstr(out, "g.img: missing"));
        assert_b_empty();
}

/* B's daemon runs g; B's pool holds its minimum, A's holds nothing and lists no g. */
static void check_daemons_after_move(pid_t pid) {
        printf("# ppnd on B adopted g %ld ms after the guest answered\n", wait_adopted(&B, "g", pid));
        json_object *sb = status(&B), *pool, *sa = status(&A), *poola;
        assert_true(json_object_object_get_ex(sb, "pool", &pool));
        assert_int_equal(get_int(pool, "reserved_min_bytes"), 256 * MIB);
        assert_int_equal(get_int(pool, "vms_running"), 1);
        assert_true(get_int(pool, "committed_bytes") > 0);
        assert_true(json_object_object_get_ex(sa, "pool", &poola));
        assert_int_equal(get_int(poola, "reserved_min_bytes"), 0);
        assert_int_equal(get_int(poola, "vms"), 0);
        assert_null(status_vm(sa, "g"));
        json_object_put(sa);
        json_object_put(sb);
}

/* Acceptance 2: move to B, start there: same uuid, marker intact, pools account for it. */
static void test_move_import_start(void **state) {
        _cleanup_free_ char *out = NULL, *moved = xprintf("%s/moved", top);
        assert_int_equal(ctl(&A, &out, "move", "g", "--to", moved, NULL), 0);
        /* A released it: ppnd on A notices the ledger change within its poll period (<= 1 s). */
        uint64_t t0 = now_usec();
        bool released = false;
        while (!released && now_usec() - t0 < 5 * 1000000ULL) {
                free(out);
                out = NULL;
                assert_int_equal(ctl(&A, &out, "pool", "--json", NULL), 0);
                released = strstr(out, "\"reserved_min_bytes\": 0") != NULL;
                if (!released)
                        usleep(200000);
        }
        assert_true(released);
        printf("# A's pool released g %.2f s after the move\n", (double) (now_usec() - t0) / 1e6);
        free(out);
        assert_int_equal(ctl(&B, NULL, "node", "set", "physical=2G", NULL), 0);
        assert_int_equal(ctl(&B, &out, "import", moved, NULL), 0);
        assert_non_null(strstr(out, "dropped the archive's QEMU options for 'g'"));
        free(out);
        /* The archive's QEMU options were dropped (they could reach this host): B's operator
         * gives this node's own kernel and command channel again, as a new VM would get them. */
        assert_int_equal(ctl(&B, &out, "vm", "show", "g", "--json", NULL), 0);
        assert_null(strstr(out, "vmlinuz"));
        free(out);
        set_guest_args(&B, "g");
        assert_int_equal(ctl(&B, &out, "import", moved, NULL), 1);   /* name clash: refused */
        assert_non_null(strstr(out, "a VM named 'g' already exists on this node"));
        free(out);
        assert_int_equal(ctl(&B, &out, "vm", "show", "g", "--json", NULL), 0);
        assert_non_null(strstr(out, uuid));
        free(out);
        assert_int_equal(ctl(&B, &out, "pool", "--json", NULL), 0);
        assert_non_null(strstr(out, "\"reserved_min_bytes\": 268435456"));
        free(out);
        _cleanup_free_ char *img = xprintf("%s/g/g.img", B.images);
        struct stat st;
        assert_int_equal(stat(img, &st), 0);
        printf("# imported image: %jd bytes, %jd allocated\n", (intmax_t) st.st_size, (intmax_t) st.st_blocks * 512);
        assert_true((uint64_t) st.st_blocks * 512 < 4 * MIB);   /* sparse kept sparse */
        daemon_start(&B);
        assert_int_equal(ctl(&B, &out, "start", "g", NULL), 0);
        pid_t pid = started_pid(out);
        guest = attach(pid);
        check_daemons_after_move(pid);
        _cleanup_free_ char *cmd = xprintf("dd if=/dev/vda bs=512 skip=%d count=1 2>/dev/null | head -c %zu; echo; "
                                           "cat /sys/class/dmi/id/product_uuid", MARK_OFFSET_SECTORS, strlen(marker));
        _cleanup_free_ char *got = NULL;
        assert_int_equal(testvm_exec(guest, cmd, 30000, &got), 0);
        printf("# on B: %s", got);
        assert_non_null(strstr(got, marker));
        assert_non_null(strcasestr(got, uuid));
        /* This time the guest honours the power button: stop ends with a clean powerdown. */
        free(got);
        got = NULL;
        assert_int_equal(testvm_exec(guest, "for d in /sys/class/input/event*; do grep -q 'Power Button' "
                                     "$d/device/name && ev=/dev/input/${d##*/}; done; echo $ev; "
                                     "(head -c 1 $ev >/dev/null; poweroff -f) >/dev/null 2>&1 &", 30000, &got), 0);
        printf("# power button: %s", got);
        assert_non_null(strstr(got, "/dev/input/event"));
        guest = testvm_kill(guest);
        free(out);
        assert_int_equal(ctl(&B, &out, "stop", "g", "--timeout", "30", NULL), 0);
        assert_non_null(strstr(out, ": powered down after"));
        assert_int_equal(waitpid(pid, NULL, WNOHANG), pid);
        _cleanup_free_ char *grp = xprintf("/sys/fs/cgroup/cpu/%s/vm-g", B.cgparent);
        assert_int_equal(access(grp, F_OK), -1);
}

int main(void) {
        marker = xprintf("ppn-marker-%d-%ju", (int) getpid(), (uintmax_t) now_realtime_usec());
        if (!getenv("PPND")) {
                _cleanup_free_ char *p = xprintf("%s/src/ppnd", getenv("PPN_BUILD_ROOT") ? getenv("PPN_BUILD_ROOT") : "build");
                setenv("PPND", p, 1);
        }
        if (!getenv("PPNCTL")) {
                _cleanup_free_ char *p = xprintf("%s/src/ppnctl", getenv("PPN_BUILD_ROOT") ? getenv("PPN_BUILD_ROOT") : "build");
                setenv("PPNCTL", p, 1);
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_start_paused_in_cgroup),
                cmocka_unit_test(test_marker_and_export_refused),
                cmocka_unit_test(test_stop_quits),
                cmocka_unit_test(test_start_failure_words),
                cmocka_unit_test(test_start_vmem),
                cmocka_unit_test(test_adopt),
                cmocka_unit_test(test_move_running),
                cmocka_unit_test(test_export_progress_on_tty),
                cmocka_unit_test(test_import_refusals),
                cmocka_unit_test(test_move_import_start),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
