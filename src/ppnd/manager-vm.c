/* SPDX-License-Identifier: Apache-2.0 */
/* The VM table: one managed_vm per ledger entry, its link's callbacks, the figures `ppnctl
 * status` shows, and ledger changes applied live. */
#include <string.h>

#include "log.h"
#include "manager-internal.h"

/* The ledger is polled this often for commits by other processes (ppnctl): one read of the
 * WAL index each, and a change is applied within this period plus one controller round. */
#define LEDGER_POLL_USEC (250 * USEC_PER_MSEC)

/* ---- the VM table ---- */

/* Copies as much of src as fits (messages are cut, never overflowed). */
static void text_copy(char *dst, size_t len, const char *src) {
        size_t n = strnlen(src, len - 1);
        memcpy(dst, src, n);
        dst[n] = '\0';
}

/* unix_sec is bounded to LEDGER_LEASE_MAX_SEC from now first: no overflow whatever the ledger says. */
static uint64_t mono_from_unix_sec(int64_t unix_sec) {
        int64_t now_sec = (int64_t) (now_realtime_usec() / USEC_PER_SEC);
        if (unix_sec > now_sec + LEDGER_LEASE_MAX_SEC)
                unix_sec = now_sec + LEDGER_LEASE_MAX_SEC;
        if (unix_sec < now_sec - LEDGER_LEASE_MAX_SEC)
                unix_sec = now_sec - LEDGER_LEASE_MAX_SEC;
        int64_t delta = unix_sec * (int64_t) USEC_PER_SEC - (int64_t) now_realtime_usec();
        int64_t mono = (int64_t) now_usec() + delta;
        return mono > 0 ? (uint64_t) mono : 1;
}

struct managed_vm *find_vm(struct manager *m, const char *name) {
        for (size_t i = 0; i < m->n_vms; i++)
                if (strcmp(m->vms[i]->entry.name, name) == 0)
                        return m->vms[i];
        return NULL;
}

/* The sizes `ppnctl status` shows (STATUS_UNKNOWN where nobody knows), without the text:
 * the history takes them for every VM every round. */
void status_sizes(const struct managed_vm *v, uint64_t *ret_target, uint64_t *ret_actual,
                         uint64_t *ret_available) {
        const struct vmlink_sample *x = backend_last(v->link);
        bool running = backend_get_state(v->link) == VMLINK_RUNNING;

        *ret_target = v->target ? v->target : STATUS_UNKNOWN;
        *ret_actual = running && x->actual_usec ? x->actual : STATUS_UNKNOWN;
        *ret_available = running && x->stats_update_sec && x->available != VMLINK_STAT_UNKNOWN ? x->available
                                                                                               : STATUS_UNKNOWN;
}

/* The split of a running VM's size: base, plugged (virtio-mem), balloon; and for a virtio-mem
 * VM the actuator's reason after the policy's. */
static void fill_memory_split(const struct managed_vm *v, struct vm_status *s) {
        const struct vmlink_sample *x = backend_last(v->link);
        const struct actuator_plan *p = backend_actuator_plan(v->link);
        uint64_t base = x->vmem ? x->base : v->entry.max_bytes;
        size_t used;

        s->base_bytes = s->plugged_bytes = s->balloon_bytes = STATUS_UNKNOWN;
        if (backend_get_state(v->link) != VMLINK_RUNNING)
                return;
        s->base_bytes = base;
        s->plugged_bytes = x->vmem ? x->plugged : STATUS_UNKNOWN;
        if (x->balloon && x->actual_usec)
                s->balloon_bytes = base > x->balloon_actual ? base - x->balloon_actual : 0;
        if (!p)
                return;
        used = strlen(s->reason);
        snprintf(s->reason + used, sizeof(s->reason) - used, "; vmem %s: %s", actuator_reason_to_string(p->reason),
                 p->why);
}

void fill_status(const struct managed_vm *v, uint64_t now, uint64_t real, struct vm_status *s) {
        const struct vmlink_sample *x = backend_last(v->link);
        enum vmlink_state ls = backend_get_state(v->link);

        *s = (struct vm_status) {
                .min_bytes = v->entry.min_bytes, .max_bytes = v->entry.max_bytes,
                .stats_age_usec = STATUS_UNKNOWN,
                .shares = v->entry.shares, .cpu_weight = v->entry.cpu_weight, .pid = backend_pid(v->link),
        };
        status_sizes(v, &s->target_bytes, &s->actual_bytes, &s->guest_available_bytes);
        snprintf(s->name, sizeof(s->name), "%s", v->entry.name);
        snprintf(s->state, sizeof(s->state), "%s", vmlink_state_to_string(ls));
        if (s->guest_available_bytes != STATUS_UNKNOWN) {
                uint64_t upd = x->stats_update_sec * USEC_PER_SEC;
                s->stats_age_usec = real > upd ? real - upd : 0;
        }
        s->free_page_reporting = ls == VMLINK_RUNNING && x->balloon && x->free_page_reporting;
        if (v->pstate.lease_kind != POLICY_LEASE_NONE && v->pstate.lease_expiry_usec > now)
                s->override_left_usec = v->pstate.lease_expiry_usec - now;
        if (ls != VMLINK_RUNNING)
                snprintf(s->reason, sizeof(s->reason), "%s", backend_why(v->link));
        else if (v->decided)
                snprintf(s->reason, sizeof(s->reason), "%s: %s", policy_reason_to_string(v->last.reason), v->last.why);
        else
                snprintf(s->reason, sizeof(s->reason), "%s", backend_why(v->link));
        fill_memory_split(v, s);
        if (v->cg_why[0] && ls == VMLINK_RUNNING) {
                size_t used = strlen(s->reason);
                text_copy(s->reason + used, sizeof(s->reason) - used, "; cpu: ");
                used = strlen(s->reason);
                text_copy(s->reason + used, sizeof(s->reason) - used, v->cg_why);
        }
}

static int open_cgroup(struct manager *m, struct ppn_error *err);
static bool apply_lease(struct managed_vm *v);

/* Puts QEMU into vm-NAME with the ledger weight. Failure costs CPU isolation, not memory control. */
static void place_in_cgroup(struct managed_vm *v) {
        struct manager *m = v->m;
        struct ppn_error err = { 0 };
        pid_t pid = backend_pid(v->link);
        int r;

        v->placed = false;
        r = backend_set_cpu_weight(v->link, v->entry.cpu_weight);
        if (r != -EOPNOTSUPP) {
                /* libvirt sets it on the domain's own cgroup (async; failures are logged there). */
                v->placed = r >= 0;
                v->placed_weight = v->entry.cpu_weight;
                v->cg_why[0] = '\0';
                return;
        }
        if (open_cgroup(m, &err) < 0) {
                text_copy(v->cg_why, sizeof(v->cg_why), err.msg);
                log_warning("%s: CPU weights unavailable: %s", v->entry.name, err.msg);
                return;
        }
        if (pid <= 0) {
                snprintf(v->cg_why, sizeof(v->cg_why), "QEMU pid unknown (no peer credentials)");
                return;
        }
        r = ppn_cgroup_vm_place(m->cg, v->entry.name, pid, v->entry.cpu_weight, &err);
        if (r < 0) {
                text_copy(v->cg_why, sizeof(v->cg_why), err.msg);
                log_warning("%s: cannot place QEMU pid %d in its cgroup: %s", v->entry.name, (int) pid, err.msg);
                return;
        }
        v->placed = true;
        v->placed_weight = v->entry.cpu_weight;
        v->cg_why[0] = '\0';
}

static void on_link_state(struct backend *l, enum vmlink_state old, const char *why, void *userdata) {
        struct managed_vm *v = userdata;
        struct manager *m = v->m;
        enum vmlink_state now = backend_get_state(l);

        if (now == VMLINK_RUNNING) {
                m->counters.reconnects += v->ever_running;
                v->ever_running = true;
                place_in_cgroup(v);
                /* A fresh start for the policy: the target in force is what the balloon holds. */
                v->pstate = (struct policy_vm_state) { 0 };
                v->fast = (struct fastgrow_state) { 0 };
                v->rss = v->rss_usec = v->settle_rss = v->rss_alloc = v->ask_rss = 0;     /* a new QEMU, perhaps */
                v->lease_applied = false;
                v->target = 0;
                v->decided = false;
                apply_lease(v);         /* an operator lease in the ledger survives re-adoption */
                if (v->placed && backend_is_libvirt(l))
                        manager_record(m, v->entry.name, "adopt", 0, 0, "%s; cpu weight %u on the domain's cgroup",
                                       why, v->placed_weight);
                else if (v->placed)
                        manager_record(m, v->entry.name, "adopt", 0, 0, "%s; QEMU pid %d in cgroup vm-%s, cpu weight %u",
                                       why, (int) backend_pid(l), v->entry.name, v->placed_weight);
                else
                        manager_record(m, v->entry.name, "adopt", 0, 0, "%s; QEMU pid %d; no cpu placement: %s", why,
                                       (int) backend_pid(l), v->cg_why);
                start_round(m);
        } else if (now == VMLINK_ABSENT && old != VMLINK_ABSENT) {
                v->placed = false;
                manager_record(m, v->entry.name, "absent", 0, 0, "%s; reservation of %" PRIu64 " MiB kept, "
                               "waiting for QEMU to return", why, v->entry.min_bytes / MIB);
        }
}

static void on_link_sampled(struct backend *l, void *userdata) {
        struct managed_vm *v = userdata;
        struct manager *m = v->m;

        if (!v->in_round)
                return;
        v->in_round = false;
        if (m->round_pending > 0 && --m->round_pending == 0)
                decide(m);
}

static void on_link_qmp_error(struct backend *l, const char *class, void *userdata) {
        struct managed_vm *v = userdata;
        metrics_count_error(&v->m->counters, class);
}

/* A virtio-mem step: recorded when it sends something or its reason changes. */
static void on_link_actuated(struct backend *l, const struct actuator_plan *p, void *userdata) {
        struct managed_vm *v = userdata;
        const struct vmlink_sample *x = backend_last(l);

        if (!p->set_requested && !p->set_value && p->reason == v->vmem_reason)
                return;
        v->vmem_reason = p->reason;
        manager_record(v->m, v->entry.name, actuator_reason_to_string(p->reason), x->plugged,
                       p->set_requested ? p->requested : x->requested, "virtio-mem: %s%s", p->why,
                       p->set_value ? "; balloon value sent" : "");
}

static const struct backend_callbacks link_callbacks = {
        .state_changed = on_link_state,
        .sampled = on_link_sampled,
        .error = on_link_qmp_error,
        .actuated = on_link_actuated,
};

void link_options(const struct manager *m, struct vmlink_options *o) {
        *o = (struct vmlink_options) {
                .stats_interval_sec = m->cfg->stats_interval_sec,
                .retry_max_usec = m->cfg->qmp_retry_max_usec,
        };
}

/* The ledger's QMP path, or RUNTIME_DIR/NAME.qmp when the entry has none. */
static char *qmp_path_for(const struct manager *m, const struct ledger_vm *e) {
        char *p = NULL;

        if (e->qmp)
                return strdup(e->qmp);
        if (asprintf(&p, "%s/%s.qmp", m->cfg->runtime_dir, e->name) < 0)
                return NULL;
        return p;
}

struct managed_vm *managed_vm_free(struct managed_vm *v) {
        if (!v)
                return NULL;
        backend_free(v->link);
        closep(&v->statm.fd);
        ledger_vm_done(&v->entry);
        history_ring_done(&v->history);
        free(v);
        return NULL;
}

static int managed_vm_new(struct manager *m, const struct ledger_vm *e, struct managed_vm **ret) {
        struct managed_vm *v = calloc(1, sizeof(*v));
        struct vmlink_options o;
        _cleanup_free_ char *path = NULL;
        int r;

        if (!v)
                return -ENOMEM;
        v->m = m;
        v->statm.fd = -1;
        v->cpu_usec = POLICY_STAT_UNKNOWN;
        r = ledger_vm_copy(e, &v->entry);
        path = qmp_path_for(m, e);
        if (r < 0 || !path || history_ring_init(&v->history, m->history_cap) < 0) {
                managed_vm_free(v);
                return -ENOMEM;
        }
        link_options(m, &o);
        /* backend_new() may call back (connect succeeds at once): v must be complete first. */
        *ret = v;
        r = backend_new(m->event, e->name, &(struct backend_where) { path, m->cfg->libvirt_uri, e->libvirt }, &o,
                        &link_callbacks, v, &v->link);
        if (r < 0) {
                *ret = managed_vm_free(v);
                return r;
        }
        return 0;
}

/* ---- ledger changes, applied live ---- */

static void apply_weight(struct managed_vm *v) {
        struct ppn_error err = { 0 };

        if (!v->placed || v->placed_weight == v->entry.cpu_weight)
                return;
        if (backend_set_cpu_weight(v->link, v->entry.cpu_weight) == -EOPNOTSUPP &&
            ppn_cgroup_vm_set_weight(v->m->cg, v->entry.name, v->entry.cpu_weight, &err) < 0) {
                text_copy(v->cg_why, sizeof(v->cg_why), err.msg);
                log_warning("%s: cannot set cpu weight %u: %s", v->entry.name, v->entry.cpu_weight, err.msg);
                return;
        }
        manager_record(v->m, v->entry.name, "cpu-weight", 0, 0, "cpu weight %u -> %u (ledger)", v->placed_weight,
                       v->entry.cpu_weight);
        v->placed_weight = v->entry.cpu_weight;
}

/* Hands the ledger's override lease to the policy when it changed. Expired leases are ignored. */
static bool apply_lease(struct managed_vm *v) {
        const struct ledger_vm *e = &v->entry;
        bool now_set = e->override_set && e->override_expires > (int64_t) (now_realtime_usec() / USEC_PER_SEC);

        if (now_set == v->lease_applied && (!now_set || (e->override_target_bytes == v->lease_target &&
                                                         e->override_expires == v->lease_expires)))
                return false;
        v->lease_applied = now_set;
        v->lease_target = e->override_target_bytes;
        v->lease_expires = e->override_expires;
        if (now_set) {
                policy_lease_set(&v->pstate, e->override_target_bytes, mono_from_unix_sec(e->override_expires));
                manager_record(v->m, e->name, "lease", v->target, e->override_target_bytes,
                               "operator lease to %" PRIu64 " MiB for %" PRId64 " s", e->override_target_bytes / MIB,
                               e->override_expires - (int64_t) (now_realtime_usec() / USEC_PER_SEC));
        } else if (v->pstate.lease_kind == POLICY_LEASE_OPERATOR) {
                policy_lease_clear(&v->pstate);
                manager_record(v->m, e->name, "release", 0, 0, "operator lease released; control resumes");
        }
        return true;
}

/* Updates one VM from its new ledger record. Returns true if the policy should run now. */
static bool update_vm(struct managed_vm *v, const struct ledger_vm *e) {
        bool qmp_changed = (e->qmp == NULL) != (v->entry.qmp == NULL) || (e->qmp && strcmp(e->qmp, v->entry.qmp) != 0) ||
                           (e->libvirt == NULL) != (v->entry.libvirt == NULL) ||
                           (e->libvirt && strcmp(e->libvirt, v->entry.libvirt) != 0);
        bool sizes = e->min_bytes != v->entry.min_bytes || e->max_bytes != v->entry.max_bytes ||
                     e->shares != v->entry.shares;
        struct ledger_vm copy;
        bool rerun;

        if (ledger_vm_copy(e, &copy) < 0)
                return false;
        if (sizes)
                manager_record(v->m, e->name, "ledger", 0, 0, "min %" PRIu64 " MiB, max %" PRIu64 " MiB, shares %u",
                               e->min_bytes / MIB, e->max_bytes / MIB, e->shares);
        ledger_vm_done(&v->entry);
        v->entry = copy;
        if (qmp_changed) {
                _cleanup_free_ char *path = qmp_path_for(v->m, e);
                backend_set_where(v->link, &(struct backend_where) { path, v->m->cfg->libvirt_uri, e->libvirt });
        }
        apply_weight(v);
        rerun = apply_lease(v);
        if (sizes || rerun)
                v->unsettled = true;    /* its statistics at the next round (settle.h) */
        return sizes || rerun;
}

/* A ring that cannot be resized (no memory) keeps its size. */
void manager_size_histories(struct manager *m, size_t n) {
        size_t cap = history_capacity_for(m->cfg->history_memory, n);

        if (cap == m->history_cap)
                return;
        m->history_cap = cap;
        for (size_t i = 0; i < m->n_vms; i++)
                history_ring_resize(&m->vms[i]->history, cap);
}

/* Brings the VM table in line with the ledger snapshot: adds, updates, removes. */
static bool sync_vms(struct manager *m, const struct ledger_state *st) {
        struct managed_vm **next = calloc(st->n_vms + 1, sizeof(*next));
        bool rerun = false;

        if (!next)
                return false;
        /* Before adding: the new VMs' rings take the size for the new count. */
        manager_size_histories(m, st->n_vms);
        for (size_t i = 0; i < st->n_vms; i++) {
                struct managed_vm *v = find_vm(m, st->vms[i].name);
                if (v)
                        rerun |= update_vm(v, &st->vms[i]);
                else if (managed_vm_new(m, &st->vms[i], &v) == 0) {
                        manager_record(m, v->entry.name, "added", 0, 0, "in the ledger: min %" PRIu64 " MiB, max %"
                                       PRIu64 " MiB; %s", v->entry.min_bytes / MIB, v->entry.max_bytes / MIB,
                                       backend_why(v->link));
                        apply_lease(v);
                }
                next[i] = v;
        }
        for (size_t i = 0; i < m->n_vms; i++)
                if (!ledger_state_find(st, m->vms[i]->entry.name)) {
                        manager_record(m, m->vms[i]->entry.name, "removed", 0, 0,
                                       "no longer in the ledger; left running as it is, no longer managed");
                        if (m->vms[i]->in_round && m->round_pending > 0)
                                m->round_pending--;
                        managed_vm_free(m->vms[i]);
                }
        free(m->vms);
        m->vms = next;
        m->n_vms = st->n_vms;
        return rerun;
}

static int load_ledger(struct manager *m, struct ppn_error *err) {
        struct ledger_state *st = NULL;
        bool rerun;
        int r;

        r = ledger_load(m->ledger, &st, err);
        if (r < 0)
                return r;
        if (!st->node_ok)
                log_warning("ledger node settings unusable: %s", st->node_error);
        rerun = sync_vms(m, st);
        if (st->node_ok && (!m->lstate || m->lstate->node.physical_bytes != st->node.physical_bytes ||
                            m->lstate->node.reserve_bytes != st->node.reserve_bytes)) {
                manager_record(m, NULL, "node", 0, 0, "physical %" PRIu64 " MiB, reserve %" PRIu64 " MiB: capacity %"
                               PRIu64 " MiB", st->node.physical_bytes / MIB, st->node.reserve_bytes / MIB,
                               (st->node.physical_bytes - st->node.reserve_bytes) / MIB);
                rerun = true;
        }
        ledger_state_free(m->lstate);
        m->lstate = st;
        if (rerun)
                start_round(m);
        return 0;
}

static int on_ledger_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;
        struct ppn_error err = { 0 };
        int r = ledger_changed(m->ledger);

        if (r > 0 && load_ledger(m, &err) < 0)
                log_error("cannot reload the ledger %s: %s", m->cfg->ledger_path, err.msg);
        else if (r < 0)
                log_error_errno(r, "cannot check the ledger %s for changes: %m", m->cfg->ledger_path);
        sd_event_source_set_time_relative(s, LEDGER_POLL_USEC);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

int setup_ledger(struct manager *m, struct ppn_error *err) {
        const struct ledger_options o = { .meminfo_path = m->cfg->host_meminfo };
        int r = ledger_open(m->cfg->ledger_path, &o, &m->ledger, err);

        if (r < 0)
                return ppn_error_prefix(err, r, "opening the ledger %s", m->cfg->ledger_path);
        r = load_ledger(m, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "reading the ledger %s", m->cfg->ledger_path);
        (void) ledger_changed(m->ledger);      /* our own reads are not news */
        r = sd_event_add_time_relative(m->event, &m->ledger_source, CLOCK_MONOTONIC, LEDGER_POLL_USEC, 10000,
                                       on_ledger_poll, m);
        if (r < 0)
                return ppn_error_set(err, r, "cannot watch the ledger: %s", strerror(-r));
        return 0;
}

/* CPU placement is best effort: without a usable hierarchy the daemon still manages memory.
 * Opened on the first placement, so a daemon with no VM never touches the cgroup tree. */
static int open_cgroup(struct manager *m, struct ppn_error *err) {
        struct ppn_cgroup_options o = {
                .root = strcmp(m->cfg->cgroup_root, "auto") == 0 ? NULL : m->cfg->cgroup_root,
                .parent = m->cfg->cgroup_parent,
                /* Delegate=yes: our own group is the parent; we move into its leaf "ppnd". */
                .own_cgroup_file = m->cfg->cgroup_delegated ? "/proc/self/cgroup" : NULL,
                .daemon_leaf = m->cfg->cgroup_delegated ? "ppnd" : NULL,
        };
        int r;

        if (m->cg)
                return 0;
        r = ppn_cgroup_open(&o, &m->cg, err);
        if (r < 0) {
                m->cg = NULL;
                return r;
        }
        log_info("CPU pool: %s cgroups under %s", ppn_cgroup_mode_to_string(ppn_cgroup_get_mode(m->cg)),
                 ppn_cgroup_parent_path(m->cg));
        return 0;
}
