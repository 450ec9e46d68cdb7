/* SPDX-License-Identifier: Apache-2.0 */
#include "cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <time.h>

#include "log.h"

/* Messages carry whole paths; a cgroup path longer than this is cut in the message only. */
#define PATH_MSG_MAX 320
/* Polling while a group empties: QEMU's exit takes milliseconds, so 10 ms is fine-grained
 * enough and costs nothing. */
#define REMOVE_POLL_USEC (10 * USEC_PER_MSEC)
/* A group we made a moment ago that still cannot go: give exiting members 1 s. */
#define ROLLBACK_TIMEOUT_USEC USEC_PER_SEC
/* cgroup.procs of a crowded parent: ~7 bytes per pid, so 1 MiB is ~150,000 processes. */
#define READ_MAX (1024 * 1024)

struct ppn_cgroup {
        enum ppn_cgroup_mode mode;
        int root_fd;
        int hier_fd;     /* the hierarchy holding cpu */
        int parent_fd;
        char *parent_rel;   /* parent relative to hier_fd */
        char *parent_path;  /* absolute, for messages */
        char *leaf;         /* daemon leaf name, if evacuate_parent() used one */
};

const char *ppn_cgroup_mode_to_string(enum ppn_cgroup_mode mode) {
        static const char *const names[] = {
                [PPN_CGROUP_NONE] = "none", [PPN_CGROUP_V1] = "v1", [PPN_CGROUP_V2] = "v2",
        };
        return (unsigned) mode < ELEMENTSOF(names) ? names[mode] : "invalid";
}

/* What to do about an errno, in the user's words. */
static const char *hint(int r) {
        static const struct {
                int err;
                const char *hint;
        } hints[] = {
                { ENOENT, "check the cgroup root setting and that the cpu controller is enabled "
                          "in the parent's cgroup.subtree_control" },
                { EACCES, "run ppnd as root, or delegate the subtree to its user (systemd "
                          "Delegate=yes)" },
                { EPERM, "run ppnd as root, or delegate the subtree to its user (systemd "
                         "Delegate=yes)" },
                { EROFS, "the cgroup filesystem is mounted read-only (as in many containers): "
                         "remount it read-write or run ppnd where it is writable" },
                { EBUSY, "the group still holds processes or child groups: stop them first" },
                { ESRCH, "the process has exited: the VM is gone" },
                { ENOSPC, "the cgroup limit (cgroup.max.descendants) or memory is exhausted" },
                { EINVAL, "the kernel refused the value: check the cgroup version and range" },
        };
        /* Root without CAP_DAC_OVERRIDE (the systemd unit bounds it away) is refused only
         * where the owner may not write: a hierarchy's root directory is mode 0555. */
        if ((r == -EACCES || r == EACCES) && geteuid() == 0)
                return "ppnd runs as root without CAP_DAC_OVERRIDE (as its systemd unit does) "
                       "and a cgroup hierarchy's root directory is mode 0555: create the parent "
                       "group once (mkdir, as full root) or use [cgroup] delegated = yes";
        for (size_t i = 0; i < ELEMENTSOF(hints); i++)
                if (hints[i].err == -r || hints[i].err == r)
                        return hints[i].hint;
        return "see the kernel log";
}

static int fail(struct ppn_error *err, int r, const char *what, const char *path) {
        log_debug_errno(r, "cgroup: cannot %s %s: %m", what, path);
        return ppn_error_set(err, r, "cannot %s %s: %s; %s", what, path, strerror(-r), hint(r));
}

/* Appends to an error message already set (for what a rollback did or did not undo). */
static void error_append(struct ppn_error *err, const char *fmt, ...) _printf_(2, 3);
static void error_append(struct ppn_error *err, const char *fmt, ...) {
        va_list ap;
        size_t len;

        if (!err)
                return;
        len = strlen(err->msg);
        va_start(ap, fmt);
        vsnprintf(err->msg + len, sizeof(err->msg) - len, fmt, ap);
        va_end(ap);
}

/* ---- Pure parts ---- */

bool ppn_cgroup_name_valid(const char *name) {
        size_t len;

        if (!name)
                return false;
        len = strlen(name);
        if (len == 0 || len > PPN_CGROUP_NAME_MAX || strstr(name, ".."))
                return false;
        if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == len;
}

int ppn_cpu_weight_to_shares(uint32_t weight, uint32_t *ret_shares) {
        uint32_t shares;

        if (weight < PPN_CPU_WEIGHT_MIN || weight > PPN_CPU_WEIGHT_MAX)
                return -ERANGE;
        /* round(w × 10.24): 1..10000 → 10..102400, inside v1's 2..262144; the clamps only
         * guard against a change of the constants. */
        shares = (weight * 1024u + 50u) / 100u;
        if (shares < PPN_CPU_SHARES_MIN)
                shares = PPN_CPU_SHARES_MIN;
        if (shares > PPN_CPU_SHARES_MAX)
                shares = PPN_CPU_SHARES_MAX;
        *ret_shares = shares;
        return 0;
}

int ppn_cpu_shares_to_weight(uint32_t shares, uint32_t *ret_weight) {
        uint64_t weight;

        if (shares < PPN_CPU_SHARES_MIN || shares > PPN_CPU_SHARES_MAX)
                return -ERANGE;
        /* round(s × 100 / 1024). For s = round(w × 10.24) the error before rounding is at most
         * 0.5 × 100/1024 = 0.049, so the round trip weight → shares → weight is exact. */
        weight = ((uint64_t) shares * 100u + 512u) / 1024u;
        if (weight < PPN_CPU_WEIGHT_MIN)
                weight = PPN_CPU_WEIGHT_MIN;
        if (weight > PPN_CPU_WEIGHT_MAX)
                weight = PPN_CPU_WEIGHT_MAX;
        *ret_weight = (uint32_t) weight;
        return 0;
}

/* True if the whitespace-separated list contains word. */
static bool has_word(const char *list, const char *word, const char *seps) {
        size_t wl = strlen(word);

        for (const char *p = list; *p; ) {
                size_t n;
                p += strspn(p, seps);
                n = strcspn(p, seps);
                if (n == wl && strncmp(p, word, wl) == 0)
                        return true;
                p += n;
        }
        return false;
}

/* One line of /proc/PID/cgroup: "ID:CONTROLLERS:PATH". Returns PATH if the line matches. */
static const char *proc_cgroup_match(const char *line, size_t len, enum ppn_cgroup_mode mode,
                                     size_t *ret_len) {
        const char *c1 = memchr(line, ':', len), *c2;
        char ctrls[256];
        size_t clen;

        if (!c1)
                return NULL;
        c2 = memchr(c1 + 1, ':', len - (size_t) (c1 + 1 - line));
        if (!c2)
                return NULL;
        clen = (size_t) (c2 - c1 - 1);
        if (mode == PPN_CGROUP_V2) {
                if (clen != 0 || c1 - line != 1 || line[0] != '0')
                        return NULL;
        } else {
                if (clen == 0 || clen >= sizeof(ctrls))
                        return NULL;
                memcpy(ctrls, c1 + 1, clen);
                ctrls[clen] = '\0';
                if (!has_word(ctrls, "cpu", ","))
                        return NULL;
        }
        *ret_len = len - (size_t) (c2 + 1 - line);
        return c2 + 1;
}

int ppn_cgroup_parse_proc_cgroup(const char *text, enum ppn_cgroup_mode mode, char **ret_path) {
        if (mode != PPN_CGROUP_V1 && mode != PPN_CGROUP_V2)
                return -EINVAL;
        for (const char *p = text; p && *p; ) {
                size_t len = strcspn(p, "\n"), plen;
                const char *path = proc_cgroup_match(p, len, mode, &plen);
                if (path && plen > 0 && path[0] == '/') {
                        char *s = strndup(path, plen);
                        if (!s)
                                return -ENOMEM;
                        *ret_path = s;
                        return 0;
                }
                p += len + (p[len] == '\n');
        }
        return -ENOENT;
}

/* ---- File I/O relative to directory fds ---- */

static int read_at(int dfd, const char *file, char **ret) {
        _cleanup_close_ int fd = openat(dfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0)
                return -errno;
        /* READ_MAX - 2: a file of READ_MAX - 1 bytes or more is refused, as it always was. */
        return read_full_fd(fd, READ_MAX - 2, ret, NULL);
}

/* One write(2): cgroup files take a value per write, and report errors from it. */
static int write_at(int dfd, const char *file, const char *value) {
        _cleanup_close_ int fd = openat(dfd, file, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
        size_t len = strlen(value);
        ssize_t k;

        if (fd < 0)
                return -errno;
        k = write(fd, value, len);
        if (k < 0)
                return -errno;
        return (size_t) k == len ? 0 : -EIO;
}

static void trim(char *s) {
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
                s[--n] = '\0';
}

static int open_dir_at(int dfd, const char *name) {
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? -errno : fd;
}

/* The hierarchies under the root may be symlinks: many hybrid hosts have cpu -> cpu,cpuacct. */
static int open_hierarchy_at(int dfd, const char *name) {
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* ---- Ownership mark ---- */

static int mark_ours(int fd) {
        static const char v[] = PPN_CGROUP_OWNER_VALUE;

        if (fsetxattr(fd, PPN_CGROUP_OWNER_XATTR, v, sizeof(v) - 1, 0) == 0)
                return 0;
        if (errno != EOPNOTSUPP && errno != EPERM)
                return -errno;
        /* Older cgroupfs takes only trusted.* attributes (root only). */
        if (fsetxattr(fd, PPN_CGROUP_OWNER_XATTR_TRUSTED, v, sizeof(v) - 1, 0) == 0)
                return 0;
        return -errno;
}

/* 1 if marked ours, 0 if not, -errno if the marks cannot be read. */
static int is_ours(int fd) {
        static const char *const names[] = { PPN_CGROUP_OWNER_XATTR, PPN_CGROUP_OWNER_XATTR_TRUSTED };
        char v[32];

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                ssize_t n = fgetxattr(fd, names[i], v, sizeof(v));
                if (n == (ssize_t) strlen(PPN_CGROUP_OWNER_VALUE) &&
                    memcmp(v, PPN_CGROUP_OWNER_VALUE, (size_t) n) == 0)
                        return 1;
                if (n < 0 && errno != ENODATA && errno != EOPNOTSUPP && errno != EPERM &&
                    errno != ERANGE)
                        return -errno;
        }
        return 0;
}

/* ---- Detection ---- */

static const struct probe {
        const char *dir;
        enum ppn_cgroup_mode mode;
        const char *file;
        long magic;
} probes[] = {
        { ".", PPN_CGROUP_V2, "cgroup.controllers", CGROUP2_SUPER_MAGIC },
        { ".", PPN_CGROUP_V1, "cpu.shares", CGROUP_SUPER_MAGIC },
        { "cpu", PPN_CGROUP_V1, "cpu.shares", CGROUP_SUPER_MAGIC },
        { "unified", PPN_CGROUP_V2, "cgroup.controllers", CGROUP2_SUPER_MAGIC },
};

/* 1 if the probe finds a usable cpu controller, 0 if not (why says what it found). */
static int probe_one(int root_fd, const struct probe *p, bool check_magic, char *why, size_t len) {
        _cleanup_close_ int fd = open_hierarchy_at(root_fd, p->dir);
        _cleanup_free_ char *text = NULL;
        struct statfs sfs;
        int r;

        if (fd < 0) {
                snprintf(why, len, "%s/: %s", p->dir, strerror(-fd));
                return 0;
        }
        if (check_magic && (fstatfs(fd, &sfs) < 0 || (long) sfs.f_type != p->magic)) {
                snprintf(why, len, "%s/ is not cgroup%s", p->dir,
                         p->mode == PPN_CGROUP_V2 ? "2" : " v1");
                return 0;
        }
        r = read_at(fd, p->file, &text);
        if (r < 0) {
                snprintf(why, len, "%s/%s: %s", p->dir, p->file, strerror(-r));
                return 0;
        }
        trim(text);
        if (p->mode == PPN_CGROUP_V2 && !has_word(text, "cpu", " \n")) {
                snprintf(why, len, "%s/%s lists '%.40s', no cpu", p->dir, p->file, text);
                return 0;
        }
        return 1;
}

int ppn_cgroup_detect(int root_fd, const char *root_path, bool check_fs_magic,
                      struct ppn_cgroup_layout *ret_layout, struct ppn_error *err) {
        char reasons[360] = "";

        for (size_t i = 0; i < ELEMENTSOF(probes); i++) {
                char why[120];
                size_t used = strlen(reasons);
                if (probe_one(root_fd, &probes[i], check_fs_magic, why, sizeof(why)) > 0) {
                        struct ppn_cgroup_layout l = { .mode = probes[i].mode };
                        snprintf(l.hierarchy, sizeof(l.hierarchy), "%s", probes[i].dir);
                        log_debug("cgroup: %s: cpu controller on cgroup %s at %s/", root_path,
                                  ppn_cgroup_mode_to_string(l.mode), l.hierarchy);
                        *ret_layout = l;
                        return 0;
                }
                snprintf(reasons + used, sizeof(reasons) - used, "%s%s", used ? "; " : "", why);
        }
        return ppn_error_set(err, -EOPNOTSUPP,
                             "no usable cpu controller under %s (%s); mount cgroup2 with the cpu "
                             "controller there, or a cgroup v1 cpu hierarchy at %s/cpu, or point "
                             "the cgroup root setting at one", root_path, reasons, root_path);
}

/* ---- Groups ---- */

/*
 * mkdir NAME under dfd and mark it ours; an existing directory is accepted, and must carry
 * the mark if require_ours. Returns 1 created, 0 existed, -errno; *ret_fd is the group's fd.
 */
static int make_group(int dfd, const char *name, const char *path, bool require_ours,
                      int *ret_fd, struct ppn_error *err) {
        _cleanup_close_ int fd = -1;
        bool created = mkdirat(dfd, name, 0755) == 0;
        int r = 1;

        if (!created && errno != EEXIST)
                return fail(err, -errno, "create cgroup", path);
        fd = open_dir_at(dfd, name);
        if (fd < 0)
                r = fail(err, fd, "open cgroup", path);
        else if (created && (r = mark_ours(fd)) < 0)
                r = fail(err, r, "mark (xattr " PPN_CGROUP_OWNER_XATTR ")", path);
        else if (!created && require_ours && (r = is_ours(fd)) < 0)
                r = fail(err, r, "read the owner mark of", path);
        else if (!created && r == 0)
                r = ppn_error_set(err, -EEXIST, "cgroup %s exists but was not created by "
                                  "ppn-pool (no %s mark); it is left untouched: remove it or "
                                  "rename the VM", path, PPN_CGROUP_OWNER_XATTR);
        if (r < 0) {
                if (created && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
                        error_append(err, "; the new group could not be removed either (%s): "
                                     "remove it by hand", strerror(errno));
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return created;
}

/* v2: make sure "cpu" is in dfd's cgroup.subtree_control so its children get cpu.weight. */
static int ensure_cpu(int dfd, const char *path, struct ppn_error *err) {
        _cleanup_free_ char *ctl = NULL, *avail = NULL;
        char p[PATH_MSG_MAX];
        int r;

        snprintf(p, sizeof(p), "%s/cgroup.subtree_control", path);
        r = read_at(dfd, "cgroup.subtree_control", &ctl);
        if (r < 0)
                return fail(err, r, "read", p);
        if (has_word(ctl, "cpu", " \n"))
                return 0;
        snprintf(p, sizeof(p), "%s/cgroup.controllers", path);
        r = read_at(dfd, "cgroup.controllers", &avail);
        if (r < 0)
                return fail(err, r, "read", p);
        if (!has_word(avail, "cpu", " \n"))
                return ppn_error_set(err, -EOPNOTSUPP, "the cpu controller is not available in "
                                     "%s; enable it in the parent's cgroup.subtree_control or "
                                     "delegate it (systemd Delegate=yes)", p);
        snprintf(p, sizeof(p), "%s/cgroup.subtree_control", path);
        r = write_at(dfd, "cgroup.subtree_control", "+cpu");
        if (r == -EBUSY)
                return ppn_error_set(err, r, "cannot write +cpu to %s: the group holds processes "
                                     "of its own and cgroup v2 enables controllers only above "
                                     "leaves; move them into a leaf (the daemon_leaf option)", p);
        if (r < 0)
                return fail(err, r, "write +cpu to", p);
        log_debug("cgroup: enabled +cpu in %s", p);
        return 0;
}

/* Checks the parent path: relative, no empty, "." or ".." components, not the root itself. */
static int parent_normalize(const char *parent, char **ret, struct ppn_error *err) {
        _cleanup_free_ char *s = NULL;
        size_t n;

        while (*parent == '/')
                parent++;
        s = strdup(parent);
        if (!s)
                return -ENOMEM;
        n = strlen(s);
        while (n > 0 && s[n - 1] == '/')
                s[--n] = '\0';
        if (n == 0 || n >= PATH_MSG_MAX / 2)
                return ppn_error_set(err, -EINVAL, "cgroup parent '%s' must name a group below "
                                     "the hierarchy root, under %d characters", parent,
                                     PATH_MSG_MAX / 2);
        for (const char *c = s; *c; ) {
                size_t len = strcspn(c, "/");
                if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && !strncmp(c, "..", 2)))
                        return ppn_error_set(err, -EINVAL, "cgroup parent '%s' has an empty, "
                                             "'.' or '..' component", parent);
                c += len + (c[len] == '/');
        }
        *ret = TAKE_PTR(s);
        return 0;
}

/* Removes the components of rel from index `from` (0-based) down to depth-1, deepest first. */
static void unmake_parent(int hier_fd, const char *rel, int from, int depth) {
        char buf[PATH_MSG_MAX];

        for (int i = depth - 1; i >= from; i--) {
                int k = 0;
                char *c;
                snprintf(buf, sizeof(buf), "%s", rel);
                for (c = buf; *c; c++)
                        if (*c == '/' && k++ == i) {
                                *c = '\0';
                                break;
                        }
                if (unlinkat(hier_fd, buf, AT_REMOVEDIR) < 0)
                        log_debug_errno(errno, "cgroup: cannot remove new parent part %s: %m", buf);
        }
}

/* Walks rel from the hierarchy root, creating what is missing and (v2) enabling +cpu above. */
static int make_parent(struct ppn_cgroup *cg, const char *hier_path, const char *daemon_leaf,
                       struct ppn_error *err) {
        _cleanup_close_ int dfd = fcntl(cg->hier_fd, F_DUPFD_CLOEXEC, 3);
        _cleanup_free_ char *walk = strdup(cg->parent_rel);
        char path[PATH_MSG_MAX], *save = NULL;
        int r = 0, depth = 0, first_created = -1;

        if (dfd < 0 || !walk)
                return dfd < 0 ? -errno : -ENOMEM;
        snprintf(path, sizeof(path), "%s", hier_path);
        for (char *c = strtok_r(walk, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                int fd = -1;
                if (cg->mode == PPN_CGROUP_V2 && (r = ensure_cpu(dfd, path, err)) < 0)
                        goto undo;
                snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", c);
                r = make_group(dfd, c, path, false, &fd, err);
                if (r < 0)
                        goto undo;
                if (r > 0 && first_created < 0)
                        first_created = depth;
                depth++;
                close(dfd);
                dfd = fd;
        }
        cg->parent_fd = TAKE_FD(dfd);
        if (cg->mode == PPN_CGROUP_V2 && daemon_leaf &&
            (r = ppn_cgroup_evacuate_parent(cg, daemon_leaf, err)) < 0)
                goto undo;
        if (cg->mode == PPN_CGROUP_V2 && (r = ensure_cpu(cg->parent_fd, path, err)) < 0)
                goto undo;
        return 0;
undo:
        if (first_created >= 0)
                unmake_parent(cg->hier_fd, cg->parent_rel, first_created, depth);
        return r;
}

struct ppn_cgroup *ppn_cgroup_free(struct ppn_cgroup *cg) {
        if (!cg)
                return NULL;
        closep(&cg->root_fd);
        closep(&cg->hier_fd);
        closep(&cg->parent_fd);
        free(cg->parent_rel);
        free(cg->parent_path);
        free(cg->leaf);
        free(cg);
        return NULL;
}

/* The parent named by the own_cgroup_file (e.g. /proc/self/cgroup) for the detected mode. */
static int own_parent(const char *file, enum ppn_cgroup_mode mode, char **ret,
                      struct ppn_error *err) {
        _cleanup_free_ char *text = NULL;
        int r = read_at(AT_FDCWD, file, &text);

        if (r < 0)
                return fail(err, r, "read", file);
        r = ppn_cgroup_parse_proc_cgroup(text, mode, ret);
        if (r == -ENOENT)
                return ppn_error_set(err, r, "%s names no cgroup %s group for the cpu controller; "
                                     "set the cgroup parent explicitly", file,
                                     ppn_cgroup_mode_to_string(mode));
        return r;
}

static int open_layout(struct ppn_cgroup *cg, const struct ppn_cgroup_options *o,
                       const char *root, char **ret_hier_path, struct ppn_error *err) {
        struct ppn_cgroup_layout l;
        int r;

        cg->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cg->root_fd < 0)
                return fail(err, -errno, "open the cgroup root", root);
        r = ppn_cgroup_detect(cg->root_fd, root, !o->skip_fs_check, &l, err);
        if (r < 0)
                return r;
        cg->mode = l.mode;
        cg->hier_fd = open_hierarchy_at(cg->root_fd, l.hierarchy);
        if (cg->hier_fd < 0)
                return fail(err, cg->hier_fd, "open the cpu hierarchy under", root);
        if (strcmp(l.hierarchy, ".") == 0)
                *ret_hier_path = strdup(root);
        else if (asprintf(ret_hier_path, "%s/%s", root, l.hierarchy) < 0)
                *ret_hier_path = NULL;
        return *ret_hier_path ? 0 : -ENOMEM;
}

int ppn_cgroup_open(const struct ppn_cgroup_options *opts, struct ppn_cgroup **ret,
                    struct ppn_error *err) {
        static const struct ppn_cgroup_options none = { 0 };
        const struct ppn_cgroup_options *o = opts ? opts : &none;
        const char *root = o->root ? o->root : PPN_CGROUP_ROOT_DEFAULT;
        _cleanup_(ppn_cgroup_freep) struct ppn_cgroup *cg = calloc(1, sizeof(*cg));
        _cleanup_free_ char *hier_path = NULL, *own = NULL;
        int r;

        if (!cg)
                return -ENOMEM;
        cg->root_fd = cg->hier_fd = cg->parent_fd = -1;
        r = open_layout(cg, o, root, &hier_path, err);
        if (r < 0)
                return r;
        if (o->own_cgroup_file && (r = own_parent(o->own_cgroup_file, cg->mode, &own, err)) < 0)
                return r;
        r = parent_normalize(own ? own : o->parent ? o->parent : PPN_CGROUP_PARENT_DEFAULT,
                             &cg->parent_rel, err);
        if (r < 0)
                return r;
        if (asprintf(&cg->parent_path, "%s/%s", hier_path, cg->parent_rel) < 0) {
                cg->parent_path = NULL;
                return -ENOMEM;
        }
        r = make_parent(cg, hier_path, o->daemon_leaf, err);
        if (r < 0)
                return r;
        log_debug("cgroup: VM groups go under %s (cgroup %s)", cg->parent_path,
                  ppn_cgroup_mode_to_string(cg->mode));
        *ret = TAKE_PTR(cg);
        return 0;
}

enum ppn_cgroup_mode ppn_cgroup_get_mode(const struct ppn_cgroup *cg) {
        return cg ? cg->mode : PPN_CGROUP_NONE;
}

const char *ppn_cgroup_parent_path(const struct ppn_cgroup *cg) {
        return cg ? cg->parent_path : NULL;
}

/* ---- Processes ---- */

static int write_pid(int gfd, const char *path, pid_t pid, struct ppn_error *err) {
        char buf[32];
        int r;

        snprintf(buf, sizeof(buf), "%d\n", (int) pid);
        r = write_at(gfd, "cgroup.procs", buf);
        if (r == -ESRCH)
                return ppn_error_set(err, r, "cannot move process %d into %s: it has exited "
                                     "(the VM is gone)", (int) pid, path);
        if (r < 0) {
                char what[64];
                snprintf(what, sizeof(what), "move process %d into", (int) pid);
                return fail(err, r, what, path);
        }
        return 0;
}

/* 1 if pid is listed in the group's cgroup.procs, 0 if not, -errno. */
static int procs_contain(int gfd, pid_t pid) {
        _cleanup_free_ char *text = NULL;
        char word[24];
        int r = read_at(gfd, "cgroup.procs", &text);

        if (r < 0)
                return r;
        snprintf(word, sizeof(word), "%d", (int) pid);
        return has_word(text, word, " \n");
}

int ppn_cgroup_evacuate_parent(struct ppn_cgroup *cg, const char *leaf, struct ppn_error *err) {
        _cleanup_free_ char *text = NULL, *name = NULL;
        _cleanup_close_ int lfd = -1;
        char path[PATH_MSG_MAX], *save = NULL;
        int r, moved = 0;

        if (cg->mode != PPN_CGROUP_V2)
                return 0;
        if (!ppn_cgroup_name_valid(leaf))
                return ppn_error_set(err, -EINVAL, "invalid daemon leaf name '%s'", leaf);
        snprintf(path, sizeof(path), "%s/cgroup.procs", cg->parent_path);
        r = read_at(cg->parent_fd, "cgroup.procs", &text);
        if (r < 0)
                return fail(err, r, "read", path);
        if (text[strspn(text, " \n")] == '\0')
                return 0;
        snprintf(path, sizeof(path), "%s/%s", cg->parent_path, leaf);
        r = make_group(cg->parent_fd, leaf, path, true, &lfd, err);
        if (r < 0)
                return r;
        name = strdup(leaf);
        if (!name)
                return -ENOMEM;
        free(cg->leaf);
        cg->leaf = TAKE_PTR(name);
        for (char *p = strtok_r(text, " \n", &save); p; p = strtok_r(NULL, " \n", &save)) {
                r = write_pid(lfd, path, (pid_t) atoi(p), err);
                if (r == -ESRCH)
                        continue;
                if (r < 0)
                        return r;
                moved++;
        }
        log_debug("cgroup: moved %d process(es) from %s into %s", moved, cg->parent_path, path);
        return moved;
}

/* ---- VM groups ---- */

static int vm_dir(const char *name, char buf[static PPN_CGROUP_NAME_MAX + 8],
                  struct ppn_error *err) {
        if (!ppn_cgroup_name_valid(name))
                return ppn_error_set(err, -EINVAL, "invalid VM name '%.80s': use 1-%d of a-z 0-9 "
                                     "_ . - starting with a letter or digit, no '..' or '/'",
                                     name ? name : "(null)", PPN_CGROUP_NAME_MAX);
        snprintf(buf, PPN_CGROUP_NAME_MAX + 8, PPN_CGROUP_VM_PREFIX "%s", name);
        return 0;
}

/* Opens vm-NAME; for writing it must carry our mark. *ret_fd, and path for messages. */
static int open_vm(struct ppn_cgroup *cg, const char *name, bool to_write, int *ret_fd,
                   char path[static PATH_MSG_MAX], struct ppn_error *err) {
        char dir[PPN_CGROUP_NAME_MAX + 8];
        _cleanup_close_ int fd = -1;
        int r = vm_dir(name, dir, err);

        if (r < 0)
                return r;
        snprintf(path, PATH_MSG_MAX, "%s/%s", cg->parent_path, dir);
        fd = open_dir_at(cg->parent_fd, dir);
        if (fd < 0)
                return fail(err, fd, "open cgroup", path);
        if (to_write) {
                r = is_ours(fd);
                if (r < 0)
                        return fail(err, r, "read the owner mark of", path);
                if (r == 0)
                        return ppn_error_set(err, -EPERM, "cgroup %s was not created by ppn-pool "
                                             "(no %s mark); it is left untouched", path,
                                             PPN_CGROUP_OWNER_XATTR);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static const char *weight_file(const struct ppn_cgroup *cg) {
        return cg->mode == PPN_CGROUP_V2 ? "cpu.weight" : "cpu.shares";
}

/* Writes the weight (converted on v1) and reads it back. */
static int write_weight(struct ppn_cgroup *cg, int gfd, const char *gpath, uint32_t weight,
                        struct ppn_error *err) {
        _cleanup_free_ char *back = NULL;
        char path[PATH_MSG_MAX + 16], value[16], what[48];
        uint32_t raw = weight;
        uint64_t got;
        int r;

        if (cg->mode == PPN_CGROUP_V1 && ppn_cpu_weight_to_shares(weight, &raw) < 0)
                return -ERANGE;
        snprintf(path, sizeof(path), "%s/%s", gpath, weight_file(cg));
        snprintf(value, sizeof(value), "%" PRIu32 "\n", raw);
        snprintf(what, sizeof(what), "write %" PRIu32 " to", raw);
        r = write_at(gfd, weight_file(cg), value);
        if (r < 0)
                return fail(err, r, what, path);
        r = read_at(gfd, weight_file(cg), &back);
        if (r < 0)
                return fail(err, r, "read back", path);
        trim(back);
        if (parse_u64(back, &got) < 0 || got != raw)
                return ppn_error_set(err, -EIO, "wrote %" PRIu32 " to %s but it reads back "
                                     "'%.20s': is it a cgroup file, and is anything else "
                                     "managing this group?", raw, path, back);
        log_debug("cgroup: %s = %" PRIu32 " (weight %" PRIu32 ")", path, raw, weight);
        return 0;
}

static int check_weight(uint32_t weight, struct ppn_error *err) {
        if (weight >= PPN_CPU_WEIGHT_MIN && weight <= PPN_CPU_WEIGHT_MAX)
                return 0;
        return ppn_error_set(err, -ERANGE, "CPU weight %" PRIu32 " is out of range %u-%u "
                             "(default %u)", weight, PPN_CPU_WEIGHT_MIN, PPN_CPU_WEIGHT_MAX,
                             PPN_CPU_WEIGHT_DEFAULT);
}

int ppn_cgroup_vm_create(struct ppn_cgroup *cg, const char *name, uint32_t weight,
                         struct ppn_error *err) {
        char dir[PPN_CGROUP_NAME_MAX + 8], path[PATH_MSG_MAX];
        _cleanup_close_ int gfd = -1;
        int created, r;

        if ((r = vm_dir(name, dir, err)) < 0 || (r = check_weight(weight, err)) < 0)
                return r;
        snprintf(path, sizeof(path), "%s/%s", cg->parent_path, dir);
        created = make_group(cg->parent_fd, dir, path, true, &gfd, err);
        if (created < 0)
                return created;
        r = write_weight(cg, gfd, path, weight, err);
        if (r < 0 && created) {
                if (unlinkat(cg->parent_fd, dir, AT_REMOVEDIR) < 0)
                        error_append(err, "; the new group could not be removed either (%s): "
                                     "remove it by hand", strerror(errno));
                else
                        error_append(err, "; the new group was removed again");
        }
        return r < 0 ? r : created;
}

int ppn_cgroup_vm_attach(struct ppn_cgroup *cg, const char *name, pid_t pid,
                         struct ppn_error *err) {
        char path[PATH_MSG_MAX];
        _cleanup_close_ int gfd = -1;
        int r;

        if (pid <= 0)
                return ppn_error_set(err, -EINVAL, "invalid process id %d", (int) pid);
        r = open_vm(cg, name, true, &gfd, path, err);
        if (r < 0)
                return r;
        r = write_pid(gfd, path, pid, err);
        if (r < 0)
                return r;
        /* A process that is exiting is accepted by the write but not moved (the kernel skips
         * exiting tasks), so check it arrived. */
        r = procs_contain(gfd, pid);
        if (r < 0)
                return fail(err, r, "read the processes of", path);
        if (r == 0)
                return ppn_error_set(err, -ESRCH, "process %d is not in %s/cgroup.procs after the "
                                     "move: it exited while being moved (the VM is gone)",
                                     (int) pid, path);
        log_debug("cgroup: process %d moved into %s", (int) pid, path);
        return 0;
}

int ppn_cgroup_vm_place(struct ppn_cgroup *cg, const char *name, pid_t pid, uint32_t weight,
                        struct ppn_error *err) {
        int created, r, r2;

        created = ppn_cgroup_vm_create(cg, name, weight, err);
        if (created < 0)
                return created;
        r = ppn_cgroup_vm_attach(cg, name, pid, err);
        if (r >= 0 || !created)
                return r < 0 ? r : created;
        r2 = ppn_cgroup_vm_remove(cg, name, ROLLBACK_TIMEOUT_USEC, NULL);
        if (r2 < 0)
                error_append(err, "; its new group could not be removed either (%s): remove "
                             "it by hand", strerror(-r2));
        else
                error_append(err, "; its new group was removed again");
        return r;
}

int ppn_cgroup_vm_set_weight(struct ppn_cgroup *cg, const char *name, uint32_t weight,
                             struct ppn_error *err) {
        char path[PATH_MSG_MAX];
        _cleanup_close_ int gfd = -1;
        int r;

        if ((r = check_weight(weight, err)) < 0 || (r = open_vm(cg, name, true, &gfd, path, err)) < 0)
                return r;
        return write_weight(cg, gfd, path, weight, err);
}

int ppn_cgroup_vm_get_weight(struct ppn_cgroup *cg, const char *name, uint32_t *ret_weight,
                             struct ppn_error *err) {
        _cleanup_free_ char *text = NULL;
        char path[PATH_MSG_MAX], fpath[PATH_MSG_MAX + 16];
        _cleanup_close_ int gfd = -1;
        uint32_t w;
        uint64_t v;
        int r;

        if ((r = open_vm(cg, name, false, &gfd, path, err)) < 0)
                return r;
        snprintf(fpath, sizeof(fpath), "%s/%s", path, weight_file(cg));
        if ((r = read_at(gfd, weight_file(cg), &text)) < 0)
                return fail(err, r, "read", fpath);
        trim(text);
        if (parse_u64(text, &v) < 0 || v > UINT32_MAX)
                return ppn_error_set(err, -EIO, "%s holds '%.20s', not a number", fpath, text);
        w = (uint32_t) v;
        if (cg->mode == PPN_CGROUP_V1 && ppn_cpu_shares_to_weight((uint32_t) v, &w) < 0)
                return ppn_error_set(err, -ERANGE, "%s holds %" PRIu64 ", outside %u-%u",
                                     fpath, v, PPN_CPU_SHARES_MIN, PPN_CPU_SHARES_MAX);
        *ret_weight = w;
        return 0;
}

/* "usage_usec N" from a cpu.stat text. */
static int parse_usage_usec(const char *text, uint64_t *ret) {
        for (const char *p = text; *p; ) {
                size_t len = strcspn(p, "\n");
                if (len > 11 && strncmp(p, "usage_usec ", 11) == 0) {
                        char num[24];
                        snprintf(num, sizeof(num), "%.*s", (int) (len - 11), p + 11);
                        return parse_u64(num, ret);
                }
                p += len + (p[len] == '\n');
        }
        return -ENOENT;
}

int ppn_cgroup_vm_usage(struct ppn_cgroup *cg, const char *name, uint64_t *ret_usec,
                        struct ppn_error *err) {
        const char *file = cg->mode == PPN_CGROUP_V2 ? "cpu.stat" : "cpuacct.usage";
        _cleanup_free_ char *text = NULL;
        char path[PATH_MSG_MAX], fpath[PATH_MSG_MAX + 16];
        _cleanup_close_ int gfd = -1;
        uint64_t v;
        int r;

        if ((r = open_vm(cg, name, false, &gfd, path, err)) < 0)
                return r;
        snprintf(fpath, sizeof(fpath), "%s/%s", path, file);
        r = read_at(gfd, file, &text);
        if (r == -ENOENT && cg->mode == PPN_CGROUP_V1)
                return ppn_error_set(err, -EOPNOTSUPP, "no %s: cpuacct is not mounted together "
                                     "with cpu here; read the process's CPU time instead", fpath);
        if (r < 0)
                return fail(err, r, "read", fpath);
        trim(text);
        r = cg->mode == PPN_CGROUP_V2 ? parse_usage_usec(text, &v) : parse_u64(text, &v);
        if (r < 0)
                return ppn_error_set(err, -EIO, "%s has no CPU usage figure", fpath);
        /* cpuacct.usage counts nanoseconds. */
        *ret_usec = cg->mode == PPN_CGROUP_V2 ? v : v / NSEC_PER_USEC;
        return 0;
}

void ppn_cgroup_names_free(char **names) {
        for (char **n = names; n && *n; n++)
                free(*n);
        free(names);
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Adds d_name (a "vm-" directory) to *names if it is a valid name and marked ours. */
static int list_add(struct ppn_cgroup *cg, const char *d_name, char ***names, size_t *n) {
        const char *name = d_name + strlen(PPN_CGROUP_VM_PREFIX);
        _cleanup_close_ int fd = -1;
        char **grown;

        if (strncmp(d_name, PPN_CGROUP_VM_PREFIX, strlen(PPN_CGROUP_VM_PREFIX)) != 0 ||
            !ppn_cgroup_name_valid(name))
                return 0;
        fd = open_dir_at(cg->parent_fd, d_name);
        if (fd < 0 || is_ours(fd) <= 0)
                return 0;
        grown = realloc(*names, (*n + 2) * sizeof(char *));
        if (!grown)
                return -ENOMEM;
        *names = grown;
        if (!(grown[*n] = strdup(name)))
                return -ENOMEM;
        grown[++*n] = NULL;
        return 0;
}

int ppn_cgroup_vm_list(struct ppn_cgroup *cg, char ***ret_names, struct ppn_error *err) {
        int fd = openat(cg->parent_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char **names;
        size_t n = 0;
        struct dirent *de;
        DIR *d;
        int r;

        if (fd < 0)
                return fail(err, -errno, "list the groups in", cg->parent_path);
        d = fdopendir(fd); /* d owns fd from here */
        if (!d) {
                r = -errno;
                close(fd);
                return fail(err, r, "list the groups in", cg->parent_path);
        }
        names = calloc(1, sizeof(char *));
        r = names ? 0 : -ENOMEM;
        while (r == 0 && (de = readdir(d)))
                if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)
                        r = list_add(cg, de->d_name, &names, &n);
        closedir(d);
        if (r < 0) {
                ppn_cgroup_names_free(names);
                return r;
        }
        qsort(names, n, sizeof(char *), cmp_names);
        *ret_names = names;
        return (int) n;
}

/* The busy error: which processes are still in the group. */
static int busy_error(int dfd, const char *dir, const char *path, uint64_t waited_usec,
                      struct ppn_error *err) {
        _cleanup_close_ int gfd = open_dir_at(dfd, dir);
        _cleanup_free_ char *procs = NULL;
        char list[80] = "";

        if (gfd >= 0 && read_at(gfd, "cgroup.procs", &procs) == 0) {
                for (char *c = procs; *c; c++)
                        if (*c == '\n')
                                *c = ' ';
                trim(procs);
                snprintf(list, sizeof(list), "%.60s%s", procs, strlen(procs) > 60 ? " ..." : "");
        }
        return ppn_error_set(err, -EBUSY, "cannot remove cgroup %s: still busy after %.1f s "
                             "(processes: %s); stop them (the VM's QEMU) and retry; the group is "
                             "left in place", path, (double) waited_usec / 1e6,
                             list[0] ? list : "none; child groups?");
}

/* rmdir with a bounded wait while EBUSY. 1 removed, 0 already gone, -errno. */
static int remove_dir(int dfd, const char *dir, const char *path, uint64_t timeout_usec,
                      struct ppn_error *err) {
        uint64_t start = now_usec();

        for (;;) {
                uint64_t waited;
                if (unlinkat(dfd, dir, AT_REMOVEDIR) == 0) {
                        log_debug("cgroup: removed %s", path);
                        return 1;
                }
                if (errno == ENOENT)
                        return 0;
                if (errno != EBUSY)
                        return fail(err, -errno, "remove cgroup", path);
                waited = now_usec() - start;
                if (waited >= timeout_usec)
                        return busy_error(dfd, dir, path, waited, err);
                uint64_t nap = timeout_usec - waited < REMOVE_POLL_USEC ?
                               timeout_usec - waited : REMOVE_POLL_USEC;
                nanosleep(&(struct timespec) { .tv_nsec = (long) nap * (long) NSEC_PER_USEC }, NULL);
        }
}

/* Removes child `dir` of dfd if it carries our mark. */
static int remove_ours(int dfd, const char *dir, const char *path, uint64_t timeout_usec,
                       struct ppn_error *err) {
        _cleanup_close_ int fd = open_dir_at(dfd, dir);
        int r;

        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fail(err, fd, "open cgroup", path);
        r = is_ours(fd);
        if (r < 0)
                return fail(err, r, "read the owner mark of", path);
        if (r == 0)
                return ppn_error_set(err, -EPERM, "cgroup %s was not created by ppn-pool (no %s "
                                     "mark); it is left in place", path, PPN_CGROUP_OWNER_XATTR);
        return remove_dir(dfd, dir, path, timeout_usec, err);
}

int ppn_cgroup_vm_remove(struct ppn_cgroup *cg, const char *name, uint64_t timeout_usec,
                         struct ppn_error *err) {
        char dir[PPN_CGROUP_NAME_MAX + 8], path[PATH_MSG_MAX];
        int r = vm_dir(name, dir, err);

        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/%s", cg->parent_path, dir);
        return remove_ours(cg->parent_fd, dir, path, timeout_usec, err);
}

int ppn_cgroup_remove_parent(struct ppn_cgroup *cg, uint64_t timeout_usec, struct ppn_error *err) {
        char path[PATH_MSG_MAX];
        int r;

        if (cg->leaf) {
                snprintf(path, sizeof(path), "%s/%s", cg->parent_path, cg->leaf);
                r = remove_ours(cg->parent_fd, cg->leaf, path, timeout_usec, err);
                if (r < 0)
                        return r;
        }
        return remove_ours(cg->hier_fd, cg->parent_rel, cg->parent_path, timeout_usec, err);
}
