/* SPDX-License-Identifier: Apache-2.0 */
#include "fake-qemu.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* static const struct { const char *name, *text; } transcripts[]: the .qmp files of tests/fixtures/qmp,
 * written by tests/embed-transcripts.py at build time. */
#include "fake-qemu-transcripts.h"

#define INFLATE_BPS (512.0 * MIB)
#define DEFLATE_BPS (2048.0 * MIB)
#define STAT_UNKNOWN UINT64_MAX
#define TICK_NSEC 50000000L             /* balloon progress and outside moves looked at */
#define ARM_DELAY_S 2.0                 /* bursts this soon after adoption measure adoption */
#define FLOOD_BATCH 64

/* The replies and the event, each taken from one recorded exchange: the first command of
 * `transcript` whose line contains `command`, and QEMU's answer to it. `quotes` names the
 * part of the command the error's desc quotes (replaced by what the request said). */
enum reply {
        R_CAPABILITIES,
        R_NOT_NEGOTIATED,
        R_COMMAND_NOT_FOUND,
        R_PARSE_ERROR,
        R_QUERY_STATUS,
        R_QUERY_BALLOON,
        R_BALLOON,
        R_BALLOON_ZERO,
        R_NO_BALLOON,
        R_STATS,
        R_POLL_SET,
        R_POLL_GET,
        R_DEVICE_NOT_FOUND,
        R_PROPERTY_NOT_FOUND,
        R_PERIPHERALS,
        R_PERIPHERALS_NO_BALLOON,
        R_MEMORY_DEVICES,
        R_FREE_PAGE_REPORTING,
        _R_MAX,
};

static const struct recorded {
        const char *transcript, *command, *quotes;
} recorded[_R_MAX] = {
        [R_CAPABILITIES] = { "session.qmp", "\"qmp_capabilities\"", NULL },
        [R_NOT_NEGOTIATED] = { "adoption.qmp", "\"query-status\"", NULL },
        [R_COMMAND_NOT_FOUND] = { "session.qmp", "\"no-such-command\"", "execute" },
        [R_PARSE_ERROR] = { "bad-input.qmp", "garbage", NULL },
        [R_QUERY_STATUS] = { "bad-input.qmp", "\"query-status\"", NULL },
        [R_QUERY_BALLOON] = { "session.qmp", "\"query-balloon\"", NULL },
        [R_BALLOON] = { "session.qmp", "\"balloon\",\"arguments\":{\"value\":536870912}", NULL },
        [R_BALLOON_ZERO] = { "session.qmp", "\"balloon\",\"arguments\":{\"value\":0}", NULL },
        [R_NO_BALLOON] = { "no-balloon.qmp", "\"query-balloon\"", NULL },
        [R_STATS] = { "guest.qmp", "\"property\":\"guest-stats\"}", NULL },
        [R_POLL_SET] = { "session.qmp", "\"qom-set\"", NULL },
        [R_POLL_GET] = { "session.qmp", "\"qom-get\",\"arguments\":{\"path\":\"/machine/peripheral/balloon0\","
                                        "\"property\":\"guest-stats-polling-interval\"", NULL },
        [R_DEVICE_NOT_FOUND] = { "session.qmp", "/machine/peripheral/nope", "path" },
        [R_PROPERTY_NOT_FOUND] = { "adoption.qmp", "\"property\":\"nope\"", "property" },
        [R_PERIPHERALS] = { "adoption.qmp", "\"path\":\"/machine/peripheral\"}", NULL },
        [R_PERIPHERALS_NO_BALLOON] = { "adoption-no-balloon.qmp", "\"path\":\"/machine/peripheral\"}", NULL },
        [R_MEMORY_DEVICES] = { "adoption.qmp", "\"query-memory-devices\"", NULL },
        [R_FREE_PAGE_REPORTING] = { "adoption.qmp", "\"property\":\"free-page-reporting\"", NULL },
};

#define BALLOON_PATH "/machine/peripheral/balloon0"
#define POLL_PROPERTY "guest-stats-polling-interval"

/* Epoll tags: listening sockets, connections and the timer share the data pointer. */
enum { TAG_LISTEN = 1, TAG_CONN, TAG_TIMER };
struct tagged {
        int tag;
        void *p;
};

struct conn {
        struct tagged tag;
        int fd;
        struct fake_qemu_vm *vm;
        bool negotiated;
        unsigned answered;
        unsigned batches;               /* flood batches written */
        json_tokener *tok;
        char *out;
        size_t out_len, out_cap;
};

struct fake_qemu_vm {
        struct tagged tag;              /* { TAG_LISTEN, this } */
        struct fake_qemu *f;
        struct fake_qemu_vm *next, **pprev;
        struct fake_qemu_guest g;
        char *log;
        char path[108];
        int listen_fd;
        struct conn *conn;              /* the one client, or NULL */
        double t0;                      /* start (monotonic s) */
        double actual_at, t_at;         /* the balloon's actual (bytes) at time t_at */
        uint64_t target;
        struct fake_qemu_vm_state st;
        struct fake_qemu_stat_values pinned;
        double swap_in, major, counted_at;      /* workload counters */
        double answered_burst, armed_at;        /* latency bookkeeping */
        uint64_t reported;              /* the actual as the guest last reported it */
        double ev_next;                 /* BALLOON_CHANGE throttle: no event before this */
        bool ev_pending, moving, outside_pending;
        uint64_t events;                /* flood events written */
};

struct fake_qemu {
        int ep, timer_fd;
        bool timer_armed;
        struct tagged timer_tag;
        struct fake_qemu_vm *vms;
        json_object *reply[_R_MAX];     /* recorded, without "id" */
        char *quoted[_R_MAX];           /* what the recorded desc quotes */
        json_object *balloon_change;    /* the recorded event */
        char *greeting;                 /* verbatim, with "\r\n" */
        json_object *served;
        double *latencies;
        size_t n_latencies, cap_latencies;
};

static double mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- the recorded transcripts ---- */

static const char *transcript_text(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(transcripts); i++)
                if (strcmp(transcripts[i].name, name) == 0)
                        return transcripts[i].text;
        return NULL;
}

/* The next line of *p (without its newline) into buf; false at the end. */
static bool next_line(const char **p, char *buf, size_t len) {
        if (!**p)
                return false;
        const char *nl = strchr(*p, '\n');
        size_t n = nl ? (size_t) (nl - *p) : strlen(*p);
        snprintf(buf, len, "%.*s", (int) n, *p);
        *p += n + (nl ? 1 : 0);
        return true;
}

/* The first message QEMU sent in `name` whose line contains `has` (after `after`, a command
 * line containing it, if given): its text, or NULL. */
static char *recorded_message(const char *name, const char *after, const char *has, char **ret_cmd) {
        const char *p = transcript_text(name);
        static char line[8192];
        bool seen = !after;
        if (!p)
                return NULL;
        while (next_line(&p, line, sizeof line)) {
                if (strncmp(line, "-> ", 3) == 0) {
                        if (seen && after)
                                return NULL;    /* the next command: no answer recorded */
                        if (after && strstr(line, after)) {
                                seen = true;
                                if (ret_cmd)
                                        *ret_cmd = strdup(line + 3);
                        }
                } else if (seen && strncmp(line, "<- ", 3) == 0 && strstr(line, has))
                        return strdup(line + 3);
        }
        return NULL;
}

/* The word of the recorded command that its error's desc quotes. */
static char *recorded_quote(const char *cmd_text, const char *what) {
        json_object *cmd = json_tokener_parse(cmd_text), *args = NULL;
        const char *s = NULL;
        char *r = NULL;
        if (!cmd)
                return NULL;
        if (strcmp(what, "execute") == 0)
                s = json_object_get_string(json_object_object_get(cmd, "execute"));
        else if (json_object_object_get_ex(cmd, "arguments", &args))
                s = json_object_get_string(json_object_object_get(args, what));
        if (s)
                r = strdup(s);
        json_object_put(cmd);
        return r;
}

static int load_recordings(struct fake_qemu *f) {
        for (int i = 0; i < _R_MAX; i++) {
                const struct recorded *rec = &recorded[i];
                char *cmd = NULL;
                /* The answer: a return or an error (events may come first). */
                char *text = recorded_message(rec->transcript, rec->command, "\"return\"", &cmd);
                if (!text) {
                        free(cmd);
                        cmd = NULL;
                        text = recorded_message(rec->transcript, rec->command, "\"error\"", &cmd);
                }
                f->reply[i] = text ? json_tokener_parse(text) : NULL;
                free(text);
                if (f->reply[i])
                        json_object_object_del(f->reply[i], "id");
                if (rec->quotes && cmd)
                        f->quoted[i] = recorded_quote(cmd, rec->quotes);
                free(cmd);
                if (!f->reply[i] || (rec->quotes && !f->quoted[i])) {
                        fprintf(stderr, "fake-qemu: no answer to %s recorded in %s\n", rec->command, rec->transcript);
                        return -ENOENT;
                }
        }
        char *ev = recorded_message("guest.qmp", NULL, "\"BALLOON_CHANGE\"", NULL);
        char *greeting = recorded_message("session.qmp", NULL, "\"QMP\"", NULL);
        f->balloon_change = ev ? json_tokener_parse(ev) : NULL;
        if (greeting && asprintf(&f->greeting, "%s\r\n", greeting) < 0)
                f->greeting = NULL;
        free(ev);
        free(greeting);
        return f->balloon_change && f->greeting ? 0 : -ENOENT;
}

/* ---- replies: the recorded ones with the current values put in ---- */

static json_object *u64(uint64_t v) {
        return json_object_new_uint64(v);
}

static json_object *reply_copy(struct fake_qemu *f, enum reply r) {
        json_object *c = NULL;
        json_object_deep_copy(f->reply[r], &c, NULL);
        return c;
}

static json_object *reply_return(struct fake_qemu *f, enum reply r, json_object *value) {
        json_object *c = reply_copy(f, r);
        json_object_object_add(c, "return", value);
        return c;
}

/* The recorded error; its desc names `word` where the recording named its own. */
static json_object *reply_error(struct fake_qemu *f, enum reply r, const char *word) {
        json_object *c = reply_copy(f, r), *e, *d;
        const char *q = f->quoted[r], *desc, *at;
        if (!word || !q || !json_object_object_get_ex(c, "error", &e) || !json_object_object_get_ex(e, "desc", &d))
                return c;
        desc = json_object_get_string(d);
        at = strstr(desc, q);
        if (at) {
                char *s = NULL;
                if (asprintf(&s, "%.*s%s%s", (int) (at - desc), desc, word, at + strlen(q)) >= 0) {
                        json_object_object_add(e, "desc", json_object_new_string(s));
                        free(s);
                }
        }
        return c;
}

/* ---- the fake guest ---- */

static double vm_actual(const struct fake_qemu_vm *v, double now) {
        double dt = now - v->t_at, t = (double) v->target;
        switch (v->g.balloon) {
        case FAKE_QEMU_BALLOON_INSTANT:
                return t;
        case FAKE_QEMU_BALLOON_HELD:
                return v->actual_at;
        default:
                if (t < v->actual_at)
                        return fmax(t, v->actual_at - INFLATE_BPS * dt);
                return fmin(t, v->actual_at + DEFLATE_BPS * dt);
        }
}

static void vm_set_target(struct fake_qemu_vm *v, uint64_t target, double now) {
        v->actual_at = vm_actual(v, now);
        v->t_at = now;
        v->target = target;
}

double fake_qemu_burst_next(const struct fake_qemu_guest *g, double now, bool *ret_in) {
        const struct fake_qemu_workload *w = &g->workload;
        *ret_in = false;
        if (g->stats != FAKE_QEMU_STATS_WORKLOAD || !g->bursts || w->burst_cycle <= 0)
                return -1;
        double offset = g->phase / (2 * M_PI) * w->burst_cycle;
        double in = fmod(now + offset, w->burst_cycle);
        *ret_in = in < w->burst_len;
        return now - in + (*ret_in ? w->burst_len : w->burst_cycle);
}

/* Start of the workload's burst in progress (s), or -1. */
static double vm_burst_start(const struct fake_qemu_vm *v, double now) {
        bool in;
        double next = fake_qemu_burst_next(&v->g, now, &in);
        return in ? next - v->g.workload.burst_len : -1;
}

unsigned fake_qemu_burst_onsets(const struct fake_qemu *f, double since, double now) {
        unsigned n = 0;
        for (const struct fake_qemu_vm *v = f->vms; v; v = v->next) {
                double b = vm_burst_start(v, now);
                n += b > since && b <= now;
        }
        return n;
}

uint64_t fake_qemu_backed(const struct fake_qemu *f) {
        double now = mono(), sum = 0;
        for (const struct fake_qemu_vm *v = f->vms; v; v = v->next)
                sum += vm_actual(v, now);
        return (uint64_t) sum;
}

static double vm_use(const struct fake_qemu_vm *v, double now) {
        const struct fake_qemu_workload *w = &v->g.workload;
        double use = (double) v->g.max * w->use_pct / 100.0 *
                     (1 + w->wave_pct / 100.0 * sin(2 * M_PI * now / w->period + v->g.phase));
        if (vm_burst_start(v, now) >= 0)
                use += (double) v->g.max * w->burst_pct / 100.0;
        return use;
}

/* A growth during a burst not answered yet: record how long the burst waited. */
static void vm_note_growth(struct fake_qemu_vm *v, double now) {
        struct fake_qemu *f = v->f;
        double b = vm_burst_start(v, now);
        if (b < 0 || v->armed_at == 0 || b < v->armed_at + ARM_DELAY_S || b == v->answered_burst)
                return;
        if (f->n_latencies == f->cap_latencies) {
                size_t cap = f->cap_latencies ? f->cap_latencies * 2 : 1024;
                double *p = realloc(f->latencies, cap * sizeof *p);
                if (!p)
                        return;
                f->latencies = p;
                f->cap_latencies = cap;
        }
        v->answered_burst = b;
        f->latencies[f->n_latencies++] = (now - b) * 1000.0;
}

/* Swap-in and major faults accumulate while the use does not fit (10 % of the excess/s). */
static void vm_count(struct fake_qemu_vm *v, double now) {
        double excess = vm_use(v, now) + 64.0 * MIB - vm_actual(v, now);
        if (excess > 0) {
                double in = excess * 0.10 * (now - v->counted_at);
                v->swap_in += in;
                v->major += in / 4096.0;
        }
        v->counted_at = now;
}

static void stats_workload(struct fake_qemu_vm *v, double now, struct fake_qemu_stat_values *s) {
        vm_count(v, now);
        double actual = vm_actual(v, now), avail = fmax(0, actual - vm_use(v, now));
        *s = (struct fake_qemu_stat_values) {
                .swap_in = (uint64_t) v->swap_in, .major_faults = (uint64_t) v->major, .minor_faults = 1000,
                .free = (uint64_t) (avail * 0.7), .available = (uint64_t) avail, .total = (uint64_t) actual,
                .disk_caches = (uint64_t) (avail * 0.3),
        };
}

static void stats_available(uint64_t avail, uint64_t actual, struct fake_qemu_stat_values *s) {
        *s = (struct fake_qemu_stat_values) { .minor_faults = 100, .free = avail, .available = avail, .total = actual };
}

/* Huge, zero, flapping every second between the two, pressure forever: each for a period. */
static void stats_hostile(const struct fake_qemu_vm *v, double t, struct fake_qemu_stat_values *s) {
        uint64_t tick = (uint64_t) t, *all = &s->swap_in;
        unsigned phase = (unsigned) (t / v->g.hostile_period) % 4;
        size_t n = offsetof(struct fake_qemu_stat_values, last_update) / sizeof(uint64_t);
        if (phase == 3) {
                s->available = s->free = 0;
                s->swap_in = tick * 1024 * MIB;
                s->major_faults = tick * 1000000;
                return;
        }
        for (size_t i = 0; i < n; i++)
                all[i] = phase == 0 ? UINT64_MAX - 1 : phase == 1 ? 0 : (tick % 2 ? UINT64_MAX - 1 : 0);
}

/* What the guest's statistics say now (every one unknown until polling is enabled). */
static void vm_stats(struct fake_qemu_vm *v, struct fake_qemu_stat_values *s) {
        double now = mono(), t = now - v->t0;
        uint64_t actual = (uint64_t) vm_actual(v, now);
        unsigned every = v->st.poll_interval;
        if (!every) {
                memset(s, 0xff, sizeof *s);
                s->last_update = 0;
                return;
        }
        switch (v->g.stats) {
        case FAKE_QEMU_STATS_WORKLOAD:
                stats_workload(v, now, s);
                break;
        case FAKE_QEMU_STATS_FLIP:
                stats_available((uint64_t) t % 2 == v->g.flip_odd ? 16 * MIB : actual - 64 * MIB, actual, s);
                break;
        case FAKE_QEMU_STATS_HOSTILE:
                stats_available(v->g.available, actual, s);
                stats_hostile(v, t, s);
                break;
        case FAKE_QEMU_STATS_PINNED:
                *s = v->pinned;
                return;
        default:
                stats_available(v->g.available, actual, s);
                if (v->g.free && v->g.free < s->available) {
                        s->free = v->g.free;
                        s->disk_caches = s->available - s->free;
                }
        }
        time_t wall = time(NULL);
        s->last_update = (uint64_t) (wall - wall % every);
}

static const struct {
        const char *key;
        size_t offset;
} stat_keys[] = {
        { "stat-swap-in", offsetof(struct fake_qemu_stat_values, swap_in) },
        { "stat-swap-out", offsetof(struct fake_qemu_stat_values, swap_out) },
        { "stat-major-faults", offsetof(struct fake_qemu_stat_values, major_faults) },
        { "stat-minor-faults", offsetof(struct fake_qemu_stat_values, minor_faults) },
        { "stat-free-memory", offsetof(struct fake_qemu_stat_values, free) },
        { "stat-available-memory", offsetof(struct fake_qemu_stat_values, available) },
        { "stat-total-memory", offsetof(struct fake_qemu_stat_values, total) },
        { "stat-disk-caches", offsetof(struct fake_qemu_stat_values, disk_caches) },
        { "stat-htlb-pgalloc", offsetof(struct fake_qemu_stat_values, htlb_pgalloc) },
        { "stat-htlb-pgfail", offsetof(struct fake_qemu_stat_values, htlb_pgfail) },
};

/* The recorded guest-stats reply, every statistic it names set from s (unknown if the fake
 * has no value for it). */
static json_object *stats_reply(struct fake_qemu *f, const struct fake_qemu_stat_values *s) {
        json_object *c = reply_copy(f, R_STATS), *ret, *stats;
        if (!json_object_object_get_ex(c, "return", &ret) || !json_object_object_get_ex(ret, "stats", &stats))
                return c;
        json_object_object_foreach(stats, key, val) {
                uint64_t v = STAT_UNKNOWN;
                (void) val;
                for (size_t i = 0; i < ELEMENTSOF(stat_keys); i++)
                        if (strcmp(stat_keys[i].key, key) == 0)
                                v = *(const uint64_t *) ((const char *) s + stat_keys[i].offset);
                json_object_object_add(stats, key, u64(v));
        }
        json_object_object_add(ret, "last-update", u64(s->last_update));
        return c;
}

static void vm_log(struct fake_qemu_vm *v, const char *fmt, ...) {
        if (!v->log)
                return;
        char line[128];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof line - 1, fmt, ap);
        va_end(ap);
        if (n < 0 || n >= (int) sizeof line - 1)
                return;
        line[n++] = '\n';
        int fd = open(v->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
                (void) !write(fd, line, (size_t) n);
                close(fd);
        }
}

/* ---- the timer: balloon progress and outside moves ---- */

static void arm_timer(struct fake_qemu *f, bool on) {
        if (f->timer_armed == on)
                return;
        struct itimerspec its = { 0 };
        if (on)
                its.it_value.tv_nsec = its.it_interval.tv_nsec = TICK_NSEC;
        if (timerfd_settime(f->timer_fd, 0, &its, NULL) == 0)
                f->timer_armed = on;
}

static void vm_moving(struct fake_qemu_vm *v) {
        v->moving = true;
        arm_timer(v->f, true);
}

/* ---- I/O ---- */

static void conn_want(struct conn *c) {
        bool flood = c->vm->g.monitor == FAKE_QEMU_MONITOR_FLOOD;
        struct epoll_event ev = { .events = EPOLLIN | (c->out_len || flood ? EPOLLOUT : 0), .data.ptr = &c->tag };
        epoll_ctl(c->vm->f->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

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

static int conn_append(struct conn *c, const char *s, size_t n) {
        if (n == 0)
                return 0;
        if (c->out_len + n > c->out_cap) {
                size_t cap = (c->out_len + n) * 2;
                char *p = realloc(c->out, cap);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, s, n);
        c->out_len += n;
        return 0;
}

/* One message, "\r\n"-terminated as QEMU writes it; takes msg. */
static int conn_queue(struct conn *c, json_object *msg) {
        const char *s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
        int r = conn_append(c, s, strlen(s));
        if (r >= 0)
                r = conn_append(c, "\r\n", 2);
        json_object_put(msg);
        return r;
}

static int conn_send(struct conn *c, json_object *msg) {
        int r = conn_queue(c, msg);
        if (r >= 0)
                r = conn_flush(c);
        conn_want(c);
        return r;
}

/* The recorded event, named `name`, with the balloon's actual and the time now. */
static json_object *event(struct fake_qemu *f, const char *name, uint64_t actual) {
        json_object *e = NULL, *ts, *data;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        json_object_deep_copy(f->balloon_change, &e, NULL);
        if (json_object_object_get_ex(e, "timestamp", &ts)) {
                json_object_object_add(ts, "seconds", json_object_new_int64(now.tv_sec));
                json_object_object_add(ts, "microseconds", json_object_new_int64(now.tv_nsec / 1000));
        }
        if (name)
                json_object_object_add(e, "event", json_object_new_string(name));
        if (json_object_object_get_ex(e, "data", &data))
                json_object_object_add(data, "actual", u64(actual));
        return e;
}

static void count_served(struct fake_qemu *f, const char *name) {
        json_object *n;
        int64_t k = json_object_object_get_ex(f->served, name, &n) ? json_object_get_int64(n) : 0;
        json_object_object_add(f->served, name, json_object_new_int64(k + 1));
}

/* BALLOON_CHANGE as QEMU sends it, to the negotiated client. */
static void send_balloon_change(struct fake_qemu_vm *v, double now) {
        v->ev_next = now + 1.0;
        v->ev_pending = false;
        if (!v->conn || !v->conn->negotiated)
                return;
        count_served(v->f, "event BALLOON_CHANGE");
        (void) conn_send(v->conn, event(v->f, NULL, v->reported));     /* a failure: the next read notices */
}

static void conn_free(struct conn *c) {
        struct fake_qemu_vm *v = c->vm;
        struct fake_qemu *f = v->f;
        epoll_ctl(f->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        json_tokener_free(c->tok);
        free(c->out);
        free(c);
        v->conn = NULL;
        vm_log(v, "hangup");
        if (v->events)
                vm_log(v, "events %" PRIu64, v->events);
        /* Like QEMU's monitor: the next client is served now. */
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &v->tag };
        epoll_ctl(f->ep, EPOLL_CTL_MOD, v->listen_fd, &ev);
}

/* ---- commands ---- */

static const char *arg_str(json_object *args, const char *k) {
        json_object *v;
        return args && json_object_object_get_ex(args, k, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v) : NULL;
}

static bool arg_int(json_object *args, const char *k, int64_t *ret) {
        json_object *v;
        if (!args || !json_object_object_get_ex(args, k, &v) || !json_object_is_type(v, json_type_int))
                return false;
        *ret = json_object_get_int64(v);
        return true;
}

static json_object *cmd_capabilities(struct conn *c, json_object *args) {
        c->negotiated = true;
        return reply_copy(c->vm->f, R_CAPABILITIES);
}

static json_object *cmd_query_status(struct conn *c, json_object *args) {
        return reply_copy(c->vm->f, R_QUERY_STATUS);
}

static json_object *cmd_query_balloon(struct conn *c, json_object *args) {
        struct fake_qemu_vm *v = c->vm;
        if (v->g.no_balloon)
                return reply_copy(v->f, R_NO_BALLOON);
        v->st.query_balloon++;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "actual", u64((uint64_t) vm_actual(v, mono())));
        return reply_return(v->f, R_QUERY_BALLOON, r);
}

static json_object *cmd_balloon(struct conn *c, json_object *args) {
        struct fake_qemu_vm *v = c->vm;
        int64_t want = 0;
        if (v->g.no_balloon)
                return reply_copy(v->f, R_NO_BALLOON);
        if (!arg_int(args, "value", &want) || want <= 0)
                return reply_copy(v->f, R_BALLOON_ZERO);
        double now = mono();
        uint64_t t = (uint64_t) want > v->g.max ? v->g.max : (uint64_t) want;
        vm_log(v, "target %" PRId64, want);
        v->st.balloon_set++;
        v->st.requested = (uint64_t) want;
        if (t > v->target)
                vm_note_growth(v, now);
        vm_set_target(v, t, now);
        vm_moving(v);
        return reply_copy(v->f, R_BALLOON);
}

static json_object *cmd_qom_list(struct conn *c, json_object *args) {
        const char *path = arg_str(args, "path");
        if (!path || strcmp(path, "/machine/peripheral") != 0)
                return reply_error(c->vm->f, R_DEVICE_NOT_FOUND, path);
        return reply_copy(c->vm->f, c->vm->g.no_balloon ? R_PERIPHERALS_NO_BALLOON : R_PERIPHERALS);
}

static json_object *cmd_query_memory_devices(struct conn *c, json_object *args) {
        return reply_copy(c->vm->f, R_MEMORY_DEVICES);
}

static bool is_balloon(struct conn *c, const char *path) {
        return !c->vm->g.no_balloon && path && strcmp(path, BALLOON_PATH) == 0;
}

static json_object *cmd_qom_set(struct conn *c, json_object *args) {
        struct fake_qemu_vm *v = c->vm;
        const char *path = arg_str(args, "path"), *prop = arg_str(args, "property");
        int64_t every;
        if (!is_balloon(c, path))
                return reply_error(v->f, R_DEVICE_NOT_FOUND, path);
        if (!prop || strcmp(prop, POLL_PROPERTY) != 0 || !arg_int(args, "value", &every) || every < 0 ||
            every > UINT32_MAX)
                return reply_error(v->f, R_PROPERTY_NOT_FOUND, prop);
        v->st.poll_interval = (unsigned) every;
        if (every > 0 && v->armed_at == 0)
                v->armed_at = mono();
        return reply_copy(v->f, R_POLL_SET);
}

static json_object *cmd_qom_get(struct conn *c, json_object *args) {
        struct fake_qemu_vm *v = c->vm;
        const char *path = arg_str(args, "path"), *prop = arg_str(args, "property");
        if (!is_balloon(c, path))
                return reply_error(v->f, R_DEVICE_NOT_FOUND, path);
        if (prop && strcmp(prop, "guest-stats") == 0) {
                struct fake_qemu_stat_values s;
                v->st.stats_read++;
                vm_log(v, "stats");
                vm_stats(v, &s);
                return stats_reply(v->f, &s);
        }
        if (prop && strcmp(prop, POLL_PROPERTY) == 0)
                return reply_return(v->f, R_POLL_GET, u64(v->st.poll_interval));
        if (prop && strcmp(prop, "free-page-reporting") == 0)
                return reply_return(v->f, R_FREE_PAGE_REPORTING, json_object_new_boolean(v->g.free_page_reporting));
        return reply_error(v->f, R_PROPERTY_NOT_FOUND, prop);
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
        { "query-memory-devices", cmd_query_memory_devices },
        { "qom-set", cmd_qom_set },
        { "qom-get", cmd_qom_get },
};

static json_object *dispatch(struct conn *c, json_object *msg) {
        struct fake_qemu *f = c->vm->f;
        const char *name = arg_str(msg, "execute");
        json_object *args = NULL;
        if (!name)
                return reply_copy(f, R_PARSE_ERROR);
        json_object_object_get_ex(msg, "arguments", &args);
        if (!c->negotiated && strcmp(name, "qmp_capabilities") != 0)
                return reply_copy(f, R_NOT_NEGOTIATED);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0) {
                        count_served(f, name);
                        return commands[i].fn(c, args);
                }
        return reply_error(f, R_COMMAND_NOT_FOUND, name);
}

static int handle_message(struct conn *c, json_object *msg) {
        enum fake_qemu_monitor m = c->vm->g.monitor;
        if (m == FAKE_QEMU_MONITOR_SILENT || m == FAKE_QEMU_MONITOR_HALF)
                return 0;
        if (m == FAKE_QEMU_MONITOR_STALL && c->answered >= c->vm->g.answer)
                return 0;
        c->answered++;
        json_object *reply = dispatch(c, msg), *id;
        if (json_object_object_get_ex(msg, "id", &id))
                json_object_object_add(reply, "id", json_object_get(id));
        return conn_send(c, reply);
}

/* Feeds bytes to the streaming parser; every complete value is one command. What is not JSON
 * gets QEMU's parse error, and the parser starts again after the line. */
static int conn_read(struct conn *c) {
        char buf[8192];
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
                return -ECONNRESET;
        if (n < 0)
                return errno == EAGAIN ? 0 : -errno;
        size_t off = 0;
        while (off < (size_t) n) {
                while (off < (size_t) n && strchr(" \t\r\n", buf[off]))
                        off++;
                if (off == (size_t) n)
                        break;
                json_object *msg = json_tokener_parse_ex(c->tok, buf + off, (int) ((size_t) n - off));
                enum json_tokener_error e = json_tokener_get_error(c->tok);
                if (e == json_tokener_continue)
                        return 0;
                size_t used = json_tokener_get_parse_end(c->tok);
                json_tokener_reset(c->tok);
                if (e != json_tokener_success || !msg) {
                        const char *nl = memchr(buf + off, '\n', (size_t) n - off);
                        off = nl ? (size_t) (nl - buf) + 1 : (size_t) n;
                        json_object_put(msg);
                        if (c->vm->g.monitor != FAKE_QEMU_MONITOR_SILENT && c->vm->g.monitor != FAKE_QEMU_MONITOR_HALF) {
                                int r = conn_send(c, reply_copy(c->vm->f, R_PARSE_ERROR));
                                if (r < 0)
                                        return r;
                        }
                        continue;
                }
                off += used ? used : (size_t) n - off;
                int r = handle_message(c, msg);
                json_object_put(msg);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The flood: a batch of events whenever everything before is written. */
static int conn_flood(struct conn *c) {
        struct fake_qemu_vm *v = c->vm;
        const char *name = ++c->batches % 2 ? NULL : "SOMETHING_NEW";       /* an event QEMU 7.2 has not */
        json_object *e = event(v->f, name, (uint64_t) vm_actual(v, mono()));
        const char *s = json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN);
        int r = 0;
        for (int i = 0; i < FLOOD_BATCH && r >= 0; i++) {
                r = conn_append(c, s, strlen(s));
                if (r >= 0)
                        r = conn_append(c, "\r\n", 2);
        }
        json_object_put(e);
        v->events += FLOOD_BATCH;
        return r;
}

static void accept_conn(struct fake_qemu_vm *v) {
        struct fake_qemu *f = v->f;
        int fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
                return;
        struct conn *c = calloc(1, sizeof *c);
        json_tokener *tok = c ? json_tokener_new() : NULL;
        if (!tok) {
                free(c);
                close(fd);
                return;
        }
        *c = (struct conn) { .tag = { TAG_CONN, c }, .fd = fd, .vm = v, .tok = tok };
        v->conn = c;
        v->st.connects++;
        vm_log(v, "connect");
        /* One client at a time, as QEMU's monitor: the next waits in the backlog. */
        struct epoll_event off = { .events = 0, .data.ptr = &v->tag };
        epoll_ctl(f->ep, EPOLL_CTL_MOD, v->listen_fd, &off);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->tag };
        if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                conn_free(c);
                return;
        }
        size_t len = strlen(f->greeting);
        if (v->g.monitor == FAKE_QEMU_MONITOR_SILENT)
                len = 0;
        else if (v->g.monitor == FAKE_QEMU_MONITOR_HALF)
                len /= 2;
        if (conn_append(c, f->greeting, len) < 0 || conn_flush(c) < 0) {
                conn_free(c);
                return;
        }
        conn_want(c);
}

static void on_conn(struct conn *c, uint32_t events) {
        int r = 0;
        if (events & EPOLLIN)
                r = conn_read(c);
        if (r >= 0 && (events & EPOLLOUT)) {
                if (c->out_len == 0 && c->vm->g.monitor == FAKE_QEMU_MONITOR_FLOOD)
                        r = conn_flood(c);
                if (r >= 0)
                        r = conn_flush(c);
        }
        if (r < 0 || (events & (EPOLLHUP | EPOLLERR))) {
                conn_free(c);
                return;
        }
        conn_want(c);
}

/* The guest reports its balloon's progress; QEMU passes it on, at most once a second. Another
 * monitor client's balloon command lands when its time comes. */
static void on_tick(struct fake_qemu *f) {
        uint64_t expirations;
        double now = mono();
        bool busy = false;
        (void) !read(f->timer_fd, &expirations, sizeof expirations);
        for (struct fake_qemu_vm *v = f->vms; v; v = v->next) {
                if (v->outside_pending && now - v->t0 >= v->g.outside_at) {
                        v->outside_pending = false;
                        vm_log(v, "outside %" PRIu64, v->g.outside_size);
                        vm_set_target(v, v->g.outside_size, now);
                        v->moving = true;
                }
                busy |= v->outside_pending;
                if (!v->moving)
                        continue;
                uint64_t a = (uint64_t) vm_actual(v, now);
                if (a != v->reported) {
                        v->reported = a;
                        v->ev_pending = true;
                }
                if (v->ev_pending && now >= v->ev_next && v->conn && v->conn->negotiated)
                        send_balloon_change(v, now);
                v->moving = v->ev_pending || (a != v->target && v->g.balloon != FAKE_QEMU_BALLOON_HELD);
                busy |= v->moving;
        }
        if (!busy)
                arm_timer(f, false);
}

/* ---- the server ---- */

int fake_qemu_new(struct fake_qemu **ret) {
        struct fake_qemu *f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->ep = epoll_create1(EPOLL_CLOEXEC);
        f->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        f->served = json_object_new_object();
        f->timer_tag = (struct tagged) { TAG_TIMER, f };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &f->timer_tag };
        int r = f->ep < 0 || f->timer_fd < 0 || epoll_ctl(f->ep, EPOLL_CTL_ADD, f->timer_fd, &ev) < 0 ? -errno : 0;
        if (r == 0)
                r = load_recordings(f);
        if (r < 0) {
                fake_qemu_free(f);
                return r;
        }
        *ret = f;
        return 0;
}

void fake_qemu_free(struct fake_qemu *f) {
        if (!f)
                return;
        while (f->vms)
                fake_qemu_remove(f->vms);
        for (int i = 0; i < _R_MAX; i++) {
                json_object_put(f->reply[i]);
                free(f->quoted[i]);
        }
        json_object_put(f->balloon_change);
        json_object_put(f->served);
        free(f->greeting);
        free(f->latencies);
        if (f->timer_fd >= 0)
                close(f->timer_fd);
        if (f->ep >= 0)
                close(f->ep);
        free(f);
}

int fake_qemu_add(struct fake_qemu *f, const char *path, const struct fake_qemu_guest *g,
                  struct fake_qemu_vm **ret) {
        return fake_qemu_add_listening(f, path, g, -1, ret);
}

int fake_qemu_listen(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        unlink(path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 8) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int fake_qemu_add_listening(struct fake_qemu *f, const char *path, const struct fake_qemu_guest *g, int fd,
                            struct fake_qemu_vm **ret) {
        if (strlen(path) >= sizeof((struct sockaddr_un) { 0 }.sun_path) || g->max == 0) {
                if (fd >= 0)
                        close(fd);
                return -EINVAL;
        }
        struct fake_qemu_vm *v = calloc(1, sizeof *v);
        if (!v) {
                if (fd >= 0)
                        close(fd);
                return -ENOMEM;
        }
        double now = mono();
        uint64_t init = g->init && g->init <= g->max ? g->init : g->max;
        *v = (struct fake_qemu_vm) { .tag = { TAG_LISTEN, v }, .f = f, .g = *g, .listen_fd = -1, .t0 = now,
                                     .actual_at = (double) init, .t_at = now, .target = init, .counted_at = now,
                                     .answered_burst = -1, .reported = init, .outside_pending = g->outside_at > 0 };
        v->g.log = NULL;
        v->log = g->log ? strdup(g->log) : NULL;
        if (v->g.hostile_period <= 0)
                v->g.hostile_period = 2.0;
        if (v->g.workload.period <= 0)
                v->g.workload.period = 60;
        memset(&v->pinned, 0xff, sizeof v->pinned);
        snprintf(v->path, sizeof v->path, "%s", path);
        v->next = f->vms;
        v->pprev = &f->vms;
        if (f->vms)
                f->vms->pprev = &v->next;
        f->vms = v;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &v->tag };
        int lfd = fd >= 0 ? fd : fake_qemu_listen(path);
        v->listen_fd = lfd < 0 ? -1 : lfd;
        if (lfd < 0 || epoll_ctl(f->ep, EPOLL_CTL_ADD, v->listen_fd, &ev) < 0) {
                int r = lfd < 0 ? lfd : -errno;
                fake_qemu_remove(v);
                return r;
        }
        if (v->outside_pending)
                arm_timer(f, true);
        if (ret)
                *ret = v;
        return 0;
}

void fake_qemu_remove(struct fake_qemu_vm *v) {
        if (v->conn)
                conn_free(v->conn);
        if (v->listen_fd >= 0) {
                epoll_ctl(v->f->ep, EPOLL_CTL_DEL, v->listen_fd, NULL);
                close(v->listen_fd);
                unlink(v->path);
        }
        *v->pprev = v->next;
        if (v->next)
                v->next->pprev = v->pprev;
        free(v->log);
        free(v);
}

int fake_qemu_fd(const struct fake_qemu *f) {
        return f->ep;
}

int fake_qemu_dispatch(struct fake_qemu *f, int timeout_ms) {
        struct epoll_event evs[64];
        int n = epoll_wait(f->ep, evs, ELEMENTSOF(evs), timeout_ms);
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        for (int i = 0; i < n; i++) {
                struct tagged *t = evs[i].data.ptr;
                if (t->tag == TAG_TIMER)
                        on_tick(f);
                else if (t->tag == TAG_LISTEN)
                        accept_conn(t->p);
                else
                        on_conn(t->p, evs[i].events);
        }
        return n;
}

const struct fake_qemu_vm_state *fake_qemu_vm_state(struct fake_qemu_vm *v) {
        v->st.actual = (uint64_t) vm_actual(v, mono());
        return &v->st;
}

void fake_qemu_vm_set_actual(struct fake_qemu_vm *v, uint64_t actual) {
        v->actual_at = (double) actual;
        v->t_at = mono();
        if (v->g.balloon != FAKE_QEMU_BALLOON_HELD)
                v->target = actual;
        v->reported = actual;
}

void fake_qemu_vm_balloon_change(struct fake_qemu_vm *v, uint64_t actual) {
        fake_qemu_vm_set_actual(v, actual);
        send_balloon_change(v, mono());
}

void fake_qemu_vm_set_stats(struct fake_qemu_vm *v, const struct fake_qemu_stat_values *s) {
        v->pinned = *s;
}

json_object *fake_qemu_served(const struct fake_qemu *f) {
        return f->served;
}

const double *fake_qemu_latencies(const struct fake_qemu *f, size_t *n) {
        *n = f->n_latencies;
        return f->latencies;
}
