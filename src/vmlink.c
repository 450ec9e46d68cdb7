/* SPDX-License-Identifier: Apache-2.0 */
#include "vmlink.h"

#include <string.h>

#include "actuator.h"
#include "balloon.h"
#include "jsonutil.h"
#include "log.h"
#include "qmp.h"
#include "vmem.h"

/* First reconnect after 100 ms: QEMU's socket accepts ~0.1 s after it starts. */
#define RETRY_START_USEC 100000
/* QEMU sets the balloon in 4 KiB pages: an actual this close to the target has arrived. */
#define BALLOON_PAGE 4096

struct vmlink {
        sd_event *event;
        char *name;
        char *path;
        struct vmlink_options opts;
        struct vmlink_callbacks cb;
        void *userdata;
        enum vmlink_state state;
        struct qmp *qmp;
        pid_t pid;
        sd_event_source *retry;
        uint64_t backoff_usec;
        char balloon_id[64];            /* the balloon's device id under /machine/peripheral, "" if none */
        unsigned round_pending;         /* replies still due in this sampling round */
        uint64_t target_sent;           /* the last balloon target sent; 0 = none on this connection */
        bool actual_news;               /* a BALLOON_CHANGE came since the last query-balloon */
        struct vmlink_sample last;
        char why[256];
        /* virtio-mem (last.vmem): the device, the size wanted and the actuator between steps. */
        struct vmem_device vdev;
        uint64_t goal, goal_min;        /* vmlink_set_size(); 0 = none yet */
        struct actuator_tunables tun;
        struct actuator_state act;
        struct actuator_plan plan;
        bool planned;
};

static const char *const state_names[] = {
        [VMLINK_ABSENT] = "absent",
        [VMLINK_CONNECTING] = "connecting",
        [VMLINK_RUNNING] = "running",
};

const char *vmlink_state_to_string(enum vmlink_state s) {
        return s < ELEMENTSOF(state_names) ? state_names[s] : "?";
}

static void set_state(struct vmlink *l, enum vmlink_state s, const char *fmt, ...) _printf_(3, 4);
static void set_state(struct vmlink *l, enum vmlink_state s, const char *fmt, ...) {
        enum vmlink_state old = l->state;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(l->why, sizeof(l->why), fmt, ap);
        va_end(ap);
        l->state = s;
        if (old != s && l->cb.state_changed)
                l->cb.state_changed(l, old, l->why, l->userdata);
}

static int try_connect(struct vmlink *l);
static void probe_vmem(struct vmlink *l);
static void step(struct vmlink *l);
static void on_size_change(struct qmp *q, const struct qmp_event *ev, void *userdata);
static void on_target(struct qmp *q, const struct qmp_error *err, void *userdata);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct vmlink *l = userdata;
        (void) try_connect(l);
        return 0;
}

static void schedule_retry(struct vmlink *l) {
        uint64_t delay = l->backoff_usec ? l->backoff_usec : RETRY_START_USEC;

        l->backoff_usec = delay * 2 < l->opts.retry_max_usec ? delay * 2 : l->opts.retry_max_usec;
        if (!l->path)
                return;
        if (l->retry) {
                sd_event_source_set_time_relative(l->retry, delay);
                sd_event_source_set_enabled(l->retry, SD_EVENT_ONESHOT);
        } else
                sd_event_add_time_relative(l->event, &l->retry, CLOCK_MONOTONIC, delay, 10000, on_retry, l);
}

/* Drops the connection (QEMU keeps running) and goes ABSENT; retries unless freeing. */
static void drop(struct vmlink *l, bool retry) {
        l->qmp = qmp_free(l->qmp);
        l->pid = 0;
        l->round_pending = 0;
        l->target_sent = 0;
        l->actual_news = false;
        l->balloon_id[0] = '\0';
        l->last.free_page_reporting = false;
        l->last.actual_usec = 0;
        l->last.stats_usec = 0;
        l->last.vmem = false;
        l->goal = 0;
        l->act = (struct actuator_state) { 0 };
        l->planned = false;
        if (retry)
                schedule_retry(l);
}

/* Tells the owner a QMP command failed: QEMU's error class, or "timeout"/"transport". */
static void count_error(struct vmlink *l, const struct qmp_error *err) {
        if (!err || err->error.code == -ECANCELED || !l->cb.qmp_error)
                return;
        l->cb.qmp_error(l, err->class[0] ? err->class : err->error.code == -ETIMEDOUT ? "timeout" : "transport",
                        l->userdata);
}

static void on_disconnected(struct qmp *q, const struct qmp_error *reason, void *userdata) {
        struct vmlink *l = userdata;

        drop(l, false);
        l->backoff_usec = 0;    /* QEMU may be restarting right now: look again soon */
        set_state(l, VMLINK_ABSENT, "QEMU went away (%s)", reason->error.msg);
        schedule_retry(l);
}

static void on_stats_enabled(struct qmp *q, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        if (err)
                log_debug("%s: enabling guest statistics failed: %s", l->name, err->error.msg);
        set_state(l, VMLINK_RUNNING, err ? "adopted; guest statistics not enabled (%s)" : "adopted%s",
                  err ? err->error.msg : "");
}

static void enable_stats(struct vmlink *l) {
        if (!l->balloon_id[0]) {
                set_state(l, VMLINK_RUNNING, "adopted; no balloon device");
                return;
        }
        if (balloon_enable_stats(l->qmp, l->balloon_id, (unsigned) l->opts.stats_interval_sec, l->opts.timeout_usec,
                                 on_stats_enabled, l, NULL) < 0)
                set_state(l, VMLINK_RUNNING, "adopted; guest statistics not enabled");
}

static void use_vmem(struct vmlink *l, const struct vmem_device *d) {
        l->vdev = *d;
        l->last.plugged = d->size;
        l->last.requested = d->requested;
        l->last.region = d->max_size;
        l->last.block = d->block_size;
}

static void on_summary(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;
        uint64_t base;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        /* Without the boot memory the layout is unknown: drive the balloon alone. */
        if (!err && json_member_uint64(ret, "base-memory", &base) == 0 && base > 0) {
                l->last.base = base;
                l->last.vmem = true;
                log_debug("%s: virtio-mem '%s': %" PRIu64 " MiB of %" PRIu64 " MiB plugged, block %" PRIu64 " KiB, "
                          "base %" PRIu64 " MiB", l->name, l->vdev.id, l->vdev.size / MIB, l->vdev.max_size / MIB,
                          l->vdev.block_size / 1024, base / MIB);
        }
        enable_stats(l);
}

/* Adoption: the first virtio-mem device, then the boot memory it adds to. */
static void on_vmem_probe(struct qmp *q, const struct vmem_device *dev, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        if (err || !dev || qmp_call(q, "query-memory-size-summary", NULL, l->opts.timeout_usec, on_summary, l, NULL) < 0) {
                enable_stats(l);
                return;
        }
        use_vmem(l, dev);
}

static void probe_vmem(struct vmlink *l) {
        if (vmem_query(l->qmp, l->opts.timeout_usec, on_vmem_probe, l, NULL) < 0)
                enable_stats(l);
}

/* The balloon's free-page-reporting property (QEMU 7.2 answers true or false; an error or
 * another type = not reporting): the policy's rules for this VM depend on it. */
static void on_free_page_reporting(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        l->last.free_page_reporting = !err && ret && json_object_is_type(ret, json_type_boolean) &&
                                      json_object_get_boolean(ret);
        log_debug("%s: balloon '%s': free page reporting %s", l->name, l->balloon_id,
                  l->last.free_page_reporting ? "on" : "off");
        probe_vmem(l);
}

/* qom-list /machine/peripheral: the first child whose type names a virtio balloon. */
static void on_peripherals(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;
        size_t n = ret && json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(ret, i), *name, *type;
                if (json_object_object_get_ex(e, "name", &name) && json_object_object_get_ex(e, "type", &type) &&
                    strstr(json_object_get_string(type), "virtio-balloon")) {
                        snprintf(l->balloon_id, sizeof(l->balloon_id), "%s", json_object_get_string(name));
                        break;
                }
        }
        l->last.balloon = l->balloon_id[0] != '\0';
        if (!l->balloon_id[0]) {
                probe_vmem(l);
                return;
        }
        json_object *args = qmp_qom_args(l->balloon_id, "free-page-reporting", NULL);
        if (!args || qmp_call(q, "qom-get", args, l->opts.timeout_usec, on_free_page_reporting, l, NULL) < 0)
                probe_vmem(l);
}

/* The VM's size: the balloon's actual plus what virtio-mem has plugged. */
static void update_actual(struct vmlink *l) {
        l->last.actual = l->last.balloon_actual + (l->last.vmem ? l->last.plugged : 0);
}

/* Whether the balloon's actual as known is at the last target sent. */
static bool at_target_sent(const struct vmlink *l) {
        uint64_t a = l->last.balloon_actual, t = l->target_sent;
        return t && (a > t ? a - t : t - a) < BALLOON_PAGE;
}

/* QEMU tells every change of the balloon's actual (the guest's progress, a deflate-on-oom, a
 * target set by someone else), at most once a second: the latest value after that second.
 * The value is kept; whether to ask query-balloon as well is vmlink_sample()'s call. An event
 * that puts the balloon at the target sent needs no query: the balloon moves toward its target
 * and stops there, and any later move (the guest deflating, another client) is another event. */
static void on_balloon_change(struct qmp *q, const struct qmp_event *ev, void *userdata) {
        struct vmlink *l = userdata;
        uint64_t actual;

        if (balloon_event_actual(ev, &actual) < 0) {
                log_debug("%s: BALLOON_CHANGE without a valid actual; asking query-balloon", l->name);
                l->actual_news = true;
                return;
        }
        l->last.balloon_actual = actual;
        l->last.actual_usec = now_usec();
        l->actual_news = !at_target_sent(l);
        update_actual(l);
}

static void on_ready(struct qmp *q, void *userdata) {
        struct vmlink *l = userdata;
        json_object *args = json_object_new_object();

        l->backoff_usec = 0;
        (void) qmp_set_event_handler(q, QMP_EVENT_BALLOON_CHANGE, on_balloon_change, l);
        qmp_set_event_handler(q, QMP_EVENT_MEMORY_DEVICE_SIZE_CHANGE, on_size_change, l);
        json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
        if (qmp_call(q, "qom-list", args, l->opts.timeout_usec, on_peripherals, l, NULL) < 0)
                enable_stats(l);
}

static int try_connect(struct vmlink *l) {
        static const struct qmp_callbacks cbs = { .ready = on_ready, .disconnected = on_disconnected };
        struct qmp_error err = { 0 };
        int r;

        if (!l->path || l->qmp)
                return 0;
        r = qmp_connect(l->event, l->path, l->opts.timeout_usec, &cbs, l, &l->qmp, &err);
        if (r < 0) {
                set_state(l, VMLINK_ABSENT, "%s", r == -ENOENT || r == -ECONNREFUSED ?
                          "QMP socket absent or not listening; waiting for QEMU" : err.error.msg);
                schedule_retry(l);
                return r;
        }
        if (qmp_peer_pid(l->qmp, &l->pid) < 0)
                l->pid = 0;
        set_state(l, VMLINK_CONNECTING, "connected to %s (QEMU pid %d)", l->path, (int) l->pid);
        return 0;
}

int vmlink_new(sd_event *e, const char *name, const char *qmp_path, const struct vmlink_options *o,
               const struct vmlink_callbacks *cb, void *userdata, struct vmlink **ret) {
        struct vmlink *l = calloc(1, sizeof(*l));

        if (!l || !(l->name = strdup(name)) || (qmp_path && !(l->path = strdup(qmp_path)))) {
                vmlink_free(l);
                return -ENOMEM;
        }
        l->event = sd_event_ref(e);
        actuator_tunables_default(&l->tun);
        l->opts = *o;
        if (cb)
                l->cb = *cb;
        l->userdata = userdata;
        snprintf(l->why, sizeof(l->why), "%s", qmp_path ? "not connected yet" : "no QMP socket in the ledger");
        *ret = l;
        (void) try_connect(l);
        return 0;
}

struct vmlink *vmlink_free(struct vmlink *l) {
        if (!l)
                return NULL;
        l->cb = (struct vmlink_callbacks) { 0 };
        drop(l, false);
        sd_event_source_disable_unref(l->retry);
        sd_event_unref(l->event);
        free(l->name);
        free(l->path);
        free(l);
        return NULL;
}

int vmlink_set_path(struct vmlink *l, const char *qmp_path) {
        char *p = NULL;

        if (qmp_path && !(p = strdup(qmp_path)))
                return -ENOMEM;
        free(l->path);
        l->path = p;
        drop(l, false);
        l->backoff_usec = 0;
        set_state(l, VMLINK_ABSENT, "%s", p ? "QMP socket changed; reconnecting" : "no QMP socket in the ledger");
        if (p)
                (void) try_connect(l);
        return 0;
}

void vmlink_set_options(struct vmlink *l, const struct vmlink_options *o) {
        bool interval = o->stats_interval_sec != l->opts.stats_interval_sec;

        l->opts = *o;
        if (interval && l->state == VMLINK_RUNNING)
                enable_stats(l);
}

const char *vmlink_name(const struct vmlink *l) { return l->name; }
enum vmlink_state vmlink_get_state(const struct vmlink *l) { return l->state; }
pid_t vmlink_pid(const struct vmlink *l) { return l->state == VMLINK_ABSENT ? 0 : l->pid; }
const struct vmlink_sample *vmlink_last(const struct vmlink *l) { return &l->last; }
const char *vmlink_why(const struct vmlink *l) { return l->why; }

/* The guest's size: what the balloon leaves of base, plus what is plugged. */
static void round_done(struct vmlink *l) {
        if (l->round_pending > 0 && --l->round_pending == 0) {
                update_actual(l);
                /* Adopted mid-resize (ppnd restarted): hold the size the guest has now, with the real
                 * plugged size, until the policy decides; an unplug left running would look like a
                 * change made outside ppnd. A plug under way is kept: it is what the VM was started
                 * or grown to (a guest still booting, or paused, has not onlined its blocks yet), and
                 * cancelling it could leave the VM below its minimum until the policy's next round. */
                if (l->last.vmem && !l->goal && l->last.actual_usec && l->last.actual) {
                        l->goal = l->last.actual;
                        if (l->vdev.requested > l->last.plugged)
                                l->goal += l->vdev.requested - l->last.plugged;
                        l->goal_min = 0;
                }
                step(l);
                if (l->cb.sampled)
                        l->cb.sampled(l, l->userdata);
        }
}

static void on_actual(struct qmp *q, uint64_t actual, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        if (err && err->error.code == -ENODEV)
                l->last.balloon = false;        /* DeviceNotActive */
        else if (!err) {
                l->last.balloon = true;
                l->last.balloon_actual = actual;
                l->last.actual_usec = now_usec();
                l->actual_news = false;
                update_actual(l);
        } else
                log_debug("%s: query-balloon failed: %s", l->name, err->error.msg);
        round_done(l);
}

static uint64_t stat_or_unknown(const struct balloon_stats *st, enum balloon_stat which) {
        uint64_t v;
        return balloon_stats_get(st, which, &v) == 0 ? v : VMLINK_STAT_UNKNOWN;
}

static void on_stats(struct qmp *q, const struct balloon_stats *st, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;
        struct vmlink_sample *s = &l->last;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        if (!err) {
                s->available = stat_or_unknown(st, BALLOON_STAT_AVAILABLE_MEMORY);
                s->free = stat_or_unknown(st, BALLOON_STAT_FREE_MEMORY);
                s->total = stat_or_unknown(st, BALLOON_STAT_TOTAL_MEMORY);
                s->swap_in = stat_or_unknown(st, BALLOON_STAT_SWAP_IN);
                s->swap_out = stat_or_unknown(st, BALLOON_STAT_SWAP_OUT);
                s->major_faults = stat_or_unknown(st, BALLOON_STAT_MAJOR_FAULTS);
                s->stats_update_sec = st->last_update;
                s->stats_usec = now_usec();
        } else
                log_debug("%s: guest-stats failed: %s", l->name, err->error.msg);
        round_done(l);
}

/*
 * query-balloon is needed unless QEMU's events already tell the truth: the balloon answered
 * before, no BALLOON_CHANGE came since that left it short of the target sent (its value may
 * be an intermediate one: the event is rate-limited and the guest moves in steps), and the
 * last target sent has been reached. A
 * balloon on its way is polled every round, as before events were used.
 */
static bool actual_needed(const struct vmlink *l) {
        const struct vmlink_sample *x = &l->last;

        if (!x->balloon || !x->actual_usec || l->actual_news)
                return true;
        return l->target_sent && !at_target_sent(l);
}

/*
 * The guest's statistics change only when it reports, every stats interval: QEMU stamps each
 * report with last-update (whole seconds) and the next report comes an interval after it at
 * the earliest. With a known report newer than one interval of monotonic time ago (so a clock
 * step cannot freeze the readings), asking before last-update + interval returns the same
 * numbers. At the default interval (1 s) and tick (1 s) this asks every round.
 */
static bool stats_needed(const struct vmlink *l) {
        const struct vmlink_sample *x = &l->last;
        uint64_t interval = l->opts.stats_interval_sec * USEC_PER_SEC;

        if (!x->stats_usec || !x->stats_update_sec || now_usec() - x->stats_usec >= interval)
                return true;
        return now_realtime_usec() >= (x->stats_update_sec + l->opts.stats_interval_sec) * USEC_PER_SEC;
}

static void on_vmem_sample(struct qmp *q, const struct vmem_device *dev, const struct qmp_error *err,
                           void *userdata) {
        struct vmlink *l = userdata;

        if (err && err->error.code == -ECANCELED)
                return;
        count_error(l, err);
        if (dev)
                use_vmem(l, dev);
        else if (err)
                log_debug("%s: query-memory-devices failed: %s", l->name, err->error.msg);
        round_done(l);
}

int vmlink_sample(struct vmlink *l, bool stats) {
        if (l->state != VMLINK_RUNNING || !l->qmp)
                return -ENOTCONN;
        if (l->round_pending)
                return -EBUSY;
        qmp_cork(l->qmp);
        if (actual_needed(l) && balloon_query(l->qmp, l->opts.timeout_usec, on_actual, l, NULL) == 0)
                l->round_pending++;
        if (stats && l->balloon_id[0] && stats_needed(l) &&
            balloon_read_stats(l->qmp, l->balloon_id, l->opts.timeout_usec, on_stats, l, NULL) == 0)
                l->round_pending++;
        if (l->last.vmem && vmem_query(l->qmp, l->opts.timeout_usec, on_vmem_sample, l, NULL) == 0)
                l->round_pending++;
        qmp_uncork(l->qmp);
        return l->round_pending ? 0 : 1;
}

static void on_target(struct qmp *q, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        count_error(l, err);
        if (err && err->error.code != -ECANCELED)
                log_warning("%s: setting the balloon target failed: %s", l->name, err->error.msg);
}

int vmlink_set_target(struct vmlink *l, uint64_t bytes, uint64_t floor_bytes) {
        struct qmp_error err = { 0 };
        int r;

        if (l->state != VMLINK_RUNNING || !l->qmp)
                return -ENOTCONN;
        /* balloon_set_target() refuses 0 and anything below the floor before sending. */
        r = balloon_set_target(l->qmp, bytes, floor_bytes, l->opts.timeout_usec, on_target, l, &err);
        if (r >= 0)
                l->target_sent = bytes;
        if (r < 0)
                log_warning("%s: balloon target %" PRIu64 " not sent: %s", l->name, bytes, err.error.msg);
        return r;
}

/* ---- virtio-mem: the actuator's steps ---- */

static void on_vmem_request(struct qmp *q, const struct qmp_error *err, void *userdata) {
        struct vmlink *l = userdata;

        count_error(l, err);
        if (err && err->error.code != -ECANCELED)
                log_warning("%s: virtio-mem requested-size not set: %s", l->name, err->error.msg);
}

/* QEMU's events are rate-limited (1/s) and may show an intermediate size: a hint between
 * rounds, acted on at once; the next round's poll has the truth. */
static void on_size_change(struct qmp *q, const struct qmp_event *ev, void *userdata) {
        struct vmlink *l = userdata;
        char id[VMEM_ID_MAX];
        uint64_t size;

        if (!l->last.vmem || vmem_event_size(ev, id, sizeof(id), &size) < 0 || strcmp(id, l->vdev.id) != 0 ||
            size > l->vdev.max_size)
                return;
        l->last.plugged = l->vdev.size = size;
        update_actual(l);
        step(l);
}

/* Plans one step toward the goal from the latest readings and sends what it says. */
static void step(struct vmlink *l) {
        struct actuator_plan p;
        struct qmp_error err = { 0 };
        struct actuator_vm vm = {
                .base = l->last.base, .region = l->vdev.max_size, .block = l->vdev.block_size,
                .min = l->goal_min, .plugged = l->last.plugged, .requested = l->vdev.requested,
                .balloon_actual = l->last.balloon ? l->last.balloon_actual : l->last.base, .balloon = l->last.balloon,
        };

        if (!l->last.vmem || !l->goal || !l->qmp || l->state != VMLINK_RUNNING ||
            (l->last.balloon && !l->last.actual_usec))
                return;
        if (actuator_plan(&l->tun, &vm, l->goal, now_usec(), &l->act, &p) < 0)
                return;
        l->act = p.state;
        if (p.set_requested && vmem_set_requested(l->qmp, &l->vdev, p.requested, l->opts.timeout_usec,
                                                  on_vmem_request, l, &err) == 0)
                l->vdev.requested = l->last.requested = p.requested;
        else if (p.set_requested)
                log_warning("%s: virtio-mem request %" PRIu64 " not sent: %s", l->name, p.requested, err.error.msg);
        if (p.set_value && balloon_set_target(l->qmp, p.value, p.floor < p.value ? p.floor : p.value,
                                              l->opts.timeout_usec, on_target, l, &err) < 0)
                log_warning("%s: balloon value %" PRIu64 " not sent: %s", l->name, p.value, err.error.msg);
        else if (p.set_value)
                l->target_sent = p.value;       /* actual_needed() polls until it is reached */
        l->plan = p;
        l->planned = true;
        if (l->cb.actuated)
                l->cb.actuated(l, &p, l->userdata);
}

int vmlink_set_size(struct vmlink *l, uint64_t bytes, uint64_t min_bytes) {
        if (!l->last.vmem)
                return vmlink_set_target(l, bytes, min_bytes);
        if (l->state != VMLINK_RUNNING || !l->qmp)
                return -ENOTCONN;
        l->goal = bytes;
        l->goal_min = min_bytes;
        step(l);
        return 0;
}

const struct actuator_plan *vmlink_actuator_plan(const struct vmlink *l) {
        return l->last.vmem && l->planned ? &l->plan : NULL;
}
