/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guest-cgtest: the cgroup module on a real, pure cgroup v2 hierarchy, run inside the test
 * guest (static; packed into the guest's /bin). Prints what it does and ends with
 * "RESULT ratio=R1 live_ratio=R2" and "PASS", exit 0; or "FAIL: why", exit 1.
 *
 *   guest-cgtest detect [ROOT]   detection before and after mounting cgroup2 at ROOT
 *   guest-cgtest run [ROOT] [WINDOW_S]
 *       The daemon's situation under Delegate=yes: this process sits in the parent group
 *       (cgtest.slice), which the module must empty into a leaf before enabling +cpu there.
 *       Then two spinners in VM groups with weights 100 and 300 must share the CPU 3 ± 0.5 by
 *       cpu.stat usage_usec; after a live change to 300/300, 1 ± 0.2. The weights are also read
 *       from cpu.weight directly, so a module that did not write them fails.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>

#include "cgroup.h"
#include "spinner.h"

#define PARENT "cgtest.slice"
#define SETTLE_USEC (500 * 1000)

static const char *root = PPN_CGROUP_ROOT_DEFAULT;
static pid_t kids[2];

static int failf(const char *fmt, ...) _printf_(1, 2);
static int failf(const char *fmt, ...) {
        va_list ap;
        printf("FAIL: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        for (int i = 0; i < 2; i++)
                spinner_stop(kids[i]);
        return 1;
}

static void sleep_usec(uint64_t usec) {
        struct timespec ts = { .tv_sec = (time_t) (usec / 1000000),
                               .tv_nsec = (long) (usec % 1000000) * 1000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int write_path(const char *path, const char *value) {
        int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;
        if (fd < 0)
                return -errno;
        if (write(fd, value, strlen(value)) < 0)
                r = -errno;
        close(fd);
        return r;
}

static long read_path_num(const char *path) {
        long v = -1;
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        if (fscanf(f, "%ld", &v) != 1)
                v = -1;
        fclose(f);
        return v;
}

static int detect_print(void) {
        struct ppn_cgroup_layout l;
        struct ppn_error err = { 0 };
        int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

        if (fd < 0)
                return -errno;
        r = ppn_cgroup_detect(fd, root, true, &l, &err);
        close(fd);
        if (r < 0)
                printf("detect: %s\n", err.msg);
        else
                printf("detect: cgroup %s at %s/%s\n", ppn_cgroup_mode_to_string(l.mode), root,
                       l.hierarchy);
        return r;
}

static int mount_if_needed(void) {
        char p[256];
        snprintf(p, sizeof(p), "%s/cgroup.controllers", root);
        if (access(p, F_OK) == 0)
                return 0;
        if (mount("none", root, "cgroup2", 0, NULL) < 0)
                return -errno;
        printf("mounted cgroup2 at %s\n", root);
        return 1;
}

static int cmd_detect(void) {
        int before = detect_print(), m = mount_if_needed(), after;
        if (m < 0)
                return failf("cannot mount cgroup2 at %s", root);
        after = detect_print();
        if (m == 1 && before != -EOPNOTSUPP)
                return failf("an empty %s was not reported unusable", root);
        if (after < 0)
                return failf("no usable cgroup v2 at %s after mounting", root);
        printf("PASS\n");
        return 0;
}

/* The daemon under Delegate=yes: it lives in the group that becomes the VMs' parent. */
static int enter_parent(void) {
        char p[256], pid[24];
        snprintf(p, sizeof(p), "%s/" PARENT, root);
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                return -errno;
        snprintf(p, sizeof(p), "%s/" PARENT "/cgroup.procs", root);
        snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
        return write_path(p, pid);
}

/* Usage ratio b/a from cpu.stat over the window. */
static int measure(struct ppn_cgroup *cg, uint64_t window, double *ret, struct ppn_error *err) {
        uint64_t a0, b0, a1, b1;
        int r;

        sleep_usec(SETTLE_USEC);
        if ((r = ppn_cgroup_vm_usage(cg, "a", &a0, err)) < 0 ||
            (r = ppn_cgroup_vm_usage(cg, "b", &b0, err)) < 0)
                return r;
        sleep_usec(window);
        if ((r = ppn_cgroup_vm_usage(cg, "a", &a1, err)) < 0 ||
            (r = ppn_cgroup_vm_usage(cg, "b", &b1, err)) < 0)
                return r;
        printf("usage over %.1f s: vm-a %.3f s, vm-b %.3f s\n", (double) window / 1e6,
               (double) (a1 - a0) / 1e6, (double) (b1 - b0) / 1e6);
        if (a1 - a0 < 50000)
                return -EAGAIN;
        *ret = (double) (b1 - b0) / (double) (a1 - a0);
        return 0;
}

static int check_weights(struct ppn_cgroup *cg, long want_a, long want_b) {
        char p[300];
        long a, b;
        snprintf(p, sizeof(p), "%s/vm-a/cpu.weight", ppn_cgroup_parent_path(cg));
        a = read_path_num(p);
        snprintf(p, sizeof(p), "%s/vm-b/cpu.weight", ppn_cgroup_parent_path(cg));
        b = read_path_num(p);
        printf("cpu.weight read directly: vm-a %ld, vm-b %ld\n", a, b);
        return a == want_a && b == want_b ? 0 : -EIO;
}

static int start_vms(struct ppn_cgroup *cg, struct ppn_error *err) {
        int cpu = spinner_pick_cpu(), r;
        for (int i = 0; i < 2; i++) {
                kids[i] = spinner_start(cpu);
                if (kids[i] < 0)
                        return kids[i];
        }
        if ((r = ppn_cgroup_vm_place(cg, "a", kids[0], 100, err)) < 0 ||
            (r = ppn_cgroup_vm_place(cg, "b", kids[1], 300, err)) < 0)
                return r;
        printf("spinners %d (vm-a, weight 100) and %d (vm-b, weight 300) on cpu %d\n",
               (int) kids[0], (int) kids[1], cpu);
        return 0;
}

static int stop_vms(struct ppn_cgroup *cg, struct ppn_error *err) {
        char p[256], pid[24];
        int r;

        for (int i = 0; i < 2; i++) {
                spinner_stop(kids[i]);
                kids[i] = 0;
        }
        if ((r = ppn_cgroup_vm_remove(cg, "a", 2000000, err)) != 1 ||
            (r = ppn_cgroup_vm_remove(cg, "b", 2000000, err)) != 1)
                return r < 0 ? r : -EEXIST;
        /* Out of the leaf, so it can go; the parent was made here by hand, not by the module,
         * which must refuse to remove it. */
        snprintf(p, sizeof(p), "%s/cgroup.procs", root);
        snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
        if ((r = write_path(p, pid)) < 0)
                return r;
        r = ppn_cgroup_remove_parent(cg, 2000000, err);
        printf("remove_parent: %d (%s)\n", r, r < 0 ? err->msg : "removed");
        if (r != -EPERM)
                return -EBADE;
        snprintf(p, sizeof(p), "%s/" PARENT, root);
        return rmdir(p) < 0 ? -errno : 0;
}

static int run_ratios(struct ppn_cgroup *cg, uint64_t window, struct ppn_error *err) {
        double r1 = 0, r2 = 0;
        int r;

        if ((r = start_vms(cg, err)) < 0)
                return failf("placing the spinners: %s", err->msg);
        if (check_weights(cg, 100, 300) < 0)
                return failf("%s", "cpu.weight does not hold 100/300");
        if ((r = measure(cg, window, &r1, err)) < 0)
                return failf("measuring: %s", r == -EAGAIN ? "vm-a got no CPU" : err->msg);
        printf("ratio b/a at 100/300: %.2f\n", r1);
        if ((r = ppn_cgroup_vm_set_weight(cg, "a", 300, err)) < 0)
                return failf("live change: %s", err->msg);
        if (check_weights(cg, 300, 300) < 0)
                return failf("%s", "cpu.weight does not hold 300/300");
        if ((r = measure(cg, window, &r2, err)) < 0)
                return failf("measuring: %s", r == -EAGAIN ? "vm-a got no CPU" : err->msg);
        printf("ratio b/a at 300/300: %.2f\n", r2);
        if ((r = stop_vms(cg, err)) < 0)
                return failf("cleaning up: %s", strerror(-r));
        printf("RESULT ratio=%.2f live_ratio=%.2f\n", r1, r2);
        if (r1 < 2.5 || r1 > 3.5)
                return failf("%s", "ratio at 100/300 outside 3 +- 0.5");
        if (r2 < 0.8 || r2 > 1.2)
                return failf("%s", "ratio at 300/300 outside 1 +- 0.2");
        return 0;
}

static int cmd_run(uint64_t window) {
        struct ppn_cgroup_options o = { .root = root, .parent = PARENT, .daemon_leaf = "ppnd" };
        _cleanup_(ppn_cgroup_freep) struct ppn_cgroup *cg = NULL;
        _cleanup_free_ char *self = NULL;
        struct ppn_error err = { 0 };
        int r;

        if (mount_if_needed() < 0)
                return failf("cannot mount cgroup2 at %s", root);
        if ((r = enter_parent()) < 0)
                return failf("cannot enter %s (setup)", PARENT);
        if (ppn_cgroup_open(&o, &cg, &err) < 0)
                return failf("open: %s", err.msg);
        /* The module moved this process out of the parent into its leaf. */
        {
                _cleanup_fclose_ FILE *f = fopen("/proc/self/cgroup", "re");
                char buf[256] = "";
                if (!f || !fgets(buf, sizeof(buf), f) ||
                    ppn_cgroup_parse_proc_cgroup(buf, PPN_CGROUP_V2, &self) < 0)
                        return failf("%s", "cannot read /proc/self/cgroup");
        }
        printf("parent %s, this process now in %s\n", ppn_cgroup_parent_path(cg), self);
        if (strcmp(self, "/" PARENT "/ppnd") != 0)
                return failf("not evacuated into the leaf: %s", self);
        r = run_ratios(cg, window, &err);
        if (r == 0)
                printf("PASS\n");
        return r;
}

int main(int argc, char **argv) {
        const char *cmd = argc > 1 ? argv[1] : "run";
        double window_s = argc > 3 ? atof(argv[3]) : 4.0;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc > 2)
                root = argv[2];
        if (strcmp(cmd, "detect") == 0)
                return cmd_detect();
        if (strcmp(cmd, "run") == 0 && window_s > 0)
                return cmd_run((uint64_t) (window_s * 1e6));
        fprintf(stderr, "usage: guest-cgtest detect|run [ROOT] [WINDOW_S]\n");
        return 2;
}
