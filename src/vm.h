/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * vm: one VM's QEMU process. The command line is built by a pure function from a spec (the
 * ledger entry plus node settings); launching, probing and stopping are the I/O around it.
 *
 * The command line (in this order, every value comma-escaped for QEMU's option parser):
 *   QEMU -name guest=NAME -uuid UUID -accel ACCEL -m MAXMiB -smp VCPUS
 *        (with a virtio-mem region: -m BASEMiB,maxmem=MAXMiB,slots=1)
 *        -nodefaults -no-user-config -display none [-S]
 *        -chardev socket,id=ppn-qmp,path=QMP,server=on,wait=off -mon chardev=ppn-qmp,mode=control
 *        [-chardev socket,id=ppn-ctl,path=CTL,server=on,wait=off -mon chardev=ppn-ctl,mode=control]
 *        -chardev file,id=ppn-console,path=LOG,append=on -serial chardev:ppn-console
 *        -device virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on
 *        [-object memory-backend-ram,id=ppn-vmem0-mem,size=REGIONMiB
 *         -device virtio-mem-pci,id=ppn-vmem0,memdev=ppn-vmem0-mem,requested-size=REQMiB]
 *        -drive file=DISK,format=FMT,if=virtio   (one per disk)
 *        EXTRA...                                 (the operator's options, checked)
 *        [-incoming defer]                        (a live move's destination)
 * Memory is the VM's maximum: the balloon takes it down to what the pool grants, never below
 * the minimum. With a virtio-mem region the guest boots with its base memory and the region
 * starts with REQ plugged (what the minimum needs beyond base, in whole 2 MiB blocks): ppnd
 * plugs more on demand. The balloon options default to on: with deflate-on-oom a guest ballooned to
 * 256 MiB survived a 600 MiB allocation (it deflated itself), without it the OOM killer fired;
 * free-page-reporting returned a guest's freed 800 MiB to the host within 5 s.
 *
 * Extra options that would take over what ppn-pool owns are refused with the reason:
 * -m -smp -accel -enable-kvm -machine accel= -name -uuid -qmp -qmp-pretty -mon -monitor -S
 * -daemonize -pidfile -serial -runas -chroot -incoming, a second virtio-balloon device, and
 * ids starting with "ppn-". Arguments must be non-empty and free of control characters.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define VM_RUNTIME_DIR_DEFAULT "/run/ppn"
#define VM_ACCEL_DEFAULT "kvm"   /* production hosts; tests and the demo export PPN_ACCEL=tcg */
#define VM_QEMU_DEFAULT "qemu-system-x86_64"
#define VM_BALLOON_ID "balloon0"
#define VM_VMEM_ID "ppn-vmem0"             /* QOM path /machine/peripheral/ppn-vmem0 */
#define VM_VMEM_MEMDEV_ID "ppn-vmem0-mem"
/* Under TCG on 2 shared cores QEMU binds its QMP socket ~0.1 s after exec; 30 s allows for a
 * loaded machine and slow storage without hanging an operator forever. */
#define VM_LAUNCH_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define VM_STOP_TIMEOUT_DEFAULT_USEC (60 * USEC_PER_SEC)

struct vm_disk {
        const char *path;
        const char *format;   /* "raw", "qcow2"; NULL = detect from the file's header */
};

struct vm_spec {
        const char *qemu;              /* binary; NULL = VM_QEMU_DEFAULT */
        const char *name;
        const char *uuid;              /* NULL: no -uuid */
        const char *accel;             /* NULL = VM_ACCEL_DEFAULT */
        uint64_t mem_bytes;            /* -m; whole MiB: the boot memory */
        uint64_t vmem_bytes;           /* virtio-mem region (maxmem = mem + this); 0 = none; whole 2 MiB */
        uint64_t vmem_requested_bytes; /* plugged at start, ≤ vmem_bytes, whole 2 MiB */
        unsigned vcpus;                /* 0 = 1 */
        const char *qmp_path;          /* the ledger's socket: the daemon's */
        const char *ctl_path;          /* a second QMP monitor for ppnctl (QEMU serves one client
                                        * per monitor, and the daemon keeps its own); NULL: none */
        const char *log_path;          /* console (and, from vm_launch, QEMU's stderr) */
        bool no_balloon;               /* leave the balloon device out */
        bool no_deflate_on_oom, no_free_page_reporting;
        const struct vm_disk *disks;
        size_t n_disks;
        const char *const *extra;      /* NULL-terminated operator options, or NULL */
        bool paused;                   /* -S: vCPUs do not run until "cont" */
        bool incoming;                 /* -incoming defer: the VM's state arrives by live
                                        * migration (migrate-incoming names the address) */
};

/*
 * Pure. Builds the argument vector (NULL-terminated, malloc'd; strv_free() it). Disks whose
 * format is NULL are passed as "raw". -EINVAL with err naming the offending value and why.
 */
int vm_build_argv(const struct vm_spec *spec, char ***ret_argv, struct ppn_error *err);

/* Pure. Shell-quoted rendering of argv for logs and --dry-run. malloc'd, NULL on ENOMEM. */
char *vm_argv_to_string(char *const *argv);

/* Pure. Doubles every ',' (QEMU's option escape). malloc'd, NULL on ENOMEM. */
char *vm_qemu_escape(const char *s);

/* A VM's file in a directory (NULL = VM_RUNTIME_DIR_DEFAULT): DIR/NAME SUFFIX. The daemon and
 * ppnctl agree on DIR/NAME.qmp as the QMP socket of a VM whose ledger entry names none.
 * malloc'd, NULL on ENOMEM. */
char *vm_runtime_path(const char *dir, const char *name, const char *suffix);
#define VM_QMP_SUFFIX ".qmp"
#define VM_CTL_SUFFIX ".ppnctl.qmp"
#define VM_LOG_SUFFIX ".log"
#define VM_LOG_DIR_DEFAULT "/var/log/ppn"

/* Reads the first bytes of a disk image: "qcow2" or "raw". -errno if it cannot be read. */
int vm_disk_detect_format(const char *path, const char **ret_format);
/* The disks of a NULL-terminated path list (NULL = none), each with its format detected:
 * *ret (calloc'd, the caller frees; its paths point into paths) and *ret_n. Returns 0, or
 * -ENOMEM / a disk's -errno with err saying "disk PATH: why". */
int vm_disks_detect(char *const *paths, struct vm_disk **ret, size_t *ret_n, struct ppn_error *err);

/*
 * 1 if something accepts connections on the QMP socket (the VM runs), 0 if not (no socket,
 * or a stale one nobody listens on), -errno for other failures.
 */
int vm_qmp_alive(const char *qmp_path);

/*
 * Starts QEMU from argv (built from spec), detached (own session; it outlives the caller),
 * stdin /dev/null, stdout and stderr appended to spec->log_path, and waits until QEMU answers
 * on its QMP socket (spec->ctl_path if set, which nobody else uses, else spec->qmp_path).
 * The sockets' and log's directories are created (0750). Stale sockets are removed; a live
 * one refuses with -EBUSY (the VM runs already). If QEMU exits or does not answer within
 * timeout_usec (0 = VM_LAUNCH_TIMEOUT_USEC), its own words (the log's new lines) are put into
 * err and -ECHILD / -ETIMEDOUT returned (a QEMU that did not answer is killed).
 */
int vm_launch(const struct vm_spec *spec, char *const *argv, uint64_t timeout_usec, pid_t *ret_pid,
              struct ppn_error *err);

/*
 * Waits until process pid has exited (pidfd), at most timeout_usec. 1 exited, 0 still running
 * at the deadline, -errno. A zombie counts as exited.
 */
int vm_wait_exit(pid_t pid, uint64_t timeout_usec);

/* The last `max` bytes of the file from offset `from` on, as a string (for error messages). */
char *vm_log_tail(const char *path, uint64_t from, size_t max);
