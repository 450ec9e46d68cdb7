/* SPDX-License-Identifier: Apache-2.0 */
#include "qmp.h"

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "jsonutil.h"
#include "log.h"

/* Bytes read per wakeup. QEMU's messages are < 1 KiB, so one read usually drains the socket;
 * a large reply takes several wakeups of the (level-triggered) loop. */
#define READ_CHUNK (64 * 1024)
/* Timer slack for timeouts: 1 ms (sd-event's default of 250 ms would blur short timeouts). */
#define TIMER_ACCURACY_USEC 1000

enum qmp_state {
        STATE_GREETING,     /* connected, waiting for {"QMP": ...} */
        STATE_NEGOTIATING,  /* qmp_capabilities sent */
        STATE_READY,
        STATE_CLOSED,
};

struct pending {
        struct pending *next;
        struct qmp *q;
        uint64_t id;
        char command[64];
        uint64_t timeout_usec;
        uint64_t deadline_usec;  /* monotonic: sent + timeout */
        qmp_reply_fn fn;
        qmp_fast_fn fast;        /* optional decoder of a plain reply's text */
        void *userdata;
};

struct qmp {
        unsigned n_ref;
        bool freed;
        enum qmp_state state;
        sd_event *event;
        struct hub *hub;         /* the loop's hub, while fd is registered with it */
        sd_event_source *connect_timer;
        int fd;
        uint32_t io_events;      /* what fd is registered for in the hub's epoll set */
        char *name;
        uint64_t connect_timeout_usec;

        struct json_tokener *tok;
        size_t msg_bytes;        /* bytes fed to the tokener since the last complete message */
        bool mid_message;        /* a non-blank byte was fed since the last complete message */

        char *out;               /* bytes not yet written: out[out_pos..out_len) */
        size_t out_len, out_pos;
        size_t out_cap;          /* out's size: kept between commands, not reallocated per command */

        uint64_t next_id;
        struct pending *pending;
        /* One timer for all pending commands, never later than the earliest deadline; when
         * it fires early (that command was answered) it moves on to the next deadline. It is
         * kept in the hub (hub_timer_fired()), not in sd-event. */
        uint64_t cmd_timer_usec; /* when it is armed for; 0 = disarmed */
        size_t timer_slot;       /* its place in the hub's heap; NO_SLOT: not there */
        struct qmp_callbacks cb;
        void *userdata;
        struct {
                qmp_event_fn fn;
                void *userdata;
        } handlers[_QMP_EVENT_MAX];

        unsigned corked;         /* qmp_cork() depth: commands queue, nothing is sent */
        bool have_version;
        struct qmp_version version;
};

/* ---- errors ---------------------------------------------------------------------------- */

_printf_(3, 4) static int qerr_set(struct qmp_error *e, int code, const char *fmt, ...) {
        va_list ap;
        char msg[sizeof(e->error.msg)];

        code = code > 0 ? -code : (code ? code : -EIO);
        if (!e)
                return code;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        *e = (struct qmp_error) { .error.code = code };
        snprintf(e->error.msg, sizeof(e->error.msg), "%s", msg);
        return code;
}

/* QEMU's error classes (qapi/error.json), sorted by name for bsearch. */
static const struct class_errno {
        const char *class;
        int code;
} class_table[] = {
        { "CommandNotFound", -EOPNOTSUPP },
        { "DeviceNotActive", -ENODEV },
        { "DeviceNotFound", -ENOENT },
        { "GenericError", -EREMOTEIO },
        { "KVMMissingCap", -EOPNOTSUPP },
};

static int cmp_class(const void *key, const void *elem) {
        return strcmp(key, ((const struct class_errno *) elem)->class);
}

static int class_to_errno(const char *class) {
        const struct class_errno *c = bsearch(class, class_table, ELEMENTSOF(class_table),
                                              sizeof(class_table[0]), cmp_class);
        return c ? c->code : -EREMOTEIO;
}

bool qmp_error_has_class(const struct qmp_error *e, const char *class) {
        return qmp_error_is_qemu(e) && class && strcmp(e->class, class) == 0;
}

/* ---- events ---------------------------------------------------------------------------- */

/* Sorted by name (bsearch); the unit tests check the order. */
static const struct event_name {
        const char *name;
        enum qmp_event_id id;
} event_table[] = {
        { "BALLOON_CHANGE", QMP_EVENT_BALLOON_CHANGE },
        { "DEVICE_DELETED", QMP_EVENT_DEVICE_DELETED },
        { "MEMORY_DEVICE_SIZE_CHANGE", QMP_EVENT_MEMORY_DEVICE_SIZE_CHANGE },
        { "POWERDOWN", QMP_EVENT_POWERDOWN },
        { "RESET", QMP_EVENT_RESET },
        { "RESUME", QMP_EVENT_RESUME },
        { "SHUTDOWN", QMP_EVENT_SHUTDOWN },
        { "STOP", QMP_EVENT_STOP },
};

static int cmp_event(const void *key, const void *elem) {
        return strcmp(key, ((const struct event_name *) elem)->name);
}

enum qmp_event_id qmp_event_from_name(const char *name) {
        const struct event_name *e;

        if (!name)
                return QMP_EVENT_UNKNOWN;
        e = bsearch(name, event_table, ELEMENTSOF(event_table), sizeof(event_table[0]), cmp_event);
        return e ? e->id : QMP_EVENT_UNKNOWN;
}

const char *qmp_event_to_name(enum qmp_event_id id) {
        for (size_t i = 0; i < ELEMENTSOF(event_table); i++)
                if (event_table[i].id == id)
                        return event_table[i].name;
        return NULL;
}

int qmp_set_event_handler(struct qmp *q, enum qmp_event_id id, qmp_event_fn fn, void *userdata) {
        if (!q || id <= QMP_EVENT_UNKNOWN || id >= _QMP_EVENT_MAX)
                return -EINVAL;
        q->handlers[id].fn = fn;
        q->handlers[id].userdata = userdata;
        return 0;
}

/* ---- the hub: all connections of one event loop behind one sd-event source -------------- */

/*
 * Why a hub: ppnd asks every VM for its balloon and guest stats at the same moment each 1 s
 * tick, so all N replies arrive together. With one sd-event io source per connection, the loop
 * dispatches ONE ready source per iteration and then calls epoll_wait() again, which returns
 * all the still-ready sockets: a round costs N iterations x O(N) = O(N^2). Measured with
 * bench/scale.sh before the hub: 5.3 ms of CPU per tick at 100 VMs, 285 ms at 1,000 (54x for
 * 10x the VMs), 685 ms at 2,000, with ~2,000 epoll_wait() calls/s each returning ~1,000 fds.
 * Event-source priorities cannot help (the loop still dispatches one source per poll) and
 * spreading the requests over the tick only lowers the odds of a pile-up.
 *
 * So the connections of one sd_event loop share a private epoll set that the loop sees as a
 * single io source; its handler serves every ready connection of one epoll_wait() (up to
 * HUB_BATCH), so a round costs O(N). The hub is found by its loop (a short list: one entry per
 * loop with open connections, usually one) and lives as long as its connections. Measured the
 * same way with the hub: 3.3 ms per tick at 100 VMs, 32 ms at 1,000 (9.8x), 65 ms at 2,000,
 * i.e. ~32 us per VM and tick at every size from 100 up.
 */

/* Ready connections served per dispatch. Bounds the time the hub holds the loop (timers and
 * the control socket wait meanwhile): at the ~16 us per reply measured at 1,000 VMs, 256
 * replies hold it ~4 ms. More ready connections keep the hub's fd readable and are served at
 * the next iteration, a few system calls later instead of one full poll per reply. */
#define HUB_BATCH 256

/*
 * The connections' command timers (arm_cmd_timer()) are a heap in the hub, behind one sd-event
 * timer armed for the earliest. With a timer source per connection, each one fired on its own
 * once per command timeout (5 s) for a command long answered, and sd-event dispatches one source
 * per iteration of its loop: at 2,000 VMs, 400 iterations a second, each a poll (epoll_wait) and
 * ~12,000 instructions of sd-event's own (callgrind, 500 VMs: 1,901 of the loop's 2,298
 * iterations in 20 s). The commands of one round are sent within milliseconds, so their
 * deadlines come together, and the hub's timer serves all that are due when it fires. Each
 * connection's timer fires when it did, within TIMER_ACCURACY_USEC, and does what it did.
 */
#define NO_SLOT SIZE_MAX

struct hub {
        struct hub *next;
        unsigned n_ref;
        sd_event *event;
        sd_event_source *io;
        int epfd;
        struct qmp **timers;     /* a binary heap by cmd_timer_usec, earliest first */
        size_t n_timers, timers_cap;
        sd_event_source *timer;
        uint64_t timer_usec;     /* what the hub's timer is armed for; 0 = disarmed */
        bool firing;             /* on_hub_timer() is serving the heap: it arms the timer after */
};

static struct hub *hubs;

static void on_io(struct qmp *q, uint32_t revents);
static void qmp_unref(struct qmp *q);

static void hub_unref(struct hub *h) {
        if (!h || --h->n_ref > 0)
                return;
        for (struct hub **pp = &hubs; *pp; pp = &(*pp)->next)
                if (*pp == h) {
                        *pp = h->next;
                        break;
                }
        sd_event_source_disable_unref(h->io);
        sd_event_source_disable_unref(h->timer);
        close(h->epfd);
        sd_event_unref(h->event);
        free(h->timers);
        free(h);
}

/* Serves every connection of one epoll_wait(). A callback may free any connection (its own or
 * another in the batch): each one is referenced for the batch, and a closed one is skipped. */
static int on_hub(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct epoll_event ev[HUB_BATCH];
        struct hub *h = userdata;
        int n;

        h->n_ref++;
        n = epoll_wait(h->epfd, ev, HUB_BATCH, 0);
        if (n < 0)      /* cannot happen with a valid set and no wait; the loop polls again */
                log_debug("qmp: epoll_wait on the connections' set failed: %m");
        for (int i = 0; i < n; i++)
                ((struct qmp *) ev[i].data.ptr)->n_ref++;
        for (int i = 0; i < n; i++)
                on_io(ev[i].data.ptr, ev[i].events);
        for (int i = 0; i < n; i++)
                qmp_unref(ev[i].data.ptr);
        hub_unref(h);
        return 0;      /* < 0 would make sd-event disable the hub for good */
}

/* The hub of loop e, made on first use; the caller holds a reference. */
static int hub_get(sd_event *e, struct hub **ret) {
        struct hub *h;
        int r;

        for (h = hubs; h; h = h->next)
                if (h->event == e) {
                        h->n_ref++;
                        *ret = h;
                        return 0;
                }
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (h->epfd < 0) {
                r = -errno;
                free(h);
                return r;
        }
        r = sd_event_add_io(e, &h->io, h->epfd, EPOLLIN, on_hub, h);
        if (r < 0) {
                close(h->epfd);
                free(h);
                return r;
        }
        h->n_ref = 1;
        h->event = sd_event_ref(e);
        h->next = hubs;
        hubs = h;
        *ret = h;
        return 0;
}

static int hub_add(struct qmp *q) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = q };
        int r = hub_get(q->event, &q->hub);

        if (r < 0)
                return r;
        if (epoll_ctl(q->hub->epfd, EPOLL_CTL_ADD, q->fd, &ev) < 0) {
                r = -errno;
                hub_unref(q->hub);
                q->hub = NULL;
                return r;
        }
        q->io_events = EPOLLIN;
        return 0;
}

static void heap_put(struct hub *h, size_t i, struct qmp *q) {
        h->timers[i] = q;
        q->timer_slot = i;
}

static void heap_up(struct hub *h, size_t i) {
        struct qmp *q = h->timers[i];

        while (i > 0 && q->cmd_timer_usec < h->timers[(i - 1) / 2]->cmd_timer_usec) {
                heap_put(h, i, h->timers[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        heap_put(h, i, q);
}

static void heap_down(struct hub *h, size_t i) {
        struct qmp *q = h->timers[i];

        for (size_t c; (c = 2 * i + 1) < h->n_timers; i = c) {
                if (c + 1 < h->n_timers && h->timers[c + 1]->cmd_timer_usec < h->timers[c]->cmd_timer_usec)
                        c++;
                if (h->timers[c]->cmd_timer_usec >= q->cmd_timer_usec)
                        break;
                heap_put(h, i, h->timers[c]);
        }
        heap_put(h, i, q);
}

/* Takes q's timer out of the heap (disarmed), if it is there. */
static void heap_remove(struct hub *h, struct qmp *q) {
        size_t i = q->timer_slot;
        struct qmp *last;

        if (!h || i == NO_SLOT)
                return;
        q->timer_slot = NO_SLOT;
        last = h->timers[--h->n_timers];
        if (i == h->n_timers)
                return;
        heap_put(h, i, last);
        heap_up(h, i);
        heap_down(h, last->timer_slot);
}

static int on_hub_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* Arms the hub's timer for the earliest connection timer, unless it fires sooner already (it
 * then fires early, finds nothing due and moves on, as a connection's timer does). */
static int hub_arm(struct hub *h) {
        uint64_t at = h->n_timers > 0 ? h->timers[0]->cmd_timer_usec : 0;
        int r;

        if (!at || h->firing || (h->timer_usec && h->timer_usec <= at))
                return 0;
        if (!h->timer)
                r = sd_event_add_time(h->event, &h->timer, CLOCK_MONOTONIC, at, TIMER_ACCURACY_USEC, on_hub_timer, h);
        else {
                r = sd_event_source_set_time(h->timer, at);
                if (r >= 0)
                        r = sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                return r;
        h->timer_usec = at;
        return 0;
}

static void hub_remove(struct qmp *q) {
        if (!q->hub)
                return;
        heap_remove(q->hub, q);
        (void) epoll_ctl(q->hub->epfd, EPOLL_CTL_DEL, q->fd, NULL);
        hub_unref(q->hub);
        q->hub = NULL;
}

/* ---- lifetime -------------------------------------------------------------------------- */

static struct qmp *qmp_ref(struct qmp *q) {
        q->n_ref++;
        return q;
}

static void qmp_unref(struct qmp *q) {
        if (!q || --q->n_ref > 0)
                return;
        sd_event_unref(q->event);
        free(q->name);
        free(q);
}

static void close_transport(struct qmp *q) {
        q->connect_timer = sd_event_source_disable_unref(q->connect_timer);
        heap_remove(q->hub, q);
        q->cmd_timer_usec = 0;
        if (q->fd >= 0) {
                hub_remove(q);
                close(q->fd);
        }
        q->fd = -1;
        if (q->tok)
                json_tokener_free(q->tok);
        q->tok = NULL;
        free(q->out);
        q->out = NULL;
        q->out_len = q->out_pos = q->out_cap = 0;
}

static struct pending *pending_free(struct pending *p) {
        free(p);
        return NULL;
}

/* Unlinks the pending command with this id, or returns NULL. */
static struct pending *pending_take(struct qmp *q, uint64_t id) {
        for (struct pending **pp = &q->pending; *pp; pp = &(*pp)->next) {
                struct pending *p = *pp;
                if (p->id != id)
                        continue;
                *pp = p->next;
                p->next = NULL;
                return p;
        }
        return NULL;
}

/* Runs the callback of an unlinked pending command once and frees it. */
static void pending_complete(struct qmp *q, struct pending *p, json_object *ret,
                             const struct qmp_error *err) {
        if (p->fn)
                p->fn(q, ret, err, p->userdata);
        pending_free(p);
}

/* Fails every pending command with `reason`, each message naming its command. */
static void fail_pending(struct qmp *q, const struct qmp_error *reason) {
        struct pending *p;

        while ((p = q->pending)) {
                struct qmp_error e = *reason;
                q->pending = p->next;
                ppn_error_prefix(&e.error, reason->error.code, "%s", p->command);
                pending_complete(q, p, NULL, &e);
        }
}

static void qmp_disconnect(struct qmp *q, const struct qmp_error *reason) {
        if (q->state == STATE_CLOSED)
                return;
        q->state = STATE_CLOSED;
        log_debug("qmp %s: disconnected: %s", q->name, reason->error.msg);
        close_transport(q);
        qmp_ref(q);
        fail_pending(q, reason);
        if (!q->freed && q->cb.disconnected)
                q->cb.disconnected(q, reason, q->userdata);
        qmp_unref(q);
}

struct qmp *qmp_free(struct qmp *q) {
        struct qmp_error e;

        if (!q)
                return NULL;
        q->freed = true;
        q->state = STATE_CLOSED;
        close_transport(q);
        qerr_set(&e, -ECANCELED, "the QMP client of %s was closed before QEMU answered", q->name);
        fail_pending(q, &e);
        qmp_unref(q);
        return NULL;
}

/* ---- writing --------------------------------------------------------------------------- */

static int update_io_events(struct qmp *q) {
        struct epoll_event ev = { .events = EPOLLIN | (q->out_pos < q->out_len ? EPOLLOUT : 0),
                                  .data.ptr = q };

        if (!q->hub || ev.events == q->io_events)
                return 0;
        if (epoll_ctl(q->hub->epfd, EPOLL_CTL_MOD, q->fd, &ev) < 0)
                return -errno;
        q->io_events = ev.events;
        return 0;
}

/* Sends what is queued now, if the socket takes it. Errors are left to the loop: the socket
 * stays writable (or hung up) and on_writable()/on_readable() end the connection from there,
 * so no callback ever runs from inside qmp_call(). */
static void send_now(struct qmp *q) {
        ssize_t n = send(q->fd, q->out + q->out_pos, q->out_len - q->out_pos,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
                q->out_pos += (size_t) n;
}

/* Queues bytes for QEMU. With nothing queued before, they are sent at once: QEMU's socket
 * takes a command of < 1 KiB, and waiting for EPOLLOUT would cost two epoll_ctl() calls and a
 * wakeup per command (at 1,000 VMs that was 2,000 epoll_ctl() calls a second, ~1/3 of the
 * system calls left after the hub). */
static int out_append(struct qmp *q, const char *s, size_t len) {
        bool was_empty = q->out_pos == q->out_len;
        char *n;

        if (was_empty)
                q->out_pos = q->out_len = 0;
        if (q->out_len + len > q->out_cap) {
                size_t cap = q->out_cap * 2 > q->out_len + len ? q->out_cap * 2 : q->out_len + len;
                cap = cap < 256 ? 256 : cap;
                n = realloc(q->out, cap);
                if (!n)
                        return -ENOMEM;
                q->out = n;
                q->out_cap = cap;
        }
        memcpy(q->out + q->out_len, s, len);
        q->out_len += len;
        if (q->corked)
                return 0;       /* qmp_uncork() sends */
        if (was_empty && q->fd >= 0)
                send_now(q);
        if (q->out_pos == q->out_len)
                q->out_pos = q->out_len = 0;
        return update_io_events(q);
}

void qmp_cork(struct qmp *q) {
        if (q)
                q->corked++;
}

void qmp_uncork(struct qmp *q) {
        if (!q || q->corked == 0 || --q->corked > 0 || q->fd < 0 || q->out_pos == q->out_len)
                return;
        send_now(q);
        if (q->out_pos == q->out_len)
                q->out_pos = q->out_len = 0;
        (void) update_io_events(q);    /* what did not fit waits for EPOLLOUT */
}

static void on_writable(struct qmp *q) {
        struct qmp_error e;
        ssize_t n;

        if (q->out_pos == q->out_len)
                return;
        /* MSG_NOSIGNAL: a vanished QEMU must give EPIPE, not kill the daemon with SIGPIPE. */
        n = send(q->fd, q->out + q->out_pos, q->out_len - q->out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return;
                if (errno == EPIPE || errno == ECONNRESET)
                        qerr_set(&e, -ECONNRESET, "QEMU closed %s (it exited or dropped the monitor)",
                                 q->name);
                else
                        qerr_set(&e, -errno, "writing to QEMU's monitor %s failed: %m", q->name);
                qmp_disconnect(q, &e);
                return;
        }
        q->out_pos += (size_t) n;
        if (q->out_pos == q->out_len) {
                q->out_pos = q->out_len = 0;
                (void) update_io_events(q);
        }
}

/* ---- commands -------------------------------------------------------------------------- */

/* The pending command whose deadline passed first, still linked; NULL if none has. */
static struct pending *pending_expired(struct qmp *q, uint64_t now) {
        struct pending *first = NULL;

        for (struct pending *p = q->pending; p; p = p->next)
                if (p->deadline_usec <= now && (!first || p->deadline_usec < first->deadline_usec))
                        first = p;
        return first;
}

static int arm_cmd_timer(struct qmp *q, uint64_t at);

/* q's command timer has fired (taken out of the hub's heap): a command past its deadline ends
 * the connection, else the timer waits for the next deadline, if any. */
static void command_timer_fired(struct qmp *q) {
        struct pending *p, *taken;
        struct qmp_error e;
        uint64_t next = 0;

        p = pending_expired(q, now_usec());
        if (!p) {
                /* Fired for a command answered since: wait for the next deadline, if any. */
                for (p = q->pending; p; p = p->next)
                        if (!next || p->deadline_usec < next)
                                next = p->deadline_usec;
                if (next && arm_cmd_timer(q, next) < 0) {
                        qerr_set(&e, -ENOMEM, "cannot watch the commands sent to %s for timeouts", q->name);
                        qmp_disconnect(q, &e);
                }
                return;
        }
        qerr_set(&e, -ETIMEDOUT, "%s: QEMU on %s did not answer within %" PRIu64 " ms",
                 p->command, q->name, p->timeout_usec / USEC_PER_MSEC);
        taken = pending_take(q, p->id);
        if (taken)
                pending_complete(q, taken, NULL, &e);
        /* A reply that still comes could not be told from a later one: start over. */
        qerr_set(&e, -ETIMEDOUT, "QEMU on %s stopped answering (a command timed out)", q->name);
        qmp_disconnect(q, &e);
}

/* Fires every connection timer that is due, earliest first, then waits for the next. A fired
 * timer may end its connection (or, through its callbacks, any other): each one is referenced
 * while it runs, and one that closes leaves the heap. */
static int on_hub_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct hub *h = userdata;
        uint64_t now = now_usec();

        h->n_ref++;
        h->timer_usec = 0;
        h->firing = true;
        while (h->n_timers > 0 && h->timers[0]->cmd_timer_usec <= now) {
                struct qmp *q = qmp_ref(h->timers[0]);
                heap_remove(h, q);
                q->cmd_timer_usec = 0;
                command_timer_fired(q);
                qmp_unref(q);
        }
        h->firing = false;
        if (hub_arm(h) < 0)
                log_debug("qmp: cannot arm the timer of the commands' deadlines: %m");
        hub_unref(h);
        return 0;
}

/* Makes the command timer fire at `at` at the latest. One timer per connection instead of one
 * event source per command: at 2,000 VMs adding and removing a source for every command was
 * ~5 % of the daemon's instructions; this costs a re-arm only when the earliest deadline moves
 * earlier or the timer fires (at most once per timeout while commands keep flowing), and the
 * connections' timers share one sd-event timer (struct hub). */
static int arm_cmd_timer(struct qmp *q, uint64_t at) {
        struct hub *h = q->hub;

        if (q->cmd_timer_usec && q->cmd_timer_usec <= at)
                return 0;
        if (!h)
                return -ENOTCONN;
        if (q->timer_slot == NO_SLOT) {
                if (h->n_timers == h->timers_cap) {
                        size_t cap = h->timers_cap ? h->timers_cap * 2 : 16;
                        struct qmp **t = reallocarray(h->timers, cap, sizeof(*t));
                        if (!t)
                                return -ENOMEM;
                        h->timers = t;
                        h->timers_cap = cap;
                }
                heap_put(h, h->n_timers++, q);
        }
        q->cmd_timer_usec = at;
        heap_up(h, q->timer_slot);
        return hub_arm(h);
}

/* QMP command names are ours (constants): [a-z0-9_-], so they need no JSON escaping. */
static bool command_name_ok(const char *command) {
        if (!command || !*command || strlen(command) >= sizeof(((struct pending *) NULL)->command))
                return false;
        for (const char *c = command; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
                        return false;
        return true;
}

/* The command's line: {"execute":C,"arguments":A,"id":N}\n (json-c's plain form, put together
 * by hand: building and printing a json-c object per command cost as much as the reply's parse;
 * and the id without snprintf(), every command of every round). buf has COMMAND_LEN(lc, la)
 * bytes; returns the line's length (the '\n' included). */
#define COMMAND_LEN(lc, la) (sizeof("{\"execute\":\"\",\"arguments\":,\"id\":}\n") + (lc) + (la) + 20)
static size_t build_command(const char *command, size_t lc, const char *args_json, size_t la, uint64_t id,
                            char *buf) {
        char *e = buf;

        e = mempcpy(e, "{\"execute\":\"", 12);
        e = mempcpy(e, command, lc);
        if (args_json) {
                e = mempcpy(e, "\",\"arguments\":", 14);
                e = mempcpy(e, args_json, la);
                e = mempcpy(e, ",\"id\":", 6);
        } else
                e = mempcpy(e, "\",\"id\":", 7);
        e = put_uint(e, id);
        e = mempcpy(e, "}\n", 2);
        return (size_t) (e - buf);
}

/* Queues a command whatever the state (used for qmp_capabilities before ready). Commands of
 * the usual size are put together on the stack: no allocation for the text. */
static int send_command(struct qmp *q, const char *command, const char *args_json,
                        uint64_t timeout_usec, qmp_reply_fn fn, qmp_fast_fn fast, void *userdata) {
        _cleanup_free_ struct pending *p = calloc(1, sizeof(*p));
        size_t lc = strlen(command), la = args_json ? strlen(args_json) : 0, len;
        _cleanup_free_ char *heap = NULL;
        char stack[256], *text = stack;
        struct pending **pp;
        int r;

        if (!p)
                return -ENOMEM;
        if (COMMAND_LEN(lc, la) > sizeof(stack)) {
                heap = malloc(COMMAND_LEN(lc, la));
                if (!heap)
                        return -ENOMEM;
                text = heap;
        }
        *p = (struct pending) { .q = q, .id = q->next_id++, .fn = fn, .fast = fast, .userdata = userdata,
                                .timeout_usec = timeout_usec ?: QMP_TIMEOUT_DEFAULT_USEC };
        p->deadline_usec = now_usec() + p->timeout_usec;
        memcpy(p->command, command, MIN(lc, sizeof(p->command) - 1));
        len = build_command(command, lc, args_json, la, p->id, text);
        r = arm_cmd_timer(q, p->deadline_usec);
        if (r < 0)
                return r;
        r = out_append(q, text, len);
        if (r < 0)
                return r;
        if (log_get_max_level() >= LOG_DEBUG)
                log_debug("qmp %s -> %.*s", q->name, (int) len - 1, text);
        /* Appended, so a failing connection fails its commands in the order they were sent. */
        pp = &q->pending;
        while (*pp)
                pp = &(*pp)->next;
        *pp = TAKE_PTR(p);
        return 0;
}

int qmp_call(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
             qmp_reply_fn fn, void *userdata, struct qmp_error *err) {
        const char *text = args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : NULL;
        int r;

        if (args && !text) {
                json_object_put(args);
                return qerr_set(err, -ENOMEM, "%s: out of memory", command ?: "QMP");
        }
        r = qmp_call_text(q, command, text, timeout_usec, fn, userdata, err);
        json_object_put(args);
        return r;
}

int qmp_call_text(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                  qmp_reply_fn fn, void *userdata, struct qmp_error *err) {
        return qmp_call_fast(q, command, args_json, timeout_usec, fn, NULL, userdata, err);
}

int qmp_call_fast(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                  qmp_reply_fn fn, qmp_fast_fn fast, void *userdata, struct qmp_error *err) {
        int r;

        if (!q || !command_name_ok(command))
                return qerr_set(err, -EINVAL, "no QMP command given, or not a QMP command name: %.64s",
                                command ?: "");
        if (q->state != STATE_READY)
                return qerr_set(err, -ENOTCONN, "%s: the QMP connection to %s is %s", command,
                                q->name, q->state == STATE_CLOSED ? "closed" : "not ready yet");
        r = send_command(q, command, args_json, timeout_usec, fn, fast, userdata);
        if (r < 0)
                return qerr_set(err, r, "%s: cannot queue the command for %s: %s", command,
                                q->name, strerror(-r));
        return 0;
}

unsigned qmp_pending(const struct qmp *q) {
        unsigned n = 0;
        for (const struct pending *p = q ? q->pending : NULL; p; p = p->next)
                n++;
        return n;
}

/* ---- messages from QEMU ---------------------------------------------------------------- */

static unsigned get_small_uint(json_object *o, const char *key) {
        json_object *v;
        int64_t n;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return 0;
        n = json_object_get_int64(v);
        return n < 0 || n > 1000000 ? 0 : (unsigned) n;
}

static void on_capabilities(struct qmp *q, json_object *ret, const struct qmp_error *err,
                            void *userdata) {
        struct qmp_error e;

        if (q->state == STATE_CLOSED)
                return; /* transport failure: qmp_disconnect() reports it */
        if (err) {
                e = *err;
                ppn_error_prefix(&e.error, err->error.code, "QMP capabilities negotiation with %s failed",
                                 q->name);
                qmp_disconnect(q, &e);
                return;
        }
        q->state = STATE_READY;
        q->connect_timer = sd_event_source_disable_unref(q->connect_timer);
        log_debug("qmp %s: ready (QEMU %u.%u.%u)", q->name, q->version.major, q->version.minor,
                  q->version.micro);
        if (q->cb.ready)
                q->cb.ready(q, q->userdata);
}

static int on_greeting(struct qmp *q, json_object *msg, json_object *value,
                       struct qmp_error *reason) {
        json_object *version = NULL, *qemu = NULL;
        const char *package;
        int r;

        if (q->state != STATE_GREETING)
                return qerr_set(reason, -EPROTO, "QEMU on %s sent a second greeting", q->name);
        if (!json_object_is_type(value, json_type_object))
                return qerr_set(reason, -EPROTO, "QEMU on %s sent a malformed greeting", q->name);
        if (json_object_object_get_ex(value, "version", &version))
                json_object_object_get_ex(version, "qemu", &qemu);
        q->version = (struct qmp_version) { .major = get_small_uint(qemu, "major"),
                                            .minor = get_small_uint(qemu, "minor"),
                                            .micro = get_small_uint(qemu, "micro") };
        package = version ? json_member_string(version, "package") : NULL;
        snprintf(q->version.package, sizeof(q->version.package), "%s", package ?: "");
        q->have_version = true;
        q->state = STATE_NEGOTIATING;
        r = send_command(q, "qmp_capabilities", NULL, q->connect_timeout_usec, on_capabilities, NULL, NULL);
        if (r < 0)
                return qerr_set(reason, r, "cannot send qmp_capabilities to %s", q->name);
        return 0;
}

/* The stamp's seconds and microseconds as QEMU's wall clock in µs; 0 if out of range. */
static uint64_t stamp_usec(int64_t s, int64_t us) {
        if (s > 0 && s < INT64_MAX / (int64_t) USEC_PER_SEC && us >= 0 && us < (int64_t) USEC_PER_SEC)
                return (uint64_t) s * USEC_PER_SEC + (uint64_t) us;
        return 0;
}

static void timestamp_of(json_object *msg, uint64_t *ret_usec) {
        json_object *ts;

        *ret_usec = 0;
        if (!json_object_object_get_ex(msg, "timestamp", &ts))
                return;
        *ret_usec = stamp_usec(json_object_get_int64(json_object_object_get(ts, "seconds")),
                               json_object_get_int64(json_object_object_get(ts, "microseconds")));
}

/* Hands ev (its name and data filled in) to its handler, or to the catch-all. */
static void dispatch_event(struct qmp *q, struct qmp_event *ev) {
        qmp_event_fn fn = q->cb.event;
        void *userdata = q->userdata;

        ev->id = qmp_event_from_name(ev->name);
        if (ev->id != QMP_EVENT_UNKNOWN && q->handlers[ev->id].fn) {
                fn = q->handlers[ev->id].fn;
                userdata = q->handlers[ev->id].userdata;
        }
        if (fn)
                fn(q, ev, userdata);
}

static int on_event(struct qmp *q, json_object *msg, json_object *value,
                    struct qmp_error *reason) {
        struct qmp_event ev = { .name = json_object_get_string(value) };

        if (q->state == STATE_GREETING || !json_object_is_type(value, json_type_string))
                return qerr_set(reason, -EPROTO, "QEMU on %s sent a malformed event", q->name);
        json_object_object_get_ex(msg, "data", &ev.data);
        timestamp_of(msg, &ev.timestamp_usec);
        dispatch_event(q, &ev);
        return 0;
}

/* Finds and unlinks the command a reply answers. */
static int reply_pending(struct qmp *q, json_object *msg, struct pending **ret,
                         struct qmp_error *reason) {
        json_object *id;
        struct pending *p;

        if (q->state == STATE_GREETING)
                return qerr_set(reason, -EPROTO, "QEMU on %s replied before its greeting", q->name);
        if (!json_object_object_get_ex(msg, "id", &id) || !json_object_is_type(id, json_type_int))
                return qerr_set(reason, -EPROTO, "QEMU on %s sent a reply without an id", q->name);
        p = pending_take(q, json_object_get_uint64(id));
        if (!p)
                return qerr_set(reason, -EPROTO, "QEMU on %s replied to unknown command id %s",
                                q->name, json_object_get_string(id));
        *ret = p;
        return 0;
}

static int on_return(struct qmp *q, json_object *msg, json_object *value,
                     struct qmp_error *reason) {
        struct pending *p;
        int r = reply_pending(q, msg, &p, reason);

        if (r < 0)
                return r;
        pending_complete(q, p, value, NULL);
        return 0;
}

static int on_error_reply(struct qmp *q, json_object *msg, json_object *value,
                          struct qmp_error *reason) {
        const char *class = json_member_string(value, "class"), *desc = json_member_string(value, "desc");
        struct qmp_error e;
        struct pending *p;
        int r;

        if (!json_object_is_type(value, json_type_object) || !class)
                return qerr_set(reason, -EPROTO, "QEMU on %s sent a malformed error", q->name);
        if (!json_object_object_get_ex(msg, "id", NULL))
                /* QEMU could not even parse a command: we sent something broken. */
                return qerr_set(reason, -EPROTO, "QEMU on %s rejected a message: %s", q->name,
                                desc ?: class);
        r = reply_pending(q, msg, &p, reason);
        if (r < 0)
                return r;
        qerr_set(&e, class_to_errno(class), "%s on %s: %s (%s)", p->command, q->name,
                 desc ?: "no description", class);
        snprintf(e.class, sizeof(e.class), "%s", class);
        snprintf(e.desc, sizeof(e.desc), "%s", desc ?: "");
        pending_complete(q, p, NULL, &e);
        return 0;
}

static const struct {
        const char *key;
        int (*handle)(struct qmp *q, json_object *msg, json_object *value, struct qmp_error *reason);
} message_kinds[] = {
        { "QMP", on_greeting },
        { "event", on_event },
        { "return", on_return },
        { "error", on_error_reply },
};

static void handle_message(struct qmp *q, json_object *msg) {
        struct qmp_error reason;
        json_object *value;

        if (log_get_max_level() >= LOG_DEBUG)
                log_debug("qmp %s <- %s", q->name, json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
        if (!json_object_is_type(msg, json_type_object)) {
                qerr_set(&reason, -EPROTO, "QEMU on %s sent a JSON value that is not an object",
                         q->name);
                qmp_disconnect(q, &reason);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(message_kinds); i++) {
                if (!json_object_object_get_ex(msg, message_kinds[i].key, &value))
                        continue;
                if (message_kinds[i].handle(q, msg, value, &reason) < 0)
                        qmp_disconnect(q, &reason);
                return;
        }
        qerr_set(&reason, -EPROTO, "QEMU on %s sent a message that is neither greeting, event nor reply",
                 q->name);
        qmp_disconnect(q, &reason);
}

/* ---- reading --------------------------------------------------------------------------- */

static bool has_non_blank(const char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!strchr(" \t\r\n", p[i]))
                        return true;
        return false;
}

static void fail_oversized(struct qmp *q) {
        struct qmp_error e;
        qerr_set(&e, -EMSGSIZE, "QEMU on %s sent a message larger than %d bytes", q->name,
                 QMP_MESSAGE_MAX);
        qmp_disconnect(q, &e);
}

/*
 * The fast path for the replies sent every tick. At a message boundary, a plain success reply
 * {"return": VALUE, "id": N} (those two members only) that lies wholly in the buffer goes to
 * the command's qmp_fast_fn with VALUE's text, without json-c. QEMU writes the members in this
 * order and ends each message with "\r\n", so the id is read backwards from the end of the line
 * and VALUE is not scanned here: the decoder reads it, wholly and in the strict subset
 * (jsonutil.h), or declines; then the message is exactly {"return": VALUE, "id": N}. Anything
 * else (members in another order, no line end yet, a decoder that declines) returns 0 having
 * changed nothing: json-c then parses the same bytes and the message takes the general way.
 * Returns the bytes used (leading blanks and the line end included), or 0.
 */
static bool is_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Reads `, "id": N }` backwards from the last byte before the line end; *ret_end is where the
 * value before it ends. */
static bool id_before(const char *start, const char *e, uint64_t *ret_id, const char **ret_end) {
        const char *digits_end;

        while (e > start && is_blank(e[-1]))
                e--;
        if (e == start || *--e != '}')
                return false;
        while (e > start && is_blank(e[-1]))
                e--;
        digits_end = e;
        while (e > start && e[-1] >= '0' && e[-1] <= '9')
                e--;
        if (!json_scan_digits(e, digits_end, ret_id))
                return false;
        while (e > start && is_blank(e[-1]))
                e--;
        if (e == start || *--e != ':')
                return false;
        while (e > start && is_blank(e[-1]))
                e--;
        if (e - start < 4 || memcmp(e - 4, "\"id\"", 4) != 0)
                return false;
        e -= 4;
        while (e > start && is_blank(e[-1]))
                e--;
        if (e == start || *--e != ',')
                return false;
        while (e > start && is_blank(e[-1]))
                e--;
        *ret_end = e;
        return true;
}

static size_t fast_reply(struct qmp *q, const char *p, size_t n) {
        struct json_scan s = { p, p + n };
        const char *key, *value, *value_end, *nl;
        struct pending **where, *pd;
        bool first = true;
        uint64_t id;
        size_t len, used;

        if (q->state != STATE_READY || !json_scan_char(&s, '{') ||
            json_scan_member(&s, &first, &key, &len) != 1 || !json_scan_key_is(key, len, "return"))
                return 0;
        json_scan_ws(&s);
        value = s.p;
        nl = memchr(value, '\n', (size_t) (s.end - value));
        if (!nl || !id_before(value, nl, &id, &value_end) || value_end == value)
                return 0;
        used = (size_t) (nl + 1 - p);
        if (q->msg_bytes + used > QMP_MESSAGE_MAX)
                return 0;
        for (where = &q->pending; *where && (*where)->id != id; where = &(*where)->next)
                ;
        pd = *where;
        if (!pd || !pd->fast)
                return 0;
        if (log_get_max_level() >= LOG_DEBUG)
                log_debug("qmp %s <- %.*s", q->name, (int) (nl - p), p);
        /* Unlinked while it runs (it may free the client, which fails what is still pending);
         * a decoder that declines has done nothing, so the command goes back where it was. */
        *where = pd->next;
        if (pd->fast(q, value, (size_t) (value_end - value), pd->userdata) < 0) {
                pd->next = *where;
                *where = pd;
                return 0;
        }
        pending_free(pd);
        q->msg_bytes = 0;
        return used;
}

/*
 * The fast path for events, as for plain replies: BALLOON_CHANGE follows every move of a
 * balloon (at 2,000 VMs ~0.2 a VM and tick), and json-c took ~19,000 instructions for one
 * (callgrind, 500 VMs), the scanner and the objects for its data ~2,000. At a message boundary,
 * an event wholly on one line in QEMU's form
 *     {"timestamp": {"seconds": S, "microseconds": U}, "event": "NAME", "data": OBJECT}
 * (those members in that order, "data" optional, S and U numbers, OBJECT in the strict subset of
 * jsonutil.h) goes to its handler with the qmp_event json-c's way would give: the name, data
 * built as json-c objects (json_scan_object()), the stamp. Anything else returns 0 having
 * changed nothing, and the message takes the general way. Returns the bytes used.
 */
static size_t fast_event(struct qmp *q, const char *p, size_t n) {
        const char *nl = q->state == STATE_READY ? memchr(p, '\n', n) : NULL, *key, *name;
        struct json_scan s = { p, nl ? nl + 1 : p };
        bool first = true, inner = true;
        char name_buf[64];
        uint64_t sec, usec;
        size_t len, used;
        json_object *data = NULL;
        int k;

        if (!nl || !json_scan_char(&s, '{') ||
            json_scan_member(&s, &first, &key, &len) != 1 || !json_scan_key_is(key, len, "timestamp") ||
            !json_scan_char(&s, '{') ||
            json_scan_member(&s, &inner, &key, &len) != 1 || !json_scan_key_is(key, len, "seconds") ||
            !json_scan_uint(&s, &sec) ||
            json_scan_member(&s, &inner, &key, &len) != 1 || !json_scan_key_is(key, len, "microseconds") ||
            !json_scan_uint(&s, &usec) || json_scan_member(&s, &inner, &key, &len) != 0 ||
            json_scan_member(&s, &first, &key, &len) != 1 || !json_scan_key_is(key, len, "event") ||
            !json_scan_string(&s, &name, &len) || len >= sizeof(name_buf))
                return 0;
        memcpy(name_buf, name, len);
        name_buf[len] = '\0';
        k = json_scan_member(&s, &first, &key, &len);
        if (k == 1 && json_scan_key_is(key, len, "data") && (data = json_scan_object(&s)))
                k = json_scan_member(&s, &first, &key, &len);
        else if (k == 1)
                return 0;
        used = (size_t) (nl + 1 - p);
        if (k != 0 || !json_scan_end(&s) || q->msg_bytes + used > QMP_MESSAGE_MAX) {
                json_object_put(data);
                return 0;
        }
        if (log_get_max_level() >= LOG_DEBUG)
                log_debug("qmp %s <- %.*s", q->name, (int) (nl - p), p);
        /* json-c's number for the stamp: an int64, INT64_MAX for anything larger. */
        dispatch_event(q, &(struct qmp_event) {
                .name = name_buf, .data = data,
                .timestamp_usec = stamp_usec(sec > INT64_MAX ? INT64_MAX : (int64_t) sec,
                                             usec > INT64_MAX ? INT64_MAX : (int64_t) usec) });
        json_object_put(data);
        q->msg_bytes = 0;
        return used;
}

static bool all_blank(const char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!is_blank(p[i]))
                        return false;
        return true;
}

/* Feeds bytes to the tokener; every complete message is handled in order. Never feeds more
 * than one byte past QMP_MESSAGE_MAX, so a huge message costs at most that much memory. */
static void feed(struct qmp *q, const char *p, size_t n) {
        while (n > 0 && q->state != STATE_CLOSED) {
                if (!q->mid_message) {
                        size_t used = fast_reply(q, p, n) ?: fast_event(q, p, n);
                        if (used) {
                                p += used;
                                n -= used;
                                continue;
                        }
                        /* Blanks between messages: json-c would only skip them (the "\r\n"
                         * after a fast reply); counted toward the size limit all the same. */
                        if (all_blank(p, n) && q->msg_bytes + n <= QMP_MESSAGE_MAX) {
                                q->msg_bytes += n;
                                return;
                        }
                }
                size_t len = MIN(n, QMP_MESSAGE_MAX - q->msg_bytes + 1), used;
                json_object *msg = json_tokener_parse_ex(q->tok, p, (int) len);
                enum json_tokener_error jerr = json_tokener_get_error(q->tok);
                struct qmp_error e;

                used = json_tokener_get_parse_end(q->tok);
                if (!msg && jerr != json_tokener_continue) {
                        qerr_set(&e, -EPROTO, "QEMU on %s sent malformed JSON (%s, byte %zu of a message)",
                                 q->name, json_tokener_error_desc(jerr), q->msg_bytes + used);
                        qmp_disconnect(q, &e);
                        return;
                }
                if (q->msg_bytes + used > QMP_MESSAGE_MAX) {
                        json_object_put(msg);
                        fail_oversized(q);
                        return;
                }
                q->mid_message = q->mid_message || has_non_blank(p, used);
                q->msg_bytes += used;
                if (msg) {
                        q->msg_bytes = 0;
                        q->mid_message = false;
                        handle_message(q, msg);
                        json_object_put(msg);
                }
                p += used;
                n -= used;
        }
}

static void on_readable(struct qmp *q) {
        char buf[READ_CHUNK];
        struct qmp_error e;
        ssize_t n = read(q->fd, buf, sizeof(buf));

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n < 0 && errno != ECONNRESET) {
                qerr_set(&e, -errno, "reading from QEMU's monitor %s failed: %m", q->name);
                qmp_disconnect(q, &e);
                return;
        }
        /* ECONNRESET: QEMU exited with bytes of ours unread; for us that is EOF. */
        if (n <= 0) {
                if (q->mid_message)
                        qerr_set(&e, -ECONNRESET, "QEMU closed %s in the middle of a message (%zu bytes of it received)",
                                 q->name, q->msg_bytes);
                else
                        qerr_set(&e, -ECONNRESET, "QEMU closed %s (it exited or dropped the monitor)", q->name);
                qmp_disconnect(q, &e);
                return;
        }
        feed(q, buf, (size_t) n);
}

/* Called by the hub with a reference held; q may have been closed earlier in the batch. */
static void on_io(struct qmp *q, uint32_t revents) {
        if (q->state == STATE_CLOSED)
                return;
        if (revents & EPOLLOUT)
                on_writable(q);
        /* HUP/ERR: read() tells EOF or the error, after any data still queued. */
        if (q->state != STATE_CLOSED && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(q);
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct qmp *q = userdata;
        struct qmp_error e;

        qerr_set(&e, -ETIMEDOUT,
                 "no QMP %s from QEMU on %s within %" PRIu64 " ms (QEMU serves one QMP client at a time: is another one connected?)",
                 q->state == STATE_GREETING ? "greeting" : "capabilities answer", q->name,
                 q->connect_timeout_usec / USEC_PER_MSEC);
        qmp_disconnect(q, &e);
        return 0;
}

/* ---- connecting ------------------------------------------------------------------------ */

void qmp_set_callbacks(struct qmp *q, const struct qmp_callbacks *cb, void *userdata) {
        q->cb = cb ? *cb : (struct qmp_callbacks) { 0 };
        q->userdata = userdata;
}

static int attach(struct qmp *q, sd_event *e, uint64_t timeout_usec) {
        int r;

        q->event = sd_event_ref(e);
        q->connect_timeout_usec = timeout_usec ?: QMP_TIMEOUT_DEFAULT_USEC;
        q->tok = json_tokener_new();
        if (!q->tok)
                return -ENOMEM;
        /* Strict JSON, several messages per buffer, and UTF-8 checked. */
        json_tokener_set_flags(q->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                               JSON_TOKENER_VALIDATE_UTF8);
        r = hub_add(q);
        if (r < 0)
                return r;
        return sd_event_add_time_relative(e, &q->connect_timer, CLOCK_MONOTONIC,
                                          q->connect_timeout_usec, TIMER_ACCURACY_USEC,
                                          on_connect_timeout, q);
}

int qmp_open_fd(sd_event *e, int fd, const char *name, uint64_t timeout_usec,
                const struct qmp_callbacks *cb, void *userdata, struct qmp **ret,
                struct qmp_error *err) {
        struct qmp *q;
        int r, flags;

        if (!e || fd < 0 || !ret) {
                if (fd >= 0)
                        close(fd);
                return qerr_set(err, -EINVAL, "qmp_open_fd: invalid arguments");
        }
        q = calloc(1, sizeof(*q));
        if (!q || !(q->name = strdup(name ?: "QMP socket"))) {
                free(q);
                close(fd);
                return qerr_set(err, -ENOMEM, "out of memory");
        }
        q->n_ref = 1;
        q->fd = fd;
        q->next_id = 1;
        q->timer_slot = NO_SLOT;
        qmp_set_callbacks(q, cb, userdata);
        flags = fcntl(fd, F_GETFL);
        r = flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
        if (r >= 0)
                r = attach(q, e, timeout_usec);
        if (r < 0) {
                qerr_set(err, r, "cannot watch QMP socket %s: %s", q->name, strerror(-r));
                qmp_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

static const char *connect_hint(int error) {
        switch (error) {
        case ENOENT:
                return " (no such socket: is QEMU running with -qmp unix:PATH,server=on?)";
        case ECONNREFUSED:
                return " (nobody is listening: QEMU has exited or closed its monitor)";
        case EAGAIN:
                return " (QEMU's listen queue is full: try again)";
        default:
                return "";
        }
}

int qmp_connect(sd_event *e, const char *path, uint64_t timeout_usec,
                const struct qmp_callbacks *cb, void *userdata, struct qmp **ret,
                struct qmp_error *err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;

        if (!path || !*path)
                return qerr_set(err, -EINVAL, "no QMP socket path given");
        if (strlen(path) >= sizeof(sa.sun_path))
                return qerr_set(err, -ENAMETOOLONG, "QMP socket path %s is longer than %zu bytes",
                                path, sizeof(sa.sun_path) - 1);
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return qerr_set(err, -errno, "cannot create a socket for %s: %m", path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return qerr_set(err, -errno, "cannot connect to QMP socket %s: %m%s", path,
                                connect_hint(errno));
        return qmp_open_fd(e, TAKE_FD(fd), path, timeout_usec, cb, userdata, ret, err);
}

/* ---- queries --------------------------------------------------------------------------- */

const char *qmp_name(const struct qmp *q) { return q ? q->name : NULL; }

int qmp_call_with(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
                  qmp_reply_fn fn, const void *ctx, size_t size, struct qmp_error *err) {
        void *heap = malloc(size);
        int r;

        if (!heap) {
                json_object_put(args);
                return ppn_error_set(&err->error, -ENOMEM, "out of memory");
        }
        memcpy(heap, ctx, size);
        r = qmp_call(q, command, args, timeout_usec, fn, heap, err);
        if (r < 0)
                free(heap);
        return r;
}

json_object *qmp_qom_args(const char *device_id, const char *property, json_object *value) {
        char path[sizeof("/machine/peripheral/") + QMP_DEVICE_ID_MAX];
        json_object *a = json_object_new_object();

        snprintf(path, sizeof(path), "/machine/peripheral/%s", device_id);
        if (!a || json_object_object_add(a, "path", json_object_new_string(path)) < 0 ||
            json_object_object_add(a, "property", json_object_new_string(property)) < 0 ||
            (value && json_object_object_add(a, "value", value) < 0)) {
                json_object_put(a);
                return NULL;
        }
        return a;
}

void qmp_error_bad_reply(struct qmp *q, const char *command, struct qmp_error *e) {
        e->class[0] = e->desc[0] = '\0';
        ppn_error_prefix(&e->error, -EBADMSG, "%s on %s", command, qmp_name(q) ?: "QMP");
}
bool qmp_is_ready(const struct qmp *q) { return q && q->state == STATE_READY; }

int qmp_qemu_version(const struct qmp *q, struct qmp_version *ret) {
        if (!q || !q->have_version)
                return -ENODATA;
        *ret = q->version;
        return 0;
}

int qmp_peer_pid(const struct qmp *q, pid_t *ret_pid) {
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (!q || q->fd < 0)
                return -ENOTCONN;
        if (getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (cred.pid <= 0)
                return -ENODATA;
        *ret_pid = cred.pid;
        return 0;
}

/* ---- synchronous layer ----------------------------------------------------------------- */

struct sync_state {
        bool done;
        json_object *ret;
        struct qmp_error err;
};

static void sync_on_ready(struct qmp *q, void *userdata) {
        ((struct sync_state *) userdata)->done = true;
}

static void sync_on_disconnect(struct qmp *q, const struct qmp_error *reason, void *userdata) {
        struct sync_state *s = userdata;
        s->done = true;
        s->err = *reason;
}

static void sync_on_reply(struct qmp *q, json_object *ret, const struct qmp_error *err,
                          void *userdata) {
        struct sync_state *s = userdata;
        s->done = true;
        if (err)
                s->err = *err;
        else
                s->ret = json_object_get(ret);
}

/* Runs q's loop until *done. A failing loop ends the connection, which sets *done. */
static void run_until(struct qmp *q, const bool *done) {
        while (!*done) {
                int r = sd_event_run(q->event, UINT64_MAX);
                if (r < 0) {
                        struct qmp_error e;
                        qerr_set(&e, r, "the event loop of %s failed: %s", q->name, strerror(-r));
                        qmp_disconnect(q, &e);
                        return;
                }
        }
}

int qmp_connect_sync(const char *path, uint64_t timeout_usec, struct qmp **ret,
                     struct qmp_error *err) {
        static const struct qmp_callbacks cb = { .ready = sync_on_ready,
                                                 .disconnected = sync_on_disconnect };
        struct sync_state s = { 0 };
        sd_event *e = NULL;
        struct qmp *q = NULL;
        int r;

        r = sd_event_new(&e);
        if (r < 0)
                return qerr_set(err, r, "cannot create an event loop: %s", strerror(-r));
        r = qmp_connect(e, path, timeout_usec, &cb, &s, &q, err);
        sd_event_unref(e); /* q holds its own reference */
        if (r < 0)
                return r;
        run_until(q, &s.done);
        qmp_set_callbacks(q, NULL, NULL);
        if (!qmp_is_ready(q)) {
                if (err)
                        *err = s.err;
                qmp_free(q);
                return s.err.error.code ?: -EIO;
        }
        *ret = q;
        return 0;
}

int qmp_call_sync(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
                  json_object **ret_reply, struct qmp_error *err) {
        const char *text = args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : NULL;
        int r;

        if (args && !text) {
                json_object_put(args);
                return qerr_set(err, -ENOMEM, "%s: out of memory", command ?: "QMP");
        }
        r = qmp_call_sync_text(q, command, text, timeout_usec, ret_reply, err);
        json_object_put(args);
        return r;
}

int qmp_call_sync_text(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                       json_object **ret_reply, struct qmp_error *err) {
        struct sync_state s = { 0 };
        int r;

        if (q && sd_event_get_state(q->event) != SD_EVENT_INITIAL)
                return qerr_set(err, -EBUSY, "%s: qmp_call_sync() on %s from inside its event loop",
                                command, q->name);
        r = qmp_call_text(q, command, args_json, timeout_usec, sync_on_reply, &s, err);
        if (r < 0)
                return r;
        run_until(q, &s.done);
        if (!s.ret) {
                if (err)
                        *err = s.err;
                return s.err.error.code ?: -EIO;
        }
        if (ret_reply)
                *ret_reply = s.ret;
        else
                json_object_put(s.ret);
        return 0;
}
