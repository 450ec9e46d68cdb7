/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * testvm: boots the test guest (tests/guest/build-guest.sh) under QEMU for real-VM tests, runs
 * shell commands in it over a virtio-serial channel, and tears it down reliably.
 *
 * Environment:
 *   PPN_GUEST_DIR  where vmlinuz and initramfs.gz are (default "build/guest")
 *   PPN_ACCEL      QEMU accelerator (default "tcg"; "kvm" on real hosts)
 *   PPN_QEMU       QEMU binary (default "qemu-system-x86_64")
 *
 * QEMU never outlives the process that booted it: the child has PR_SET_PDEATHSIG(SIGKILL), and
 * an atexit handler plus SIGINT/SIGTERM/SIGHUP handlers (installed only where the handler is
 * still the default) kill every guest still running. PDEATHSIG follows the thread that called
 * testvm_boot(): boot from a thread that lives as long as the guest should. A forked child
 * that exits leaves its parent's guests alone.
 */

#include <stdbool.h>
#include <sys/types.h>

struct testvm;

struct testvm_opts {
        unsigned mem_mib;          /* boot size; 0 = 1024 */
        unsigned vcpus;            /* 0 = 1 */
        bool no_balloon;           /* start without a balloon device */
        bool deflate_on_oom, free_page_reporting;  /* virtio-balloon-pci options */
        const char *balloon_id;    /* NULL = "balloon0" (QOM path /machine/peripheral/<id>) */
        const char *cpu_list;      /* pin the QEMU process (sched_setaffinity), e.g. "0"; NULL = none */
        const char *extra_args;    /* appended to the QEMU command line, space-separated */
        const char *dir;           /* where sockets and logs go; NULL = a new temp dir, removed
                                    * by testvm_kill() */
};

/* How long testvm_boot() waits for the guest's command server: 2 shared cores under TCG. */
#define TESTVM_BOOT_TIMEOUT_MS 60000u

/*
 * Boots a guest and waits until it answers on the command channel (its modules are loaded).
 * Returns 0 and *ret, or -errno: -ENOENT (no guest built), -ETIMEDOUT, -ECHILD (QEMU exited).
 * On failure it prints why, QEMU's stderr and the tail of the guest console to stderr.
 */
int testvm_boot(const struct testvm_opts *o, struct testvm **ret);

/*
 * Connects to a guest booted by another process (`testvm boot DIR`), from DIR/ready.
 * testvm_kill() on such a handle only disconnects and frees it; the guest keeps running.
 */
int testvm_attach(const char *dir, struct testvm **ret);

const char *testvm_qmp_path(const struct testvm *vm);   /* QMP unix socket (QEMU is the server) */
const char *testvm_dir(const struct testvm *vm);
const char *testvm_console_path(const struct testvm *vm);
pid_t testvm_pid(const struct testvm *vm);
/* Milliseconds from QEMU's start to the guest's first answer (0 for an attached guest). */
unsigned testvm_boot_ms(const struct testvm *vm);

/*
 * Runs one shell command line (no newline) in the guest with busybox sh, stdin /dev/null.
 * Returns its exit status (>= 0), and, if ret_output is non-NULL, its stdout+stderr in a
 * malloc'd string. Or -EINVAL (newline in cmd), -ETIMEDOUT (no answer within timeout_ms; the
 * command keeps running in the guest and its late answer is skipped), -ECONNRESET (QEMU gone).
 * Commands must finish: start long workloads in the background (guest-work hog/spin).
 */
int testvm_exec(struct testvm *vm, const char *cmd, unsigned timeout_ms, char **ret_output);

/* Closes the command connection so another process can use the channel; exec reconnects. */
void testvm_disconnect(struct testvm *vm);

/* True if the guest console log contains needle. */
bool testvm_console_grep(const struct testvm *vm, const char *needle);

/* SIGKILL, reap, remove its temp dir (or, for opts.dir, its sockets). NULL ok; returns NULL. */
struct testvm *testvm_kill(struct testvm *vm);
