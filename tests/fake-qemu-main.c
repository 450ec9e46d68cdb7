/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fake-qemu: the fake QEMU (tests/fake-qemu.h) as a program, for the tests that run ppnd
 * against it and for the scale benchmark. One VM on a given socket, or N VMs on
 * DIR/PREFIXNNNN.sock in one process.
 *
 *   fake-qemu (--socket PATH | --dir DIR --count N [--prefix vm]) [--max SIZE] [--init SIZE]
 *             [--no-balloon] [--monitor good|silent|half|stall|flood] [--answer N]
 *             [--balloon moving|instant|held] [--stats workload|available|flip|hostile]
 *             [--available SIZE] [--hostile-period S] [--flip-odd] [--outside-balloon S:SIZE] [--log FILE]
 *             [--use-pct P] [--wave-pct P] [--period S] [--burst-every K] [--burst-pct P]
 *             [--burst-len S] [--burst-cycle S] [--touch S:SIZE] [--burst-touch SIZE]
 *             [--free-page-reporting] [--meminfo PATH:TOTAL] [--pid-per-vm] [--free SIZE]
 *             [--cpu-burn MS:PERIOD]
 *
 * Defaults: 4G, a good monitor, a moving balloon and the workload (use 30 % ± 10 % over 60 s,
 * every 10th VM bursting by 30 % for 20 s of every 120 s, phase-shifted per VM). Prints
 * "ready N" once every socket listens; on SIGTERM/SIGINT removes its sockets and prints one
 * JSON line: "served" (commands answered and events sent, by name) and "latency_ms" (for every
 * burst, the time from its start to the first balloon command that raised that VM's target:
 * the control loop's decision latency as the guest would feel it; statistics are computed at
 * query time, so it includes the stats interval but not QEMU's polling).
 *
 * --touch S:SIZE: S seconds after "ready" this process allocates and writes SIZE bytes, so its
 * own resident set (what ppnd reads as QEMU's in /proc/PID/statm) rises as a real QEMU's does
 * when its guest touches new memory; "touch SIZE" goes to the --log file. One VM per process
 * (--socket) for that to mean anything.
 *
 * --burst-touch SIZE: when a workload burst has started (checked every 100 ms) this process
 * has the kernel allocate SIZE bytes, then unmaps them: the host allocates memory as it does
 * when a real guest's burst touches new memory (what ppnd's fast signal gates its reads on:
 * /proc/vmstat pgalloc_*). The fake's guests have no real memory; without it a node of
 * bursting fakes looks quiet to the host, as no real node with bursting guests does.
 *
 * --free-page-reporting: the balloon's free-page-reporting property reads true (ppnd then
 * applies its free page reporting rules to the VM under [policy] free-page-reporting = auto).
 *
 * --free SIZE (--stats available): of the available memory the guest reports, only SIZE is free;
 * the rest is page cache (stat-disk-caches), which the free page reporting rules treat apart.
 *
 * --cpu-burn MS:PERIOD: a thread of this process spins for MS ms of its own CPU time every PERIOD
 * ms, so the process's CPU time (what ppnd reads as QEMU's in /proc/PID/stat) rises in short
 * passes between idle spans, as a real QEMU's does while its guest re-reads a cached file every
 * few seconds. One VM per process (--socket) for that to mean anything.
 *
 * --meminfo PATH:TOTAL: the host a node of TOTAL bytes would be, as /proc/meminfo reads, in PATH
 * (for ppnd's [host] meminfo), rewritten every 100 ms (a new file renamed over it, so a reader
 * never sees half of one): MemAvailable = MemFree = TOTAL less 1 GiB for the host itself and
 * less every fake guest's balloon size (fake_qemu_backed()). The fake's guests have no real
 * memory: without it ppnd sees this machine's MemAvailable, a few GiB however large the node
 * declared in the ledger, and its host gate (no more growth a tick than MemAvailable above the
 * low mark) throttles a node no real host of that size would.
 *
 * --pid-per-vm: each VM's socket is made to listen by a process of its own, which then stays
 * (a "holder", killed when this process exits), so the pid ppnd finds through the socket
 * (SO_PEERCRED gives the process that called listen()) and whose /proc/PID/statm it reads is
 * that VM's alone, as each VM has its own QEMU; this process still answers every VM. With
 * --burst-touch, a bursting VM's holder has the kernel allocate SIZE when the VM's burst begins
 * and keeps it until the burst ends: that VM's QEMU resident set rises and falls with its burst,
 * as a real one's does, not every VM's with any burst.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fake-qemu.h"
#include "util.h"

struct opts {
        const char *socket, *dir, *prefix;
        unsigned count, burst_every;
        double touch_at;        /* > 0: --touch */
        uint64_t touch_size;
        uint64_t burst_touch;   /* --burst-touch: bytes written at each burst's start (0: none) */
        bool pid_per_vm;        /* --pid-per-vm */
        unsigned burn_ms, burn_period_ms;       /* --cpu-burn (0: none) */
        const char *meminfo;    /* --meminfo PATH (NULL: none) ... */
        uint64_t meminfo_total; /* ... and TOTAL */
        struct fake_qemu_guest g;
};

static const char *const monitors[] = { "good", "silent", "half", "stall", "flood" };
static const char *const balloons[] = { "moving", "instant", "held" };
static const char *const stats[] = { "workload", "available", "flip", "hostile" };

/* The index of name in names, or -1. */
static int pick(const char *const *names, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], name) == 0)
                        return (int) i;
        return -1;
}

/* "S:SIZE" (--outside-balloon, --touch): a time in seconds after start (> 0) and a size. */
static int parse_at(const char *s, double *ret_at, uint64_t *ret_size) {
        const char *colon = strchr(s, ':');
        char *end;
        if (!colon)
                return -EINVAL;
        *ret_at = strtod(s, &end);
        if (end != colon || *ret_at <= 0)
                return -EINVAL;
        return parse_size(colon + 1, ret_size);
}

/* "PATH:TOTAL" (--meminfo): the last colon ends the path; TOTAL above the host's own 1 GiB. */
static int parse_meminfo(char *s, struct opts *o) {
        char *colon = strrchr(s, ':');
        if (!colon || colon == s || parse_size(colon + 1, &o->meminfo_total) < 0 || o->meminfo_total <= GIB)
                return -EINVAL;
        *colon = '\0';
        o->meminfo = s;
        return 0;
}

/* "MS:PERIOD" (--cpu-burn): 0 < MS < PERIOD ≤ 1 h, in ms. */
static int parse_burn(const char *s, struct opts *o) {
        char *end;
        unsigned long ms = strtoul(s, &end, 10), period;
        if (end == s || *end != ':')
                return -EINVAL;
        s = end + 1;
        period = strtoul(s, &end, 10);
        if (end == s || *end || ms == 0 || ms >= period || period > 3600000)
                return -EINVAL;
        o->burn_ms = (unsigned) ms;
        o->burn_period_ms = (unsigned) period;
        return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o) {
        static const struct option lo[] = {
                { "socket", required_argument, NULL, 's' }, { "dir", required_argument, NULL, 'd' },
                { "count", required_argument, NULL, 'n' }, { "prefix", required_argument, NULL, 'p' },
                { "max", required_argument, NULL, 'm' }, { "init", required_argument, NULL, 'i' },
                { "no-balloon", no_argument, NULL, 'N' }, { "monitor", required_argument, NULL, 'M' },
                { "answer", required_argument, NULL, 'a' }, { "balloon", required_argument, NULL, 'G' },
                { "stats", required_argument, NULL, 'S' }, { "available", required_argument, NULL, 'A' },
                { "hostile-period", required_argument, NULL, 'H' }, { "flip-odd", no_argument, NULL, 'F' },
                { "outside-balloon", required_argument, NULL, 'O' }, { "log", required_argument, NULL, 'l' },
                { "use-pct", required_argument, NULL, 'u' }, { "wave-pct", required_argument, NULL, 'w' },
                { "period", required_argument, NULL, 'T' }, { "burst-every", required_argument, NULL, 'b' },
                { "burst-pct", required_argument, NULL, 'B' }, { "burst-len", required_argument, NULL, 'L' },
                { "burst-cycle", required_argument, NULL, 'C' }, { "touch", required_argument, NULL, 't' },
                { "burst-touch", required_argument, NULL, 'W' },
                { "free-page-reporting", no_argument, NULL, 'R' }, { "meminfo", required_argument, NULL, 'I' },
                { "pid-per-vm", no_argument, NULL, 'P' }, { "free", required_argument, NULL, 'f' },
                { "cpu-burn", required_argument, NULL, 'c' }, {}
        };
        struct fake_qemu_guest *g = &o->g;
        int ch, k;
        while ((ch = getopt_long(argc, argv, "", lo, NULL)) >= 0) {
                switch (ch) {
                case 's': o->socket = optarg; break;
                case 'd': o->dir = optarg; break;
                case 'n': o->count = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'p': o->prefix = optarg; break;
                case 'm': if (parse_size(optarg, &g->max) < 0) return -EINVAL; break;
                case 'i': if (parse_size(optarg, &g->init) < 0) return -EINVAL; break;
                case 'N': g->no_balloon = true; break;
                case 'M': if ((k = pick(monitors, ELEMENTSOF(monitors), optarg)) < 0) return -EINVAL;
                          g->monitor = (enum fake_qemu_monitor) k; break;
                case 'a': g->answer = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'G': if ((k = pick(balloons, ELEMENTSOF(balloons), optarg)) < 0) return -EINVAL;
                          g->balloon = (enum fake_qemu_balloon) k; break;
                case 'S': if ((k = pick(stats, ELEMENTSOF(stats), optarg)) < 0) return -EINVAL;
                          g->stats = (enum fake_qemu_stats) k; break;
                case 'A': if (parse_size(optarg, &g->available) < 0) return -EINVAL; break;
                case 'H': g->hostile_period = strtod(optarg, NULL); break;
                case 'F': g->flip_odd = true; break;
                case 'O': if (parse_at(optarg, &g->outside_at, &g->outside_size) < 0) return -EINVAL; break;
                case 'l': g->log = optarg; break;
                case 'u': g->workload.use_pct = strtod(optarg, NULL); break;
                case 'w': g->workload.wave_pct = strtod(optarg, NULL); break;
                case 'T': g->workload.period = strtod(optarg, NULL); break;
                case 'b': o->burst_every = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'B': g->workload.burst_pct = strtod(optarg, NULL); break;
                case 'L': g->workload.burst_len = strtod(optarg, NULL); break;
                case 'C': g->workload.burst_cycle = strtod(optarg, NULL); break;
                case 't': if (parse_at(optarg, &o->touch_at, &o->touch_size) < 0) return -EINVAL; break;
                case 'W': if (parse_size(optarg, &o->burst_touch) < 0) return -EINVAL; break;
                case 'R': g->free_page_reporting = true; break;
                case 'I': if (parse_meminfo(optarg, o) < 0) return -EINVAL; break;
                case 'P': o->pid_per_vm = true; break;
                case 'f': if (parse_size(optarg, &g->free) < 0 || g->free == 0) return -EINVAL; break;
                case 'c': if (parse_burn(optarg, o) < 0) return -EINVAL; break;
                default: return -EINVAL;
                }
        }
        const struct fake_qemu_workload *w = &g->workload;
        if (optind < argc || !!o->socket == !!o->dir || (o->socket && o->count != 1))
                return -EINVAL;
        return o->count > 0 && o->count <= 100000 && w->period > 0 && g->max > 0 && w->burst_cycle > 0 &&
               w->burst_len >= 0 && w->burst_len < w->burst_cycle ? 0 : -EINVAL;
}

/* One fd per VM socket plus one per connection: raise the soft limit to fit. */
static void raise_nofile(unsigned count) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rlim_t want = (rlim_t) count * 2 + 64;
        if (rl.rlim_cur < want) {
                rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static double mono_s(void);

/* --pid-per-vm: the holder of one VM's socket (a child; never returns). It binds path, listens,
 * hands the socket to the parent over chan (SCM_RIGHTS) and stays, holding touch bytes during
 * the guest's bursts. */
static _Noreturn void holder_run(const char *path, const struct fake_qemu_guest *g, uint64_t touch, int chan,
                                 pid_t parent) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(1);
        if (dup2(chan, 3) < 0)
                _exit(1);
        close_range(4, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int fd = fake_qemu_listen(path);
        if (fd < 0)
                _exit(1);
        char byte = 'L', cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
        struct iovec iov = { &byte, 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        if (sendmsg(3, &msg, 0) != 1)
                _exit(1);
        close(fd);
        close(3);
        void *held = NULL;
        for (;;) {
                bool in;
                double next = touch ? fake_qemu_burst_next(g, mono_s(), &in) : -1;
                if (next < 0)
                        pause();
                else {
                        if (in && !held) {
                                held = mmap(NULL, touch, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
                                if (held == MAP_FAILED)
                                        held = NULL;
                        } else if (!in && held) {
                                munmap(held, touch);
                                held = NULL;
                        }
                        struct timespec ts = { .tv_sec = (time_t) next,
                                               .tv_nsec = (long) ((next - floor(next)) * 1e9) };
                        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                }
        }
}

/* Starts path's holder and takes its listening socket; the fd, or -errno. */
static int holder_spawn(const char *path, const struct fake_qemu_guest *g, uint64_t touch) {
        int sp[2];
        pid_t parent = getpid();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(sp[0]);
                close(sp[1]);
                return r;
        }
        if (pid == 0)
                holder_run(path, g, touch, sp[1], parent);
        close(sp[1]);
        char byte, cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = { &byte, 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        ssize_t n = recvmsg(sp[0], &msg, MSG_CMSG_CLOEXEC);
        close(sp[0]);
        struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
        if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) {
                kill(pid, SIGKILL);
                return -EIO;
        }
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        return fd;
}

static int add_vms(struct fake_qemu *f, const struct opts *o) {
        char path[4096];
        for (unsigned i = 0; i < o->count; i++) {
                struct fake_qemu_guest g = o->g;
                g.phase = 2 * M_PI * i / o->count;
                g.bursts = o->burst_every && i % o->burst_every == 0;
                if (o->socket)
                        snprintf(path, sizeof path, "%s", o->socket);
                else
                        snprintf(path, sizeof path, "%s/%s%04u.sock", o->dir, o->prefix, i);
                int r;
                if (o->pid_per_vm) {
                        r = holder_spawn(path, &g, o->burst_touch);
                        if (r >= 0)
                                r = fake_qemu_add_listening(f, path, &g, r, NULL);
                } else
                        r = fake_qemu_add(f, path, &g, NULL);
                if (r < 0) {
                        fprintf(stderr, "fake-qemu: cannot listen on %s: %s\n", path, strerror(-r));
                        return r;
                }
        }
        return 0;
}

static double mono_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* --touch: SIZE bytes allocated and written, kept until exit; NULL if out of memory. */
static char *touch(const struct opts *o) {
        char *p = malloc(o->touch_size);
        if (!p)
                return NULL;
        memset(p, 0x5a, o->touch_size);
        if (o->g.log) {
                FILE *l = fopen(o->g.log, "ae");
                if (l) {
                        fprintf(l, "touch %" PRIu64 "\n", o->touch_size);
                        fclose(l);
                }
        }
        return p;
}

/* --burst-touch: SIZE bytes if a burst began since *since, allocated by the kernel at once
 * (MAP_POPULATE writes every page in: a page fault each would cost the fake more CPU than all
 * its answers) and unmapped, so the next burst allocates again. One allocation per check, not
 * per burst: the host's allocation in the period is what ppnd's gate looks at. */
static void burst_touch(struct fake_qemu *f, const struct opts *o, double *since) {
        double now = mono_s();
        unsigned n = fake_qemu_burst_onsets(f, *since, now);
        *since = now;
        if (n == 0)
                return;
        void *p = mmap(NULL, o->burst_touch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p != MAP_FAILED)
                munmap(p, o->burst_touch);
}

/* --meminfo: the node's meminfo as of now (see the top). */
static int write_meminfo(struct fake_qemu *f, const struct opts *o) {
        char tmp[4096];
        uint64_t backed = fake_qemu_backed(f) + GIB;
        uint64_t avail = o->meminfo_total > backed ? o->meminfo_total - backed : 0;
        if (snprintf(tmp, sizeof tmp, "%s.new", o->meminfo) >= (int) sizeof tmp)
                return -ENAMETOOLONG;
        FILE *m = fopen(tmp, "we");
        if (!m)
                return -errno;
        fprintf(m, "MemTotal: %" PRIu64 " kB\nMemFree: %" PRIu64 " kB\nMemAvailable: %" PRIu64 " kB\n",
                o->meminfo_total / 1024, avail / 1024, avail / 1024);
        if (fclose(m) != 0 || rename(tmp, o->meminfo) < 0)
                return -errno;
        return 0;
}

static double thread_cpu_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double) ts.tv_sec * 1000.0 + (double) ts.tv_nsec / 1e6;
}

/* --cpu-burn: MS ms of this thread's CPU time, then the rest of the period asleep, forever. */
static void *burn_run(void *arg) {
        const struct opts *o = arg;
        for (;;) {
                double t0 = thread_cpu_ms();
                while (thread_cpu_ms() - t0 < o->burn_ms)
                        ;
                usleep((useconds_t) (o->burn_period_ms - o->burn_ms) * 1000);
        }
        return NULL;
}

/* Serves until SIGTERM or SIGINT. */
static int serve(struct fake_qemu *f, const struct opts *o) {
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        /* Started with the signals blocked: they go to the signalfd, never to the burner. */
        pthread_t burner;
        if (o->burn_ms && pthread_create(&burner, NULL, burn_run, (void *) o) == 0)
                pthread_detach(burner);
        int sfd = signalfd(-1, &ss, SFD_CLOEXEC), ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event sev = { .events = EPOLLIN, .data.fd = sfd };
        struct epoll_event fev = { .events = EPOLLIN, .data.fd = fake_qemu_fd(f) };
        if (sfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sev) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fake_qemu_fd(f), &fev) < 0)
                return -errno;
        double touch_at = o->touch_at > 0 ? mono_s() + o->touch_at : 0, bursts_since = mono_s();
        double meminfo_at = mono_s();
        char *touched = NULL;
        for (;;) {
                struct epoll_event ev;
                int wait_ms = touch_at > 0 ? (int) ((touch_at - mono_s()) * 1000) + 1 : -1;
                if (o->burst_touch && !o->pid_per_vm) {
                        if (mono_s() - bursts_since >= 0.1)
                                burst_touch(f, o, &bursts_since);
                        wait_ms = wait_ms < 0 || wait_ms > 100 ? 100 : wait_ms;
                }
                if (o->meminfo) {
                        if (mono_s() - meminfo_at >= 0.1) {
                                int r = write_meminfo(f, o);
                                if (r < 0)
                                        return r;
                                meminfo_at = mono_s();
                        }
                        wait_ms = wait_ms < 0 || wait_ms > 100 ? 100 : wait_ms;
                }
                if (touch_at > 0 && wait_ms <= 1) {
                        touched = touch(o);
                        touch_at = 0;
                        continue;
                }
                int n = epoll_wait(ep, &ev, 1, wait_ms);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (n == 1 && ev.data.fd == sfd)
                        break;
                if (fake_qemu_dispatch(f, 0) < 0)
                        return -EIO;
        }
        free(touched);
        close(sfd);
        close(ep);
        return 0;
}

static void print_summary(struct fake_qemu *f) {
        size_t n;
        const double *lat = fake_qemu_latencies(f, &n);
        json_object *res = json_object_new_object(), *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
                json_object_array_add(a, json_object_new_double(round(lat[i] * 10) / 10));
        json_object_object_add(res, "served", json_object_get(fake_qemu_served(f)));
        json_object_object_add(res, "latency_ms", a);
        printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
        fflush(stdout);
        json_object_put(res);
}

int main(int argc, char **argv) {
        struct opts o = {
                .prefix = "vm", .count = 1, .burst_every = 10,
                .g = { .max = 4 * GIB, .answer = 3, .available = 1024 * MIB, .hostile_period = 2.0,
                       .workload = { .use_pct = 30, .wave_pct = 10, .period = 60, .burst_pct = 30,
                                     .burst_len = 20, .burst_cycle = 120 } },
        };
        struct fake_qemu *f = NULL;
        if (parse_opts(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: fake-qemu (--socket PATH | --dir DIR --count N [--prefix P]) [--max SIZE] "
                                "[--init SIZE] [--no-balloon]\n"
                                "       [--monitor good|silent|half|stall|flood] [--answer N] "
                                "[--balloon moving|instant|held]\n"
                                "       [--stats workload|available|flip|hostile] [--available SIZE] "
                                "[--hostile-period S] [--flip-odd]\n"
                                "       [--outside-balloon S:SIZE] [--log FILE] [--use-pct P] [--wave-pct P] "
                                "[--period S]\n"
                                "       [--burst-every K] [--burst-pct P] [--burst-len S] [--burst-cycle S] "
                                "[--touch S:SIZE] [--burst-touch SIZE]\n"
                                "       [--free-page-reporting] [--meminfo PATH:TOTAL] [--pid-per-vm] "
                                "[--free SIZE] [--cpu-burn MS:PERIOD]\n");
                return 2;
        }
        raise_nofile(o.count);
        int r = fake_qemu_new(&f);
        if (r < 0) {
                fprintf(stderr, "fake-qemu: cannot start: %s\n", strerror(-r));
                return 1;
        }
        if (add_vms(f, &o) < 0) {
                fake_qemu_free(f);
                return 1;
        }
        if (o.meminfo && (r = write_meminfo(f, &o)) < 0) {
                fprintf(stderr, "fake-qemu: cannot write %s: %s\n", o.meminfo, strerror(-r));
                fake_qemu_free(f);
                return 1;
        }
        printf("ready %u\n", o.count);
        fflush(stdout);
        r = serve(f, &o);
        if (r < 0)
                fprintf(stderr, "fake-qemu: %s\n", strerror(-r));
        print_summary(f);
        fake_qemu_free(f);      /* the sockets go before the exit a caller may wait for */
        return r < 0 ? 1 : 0;
}
