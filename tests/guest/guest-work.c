/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guest-work: workloads for the test guest, run by the guest's command server (static binary,
 * no libc in the guest). Each workload runs in the background under a NAME, with its pid in
 * $WORK_DIR/NAME.pid and its progress in $WORK_DIR/NAME.log (WORK_DIR defaults to /run/work),
 * so later commands can control it:
 *
 *   guest-work hog NAME MIB [--cgroup DIR]  allocate and touch MIB MiB, hold it; returns once
 *                                           every page is touched ("hog NAME: holding ...")
 *   guest-work free NAME                    the hog gives its memory back and stays alive
 *   guest-work spin NAME [--cgroup DIR]     burn CPU until stopped
 *   guest-work stop NAME                    SIGTERM, wait for the exit, print its last log line
 *                                           (a spinner reports its loops and CPU seconds)
 *   guest-work pid NAME | status NAME       print the pid | the last log line
 *   guest-work read NAME PASSES PAUSE_MS FILE
 *                                           read FILE whole PASSES times, PAUSE_MS apart
 *                                           (through the page cache: a file that stays cached
 *                                           reads fast); logs each pass
 *   guest-work burst NAME COUNT MIB HOLD_MS GAP_MS
 *                                           COUNT times: allocate and touch MIB MiB (in 16 MiB
 *                                           maps), hold HOLD_MS, free, wait GAP_MS
 *
 * read and burst return at once and end by themselves; their last log line is
 * "done: busy B ms, total T ms" (busy: reading, or allocating and touching; total: from start
 * to end with the pauses), which `status NAME` prints.
 *
 * --cgroup DIR: the workload moves itself into DIR (cgroup v2 or v1) before it starts.
 * Exit status: 0 on success, 1 on failure (with a line on stderr saying why).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB_BYTES (1024UL * 1024UL)
/* Progress lines every 64 MiB: a 1 GiB hog logs 16 lines, enough to see a stall. */
#define PROGRESS_MIB 64

static const char *work_dir = "/run/work";
/* The parameters of read and burst (one workload per process: set before spawn()). */
static struct {
        unsigned long passes, count, mib, pause_ms, hold_ms, gap_ms;
        const char *file;
} job;
static volatile sig_atomic_t got_term, got_usr1;

static int fail(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("guest-work: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        return 1;
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void path_of(char *buf, size_t len, const char *name, const char *ext) {
        snprintf(buf, len, "%s/%s.%s", work_dir, name, ext);
}

/* Appends one line to the workload's log (its stdout once it runs in the background). */
static void say(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        putchar('\n');
        fflush(stdout);
        va_end(ap);
}

static pid_t read_pid(const char *name) {
        char path[512];
        path_of(path, sizeof(path), name, "pid");
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        long pid = -1;
        if (fscanf(f, "%ld", &pid) != 1)
                pid = -EBADMSG;
        fclose(f);
        return (pid_t) pid;
}

/* A zombie still answers kill(pid, 0): look at its state instead. */
static int alive(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return 0;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static int last_line(const char *name, char *buf, size_t len) {
        char path[512], line[512];
        path_of(path, sizeof(path), name, "log");
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        buf[0] = 0;
        while (fgets(line, sizeof(line), f))
                snprintf(buf, len, "%s", line);
        fclose(f);
        buf[strcspn(buf, "\n")] = 0;
        return 0;
}

static int join_cgroup(const char *dir) {
        char path[512];
        if (!dir)
                return 0;
        snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
        FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        fprintf(f, "%d\n", (int) getpid());
        return fclose(f) == 0 ? 0 : -errno;
}

static void on_signal(int sig) {
        if (sig == SIGUSR1)
                got_usr1 = 1;
        else
                got_term = 1;
}

typedef int (*work_fn)(const char *name, unsigned long arg, int ready_fd);

/*
 * Runs fn in a background child that owns NAME.pid and NAME.log. The child writes one line
 * to ready_fd when it is under way (or fails); the parent prints that line and returns.
 */
static int spawn(const char *name, unsigned long arg, const char *cgroup, work_fn fn) {
        char pidfile[512], logfile[512], line[512];
        pid_t old = read_pid(name);
        if (old > 0 && alive(old))
                return fail("%s is already running (pid %d)", name, (int) old);
        path_of(pidfile, sizeof(pidfile), name, "pid");
        path_of(logfile, sizeof(logfile), name, "log");
        int p[2];
        if (pipe(p) < 0)
                return fail("pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
                return fail("fork: %s", strerror(errno));
        if (pid == 0) {
                close(p[0]);
                setsid();
                int fd = open(logfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
                        _exit(1);
                FILE *f = fopen(pidfile, "we");
                if (!f)
                        _exit(1);
                fprintf(f, "%d\n", (int) getpid());
                fclose(f);
                if (join_cgroup(cgroup) < 0) {
                        dprintf(p[1], "-%s: cannot join cgroup %s: %s\n", name, cgroup, strerror(errno));
                        _exit(1);
                }
                _exit(fn(name, arg, p[1]));
        }
        close(p[1]);
        FILE *r = fdopen(p[0], "r");
        if (!r || !fgets(line, sizeof(line), r)) {
                int st = 0;
                waitpid(pid, &st, 0);
                return fail("%s died before it started (%s %d)", name,
                            WIFSIGNALED(st) ? "signal" : "status",
                            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
        fclose(r);
        /* "+text" means under way, "-text" means it failed and exits. */
        fputs(line + 1, line[0] == '+' ? stdout : stderr);
        return line[0] == '+' ? 0 : 1;
}

static void touch(char *mem, unsigned long mib) {
        for (unsigned long m = 0; m < mib; m++) {
                /* A written byte per page: every page becomes real, private memory. */
                for (unsigned long off = 0; off < MIB_BYTES; off += PAGE)
                        mem[m * MIB_BYTES + off] = (char) (m + off / PAGE + 1);
                if ((m + 1) % PROGRESS_MIB == 0 || m + 1 == mib)
                        say("touched %lu MiB", m + 1);
        }
}

static int hog_main(const char *name, unsigned long mib, int ready_fd) {
        size_t len = mib * MIB_BYTES;
        double t0 = now_s();
        char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
                dprintf(ready_fd, "-hog %s: cannot map %lu MiB: %s\n", name, mib, strerror(errno));
                return 1;
        }
        /* Signals wait while pages are touched, then are taken only inside sigsuspend(). */
        struct sigaction sa = { .sa_handler = on_signal };
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGUSR1);
        sigaddset(&block, SIGTERM);
        sigprocmask(SIG_BLOCK, &block, &old);
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        touch(mem, mib);
        say("holding %lu MiB", mib);
        dprintf(ready_fd, "+hog %s: holding %lu MiB (pid %d, %.0f ms)\n", name, mib, (int) getpid(),
                (now_s() - t0) * 1000);
        close(ready_fd);
        while (!got_term) {
                sigsuspend(&old);
                if (got_usr1 && mem) {
                        munmap(mem, len);
                        mem = NULL;
                        say("freed %lu MiB", mib);
                }
        }
        say("stopped");
        return 0;
}

static int spin_main(const char *name, unsigned long unused, int ready_fd) {
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGUSR1, SIG_IGN); /* "free" is for hogs; a spinner must not die of it */
        dprintf(ready_fd, "+spin %s: spinning (pid %d)\n", name, (int) getpid());
        close(ready_fd);
        say("spinning");
        volatile uint64_t loops = 0;
        while (!got_term)
                loops++;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        say("spun %llu loops, cpu %.2f s", (unsigned long long) loops,
            ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
        return 0;
}

/* Sleeps ms milliseconds unless SIGTERM arrives; returns false if it did. */
static bool pause_ms(unsigned long ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
        while (!got_term && nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        return !got_term;
}

static void on_term_only(void) {
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGUSR1, SIG_IGN);
}

static int done(double busy_s, double t0) {
        say("done: busy %.0f ms, total %.0f ms", busy_s * 1000, (now_s() - t0) * 1000);
        return 0;
}

/* One pass over the file; returns MiB read or -errno. */
static long read_pass(const char *file) {
        static char buf[1 << 20];
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        long total = 0;
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                total += n;
        int e = n < 0 ? -errno : 0;
        close(fd);
        return e < 0 ? e : total / (long) MIB_BYTES;
}

static int read_main(const char *name, unsigned long unused, int ready_fd) {
        on_term_only();
        if (access(job.file, R_OK) < 0) {
                dprintf(ready_fd, "-read %s: cannot read %s: %s\n", name, job.file, strerror(errno));
                return 1;
        }
        dprintf(ready_fd, "+read %s: %lu passes over %s (pid %d)\n", name, job.passes, job.file, (int) getpid());
        close(ready_fd);
        double t0 = now_s(), busy = 0;
        for (unsigned long k = 0; k < job.passes; k++) {
                if (k > 0 && !pause_ms(job.pause_ms))
                        break;
                double t = now_s();
                long mib = read_pass(job.file);
                if (mib < 0) {
                        say("pass %lu: %s", k + 1, strerror((int) -mib));
                        return 1;
                }
                busy += now_s() - t;
                say("pass %lu: %ld MiB in %.0f ms", k + 1, mib, (now_s() - t) * 1000);
        }
        if (got_term) {
                say("stopped");
                return 0;
        }
        return done(busy, t0);
}

#define BURST_MAP_MIB 16UL

/* Maps and touches mib MiB in BURST_MAP_MIB pieces (one large map is refused by the guest's
 * overcommit heuristic once a balloon has shrunk MemTotal). Returns the number of maps made. */
static size_t burst_alloc(char **maps, unsigned long mib) {
        size_t n = 0;
        for (unsigned long done_mib = 0; done_mib < mib && !got_term; done_mib += BURST_MAP_MIB) {
                unsigned long m = mib - done_mib < BURST_MAP_MIB ? mib - done_mib : BURST_MAP_MIB;
                char *p = mmap(NULL, m * MIB_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        break;
                for (unsigned long off = 0; off < m * MIB_BYTES; off += PAGE)
                        p[off] = (char) (off / PAGE + 1);
                maps[n++] = p;
        }
        return n;
}

static void burst_free(char **maps, size_t n, unsigned long mib) {
        for (size_t i = 0; i < n; i++) {
                unsigned long m = i + 1 < n || mib % BURST_MAP_MIB == 0 ? BURST_MAP_MIB : mib % BURST_MAP_MIB;
                munmap(maps[i], m * MIB_BYTES);
        }
}

static int burst_main(const char *name, unsigned long unused, int ready_fd) {
        size_t nmaps = (job.mib + BURST_MAP_MIB - 1) / BURST_MAP_MIB;
        char **maps = calloc(nmaps, sizeof(*maps));
        on_term_only();
        if (!maps) {
                dprintf(ready_fd, "-burst %s: out of memory\n", name);
                return 1;
        }
        dprintf(ready_fd, "+burst %s: %lu x %lu MiB (pid %d)\n", name, job.count, job.mib, (int) getpid());
        close(ready_fd);
        double t0 = now_s(), busy = 0;
        for (unsigned long k = 0; k < job.count && !got_term; k++) {
                if (k > 0 && !pause_ms(job.gap_ms))
                        break;
                double t = now_s();
                size_t n = burst_alloc(maps, job.mib);
                busy += now_s() - t;
                if (n < nmaps && !got_term) {
                        say("burst %lu: mmap: %s", k + 1, strerror(errno));
                        return 1;
                }
                say("burst %lu: %lu MiB in %.0f ms", k + 1, job.mib, (now_s() - t) * 1000);
                pause_ms(job.hold_ms);
                burst_free(maps, n, job.mib);
        }
        free(maps);
        if (got_term) {
                say("stopped");
                return 0;
        }
        return done(busy, t0);
}

/* Sends sig to NAME, then waits up to timeout_s for a log line containing want (or exit). */
static int signal_and_wait(const char *name, int sig, const char *want, double timeout_s) {
        char line[512];
        pid_t pid = read_pid(name);
        if (pid < 0 || !alive(pid))
                return fail("%s is not running", name);
        if (kill(pid, sig) < 0)
                return fail("kill %d: %s", (int) pid, strerror(errno));
        for (double end = now_s() + timeout_s; now_s() < end; usleep(10000)) {
                int running = alive(pid);
                if (last_line(name, line, sizeof(line)) == 0 && want && strstr(line, want)) {
                        printf("%s: %s\n", name, line);
                        return 0;
                }
                if (!running) {
                        printf("%s: %s\n", name, line);
                        return want ? 1 : 0;
                }
        }
        return fail("%s (pid %d) did not react to signal %d in %.0f s", name, (int) pid, sig, timeout_s);
}

static int parse_mib(const char *s, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || v == 0 || v > (1UL << 24))
                return -EINVAL;
        *ret = v;
        return 0;
}

static int cmd_hog(int argc, char **argv, const char *cgroup) {
        unsigned long mib;
        if (argc != 2 || parse_mib(argv[1], &mib) < 0)
                return fail("usage: hog NAME MIB (MIB: 1..16777216)");
        return spawn(argv[0], mib, cgroup, hog_main);
}

static int cmd_spin(int argc, char **argv, const char *cgroup) {
        if (argc != 1)
                return fail("usage: spin NAME");
        return spawn(argv[0], 0, cgroup, spin_main);
}

/* A count or duration: 0..limit (0 only if zero_ok). */
static int parse_num(const char *s, unsigned long limit, bool zero_ok, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v > limit || (v == 0 && !zero_ok))
                return -EINVAL;
        *ret = v;
        return 0;
}

static int cmd_read(int argc, char **argv, const char *cgroup) {
        if (argc != 4 || parse_num(argv[1], 1000000, false, &job.passes) < 0 ||
            parse_num(argv[2], 3600000, true, &job.pause_ms) < 0)
                return fail("usage: read NAME PASSES PAUSE_MS FILE (PASSES: 1..1000000, PAUSE_MS: 0..3600000)");
        job.file = argv[3];
        return spawn(argv[0], 0, cgroup, read_main);
}

static int cmd_burst(int argc, char **argv, const char *cgroup) {
        if (argc != 5 || parse_num(argv[1], 1000000, false, &job.count) < 0 || parse_mib(argv[2], &job.mib) < 0 ||
            parse_num(argv[3], 3600000, true, &job.hold_ms) < 0 || parse_num(argv[4], 3600000, true, &job.gap_ms) < 0)
                return fail("usage: burst NAME COUNT MIB HOLD_MS GAP_MS (COUNT: 1..1000000, MIB: 1..16777216, "
                            "HOLD_MS and GAP_MS: 0..3600000)");
        return spawn(argv[0], 0, cgroup, burst_main);
}

static int cmd_free(int argc, char **argv, const char *cgroup) {
        char line[512];
        if (argc != 1)
                return fail("usage: free NAME");
        if (last_line(argv[0], line, sizeof(line)) == 0 && strstr(line, "spinning"))
                return fail("%s is a spinner, not a hog", argv[0]);
        return signal_and_wait(argv[0], SIGUSR1, "freed", 30);
}

static int cmd_stop(int argc, char **argv, const char *cgroup) {
        if (argc != 1)
                return fail("usage: stop NAME");
        return signal_and_wait(argv[0], SIGTERM, NULL, 30);
}

static int cmd_pid(int argc, char **argv, const char *cgroup) {
        pid_t pid = argc == 1 ? read_pid(argv[0]) : -EINVAL;
        if (pid < 0 || !alive(pid))
                return fail("%s is not running", argc == 1 ? argv[0] : "?");
        printf("%d\n", (int) pid);
        return 0;
}

static int cmd_status(int argc, char **argv, const char *cgroup) {
        char line[512];
        if (argc != 1 || last_line(argv[0], line, sizeof(line)) < 0)
                return fail("no workload named %s", argc == 1 ? argv[0] : "?");
        pid_t pid = read_pid(argv[0]);
        printf("%s: %s%s\n", argv[0], line, pid > 0 && alive(pid) ? "" : " (exited)");
        return 0;
}

static const struct {
        const char *name;
        int (*fn)(int argc, char **argv, const char *cgroup);
        const char *usage;
} commands[] = {
        { "hog", cmd_hog, "hog NAME MIB [--cgroup DIR]" },
        { "free", cmd_free, "free NAME" },
        { "spin", cmd_spin, "spin NAME [--cgroup DIR]" },
        { "stop", cmd_stop, "stop NAME" },
        { "pid", cmd_pid, "pid NAME" },
        { "status", cmd_status, "status NAME" },
        { "read", cmd_read, "read NAME PASSES PAUSE_MS FILE [--cgroup DIR]" },
        { "burst", cmd_burst, "burst NAME COUNT MIB HOLD_MS GAP_MS [--cgroup DIR]" },
};

static int usage(void) {
        fprintf(stderr, "usage:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(stderr, "  guest-work %s\n", commands[i].usage);
        return 2;
}

int main(int argc, char **argv) {
        const char *cgroup = NULL, *dir = getenv("WORK_DIR");
        char *args[8];
        int n = 0;
        if (dir && *dir)
                work_dir = dir;
        for (int i = 2; i < argc; i++) {
                if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc)
                        cgroup = argv[++i];
                else if (n < 8)
                        args[n++] = argv[i];
                else
                        return usage();
        }
        if (argc < 2)
                return usage();
        mkdir(work_dir, 0755);
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].fn(n, args, cgroup);
        return usage();
}
