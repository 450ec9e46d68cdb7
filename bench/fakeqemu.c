/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppn-fakeqemu: N fake QEMU monitors in one process, for the scale benchmark only.
 *
 * It stands in for QEMU because 2,000 guests cannot boot on a 2-core test machine; it is not
 * a QEMU model beyond what ppnd sees through QMP. It serves, on one Unix socket per VM
 * (DIR/PREFIXNNNN.sock), the subset of QMP the daemon uses (QEMU 7.2, docs/design.md):
 *   greeting {"QMP": {"version": ..., "capabilities": ["oob"]}}, qmp_capabilities (required
 *   first), query-status, query-balloon, balloon {value} (0 is refused as QEMU does; above
 *   RAM is capped), qom-list /machine/peripheral (one child "balloon0" of type
 *   child<virtio-balloon-pci>), qom-set/qom-get guest-stats-polling-interval, qom-get
 *   guest-stats (every stat 2^64-1 and last-update 0 until polling is enabled).
 * Anything else gets CommandNotFound. "id" is echoed.
 *
 * The balloon's actual moves toward the target over time: 0.5 GiB/s inflating, 2 GiB/s
 * deflating (measured under TCG). Guest statistics are scripted: the guest uses
 *   use(t) = max · use% · (1 + wave% · sin(2π t / period + phase_i)),
 * and every --burst-every'th VM adds burst% of max for --burst-len s out of every
 * --burst-cycle s (default 20 of 120), phase-shifted per VM. The balloon starts at --init
 * (default: max).
 * available = actual − use, free = 70 % of available, total = actual; swap-in and major
 * faults grow while use does not fit. last-update advances on the polling interval.
 * Like QEMU, it sends BALLOON_CHANGE {"actual"} to the negotiated connection when the actual
 * moves (looked at every 50 ms, i.e. the guest reports its progress in steps), at most once a
 * second: the first change at once, later ones as the latest value when the second is over.
 *
 *   ppn-fakeqemu --dir DIR --count N [--prefix vm] [--max SIZE] [--use-pct P]
 *                [--wave-pct P] [--period S] [--burst-every K] [--burst-pct P]
 * Prints "ready N" on stdout once every socket listens; on SIGTERM/SIGINT removes its
 * sockets and prints one JSON line: the commands served by name, and "latency_ms": for every
 * burst, the time from its start until the first balloon command that raised that VM's
 * target (the control loop's decision latency as the guest would feel it; the fake's stats
 * are computed at query time, so this includes the stats interval but not QEMU's polling).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "util.h"

#define INFLATE_BPS (512.0 * MIB)
#define DEFLATE_BPS (2048.0 * MIB)
#define MAX_LATENCIES 100000
#define STAT_UNKNOWN UINT64_MAX

struct opts {
        const char *dir, *prefix;
        unsigned count;
        uint64_t max;
        double use_pct, wave_pct, period, burst_pct, burst_len, burst_cycle;
        unsigned burst_every;
        uint64_t init;              /* 0 = max */
};

struct vm {
        unsigned idx;
        int listen_fd;
        char path[108];
        uint64_t max;
        double actual_at, t_at;     /* actual (bytes) at time t_at (s) */
        uint64_t target;
        unsigned poll_interval;     /* guest-stats-polling-interval, s; 0 = off */
        double phase;
        double swap_in, major;      /* cumulative */
        double counted_at;          /* time the counters were last advanced */
        double answered_burst;      /* start of the last burst a growth answered */
        double armed_at;            /* stats enabled by the client (0 = not yet) */
        struct conn *conn;          /* the negotiated connection events go to, or NULL */
        uint64_t reported;          /* the actual as the guest last reported it */
        double ev_next;             /* BALLOON_CHANGE throttle: no event before this time */
        bool ev_pending;            /* a change waits for the throttle */
        bool moving;                /* actual != target, or an event pending */
};

/* Epoll tags: listening sockets and connections share the data pointer, told apart here. */
enum { TAG_LISTEN = 1, TAG_CONN = 2, TAG_SIGNAL = 3 };
struct tagged { int tag; void *p; };

struct conn {
        struct tagged tag;           /* epoll data: { TAG_CONN, this } */
        struct conn *next, **pprev;  /* all open connections, freed at exit */
        int fd;
        struct vm *vm;
        bool negotiated;
        json_tokener *tok;
        char *out;
        size_t out_len, out_cap;
};


static struct opts O = { .prefix = "vm", .count = 1, .max = 4 * GIB, .use_pct = 30,
                         .wave_pct = 10, .period = 60, .burst_every = 10, .burst_pct = 30,
                         .burst_len = 20, .burst_cycle = 120 };
static json_object *served;  /* command name -> count */
static struct conn *conns;
static double latencies[MAX_LATENCIES];
static size_t n_latencies;
/* Only bursts that start this long after the client enabled guest statistics are timed: a
 * burst already running at adoption measures adoption, not the control loop. */
#define ARM_DELAY_S 2.0

static double mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the fake guest ---- */

static double vm_actual(const struct vm *v, double now) {
        double dt = now - v->t_at, t = (double) v->target;
        if (t < v->actual_at)
                return fmax(t, v->actual_at - INFLATE_BPS * dt);
        return fmin(t, v->actual_at + DEFLATE_BPS * dt);
}

static void vm_set_target(struct vm *v, uint64_t target, double now) {
        v->actual_at = vm_actual(v, now);
        v->t_at = now;
        v->target = target;
}

/* Start of the burst in progress (s), or -1. */
static double vm_burst_start(const struct vm *v, double now) {
        if (!O.burst_every || v->idx % O.burst_every != 0)
                return -1;
        double offset = v->phase / (2 * M_PI) * O.burst_cycle;
        double in = fmod(now + offset, O.burst_cycle);
        return in < O.burst_len ? now - in : -1;
}

static double vm_use(const struct vm *v, double now) {
        double use = (double) v->max * O.use_pct / 100.0 *
                     (1 + O.wave_pct / 100.0 * sin(2 * M_PI * now / O.period + v->phase));
        if (vm_burst_start(v, now) >= 0)
                use += (double) v->max * O.burst_pct / 100.0;
        return use;
}

/* A growth during a burst not answered yet: record how long the burst waited. */
static void vm_note_growth(struct vm *v, double now) {
        double b = vm_burst_start(v, now);
        if (v->armed_at == 0 || b < v->armed_at + ARM_DELAY_S || b == v->answered_burst ||
            n_latencies >= MAX_LATENCIES)
                return;
        v->answered_burst = b;
        latencies[n_latencies++] = (now - b) * 1000.0;
}

/* Swap-in and major faults accumulate while the use does not fit (10 % of the excess/s). */
static void vm_count(struct vm *v, double now) {
        double excess = vm_use(v, now) + 64.0 * MIB - vm_actual(v, now);
        if (excess > 0) {
                double in = excess * 0.10 * (now - v->counted_at);
                v->swap_in += in;
                v->major += in / 4096.0;
        }
        v->counted_at = now;
}

static json_object *u64(uint64_t v) { return json_object_new_uint64(v); }

static json_object *vm_stats(struct vm *v, double now) {
        json_object *stats = json_object_new_object(), *r = json_object_new_object();
        vm_count(v, now);
        bool on = v->poll_interval > 0;
        double actual = vm_actual(v, now), avail = fmax(0, actual - vm_use(v, now));
        struct { const char *k; uint64_t v; } s[] = {
                { "stat-swap-in", (uint64_t) v->swap_in }, { "stat-swap-out", 0 },
                { "stat-major-faults", (uint64_t) v->major }, { "stat-minor-faults", 1000 },
                { "stat-free-memory", (uint64_t) (avail * 0.7) },
                { "stat-available-memory", (uint64_t) avail },
                { "stat-total-memory", (uint64_t) actual },
                { "stat-disk-caches", (uint64_t) (avail * 0.3) },
                { "stat-htlb-pgalloc", 0 }, { "stat-htlb-pgfail", 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(s); i++)
                json_object_object_add(stats, s[i].k, u64(on ? s[i].v : STAT_UNKNOWN));
        time_t wall = time(NULL);
        uint64_t last = on ? (uint64_t) (wall - wall % v->poll_interval) : 0;
        json_object_object_add(r, "stats", stats);
        json_object_object_add(r, "last-update", u64(last));
        return r;
}

/* ---- replies ---- */

static json_object *error_reply(const char *class, const char *desc) {
        json_object *e = json_object_new_object(), *r = json_object_new_object();
        json_object_object_add(e, "class", json_object_new_string(class));
        json_object_object_add(e, "desc", json_object_new_string(desc));
        json_object_object_add(r, "error", e);
        return r;
}

static json_object *return_reply(json_object *v) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "return", v ? v : json_object_new_object());
        return r;
}

static const char *arg_str(json_object *args, const char *k) {
        json_object *v;
        return args && json_object_object_get_ex(args, k, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v) : NULL;
}

static json_object *cmd_balloon(struct conn *c, json_object *args) {
        json_object *v;
        if (!args || !json_object_object_get_ex(args, "value", &v) || !json_object_is_type(v, json_type_int))
                return error_reply("GenericError", "Parameter 'value' is missing");
        int64_t want = json_object_get_int64(v);
        if (want <= 0)
                return error_reply("GenericError", "Parameter 'target' expects a size");
        double now = mono();
        uint64_t t = (uint64_t) want > c->vm->max ? c->vm->max : (uint64_t) want;
        if (t > c->vm->target)
                vm_note_growth(c->vm, now);
        vm_set_target(c->vm, t, now);
        c->vm->moving = true;
        return return_reply(NULL);
}

static json_object *cmd_query_balloon(struct conn *c, json_object *args) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "actual", u64((uint64_t) vm_actual(c->vm, mono())));
        return return_reply(r);
}

static json_object *cmd_query_status(struct conn *c, json_object *args) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "status", json_object_new_string("running"));
        json_object_object_add(r, "singlestep", json_object_new_boolean(0));
        json_object_object_add(r, "running", json_object_new_boolean(1));
        return return_reply(r);
}

static json_object *cmd_qom_list(struct conn *c, json_object *args) {
        const char *path = arg_str(args, "path");
        if (!path || strcmp(path, "/machine/peripheral") != 0)
                return error_reply("GenericError", "Device not found");
        json_object *a = json_object_new_array(), *e = json_object_new_object();
        json_object_object_add(e, "name", json_object_new_string("balloon0"));
        json_object_object_add(e, "type", json_object_new_string("child<virtio-balloon-pci>"));
        json_object_array_add(a, e);
        return return_reply(a);
}

static bool is_balloon_path(const char *p) {
        return p && strcmp(p, "/machine/peripheral/balloon0") == 0;
}

static json_object *cmd_qom_set(struct conn *c, json_object *args) {
        const char *prop = arg_str(args, "property");
        json_object *v;
        if (!is_balloon_path(arg_str(args, "path")))
                return error_reply("DeviceNotFound", "Device not found");
        if (!prop || strcmp(prop, "guest-stats-polling-interval") != 0 ||
            !json_object_object_get_ex(args, "value", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0 || json_object_get_int64(v) > UINT32_MAX)
                return error_reply("GenericError", "Property not supported by this fake");
        c->vm->poll_interval = (unsigned) json_object_get_int64(v);
        if (c->vm->poll_interval > 0 && c->vm->armed_at == 0)
                c->vm->armed_at = mono();
        return return_reply(NULL);
}

static json_object *cmd_qom_get(struct conn *c, json_object *args) {
        const char *prop = arg_str(args, "property");
        if (!is_balloon_path(arg_str(args, "path")))
                return error_reply("DeviceNotFound", "Device not found");
        if (prop && strcmp(prop, "guest-stats") == 0)
                return return_reply(vm_stats(c->vm, mono()));
        if (prop && strcmp(prop, "guest-stats-polling-interval") == 0)
                return return_reply(u64(c->vm->poll_interval));
        return error_reply("GenericError", "Property not supported by this fake");
}

static json_object *cmd_capabilities(struct conn *c, json_object *args) {
        c->negotiated = true;
        c->vm->conn = c;
        return return_reply(NULL);
}

static const struct command {
        const char *name;
        json_object *(*fn)(struct conn *c, json_object *args);
} commands[] = {
        { "qmp_capabilities", cmd_capabilities },
        { "query-status", cmd_query_status },
        { "query-balloon", cmd_query_balloon },
        { "balloon", cmd_balloon },
        { "qom-list", cmd_qom_list },
        { "qom-set", cmd_qom_set },
        { "qom-get", cmd_qom_get },
};

static json_object *dispatch(struct conn *c, json_object *msg) {
        const char *name = arg_str(msg, "execute");
        json_object *args = NULL;
        if (!name)
                return error_reply("GenericError", "QMP input must be an object with 'execute'");
        json_object_object_get_ex(msg, "arguments", &args);
        if (!c->negotiated && strcmp(name, "qmp_capabilities") != 0)
                return error_reply("CommandNotFound",
                                   "Expecting capabilities negotiation with 'qmp_capabilities'");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0) {
                        json_object *n;
                        int64_t k = json_object_object_get_ex(served, name, &n) ? json_object_get_int64(n) : 0;
                        json_object_object_add(served, name, json_object_new_int64(k + 1));
                        return commands[i].fn(c, args);
                }
        char desc[160];
        snprintf(desc, sizeof desc, "The command %.100s has not been found", name);
        return error_reply("CommandNotFound", desc);
}

/* ---- I/O ---- */

static int conn_flush(struct conn *c) {
        while (c->out_len > 0) {
                ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                memmove(c->out, c->out + n, c->out_len - (size_t) n);
                c->out_len -= (size_t) n;
        }
        return 0;
}

static int conn_send_text(struct conn *c, const char *s) {
        size_t n = strlen(s);
        if (c->out_len + n + 2 > c->out_cap) {
                size_t cap = (c->out_len + n + 2) * 2;
                char *p = realloc(c->out, cap);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, s, n);
        memcpy(c->out + c->out_len + n, "\r\n", 2);
        c->out_len += n + 2;
        return conn_flush(c);
}

static int conn_send(struct conn *c, json_object *msg) {
        return conn_send_text(c, json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
}

static void conn_free(int ep, struct conn *c) {
        if (c->vm && c->vm->conn == c)
                c->vm->conn = NULL;
        if (c->pprev) {
                *c->pprev = c->next;
                if (c->next)
                        c->next->pprev = c->pprev;
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        json_tokener_free(c->tok);
        free(c->out);
        free(c);
}

static int handle_message(struct conn *c, json_object *msg) {
        json_object *reply = dispatch(c, msg), *id;
        if (json_object_object_get_ex(msg, "id", &id))
                json_object_object_add(reply, "id", json_object_get(id));
        int r = conn_send(c, reply);
        json_object_put(reply);
        return r;
}

/* Feeds bytes to the streaming parser; every complete object is one command. */
static int conn_read(struct conn *c) {
        char buf[8192];
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
                return -ECONNRESET;
        if (n < 0)
                return errno == EAGAIN ? 0 : -errno;
        size_t off = 0;
        while (off < (size_t) n) {
                json_object *msg = json_tokener_parse_ex(c->tok, buf + off, (int) ((size_t) n - off));
                enum json_tokener_error e = json_tokener_get_error(c->tok);
                if (e == json_tokener_continue)
                        return 0;
                size_t used = json_tokener_get_parse_end(c->tok);
                off += used ? used : (size_t) n - off;
                json_tokener_reset(c->tok);
                if (e != json_tokener_success || !msg)
                        return -EBADMSG;
                int r = handle_message(c, msg);
                json_object_put(msg);
                if (r < 0)
                        return r;
                while (off < (size_t) n && strchr(" \t\r\n", buf[off]))
                        off++;
        }
        return 0;
}

static const char greeting[] =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
        "\"package\": \"ppn-fakeqemu\"}, \"capabilities\": [\"oob\"]}}\r\n";

static int accept_conn(int ep, struct vm *v) {
        int fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
                return errno == EAGAIN ? 0 : -errno;
        struct conn *c = calloc(1, sizeof *c);
        if (!c || !(c->tok = json_tokener_new())) {
                free(c);
                close(fd);
                return -ENOMEM;
        }
        c->fd = fd;
        c->vm = v;
        c->next = conns;
        c->pprev = &conns;
        if (conns)
                conns->pprev = &c->next;
        conns = c;
        c->tag = (struct tagged) { TAG_CONN, c };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->tag };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            send(fd, greeting, sizeof greeting - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                conn_free(ep, c);
                return 0;
        }
        return 0;
}

static int listen_vm(int ep, struct vm *v, struct tagged *t) {
        snprintf(v->path, sizeof v->path, "%s/%s%04u.sock", O.dir, O.prefix, v->idx);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(v->path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, v->path);
        unlink(v->path);
        v->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (v->listen_fd < 0)
                return -errno;
        if (bind(v->listen_fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(v->listen_fd, 8) < 0)
                return -errno;
        *t = (struct tagged) { TAG_LISTEN, v };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = t };
        return epoll_ctl(ep, EPOLL_CTL_ADD, v->listen_fd, &ev) < 0 ? -errno : 0;
}

static int parse_opts(int argc, char **argv) {
        static const struct option lo[] = {
                { "dir", required_argument, NULL, 'd' }, { "count", required_argument, NULL, 'n' },
                { "prefix", required_argument, NULL, 'p' }, { "max", required_argument, NULL, 'm' },
                { "use-pct", required_argument, NULL, 'u' }, { "wave-pct", required_argument, NULL, 'w' },
                { "period", required_argument, NULL, 'T' }, { "burst-every", required_argument, NULL, 'b' },
                { "burst-pct", required_argument, NULL, 'B' }, { "burst-len", required_argument, NULL, 'L' },
                { "burst-cycle", required_argument, NULL, 'C' }, { "init", required_argument, NULL, 'i' }, {}
        };
        int ch;
        while ((ch = getopt_long(argc, argv, "", lo, NULL)) >= 0) {
                switch (ch) {
                case 'd': O.dir = optarg; break;
                case 'n': O.count = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'p': O.prefix = optarg; break;
                case 'm': if (parse_size(optarg, &O.max) < 0) return -EINVAL; break;
                case 'u': O.use_pct = strtod(optarg, NULL); break;
                case 'w': O.wave_pct = strtod(optarg, NULL); break;
                case 'T': O.period = strtod(optarg, NULL); break;
                case 'b': O.burst_every = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'B': O.burst_pct = strtod(optarg, NULL); break;
                case 'L': O.burst_len = strtod(optarg, NULL); break;
                case 'C': O.burst_cycle = strtod(optarg, NULL); break;
                case 'i': if (parse_size(optarg, &O.init) < 0) return -EINVAL; break;
                default: return -EINVAL;
                }
        }
        if (O.init == 0 || O.init > O.max)
                O.init = O.max;
        return O.dir && O.count > 0 && O.count <= 100000 && O.period > 0 && O.max > 0 &&
               O.burst_cycle > 0 && O.burst_len >= 0 && O.burst_len < O.burst_cycle ? 0 : -EINVAL;
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

static int setup_signals(int ep, struct tagged *t) {
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        int fd = signalfd(-1, &ss, SFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        *t = (struct tagged) { TAG_SIGNAL, NULL };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = t };
        return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void on_event(int ep, struct tagged *t, uint32_t events) {
        if (t->tag == TAG_LISTEN) {
                accept_conn(ep, t->p);
                return;
        }
        struct conn *c = t->p;
        int r = 0;
        if (events & EPOLLIN)
                r = conn_read(c);
        if (r >= 0 && (events & EPOLLOUT))
                r = conn_flush(c);
        if (r < 0 || (events & (EPOLLHUP | EPOLLERR))) {
                conn_free(ep, c);
                return;
        }
        struct epoll_event ev = { .events = EPOLLIN | (c->out_len ? EPOLLOUT : 0), .data.ptr = t };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* BALLOON_CHANGE as QEMU sends it, to the VM's negotiated connection. */
static void send_balloon_change(int ep, struct vm *v, double now) {
        struct timespec ts;
        char line[256];
        json_object *n;

        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(line, sizeof line, "{\"timestamp\": {\"seconds\": %lld, \"microseconds\": %ld}, "
                 "\"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": %llu}}", (long long) ts.tv_sec,
                 ts.tv_nsec / 1000, (unsigned long long) v->reported);
        v->ev_next = now + 1.0;
        v->ev_pending = false;
        int64_t k = json_object_object_get_ex(served, "event BALLOON_CHANGE", &n) ? json_object_get_int64(n) : 0;
        json_object_object_add(served, "event BALLOON_CHANGE", json_object_new_int64(k + 1));
        if (conn_send_text(v->conn, line) < 0)
                return;     /* the connection's next read notices */
        struct epoll_event ev = { .events = EPOLLIN | (v->conn->out_len ? EPOLLOUT : 0), .data.ptr = &v->conn->tag };
        epoll_ctl(ep, EPOLL_CTL_MOD, v->conn->fd, &ev);
}

/* The guest reports its balloon's progress; QEMU passes it on, throttled to 1/s. */
static void report_balloons(int ep, struct vm *vms, unsigned count) {
        double now = mono();
        for (unsigned i = 0; i < count; i++) {
                struct vm *v = &vms[i];
                if (!v->moving)
                        continue;
                uint64_t a = (uint64_t) vm_actual(v, now);
                if (a != v->reported) {
                        v->reported = a;
                        v->ev_pending = true;
                }
                if (v->ev_pending && now >= v->ev_next && v->conn)
                        send_balloon_change(ep, v, now);
                v->moving = v->ev_pending || a != v->target;
        }
}

#define REPORT_EVERY_S 0.05

static void serve(int ep, struct vm *vms, unsigned count) {
        struct epoll_event evs[64];
        double next_report = mono();
        for (;;) {
                double now = mono();
                if (now >= next_report) {
                        report_balloons(ep, vms, count);
                        next_report = now + REPORT_EVERY_S;
                }
                int n = epoll_wait(ep, evs, ELEMENTSOF(evs), (int) ((next_report - now) * 1000) + 1);
                if (n < 0 && errno != EINTR)
                        return;
                for (int i = 0; i < n; i++) {
                        struct tagged *t = evs[i].data.ptr;
                        if (t->tag == TAG_SIGNAL)
                                return;
                        on_event(ep, t, evs[i].events);
                }
        }
}

int main(int argc, char **argv) {
        if (parse_opts(argc, argv) < 0) {
                fprintf(stderr, "usage: ppn-fakeqemu --dir DIR --count N [--prefix P] [--max SIZE] "
                                "[--use-pct P] [--wave-pct P] [--period S] [--burst-every K] [--burst-pct P]\n"
                                "       [--burst-len S] [--burst-cycle S] [--init SIZE]\n");
                return 2;
        }
        raise_nofile(O.count);
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct vm *vms = calloc(O.count, sizeof *vms);
        struct tagged *tags = calloc(O.count + 1, sizeof *tags);
        served = json_object_new_object();
        if (ep < 0 || !vms || !tags || setup_signals(ep, &tags[O.count]) < 0)
                return 1;
        double now = mono();
        for (unsigned i = 0; i < O.count; i++) {
                vms[i] = (struct vm) { .idx = i, .max = O.max, .actual_at = (double) O.init,
                                       .t_at = now, .target = O.init, .counted_at = now,
                                       .answered_burst = -1, .reported = O.init,
                                       .phase = 2 * M_PI * i / O.count };
                int r = listen_vm(ep, &vms[i], &tags[i]);
                if (r < 0) {
                        fprintf(stderr, "ppn-fakeqemu: cannot listen on %s: %s\n", vms[i].path, strerror(-r));
                        return 1;
                }
        }
        printf("ready %u\n", O.count);
        fflush(stdout);
        serve(ep, vms, O.count);
        for (unsigned i = 0; i < O.count; i++)
                unlink(vms[i].path);
        json_object *res = json_object_new_object(), *lat = json_object_new_array();
        for (size_t i = 0; i < n_latencies; i++)
                json_object_array_add(lat, json_object_new_double(round(latencies[i] * 10) / 10));
        json_object_object_add(res, "served", served);
        json_object_object_add(res, "latency_ms", lat);
        printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
        fflush(stdout);
        json_object_put(res);
        while (conns)
                conn_free(ep, conns);
        for (unsigned i = 0; i < O.count; i++)
                close(vms[i].listen_fd);
        free(vms);
        free(tags);
        close(ep);
        return 0;
}
