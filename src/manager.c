/* SPDX-License-Identifier: Apache-2.0 */
#include "manager.h"

#include <grp.h>
#include <signal.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "control.h"
#include "log.h"
#include "status.h"

enum { TOPIC_EVENTS = 1 };

struct managed_vm {
        struct vm_status st;    /* what `status` shows */
};

struct manager {
        sd_event *event;
        sd_event_source *tick_source;
        struct ppn_config *cfg;
        char *config_path;
        struct control *control;
        struct eventlog events;
        struct managed_vm *vms;
        size_t n_vms;
        struct pool_status pool;
        uint64_t ticks;
        char last_status[128];
};

/* ---- control requests ---- */

static int req_events(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                      struct ppn_error *err) {
        struct manager *m = userdata;
        const struct ppn_event *list[MANAGER_EVENTS_MAX];
        json_object *v, *o, *arr;
        uint64_t after = 0, limit = 100;
        size_t n;

        if (json_object_object_get_ex(req, "after", &v) && json_object_is_type(v, json_type_int))
                after = json_object_get_uint64(v);
        if (json_object_object_get_ex(req, "limit", &v) && json_object_is_type(v, json_type_int))
                limit = json_object_get_uint64(v);
        n = eventlog_since(&m->events, after, list, limit < ELEMENTSOF(list) ? limit : ELEMENTSOF(list));
        o = json_object_new_object();
        arr = json_object_new_array();
        if (!o || !arr) {
                json_object_put(o);
                json_object_put(arr);
                return ppn_error_set(err, ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, event_to_json(list[i]));
        json_object_object_add(o, "events", arr);
        json_object_object_add(o, "last_seq", json_object_new_uint64(m->events.last_seq));
        if (json_object_object_get_ex(req, "follow", &v) && json_object_get_boolean(v))
                control_conn_follow(conn, TOPIC_EVENTS);
        *ret = o;
        return 0;
}

static int req_ping(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                    struct ppn_error *err) {
        json_object *o = json_object_new_object();

        if (!o)
                return ppn_error_set(err, ENOMEM, "out of memory");
        json_object_object_add(o, "pong", json_object_new_boolean(true));
        json_object_object_add(o, "version", json_object_new_string(PPN_VERSION));
        json_object_object_add(o, "pid", json_object_new_int64(getpid()));
        *ret = o;
        return 0;
}

static int req_pool(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                    struct ppn_error *err) {
        struct manager *m = userdata;
        json_object *o = pool_status_to_json(&m->pool);

        if (!o)
                return ppn_error_set(err, ENOMEM, "out of memory");
        *ret = o;
        return 0;
}

static int req_status(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                      struct ppn_error *err) {
        struct manager *m = userdata;
        json_object *o = json_object_new_object(), *arr = json_object_new_array();

        if (!o || !arr) {
                json_object_put(o);
                json_object_put(arr);
                return ppn_error_set(err, ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < m->n_vms; i++)
                json_object_array_add(arr, vm_status_to_json(&m->vms[i].st));
        json_object_object_add(o, "vms", arr);
        json_object_object_add(o, "pool", pool_status_to_json(&m->pool));
        *ret = o;
        return 0;
}

/* Sorted by name (control_new checks). */
static const struct control_request requests[] = {
        { "events", req_events },
        { "ping", req_ping },
        { "pool", req_pool },
        { "status", req_status },
};

/* ---- recording ---- */

void manager_record(struct manager *m, const char *vm, const char *kind, uint64_t from, uint64_t to,
                    const char *fmt, ...) {
        struct ppn_event ev = { .realtime_usec = now_realtime_usec(), .from_bytes = from, .to_bytes = to };
        const struct ppn_event *stored;
        json_object *msg;
        va_list ap;

        snprintf(ev.vm, sizeof(ev.vm), "%s", vm ? vm : "");
        snprintf(ev.kind, sizeof(ev.kind), "%s", kind);
        va_start(ap, fmt);
        vsnprintf(ev.reason, sizeof(ev.reason), fmt, ap);
        va_end(ap);
        stored = eventlog_add(&m->events, &ev);
        log_info("%s%s%s: %s", ev.vm, ev.vm[0] ? " " : "", ev.kind, ev.reason);
        if (!m->control)
                return;
        msg = json_object_new_object();
        if (!msg)
                return;
        json_object_object_add(msg, "event", event_to_json(stored));
        control_broadcast(m->control, TOPIC_EVENTS, msg);
        json_object_put(msg);
}

/* ---- the loop ---- */

static void notify_status(struct manager *m) {
        char line[128];

        snprintf(line, sizeof(line), "%zu VMs, %" PRIu64 " running", m->n_vms, m->pool.n_running);
        if (strcmp(line, m->last_status) == 0)
                return;
        snprintf(m->last_status, sizeof(m->last_status), "%s", line);
        sd_notifyf(false, "STATUS=%s", line);
}

static void manager_tick(struct manager *m) {
        m->ticks++;
        m->pool.n_vms = m->n_vms;
        notify_status(m);
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;
        int r;

        manager_tick(m);
        r = sd_event_source_set_time_relative(s, m->cfg->tick_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "cannot re-arm the controller tick: %m");
        return 0;
}

/* Applies what can change live; names what needs a restart. Keeps the old config on problems. */
static void manager_reload(struct manager *m) {
        _cleanup_config_ struct ppn_config *next = NULL;
        _cleanup_free_ char *problems = NULL;
        char fixed[256];
        int r;

        if (!m->config_path) {
                log_notice("reload: running on the built-in configuration; nothing to re-read");
                return;
        }
        sd_notify(false, "RELOADING=1");
        r = config_load_file(m->config_path, &next, &problems);
        if (r < 0) {
                log_error("reload: %s has problems, keeping the running configuration:\n%s",
                          m->config_path, problems ? problems : strerror(-r));
                sd_notify(false, "READY=1");
                return;
        }
        if (config_restart_needed(m->cfg, next, fixed, sizeof(fixed)) > 0)
                log_warning("reload: %s changed; it takes effect only after a restart", fixed);
        log_set_max_level(next->log_level);
        sd_event_source_set_time_relative(m->tick_source, next->tick_usec);
        config_free(m->cfg);
        m->cfg = TAKE_PTR(next);
        manager_record(m, NULL, "config", 0, 0, "reloaded %s", m->config_path);
        sd_notify(false, "READY=1");
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;

        if (si->ssi_signo == SIGHUP) {
                manager_reload(m);
                return 0;
        }
        log_info("received %s, exiting", strsignal((int) si->ssi_signo));
        sd_notify(false, "STOPPING=1");
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int setup_signals(struct manager *m) {
        static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
                sigaddset(&mask, sigs[i]);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                r = sd_event_add_signal(m->event, NULL, sigs[i], on_signal, m);
                if (r < 0)
                        return r;
        }
        /* A client that hangs up mid-reply must not kill the daemon. */
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

static int resolve_group(const char *name, gid_t *ret, struct ppn_error *err) {
        struct group *gr;

        if (!name || !*name) {
                *ret = (gid_t) -1;
                return 0;
        }
        errno = 0;
        gr = getgrnam(name);
        if (!gr)
                return ppn_error_set(err, errno ? errno : ENOENT,
                                     "control group '%s' does not exist; create it or change [control] group", name);
        *ret = gr->gr_gid;
        return 0;
}

static int setup_control(struct manager *m, struct ppn_error *err) {
        struct control_options o = {
                .path = m->cfg->control_socket,
                .max_request = m->cfg->control_max_request,
                .max_clients = 64,
        };
        int r = resolve_group(m->cfg->control_group, &o.group, err);

        if (r < 0)
                return r;
        return control_new(m->event, &o, requests, ELEMENTSOF(requests), m, &m->control, err);
}

int manager_new(struct ppn_config *cfg, const char *config_path, struct manager **ret, struct ppn_error *err) {
        _cleanup_(manager_freep) struct manager *m = calloc(1, sizeof(*m));
        int r;

        if (!m) {
                config_free(cfg);
                return ppn_error_set(err, ENOMEM, "out of memory");
        }
        m->cfg = cfg;
        m->pool.host_available_bytes = STATUS_UNKNOWN;
        m->pool.psi_some_avg10 = -1;
        if (config_path && !(m->config_path = strdup(config_path)))
                return ppn_error_set(err, ENOMEM, "out of memory");
        r = eventlog_init(&m->events, MANAGER_EVENTS_MAX);
        if (r < 0)
                return ppn_error_set(err, r, "out of memory");
        r = sd_event_new(&m->event);
        if (r >= 0)
                r = sd_event_set_watchdog(m->event, true);
        if (r >= 0)
                r = setup_signals(m);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &m->tick_source, CLOCK_MONOTONIC, cfg->tick_usec,
                                               10000, on_tick, m);
        if (r < 0)
                return ppn_error_set(err, r, "cannot set up the event loop: %s", strerror(-r));
        r = setup_control(m, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int manager_run(struct manager *m) {
        int r;

        manager_record(m, NULL, "start", 0, 0, "ppnd %s started; control socket %s", PPN_VERSION,
                       m->cfg->control_socket);
        sd_notifyf(false, "READY=1\nSTATUS=%zu VMs", m->n_vms);
        r = sd_event_loop(m->event);
        return r < 0 ? log_error_errno(r, "event loop failed: %m") : 0;
}

struct manager *manager_free(struct manager *m) {
        if (!m)
                return NULL;
        control_free(m->control);
        sd_event_source_disable_unref(m->tick_source);
        sd_event_unref(m->event);
        eventlog_done(&m->events);
        free(m->vms);
        config_free(m->cfg);
        free(m->config_path);
        free(m);
        return NULL;
}
