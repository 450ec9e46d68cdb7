/* SPDX-License-Identifier: Apache-2.0 */
#include "vm.h"

#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "archive.h"
#include "log.h"

/* A growing NULL-terminated argument vector; the first failure sticks. */
struct args {
        char **v;
        size_t n;
        int r;
};

static void add(struct args *a, const char *fmt, ...) _printf_(2, 3);
static void add(struct args *a, const char *fmt, ...) {
        char *s = NULL, **v;
        va_list ap;
        if (a->r < 0)
                return;
        va_start(ap, fmt);
        int k = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (k < 0 || !(v = realloc(a->v, (a->n + 2) * sizeof(char *)))) {
                if (k >= 0)
                        free(s);
                a->r = -ENOMEM;
                return;
        }
        a->v = v;
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
}

/* Adds prefix + value (comma-escaped) + suffix. */
static void add_esc(struct args *a, const char *prefix, const char *value, const char *suffix) {
        _cleanup_free_ char *e = vm_qemu_escape(value);
        if (!e) {
                a->r = -ENOMEM;
                return;
        }
        add(a, "%s%s%s", prefix, e, suffix);
}

char *vm_qemu_escape(const char *s) {
        size_t n = 0;
        for (const char *p = s; *p; p++)
                n += *p == ',' ? 2 : 1;
        char *out = malloc(n + 1), *o = out;
        if (!out)
                return NULL;
        for (const char *p = s; *p; p++) {
                *o++ = *p;
                if (*p == ',')
                        *o++ = ',';
        }
        *o = 0;
        return out;
}

static bool has_control(const char *s) {
        for (; *s; s++)
                if (iscntrl((unsigned char) *s))
                        return true;
        return false;
}

/* Options ppn-pool sets itself; an operator's copy would override or break them. */
static const struct {
        const char *option;
        const char *why;
} owned_options[] = {
        { "S", "ppnctl start decides when the vCPUs run" },
        { "accel", "the accelerator is a node setting (PPN_ACCEL)" },
        { "chroot", "QEMU must keep its paths (QMP socket, log)" },
        { "daemonize", "ppnctl start detaches QEMU itself and must see its errors" },
        { "enable-kvm", "the accelerator is a node setting (PPN_ACCEL)" },
        { "incoming", "migration is not part of ppn-pool's lifecycle; use export/import" },
        { "m", "memory is the ledger's max (ppnctl vm set NAME max=SIZE)" },
        { "mon", "the QMP monitor is set up from the ledger's qmp path" },
        { "monitor", "the QMP monitor is set up from the ledger's qmp path" },
        { "name", "the name is the ledger's" },
        { "pidfile", "the daemon finds QEMU through its QMP socket" },
        { "qmp", "the QMP monitor is set up from the ledger's qmp path" },
        { "qmp-pretty", "the QMP monitor is set up from the ledger's qmp path" },
        { "runas", "QEMU must keep access to its QMP socket and log" },
        { "serial", "the serial console goes to the VM's log file" },
        { "smp", "vCPUs are the ledger's (ppnctl vm set NAME vcpus=N)" },
        { "uuid", "the uuid is the VM's identity in the ledger" },
};

static const char *owned_option_reason(const char *arg) {
        const char *name = arg + (arg[1] == '-' ? 2 : 1);   /* QEMU accepts -opt and --opt */
        for (size_t i = 0; i < ELEMENTSOF(owned_options); i++)
                if (strcmp(name, owned_options[i].option) == 0)
                        return owned_options[i].why;
        return NULL;
}

static int check_extra_value(const char *opt, const char *value, struct ppn_error *err) {
        const char *name = opt + (opt[1] == '-' ? 2 : 1);
        if (strcmp(name, "device") == 0 && strncmp(value, "virtio-balloon", 14) == 0)
                return ppn_error_set(err, -EINVAL, "extra QEMU option '%s %s': the balloon device is added by "
                                     "ppn-pool (its options are settable)", opt, value);
        if ((strcmp(name, "machine") == 0 || strcmp(name, "M") == 0) && strstr(value, "accel="))
                return ppn_error_set(err, -EINVAL, "extra QEMU option '%s %s': the accelerator is a node "
                                     "setting (PPN_ACCEL); drop accel=", opt, value);
        if (strstr(value, "id=ppn-"))
                return ppn_error_set(err, -EINVAL, "extra QEMU option '%s %s': ids starting with \"ppn-\" are "
                                     "reserved", opt, value);
        return 0;
}

/* Checks the operator's options. Values that start with '-' are taken as options: QEMU
 * values rarely do, and a false refusal is safer than a silently overridden setting. */
static int check_extra(const char *const *extra, struct ppn_error *err) {
        const char *prev = NULL;
        for (size_t i = 0; extra && extra[i]; i++) {
                const char *a = extra[i], *why;
                if (!*a || has_control(a))
                        return ppn_error_set(err, -EINVAL, "extra QEMU option #%zu is empty or has control "
                                             "characters; fix it with ppnctl vm set", i + 1);
                if (a[0] == '-' && a[1] && (why = owned_option_reason(a)))
                        return ppn_error_set(err, -EINVAL, "extra QEMU option '%s' is refused: %s", a, why);
                if (prev && a[0] != '-') {
                        int r = check_extra_value(prev, a, err);
                        if (r < 0)
                                return r;
                }
                prev = a[0] == '-' ? a : NULL;
        }
        return 0;
}

static int check_spec(const struct vm_spec *s, struct ppn_error *err) {
        if (!s->name || !*s->name || has_control(s->name))
                return ppn_error_set(err, -EINVAL, "VM name missing or invalid");
        if (s->mem_bytes < MIB || s->mem_bytes % MIB)
                return ppn_error_set(err, -EINVAL, "%s: memory %" PRIu64 " bytes is not a whole number of MiB",
                                     s->name, s->mem_bytes);
        if (s->vmem_bytes % (2 * MIB) || s->vmem_requested_bytes % (2 * MIB) || s->vmem_requested_bytes > s->vmem_bytes)
                return ppn_error_set(err, -EINVAL, "%s: virtio-mem region %" PRIu64 " bytes (requested %" PRIu64
                                     ") is not whole 2 MiB blocks, or less than requested", s->name, s->vmem_bytes,
                                     s->vmem_requested_bytes);
        if (!s->qmp_path || s->qmp_path[0] != '/' || has_control(s->qmp_path) ||
            strlen(s->qmp_path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return ppn_error_set(err, -EINVAL, "%s: QMP socket path must be absolute and < 108 bytes", s->name);
        if (s->ctl_path && (s->ctl_path[0] != '/' || has_control(s->ctl_path) ||
                            strlen(s->ctl_path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path)))
                return ppn_error_set(err, -EINVAL, "%s: control socket path must be absolute and < 108 bytes", s->name);
        if (!s->log_path || has_control(s->log_path))
                return ppn_error_set(err, -EINVAL, "%s: log path missing or invalid", s->name);
        if ((s->uuid && has_control(s->uuid)) || (s->accel && (!*s->accel || has_control(s->accel) ||
                                                               strchr(s->accel, ','))))
                return ppn_error_set(err, -EINVAL, "%s: uuid or accelerator invalid", s->name);
        for (size_t i = 0; i < s->n_disks; i++) {
                const struct vm_disk *d = &s->disks[i];
                if (!d->path || !*d->path || has_control(d->path))
                        return ppn_error_set(err, -EINVAL, "%s: disk #%zu: path empty or has control characters",
                                             s->name, i + 1);
                if (d->format && strcmp(d->format, "raw") != 0 && strcmp(d->format, "qcow2") != 0)
                        return ppn_error_set(err, -EINVAL, "%s: disk %s: format '%s' (want raw or qcow2)",
                                             s->name, d->path, d->format);
        }
        return check_extra(s->extra, err);
}

static void add_base(struct args *a, const struct vm_spec *s) {
        add(a, "%s", s->qemu ? s->qemu : VM_QEMU_DEFAULT);
        add(a, "-name");
        add_esc(a, "guest=", s->name, "");
        if (s->uuid) {
                add(a, "-uuid");
                add(a, "%s", s->uuid);
        }
        add(a, "-accel");
        add(a, "%s", s->accel ? s->accel : VM_ACCEL_DEFAULT);
        add(a, "-m");
        if (s->vmem_bytes)
                add(a, "%" PRIu64 "M,maxmem=%" PRIu64 "M,slots=1", s->mem_bytes / MIB, (s->mem_bytes + s->vmem_bytes) / MIB);
        else
                add(a, "%" PRIu64 "M", s->mem_bytes / MIB);
        add(a, "-smp");
        add(a, "%u", s->vcpus ? s->vcpus : 1);
        add(a, "-nodefaults");
        add(a, "-no-user-config");
        add(a, "-display");
        add(a, "none");
        if (s->paused)
                add(a, "-S");
}

static void add_devices(struct args *a, const struct vm_spec *s) {
        add(a, "-chardev");
        add_esc(a, "socket,id=ppn-qmp,path=", s->qmp_path, ",server=on,wait=off");
        add(a, "-mon");
        add(a, "chardev=ppn-qmp,mode=control");
        if (s->ctl_path) {
                add(a, "-chardev");
                add_esc(a, "socket,id=ppn-ctl,path=", s->ctl_path, ",server=on,wait=off");
                add(a, "-mon");
                add(a, "chardev=ppn-ctl,mode=control");
        }
        add(a, "-chardev");
        add_esc(a, "file,id=ppn-console,path=", s->log_path, ",append=on");
        add(a, "-serial");
        add(a, "chardev:ppn-console");
        if (!s->no_balloon) {
                add(a, "-device");
                add(a, "virtio-balloon-pci,id=%s,deflate-on-oom=%s,free-page-reporting=%s", VM_BALLOON_ID,
                    s->no_deflate_on_oom ? "off" : "on", s->no_free_page_reporting ? "off" : "on");
        }
        if (s->vmem_bytes) {
                add(a, "-object");
                add(a, "memory-backend-ram,id=%s,size=%" PRIu64 "M", VM_VMEM_MEMDEV_ID, s->vmem_bytes / MIB);
                add(a, "-device");
                add(a, "virtio-mem-pci,id=%s,memdev=%s,requested-size=%" PRIu64 "M", VM_VMEM_ID, VM_VMEM_MEMDEV_ID,
                    s->vmem_requested_bytes / MIB);
        }
        for (size_t i = 0; i < s->n_disks; i++) {
                _cleanup_free_ char *path = vm_qemu_escape(s->disks[i].path);
                if (!path) {
                        a->r = -ENOMEM;
                        return;
                }
                add(a, "-drive");
                add(a, "file=%s,format=%s,if=virtio", path, s->disks[i].format ? s->disks[i].format : "raw");
        }
        for (size_t i = 0; s->extra && s->extra[i]; i++)
                add(a, "%s", s->extra[i]);
        if (s->incoming) {
                add(a, "-incoming");
                add(a, "defer");
        }
}

int vm_build_argv(const struct vm_spec *spec, char ***ret_argv, struct ppn_error *err) {
        struct args a = {};
        int r = check_spec(spec, err);
        if (r < 0)
                return r;
        add_base(&a, spec);
        add_devices(&a, spec);
        if (a.r < 0) {
                strv_free(a.v);
                return ppn_error_set(err, a.r, "out of memory");
        }
        *ret_argv = a.v;
        return 0;
}

static bool shell_safe(const char *s) {
        if (!*s)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && !strchr("-_./=,:+@%", *s))
                        return false;
        return true;
}

char *vm_argv_to_string(char *const *argv) {
        size_t n = 1;
        for (size_t i = 0; argv[i]; i++)
                n += 4 * strlen(argv[i]) + 3;
        char *out = malloc(n), *o = out;
        if (!out)
                return NULL;
        for (size_t i = 0; argv[i]; i++) {
                if (i)
                        *o++ = ' ';
                if (shell_safe(argv[i])) {
                        o = stpcpy(o, argv[i]);
                        continue;
                }
                *o++ = '\'';
                for (const char *p = argv[i]; *p; p++)
                        o = *p == '\'' ? stpcpy(o, "'\\''") : (*o = *p, o + 1);
                *o++ = '\'';
        }
        *o = 0;
        return out;
}

char *vm_runtime_path(const char *dir, const char *name, const char *suffix) {
        char *p;
        return asprintf(&p, "%s/%s%s", dir ? dir : VM_RUNTIME_DIR_DEFAULT, name, suffix) < 0
                ? NULL : p;
}

int vm_disk_detect_format(const char *path, const char **ret_format) {
        char header[4];
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = pread(fd, header, sizeof(header), 0);
        if (n < 0)
                return -errno;
        *ret_format = archive_detect_format(header, (size_t) n);
        return 0;
}

int vm_disks_detect(char *const *paths, struct vm_disk **ret, size_t *ret_n, struct ppn_error *err) {
        struct vm_disk *disks;
        size_t n = 0;

        while (paths && paths[n])
                n++;
        disks = calloc(n + 1, sizeof(*disks));
        if (!disks)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                int r = vm_disk_detect_format(paths[i], &disks[i].format);
                if (r < 0) {
                        free(disks);
                        return ppn_error_set(err, r, "disk %s: %s", paths[i], strerror(-r));
                }
                disks[i].path = paths[i];
        }
        *ret = disks;
        *ret_n = n;
        return 0;
}

int vm_qmp_alive(const char *qmp_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(qmp_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, qmp_path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                return 1;
        return errno == ENOENT || errno == ECONNREFUSED ? 0 : -errno;
}

/* mkdir -p for the parent of path, mode 0750 for what it creates. */
static int mkdir_parents(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        char *dir = dirname(copy);
        for (char *p = dir + 1; ; p++) {
                if (*p == '/' || *p == 0) {
                        char c = *p;
                        *p = 0;
                        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                                return -errno;
                        *p = c;
                        if (!c)
                                return 0;
                }
        }
}

char *vm_log_tail(const char *path, uint64_t from, size_t max) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return strdup("");
        uint64_t end = (uint64_t) st.st_size, start = from > end ? end : from;
        if (end - start > max)
                start = end - max;
        char *buf = malloc(end - start + 1);
        if (!buf)
                return NULL;
        ssize_t n = pread(fd, buf, end - start, (off_t) start);
        buf[n < 0 ? 0 : n] = 0;
        /* Trailing newlines make messages ugly. */
        for (size_t k = strlen(buf); k > 0 && buf[k - 1] == '\n'; k--)
                buf[k - 1] = 0;
        return buf;
}

/* In the child: new session (QEMU must outlive ppnctl and its terminal), stdio to the log. */
static _Noreturn void exec_child(char *const *argv, int log_fd, int status_fd) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* QEMU lives for months: it must not hold the ledger, cgroup or terminal fds of ppnctl. */
        close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (setsid() < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
                int e = errno;
                (void) !write(status_fd, &e, sizeof(e));
                _exit(127);
        }
        execvp(argv[0], argv);
        int e = errno;
        dprintf(2, "ppn: cannot execute %s: %s\n", argv[0], strerror(e));
        (void) !write(status_fd, &e, sizeof(e));
        _exit(127);
}

/* Forks and execs; the CLOEXEC pipe reports an exec failure. */
static int spawn(char *const *argv, int log_fd, pid_t *ret_pid) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(p[0]);
                close(p[1]);
                return r;
        }
        if (pid == 0)
                exec_child(argv, log_fd, p[1]);
        close(p[1]);
        int e = 0;
        ssize_t n;
        while ((n = read(p[0], &e, sizeof(e))) < 0 && errno == EINTR)
                ;
        close(p[0]);
        if (n == (ssize_t) sizeof(e)) {
                waitpid(pid, NULL, 0);
                return -e;
        }
        *ret_pid = pid;
        return 0;
}

static int launch_failed(pid_t pid, const char *log_path, uint64_t log_start, int r, const char *what,
                         struct ppn_error *err) {
        if (r != -ECHILD) {   /* still running but unusable: do not leave it behind */
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        _cleanup_free_ char *tail = vm_log_tail(log_path, log_start, 400);
        return ppn_error_set(err, r, "QEMU %s: %s%s(log: %s)", what, tail && *tail ? tail : "no output",
                             tail && *tail ? "\n" : " ", log_path);
}

static int qmp_socket_connect(const char *qmp_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(qmp_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, qmp_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/*
 * Waiting for QEMU to be up. The socket is bound as soon as the chardev exists and the
 * greeting comes from the monitor's own I/O thread, both before the devices are created (a
 * bad -device fails after them). Commands are dispatched by the main loop, which runs only
 * once the machine is built: so up = query-status answered.
 */
struct probe {
        int fd;
        bool sent;
        char buf[4096];
        size_t len;
};

static int probe_send(struct probe *p) {
        static const char cmds[] = "{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-status\"}\n";
        if (send(p->fd, cmds, sizeof(cmds) - 1, MSG_NOSIGNAL) != (ssize_t) sizeof(cmds) - 1)
                return -EIO;
        p->sent = true;
        return 0;
}

static void probe_reset(struct probe *p) {
        if (p->fd >= 0)
                close(p->fd);
        *p = (struct probe) { .fd = -1 };
}

/* One step: 1 up, 0 not yet, -errno. */
static int probe_step(struct probe *p, const char *qmp_path) {
        if (p->fd < 0) {
                int fd = qmp_socket_connect(qmp_path);
                if (fd < 0)
                        return fd == -ENOENT || fd == -ECONNREFUSED ? 0 : fd;
                p->fd = fd;
        }
        struct pollfd pf = { .fd = p->fd, .events = POLLIN };
        int r = poll(&pf, 1, 100);
        if (r <= 0)
                return r < 0 && errno != EINTR ? -errno : 0;
        ssize_t n = recv(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len, MSG_DONTWAIT);
        if (n <= 0 || p->len + (size_t) n >= sizeof(p->buf) - 1) {
                probe_reset(p);   /* closed: QEMU is exiting; the caller sees its exit next */
                return 0;
        }
        p->len += (size_t) n;
        p->buf[p->len] = 0;
        if (!p->sent && strstr(p->buf, "\"QMP\"") && probe_send(p) < 0) {
                probe_reset(p);
                return 0;
        }
        return p->sent && strstr(p->buf, "\"status\"") ? 1 : 0;
}

/* Waits for QEMU's QMP greeting or its exit. */
static int wait_bound(pid_t pid, const char *qmp_path, const char *log_path, uint64_t log_start,
                      uint64_t timeout_usec, struct ppn_error *err) {
        uint64_t deadline = now_usec() + (timeout_usec ? timeout_usec : VM_LAUNCH_TIMEOUT_USEC);
        struct probe p = { .fd = -1 };
        int r;
        for (;;) {
                int status;
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid) {
                        probe_reset(&p);
                        return launch_failed(pid, log_path, log_start, -ECHILD,
                                             WIFEXITED(status) ? "exited during start" : "was killed during start",
                                             err);
                }
                r = probe_step(&p, qmp_path);
                if (r != 0 || now_usec() > deadline)
                        break;
                if (p.fd < 0)
                        usleep(20000);
        }
        probe_reset(&p);
        if (r == 1)
                return 0;
        return launch_failed(pid, log_path, log_start, r < 0 ? r : -ETIMEDOUT,
                             "did not answer on its QMP socket in time", err);
}

/* A socket path for QEMU to bind: its directory exists, no stale socket, nobody listening. */
static int prepare_socket(const char *path, struct ppn_error *err) {
        int r = vm_qmp_alive(path);
        if (r == 1)
                return ppn_error_set(err, -EBUSY, "%s: a QEMU already listens there: the VM runs", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return ppn_error_set(err, -errno, "%s: cannot remove the stale socket: %s", path, strerror(errno));
        if ((r = mkdir_parents(path)) < 0)
                return ppn_error_set(err, r, "cannot create the directory of %s: %s", path, strerror(-r));
        return 0;
}

static int prepare_paths(const struct vm_spec *s, struct ppn_error *err) {
        int r = prepare_socket(s->qmp_path, err);
        if (r >= 0 && s->ctl_path)
                r = prepare_socket(s->ctl_path, err);
        if (r >= 0 && (r = mkdir_parents(s->log_path)) < 0)
                return ppn_error_set(err, r, "cannot create the directory of %s: %s", s->log_path, strerror(-r));
        return r;
}

int vm_launch(const struct vm_spec *spec, char *const *argv, uint64_t timeout_usec, pid_t *ret_pid,
              struct ppn_error *err) {
        const char *log_path = spec->log_path, *probe = spec->ctl_path ? spec->ctl_path : spec->qmp_path;
        struct stat st;
        pid_t pid = 0;
        int r = prepare_paths(spec, err);
        if (r < 0)
                return r;
        _cleanup_close_ int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (log_fd < 0 || fstat(log_fd, &st) < 0)
                return ppn_error_set(err, -errno, "%s: cannot open the VM log: %s", log_path, strerror(errno));
        uint64_t log_start = (uint64_t) st.st_size;
        dprintf(log_fd, "---- ppn: starting QEMU (pid follows) ----\n");
        _cleanup_free_ char *line = vm_argv_to_string(argv);
        log_debug("launching: %s", line ? line : argv[0]);
        r = spawn(argv, log_fd, &pid);
        if (r < 0)
                return ppn_error_set(err, r, "cannot execute %s: %s", argv[0], strerror(-r));
        r = wait_bound(pid, probe, log_path, log_start, timeout_usec, err);
        if (r < 0)
                return r;
        *ret_pid = pid;
        return 0;
}

int vm_wait_exit(pid_t pid, uint64_t timeout_usec) {
        _cleanup_close_ int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0)
                return errno == ESRCH ? 1 : -errno;
        uint64_t deadline = now_usec() + timeout_usec;
        for (;;) {
                uint64_t now = now_usec();
                int ms = now >= deadline ? 0 : (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int r = poll(&p, 1, ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                return r > 0 ? 1 : 0;
        }
}
