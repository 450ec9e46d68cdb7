/* SPDX-License-Identifier: Apache-2.0 */
#include "testvm.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "util.h"

/* Output kept per command; a test that prints more is doing something wrong. */
#define OUTPUT_MAX (16u << 20)
/* How often waits check that QEMU is still alive. */
#define ALIVE_CHECK_MS 200
#define MAX_VMS 16

struct testvm {
        pid_t pid;
        bool owner;        /* we started QEMU: kill and reap it */
        bool own_dir;      /* we created dir: remove it */
        bool reaped;       /* QEMU exited and was reaped: its pid may be reused */
        char *dir, *qmp, *ctl, *console, *qemu_log;
        int fd;            /* command channel, -1 = not connected */
        unsigned seq, boot_ms;
        char *buf;         /* bytes received and not consumed yet */
        size_t len, cap;
};

/* Every guest still running, for the atexit and signal handlers, with the process that
 * booted it: a forked child that exits must not take its parent's guests along. */
static struct testvm *live[MAX_VMS];
static volatile pid_t live_pids[MAX_VMS], live_owners[MAX_VMS];

static void on_fatal_signal(int sig) {
        pid_t self = getpid();
        for (size_t i = 0; i < MAX_VMS; i++)
                if (live_pids[i] > 0 && live_owners[i] == self)
                        kill(live_pids[i], SIGKILL);
        signal(sig, SIG_DFL);
        raise(sig);
}

static void kill_all_at_exit(void) {
        for (size_t i = 0; i < MAX_VMS; i++)
                if (live[i] && live_owners[i] == getpid())
                        live[i] = testvm_kill(live[i]);
}

static void install_cleanup(void) {
        static bool done;
        static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
        if (done)
                return;
        done = true;
        atexit(kill_all_at_exit);
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                struct sigaction old, sa = { .sa_handler = on_fatal_signal };
                if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
                        sigaction(sigs[i], &sa, NULL);
        }
}

static void track(struct testvm *vm, bool on) {
        for (size_t i = 0; i < MAX_VMS; i++) {
                if (on && !live[i]) {
                        live[i] = vm;
                        live_owners[i] = getpid();
                        live_pids[i] = vm->pid;
                        return;
                }
                if (!on && live[i] == vm) {
                        live_pids[i] = 0;
                        live[i] = NULL;
                        return;
                }
        }
}

const char *testvm_qmp_path(const struct testvm *vm) { return vm->qmp; }
const char *testvm_dir(const struct testvm *vm) { return vm->dir; }
const char *testvm_console_path(const struct testvm *vm) { return vm->console; }
pid_t testvm_pid(const struct testvm *vm) { return vm->pid; }
unsigned testvm_boot_ms(const struct testvm *vm) { return vm->boot_ms; }

static char *path_join(const char *dir, const char *name) {
        char *p;
        return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static struct testvm *vm_new(const char *dir) {
        struct testvm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return NULL;
        vm->fd = -1;
        vm->dir = strdup(dir);
        vm->qmp = path_join(dir, "qmp.sock");
        vm->ctl = path_join(dir, "ctl.sock");
        vm->console = path_join(dir, "console.log");
        vm->qemu_log = path_join(dir, "qemu.log");
        if (!vm->dir || !vm->qmp || !vm->ctl || !vm->console || !vm->qemu_log) {
                vm->owner = false;
                return testvm_kill(vm);
        }
        return vm;
}

static void vm_free(struct testvm *vm) {
        free(vm->dir);
        free(vm->qmp);
        free(vm->ctl);
        free(vm->console);
        free(vm->qemu_log);
        free(vm->buf);
        free(vm);
}

/* What this module puts into a guest's dir; the logs only go with a dir we created. */
static const char *const dir_files[] = { "qmp.sock", "ctl.sock", "ready", "pid", "console.log", "qemu.log" };
#define DIR_FILES_KEPT 2

static void remove_dir_files(const char *dir, bool whole) {
        size_t n = ELEMENTSOF(dir_files) - (whole ? 0 : DIR_FILES_KEPT);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *p = path_join(dir, dir_files[i]);
                if (p)
                        unlink(p);
        }
        if (whole)
                rmdir(dir);
}

/* PPN_KEEP_VM_DIR=1 keeps a temp dir (console log, QEMU stderr) for a post-mortem. */
static void remove_files(struct testvm *vm) {
        remove_dir_files(vm->dir, vm->own_dir && !getenv("PPN_KEEP_VM_DIR"));
}

/* True unless pid is gone or a zombie (an unreaped QEMU still answers kill(pid, 0)). */
static bool process_exists(long pid) {
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return errno != ENOENT;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')');
        return !p || (p[1] == ' ' && p[2] != 'Z' && p[2] != 'X');
}

/*
 * Temp dirs of guests whose process died without cleanup (SIGKILL, crash: QEMU then dies by
 * PDEATHSIG) are removed by the next boot: DIR/pid names a QEMU that no longer exists.
 */
static void sweep_stale_dirs(const char *tmp) {
        DIR *d = opendir(tmp);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (strncmp(de->d_name, "ppn-vm-", 7) != 0)
                        continue;
                _cleanup_free_ char *dir = path_join(tmp, de->d_name);
                _cleanup_free_ char *pidfile = dir ? path_join(dir, "pid") : NULL;
                _cleanup_fclose_ FILE *f = pidfile ? fopen(pidfile, "re") : NULL;
                long pid = 0;
                if (f && fscanf(f, "%ld", &pid) == 1 && pid > 0 && !process_exists(pid))
                        remove_dir_files(dir, true);
        }
        if (d)
                closedir(d);
}

static int write_pid_file(struct testvm *vm) {
        _cleanup_free_ char *p = path_join(vm->dir, "pid");
        _cleanup_fclose_ FILE *f = p ? fopen(p, "we") : NULL;
        if (!f)
                return p ? -errno : -ENOMEM;
        fprintf(f, "%d\n", (int) vm->pid);
        return 0;
}

struct testvm *testvm_kill(struct testvm *vm) {
        if (!vm)
                return NULL;
        testvm_disconnect(vm);
        if (vm->owner && vm->pid > 0) {
                track(vm, false);
                if (!vm->reaped)
                        kill(vm->pid, SIGKILL);
                while (!vm->reaped && waitpid(vm->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                remove_files(vm);
        }
        vm_free(vm);
        return NULL;
}

/* True if QEMU runs (ours is reaped once it exited). */
static bool vm_alive(struct testvm *vm) {
        if (!vm->owner)
                return process_exists(vm->pid);
        if (!vm->reaped && waitpid(vm->pid, NULL, WNOHANG) == vm->pid)
                vm->reaped = true;
        return !vm->reaped;
}

/* A channel that closed may mean QEMU is on its way out (it creates its sockets before it fails
 * on, e.g., an unknown accelerator): give it up to ms to be reaped before calling it alive. */
static bool vm_alive_after(struct testvm *vm, unsigned ms) {
        for (unsigned waited = 0; vm_alive(vm); waited += 20) {
                if (waited >= ms)
                        return true;
                usleep(20000);
        }
        return false;
}

void testvm_disconnect(struct testvm *vm) {
        if (vm->fd >= 0)
                close(vm->fd);
        vm->fd = -1;
        vm->len = 0;
}

static int vm_connect(struct testvm *vm) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (vm->fd >= 0)
                return 0;
        if (strlen(vm->ctl) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, vm->ctl);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        vm->fd = TAKE_FD(fd);
        return 0;
}

static int send_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Reads what is there into vm->buf. 0, or -ECONNRESET at EOF, -EMSGSIZE past OUTPUT_MAX. */
static int fill(struct testvm *vm) {
        if (vm->cap - vm->len < 4096) {
                if (vm->cap >= OUTPUT_MAX)
                        return -EMSGSIZE;
                size_t cap = vm->cap ? vm->cap * 2 : 65536;
                char *b = realloc(vm->buf, cap + 1);
                if (!b)
                        return -ENOMEM;
                vm->buf = b;
                vm->cap = cap;
        }
        ssize_t k = recv(vm->fd, vm->buf + vm->len, vm->cap - vm->len, MSG_DONTWAIT);
        if (k == 0)
                return -ECONNRESET;
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        vm->len += (size_t) k;
        vm->buf[vm->len] = 0;
        return 0;
}

/*
 * Looks for "@@begin ID\n" OUTPUT "\n@@end ID STATUS\n" in vm->buf. Returns 1 with the status
 * and output (consuming the bytes through the end line), 0 if incomplete, -ENOMEM.
 */
static int parse_reply(struct testvm *vm, const char *id, int *ret_status, char **ret_output) {
        char begin[64], end[64];
        snprintf(begin, sizeof(begin), "@@begin %s\n", id);
        snprintf(end, sizeof(end), "\n@@end %s ", id);
        char *b = memmem(vm->buf, vm->len, begin, strlen(begin));
        if (!b)
                return 0;
        char *out = b + strlen(begin);
        char *e = memmem(out, vm->len - (size_t) (out - vm->buf), end, strlen(end));
        char *nl = e ? memchr(e + strlen(end), '\n', vm->len - (size_t) (e + strlen(end) - vm->buf)) : NULL;
        if (!nl)
                return 0;
        if (ret_output) {
                char *o = strndup(out, (size_t) (e - out));
                if (!o)
                        return -ENOMEM;
                *ret_output = o;
        }
        *ret_status = atoi(e + strlen(end));
        size_t used = (size_t) (nl + 1 - vm->buf);
        memmove(vm->buf, nl + 1, vm->len - used);
        vm->len -= used;
        vm->buf[vm->len] = 0;
        return 1;
}

static int wait_reply(struct testvm *vm, const char *id, uint64_t deadline, int *ret_status,
                      char **ret_output) {
        for (;;) {
                int r = vm->buf ? parse_reply(vm, id, ret_status, ret_output) : 0;
                if (r != 0)
                        return r < 0 ? r : 0;
                uint64_t now = now_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                uint64_t ms = (deadline - now) / 1000 + 1;
                struct pollfd p = { .fd = vm->fd, .events = POLLIN };
                r = poll(&p, 1, (int) (ms < ALIVE_CHECK_MS ? ms : ALIVE_CHECK_MS));
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0 && (r = fill(vm)) < 0)
                        return r;
                /* Only when nothing is left to read: a reply sent just before exit counts. */
                if (r == 0 && !vm_alive(vm))
                        return -ECONNRESET;
        }
}

int testvm_exec(struct testvm *vm, const char *cmd, unsigned timeout_ms, char **ret_output) {
        char id[32], *line = NULL;
        int status = -1;
        if (strchr(cmd, '\n'))
                return -EINVAL;
        int r = vm_connect(vm);
        if (r < 0)
                return r;
        /* Unique across processes sharing one guest (testvm exec from several shells). */
        snprintf(id, sizeof(id), "%d.%u.%x", (int) getpid(), ++vm->seq, (unsigned) (now_usec() & 0xffffff));
        if (asprintf(&line, "%s %s\n", id, cmd) < 0)
                return -ENOMEM;
        r = send_all(vm->fd, line, strlen(line));
        free(line);
        if (r >= 0)
                r = wait_reply(vm, id, now_usec() + (uint64_t) timeout_ms * 1000, &status, ret_output);
        if (r == -ECONNRESET || r == -EPIPE || r == -EMSGSIZE)
                testvm_disconnect(vm);
        return r < 0 ? r : status;
}

bool testvm_console_grep(const struct testvm *vm, const char *needle) {
        _cleanup_fclose_ FILE *f = fopen(vm->console, "re");
        char line[4096];
        while (f && fgets(line, sizeof(line), f))
                if (strstr(line, needle))
                        return true;
        return false;
}

/* A growing NULL-terminated argument vector. */
struct argv {
        char **v;
        size_t n;
        bool oom;
};

static void argv_add(struct argv *a, const char *fmt, ...) _printf_(2, 3);
static void argv_add(struct argv *a, const char *fmt, ...) {
        char *s = NULL, **v;
        va_list ap;
        va_start(ap, fmt);
        bool ok = vasprintf(&s, fmt, ap) >= 0;
        va_end(ap);
        if (!ok || !(v = realloc(a->v, (a->n + 2) * sizeof(char *)))) {
                if (ok)
                        free(s);
                a->oom = true;
                return;
        }
        a->v = v;
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
}

static void argv_free(struct argv *a) {
        for (size_t i = 0; i < a->n; i++)
                free(a->v[i]);
        free(a->v);
}

static const char *env_or(const char *name, const char *def) {
        const char *v = getenv(name);
        return v && *v ? v : def;
}

static void qemu_argv(struct argv *a, const struct testvm *vm, const struct testvm_opts *o,
                      const char *guest) {
        argv_add(a, "%s", env_or("PPN_QEMU", "qemu-system-x86_64"));
        argv_add(a, "-accel");
        argv_add(a, "%s", env_or("PPN_ACCEL", "tcg"));
        argv_add(a, "-m");
        argv_add(a, "%u", o->mem_mib ? o->mem_mib : 1024);
        argv_add(a, "-smp");
        argv_add(a, "%u", o->vcpus ? o->vcpus : 1);
        argv_add(a, "-kernel");
        argv_add(a, "%s/vmlinuz", guest);
        argv_add(a, "-initrd");
        argv_add(a, "%s/initramfs.gz", guest);
        argv_add(a, "-append");
        argv_add(a, "console=ttyS0 panic=-1");
        argv_add(a, "-nodefaults");
        argv_add(a, "-display");
        argv_add(a, "none");
        argv_add(a, "-no-reboot");
        argv_add(a, "-serial");
        argv_add(a, "file:%s", vm->console);
        argv_add(a, "-qmp");
        argv_add(a, "unix:%s,server=on,wait=off", vm->qmp);
        argv_add(a, "-chardev");
        argv_add(a, "socket,id=ctl,path=%s,server=on,wait=off", vm->ctl);
        argv_add(a, "-device");
        argv_add(a, "virtio-serial-pci");
        argv_add(a, "-device");
        argv_add(a, "virtserialport,chardev=ctl,name=ctl");
        if (!o->no_balloon) {
                argv_add(a, "-device");
                argv_add(a, "virtio-balloon-pci,id=%s,deflate-on-oom=%s,free-page-reporting=%s",
                         o->balloon_id ? o->balloon_id : "balloon0",
                         o->deflate_on_oom ? "on" : "off", o->free_page_reporting ? "on" : "off");
        }
        _cleanup_free_ char *extra = o->extra_args ? strdup(o->extra_args) : NULL;
        char *save = NULL;
        for (char *t = extra ? strtok_r(extra, " \t", &save) : NULL; t; t = strtok_r(NULL, " \t", &save))
                argv_add(a, "%s", t);
        if (o->extra_args && !extra)
                a->oom = true;
}

/* Parses a CPU list "0", "0-1,3" into set. 0 or -EINVAL. */
static int parse_cpu_list(const char *s, cpu_set_t *set) {
        CPU_ZERO(set);
        while (*s) {
                char *end;
                unsigned long lo = strtoul(s, &end, 10), hi = lo;
                if (end == s)
                        return -EINVAL;
                if (*end == '-') {
                        s = end + 1;
                        hi = strtoul(s, &end, 10);
                        if (end == s || hi < lo)
                                return -EINVAL;
                }
                if (hi >= CPU_SETSIZE)
                        return -EINVAL;
                for (unsigned long c = lo; c <= hi; c++)
                        CPU_SET(c, set);
                if (*end && *end != ',')
                        return -EINVAL;
                s = *end ? end + 1 : end;
        }
        return CPU_COUNT(set) > 0 ? 0 : -EINVAL;
}

/* In the child: die with the parent, pin, silence stdin, log stdout+stderr, exec QEMU. */
static _Noreturn void exec_qemu(char **argv, const char *log, const cpu_set_t *cpus, pid_t parent) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL); /* a caller's blocked signals must not reach QEMU */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(127);
        if (cpus && sched_setaffinity(0, sizeof(*cpus), cpus) < 0)
                _exit(126);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (nul < 0 || fd < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
                _exit(125);
        execvp(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

static int spawn_qemu(struct testvm *vm, const struct testvm_opts *o, const char *guest) {
        struct argv a = {};
        cpu_set_t cpus;
        if (o->cpu_list && parse_cpu_list(o->cpu_list, &cpus) < 0) {
                fprintf(stderr, "testvm: bad CPU list \"%s\"\n", o->cpu_list);
                return -EINVAL;
        }
        qemu_argv(&a, vm, o, guest);
        if (a.oom) {
                argv_free(&a);
                return -ENOMEM;
        }
        pid_t parent = getpid(), pid = fork();
        if (pid == 0)
                exec_qemu(a.v, vm->qemu_log, o->cpu_list ? &cpus : NULL, parent);
        argv_free(&a);
        if (pid < 0)
                return -errno;
        vm->pid = pid;
        vm->owner = true;
        track(vm, true);
        return write_pid_file(vm);
}

static void print_tail(const char *title, const char *path, long bytes) {
        char buf[4096];
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return;
        fprintf(stderr, "---- %s (%s), last %ld bytes ----\n", title, path, bytes);
        if (fseek(f, -bytes, SEEK_END) < 0)
                rewind(f);
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, stderr);
        fprintf(stderr, "\n---- end of %s ----\n", title);
}

static int boot_failed(struct testvm *vm, int r, const char *why) {
        fprintf(stderr, "testvm: guest in %s did not become ready: %s (%s)\n", vm->dir, why, strerror(-r));
        print_tail("QEMU stderr", vm->qemu_log, 2048);
        print_tail("guest console", vm->console, 3072);
        return r;
}

/* Waits for QEMU's ctl socket, then for the guest's first answer. */
static int wait_ready(struct testvm *vm, uint64_t start) {
        uint64_t deadline = start + (uint64_t) TESTVM_BOOT_TIMEOUT_MS * 1000;
        int r;
        while ((r = vm_connect(vm)) < 0) {
                if (!vm_alive(vm))
                        return boot_failed(vm, -ECHILD, "QEMU exited");
                if (now_usec() > deadline)
                        return boot_failed(vm, r, "no command socket");
                usleep(20000);
        }
        _cleanup_free_ char *out = NULL;
        uint64_t now = now_usec();
        r = testvm_exec(vm, "echo ready", now < deadline ? (unsigned) ((deadline - now) / 1000) : 1, &out);
        if (r < 0 && r != -ETIMEDOUT && !vm_alive_after(vm, 2000))
                return boot_failed(vm, -ECHILD, "QEMU exited");
        if (r != 0 || strcmp(out, "ready\n") != 0)
                return boot_failed(vm, r < 0 ? r : -EPROTO, r == -ETIMEDOUT ?
                                   "no answer on the command channel" : "unexpected answer");
        vm->boot_ms = (unsigned) ((now_usec() - start) / 1000);
        return 0;
}

static int make_dir(const struct testvm_opts *o, char **ret) {
        char *d;
        if (o->dir) {
                if (mkdir(o->dir, 0755) < 0 && errno != EEXIST)
                        return -errno;
                d = realpath(o->dir, NULL);
        } else {
                sweep_stale_dirs(env_or("TMPDIR", "/tmp"));
                if (asprintf(&d, "%s/ppn-vm-XXXXXX", env_or("TMPDIR", "/tmp")) < 0)
                        return -ENOMEM;
                if (!mkdtemp(d)) {
                        int r = -errno;
                        free(d);
                        return r;
                }
        }
        if (!d)
                return -errno;
        *ret = d;
        return 0;
}

int testvm_boot(const struct testvm_opts *o, struct testvm **ret) {
        static const struct testvm_opts defaults = {};
        const char *guest = env_or("PPN_GUEST_DIR", "build/guest");
        _cleanup_free_ char *dir = NULL, *kernel = path_join(guest, "vmlinuz"),
                            *initrd = path_join(guest, "initramfs.gz");
        o = o ? o : &defaults;
        if (!kernel || !initrd)
                return -ENOMEM;
        if (access(kernel, R_OK) < 0 || access(initrd, R_OK) < 0) {
                fprintf(stderr, "testvm: no test guest in %s (run tests/guest/build-guest.sh %s, "
                        "or ./run test)\n", guest, guest);
                return -ENOENT;
        }
        int r = make_dir(o, &dir);
        if (r < 0) {
                fprintf(stderr, "testvm: cannot create %s: %s\n", o->dir ? o->dir : "a temp dir", strerror(-r));
                return r;
        }
        struct testvm *vm = vm_new(dir);
        if (!vm)
                return -ENOMEM;
        vm->own_dir = !o->dir;
        install_cleanup();
        if (o->dir)
                remove_files(vm); /* stale sockets and ready file from an earlier run */
        uint64_t start = now_usec();
        r = spawn_qemu(vm, o, guest);
        if (r >= 0)
                r = wait_ready(vm, start);
        if (r < 0) {
                testvm_kill(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* DIR/ready, written by `testvm boot`: "pid N" and "qmp PATH" lines. */
int testvm_attach(const char *dir, struct testvm **ret) {
        _cleanup_free_ char *path = path_join(dir, "ready");
        _cleanup_fclose_ FILE *f = path ? fopen(path, "re") : NULL;
        char line[4096];
        long pid = 0;
        if (!f)
                return path ? -errno : -ENOMEM;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "pid ", 4) == 0)
                        pid = strtol(line + 4, NULL, 10);
        if (pid <= 0)
                return -EBADMSG;
        struct testvm *vm = vm_new(dir);
        if (!vm)
                return -ENOMEM;
        vm->pid = (pid_t) pid;
        *ret = vm;
        return 0;
}
