/* SPDX-License-Identifier: Apache-2.0 */
#include "virtlink.h"

#include <ctype.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "cgroup.h"
#include "log.h"

/* libvirt, loaded at the first link or listing (dl_load(), util.h), not at program start: the
 * commands and daemons that never meet libvirt do not pay for loading it and what it pulls in. */
static struct {
        __typeof__(virEventUpdateTimeout) *virEventUpdateTimeout;
        __typeof__(virDomainGetName) *virDomainGetName;
        __typeof__(virConnectClose) *virConnectClose;
        __typeof__(virTypedParamsClear) *virTypedParamsClear;
        __typeof__(virDomainMemoryStats) *virDomainMemoryStats;
        __typeof__(virDomainGetSchedulerType) *virDomainGetSchedulerType;
        __typeof__(virDomainGetSchedulerParametersFlags) *virDomainGetSchedulerParametersFlags;
        __typeof__(virDomainFree) *virDomainFree;
        __typeof__(virConnectOpen) *virConnectOpen;
        __typeof__(virConnectDomainEventRegisterAny) *virConnectDomainEventRegisterAny;
        __typeof__(virConnectDomainEventDeregisterAny) *virConnectDomainEventDeregisterAny;
        __typeof__(virSetErrorFunc) *virSetErrorFunc;
        __typeof__(virInitialize) *virInitialize;
        __typeof__(virGetLastErrorMessage) *virGetLastErrorMessage;
        __typeof__(virEventRunDefaultImpl) *virEventRunDefaultImpl;
        __typeof__(virEventRemoveTimeout) *virEventRemoveTimeout;
        __typeof__(virEventRemoveHandle) *virEventRemoveHandle;
        __typeof__(virEventRegisterDefaultImpl) *virEventRegisterDefaultImpl;
        __typeof__(virEventAddTimeout) *virEventAddTimeout;
        __typeof__(virEventAddHandle) *virEventAddHandle;
        __typeof__(virDomainSetSchedulerParametersFlags) *virDomainSetSchedulerParametersFlags;
        __typeof__(virDomainSetMemoryStatsPeriod) *virDomainSetMemoryStatsPeriod;
        __typeof__(virDomainSetMemoryFlags) *virDomainSetMemoryFlags;
        __typeof__(virDomainLookupByName) *virDomainLookupByName;
        __typeof__(virDomainGetState) *virDomainGetState;
        __typeof__(virDomainGetInfo) *virDomainGetInfo;
        __typeof__(virConnectUnregisterCloseCallback) *virConnectUnregisterCloseCallback;
        __typeof__(virConnectSetKeepAlive) *virConnectSetKeepAlive;
        __typeof__(virConnectRegisterCloseCallback) *virConnectRegisterCloseCallback;
        __typeof__(virConnectListAllDomains) *virConnectListAllDomains;
} lv;

static int libvirt_load(struct ppn_error *err) {
        const struct dl_symbol syms[] = {
                DL_SYMBOL(&lv, virEventUpdateTimeout),
                DL_SYMBOL(&lv, virDomainGetName),
                DL_SYMBOL(&lv, virConnectClose),
                DL_SYMBOL(&lv, virTypedParamsClear),
                DL_SYMBOL(&lv, virDomainMemoryStats),
                DL_SYMBOL(&lv, virDomainGetSchedulerType),
                DL_SYMBOL(&lv, virDomainGetSchedulerParametersFlags),
                DL_SYMBOL(&lv, virDomainFree),
                DL_SYMBOL(&lv, virConnectOpen),
                DL_SYMBOL(&lv, virConnectDomainEventRegisterAny),
                DL_SYMBOL(&lv, virConnectDomainEventDeregisterAny),
                DL_SYMBOL(&lv, virSetErrorFunc),
                DL_SYMBOL(&lv, virInitialize),
                DL_SYMBOL(&lv, virGetLastErrorMessage),
                DL_SYMBOL(&lv, virEventRunDefaultImpl),
                DL_SYMBOL(&lv, virEventRemoveTimeout),
                DL_SYMBOL(&lv, virEventRemoveHandle),
                DL_SYMBOL(&lv, virEventRegisterDefaultImpl),
                DL_SYMBOL(&lv, virEventAddTimeout),
                DL_SYMBOL(&lv, virEventAddHandle),
                DL_SYMBOL(&lv, virDomainSetSchedulerParametersFlags),
                DL_SYMBOL(&lv, virDomainSetMemoryStatsPeriod),
                DL_SYMBOL(&lv, virDomainSetMemoryFlags),
                DL_SYMBOL(&lv, virDomainLookupByName),
                DL_SYMBOL(&lv, virDomainGetState),
                DL_SYMBOL(&lv, virDomainGetInfo),
                DL_SYMBOL(&lv, virConnectUnregisterCloseCallback),
                DL_SYMBOL(&lv, virConnectSetKeepAlive),
                DL_SYMBOL(&lv, virConnectRegisterCloseCallback),
                DL_SYMBOL(&lv, virConnectListAllDomains),
        };

        return dl_load(PPN_LIBVIRT_SONAME, syms, ELEMENTSOF(syms), err);
}


/* While libvirtd is away the thread tries again this often. */
#define RECONNECT_MSEC 1000
/* Keepalive: an idle connection to a libvirtd that stops answering is dropped after 3 × 2 s. */
#define KEEPALIVE_SEC 2
#define KEEPALIVE_COUNT 3
/* A call in flight this long: libvirtd is not answering (a call blocked in libvirt is not cut
 * short by keepalive, measured). Its domains are shown absent until it answers again. libvirt's
 * own limit on waiting for a busy QEMU monitor is 30 s; a slow answer only costs a re-adoption. */
#define STALL_USEC (10 * USEC_PER_SEC)

/* ---- the two queues between the daemon's loop and the libvirt thread ---- */

enum job_kind { JOB_LOOKUP, JOB_SAMPLE, JOB_SET_MEM, JOB_SET_SHARES };

struct job {
        struct job *next;
        enum job_kind kind;
        uint64_t link_id;
        char *domain;
        uint64_t value;         /* LOOKUP: stats period (s); SET_MEM: KiB; SET_SHARES: cpu_shares */
};

enum msg_kind {
        MSG_CONNECTED,
        MSG_DISCONNECTED,       /* text: why */
        MSG_LOOKUP,             /* rc 0: running, sample; rc < 0: absent, text */
        MSG_SAMPLE,             /* rc 0: sample; rc < 0: text */
        MSG_FAILED,             /* a set call failed: text */
        MSG_SHARES,             /* value: cpu_shares read back */
        MSG_STARTED,            /* domain event */
        MSG_STOPPED,            /* domain event; text: why */
        MSG_BALLOON,            /* domain event; value: actual KiB */
};

struct msg {
        struct msg *next;
        enum msg_kind kind;
        uint64_t link_id;
        char *domain;
        int rc;
        uint64_t value;
        struct vmlink_sample sample;
        char text[256];
};

struct virtconn {
        unsigned n_ref;
        char *uri;
        sd_event *event;
        sd_event_source *reply_source;
        int job_fd, reply_fd;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        struct job *jobs, **jobs_tail;          /* under lock */
        struct msg *msgs, **msgs_tail;          /* under lock */
        bool stop;                              /* under lock */
        uint64_t busy_since;                    /* under lock: a call in flight since, 0 = idle */
        enum job_kind busy_kind;                /* under lock: that call's job */
        /* The libvirt thread's own. */
        virConnectPtr conn;
        int cb_lifecycle, cb_balloon;
        int job_watch, retry_timer;
        bool lost;
        /* The daemon loop's own. */
        struct virtlink *links;
        bool connected;
        bool stalled;                           /* a call has hung for STALL_USEC */
        char why[256];
};

struct virtlink {
        struct virtlink *next;
        struct virtconn *c;
        uint64_t id;
        char *name, *domain;
        struct vmlink_options opts;
        struct virtlink_callbacks cb;
        void *userdata;
        enum vmlink_state state;
        struct vmlink_sample last;
        bool sampling;
        uint32_t weight;                /* ledger weight to apply; 0 = none */
        char why[512];
};

/* libvirt's event loop is process-wide and runs on one thread: one connection at a time. */
static struct virtconn *the_conn;
static uint64_t next_link_id = 1;

static void virtconn_unref(struct virtconn *c);

static void wake(int fd) {
        uint64_t one = 1;
        (void) !write(fd, &one, sizeof(one));
}

static void drain(int fd) {
        uint64_t n;
        (void) !read(fd, &n, sizeof(n));
}

static void job_free(struct job *j) {
        free(j->domain);
        free(j);
}

static void msg_free(struct msg *m) {
        free(m->domain);
        free(m);
}

/* Daemon loop -> thread. Out of memory drops the job: the next round asks again. */
static void post_job(struct virtconn *c, enum job_kind kind, uint64_t link_id, const char *domain, uint64_t value) {
        struct job *j = calloc(1, sizeof(*j));

        if (!j || !(j->domain = strdup(domain))) {
                free(j);
                return;
        }
        j->kind = kind;
        j->link_id = link_id;
        j->value = value;
        pthread_mutex_lock(&c->lock);
        *c->jobs_tail = j;
        c->jobs_tail = &j->next;
        pthread_mutex_unlock(&c->lock);
        wake(c->job_fd);
}

/* Thread -> daemon loop. */
static struct msg *msg_new(enum msg_kind kind, uint64_t link_id, const char *domain) {
        struct msg *m = calloc(1, sizeof(*m));

        if (!m)
                return NULL;
        if (domain && !(m->domain = strdup(domain))) {
                free(m);
                return NULL;
        }
        m->kind = kind;
        m->link_id = link_id;
        return m;
}

static void post_msg(struct virtconn *c, struct msg *m) {
        if (!m)
                return;
        pthread_mutex_lock(&c->lock);
        *c->msgs_tail = m;
        c->msgs_tail = &m->next;
        pthread_mutex_unlock(&c->lock);
        wake(c->reply_fd);
}

static void post_text(struct virtconn *c, enum msg_kind kind, uint64_t link_id, const char *domain, int rc,
                      const char *fmt, ...) _printf_(6, 7);
static void post_text(struct virtconn *c, enum msg_kind kind, uint64_t link_id, const char *domain, int rc,
                      const char *fmt, ...) {
        struct msg *m = msg_new(kind, link_id, domain);
        va_list ap;

        if (!m)
                return;
        m->rc = rc;
        va_start(ap, fmt);
        vsnprintf(m->text, sizeof(m->text), fmt, ap);
        va_end(ap);
        post_msg(c, m);
}

/* ---- the libvirt thread ---- */

static const char *last_error(void) {
        const char *s = lv.virGetLastErrorMessage();
        return s ? s : "unknown libvirt error";
}

/* Turns libvirt's memory statistics (KiB, as libvirt reports them) into a vmlink sample (bytes). */
static void sample_from_stats(const virDomainMemoryStatStruct *st, int n, struct vmlink_sample *s) {
        uint64_t now = now_usec();

        *s = (struct vmlink_sample) {
                .available = VMLINK_STAT_UNKNOWN, .free = VMLINK_STAT_UNKNOWN, .total = VMLINK_STAT_UNKNOWN,
                .swap_in = VMLINK_STAT_UNKNOWN, .swap_out = VMLINK_STAT_UNKNOWN, .major_faults = VMLINK_STAT_UNKNOWN,
        };
        for (int i = 0; i < n; i++) {
                uint64_t v = st[i].val;
                switch (st[i].tag) {
                case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON:
                        s->balloon = true;
                        s->actual = v * 1024;
                        s->actual_usec = now;
                        break;
                case VIR_DOMAIN_MEMORY_STAT_USABLE: s->available = v * 1024; break;
                case VIR_DOMAIN_MEMORY_STAT_UNUSED: s->free = v * 1024; break;
                case VIR_DOMAIN_MEMORY_STAT_AVAILABLE: s->total = v * 1024; break;
                case VIR_DOMAIN_MEMORY_STAT_SWAP_IN: s->swap_in = v * 1024; break;
                case VIR_DOMAIN_MEMORY_STAT_SWAP_OUT: s->swap_out = v * 1024; break;
                case VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT: s->major_faults = v; break;
                case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE:
                        s->stats_update_sec = v;
                        s->stats_usec = v ? now : 0;
                        break;
                default:
                        break;
                }
        }
}

static int read_sample(virDomainPtr dom, struct vmlink_sample *ret) {
        virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
        int n = lv.virDomainMemoryStats(dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);

        if (n < 0)
                return -EIO;
        sample_from_stats(st, n, ret);
        return 0;
}

/* A reply carrying a sample, or why there is none. */
static void post_sample(struct virtconn *c, enum msg_kind kind, virDomainPtr dom, const struct job *j) {
        struct msg *m = msg_new(kind, j->link_id, j->domain);

        if (!m)
                return;
        if (read_sample(dom, &m->sample) < 0) {
                m->rc = -EIO;
                snprintf(m->text, sizeof(m->text), "domain '%s': memory statistics: %s", j->domain, last_error());
        }
        post_msg(c, m);
}

static void do_lookup(struct virtconn *c, virDomainPtr dom, const struct job *j) {
        int state = 0, reason = 0;

        if (lv.virDomainGetState(dom, &state, &reason, 0) < 0) {
                post_text(c, MSG_LOOKUP, j->link_id, j->domain, -EIO, "domain '%s': %s", j->domain, last_error());
                return;
        }
        if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED) {
                post_text(c, MSG_LOOKUP, j->link_id, j->domain, -ENOENT, "domain '%s' is not running", j->domain);
                return;
        }
        /* Guest statistics are off unless a period is set (QEMU's guest-stats-polling-interval). */
        if (lv.virDomainSetMemoryStatsPeriod(dom, (int) j->value, VIR_DOMAIN_AFFECT_LIVE) < 0)
                log_debug("domain '%s': cannot set the statistics period: %s", j->domain, last_error());
        post_sample(c, MSG_LOOKUP, dom, j);
}

static void do_sample(struct virtconn *c, virDomainPtr dom, const struct job *j) {
        post_sample(c, MSG_SAMPLE, dom, j);
}

static void do_set_mem(struct virtconn *c, virDomainPtr dom, const struct job *j) {
        if (lv.virDomainSetMemoryFlags(dom, j->value, VIR_DOMAIN_AFFECT_LIVE) < 0)
                post_text(c, MSG_FAILED, j->link_id, j->domain, -EIO, "setting the balloon of domain '%s' to %"
                          PRIu64 " KiB: %s", j->domain, j->value, last_error());
}

static void do_set_shares(struct virtconn *c, virDomainPtr dom, const struct job *j) {
        virTypedParameter set = { .field = VIR_DOMAIN_SCHEDULER_CPU_SHARES, .type = VIR_TYPED_PARAM_ULLONG,
                                  .value.ul = j->value };
        virTypedParameterPtr got = NULL;
        int n = 0;
        struct msg *m;

        if (lv.virDomainSetSchedulerParametersFlags(dom, &set, 1, VIR_DOMAIN_AFFECT_LIVE) < 0) {
                post_text(c, MSG_FAILED, j->link_id, j->domain, -EIO, "setting cpu_shares %" PRIu64
                          " on domain '%s': %s", j->value, j->domain, last_error());
                return;
        }
        m = msg_new(MSG_SHARES, j->link_id, j->domain);
        if (!m)
                return;
        m->value = UINT64_MAX;
        /* Read back what libvirt holds now (its view of the kernel value). */
        free(lv.virDomainGetSchedulerType(dom, &n));
        if (n > 0 && (got = calloc((size_t) n, sizeof(*got))) &&
            lv.virDomainGetSchedulerParametersFlags(dom, got, &n, VIR_DOMAIN_AFFECT_LIVE) == 0) {
                for (int i = 0; i < n; i++)
                        if (strcmp(got[i].field, VIR_DOMAIN_SCHEDULER_CPU_SHARES) == 0)
                                m->value = got[i].value.ul;
                lv.virTypedParamsClear(got, n);
        }
        free(got);
        post_msg(c, m);
}

static void run_job(struct virtconn *c, const struct job *j) {
        virDomainPtr dom;

        if (!c->conn || c->lost) {
                if (j->kind == JOB_LOOKUP || j->kind == JOB_SAMPLE)
                        post_text(c, j->kind == JOB_LOOKUP ? MSG_LOOKUP : MSG_SAMPLE, j->link_id, j->domain,
                                  -ENOTCONN, "not connected to libvirtd");
                return;
        }
        dom = lv.virDomainLookupByName(c->conn, j->domain);
        if (!dom) {
                if (j->kind == JOB_LOOKUP || j->kind == JOB_SAMPLE)
                        post_text(c, j->kind == JOB_LOOKUP ? MSG_LOOKUP : MSG_SAMPLE, j->link_id, j->domain,
                                  -ENOENT, "no domain '%s' in libvirt: %s", j->domain, last_error());
                return;
        }
        switch (j->kind) {
        case JOB_LOOKUP: do_lookup(c, dom, j); break;
        case JOB_SAMPLE: do_sample(c, dom, j); break;
        case JOB_SET_MEM: do_set_mem(c, dom, j); break;
        case JOB_SET_SHARES: do_set_shares(c, dom, j); break;
        }
        lv.virDomainFree(dom);
}

static void on_jobs(int watch, int fd, int events, void *opaque) {
        struct virtconn *c = opaque;
        struct job *list;

        drain(fd);
        pthread_mutex_lock(&c->lock);
        list = c->jobs;
        c->jobs = NULL;
        c->jobs_tail = &c->jobs;
        pthread_mutex_unlock(&c->lock);
        while (list) {
                struct job *j = list;
                list = j->next;
                pthread_mutex_lock(&c->lock);
                c->busy_since = now_usec();
                c->busy_kind = j->kind;
                pthread_mutex_unlock(&c->lock);
                run_job(c, j);
                pthread_mutex_lock(&c->lock);
                c->busy_since = 0;
                pthread_mutex_unlock(&c->lock);
                job_free(j);
        }
        /* The end of the calls is news to the daemon loop even when no reply is posted (a balloon
         * set that succeeds posts none): a loop that saw them hang ends the stall on this wake. */
        wake(c->reply_fd);
}

static const char *stopped_why(int detail) {
        switch (detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "domain shut down";
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "domain destroyed";
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "domain crashed";
        case VIR_DOMAIN_EVENT_STOPPED_MIGRATED: return "domain migrated away";
        case VIR_DOMAIN_EVENT_STOPPED_SAVED: return "domain saved";
        case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "domain failed (QEMU exited)";
        default: return "domain stopped";
        }
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque) {
        struct virtconn *c = opaque;
        const char *name = lv.virDomainGetName(dom);

        if (!name)
                return 0;
        if (event == VIR_DOMAIN_EVENT_STARTED || event == VIR_DOMAIN_EVENT_RESUMED)
                post_msg(c, msg_new(MSG_STARTED, 0, name));
        else if (event == VIR_DOMAIN_EVENT_STOPPED)
                post_text(c, MSG_STOPPED, 0, name, -ENOENT, "%s (libvirt event)", stopped_why(detail));
        else if (event == VIR_DOMAIN_EVENT_CRASHED)
                post_text(c, MSG_STOPPED, 0, name, -ENOENT, "domain crashed (libvirt event)");
        return 0;
}

static int on_balloon(virConnectPtr conn, virDomainPtr dom, unsigned long long actual, void *opaque) {
        struct virtconn *c = opaque;
        const char *name = lv.virDomainGetName(dom);
        struct msg *m = name ? msg_new(MSG_BALLOON, 0, name) : NULL;

        if (m) {
                m->value = actual;
                post_msg(c, m);
        }
        return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque) {
        struct virtconn *c = opaque;
        static const char *const reasons[] = {
                [VIR_CONNECT_CLOSE_REASON_ERROR] = "connection error",
                [VIR_CONNECT_CLOSE_REASON_EOF] = "libvirtd closed the connection",
                [VIR_CONNECT_CLOSE_REASON_KEEPALIVE] = "libvirtd stopped answering keepalives",
                [VIR_CONNECT_CLOSE_REASON_CLIENT] = "closed by ppnd",
        };

        if (reason == VIR_CONNECT_CLOSE_REASON_CLIENT)
                return;
        /* Not from inside libvirt's callback: the retry timer drops the connection and reconnects. */
        c->lost = true;
        post_text(c, MSG_DISCONNECTED, 0, NULL, -ECONNRESET, "%s",
                  reason >= 0 && (size_t) reason < ELEMENTSOF(reasons) && reasons[reason] ? reasons[reason]
                                                                                          : "connection closed");
        lv.virEventUpdateTimeout(c->retry_timer, 0);
}

static void drop_conn(struct virtconn *c) {
        if (!c->conn)
                return;
        if (c->cb_lifecycle >= 0)
                lv.virConnectDomainEventDeregisterAny(c->conn, c->cb_lifecycle);
        if (c->cb_balloon >= 0)
                lv.virConnectDomainEventDeregisterAny(c->conn, c->cb_balloon);
        lv.virConnectUnregisterCloseCallback(c->conn, on_close);
        lv.virConnectClose(c->conn);
        c->conn = NULL;
        c->cb_lifecycle = c->cb_balloon = -1;
}

static int try_connect(struct virtconn *c) {
        c->conn = lv.virConnectOpen(c->uri);
        if (!c->conn) {
                post_text(c, MSG_DISCONNECTED, 0, NULL, -ECONNREFUSED, "cannot connect to %s: %s", c->uri, last_error());
                return -ECONNREFUSED;
        }
        c->lost = false;
        if (lv.virConnectRegisterCloseCallback(c->conn, on_close, c, NULL) < 0 ||
            lv.virConnectSetKeepAlive(c->conn, KEEPALIVE_SEC, KEEPALIVE_COUNT) < 0 ||
            (c->cb_lifecycle = lv.virConnectDomainEventRegisterAny(c->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                                VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), c, NULL)) < 0 ||
            (c->cb_balloon = lv.virConnectDomainEventRegisterAny(c->conn, NULL, VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE,
                                                              VIR_DOMAIN_EVENT_CALLBACK(on_balloon), c, NULL)) < 0) {
                post_text(c, MSG_DISCONNECTED, 0, NULL, -EIO, "connected to %s but cannot register for events: %s",
                          c->uri, last_error());
                drop_conn(c);
                return -EIO;
        }
        post_msg(c, msg_new(MSG_CONNECTED, 0, NULL));
        return 0;
}

static void on_retry(int timer, void *opaque) {
        struct virtconn *c = opaque;

        if (c->lost)
                drop_conn(c);
        if (!c->conn && try_connect(c) < 0) {
                lv.virEventUpdateTimeout(timer, RECONNECT_MSEC);
                return;
        }
        lv.virEventUpdateTimeout(timer, -1);
}

static bool stopping(struct virtconn *c) {
        bool s;

        pthread_mutex_lock(&c->lock);
        s = c->stop;
        pthread_mutex_unlock(&c->lock);
        return s;
}

static void *thread_main(void *p) {
        struct virtconn *c = p;

        c->job_watch = lv.virEventAddHandle(c->job_fd, VIR_EVENT_HANDLE_READABLE, on_jobs, c, NULL);
        c->retry_timer = lv.virEventAddTimeout(0, on_retry, c, NULL);
        while (!stopping(c))
                if (lv.virEventRunDefaultImpl() < 0)
                        break;
        drop_conn(c);
        if (c->job_watch >= 0)
                lv.virEventRemoveHandle(c->job_watch);
        if (c->retry_timer >= 0)
                lv.virEventRemoveTimeout(c->retry_timer);
        /* libvirt's loop forgets removed entries at the start of its next turn (a later connection's). */
        return NULL;
}

/* ---- the daemon loop's side ---- */

static void silent(void *userdata, virErrorPtr e) {
        /* libvirt prints every error to stderr by default; the caller reports what matters. */
}

static pthread_once_t libvirt_once = PTHREAD_ONCE_INIT;
static int libvirt_init_r;
static struct ppn_error libvirt_load_err;

static void libvirt_init(void) {
        libvirt_init_r = libvirt_load(&libvirt_load_err);
        if (libvirt_init_r < 0)
                return;
        lv.virSetErrorFunc(NULL, silent);
        libvirt_init_r = lv.virInitialize() < 0 || lv.virEventRegisterDefaultImpl() < 0 ? -EIO : 0;
}

static void set_state(struct virtlink *l, enum vmlink_state s, const char *fmt, ...) _printf_(3, 4);
static void set_state(struct virtlink *l, enum vmlink_state s, const char *fmt, ...) {
        enum vmlink_state old = l->state;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(l->why, sizeof(l->why), fmt, ap);
        va_end(ap);
        l->state = s;
        if (s != VMLINK_RUNNING) {
                l->last.actual_usec = 0;
                l->last.stats_usec = 0;
        }
        if (old != s && l->cb.state_changed)
                l->cb.state_changed(l, old, l->why, l->userdata);
}

/* A round in flight ends when the link leaves RUNNING, so the manager's round is not held up. */
static void end_sampling(struct virtlink *l) {
        if (!l->sampling)
                return;
        l->sampling = false;
        if (l->cb.sampled)
                l->cb.sampled(l, l->userdata);
}

static void lookup(struct virtlink *l) {
        if (!l->c || !l->c->connected || l->c->stalled)
                return;
        if (l->state == VMLINK_ABSENT)
                set_state(l, VMLINK_CONNECTING, "looking up domain '%s' in libvirt", l->domain);
        post_job(l->c, JOB_LOOKUP, l->id, l->domain, l->opts.stats_interval_sec ? l->opts.stats_interval_sec : 1);
}

bool virtlink_cpu_on_cgroup_v2(void) {
        struct ppn_cgroup_layout layout;
        _cleanup_close_ int fd = open("/sys/fs/cgroup", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        return fd >= 0 && ppn_cgroup_detect(fd, "/sys/fs/cgroup", true, &layout, NULL) == 0 &&
               layout.mode == PPN_CGROUP_V2;
}

static void apply_weight(struct virtlink *l) {
        if (l->weight && l->state == VMLINK_RUNNING)
                post_job(l->c, JOB_SET_SHARES, l->id, l->domain,
                         virtlink_shares_for_weight(l->weight, virtlink_cpu_on_cgroup_v2()));
}

static struct virtlink *find_link(struct virtconn *c, uint64_t id) {
        for (struct virtlink *l = c->links; l; l = l->next)
                if (l->id == id)
                        return l;
        return NULL;
}

static void on_lookup_reply(struct virtlink *l, const struct msg *m) {
        if (m->rc < 0) {
                set_state(l, VMLINK_ABSENT, "%s; waiting for libvirt to start it", m->text);
                return;
        }
        l->last = m->sample;
        set_state(l, VMLINK_RUNNING, "domain '%s' running under libvirt (%s)%s", l->domain, l->c->uri,
                  m->sample.balloon ? "" : "; no balloon device");
        apply_weight(l);
}

static void on_sample_reply(struct virtlink *l, const struct msg *m) {
        if (m->rc == 0 && l->state == VMLINK_RUNNING) {
                l->last = m->sample;
        } else if (m->rc < 0) {
                log_debug("%s: %s", l->name, m->text);
                if (l->cb.error)
                        l->cb.error(l, m->rc == -ENOTCONN ? "transport" : "libvirt", l->userdata);
                if (m->rc == -ENOENT && l->state == VMLINK_RUNNING)
                        set_state(l, VMLINK_ABSENT, "%s", m->text);
        }
        end_sampling(l);
}

static void dispatch_link(struct virtlink *l, const struct msg *m) {
        switch (m->kind) {
        case MSG_LOOKUP:
                on_lookup_reply(l, m);
                break;
        case MSG_SAMPLE:
                on_sample_reply(l, m);
                break;
        case MSG_FAILED:
                log_warning("%s: %s", l->name, m->text);
                if (l->cb.error)
                        l->cb.error(l, "libvirt", l->userdata);
                break;
        case MSG_SHARES:
                log_info("%s: domain '%s' cpu_shares now %" PRIu64 " (ledger weight %u)", l->name, l->domain,
                         m->value, l->weight);
                break;
        default:
                break;
        }
}

static void dispatch_domain(struct virtlink *l, const struct msg *m) {
        if (strcmp(l->domain, m->domain) != 0)
                return;
        if (m->kind == MSG_STARTED && l->state != VMLINK_RUNNING)
                lookup(l);
        else if (m->kind == MSG_STOPPED && l->state != VMLINK_ABSENT) {
                end_sampling(l);
                set_state(l, VMLINK_ABSENT, "%s; waiting for libvirt to start it again", m->text);
        } else if (m->kind == MSG_BALLOON && l->state == VMLINK_RUNNING) {
                /* A balloon that moved: ours, or someone's `virsh setmem`; the policy tells them apart. */
                l->last.actual = m->value * 1024;
                l->last.actual_usec = now_usec();
                l->last.balloon = true;
        }
}

static void dispatch(struct virtconn *c, const struct msg *m) {
        struct virtlink *next;

        if (m->kind == MSG_CONNECTED || m->kind == MSG_DISCONNECTED) {
                const char *why = m->kind == MSG_CONNECTED ? "connected" : m->text;
                /* Said once per change, not once per retry while libvirtd is away. */
                if (m->kind == MSG_CONNECTED)
                        log_info("libvirt: connected to %s", c->uri);
                else if (c->connected || strcmp(c->why, why) != 0)
                        log_warning("libvirt: %s; reconnecting every %d ms", m->text, RECONNECT_MSEC);
                c->connected = m->kind == MSG_CONNECTED;
                snprintf(c->why, sizeof(c->why), "%s", why);
        }
        /* Callbacks may free links: take the next one first. */
        for (struct virtlink *l = c->links; l; l = next) {
                next = l->next;
                if (m->kind == MSG_CONNECTED)
                        lookup(l);
                else if (m->kind == MSG_DISCONNECTED) {
                        end_sampling(l);
                        if (l->state != VMLINK_ABSENT)
                                set_state(l, VMLINK_ABSENT, "libvirt at %s: %s; reconnecting", c->uri, m->text);
                        else
                                snprintf(l->why, sizeof(l->why), "libvirt at %s: %.200s; reconnecting", c->uri, m->text);
                } else if (m->domain && m->link_id == 0)
                        dispatch_domain(l, m);
        }
        if (m->link_id) {
                struct virtlink *l = find_link(c, m->link_id);
                if (l)
                        dispatch_link(l, m);
        }
}

static uint64_t busy_since(struct virtconn *c, enum job_kind *kind) {
        uint64_t t;

        pthread_mutex_lock(&c->lock);
        t = c->busy_since;
        if (kind)
                *kind = c->busy_kind;
        pthread_mutex_unlock(&c->lock);
        return t;
}

static const char *job_name(enum job_kind k) {
        switch (k) {
        case JOB_LOOKUP: return "domain lookup";
        case JOB_SAMPLE: return "memory statistics";
        case JOB_SET_MEM: return "balloon set";
        case JOB_SET_SHARES: return "cpu_shares set";
        }
        return "libvirt";
}

/* A hung call: every domain absent (held where it is) until libvirtd answers again. */
static void check_stall(struct virtconn *c) {
        enum job_kind kind;
        uint64_t since = busy_since(c, &kind), now = now_usec();
        struct virtlink *next;

        if (c->stalled || !since || now - since < STALL_USEC)
                return;
        c->stalled = true;
        log_warning("libvirt: %s has not answered a call (%s) for %" PRIu64 " s; its domains are held until it does",
                    c->uri, job_name(kind), (now - since) / USEC_PER_SEC);
        for (struct virtlink *l = c->links; l; l = next) {
                next = l->next;
                end_sampling(l);
                if (l->state != VMLINK_ABSENT)
                        set_state(l, VMLINK_ABSENT, "libvirt at %s: no answer for %" PRIu64 " s; held until it answers",
                                  c->uri, (now - since) / USEC_PER_SEC);
        }
}

static void check_unstall(struct virtconn *c) {
        struct virtlink *next;

        if (!c->stalled || busy_since(c, NULL))
                return;
        c->stalled = false;
        log_info("libvirt: %s answers again", c->uri);
        for (struct virtlink *l = c->links; l; l = next) {
                next = l->next;
                lookup(l);
        }
}

static int on_replies(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct virtconn *c = userdata;
        struct msg *list;

        drain(fd);
        pthread_mutex_lock(&c->lock);
        list = c->msgs;
        c->msgs = NULL;
        c->msgs_tail = &c->msgs;
        pthread_mutex_unlock(&c->lock);
        c->n_ref++;     /* a callback may free every link; the connection outlives this loop */
        while (list) {
                struct msg *m = list;
                list = m->next;
                dispatch(c, m);
                msg_free(m);
        }
        check_unstall(c);
        virtconn_unref(c);
        return 0;
}

static void virtconn_free(struct virtconn *c) {
        if (!c)
                return;
        if (c->thread_started) {
                pthread_mutex_lock(&c->lock);
                c->stop = true;
                pthread_mutex_unlock(&c->lock);
                wake(c->job_fd);
                pthread_join(c->thread, NULL);
        }
        sd_event_source_disable_unref(c->reply_source);
        while (c->jobs) {
                struct job *j = c->jobs;
                c->jobs = j->next;
                job_free(j);
        }
        while (c->msgs) {
                struct msg *m = c->msgs;
                c->msgs = m->next;
                msg_free(m);
        }
        if (c->job_fd >= 0)
                close(c->job_fd);
        if (c->reply_fd >= 0)
                close(c->reply_fd);
        pthread_mutex_destroy(&c->lock);
        sd_event_unref(c->event);
        free(c->uri);
        free(c);
}

static int virtconn_new(sd_event *e, const char *uri, struct virtconn **ret) {
        struct virtconn *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        c->job_fd = c->reply_fd = -1;
        c->cb_lifecycle = c->cb_balloon = c->job_watch = c->retry_timer = -1;
        c->jobs_tail = &c->jobs;
        c->msgs_tail = &c->msgs;
        c->event = sd_event_ref(e);
        pthread_mutex_init(&c->lock, NULL);
        snprintf(c->why, sizeof(c->why), "connecting to %s", uri);
        c->uri = strdup(uri);
        c->job_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        c->reply_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r = !c->uri ? -ENOMEM : c->job_fd < 0 || c->reply_fd < 0 ? -errno : 0;
        if (r >= 0)
                r = sd_event_add_io(e, &c->reply_source, c->reply_fd, EPOLLIN, on_replies, c);
        if (r >= 0)
                r = -pthread_create(&c->thread, NULL, thread_main, c);
        c->thread_started = r >= 0;
        if (r < 0) {
                virtconn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static int virtconn_get(sd_event *e, const char *uri, struct virtconn **ret) {
        int r;

        pthread_once(&libvirt_once, libvirt_init);
        if (libvirt_load_err.code < 0)
                return log_error_errno(libvirt_init_r, "libvirt: %s", libvirt_load_err.msg);
        if (libvirt_init_r < 0)
                return log_error_errno(libvirt_init_r, "libvirt: cannot initialise its event loop: %s", last_error());
        if (the_conn && strcmp(the_conn->uri, uri) != 0)
                return log_error_errno(-EBUSY, "libvirt: already connected to %s; one URI per daemon, not also %s",
                                       the_conn->uri, uri);
        if (!the_conn) {
                r = virtconn_new(e, uri, &the_conn);
                if (r < 0)
                        return r;
        }
        the_conn->n_ref++;
        *ret = the_conn;
        return 0;
}

static void virtconn_unref(struct virtconn *c) {
        if (--c->n_ref > 0)
                return;
        the_conn = NULL;
        virtconn_free(c);
}

/* ---- the link ---- */

int virtlink_new(sd_event *e, const char *name, const char *uri, const char *domain, const struct vmlink_options *o,
                 const struct virtlink_callbacks *cb, void *userdata, struct virtlink **ret) {
        struct virtlink *l = calloc(1, sizeof(*l));
        int r;

        if (!l)
                return -ENOMEM;
        l->name = strdup(name);
        l->domain = strdup(domain);
        if (!l->name || !l->domain) {
                virtlink_free(l);
                return -ENOMEM;
        }
        l->id = next_link_id++;
        l->opts = *o;
        l->cb = *cb;
        l->userdata = userdata;
        l->state = VMLINK_ABSENT;
        if (!uri || !*uri) {
                /* Kept, not refused: the entry is valid, the node's config is what is missing. */
                snprintf(l->why, sizeof(l->why), "the ledger names libvirt domain '%s' but [libvirt] uri is empty; "
                         "set it in ppnd's config and restart ppnd", domain);
                *ret = l;
                return 0;
        }
        r = virtconn_get(e, uri, &l->c);
        if (r < 0) {
                virtlink_free(l);
                return r;
        }
        snprintf(l->why, sizeof(l->why), "libvirt at %s: %.200s", uri, l->c->why);
        l->next = l->c->links;
        l->c->links = l;
        *ret = l;
        lookup(l);
        return 0;
}

struct virtlink *virtlink_free(struct virtlink *l) {
        if (!l)
                return NULL;
        if (l->c) {
                for (struct virtlink **p = &l->c->links; *p; p = &(*p)->next)
                        if (*p == l) {
                                *p = l->next;
                                break;
                        }
                virtconn_unref(l->c);
        }
        free(l->name);
        free(l->domain);
        free(l);
        return NULL;
}

int virtlink_set_domain(struct virtlink *l, const char *domain) {
        char *copy = strdup(domain);

        if (!copy)
                return -ENOMEM;
        free(l->domain);
        l->domain = copy;
        end_sampling(l);
        if (l->state != VMLINK_ABSENT)
                set_state(l, VMLINK_ABSENT, "domain changed to '%s'", domain);
        lookup(l);
        return 0;
}

void virtlink_set_options(struct virtlink *l, const struct vmlink_options *o) {
        bool period = o->stats_interval_sec != l->opts.stats_interval_sec;

        l->opts = *o;
        if (period && l->state == VMLINK_RUNNING)
                post_job(l->c, JOB_LOOKUP, l->id, l->domain, o->stats_interval_sec ? o->stats_interval_sec : 1);
}

const char *virtlink_name(const struct virtlink *l) {
        return l->name;
}

enum vmlink_state virtlink_get_state(const struct virtlink *l) {
        return l->state;
}

pid_t virtlink_pid(const struct virtlink *l) {
        return 0;
}

const struct vmlink_sample *virtlink_last(const struct virtlink *l) {
        return &l->last;
}

const char *virtlink_why(const struct virtlink *l) {
        return l->why;
}

int virtlink_sample(struct virtlink *l) {
        if (l->c)
                check_stall(l->c);      /* the manager samples every tick: a hang is seen within one */
        if (l->state != VMLINK_RUNNING)
                return -ENOTCONN;
        if (l->sampling)
                return -EBUSY;
        l->sampling = true;
        post_job(l->c, JOB_SAMPLE, l->id, l->domain, 0);
        return 0;
}

int virtlink_set_target(struct virtlink *l, uint64_t bytes, uint64_t floor_bytes) {
        if (bytes < floor_bytes)
                return -ERANGE;
        if (l->state != VMLINK_RUNNING)
                return -ENOTCONN;
        /* libvirt takes KiB; round up so the guest never gets less than asked. */
        post_job(l->c, JOB_SET_MEM, l->id, l->domain, (bytes + 1023) / 1024);
        return 0;
}

int virtlink_set_cpu_weight(struct virtlink *l, uint32_t weight) {
        if (weight < 1 || weight > 10000)
                return -EINVAL;
        l->weight = weight;
        apply_weight(l);
        return 0;
}

uint64_t virtlink_shares_for_weight(uint32_t weight, bool cgroup_v2) {
        uint32_t shares;

        if (cgroup_v2)
                return weight;
        return ppn_cpu_weight_to_shares(weight, &shares) < 0 ? 1024 : shares;
}

uint32_t virtlink_weight_for_shares(uint64_t shares, bool cgroup_v2) {
        uint32_t w;

        if (cgroup_v2)
                return shares < 1 ? 1 : shares > 10000 ? 10000 : (uint32_t) shares;
        if (shares < 2)
                shares = 2;
        if (shares > 262144)
                shares = 262144;
        return ppn_cpu_shares_to_weight((uint32_t) shares, &w) < 0 ? 100 : w;
}

/* ---- import ---- */

static uint64_t domain_cpu_shares(virDomainPtr dom) {
        _cleanup_free_ virTypedParameterPtr p = NULL;
        uint64_t shares = 0;
        int n = 0;

        free(lv.virDomainGetSchedulerType(dom, &n));
        if (n <= 0 || !(p = calloc((size_t) n, sizeof(*p))) ||
            lv.virDomainGetSchedulerParametersFlags(dom, p, &n, VIR_DOMAIN_AFFECT_LIVE) < 0)
                return 0;
        for (int i = 0; i < n; i++)
                if (strcmp(p[i].field, VIR_DOMAIN_SCHEDULER_CPU_SHARES) == 0)
                        shares = p[i].value.ul;
        lv.virTypedParamsClear(p, n);
        return shares;
}

static void describe_domain(virDomainPtr dom, struct virtlink_domain *d) {
        virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
        virDomainInfo info;
        int n;

        snprintf(d->name, sizeof(d->name), "%s", lv.virDomainGetName(dom));
        if (lv.virDomainGetInfo(dom, &info) == 0) {
                d->memory_bytes = (uint64_t) info.maxMem * 1024;
                d->current_bytes = (uint64_t) info.memory * 1024;
        }
        /* libvirt reports the balloon's actual size only when the domain has a balloon. */
        n = lv.virDomainMemoryStats(dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);
        for (int i = 0; i < n; i++)
                if (st[i].tag == VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
                        d->balloon = true;
        d->cpu_shares = domain_cpu_shares(dom);
}

int virtlink_list_domains(const char *uri, struct virtlink_domain **ret, struct ppn_error *err) {
        virConnectPtr conn;
        virDomainPtr *doms = NULL;
        struct virtlink_domain *list;
        int n;

        pthread_once(&libvirt_once, libvirt_init);
        if (libvirt_load_err.code < 0)
                return ppn_error_set(err, libvirt_init_r, "%s", libvirt_load_err.msg);
        conn = lv.virConnectOpen(uri);
        if (!conn)
                return ppn_error_set(err, -ECONNREFUSED, "cannot connect to libvirt at %s: %s", uri, last_error());
        n = lv.virConnectListAllDomains(conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
        if (n < 0) {
                ppn_error_set(err, -EIO, "listing the domains at %s: %s", uri, last_error());
                lv.virConnectClose(conn);
                return -EIO;
        }
        list = calloc((size_t) n + 1, sizeof(*list));
        for (int i = 0; i < n; i++) {
                if (list)
                        describe_domain(doms[i], &list[i]);
                lv.virDomainFree(doms[i]);
        }
        free(doms);
        lv.virConnectClose(conn);
        if (!list)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        *ret = list;
        return n;
}

static void proposal_name(const char *domain, char *name, size_t len) {
        size_t n = 0;

        for (const char *p = domain; *p && n + 1 < len; p++) {
                char c = (char) tolower((unsigned char) *p);
                name[n++] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'
                                    ? c : '-';
        }
        name[n] = '\0';
        if (n && !isalnum((unsigned char) name[0]))
                name[0] = 'd';
}

int virtlink_propose(const struct virtlink_domain *d, bool cgroup_v2, struct virtlink_proposal *ret) {
        struct virtlink_proposal p = { .note = "" };
        uint64_t floor = 128 * MIB;

        proposal_name(d->name, p.name, sizeof(p.name));
        if (!p.name[0] || strstr(p.name, ".."))
                return -EINVAL;
        p.max_bytes = d->memory_bytes / MIB * MIB;
        if (d->current_bytes && d->current_bytes < d->memory_bytes)
                p.min_bytes = d->current_bytes / MIB * MIB;
        else {
                p.min_bytes = p.max_bytes / 2 / MIB * MIB;
                p.note = "currentMemory = memory: min proposed at half of it";
        }
        if (p.min_bytes < floor)
                p.min_bytes = floor;
        if (p.min_bytes > p.max_bytes)
                p.min_bytes = p.max_bytes;
        p.cpu_weight = d->cpu_shares ? virtlink_weight_for_shares(d->cpu_shares, cgroup_v2) : 100;
        *ret = p;
        return 0;
}
