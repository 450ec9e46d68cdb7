/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl start|stop|adopt|export|import|move: a VM's life from its ledger entry, and archives
 * that carry it to another node.
 *
 * Node settings come from struct ctl_globals: the daemon's config file, overridden by the
 * environment (see ppnctl.h):
 *   runtime_dir   QMP sockets: RUNTIME/NAME.qmp (the daemon's, unless the ledger entry names
 *                 one) and RUNTIME/NAME.ppnctl.qmp (ppnctl's own)
 *   log_dir       QEMU's stderr and the serial console: LOGS/NAME.log
 *   accel, qemu   the accelerator (kvm or tcg) and the QEMU binary
 *   cgroup_root, cgroup_parent   where the per-VM groups live
 *   image_dir     where import puts disk images: IMAGES/NAME/
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "archive.h"
#include "cgroup.h"
#include "ledger.h"
#include "pool.h"
#include "ppnctl.h"
#include "qmp.h"
#include "vm.h"
#include "vmem.h"


/* After "quit", QEMU exits within milliseconds; 10 s before SIGKILL covers a host under load. */
#define QUIT_WAIT_USEC (UINT64_C(10) * 1000000)
#define CGROUP_REMOVE_USEC (UINT64_C(5) * 1000000)

/* A VM's paths on this node. */
struct vm_paths {
        char *qmp, *ctl, *log;
};

static void vm_paths_done(struct vm_paths *p) {
        free(p->qmp);
        free(p->ctl);
        free(p->log);
}

static int vm_paths_get(const struct ctl_globals *g, const struct ledger_vm *vm, struct vm_paths *ret) {
        struct vm_paths p = {
                .qmp = vm->qmp ? strdup(vm->qmp) : vm_runtime_path(g->runtime_dir, vm->name, VM_QMP_SUFFIX),
                .ctl = vm_runtime_path(g->runtime_dir, vm->name, VM_CTL_SUFFIX),
                .log = vm_runtime_path(g->log_dir, vm->name, VM_LOG_SUFFIX),
        };
        if (!p.qmp || !p.ctl || !p.log) {
                vm_paths_done(&p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

/* 1 if the VM's QEMU answers on either socket. */
static bool vm_running(const struct vm_paths *p) {
        return vm_qmp_alive(p->ctl) == 1 || vm_qmp_alive(p->qmp) == 1;
}

int ctl_vm_running(const struct ctl_globals *g, const struct ledger_vm *vm) {
        _cleanup_(vm_paths_done) struct vm_paths p = {};

        if (vm_paths_get(g, vm, &p) < 0)
                return -ENOMEM;
        return vm_running(&p);
}

static int open_cgroup(const struct ctl_globals *g, struct ppn_cgroup **ret, struct ppn_error *err) {
        struct ppn_cgroup_options o = { .root = g->cgroup_root, .parent = g->cgroup_parent };
        int r = ppn_cgroup_open(&o, ret, err);
        return r < 0 ? ppn_error_prefix(err, r, "CPU weights cannot be applied") : r;
}

/*
 * Connects to a QMP socket of the VM. QEMU serves one client per monitor and keeps a listen
 * queue of one, so a probe that just closed can make connect() fail with EAGAIN for a few
 * milliseconds: retried for up to 2 s. -ENOENT / -ECONNREFUSED: nothing listens there.
 */
static int connect_vm(const char *path, struct qmp **ret, struct qmp_error *qe) {
        int r;
        for (int i = 0; i < 20; i++) {
                r = qmp_connect_sync(path, 0, ret, qe);
                if (r != -EAGAIN)
                        return r;
                usleep(100000);
        }
        return r;
}

/* Loads the ledger (read-only or not) and copies out one VM. */
static int load_vm(const struct ctl_globals *g, bool write, const char *name, struct ledger **ret_l,
                   struct ledger_state **ret_st, const struct ledger_vm **ret_vm) {
        struct ppn_error e = {};
        int r = ctl_open_ledger(g, write, ret_l);
        if (r)
                return r;
        r = ledger_load(*ret_l, ret_st, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        *ret_vm = ledger_state_find(*ret_st, name);
        if (!*ret_vm) {
                fprintf(stderr, "ppnctl: no VM named '%s' in %s; see 'ppnctl vm list'\n", name, g->ledger);
                return CTL_ERR_FAILED;
        }
        return 0;
}

/* A libvirt domain is libvirt's to start, stop and carry: ppnctl would run a second QEMU. */
static int refuse_libvirt(const struct ledger_vm *vm, const char *what) {
        if (!vm->libvirt)
                return 0;
        fprintf(stderr, "ppnctl: %s: VM '%s' is libvirt domain '%s'; libvirt runs it, so use virsh for that "
                "(or 'ppnctl vm set %s libvirt=' to make it a QEMU that ppnctl starts)\n", what, vm->name,
                vm->libvirt, vm->name);
        return CTL_ERR_FAILED;
}

/* Starting needs the VM's minimum to fit this node's pool (the ledger holds it already, but
 * the node's capacity may have been lowered since). */
static int start_admit(const struct ledger_state *st, const struct ledger_vm *vm, struct ppn_error *err) {
        if (!st->node_ok)
                return ppn_error_set(err, -EINVAL, "node settings unusable: %s", st->node_error);
        _cleanup_free_ struct pool_vm *all = ledger_state_pool_vms(st);
        _cleanup_free_ struct pool_vm *others = calloc(st->n_vms + 1, sizeof(*others));
        char what[128], mib[POOL_MIB_MAX];
        size_t n = 0;
        if (!all || !others)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < st->n_vms; i++)
                if (&st->vms[i] != vm)
                        others[n++] = all[i];
        struct pool_node node = { st->node.physical_bytes, st->node.reserve_bytes };
        snprintf(what, sizeof(what), "starting '%s' (min %s)", vm->name,
                 pool_format_mib((int64_t) vm->min_bytes, mib, sizeof(mib)));
        return pool_admit(&node, others, n, &node, all, st->n_vms, what, err);
}

struct start_opts {
        bool paused, dry_run, no_deflate, no_fpr;
};

static int build_spec_argv(const struct ctl_globals *g, const struct ledger_vm *vm, const struct vm_paths *p, const struct start_opts *o,
                           char ***ret_argv, struct ppn_error *err) {
        _cleanup_free_ struct vm_disk *disks = NULL;
        size_t n = 0;
        int r = vm_disks_detect(vm->disks, &disks, &n, err);
        if (r < 0)
                return r == -ENOMEM ? r : ppn_error_prefix(err, r, "%s", vm->name);
        struct vm_spec s;
        ledger_vm_spec(vm, &s);
        s.qemu = g->qemu;
        s.accel = g->accel;
        s.qmp_path = p->qmp;
        s.ctl_path = p->ctl;
        s.log_path = p->log;
        s.no_deflate_on_oom = o->no_deflate;
        s.no_free_page_reporting = o->no_fpr;
        s.disks = disks;
        s.n_disks = n;
        s.paused = true;
        return vm_build_argv(&s, ret_argv, err);
}

/* The spec again, for vm_launch (which needs only the paths). */
static struct vm_spec paths_spec(const struct ledger_vm *vm, const struct vm_paths *p) {
        return (struct vm_spec) { .name = vm->name, .qmp_path = p->qmp, .ctl_path = p->ctl, .log_path = p->log };
}

static void kill_started(pid_t pid, struct ppn_cgroup *cg, const char *name) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (cg)
                ppn_cgroup_vm_remove(cg, name, CGROUP_REMOVE_USEC, NULL);
}

/* Places the paused QEMU in its group with its weight, then lets the vCPUs run. */
static int place_and_run(const struct ledger_vm *vm, const struct vm_paths *p, pid_t pid,
                         struct ppn_cgroup *cg, bool paused, struct ppn_error *err) {
        struct qmp_error qe = {};
        int r = ppn_cgroup_vm_place(cg, vm->name, pid, vm->cpu_weight, err);
        if (r < 0)
                return r;
        if (paused)
                return 0;
        _cleanup_qmp_ struct qmp *q = NULL;
        r = connect_vm(p->ctl, &q, &qe);
        if (r >= 0)
                r = qmp_call_sync(q, "cont", NULL, 0, NULL, &qe);
        if (r < 0) {
                *err = qe.error;
                return ppn_error_prefix(err, r, "resuming %s", vm->name);
        }
        return 0;
}


int ctl_start(const struct ctl_globals *g, const struct ctl_args *args) {
        struct start_opts o = {};
        const char *name = NULL;
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        _cleanup_(ppn_cgroup_freep) struct ppn_cgroup *cg = NULL;
        _cleanup_(vm_paths_done) struct vm_paths p = {};
        char **qargs = NULL;
        const struct ledger_vm *vm;
        struct ppn_error e = {};
        pid_t pid;
        int r;

        o = (struct start_opts) { .paused = ctl_flag(args, "paused"), .dry_run = ctl_flag(args, "dry-run"),
                                  .no_deflate = ctl_flag(args, "no-deflate-on-oom"),
                                  .no_fpr = ctl_flag(args, "no-free-page-reporting") };
        name = args->argv[1];
        if ((r = load_vm(g, false, name, &l, &st, &vm)) || (r = refuse_libvirt(vm, "start")))
                return r;
        if (vm_paths_get(g, vm, &p) < 0)
                return ctl_fail(NULL, -ENOMEM);
        if ((r = start_admit(st, vm, &e)) < 0 || (r = build_spec_argv(g, vm, &p, &o, &qargs, &e)) < 0)
                return ctl_fail(&e, r);
        if (o.dry_run) {
                _cleanup_free_ char *line = vm_argv_to_string(qargs);
                printf("%s\n", line ? line : "");
                strv_free(qargs);
                return CTL_OK;
        }
        struct vm_spec s = paths_spec(vm, &p);
        if ((r = open_cgroup(g, &cg, &e)) >= 0 && (r = vm_launch(&s, qargs, 0, &pid, &e)) >= 0 &&
            (r = place_and_run(vm, &p, pid, cg, o.paused, &e)) < 0)
                kill_started(pid, cg, vm->name);
        strv_free(qargs);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("started %s (pid %d, weight %" PRIu32 "%s); QMP %s; log %s\n", vm->name, (int) pid, vm->cpu_weight,
               o.paused ? ", paused: resume with QMP \"cont\"" : "", p.qmp, p.log);
        return CTL_OK;
}

/* powerdown, then quit, then SIGKILL. Returns what it took ("powered down", ...). */
static const char *stop_process(struct qmp *q, pid_t pid, uint64_t timeout_usec) {
        struct qmp_error qe = {};
        if (qmp_call_sync(q, "system_powerdown", NULL, 0, NULL, &qe) >= 0 && vm_wait_exit(pid, timeout_usec) == 1)
                return "powered down";
        /* QEMU may close the socket before its reply to quit arrives: its exit is the answer. */
        qmp_call_sync(q, "quit", NULL, 0, NULL, &qe);
        if (vm_wait_exit(pid, QUIT_WAIT_USEC) == 1)
                return "did not power down in time: quit";
        kill(pid, SIGKILL);
        vm_wait_exit(pid, QUIT_WAIT_USEC);
        return "did not power down or quit: killed";
}

static void remove_group(const struct ctl_globals *g, const char *name) {
        _cleanup_(ppn_cgroup_freep) struct ppn_cgroup *cg = NULL;
        struct ppn_error e = {};
        int r = open_cgroup(g, &cg, &e);
        if (r >= 0)
                r = ppn_cgroup_vm_remove(cg, name, CGROUP_REMOVE_USEC, &e);
        if (r < 0)
                fprintf(stderr, "ppnctl: warning: %s\n", e.msg);
}

/* Stops the VM if it runs; 0, or CTL_ERR_FAILED with the reason printed. */
static int stop_vm(const struct ctl_globals *g, const struct ledger_vm *vm, uint64_t timeout_usec, bool quiet) {
        _cleanup_(vm_paths_done) struct vm_paths p = {};
        _cleanup_qmp_ struct qmp *q = NULL;
        struct qmp_error qe = {};
        pid_t pid;
        if (vm_paths_get(g, vm, &p) < 0)
                return ctl_fail(NULL, -ENOMEM);
        /* NAME.ppnctl.qmp exists for VMs ppnctl started; an adopted VM has only the ledger's socket. */
        int r = connect_vm(p.ctl, &q, &qe);
        if (r == -ENOENT || r == -ECONNREFUSED)
                r = connect_vm(p.qmp, &q, &qe);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                if (!quiet)
                        printf("%s is not running\n", vm->name);
                remove_group(g, vm->name);
                return 0;
        }
        if (r >= 0)
                r = qmp_peer_pid(q, &pid);
        if (r == -ETIMEDOUT)
                ppn_error_prefix(&qe.error, r, "%s: QEMU does not answer; if another client (ppnd) holds its only "
                                 "QMP monitor, give QEMU a second one for ppnctl at %s (ppnctl start does)", vm->name, p.ctl);
        if (r < 0)
                return ctl_fail(&qe.error, r);
        uint64_t t0 = now_usec();
        const char *how = stop_process(q, pid, timeout_usec);
        q = qmp_free(q);
        remove_group(g, vm->name);
        if (vm_qmp_alive(p.qmp) == 0)
                unlink(p.qmp);
        if (vm_qmp_alive(p.ctl) == 0)
                unlink(p.ctl);
        printf("stopped %s (pid %d): %s after %.1f s\n", vm->name, (int) pid, how, (double) (now_usec() - t0) / 1e6);
        return 0;
}

/* What stop and move share: --timeout into *ret_timeout (the default if not given), then the
 * VM (load_vm), which must not be libvirt's. 0, or a failure already printed. */
static int load_vm_to_stop(const struct ctl_globals *g, const struct ctl_args *args, bool write, const char *verb,
                           struct ledger **ret_l, struct ledger_state **ret_st, const struct ledger_vm **ret_vm,
                           uint64_t *ret_timeout) {
        const char *s = ctl_arg(args, "timeout");
        int r;

        *ret_timeout = VM_STOP_TIMEOUT_DEFAULT_USEC;
        if (s && parse_duration(s, ret_timeout) < 0)
                return ctl_usage_error(args, "--timeout '%s': want seconds or a duration like 30s, 2m", s);
        if ((r = load_vm(g, write, args->argv[1], ret_l, ret_st, ret_vm)))
                return r;
        return refuse_libvirt(*ret_vm, verb);
}

int ctl_stop(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        const struct ledger_vm *vm;
        uint64_t timeout;
        int r = load_vm_to_stop(g, args, false, "stop", &l, &st, &vm, &timeout);

        return r ? r : stop_vm(g, vm, timeout, false);
}

/* Rate-limited progress on a terminal: one line rewritten at most 5 times a second. */
static void progress(const char *file, uint64_t done, uint64_t total, void *userdata) {
        static uint64_t last;
        uint64_t now = now_usec();
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];
        if (done < total && now - last < 200000)
                return;
        last = now;
        fprintf(stderr, "\r  %s: %3u%% (%s of %s)\033[K", file, total ? (unsigned) (done * 100 / total) : 100,
                format_size(done, a, sizeof(a)), format_size(total, b, sizeof(b)));
        if (done >= total)
                fputc('\n', stderr);
}

static archive_progress_fn progress_fn(void) { return isatty(2) ? progress : NULL; }

static int export_vm(const struct ctl_globals *g, const struct ledger_vm *vm, const char *dir) {
        _cleanup_(vm_paths_done) struct vm_paths p = {};
        struct ppn_error e = {};
        size_t n = 0;
        if (vm_paths_get(g, vm, &p) < 0)
                return ctl_fail(NULL, -ENOMEM);
        if (vm_running(&p)) {
                fprintf(stderr, "ppnctl: %s is running; stop it first (ppnctl stop %s) or use ppnctl move\n",
                        vm->name, vm->name);
                return CTL_ERR_FAILED;
        }
        while (vm->disks && vm->disks[n])
                n++;
        json_object *o = ledger_vm_to_json(vm);
        int r = o ? archive_export(dir, vm->name, vm->uuid, o, (const char *const *) vm->disks, n, progress_fn(),
                                   NULL, &e) : -ENOMEM;
        json_object_put(o);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("exported %s (uuid %s) to %s: %zu image%s, sha256 verified\n", vm->name, vm->uuid, dir, n,
               n == 1 ? "" : "s");
        return 0;
}

int ctl_export(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        const struct ledger_vm *vm;
        int r;

        if ((r = load_vm(g, false, args->argv[1], &l, &st, &vm)) || (r = refuse_libvirt(vm, "export")))
                return r;
        return export_vm(g, vm, args->argv[2]);
}

/* The entry the archive carries, checked against its manifest and made local to this node. */
static int archive_entry(const struct archive_manifest *m, struct ledger_vm *ret, struct ppn_error *err) {
        struct ledger_vm vm = {};
        int r = ledger_vm_from_json(m->vm, &vm, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "manifest vm entry");
        if (strcmp(vm.name, m->name) != 0 || strcmp(vm.uuid, m->uuid) != 0) {
                /* The message is made before the entry it quotes is freed. */
                r = ppn_error_set(err, -EBADMSG, "manifest: name/uuid (%s, %s) differ from its vm entry (%s, %s)",
                                  m->name, m->uuid, vm.name, vm.uuid);
                ledger_vm_done(&vm);
                return r;
        }
        /* Paths of the old node mean nothing here: disks are set at install, qmp defaults. An
         * override lease was an operator's decision on the old node's pool: it stays there. */
        vm.override_set = false;
        vm.override_target_bytes = 0;
        vm.override_expires = 0;
        free(vm.qmp);
        vm.qmp = NULL;
        strv_free(vm.disks);
        vm.disks = NULL;
        *ret = vm;
        return 0;
}

/* QEMU options never travel in an archive: whoever writes one also writes its manifest and
 * checksums, and 'ppnctl start' runs QEMU as root, so an option such as
 * '-netdev tap,script=...', '-drive file=/dev/sda' or '-chardev file,path=...' would reach
 * this host's devices and files. They are dropped, named, and left to this node's operator. */
static void drop_qemu_args(struct ledger_vm *vm) {
        _cleanup_free_ char *args = NULL;

        if (!vm->qemu_args || !vm->qemu_args[0])
                return;
        args = ledger_vm_field_text(vm, "qemu-args");
        fprintf(stderr, "ppnctl: import: dropped the archive's QEMU options for '%s' (an archive may not bring "
                "options that reach this host): %s\n  to use options here, set them yourself: ppnctl vm set %s "
                "qemu-args='...' (or qemu-arg=OPTION once per option, for one with spaces)\n", vm->name,
                args ? args : "(out of memory)", vm->name);
        strv_free(vm->qemu_args);
        vm->qemu_args = NULL;
}

/* Everything that can refuse an import, checked before a byte is copied. */
static int import_check(const struct ledger_state *st, const struct ledger_vm *vm, struct ppn_error *err) {
        char what[128], mib[POOL_MIB_MAX];
        if (ledger_state_find(st, vm->name))
                return ppn_error_set(err, -EEXIST, "a VM named '%s' already exists on this node (uuid %s); nothing "
                                     "was changed", vm->name, ledger_state_find(st, vm->name)->uuid);
        for (size_t i = 0; i < st->n_vms; i++)
                if (strcmp(st->vms[i].uuid, vm->uuid) == 0)
                        return ppn_error_set(err, -EEXIST, "uuid %s is already VM '%s' on this node; nothing was "
                                             "changed", vm->uuid, st->vms[i].name);
        if (!st->node_ok)
                return ppn_error_set(err, -EINVAL, "node settings unusable: %s", st->node_error);
        int r = ledger_vm_validate(vm, &st->node, err);
        if (r < 0)
                return r;
        _cleanup_free_ struct pool_vm *before = ledger_state_pool_vms(st);
        _cleanup_free_ struct pool_vm *after = calloc(st->n_vms + 2, sizeof(*after));
        if (!before || !after)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        memcpy(after, before, st->n_vms * sizeof(*after));
        after[st->n_vms] = (struct pool_vm) { .name = vm->name, .min_bytes = vm->min_bytes, .max_bytes = vm->max_bytes };
        struct pool_node node = { st->node.physical_bytes, st->node.reserve_bytes };
        snprintf(what, sizeof(what), "importing '%s' (min %s)", vm->name,
                 pool_format_mib((int64_t) vm->min_bytes, mib, sizeof(mib)));
        return pool_admit(&node, before, st->n_vms, &node, after, st->n_vms + 1, what, err);
}

static int import_register(struct ledger *l, const char *dir, const struct archive_manifest *m,
                           struct ledger_vm *vm, const char *image_root, struct ppn_error *err) {
        _cleanup_free_ char *dest = NULL;
        char **paths = NULL;
        if (mkdir(image_root, 0750) < 0 && errno != EEXIST)
                return ppn_error_set(err, -errno, "%s: cannot create: %s", image_root, strerror(errno));
        if (asprintf(&dest, "%s/%s", image_root, vm->name) < 0)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        int r = archive_install(dir, m, dest, progress_fn(), NULL, &paths, err);
        if (r < 0)
                return r;
        vm->disks = m->n_disks ? paths : NULL;
        if (!m->n_disks)
                strv_free(paths);
        r = ledger_vm_add(l, vm, getuid(), NULL, err);
        if (r < 0)
                archive_remove_installed(dest, m);
        return r;
}

int ctl_import(const struct ctl_globals *g, const struct ctl_args *args) {
        const char *images = ctl_arg(args, "image-dir") ? ctl_arg(args, "image-dir") : g->image_dir;
        _cleanup_(archive_manifest_done) struct archive_manifest m = {};
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        struct ppn_error e = {};
        const char *dir = args->argv[1];
        int r;

        /* Every checksum first: a bad archive never reaches the ledger. */
        if ((r = archive_manifest_read(dir, &m, &e)) < 0 || (r = archive_verify(dir, &m, progress_fn(), NULL, &e)) < 0 ||
            (r = archive_entry(&m, &vm, &e)) < 0)
                return ctl_fail(&e, r);
        drop_qemu_args(&vm);
        if ((r = ctl_open_ledger(g, true, &l)))
                return r;
        if ((r = ledger_load(l, &st, &e)) < 0 || (r = import_check(st, &vm, &e)) < 0 ||
            (r = import_register(l, dir, &m, &vm, images, &e)) < 0)
                return ctl_fail(&e, r);
        printf("imported %s (uuid %s) from %s; images in %s/%s; start it with: ppnctl start %s\n", vm.name, vm.uuid,
               dir, images, vm.name, vm.name);
        return CTL_OK;
}

/* The options of the other kind of move are refused: --timeout is cold, the rest live. */
static int check_move_kind(const struct ctl_args *args, bool live) {
        for (size_t i = 0; i < args->n_given; i++) {
                const char *o = args->given[i].opt->name;
                if (strcmp(o, "to") != 0 && strcmp(o, "live") != 0 && live == (strcmp(o, "timeout") == 0))
                        return ctl_usage_error(args, "--%s applies only %s --live", o, live ? "without" : "with");
        }
        if (!ctl_arg(args, "to"))
                return ctl_usage_error(args, live ? "expected one VM name and --to NODE" :
                                                    "expected one VM name and --to DIR");
        return 0;
}

int ctl_move(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        const struct ledger_vm *vm;
        uint64_t timeout;
        const char *to = ctl_arg(args, "to"), *name = args->argv[1];
        struct ppn_error e = {};
        int r;

        if ((r = check_move_kind(args, ctl_flag(args, "live"))) < 0)
                return r;
        if (ctl_flag(args, "live"))
                return ctl_move_live(g, args);
        if ((r = load_vm_to_stop(g, args, true, "move", &l, &st, &vm, &timeout)))
                return r;
        /* The entry goes only once the archive is complete and verified (export re-reads it). */
        if ((r = stop_vm(g, vm, timeout, true)) < 0 || (r = export_vm(g, vm, to)) < 0)
                return r;
        /* Removed only if nobody changed it during the stop and export: the archive holds the
         * entry as it was loaded, and a 'vm set' made meanwhile must not vanish with it. */
        if ((r = ledger_vm_remove_unchanged(l, vm, getuid(), &e)) == -ESTALE) {
                fprintf(stderr, "ppnctl: move: %s; the VM is stopped and %s holds the entry as it was before. "
                        "Run the move again to export the current entry, or 'ppnctl start %s' to keep it here\n",
                        e.msg, to, vm->name);
                return CTL_ERR_FAILED;
        }
        if (r < 0)
                return ctl_fail(&e, r);
        printf("removed %s from this node's ledger; its images here are untouched; on the destination: "
               "ppnctl import %s\n", name, to);
        return CTL_OK;
}

/* 1 balloon present, 0 none (DeviceNotActive), <0 error. */
static int probe_balloon(struct qmp *q, struct qmp_error *qe) {
        json_object *reply = NULL;
        int r = qmp_call_sync(q, "query-balloon", NULL, 0, &reply, qe);
        json_object_put(reply);
        if (r < 0 && qmp_error_has_class(qe, "DeviceNotActive"))
                return 0;
        return r < 0 ? r : 1;
}

/* ", virtio-mem 'ID' (X of Y plugged)" for the first virtio-mem device (ppnd drives it), or "". */
static void describe_vmem(struct qmp *q, char *buf, size_t len) {
        struct vmem_device d;
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];

        buf[0] = '\0';
        if (vmem_query_sync(q, 0, &d, NULL) > 0)
                snprintf(buf, len, "; virtio-mem '%s' (%s of %s plugged): ppnd plugs and unplugs it", d.id,
                         format_size(d.size, a, sizeof(a)), format_size(d.max_size, b, sizeof(b)));
}

static int adopt_vm(const struct ctl_globals *g, struct ledger *l, const struct ledger_vm *vm, const char *qmp_path) {
        _cleanup_qmp_ struct qmp *q = NULL;
        _cleanup_(ppn_cgroup_freep) struct ppn_cgroup *cg = NULL;
        struct qmp_error qe = {};
        struct ppn_error e = {};
        _cleanup_free_ char *pair = NULL;
        char vmem[160];
        pid_t pid;
        int balloon, r = connect_vm(qmp_path, &q, &qe);
        if (r >= 0)
                r = qmp_peer_pid(q, &pid);
        if (r >= 0)
                r = balloon = probe_balloon(q, &qe);
        if (r < 0)
                return ctl_fail(&qe.error, r);
        describe_vmem(q, vmem, sizeof(vmem));
        q = qmp_free(q);   /* the daemon takes the socket over */
        if ((r = open_cgroup(g, &cg, &e)) < 0 || (r = ppn_cgroup_vm_place(cg, vm->name, pid, vm->cpu_weight, &e)) < 0)
                return ctl_fail(&e, r);
        if (asprintf(&pair, "qmp=%s", qmp_path) < 0)
                return ctl_fail(NULL, -ENOMEM);
        const char *pairs[] = { pair };
        if ((!vm->qmp || strcmp(vm->qmp, qmp_path) != 0) &&
            (r = ledger_vm_set(l, vm->name, pairs, 1, getuid(), &e)) < 0)
                return ctl_fail(&e, r);
        printf("adopted %s (pid %d, weight %" PRIu32 ", QMP %s): %s%s\n", vm->name, (int) pid, vm->cpu_weight, qmp_path,
               balloon ? "balloon device present" : "no balloon device: its CPU weight applies, its memory is held "
                                                    "fixed at its boot size", vmem);
        return 0;
}

/* A libvirt domain: libvirt owns QEMU, its monitor and its cgroup; ppnd reaches it through
 * [libvirt] uri. The entry names the domain (and no QMP socket); ppnd adopts it within a second. */
static int adopt_libvirt(const struct ctl_globals *g, struct ledger *l, const struct ledger_vm *vm, const char *domain) {
        struct ppn_error e = {};
        _cleanup_free_ char *pair = NULL;
        int r;

        if (asprintf(&pair, "libvirt=%s", domain) < 0)
                return ctl_fail(NULL, -ENOMEM);
        const char *pairs[] = { "qmp=", pair };
        if ((r = ledger_vm_set(l, vm->name, pairs, 2, getuid(), &e)) < 0)
                return ctl_fail(&e, r);
        printf("%s now names libvirt domain '%s'; ppnd adopts it through its [libvirt] uri "
               "(balloon, statistics and cpu weight %" PRIu32 " through libvirt)\n", vm->name, domain, vm->cpu_weight);
        return 0;
}

int ctl_adopt(const struct ctl_globals *g, const struct ctl_args *args) {
        const char *domain = ctl_arg(args, "libvirt"), *qmp_path = ctl_arg(args, "qmp"), *name = args->argv[1];
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        const struct ledger_vm *vm;
        int r;

        if (!qmp_path == !domain)
                return ctl_usage_error(args, "expected one VM name and either --qmp PATH or --libvirt DOMAIN");
        if (domain) {
                if ((r = load_vm(g, true, name, &l, &st, &vm)))
                        return r;
                return adopt_libvirt(g, l, vm, domain);
        }
        if (qmp_path[0] != '/')
                return ctl_usage_error(args, "--qmp: want an absolute path");
        if ((r = load_vm(g, true, name, &l, &st, &vm)))
                return r;
        return adopt_vm(g, l, vm, qmp_path);
}
