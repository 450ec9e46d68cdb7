/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The CPU pool's cgroups. Finds the hierarchy that holds the cpu controller (cgroup v2, or the
 * v1 cpu hierarchy of a hybrid host), keeps one parent group for all VMs, and gives each VM a
 * leaf group "vm-NAME" whose weight is set, read back and changed live.
 *
 * One weight scale everywhere: the cgroup v2 one, 1–10000, default 100. On a v1 host the weight
 * is written as cpu.shares = round(weight × 1024 / 100) (100 → 1024, ratios kept, exact round
 * trip); see docs/cpu-weights.md.
 *
 * All file I/O goes through directory fds opened under a root that is a parameter, so tests
 * point the module at a temporary tree or at a guest's hierarchy.
 *
 * Ownership: every group this module creates carries the extended attribute
 * "user.ppn-pool.owner" = "ppn-pool" (or "trusted.ppn-pool.owner" where the filesystem refuses
 * user.* attributes). The mark lives on the group itself, so it survives a daemon restart and
 * disappears with the group. The module writes to (weight, processes) and removes only marked
 * groups; a "vm-NAME" group that exists without the mark is refused, never adopted.
 *
 * Conventions: functions return a negative errno on failure and, when err is non-NULL, say in
 * err->msg what failed, on which path, and what to do. ret_* out-parameters are written only on
 * success. Nothing is logged above debug level.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define PPN_CGROUP_ROOT_DEFAULT "/sys/fs/cgroup"
#define PPN_CGROUP_PARENT_DEFAULT "ppn.slice"
#define PPN_CGROUP_OWNER_XATTR "user.ppn-pool.owner"
#define PPN_CGROUP_OWNER_XATTR_TRUSTED "trusted.ppn-pool.owner"
#define PPN_CGROUP_OWNER_VALUE "ppn-pool"
#define PPN_CGROUP_VM_PREFIX "vm-"
/* Same limit as the ledger's VM names: [a-z0-9][a-z0-9_.-]{0,62}. */
#define PPN_CGROUP_NAME_MAX 63

#define PPN_CPU_WEIGHT_MIN 1u
#define PPN_CPU_WEIGHT_DEFAULT 100u
#define PPN_CPU_WEIGHT_MAX 10000u
#define PPN_CPU_SHARES_MIN 2u
#define PPN_CPU_SHARES_DEFAULT 1024u
#define PPN_CPU_SHARES_MAX 262144u

enum ppn_cgroup_mode {
        PPN_CGROUP_NONE,
        PPN_CGROUP_V1,  /* cpu controller on a cgroup v1 hierarchy (hybrid host): cpu.shares */
        PPN_CGROUP_V2,  /* cpu controller on cgroup v2: cpu.weight */
};

const char *ppn_cgroup_mode_to_string(enum ppn_cgroup_mode mode);

/* Where the cpu controller lives under the root. */
struct ppn_cgroup_layout {
        enum ppn_cgroup_mode mode;
        char hierarchy[16];  /* directory under the root: ".", "cpu" or "unified" */
};

/*
 * Detects the hierarchy under root_fd (root_path is used only in messages). Probes, in order:
 * root is cgroup v2 with "cpu" in cgroup.controllers; root is a v1 cpu hierarchy (cpu.shares);
 * root/cpu is a v1 cpu hierarchy (hybrid host); root/unified is cgroup v2 with cpu.
 * check_fs_magic also requires each probed directory to be a cgroup filesystem (statfs);
 * fixtures pass false. Returns 0, or -EOPNOTSUPP when nothing is usable (err says what each
 * probe found), or -errno.
 */
int ppn_cgroup_detect(int root_fd, const char *root_path, bool check_fs_magic,
                      struct ppn_cgroup_layout *ret_layout, struct ppn_error *err);

/* A VM (or leaf) name: [a-z0-9][a-z0-9_.-]{0,62} and no "..". Pure. */
bool ppn_cgroup_name_valid(const char *name);

/*
 * Weight (1–10000) to v1 shares: round(weight × 1024 / 100), so 1 → 10, 100 → 1024,
 * 10000 → 102400 (all inside v1's 2–262144). -ERANGE for a weight outside 1–10000.
 */
int ppn_cpu_weight_to_shares(uint32_t weight, uint32_t *ret_shares);
/*
 * v1 shares (2–262144) to a weight: round(shares × 100 / 1024), clamped to 1–10000 (shares
 * 2–5 → 1, above 102400 → 10000). Inverse of the above for every weight. -ERANGE outside 2–262144.
 */
int ppn_cpu_shares_to_weight(uint32_t shares, uint32_t *ret_weight);

/*
 * Parses /proc/PID/cgroup text: for V2 the "0::PATH" line, for V1 the line whose controller
 * list contains "cpu". Returns 0 and a malloc'd "/PATH", -ENOENT if no such line, -ENOMEM.
 */
int ppn_cgroup_parse_proc_cgroup(const char *text, enum ppn_cgroup_mode mode, char **ret_path);

struct ppn_cgroup;

struct ppn_cgroup_options {
        const char *root;         /* NULL: PPN_CGROUP_ROOT_DEFAULT */
        /* Parent of all VM groups, relative to the hierarchy holding cpu ("ppn.slice" is
         * /sys/fs/cgroup/ppn.slice on v2, /sys/fs/cgroup/cpu/ppn.slice on a hybrid host).
         * Missing components are created (and marked). NULL: PPN_CGROUP_PARENT_DEFAULT. */
        const char *parent;
        /* If set (e.g. "/proc/self/cgroup"), the parent is the group this file names for the
         * detected mode, overriding .parent: the systemd Delegate=yes case. */
        const char *own_cgroup_file;
        /* v2: if the parent holds processes (the daemon itself under Delegate=yes), move them
         * into this leaf first (cgroup v2 allows controllers only above leaves). NULL: don't;
         * then a parent with processes fails with -EBUSY. */
        const char *daemon_leaf;
        bool skip_fs_check;       /* don't insist on cgroupfs (statfs magic): fixtures */
};

/*
 * Opens the root, detects the hierarchy, creates the parent if needed and (v2) enables +cpu in
 * the cgroup.subtree_control of every level from the hierarchy root down to the parent. On
 * failure, parent components created by this call are removed again. Returns 0 or -errno.
 */
int ppn_cgroup_open(const struct ppn_cgroup_options *opts, struct ppn_cgroup **ret,
                    struct ppn_error *err);
struct ppn_cgroup *ppn_cgroup_free(struct ppn_cgroup *cg);
static inline void ppn_cgroup_freep(struct ppn_cgroup **cg) { ppn_cgroup_free(*cg); }

enum ppn_cgroup_mode ppn_cgroup_get_mode(const struct ppn_cgroup *cg);
/* Absolute path of the parent group (for messages and tests). */
const char *ppn_cgroup_parent_path(const struct ppn_cgroup *cg);

/*
 * v2: moves every process of the parent into parent/LEAF (created and marked if missing),
 * which the no-internal-processes rule needs before +cpu can be enabled in the parent.
 * Processes that exit meanwhile are skipped. Returns the number moved (0 on v1), or -errno.
 */
int ppn_cgroup_evacuate_parent(struct ppn_cgroup *cg, const char *leaf, struct ppn_error *err);

/*
 * Creates vm-NAME under the parent (marked), sets its weight and reads it back. An existing
 * marked group is adopted and its weight set. Returns 1 if created, 0 if adopted, -EEXIST if
 * vm-NAME exists without the mark (left untouched), -EINVAL bad name, -ERANGE bad weight.
 * If the weight cannot be set on a group it just created, the group is removed again.
 */
int ppn_cgroup_vm_create(struct ppn_cgroup *cg, const char *name, uint32_t weight,
                         struct ppn_error *err);
/*
 * Moves process pid (all its threads) into vm-NAME via cgroup.procs and checks it is listed
 * there afterwards. -ESRCH if the process exited before or while being moved.
 */
int ppn_cgroup_vm_attach(struct ppn_cgroup *cg, const char *name, pid_t pid,
                         struct ppn_error *err);
/*
 * create + attach. If attaching fails and the group was created by this call, the group is
 * removed again; err says whether that worked. Returns 1 created, 0 adopted, or -errno.
 */
int ppn_cgroup_vm_place(struct ppn_cgroup *cg, const char *name, pid_t pid, uint32_t weight,
                        struct ppn_error *err);
/* Live weight change: writes and reads back. -EIO if the value read back differs. */
int ppn_cgroup_vm_set_weight(struct ppn_cgroup *cg, const char *name, uint32_t weight,
                             struct ppn_error *err);
/* Reads the weight (v1: converted from cpu.shares). */
int ppn_cgroup_vm_get_weight(struct ppn_cgroup *cg, const char *name, uint32_t *ret_weight,
                             struct ppn_error *err);
/* CPU time used by the group in µs: v2 cpu.stat usage_usec; v1 cpuacct.usage when cpuacct is
 * co-mounted with cpu, else -EOPNOTSUPP. */
int ppn_cgroup_vm_usage(struct ppn_cgroup *cg, const char *name, uint64_t *ret_usec,
                        struct ppn_error *err);
/*
 * Removes vm-NAME, retrying every 10 ms while it is busy (members still exiting) for up to
 * timeout_usec. Returns 1 removed, 0 already gone, -EPERM not ours (left in place), -EBUSY
 * still busy at the deadline (err lists the remaining processes; the group is left in place).
 */
int ppn_cgroup_vm_remove(struct ppn_cgroup *cg, const char *name, uint64_t timeout_usec,
                         struct ppn_error *err);
/*
 * Names (without "vm-") of the VM groups under the parent that carry our mark, sorted, in a
 * NULL-terminated malloc'd array (free each, then the array). For adopting VMs after a restart
 * and removing groups whose VM is gone. Returns the count, or -errno.
 */
int ppn_cgroup_vm_list(struct ppn_cgroup *cg, char ***ret_names, struct ppn_error *err);
void ppn_cgroup_names_free(char **names);

/*
 * Removes the daemon leaf (if ours) and then the parent itself, only if the parent is ours.
 * Same return values as ppn_cgroup_vm_remove(). The handle stays valid for ppn_cgroup_free().
 */
int ppn_cgroup_remove_parent(struct ppn_cgroup *cg, uint64_t timeout_usec, struct ppn_error *err);
