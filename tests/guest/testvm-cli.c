/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testvm: the test guest for shell scripts and the demo.
 *   testvm boot DIR [options]   boot a guest, write DIR/ready ("pid N", "qmp PATH", ...), then
 *                               supervise QEMU in the foreground until SIGTERM/SIGINT
 *   testvm exec DIR [--timeout SEC] CMD...
 *                               run CMD in that guest (from any process), print its output,
 *                               exit with its status (125 if it could not be run)
 */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "testvm.h"
#include "util.h"

#define EXIT_TESTVM 125

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
        if (sig != SIGCHLD)
                got_signal = sig;
}

static int write_ready(const struct testvm *vm) {
        _cleanup_free_ char *tmp = NULL, *path = NULL;
        if (asprintf(&tmp, "%s/ready.tmp", testvm_dir(vm)) < 0 ||
            asprintf(&path, "%s/ready", testvm_dir(vm)) < 0)
                return -ENOMEM;
        FILE *f = fopen(tmp, "we");
        if (!f)
                return -errno;
        fprintf(f, "pid %d\nqmp %s\nconsole %s\nboot_ms %u\n", (int) testvm_pid(vm),
                testvm_qmp_path(vm), testvm_console_path(vm), testvm_boot_ms(vm));
        if (fclose(f) != 0 || rename(tmp, path) < 0)
                return -errno;
        return 0;
}

static bool qemu_exited(pid_t pid) {
        siginfo_t si = {};
        /* WNOWAIT: leave the reaping to testvm_kill(). */
        return waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

static int supervise(struct testvm *vm, const sigset_t *unblocked) {
        int r = write_ready(vm);
        if (r < 0) {
                fprintf(stderr, "testvm: cannot write %s/ready: %s\n", testvm_dir(vm), strerror(-r));
                return 1;
        }
        /* Free the channel for `testvm exec` (QEMU serves one client at a time). */
        testvm_disconnect(vm);
        printf("ready in %u ms: pid %d, qmp %s\n", testvm_boot_ms(vm), (int) testvm_pid(vm),
               testvm_qmp_path(vm));
        fflush(stdout);
        while (!got_signal && !qemu_exited(testvm_pid(vm)))
                sigsuspend(unblocked);
        if (!got_signal) {
                fprintf(stderr, "testvm: QEMU exited (console: %s)\n", testvm_console_path(vm));
                return 1;
        }
        return 0;
}

static const struct option boot_options[] = {
        { "mem", required_argument, NULL, 'm' },
        { "vcpus", required_argument, NULL, 'v' },
        { "no-balloon", no_argument, NULL, 'n' },
        { "deflate-on-oom", no_argument, NULL, 'd' },
        { "free-page-reporting", no_argument, NULL, 'f' },
        { "cpus", required_argument, NULL, 'c' },
        { "extra", required_argument, NULL, 'x' },
        {}
};

static int parse_boot(int argc, char **argv, struct testvm_opts *o) {
        int c;
        while ((c = getopt_long(argc, argv, "", boot_options, NULL)) >= 0) {
                switch (c) {
                case 'm': o->mem_mib = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'v': o->vcpus = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'n': o->no_balloon = true; break;
                case 'd': o->deflate_on_oom = true; break;
                case 'f': o->free_page_reporting = true; break;
                case 'c': o->cpu_list = optarg; break;
                case 'x': o->extra_args = optarg; break;
                default: return -EINVAL;
                }
        }
        if (optind != argc - 1)
                return -EINVAL;
        o->dir = argv[optind];
        return 0;
}

static int cmd_boot(int argc, char **argv) {
        struct testvm_opts o = {};
        struct testvm *vm = NULL;
        sigset_t mask, old;
        if (parse_boot(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: testvm boot DIR [--mem MIB] [--vcpus N] [--no-balloon] "
                        "[--deflate-on-oom] [--free-page-reporting] [--cpus LIST] [--extra ARGS]\n");
                return 2;
        }
        /* Our handlers first, so the library leaves them alone; SIGCHLD wakes sigsuspend. */
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, &old);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGCHLD, &sa, NULL);
        if (testvm_boot(&o, &vm) < 0)
                return 1;
        int r = supervise(vm, &old);
        testvm_kill(vm);
        return r;
}

static int cmd_exec(int argc, char **argv) {
        unsigned timeout_s = 60;
        int i = 1;
        if (i + 1 < argc && strcmp(argv[i + 1], "--timeout") == 0 && i + 2 < argc) {
                timeout_s = (unsigned) strtoul(argv[i + 2], NULL, 10);
                memmove(&argv[i + 1], &argv[i + 3], (size_t) (argc - i - 3) * sizeof(char *));
                argc -= 2;
        }
        if (argc < 3) {
                fprintf(stderr, "usage: testvm exec DIR [--timeout SEC] CMD...\n");
                return 2;
        }
        struct testvm *vm = NULL;
        int r = testvm_attach(argv[1], &vm);
        if (r < 0) {
                fprintf(stderr, "testvm: no running guest in %s (%s/ready: %s)\n", argv[1], argv[1], strerror(-r));
                return EXIT_TESTVM;
        }
        size_t len = 1;
        for (int k = 2; k < argc; k++)
                len += strlen(argv[k]) + 1;
        _cleanup_free_ char *cmd = calloc(1, len), *out = NULL;
        for (int k = 2; cmd && k < argc; k++)
                strcat(strcat(cmd, k > 2 ? " " : ""), argv[k]);
        r = cmd ? testvm_exec(vm, cmd, timeout_s * 1000, &out) : -ENOMEM;
        testvm_kill(vm);
        if (r < 0) {
                fprintf(stderr, "testvm: exec in %s failed: %s\n", argv[1], strerror(-r));
                return EXIT_TESTVM;
        }
        fputs(out, stdout);
        return r;
}

int main(int argc, char **argv) {
        if (argc >= 2 && strcmp(argv[1], "boot") == 0)
                return cmd_boot(argc - 1, argv + 1);
        if (argc >= 2 && strcmp(argv[1], "exec") == 0)
                return cmd_exec(argc - 1, argv + 1);
        fprintf(stderr, "usage: testvm boot DIR [options] | testvm exec DIR [--timeout SEC] CMD...\n");
        return 2;
}
