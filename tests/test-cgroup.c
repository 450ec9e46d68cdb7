/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup module on fixture trees built in a temporary directory: detection, names, weight
 * scaling, and the error paths (ENOENT, EACCES, EROFS, EBUSY, EPERM, EEXIST, EIO). The cases
 * that need the kernel's help (a read-only mount, a busy directory, a foreign user) run in a
 * forked child with its own mount namespace or credentials, so nothing leaks onto the host.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "cgroup.h"

struct fx {
        char root[PATH_MAX];
};

static int fx_setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        const char *tmp = getenv("TMPDIR");

        assert_non_null(f);
        snprintf(f->root, sizeof(f->root), "%s/ppn-cgtest-XXXXXX", tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(f->root));
        assert_int_equal(chmod(f->root, 0755), 0);
        *state = f;
        return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p) < 0 ? -1 : 0;
}

static int fx_teardown(void **state) {
        struct fx *f = *state;
        nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(f);
        return 0;
}

static const char *fx_path(struct fx *f, const char *rel) {
        static char buf[PATH_MAX + 256];
        snprintf(buf, sizeof(buf), "%s/%s", f->root, rel);
        return buf;
}

static void fx_dir(struct fx *f, const char *rel) {
        assert_int_equal(mkdir(fx_path(f, rel), 0755), 0);
}

static void fx_file(struct fx *f, const char *rel, const char *content) {
        FILE *fp = fopen(fx_path(f, rel), "we");
        assert_non_null(fp);
        fputs(content, fp);
        assert_int_equal(fclose(fp), 0);
}

static void fx_mark(struct fx *f, const char *rel) {
        assert_int_equal(setxattr(fx_path(f, rel), PPN_CGROUP_OWNER_XATTR, PPN_CGROUP_OWNER_VALUE,
                                  strlen(PPN_CGROUP_OWNER_VALUE), 0), 0);
}

static const char *fx_read(struct fx *f, const char *rel) {
        static char buf[4096];
        FILE *fp = fopen(fx_path(f, rel), "re");
        size_t n;
        assert_non_null(fp);
        n = fread(buf, 1, sizeof(buf) - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        return buf;
}

static bool fx_exists(struct fx *f, const char *rel) {
        return access(fx_path(f, rel), F_OK) == 0;
}

/* A v2 group as the kernel would show it: controllers, subtree_control, procs. */
static void fx_v2_group(struct fx *f, const char *rel, const char *controllers) {
        char p[256];
        if (strcmp(rel, ".") != 0)
                fx_dir(f, rel);
        snprintf(p, sizeof(p), "%s/cgroup.controllers", rel);
        fx_file(f, p, controllers);
        snprintf(p, sizeof(p), "%s/cgroup.subtree_control", rel);
        fx_file(f, p, "");
        snprintf(p, sizeof(p), "%s/cgroup.procs", rel);
        fx_file(f, p, "");
}

/* A pure v2 root with ppn.slice already there. */
static void fx_v2(struct fx *f) {
        fx_v2_group(f, ".", "cpuset cpu io memory hugetlb pids rdma misc\n");
        fx_v2_group(f, "ppn.slice", "cpuset cpu io memory pids\n");
}

/* This machine's layout: v1 controllers in subdirectories, cgroup2 at unified/ with hugetlb. */
static void fx_hybrid(struct fx *f) {
        fx_dir(f, "cpu");
        fx_file(f, "cpu/cpu.shares", "1024\n");
        fx_file(f, "cpu/cgroup.procs", "1\n");
        fx_dir(f, "cpuacct");
        fx_dir(f, "memory");
        fx_dir(f, "unified");
        fx_file(f, "unified/cgroup.controllers", "hugetlb\n");
}

static struct ppn_cgroup *fx_open(struct fx *f, const char *parent, struct ppn_error *err,
                                  int *ret) {
        struct ppn_cgroup_options o = { .root = f->root, .parent = parent, .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        *ret = ppn_cgroup_open(&o, &cg, err);
        return cg;
}

#define assert_msg_has(err, s)                                                                 \
        do {                                                                                   \
                if (!strstr((err)->msg, (s)))                                                  \
                        fail_msg("message lacks \"%s\": %s", (s), (err)->msg);                 \
        } while (0)

/* ---- Detection ---- */

static void detect(struct fx *f, int want_r, enum ppn_cgroup_mode mode, const char *hier,
                   struct ppn_error *err) {
        struct ppn_cgroup_layout l = { .mode = 99 };
        int fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r;

        assert_true(fd >= 0);
        r = ppn_cgroup_detect(fd, f->root, false, &l, err);
        close(fd);
        assert_int_equal(r, want_r);
        if (r == 0) {
                assert_int_equal(l.mode, mode);
                assert_string_equal(l.hierarchy, hier);
        } else
                assert_int_equal(l.mode, 99); /* untouched on failure */
}

static void test_detect_v2(void **state) {
        fx_v2(*state);
        detect(*state, 0, PPN_CGROUP_V2, ".", NULL);
}

static void test_detect_hybrid(void **state) {
        fx_hybrid(*state);
        detect(*state, 0, PPN_CGROUP_V1, "cpu", NULL);
}

static void test_detect_hybrid_comounted(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        uint64_t usage = 0;
        int r;

        /* The common hybrid layout: cpu and cpuacct on one hierarchy, "cpu" a symlink to it. */
        fx_dir(f, "cpu,cpuacct");
        fx_file(f, "cpu,cpuacct/cpu.shares", "1024\n");
        assert_int_equal(symlink("cpu,cpuacct", fx_path(f, "cpu")), 0);
        assert_int_equal(symlink("cpu,cpuacct", fx_path(f, "cpuacct")), 0);
        detect(f, 0, PPN_CGROUP_V1, "cpu", NULL);
        fx_dir(f, "cpu,cpuacct/ppn.slice");
        fx_dir(f, "cpu,cpuacct/ppn.slice/vm-x");
        fx_mark(f, "cpu,cpuacct/ppn.slice/vm-x");
        fx_file(f, "cpu,cpuacct/ppn.slice/vm-x/cpuacct.usage", "2500000000\n");
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_string_equal(ppn_cgroup_parent_path(cg), fx_path(f, "cpu/ppn.slice"));
        /* With cpuacct alongside, the group's usage comes from cpuacct.usage (ns). */
        assert_int_equal(ppn_cgroup_vm_usage(cg, "x", &usage, &err), 0);
        assert_int_equal(usage, 2500000);
        ppn_cgroup_free(cg);
}

static void test_detect_unified_with_cpu(void **state) {
        struct fx *f = *state;
        fx_dir(f, "unified");
        fx_file(f, "unified/cgroup.controllers", "cpu memory pids\n");
        detect(f, 0, PPN_CGROUP_V2, "unified", NULL);
}

static void test_detect_none_empty(void **state) {
        struct ppn_error err = { 0 };
        detect(*state, -EOPNOTSUPP, 0, NULL, &err);
        assert_int_equal(err.code, -EOPNOTSUPP);
        assert_msg_has(&err, ((struct fx *) *state)->root);
        assert_msg_has(&err, "no usable cpu controller");
        assert_msg_has(&err, "./cgroup.controllers: No such file");
        assert_msg_has(&err, "cpu/: No such file");
        assert_msg_has(&err, "mount cgroup2");
}

static void test_detect_none_v2_without_cpu(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        fx_file(f, "cgroup.controllers", "memory pids\n");
        detect(f, -EOPNOTSUPP, 0, NULL, &err);
        assert_msg_has(&err, "lists 'memory pids', no cpu");
}

static void test_detect_none_hybrid_without_cpu(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        fx_hybrid(f);
        assert_int_equal(unlink(fx_path(f, "cpu/cpu.shares")), 0);
        detect(f, -EOPNOTSUPP, 0, NULL, &err);
        assert_msg_has(&err, "cpu/cpu.shares: No such file");
        assert_msg_has(&err, "unified/cgroup.controllers lists 'hugetlb', no cpu");
}

static void test_detect_fs_magic(void **state) {
        struct fx *f = *state;
        struct ppn_cgroup_layout l;
        struct ppn_error err = { 0 };
        int fd;

        fx_v2(f);
        fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        /* A plain directory is not cgroupfs: with the statfs check on, nothing is usable. */
        assert_int_equal(ppn_cgroup_detect(fd, f->root, true, &l, &err), -EOPNOTSUPP);
        close(fd);
        assert_msg_has(&err, "./ is not cgroup2");
}

/* ---- Pure parts ---- */

static void test_name_valid(void **state) {
        static const struct {
                const char *name;
                bool ok;
        } cases[] = {
                { "a", true }, { "web-01", true }, { "db_2.prod", true }, { "0vm", true },
                { "", false }, { ".", false }, { "..", false }, { "a..b", false },
                { "a/b", false }, { "/a", false }, { "../etc", false }, { ".hidden", false },
                { "-a", false }, { "_a", false }, { "Web", false }, { "a b", false },
                { "a\n", false }, { "a\\b", false }, { "ä", false },
        };
        char long_ok[PPN_CGROUP_NAME_MAX + 1], too_long[PPN_CGROUP_NAME_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (ppn_cgroup_name_valid(cases[i].name) != cases[i].ok)
                        fail_msg("name \"%s\": want %s", cases[i].name, cases[i].ok ? "ok" : "bad");
        memset(long_ok, 'a', sizeof(long_ok) - 1);
        long_ok[sizeof(long_ok) - 1] = '\0';
        memset(too_long, 'a', sizeof(too_long) - 1);
        too_long[sizeof(too_long) - 1] = '\0';
        assert_true(ppn_cgroup_name_valid(long_ok));
        assert_false(ppn_cgroup_name_valid(too_long));
        assert_false(ppn_cgroup_name_valid(NULL));
}

static void test_weight_to_shares(void **state) {
        static const struct {
                uint32_t weight;
                int r;
                uint32_t shares;
        } cases[] = {
                { 1, 0, 10 }, { 2, 0, 20 }, { 50, 0, 512 }, { 100, 0, 1024 }, { 300, 0, 3072 },
                { 1000, 0, 10240 }, { 9999, 0, 102390 }, { 10000, 0, 102400 },
                { 0, -ERANGE, 0 }, { 10001, -ERANGE, 0 }, { UINT32_MAX, -ERANGE, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint32_t s = 7;
                int r = ppn_cpu_weight_to_shares(cases[i].weight, &s);
                if (r != cases[i].r || (r == 0 && s != cases[i].shares) || (r < 0 && s != 7))
                        fail_msg("weight %u: r=%d shares=%u", cases[i].weight, r, s);
        }
}

static void test_shares_to_weight(void **state) {
        static const struct {
                uint32_t shares;
                int r;
                uint32_t weight;
        } cases[] = {
                { 2, 0, 1 }, { 5, 0, 1 }, { 10, 0, 1 }, { 15, 0, 1 }, { 16, 0, 2 },
                { 1024, 0, 100 }, { 1025, 0, 100 }, { 3072, 0, 300 }, { 102400, 0, 10000 },
                { 102406, 0, 10000 }, { 262144, 0, 10000 },
                { 0, -ERANGE, 0 }, { 1, -ERANGE, 0 }, { 262145, -ERANGE, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint32_t w = 7;
                int r = ppn_cpu_shares_to_weight(cases[i].shares, &w);
                if (r != cases[i].r || (r == 0 && w != cases[i].weight) || (r < 0 && w != 7))
                        fail_msg("shares %u: r=%d weight=%u", cases[i].shares, r, w);
        }
}

static void test_weight_round_trip_and_ratios(void **state) {
        for (uint32_t w = PPN_CPU_WEIGHT_MIN; w <= PPN_CPU_WEIGHT_MAX; w++) {
                uint32_t s, back;
                assert_int_equal(ppn_cpu_weight_to_shares(w, &s), 0);
                assert_int_equal(ppn_cpu_shares_to_weight(s, &back), 0);
                if (back != w)
                        fail_msg("round trip %u -> %u -> %u", w, s, back);
                /* Linear through 0: shares within half a unit of w × 10.24, so ratios hold. */
                if ((double) s < w * 10.24 - 0.5 || (double) s > w * 10.24 + 0.5)
                        fail_msg("weight %u -> %u shares, not w x 10.24", w, s);
                if (s < PPN_CPU_SHARES_MIN || s > PPN_CPU_SHARES_MAX)
                        fail_msg("weight %u -> %u shares outside v1's range", w, s);
        }
}

static void test_parse_proc_cgroup(void **state) {
        static const struct {
                const char *text;
                enum ppn_cgroup_mode mode;
                int r;
                const char *path;
        } cases[] = {
                { "0::/system.slice/ppnd.service\n", PPN_CGROUP_V2, 0, "/system.slice/ppnd.service" },
                { "0::/\n", PPN_CGROUP_V2, 0, "/" },
                { "9:name=systemd:/\n2:cpuacct:/x\n1:cpu:/ppn.slice\n0::/\n", PPN_CGROUP_V1, 0,
                  "/ppn.slice" },
                { "4:cpu,cpuacct:/system.slice/ppnd.service\n", PPN_CGROUP_V1, 0,
                  "/system.slice/ppnd.service" },
                { "2:cpuacct:/x\n1:cpuset:/y\n", PPN_CGROUP_V1, -ENOENT, NULL },
                { "1:cpu:/a\n", PPN_CGROUP_V2, -ENOENT, NULL },
                { "10:0::/a\n", PPN_CGROUP_V2, -ENOENT, NULL },
                { "", PPN_CGROUP_V2, -ENOENT, NULL },
                { "garbage", PPN_CGROUP_V1, -ENOENT, NULL },
                { "0::/a", PPN_CGROUP_NONE, -EINVAL, NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *p = NULL;
                int r = ppn_cgroup_parse_proc_cgroup(cases[i].text, cases[i].mode, &p);
                if (r != cases[i].r)
                        fail_msg("case %zu: r=%d want %d", i, r, cases[i].r);
                if (r == 0)
                        assert_string_equal(p, cases[i].path);
                else
                        assert_null(p);
                free(p);
        }
}

/* ---- Opening and the parent ---- */

static void test_open_v2_enables_cpu(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        int r;
        struct ppn_cgroup *cg;

        fx_v2(f);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_get_mode(cg), PPN_CGROUP_V2);
        assert_string_equal(ppn_cgroup_parent_path(cg), fx_path(f, "ppn.slice"));
        /* +cpu written at the root (for ppn.slice) and in ppn.slice (for the VM groups). */
        assert_string_equal(fx_read(f, "cgroup.subtree_control"), "+cpu");
        assert_string_equal(fx_read(f, "ppn.slice/cgroup.subtree_control"), "+cpu");
        ppn_cgroup_free(cg);
}

static void test_open_v2_already_enabled_writes_nothing(void **state) {
        struct fx *f = *state;
        int r;

        fx_v2(f);
        fx_file(f, "cgroup.subtree_control", "cpu memory\n");
        fx_file(f, "ppn.slice/cgroup.subtree_control", "cpu\n");
        ppn_cgroup_free(fx_open(f, "/ppn.slice/", NULL, &r));
        assert_int_equal(r, 0);
        assert_string_equal(fx_read(f, "cgroup.subtree_control"), "cpu memory\n");
        assert_string_equal(fx_read(f, "ppn.slice/cgroup.subtree_control"), "cpu\n");
}

static void test_open_v2_new_parent_enoent_rolls_back(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        int r;

        fx_v2(f);
        /* mkdir of a group on a plain directory gives no interface files: ENOENT, and the
         * component this call created is removed again. */
        assert_null(fx_open(f, "new.slice/sub", &err, &r));
        assert_int_equal(r, -ENOENT);
        assert_msg_has(&err, "cannot read ");
        assert_msg_has(&err, "/new.slice/cgroup.subtree_control: No such file or directory");
        assert_msg_has(&err, "check the cgroup root setting");
        assert_false(fx_exists(f, "new.slice"));
}

static void test_open_bad_parent(void **state) {
        static const char *const bad[] = { "", "/", "../x", "a/../b", "a/./b", "a//b", "..", "." };
        struct fx *f = *state;

        fx_v2(f);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct ppn_error err = { 0 };
                int r;
                assert_null(fx_open(f, bad[i], &err, &r));
                if (r != -EINVAL)
                        fail_msg("parent \"%s\": r=%d (%s)", bad[i], r, err.msg);
                assert_msg_has(&err, "cgroup parent");
        }
}

static void test_open_missing_root(void **state) {
        struct fx *f = *state;
        struct ppn_cgroup_options o = { .root = fx_path(f, "nowhere"), .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        struct ppn_error err = { 0 };

        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), -ENOENT);
        assert_null(cg);
        assert_msg_has(&err, "cannot open the cgroup root ");
        assert_msg_has(&err, "/nowhere: No such file or directory");
}

static void test_open_v2_cpu_unavailable(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        int r;

        fx_v2_group(f, ".", "cpu memory\n");
        fx_v2_group(f, "ppn.slice", "memory pids\n");
        assert_null(fx_open(f, NULL, &err, &r));
        assert_int_equal(r, -EOPNOTSUPP);
        assert_msg_has(&err, "cpu controller is not available in ");
        assert_msg_has(&err, "ppn.slice/cgroup.controllers");
        assert_msg_has(&err, "Delegate=yes");
}

static void test_open_v1_creates_parent(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        char v[32] = "";
        int r;
        struct ppn_cgroup *cg;

        fx_hybrid(f);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_get_mode(cg), PPN_CGROUP_V1);
        assert_string_equal(ppn_cgroup_parent_path(cg), fx_path(f, "cpu/ppn.slice"));
        assert_int_equal(getxattr(fx_path(f, "cpu/ppn.slice"), PPN_CGROUP_OWNER_XATTR, v,
                                  sizeof(v)), 8);
        assert_memory_equal(v, "ppn-pool", 8);
        /* Ours, empty: remove_parent takes it away again. */
        assert_int_equal(ppn_cgroup_remove_parent(cg, 0, &err), 1);
        assert_false(fx_exists(f, "cpu/ppn.slice"));
        ppn_cgroup_free(cg);
}

static void test_open_delegated_evacuates_daemon(void **state) {
        struct fx *f = *state;
        struct ppn_cgroup_options o = { .root = f->root, .own_cgroup_file = NULL,
                                        .daemon_leaf = "ppnd", .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        struct ppn_error err = { 0 };

        /* systemd Delegate=yes: the daemon runs in its own unit group, which is the parent. */
        fx_v2_group(f, ".", "cpu memory\n");
        fx_file(f, "cgroup.subtree_control", "cpu memory\n");
        fx_v2_group(f, "system.slice", "cpu memory\n");
        fx_file(f, "system.slice/cgroup.subtree_control", "cpu memory\n");
        fx_v2_group(f, "system.slice/ppnd.service", "cpu memory\n");
        fx_file(f, "system.slice/ppnd.service/cgroup.procs", "4242\n4243\n");
        fx_v2_group(f, "system.slice/ppnd.service/ppnd", "cpu memory\n");
        fx_mark(f, "system.slice/ppnd.service/ppnd");
        fx_file(f, "proc-self-cgroup", "0::/system.slice/ppnd.service\n");
        o.own_cgroup_file = strdup(fx_path(f, "proc-self-cgroup"));

        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), 0);
        free((char *) o.own_cgroup_file);
        assert_string_equal(ppn_cgroup_parent_path(cg), fx_path(f, "system.slice/ppnd.service"));
        /* One write per pid into the leaf (the fixture file keeps the last), then +cpu. */
        assert_string_equal(fx_read(f, "system.slice/ppnd.service/ppnd/cgroup.procs"), "4243\n");
        assert_string_equal(fx_read(f, "system.slice/ppnd.service/cgroup.subtree_control"), "+cpu");
        /* The ancestors already had cpu: left as they were. */
        assert_string_equal(fx_read(f, "system.slice/cgroup.subtree_control"), "cpu memory\n");
        ppn_cgroup_free(cg);
}

static void test_open_own_cgroup_file_errors(void **state) {
        struct fx *f = *state;
        struct ppn_cgroup_options o = { .root = f->root, .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        struct ppn_error err = { 0 };
        char file[PATH_MAX + 256];

        fx_v2(f);
        snprintf(file, sizeof(file), "%s", fx_path(f, "proc-self-cgroup"));
        o.own_cgroup_file = file;
        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), -ENOENT);
        assert_msg_has(&err, "cannot read ");
        assert_msg_has(&err, "proc-self-cgroup: No such file or directory");
        /* A v1-only line when the hierarchy is v2. */
        fx_file(f, "proc-self-cgroup", "1:cpu:/ppn.slice\n");
        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), -ENOENT);
        assert_msg_has(&err, "proc-self-cgroup names no cgroup v2 group for the cpu controller");
        /* The daemon in the root group: the root cannot be the VMs' parent. */
        fx_file(f, "proc-self-cgroup", "0::/\n");
        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), -EINVAL);
        assert_msg_has(&err, "must name a group below the hierarchy root");
        assert_null(cg);
}

static void test_evacuate_refuses_foreign_leaf(void **state) {
        struct fx *f = *state;
        struct ppn_cgroup_options o = { .root = f->root, .daemon_leaf = "ppnd",
                                        .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        struct ppn_error err = { 0 };

        fx_v2(f);
        fx_file(f, "ppn.slice/cgroup.procs", "4242\n");
        fx_v2_group(f, "ppn.slice/ppnd", "cpu\n");  /* not marked */
        assert_int_equal(ppn_cgroup_open(&o, &cg, &err), -EEXIST);
        assert_msg_has(&err, "ppn.slice/ppnd exists but was not created by ppn-pool");
        assert_string_equal(fx_read(f, "ppn.slice/ppnd/cgroup.procs"), "");
}

/* ---- VM groups on fixtures ---- */

static void fx_vm_v2(struct fx *f, const char *dir, bool mark) {
        char p[128];
        snprintf(p, sizeof(p), "ppn.slice/%s", dir);
        fx_dir(f, p);
        if (mark)
                fx_mark(f, p);
        snprintf(p, sizeof(p), "ppn.slice/%s/cpu.weight", dir);
        fx_file(f, p, "100\n");
        snprintf(p, sizeof(p), "ppn.slice/%s/cgroup.procs", dir);
        fx_file(f, p, "");
        snprintf(p, sizeof(p), "ppn.slice/%s/cpu.stat", dir);
        fx_file(f, p, "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n");
}

static void test_v2_weight_set_get_attach(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        uint32_t w = 0;
        uint64_t usage = 0;
        char pid[32];
        int r;

        fx_v2(f);
        fx_vm_v2(f, "vm-web", true);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_create(cg, "web", 250, &err), 0); /* adopted, ours */
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cpu.weight"), "250\n");
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "web", 10000, &err), 0);
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cpu.weight"), "10000\n");
        assert_int_equal(ppn_cgroup_vm_get_weight(cg, "web", &w, &err), 0);
        assert_int_equal(w, 10000);
        assert_int_equal(ppn_cgroup_vm_attach(cg, "web", getpid(), &err), 0);
        snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cgroup.procs"), pid);
        assert_int_equal(ppn_cgroup_vm_usage(cg, "web", &usage, &err), 0);
        assert_int_equal(usage, 1234567);
        assert_int_equal(ppn_cgroup_vm_attach(cg, "web", 0, &err), -EINVAL);
        ppn_cgroup_free(cg);
}

static void test_v1_weight_scaled(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        uint32_t w = 0;
        uint64_t usage;
        int r;

        fx_hybrid(f);
        fx_dir(f, "cpu/ppn.slice");
        fx_dir(f, "cpu/ppn.slice/vm-db");
        fx_mark(f, "cpu/ppn.slice/vm-db");
        fx_file(f, "cpu/ppn.slice/vm-db/cpu.shares", "1024\n");
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "db", 300, &err), 0);
        assert_string_equal(fx_read(f, "cpu/ppn.slice/vm-db/cpu.shares"), "3072\n");
        assert_int_equal(ppn_cgroup_vm_get_weight(cg, "db", &w, &err), 0);
        assert_int_equal(w, 300);
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "db", 1, &err), 0);
        assert_string_equal(fx_read(f, "cpu/ppn.slice/vm-db/cpu.shares"), "10\n");
        /* Written by someone else in v1 units: read on the one scale, rounded. */
        fx_file(f, "cpu/ppn.slice/vm-db/cpu.shares", "1025\n");
        assert_int_equal(ppn_cgroup_vm_get_weight(cg, "db", &w, &err), 0);
        assert_int_equal(w, 100);
        fx_file(f, "cpu/ppn.slice/vm-db/cpu.shares", "1\n");
        assert_int_equal(ppn_cgroup_vm_get_weight(cg, "db", &w, &err), -ERANGE);
        assert_msg_has(&err, "vm-db/cpu.shares holds 1, outside 2-262144");
        /* cpuacct is a separate hierarchy here (as on this host): no usage from the group. */
        assert_int_equal(ppn_cgroup_vm_usage(cg, "db", &usage, &err), -EOPNOTSUPP);
        assert_msg_has(&err, "cpuacct is not mounted together with cpu");
        ppn_cgroup_free(cg);
}

static void test_v1_create_enoent_rolls_back(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        int r;

        fx_hybrid(f);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        /* A plain mkdir gets no cpu.shares: the write fails and the new group goes again. */
        assert_int_equal(ppn_cgroup_vm_create(cg, "a", 100, &err), -ENOENT);
        assert_msg_has(&err, "cannot write 1024 to ");
        assert_msg_has(&err, "/cpu/ppn.slice/vm-a/cpu.shares: No such file or directory");
        assert_msg_has(&err, "; the new group was removed again");
        assert_false(fx_exists(f, "cpu/ppn.slice/vm-a"));
        ppn_cgroup_free(cg);
}

static void test_vm_bad_input(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        int r;

        fx_v2(f);
        fx_vm_v2(f, "vm-web", true);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_create(cg, "../etc", 100, &err), -EINVAL);
        assert_msg_has(&err, "invalid VM name '../etc'");
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "a/b", 100, &err), -EINVAL);
        assert_int_equal(ppn_cgroup_vm_remove(cg, "..", 0, &err), -EINVAL);
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "web", 0, &err), -ERANGE);
        assert_msg_has(&err, "CPU weight 0 is out of range 1-10000");
        assert_int_equal(ppn_cgroup_vm_create(cg, "web", 10001, &err), -ERANGE);
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cpu.weight"), "100\n");
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "ghost", 100, &err), -ENOENT);
        assert_msg_has(&err, "cannot open cgroup ");
        assert_msg_has(&err, "ppn.slice/vm-ghost: No such file or directory");
        ppn_cgroup_free(cg);
}

static void test_foreign_group_untouched(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        int r;

        fx_v2(f);
        fx_vm_v2(f, "vm-other", false);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_create(cg, "other", 300, &err), -EEXIST);
        assert_msg_has(&err, "ppn.slice/vm-other exists but was not created by ppn-pool");
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "other", 300, &err), -EPERM);
        assert_msg_has(&err, "was not created by ppn-pool");
        assert_int_equal(ppn_cgroup_vm_attach(cg, "other", getpid(), &err), -EPERM);
        assert_int_equal(ppn_cgroup_vm_remove(cg, "other", 0, &err), -EPERM);
        assert_msg_has(&err, "it is left in place");
        assert_string_equal(fx_read(f, "ppn.slice/vm-other/cpu.weight"), "100\n");
        assert_string_equal(fx_read(f, "ppn.slice/vm-other/cgroup.procs"), "");
        assert_true(fx_exists(f, "ppn.slice/vm-other"));
        ppn_cgroup_free(cg);
}

static void test_remove(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        int r;

        fx_v2(f);
        fx_dir(f, "ppn.slice/vm-gone");  /* an emptied group as the kernel leaves it to rmdir */
        fx_mark(f, "ppn.slice/vm-gone");
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_remove(cg, "gone", 0, &err), 1);
        assert_false(fx_exists(f, "ppn.slice/vm-gone"));
        assert_int_equal(ppn_cgroup_vm_remove(cg, "gone", 0, &err), 0); /* idempotent */
        /* The parent was not created by this module: never removed. */
        assert_int_equal(ppn_cgroup_remove_parent(cg, 0, &err), -EPERM);
        assert_true(fx_exists(f, "ppn.slice"));
        ppn_cgroup_free(cg);
}

static void test_list(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        char **names = NULL;
        int r;

        fx_v2(f);
        fx_vm_v2(f, "vm-web", true);
        fx_vm_v2(f, "vm-db", true);
        fx_vm_v2(f, "vm-other", false);      /* not ours */
        fx_dir(f, "ppn.slice/ppnd");         /* not a VM group */
        fx_mark(f, "ppn.slice/ppnd");
        fx_dir(f, "ppn.slice/vm-Bad");       /* not a valid name */
        fx_mark(f, "ppn.slice/vm-Bad");
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_list(cg, &names, &err), 2);
        assert_string_equal(names[0], "db");
        assert_string_equal(names[1], "web");
        assert_null(names[2]);
        ppn_cgroup_names_free(names);
        ppn_cgroup_free(cg);
}

static void test_readback_mismatch(void **state) {
        struct fx *f = *state;
        struct ppn_error err = { 0 };
        struct ppn_cgroup *cg;
        int r;

        if (geteuid() != 0)
                skip(); /* mknod needs root */
        fx_v2(f);
        fx_dir(f, "ppn.slice/vm-null");
        fx_mark(f, "ppn.slice/vm-null");
        /* A weight file that swallows writes (/dev/null's device): the read-back catches it. */
        assert_int_equal(mknod(fx_path(f, "ppn.slice/vm-null/cpu.weight"), S_IFCHR | 0644,
                               makedev(1, 3)), 0);
        cg = fx_open(f, NULL, &err, &r);
        assert_int_equal(r, 0);
        assert_int_equal(ppn_cgroup_vm_set_weight(cg, "null", 300, &err), -EIO);
        assert_msg_has(&err, "wrote 300 to ");
        assert_msg_has(&err, "vm-null/cpu.weight but it reads back ''");
        ppn_cgroup_free(cg);
}

/* ---- Kernel-made errors, in a child (credentials, mount namespace) ---- */

typedef int (*child_fn)(struct fx *f, struct ppn_error *err);

/* Runs fn in a child; returns its result (a -errno) and its error message. */
static int in_child(struct fx *f, child_fn fn, char *msg, size_t len) {
        int p[2], status;
        ssize_t n;
        pid_t pid;

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct ppn_error err = { 0 };
                int r = fn(f, &err);
                if (write(p[1], err.msg, strlen(err.msg)) < 0)
                        _exit(120);
                _exit(r < 0 && r > -120 ? -r : 121);
        }
        close(p[1]);
        n = read(p[0], msg, len - 1);
        msg[n > 0 ? n : 0] = '\0';
        close(p[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return -WEXITSTATUS(status);
}

static int child_open_and(struct fx *f, struct ppn_error *err,
                          int (*op)(struct ppn_cgroup *cg, struct ppn_error *err)) {
        struct ppn_cgroup_options o = { .root = f->root, .skip_fs_check = true };
        struct ppn_cgroup *cg = NULL;
        int r = ppn_cgroup_open(&o, &cg, err);
        if (r == 0)
                r = op(cg, err);
        ppn_cgroup_free(cg);
        return r;
}

static int op_create(struct ppn_cgroup *cg, struct ppn_error *err) {
        return ppn_cgroup_vm_create(cg, "new", 100, err);
}

static int op_set_weight(struct ppn_cgroup *cg, struct ppn_error *err) {
        return ppn_cgroup_vm_set_weight(cg, "web", 300, err);
}

static int op_remove_busy(struct ppn_cgroup *cg, struct ppn_error *err) {
        uint64_t t0 = now_usec();
        int r = ppn_cgroup_vm_remove(cg, "busy", 150 * 1000, err);
        /* The bounded wait really waited (150 ms), and not much longer. */
        uint64_t waited = now_usec() - t0;
        return waited < 150 * 1000 || waited > 2000 * 1000 ? -ETIME : r;
}

static int drop_to_nobody(void) {
        if (geteuid() != 0)
                return 0;
        if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0)
                return -errno;
        return 0;
}

static int child_eacces_create(struct fx *f, struct ppn_error *err) {
        int r = drop_to_nobody();
        return r < 0 ? r : child_open_and(f, err, op_create);
}

static int child_eacces_weight(struct fx *f, struct ppn_error *err) {
        int r = drop_to_nobody();
        return r < 0 ? r : child_open_and(f, err, op_set_weight);
}

static void fx_v2_writable_by_nobody_not(struct fx *f) {
        fx_v2(f);
        /* cpu already enabled, so opening needs no write. */
        fx_file(f, "cgroup.subtree_control", "cpu\n");
        fx_file(f, "ppn.slice/cgroup.subtree_control", "cpu\n");
        fx_vm_v2(f, "vm-web", true);
}

static void test_eacces(void **state) {
        struct fx *f = *state;
        char msg[600];

        fx_v2_writable_by_nobody_not(f);
        /* Root drops to nobody in the child; a non-root run is refused by the modes alone. */
        assert_int_equal(chmod(fx_path(f, "ppn.slice"), 0555), 0);
        assert_int_equal(chmod(fx_path(f, "ppn.slice/vm-web/cpu.weight"), 0444), 0);
        assert_int_equal(in_child(f, child_eacces_create, msg, sizeof(msg)), -EACCES);
        if (!strstr(msg, "cannot create cgroup ") || !strstr(msg, "ppn.slice/vm-new: Permission "
            "denied; run ppnd as root, or delegate the subtree"))
                fail_msg("unclear: %s", msg);
        assert_false(fx_exists(f, "ppn.slice/vm-new"));
        assert_int_equal(in_child(f, child_eacces_weight, msg, sizeof(msg)), -EACCES);
        if (!strstr(msg, "cannot write 300 to ") || !strstr(msg, "vm-web/cpu.weight: Permission"))
                fail_msg("unclear: %s", msg);
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cpu.weight"), "100\n");
        assert_int_equal(chmod(fx_path(f, "ppn.slice"), 0755), 0);
}

/* A private mount namespace so the mounts below vanish with the child. */
static int private_ns(void) {
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return -errno;
        return 0;
}

static int bind_ro(struct fx *f) {
        int r = private_ns();
        if (r < 0)
                return r;
        if (mount(f->root, f->root, NULL, MS_BIND | MS_REC, NULL) < 0 ||
            mount(NULL, f->root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                return -errno;
        return 0;
}

static int child_erofs_create(struct fx *f, struct ppn_error *err) {
        int r = bind_ro(f);
        return r < 0 ? -ENOTRECOVERABLE : child_open_and(f, err, op_create);
}

static int child_erofs_weight(struct fx *f, struct ppn_error *err) {
        int r = bind_ro(f);
        return r < 0 ? -ENOTRECOVERABLE : child_open_and(f, err, op_set_weight);
}

static void test_erofs(void **state) {
        struct fx *f = *state;
        char msg[600];

        if (geteuid() != 0)
                skip(); /* a read-only bind mount needs CAP_SYS_ADMIN */
        fx_v2_writable_by_nobody_not(f);
        assert_int_equal(in_child(f, child_erofs_create, msg, sizeof(msg)), -EROFS);
        if (!strstr(msg, "cannot create cgroup ") || !strstr(msg, "Read-only file system; the "
            "cgroup filesystem is mounted read-only"))
                fail_msg("unclear: %s", msg);
        assert_int_equal(in_child(f, child_erofs_weight, msg, sizeof(msg)), -EROFS);
        if (!strstr(msg, "cannot write 300 to ") || !strstr(msg, "remount it read-write"))
                fail_msg("unclear: %s", msg);
        assert_false(fx_exists(f, "ppn.slice/vm-new"));
        assert_string_equal(fx_read(f, "ppn.slice/vm-web/cpu.weight"), "100\n");
}

static int child_ebusy(struct fx *f, struct ppn_error *err) {
        char src[PATH_MAX + 32], dst[PATH_MAX + 32];
        int r = private_ns();

        if (r < 0)
                return -ENOTRECOVERABLE;
        /* rmdir of a mount point is EBUSY, as a cgroup with members is. */
        snprintf(src, sizeof(src), "%s/busy-src", f->root);
        snprintf(dst, sizeof(dst), "%s/ppn.slice/vm-busy", f->root);
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
                return -ENOTRECOVERABLE;
        return child_open_and(f, err, op_remove_busy);
}

static void test_ebusy(void **state) {
        struct fx *f = *state;
        char msg[600];

        if (geteuid() != 0)
                skip(); /* a bind mount needs CAP_SYS_ADMIN */
        fx_v2(f);
        fx_dir(f, "ppn.slice/vm-busy");
        fx_mark(f, "ppn.slice/vm-busy");
        fx_dir(f, "busy-src");
        fx_mark(f, "busy-src");
        fx_file(f, "busy-src/cgroup.procs", "4242\n4343\n");
        assert_int_equal(in_child(f, child_ebusy, msg, sizeof(msg)), -EBUSY);
        if (!strstr(msg, "cannot remove cgroup ") || !strstr(msg, "vm-busy: still busy after 0.") ||
            !strstr(msg, "(processes: 4242 4343); stop them") || !strstr(msg, "left in place"))
                fail_msg("unclear: %s", msg);
        assert_true(fx_exists(f, "ppn.slice/vm-busy"));
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_detect_v2),
                T(test_detect_hybrid),
                T(test_detect_hybrid_comounted),
                T(test_detect_unified_with_cpu),
                T(test_detect_none_empty),
                T(test_detect_none_v2_without_cpu),
                T(test_detect_none_hybrid_without_cpu),
                T(test_detect_fs_magic),
                cmocka_unit_test(test_name_valid),
                cmocka_unit_test(test_weight_to_shares),
                cmocka_unit_test(test_shares_to_weight),
                cmocka_unit_test(test_weight_round_trip_and_ratios),
                cmocka_unit_test(test_parse_proc_cgroup),
                T(test_open_v2_enables_cpu),
                T(test_open_v2_already_enabled_writes_nothing),
                T(test_open_v2_new_parent_enoent_rolls_back),
                T(test_open_bad_parent),
                T(test_open_missing_root),
                T(test_open_v2_cpu_unavailable),
                T(test_open_v1_creates_parent),
                T(test_open_delegated_evacuates_daemon),
                T(test_open_own_cgroup_file_errors),
                T(test_evacuate_refuses_foreign_leaf),
                T(test_v2_weight_set_get_attach),
                T(test_v1_weight_scaled),
                T(test_v1_create_enoent_rolls_back),
                T(test_vm_bad_input),
                T(test_foreign_group_untouched),
                T(test_remove),
                T(test_list),
                T(test_readback_mismatch),
                T(test_eacces),
                T(test_erofs),
                T(test_ebusy),
        };
#undef T
        return cmocka_run_group_tests(tests, NULL, NULL);
}
