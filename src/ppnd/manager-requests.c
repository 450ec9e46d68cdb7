/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket's requests, the metrics adapter, and the event feed (manager_record). */
#include <grp.h>
#include <string.h>

#include "jsonutil.h"
#include "log.h"
#include "manager-internal.h"

enum { TOPIC_EVENTS = 1 };

/* ---- metrics and history ---- */

static void metrics_vm_of(const struct managed_vm *v, struct metrics_vm *ret) {
        struct vm_status st;

        fill_status(v, now_usec(), now_realtime_usec(), &st);
        *ret = (struct metrics_vm) {
                .min_bytes = st.min_bytes, .max_bytes = st.max_bytes, .target_bytes = st.target_bytes,
                .actual_bytes = st.actual_bytes, .guest_available_bytes = st.guest_available_bytes,
                .stats_age_usec = st.stats_age_usec, .cpu_weight = st.cpu_weight,
                .override_active = st.override_left_usec > 0,
                .stuck = v->pstate.stuck_since_usec != 0 || (backend_actuator_plan(v->link) &&
                                                             backend_actuator_plan(v->link)->stalled),
        };
        snprintf(ret->name, sizeof(ret->name), "%s", st.name);
        snprintf(ret->state, sizeof(ret->state), "%s", st.state);
}

/* A scrape: the same figures `ppnctl status` shows, read on the loop (no locks needed). */
static int metrics_fill(void *userdata, struct metrics_snapshot *ret) {
        struct manager *m = userdata;
        struct metrics_vm *vms = calloc(m->n_vms + 1, sizeof(*vms));
        const struct pool_status *p = &m->pool;

        if (!vms)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_vms; i++)
                metrics_vm_of(m->vms[i], &vms[i]);
        *ret = (struct metrics_snapshot) {
                .node = { .physical_bytes = p->physical_bytes, .reserve_bytes = p->reserve_bytes,
                          .reserved_min_bytes = p->reserved_min_bytes, .pool_available_bytes = p->pool_available_bytes,
                          .committed_bytes = p->committed_bytes, .free_bytes = p->free_bytes,
                          .host_available_bytes = p->host_available_bytes, .psi_some_avg10 = p->psi_some_avg10,
                          .n_vms = p->n_vms, .n_running = p->n_running },
                .vms = vms, .n_vms = m->n_vms, .counters = &m->counters,
        };
        return 0;
}

static void metrics_done(void *userdata, struct metrics_snapshot *s) {
        free((void *) s->vms);
}

static const struct metrics_source metrics_source = { .fill = metrics_fill, .done = metrics_done };

int setup_metrics(struct manager *m, struct ppn_error *err) {
        struct metrics_server_options o = { .address = m->cfg->metrics_address, .port = (uint16_t) m->cfg->metrics_port };

        if (!m->cfg->metrics_enabled)
                return 0;
        return metrics_server_new(m->event, &o, &metrics_source, m, &m->metrics, err);
}

/* A history reply's decisions: the newest that fit this many bytes. With at most 3,600
 * samples (about 110 bytes each at most) the reply stays under the control socket's 1 MiB
 * reply queue, which a busy VM's 2,048 events alone could exceed (the reply was cut off). */
#define HISTORY_EVENTS_BUDGET (512 * 1024)

/* {"vm": NAME, "span_usec": N} -> {"now_usec", "since_usec", "vm": {"name", "min_bytes",
 * "max_bytes", "samples": [[time, target, actual, available, total], ...], "events": [...],
 * "events_omitted": N}}. */
static int req_history(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                       struct ppn_error *err) {
        struct manager *m = userdata;
        uint64_t now = now_realtime_usec(), span = 600 * USEC_PER_SEC, since;
        const struct managed_vm *v;
        json_object *name, *x, *o, *samples, *events;
        size_t omitted = 0;

        if (!json_object_object_get_ex(req, "vm", &name) || !json_object_is_type(name, json_type_string))
                return ppn_error_set(err, -EINVAL, "history needs \"vm\": a VM name");
        v = find_vm(m, json_object_get_string(name));
        if (!v)
                return ppn_error_set(err, -ENOENT, "no VM '%s' in the ledger; see 'ppnctl status'", json_object_get_string(name));
        if (json_object_object_get_ex(req, "span_usec", &x) && json_object_is_type(x, json_type_int) &&
            json_object_get_int64(x) > 0)
                span = (uint64_t) json_object_get_int64(x);
        since = span < now ? now - span : 0;
        samples = json_object_new_array();
        for (size_t i = history_ring_first_since(&v->history, since); i < v->history.count; i++)
                json_object_array_add(samples, history_sample_to_array(history_ring_get(&v->history, i)));
        o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(v->entry.name));
        json_object_object_add(o, "min_bytes", json_object_new_int64((int64_t) v->entry.min_bytes));
        json_object_object_add(o, "max_bytes", json_object_new_int64((int64_t) v->entry.max_bytes));
        json_object_object_add(o, "samples", samples);
        events = eventlog_vm_json(&m->events, v->entry.name, since, HISTORY_EVENTS_BUDGET, &omitted);
        json_object_object_add(o, "events", events);
        json_object_object_add(o, "events_omitted", json_object_new_uint64(omitted));
        *ret = json_object_new_object();
        json_object_object_add(*ret, "now_usec", json_object_new_int64((int64_t) now));
        json_object_object_add(*ret, "since_usec", json_object_new_int64((int64_t) since));
        json_object_object_add(*ret, "vm", o);
        return 0;
}

/* ---- control requests ---- */

static int req_events(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                      struct ppn_error *err) {
        struct manager *m = userdata;
        const struct ppn_event *list[MANAGER_EVENTS_MAX];
        _cleanup_json_ json_object *o = NULL, *arr = NULL;
        json_object *v;
        uint64_t after = 0, limit = 100;
        bool follow = false;
        size_t n;

        if (json_member_bool(req, "follow", &follow) == -EINVAL)
                return ppn_error_set(err, -EINVAL, "events: \"follow\" must be true or false (a JSON boolean)");
        if (json_object_object_get_ex(req, "after", &v) && json_object_is_type(v, json_type_int))
                after = json_object_get_uint64(v);
        if (json_object_object_get_ex(req, "limit", &v) && json_object_is_type(v, json_type_int))
                limit = json_object_get_uint64(v);
        n = eventlog_since(&m->events, after, list, limit < ELEMENTSOF(list) ? limit : ELEMENTSOF(list));
        o = json_object_new_object();
        arr = json_object_new_array();
        if (!o || !arr)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, event_to_json(list[i]));
        json_object_object_add(o, "events", TAKE_PTR(arr));
        json_object_object_add(o, "last_seq", json_object_new_uint64(m->events.last_seq));
        if (follow)
                control_conn_follow(conn, TOPIC_EVENTS);
        *ret = TAKE_PTR(o);
        return 0;
}

static int req_ping(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                    struct ppn_error *err) {
        json_object *o = json_object_new_object();

        if (!o)
                return ppn_error_set(err, -ENOMEM, "out of memory");
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
                return ppn_error_set(err, -ENOMEM, "out of memory");
        *ret = o;
        return 0;
}

/* What a status request asks for: every field, or the brief form for ppnctl's table. */
struct status_form {
        bool brief;
        size_t reason_width;    /* brief: the reason's columns in the table (0: whole) */
};

/* Writes {"vms": [...], "pool": {...}} into buf (cap bytes). Returns its length, or cap if it
 * did not fit (or on error): the caller tries again with more. */
static size_t write_status(const struct manager *m, const struct status_form *form, const char *pool, char *buf,
                           size_t cap) {
        FILE *f = fmemopen(buf, cap, "w");
        uint64_t now = now_usec(), real = now_realtime_usec();
        long len;

        if (!f)
                return cap;
        fputs("{\"vms\":[", f);
        for (size_t i = 0; i < m->n_vms && !ferror(f); i++) {
                struct vm_status st;
                fill_status(m->vms[i], now, real, &st);
                if (i)
                        fputc(',', f);
                if (form->brief)
                        vm_status_write_brief(&st, form->reason_width, f);
                else
                        vm_status_write(&st, f);
        }
        fprintf(f, "],\"pool\":%s}", pool);
        fflush(f);
        len = ferror(f) ? -1 : ftell(f);
        fclose(f);
        /* Room for the NUL fmemopen writes, which the queue turns into the newline. */
        return len < 0 || (size_t) len + 1 >= cap ? cap : (size_t) len;
}

/* "brief": true (a JSON boolean) and "reason_width": N (an integer >= 1, brief only). */
static int status_form_of(json_object *req, struct status_form *ret, struct ppn_error *err) {
        struct status_form form = { 0 };
        json_object *x;
        int64_t w;

        if (json_member_bool(req, "brief", &form.brief) == -EINVAL)
                return ppn_error_set(err, -EINVAL, "status: \"brief\" must be true or false (a JSON boolean)");
        if (json_object_object_get_ex(req, "reason_width", &x)) {
                if (json_member_int64(req, "reason_width", &w) < 0 || w < 1)
                        return ppn_error_set(err, -EINVAL, "status: \"reason_width\" must be a whole number of "
                                             "columns, at least 1");
                if (!form.brief)
                        return ppn_error_set(err, -EINVAL, "status: \"reason_width\" is for the brief form only "
                                             "(add \"brief\": true)");
                form.reason_width = (size_t) w;
        }
        *ret = form;
        return 0;
}

/* {"vms": [...], "pool": {...}}, written as text into one buffer that becomes the connection's
 * queue. At 2,000 VMs (1.1 MB) json-c objects took ~100 ms of the loop; an open_memstream()
 * that doubled its buffer (copying and zeroing it each time), json-c's copy of the text, its
 * serialisation and the queue's copy took ~18 ms more. The buffer is sized from the last reply
 * of the same form. The brief form (ppnctl's table) carries 9 of the 17 members per VM and the
 * reason cut to the table's width: ~0.45 MB at 2,000 VMs and 80 columns. */
static int req_status(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                      struct ppn_error *err) {
        struct manager *m = userdata;
        struct status_form form;
        _cleanup_json_ json_object *pool = NULL;
        const char *pool_text;
        size_t cap, len;
        int r = status_form_of(req, &form, err);

        if (r < 0)
                return r;
        pool = pool_status_to_json(&m->pool);
        pool_text = pool ? json_object_to_json_string_ext(pool, JSON_C_TO_STRING_PLAIN) : NULL;
        if (!pool_text)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        cap = m->status_len[form.brief] + m->status_len[form.brief] / 8 + 4096;
        for (;;) {
                char *buf = malloc(cap);
                if (!buf)
                        return ppn_error_set(err, -ENOMEM, "out of memory");
                len = write_status(m, &form, pool_text, buf, cap);
                if (len < cap) {
                        m->status_len[form.brief] = len;
                        control_conn_reply_text(conn, buf, len);
                        return 0;
                }
                free(buf);
                if (cap > CONTROL_MAX_REPLY)
                        return ppn_error_set(err, -ENOBUFS, "reply too large (more than %u bytes): ask for less",
                                             CONTROL_MAX_REPLY);
                cap *= 2;
        }
}

static int req_fleet(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                     struct ppn_error *err) {
        struct manager *m = userdata;
        if (!m->fleet)
                return ppn_error_set(err, -ENOTSUP, "the fleet is not enabled on this node ([fleet] enabled = no)");
        *ret = fleet_agent_report(m->fleet);
        return *ret ? 0 : ppn_error_set(err, -ENOMEM, "out of memory");
}

/* {"vm": NAME} -> {"released": "detected" | "operator" | "none"}. Ends an override ppnd made
 * itself when the balloon was moved outside it (nothing in the ledger holds that one). An
 * operator lease lives in the ledger and ends there (ppnctl release clears it): it is only
 * named. A change, so only for those who may write the ledger: root and ppnd's own uid. */
static int req_release(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                       struct ppn_error *err) {
        struct manager *m = userdata;
        uid_t uid = control_conn_uid(conn);
        const char *name = json_member_string(req, "vm"), *what = "none";
        struct managed_vm *v;

        if (uid != 0 && uid != geteuid())
                return ppn_error_set(err, -EPERM, "release: only root may end an override (it changes what "
                                     "the controller does)");
        if (!name)
                return ppn_error_set(err, -EINVAL, "release needs \"vm\": a VM name");
        v = find_vm(m, name);
        if (!v)
                return ppn_error_set(err, -ENOENT, "no VM '%s' in the ledger; see 'ppnctl status'", name);
        if (v->pstate.lease_kind == POLICY_LEASE_DETECTED) {
                policy_lease_clear(&v->pstate);
                v->unsettled = true;
                manager_record(m, name, "release", 0, 0, "override (balloon set outside ppnd) released by uid %u; "
                               "control resumes", (unsigned) uid);
                what = "detected";
        } else if (v->pstate.lease_kind == POLICY_LEASE_OPERATOR)
                what = "operator";
        *ret = json_object_new_object();
        if (!*ret)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        json_object_object_add(*ret, "released", json_object_new_string(what));
        return 0;
}

/* Sorted by name (control_new checks). */
static const struct control_request requests[] = {
        { "events", req_events },
        { "fleet", req_fleet },
        { "history", req_history },
        { "ping", req_ping },
        { "pool", req_pool },
        { "release", req_release },
        { "status", req_status },
};

/* ---- recording ---- */

void manager_record(struct manager *m, const char *vm, const char *kind, uint64_t from, uint64_t to,
                    const char *fmt, ...) {
        const struct ppn_event *stored;
        _cleanup_json_ json_object *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        stored = eventlog_addv(&m->events, now_realtime_usec(), vm, kind, from, to, fmt, ap);
        va_end(ap);
        log_info("%s%s%s: %s", stored->vm, stored->vm[0] ? " " : "", stored->kind, stored->reason);
        /* The JSON for `ppnctl events --follow` only when one follows: at 2,000 VMs there is a
         * record for every balloon command, and building it cost ~5,000 instructions of the
         * ~9,500 a record took (callgrind, 500 VMs). */
        if (!m->control || !control_has_followers(m->control, TOPIC_EVENTS))
                return;
        msg = json_object_new_object();
        if (!msg)
                return;
        json_object_object_add(msg, "event", event_to_json(stored));
        control_broadcast(m->control, TOPIC_EVENTS, msg);
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
                return ppn_error_set(err, errno ? -errno : -ENOENT,
                                     "control group '%s' does not exist; create it or change [control] group", name);
        *ret = gr->gr_gid;
        return 0;
}

int setup_control(struct manager *m, struct ppn_error *err) {
        struct control_options o = {
                .path = m->cfg->control_socket,
                .max_request = m->cfg->control_max_request,
                .max_clients = 64,
                .root_reserved = 8,     /* idle group members cannot lock root out */
                .idle_timeout_usec = m->cfg->control_idle_timeout_usec,
        };
        int r = resolve_group(m->cfg->control_group, &o.group, err);

        if (r < 0)
                return r;
        return control_new(m->event, &o, requests, ELEMENTSOF(requests), m, &m->control, err);
}
