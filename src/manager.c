/* SPDX-License-Identifier: Apache-2.0 */
#include "manager.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "actuator.h"
#include "cgroup.h"
#include "control.h"
#include "fleet-agent.h"
#include "fastgrow.h"
#include "relocate-agent.h"
#include "history.h"
#include "hostmem.h"
#include "jsonutil.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "pool.h"
#include "status.h"
#include "backend.h"

enum { TOPIC_EVENTS = 1 };

/* The ledger is polled this often for commits by other processes (ppnctl): one read of the
 * WAL index each, and a change is applied within this period plus one controller round. */
#define LEDGER_POLL_USEC 250000

struct managed_vm {
        struct manager *m;
        struct ledger_vm entry;         /* the ledger's record as last loaded */
        struct backend *link;
        struct policy_vm_state pstate;  /* the policy's memory between ticks */
        uint64_t target;                /* target in force; 0 = none yet (take actual) */
        struct policy_decision last;    /* the latest decision (reason, numbers) */
        bool decided;
        bool placed;                    /* QEMU is in its cgroup */
        uint32_t placed_weight;
        char cg_why[192];               /* why CPU placement failed, "" if fine */
        bool lease_applied;             /* the ledger override as last handed to the policy */
        uint64_t lease_target;
        int64_t lease_expires;
        bool in_round;
        bool ever_running;              /* adopted before: the next adoption is a reconnect */
        struct history_ring history;    /* samples for ppnctl history/plot (HISTORY_SAMPLES_MAX) */
        enum actuator_reason vmem_reason; /* the virtio-mem actuator's last recorded reason */
        struct fastgrow_state fast;     /* RSS samples for the fast signal */
        int statm_fd;                   /* QEMU's /proc/PID/statm, kept open (-1: none) */
        pid_t statm_pid;
};

struct manager {
        sd_event *event;
        sd_event_source *tick_source;
        sd_event_source *ledger_source;
        struct ppn_config *cfg;
        char *config_path;
        struct control *control;
        struct eventlog events;
        struct ledger *ledger;
        struct ledger_state *lstate;
        struct ppn_cgroup *cg;
        struct policy_tunables tunables;
        struct managed_vm **vms;        /* sorted by name, as the ledger lists them */
        size_t n_vms;
        unsigned round_pending;         /* VMs whose sample is still due */
        struct pool_status pool;
        uint64_t ticks;
        const char *meminfo_path;
        const char *psi_path;
        char last_status[128];
        struct metrics_server *metrics; /* NULL unless [metrics] enabled */
        struct metrics_counters counters;
        /* The policy's input and output, kept between rounds: at 2,000 VMs a fresh calloc()
         * per round was half a megabyte mapped, faulted in and unmapped every second. */
        struct policy_vm *round_vms;
        struct policy_decision *round_decisions;
        size_t round_cap;
        struct fleet_agent *fleet;      /* NULL unless [fleet] enabled; runs off the loop */
        sd_event_source *fast_source;   /* the fast signal's 200 ms timer */
        struct fastgrow_tunables fast_tun;
        const char *proc_dir;
        struct relocate_agent *relocate;        /* live moves into this node; likewise */
};

/* ---- the VM table ---- */

/* Copies as much of src as fits (messages are cut, never overflowed). */
static void text_copy(char *dst, size_t len, const char *src) {
        size_t n = strnlen(src, len - 1);
        memcpy(dst, src, n);
        dst[n] = '\0';
}

/* unix_sec is bounded to LEDGER_LEASE_MAX_SEC from now first: no overflow whatever the ledger says. */
static uint64_t mono_from_unix_sec(int64_t unix_sec) {
        int64_t now_sec = (int64_t) (now_realtime_usec() / 1000000);
        if (unix_sec > now_sec + LEDGER_LEASE_MAX_SEC)
                unix_sec = now_sec + LEDGER_LEASE_MAX_SEC;
        if (unix_sec < now_sec - LEDGER_LEASE_MAX_SEC)
                unix_sec = now_sec - LEDGER_LEASE_MAX_SEC;
        int64_t delta = unix_sec * 1000000 - (int64_t) now_realtime_usec();
        int64_t mono = (int64_t) now_usec() + delta;
        return mono > 0 ? (uint64_t) mono : 1;
}

static struct managed_vm *find_vm(struct manager *m, const char *name) {
        for (size_t i = 0; i < m->n_vms; i++)
                if (strcmp(m->vms[i]->entry.name, name) == 0)
                        return m->vms[i];
        return NULL;
}

/* The sizes `ppnctl status` shows (STATUS_UNKNOWN where nobody knows), without the text:
 * the history takes them for every VM every round. */
static void status_sizes(const struct managed_vm *v, uint64_t *ret_target, uint64_t *ret_actual,
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

/* now and real: the monotonic and wall clocks, read once by the caller for all VMs. */
static void fill_status(const struct managed_vm *v, uint64_t now, uint64_t real, struct vm_status *s) {
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
                uint64_t upd = x->stats_update_sec * 1000000;
                s->stats_age_usec = real > upd ? real - upd : 0;
        }
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

static void start_round(struct manager *m);
static int tunables_from_config(const struct ppn_config *c, struct policy_tunables *ret, struct ppn_error *err);

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

static void decide(struct manager *m);

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

static void link_options(const struct manager *m, struct vmlink_options *o) {
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

static struct managed_vm *managed_vm_free(struct managed_vm *v) {
        if (!v)
                return NULL;
        backend_free(v->link);
        closep(&v->statm_fd);
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
        v->statm_fd = -1;
        r = ledger_vm_copy(e, &v->entry);
        path = qmp_path_for(m, e);
        if (r < 0 || !path || history_ring_init(&v->history, HISTORY_SAMPLES_MAX) < 0) {
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
        bool now_set = e->override_set && e->override_expires > (int64_t) (now_realtime_usec() / 1000000);

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
                               e->override_expires - (int64_t) (now_realtime_usec() / 1000000));
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
        return sizes || rerun;
}

/* Brings the VM table in line with the ledger snapshot: adds, updates, removes. */
static bool sync_vms(struct manager *m, const struct ledger_state *st) {
        struct managed_vm **next = calloc(st->n_vms + 1, sizeof(*next));
        bool rerun = false;

        if (!next)
                return false;
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

/* ---- the controller round: sample every running VM, then decide and apply ---- */

static void start_round(struct manager *m) {
        if (m->round_pending > 0)
                return;         /* the round in flight decides with the newest state */
        for (size_t i = 0; i < m->n_vms; i++)
                if (backend_sample(m->vms[i]->link) == 0) {
                        m->vms[i]->in_round = true;
                        m->round_pending++;
                }
        if (m->round_pending == 0)
                decide(m);
}

/* A round still unfinished after a whole tick (a QMP command hanging until its 5 s timeout)
 * must not stall the others: decide with what has arrived. */
static void force_round_end(struct manager *m) {
        if (m->round_pending == 0)
                return;
        log_debug("round unfinished after a tick (%u VMs pending); deciding without them", m->round_pending);
        for (size_t i = 0; i < m->n_vms; i++)
                m->vms[i]->in_round = false;
        m->round_pending = 0;
        decide(m);
}

/* Decisions are taken only for VMs the daemon has adopted and measured at least once; the
 * others still count in the sums (held where they are) but their decisions are not kept. */
static bool decidable(const struct managed_vm *v) {
        const struct vmlink_sample *x = backend_last(v->link);
        return backend_get_state(v->link) == VMLINK_RUNNING && (!x->balloon || x->actual_usec);
}

static enum policy_driver driver_of(const struct managed_vm *v) {
        if (!decidable(v))
                return POLICY_DRIVER_DISCONNECTED;
        return backend_last(v->link)->balloon ? POLICY_DRIVER_OK : POLICY_DRIVER_NO_BALLOON;
}

/* One VM as the policy sees it. Times on the monotonic clock; QEMU's last-update converted. */
static void snapshot_vm(const struct managed_vm *v, uint64_t mono, uint64_t real, struct policy_vm *p) {
        const struct vmlink_sample *x = backend_last(v->link);
        enum policy_driver d = driver_of(v);
        /* Not measured yet: QEMU may hold its whole boot size. Absent: its last target, at least
         * its reservation. */
        uint64_t held = v->target ? v->target : backend_get_state(v->link) == VMLINK_ABSENT ? v->entry.min_bytes
                                                                                         : v->entry.max_bytes;

        *p = (struct policy_vm) {
                .name = v->entry.name, .min = v->entry.min_bytes, .max = v->entry.max_bytes,
                .shares = v->entry.shares, .driver = d, .state = v->pstate,
        };
        /* An absent VM keeps its last target (its reservation at least) in the sums. */
        p->actual = d == POLICY_DRIVER_OK && x->actual_usec ? x->actual : d == POLICY_DRIVER_NO_BALLOON ? v->entry.max_bytes : held;
        p->target = v->target ? v->target : p->actual;
        p->stats = (struct policy_guest_stats) {
                .available = x->available, .free = x->free, .total = x->total, .swap_in = x->swap_in,
                .swap_out = x->swap_out, .major_faults = x->major_faults,
        };
        if (d == POLICY_DRIVER_OK && x->stats_usec && x->stats_update_sec) {
                uint64_t age = real > x->stats_update_sec * 1000000 ? real - x->stats_update_sec * 1000000 : 0;
                p->stats.last_update_usec = mono > age ? mono - age : 1;
        }
}

static void read_host(struct manager *m, struct policy_node *n) {
        struct hostmem_meminfo mi;
        struct hostmem_psi psi;

        if (hostmem_read_meminfo(m->meminfo_path, &mi, NULL) == 0) {
                n->host_available = mi.available;
                n->host_available_known = true;
        }
        if (hostmem_read_psi(m->psi_path, &psi, NULL) > 0 && psi.some.valid) {
                n->psi_some_avg10 = psi.some.avg10;
                n->psi_known = true;
        }
}

static bool worth_recording(enum policy_reason old, const struct policy_decision *d, bool first) {
        if (d->apply)
                return true;
        if (!first && old == d->reason)
                return false;
        return d->reason != POLICY_REASON_STEADY && d->reason != POLICY_REASON_SMALL_CHANGE;
}

/* p is the policy's input for this VM: its target in force is where a change starts from (the
 * balloon's actual right after adoption, when ppnd has not set a target yet). */
static void apply_decision(struct managed_vm *v, const struct policy_vm *p, const struct policy_decision *d) {
        uint64_t old = p->target;
        bool first = !v->decided;
        enum policy_reason old_reason = v->last.reason;

        v->pstate = d->state;
        v->target = d->target;
        v->last = *d;
        v->decided = true;
        metrics_count_decision(&v->m->counters, d->reason);
        if (d->apply && backend_get_state(v->link) == VMLINK_RUNNING) {
                /* The policy guarantees min <= target <= max; this is the last line of that defence. */
                uint64_t t = d->target < v->entry.min_bytes ? v->entry.min_bytes : d->target;
                if (t != d->target)
                        log_error("%s: policy asked %" PRIu64 " below the minimum; clamped", v->entry.name, d->target);
                v->target = t;
                if (backend_set_target(v->link, t, v->entry.min_bytes) >= 0)
                        v->m->counters.balloon_commands++;
        }
        if (worth_recording(old_reason, d, first))
                manager_record(v->m, v->entry.name, policy_reason_to_string(d->reason), d->apply ? old : 0,
                               d->apply ? v->target : 0, "%s", d->why);
}

static void update_pool(struct manager *m, const struct policy_node *node) {
        _cleanup_free_ struct pool_vm *pv = calloc(m->n_vms + 1, sizeof(*pv));
        struct pool_figures f;

        if (!pv)
                return;
        m->pool.n_running = 0;
        for (size_t i = 0; i < m->n_vms; i++) {
                const struct managed_vm *v = m->vms[i];
                const struct vmlink_sample *x = backend_last(v->link);
                bool running = backend_get_state(v->link) == VMLINK_RUNNING;
                pv[i] = (struct pool_vm) { .name = v->entry.name, .min_bytes = v->entry.min_bytes,
                                           .max_bytes = v->entry.max_bytes, .actual_bytes = x->actual,
                                           .actual_known = running && x->actual_usec && x->balloon };
                m->pool.n_running += running;
        }
        uint64_t lent = m->lstate ? ledger_state_lent(m->lstate, (int64_t) (now_realtime_usec() / 1000000)) : 0;
        pool_compute(&(struct pool_node) { node->physical, node->reserve, lent }, pv, m->n_vms, &f);
        m->pool.physical_bytes = f.physical_bytes;
        m->pool.reserve_bytes = f.reserve_bytes;
        m->pool.reserved_min_bytes = f.reserved_min_bytes;
        m->pool.pool_available_bytes = f.pool_available_bytes;
        m->pool.committed_bytes = f.committed_bytes;
        m->pool.free_bytes = f.free_bytes;
        m->pool.n_vms = m->n_vms;
        m->pool.host_available_bytes = node->host_available_known ? node->host_available : STATUS_UNKNOWN;
        m->pool.psi_some_avg10 = node->psi_known ? node->psi_some_avg10 : -1;
        if (m->fleet)
                fleet_agent_update(m->fleet, &(struct fleet_capacity) {
                        .physical_bytes = f.physical_bytes, .reserve_bytes = f.reserve_bytes,
                        .reserved_min_bytes = f.reserved_min_bytes, .lent_bytes = f.lent_bytes,
                        .pool_available_bytes = f.pool_available_bytes, .committed_bytes = f.committed_bytes,
                        .free_bytes = f.free_bytes, .psi_some_avg10 = m->pool.psi_some_avg10, .n_vms = m->n_vms },
                        m->lstate ? m->lstate->trusted : NULL, m->lstate ? m->lstate->n_trusted : 0);
}

/* One history sample per VM and round; what is unknown (a VM not running) is kept as such. */
static void record_samples(struct manager *m, uint64_t real) {
        for (size_t i = 0; i < m->n_vms; i++) {
                struct managed_vm *v = m->vms[i];
                const struct vmlink_sample *x = backend_last(v->link);
                struct history_sample h = { .realtime_usec = real };

                status_sizes(v, &h.target_bytes, &h.actual_bytes, &h.guest_available_bytes);
                h.guest_total_bytes = h.guest_available_bytes != STATUS_UNKNOWN && x->total != VMLINK_STAT_UNKNOWN
                                              ? x->total : HISTORY_UNKNOWN;
                history_ring_add(&v->history, &h);
        }
}

/* Room for the policy's arrays for n VMs, zeroed as calloc() gave them. */
static int round_arrays(struct manager *m, size_t n) {
        if (n + 1 > m->round_cap) {
                size_t cap = (n + 1) * 2;
                struct policy_vm *pv = reallocarray(m->round_vms, cap, sizeof(*pv));
                if (pv)
                        m->round_vms = pv;
                struct policy_decision *d = pv ? reallocarray(m->round_decisions, cap, sizeof(*d)) : NULL;
                if (!d)
                        return -ENOMEM;
                m->round_decisions = d;
                m->round_cap = cap;
        }
        memset(m->round_vms, 0, (n + 1) * sizeof(*m->round_vms));
        memset(m->round_decisions, 0, (n + 1) * sizeof(*m->round_decisions));
        return 0;
}

static void decide(struct manager *m) {
        struct policy_node node = { .now_usec = now_usec() };
        uint64_t real = now_realtime_usec();
        struct policy_vm *pv;
        struct policy_decision *d;

        if (!m->lstate || round_arrays(m, m->n_vms) < 0)
                return;
        pv = m->round_vms;
        d = m->round_decisions;
        if (m->lstate->node_ok) {
                node.physical = m->lstate->node.physical_bytes;
                node.reserve = m->lstate->node.reserve_bytes;
        }
        read_host(m, &node);
        for (size_t i = 0; i < m->n_vms; i++)
                snapshot_vm(m->vms[i], node.now_usec, real, &pv[i]);
        update_pool(m, &node);
        /* Without node settings there is no capacity to keep within: hold everything. */
        if (!m->lstate->node_ok || policy_decide(&m->tunables, &node, pv, m->n_vms, d, NULL) < 0)
                return;
        for (size_t i = 0; i < m->n_vms; i++)
                if (pv[i].driver != POLICY_DRIVER_DISCONNECTED)
                        apply_decision(m->vms[i], &pv[i], &d[i]);
        record_samples(m, real);
}
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

static int setup_metrics(struct manager *m, struct ppn_error *err) {
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
        uint64_t now = now_realtime_usec(), span = UINT64_C(600) * 1000000, since;
        const struct managed_vm *v;
        json_object *name, *x, *o, *samples, *events;
        size_t omitted = 0;

        if (!json_object_object_get_ex(req, "vm", &name) || !json_object_is_type(name, json_type_string))
                return ppn_error_set(err, EINVAL, "history needs \"vm\": a VM name");
        v = find_vm(m, json_object_get_string(name));
        if (!v)
                return ppn_error_set(err, ENOENT, "no VM '%s' in the ledger; see 'ppnctl status'", json_object_get_string(name));
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
        json_object *v, *o, *arr;
        uint64_t after = 0, limit = 100;
        bool follow = false;
        size_t n;

        if (json_member_bool(req, "follow", &follow) == -EINVAL)
                return ppn_error_set(err, EINVAL, "events: \"follow\" must be true or false (a JSON boolean)");
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
        if (follow)
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

/* {"vms": [...], "pool": {...}}. The VMs' array is written as text (vm_status_write): built
 * as json-c objects it took ~100 ms of the loop at 2,000 VMs. */
static int req_status(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                      struct ppn_error *err) {
        struct manager *m = userdata;
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        json_object *o, *arr;
        uint64_t now = now_usec(), real = now_realtime_usec();

        if (!f)
                return ppn_error_set(err, ENOMEM, "out of memory");
        fputc('[', f);
        for (size_t i = 0; i < m->n_vms; i++) {
                struct vm_status st;
                fill_status(m->vms[i], now, real, &st);
                if (i)
                        fputc(',', f);
                vm_status_write(&st, f);
        }
        fputc(']', f);
        if (fclose(f) != 0) {
                free(text);
                return ppn_error_set(err, ENOMEM, "out of memory");
        }
        arr = json_object_new_raw(text);
        o = json_object_new_object();
        if (!o || !arr) {
                json_object_put(o);
                json_object_put(arr);
                return ppn_error_set(err, ENOMEM, "out of memory");
        }
        json_object_object_add(o, "vms", arr);
        json_object_object_add(o, "pool", pool_status_to_json(&m->pool));
        *ret = o;
        return 0;
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
                return ppn_error_set(err, EPERM, "release: only root may end an override (it changes what "
                                     "the controller does)");
        if (!name)
                return ppn_error_set(err, EINVAL, "release needs \"vm\": a VM name");
        v = find_vm(m, name);
        if (!v)
                return ppn_error_set(err, ENOENT, "no VM '%s' in the ledger; see 'ppnctl status'", name);
        if (v->pstate.lease_kind == POLICY_LEASE_DETECTED) {
                policy_lease_clear(&v->pstate);
                manager_record(m, name, "release", 0, 0, "override (balloon set outside ppnd) released by uid %u; "
                               "control resumes", (unsigned) uid);
                what = "detected";
        } else if (v->pstate.lease_kind == POLICY_LEASE_OPERATOR)
                what = "operator";
        *ret = json_object_new_object();
        if (!*ret)
                return ppn_error_set(err, ENOMEM, "out of memory");
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
        json_object *msg;
        va_list ap;

        va_start(ap, fmt);
        stored = eventlog_addv(&m->events, now_realtime_usec(), vm, kind, from, to, fmt, ap);
        va_end(ap);
        log_info("%s%s%s: %s", stored->vm, stored->vm[0] ? " " : "", stored->kind, stored->reason);
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

        char free_[FORMAT_SIZE_MAX];

        snprintf(line, sizeof(line), "%zu VMs, %" PRIu64 " running; pool free %s%s", m->n_vms, m->pool.n_running,
                 m->pool.free_bytes < 0 ? "-" : "",
                 format_size((uint64_t) (m->pool.free_bytes < 0 ? -m->pool.free_bytes : m->pool.free_bytes), free_, sizeof(free_)));
        if (strcmp(line, m->last_status) == 0)
                return;
        snprintf(m->last_status, sizeof(m->last_status), "%s", line);
        sd_notifyf(false, "STATUS=%s", line);
}

static void manager_tick(struct manager *m) {
        m->ticks++;
        force_round_end(m);
        start_round(m);
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
        struct ppn_error perr = { 0 };
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
        r = tunables_from_config(next, &m->tunables, &perr);
        if (r < 0) {
                log_error("reload: %s, keeping the running configuration", perr.msg);
                sd_notify(false, "READY=1");
                return;
        }
        log_set_max_level(next->log_level);
        sd_event_source_set_time_relative(m->tick_source, next->tick_usec);
        config_free(m->cfg);
        m->cfg = TAKE_PTR(next);
        for (size_t i = 0; i < m->n_vms; i++) {
                struct vmlink_options o;
                link_options(m, &o);
                backend_set_options(m->vms[i]->link, &o);
        }
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

/* The policy's tunables: config_load*() started from the policy's defaults, applied [policy]
 * and checked them; checked again here since a reload hands them over live. */
static int tunables_from_config(const struct ppn_config *c, struct policy_tunables *ret, struct ppn_error *err) {
        struct policy_tunables t = c->policy;
        int r;

        t.override_usec = c->override_usec;
        r = policy_tunables_check(&t, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "[policy]");
        *ret = t;
        return 0;
}

static int setup_ledger(struct manager *m, struct ppn_error *err) {
        int r = ledger_open(m->cfg->ledger_path, NULL, &m->ledger, err);

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
                .root_reserved = 8,     /* idle group members cannot lock root out */
                .idle_timeout_usec = m->cfg->control_idle_timeout_usec,
        };
        int r = resolve_group(m->cfg->control_group, &o.group, err);

        if (r < 0)
                return r;
        return control_new(m->event, &o, requests, ELEMENTSOF(requests), m, &m->control, err);
}

/* ---- the fast signal: QEMU's resident set every 200 ms (fastgrow.h) ---- */

#define FAST_PERIOD_USEC 200000

/* Resident bytes of v's QEMU from PROC/PID/statm; 0 if unreadable (it exited). The file stays
 * open between samples: a pread is a few µs, an open/read/close several times that, and at
 * 2,000 VMs this runs 10,000 times a second. */
static uint64_t read_rss(struct managed_vm *v, pid_t pid) {
        char path[64], buf[128];
        unsigned long long size, resident;
        ssize_t n;

        if (v->statm_pid != pid) {
                closep(&v->statm_fd);
                snprintf(path, sizeof(path), "%s/%d/statm", v->m->proc_dir, (int) pid);
                v->statm_fd = open(path, O_RDONLY | O_CLOEXEC);
                v->statm_pid = pid;
        }
        if (v->statm_fd < 0 || (n = pread(v->statm_fd, buf, sizeof(buf) - 1, 0)) <= 0)
                return 0;
        buf[n] = '\0';
        if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
                return 0;
        return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

/* Grows v now, within what the pool has free (the policy's figure from its last round, less
 * what fast grows took since). The policy sees it as its own growth: the target in force moves
 * and its hold after growth applies. */
static void fast_grow(struct managed_vm *v, const struct fastgrow_decision *d, uint64_t from) {
        struct manager *m = v->m;
        uint64_t want = d->target > from ? d->target - from : 0;
        uint64_t grant = m->pool.free_bytes > 0 && (uint64_t) m->pool.free_bytes < want ? (uint64_t) m->pool.free_bytes : want;

        if (m->pool.free_bytes <= 0 || grant < 16 * MIB)
                return;
        v->target = from + grant;
        v->pstate.last_grow_usec = now_usec();
        m->pool.free_bytes -= (int64_t) grant;
        if (backend_set_target(v->link, v->target, v->entry.min_bytes) >= 0)
                m->counters.balloon_commands++;
        manager_record(m, v->entry.name, "grow-fast", from, v->target, "%s; grown by %" PRIu64 " MiB before its next "
                       "statistics", d->why, grant / MIB);
}

static void fast_sample(struct managed_vm *v, uint64_t now, uint64_t real) {
        const struct vmlink_sample *x = backend_last(v->link);
        struct fastgrow_decision d;
        pid_t pid = backend_pid(v->link);
        uint64_t rss, upd = x->stats_update_sec * 1000000;

        if (backend_get_state(v->link) != VMLINK_RUNNING || pid <= 0 || !x->actual_usec || !v->decided ||
            v->pstate.lease_kind != POLICY_LEASE_NONE || !(rss = read_rss(v, pid)))
                return;
        struct fastgrow_vm in = {
                .rss = rss, .stats_update = x->stats_update_sec, .stats_age_usec = real > upd ? real - upd : 0,
                .available = x->available == VMLINK_STAT_UNKNOWN ? UINT64_MAX : x->available,
                .size = x->actual, .target = v->target ? v->target : x->actual, .max = v->entry.max_bytes,
        };
        if (fastgrow_sample(&v->m->fast_tun, &v->fast, &in, now, &d) == 0 && d.grow)
                fast_grow(v, &d, in.target > in.size ? in.target : in.size);
}

static int on_fast_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;
        uint64_t now = now_usec(), real = now_realtime_usec();

        if (m->cfg->fast_signal && m->lstate && m->lstate->node_ok)
                for (size_t i = 0; i < m->n_vms; i++)
                        fast_sample(m->vms[i], now, real);
        sd_event_source_set_time_relative(s, FAST_PERIOD_USEC);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int setup_fast_signal(struct manager *m, struct ppn_error *err) {
        int r;

        fastgrow_tunables_default(&m->fast_tun);
        r = sd_event_add_time_relative(m->event, &m->fast_source, CLOCK_MONOTONIC, FAST_PERIOD_USEC, 10000,
                                       on_fast_timer, m);
        return r < 0 ? ppn_error_set(err, r, "cannot set up the fast signal's timer: %s", strerror(-r)) : 0;
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
        m->meminfo_path = "/proc/meminfo";
        m->psi_path = "/proc/pressure/memory";
        m->proc_dir = "/proc";
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
        r = tunables_from_config(cfg, &m->tunables, err);
        if (r >= 0)
                r = setup_control(m, err);
        if (r >= 0)
                r = setup_ledger(m, err);
        if (r >= 0)
                r = setup_metrics(m, err);
        if (r >= 0)
                r = fleet_agent_from_config(cfg, &m->fleet, err);
        if (r >= 0)
                r = setup_fast_signal(m, err);
        if (r >= 0)
                r = relocate_agent_from_config(cfg, &m->relocate, err);
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
        relocate_agent_free(m->relocate);
        fleet_agent_free(m->fleet);
        control_free(m->control);
        metrics_server_free(m->metrics);
        for (size_t i = 0; i < m->n_vms; i++)
                managed_vm_free(m->vms[i]);
        free(m->vms);
        ledger_state_free(m->lstate);
        ledger_close(m->ledger);
        ppn_cgroup_free(m->cg);
        sd_event_source_disable_unref(m->ledger_source);
        sd_event_source_disable_unref(m->fast_source);
        sd_event_source_disable_unref(m->tick_source);
        sd_event_unref(m->event);
        eventlog_done(&m->events);
        free(m->round_vms);
        free(m->round_decisions);
        config_free(m->cfg);
        free(m->config_path);
        free(m);
        return NULL;
}
