/* SPDX-License-Identifier: Apache-2.0 */
/* The controller round (sample, decide, apply), the fast signal, and the loop: ticks, signals,
 * reload, and the manager's life from manager_new() to manager_free(). */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "hostmem.h"
#include "log.h"
#include "manager-internal.h"
#include "pool.h"

/* ---- the controller round: sample every running VM, then decide and apply ---- */

#define FAST_PERIOD_USEC (200 * USEC_PER_MSEC)
#define SETTLE_RSS_AGE_USEC (FAST_PERIOD_USEC + 50 * USEC_PER_MSEC)   /* the timer's period and its slack */

static void fast_sample(struct managed_vm *v, uint64_t now, uint64_t real, bool tick);
static bool fast_on(const struct manager *m);
static void controller_tunables(struct manager *m);
static uint64_t rss_now(struct managed_vm *v, uint64_t now, uint64_t age);
static bool rss_within(const struct managed_vm *v, uint64_t now, uint64_t age);
static void read_qemu_cpu(struct managed_vm *v);

/* Whether a rule uses v's CPU time: only the free page reporting rules do (the active rule,
 * policy_vm_reports()), so a VM they do not apply to needs no read of its CPU clock. */
static bool uses_cpu_time(const struct managed_vm *v) {
        const struct vmlink_sample *x = backend_last(v->link);
        return policy_vm_reports(&v->m->tunables, x->balloon && x->free_page_reporting);
}

/* What the settled rule knows of v at the start of a round, its RSS aside. */
static void settle_input(const struct managed_vm *v, uint64_t real, struct settle_vm *ret) {
        const struct vmlink_sample *x = backend_last(v->link);
        uint64_t upd = x->stats_update_sec * USEC_PER_SEC;
        *ret = (struct settle_vm) {
                .steady = v->decided && !v->unsettled && v->pstate.lease_kind == POLICY_LEASE_NONE && !v->last.apply &&
                          (v->last.reason == POLICY_REASON_STEADY || v->last.reason == POLICY_REASON_SMALL_CHANGE),
                .pressure = v->last.pressure, .size = x->actual,
                .target = v->target ? v->target : x->actual,
                .available = x->available == VMLINK_STAT_UNKNOWN || !x->stats_update_sec ? UINT64_MAX : x->available,
                .stats_read_usec = x->stats_usec, .stats_age_usec = real > upd ? real - upd : 0,
                .size_at_ask = v->settle_size, .rss_at_ask = v->settle_rss,
        };
}

/* Whether v could be settled this round whatever its RSS (settle_candidate()). */
static bool settle_may(const struct managed_vm *v, uint64_t real) {
        struct settle_vm s;
        if (!backend_last(v->link)->actual_usec)
                return false;
        settle_input(v, real, &s);
        return settle_candidate(&v->m->settle_tun, &s);
}

/* Whether the host allocated too little since v's RSS was last read for it to have risen to
 * where it would unsettle v (rss_move above its RSS when its statistics were last asked): its
 * QEMU can have grown by at most what the whole host allocated (/proc/vmstat). Then the round
 * need not read its RSS: its RSS in hand gives the settled rule the verdict a read would (a fall
 * of its RSS, memory its guest freed, is seen when the statistics are next read, at most
 * settled-stats-interval later). Its CPU time is another matter (start_round()). */
static bool rss_bounded(const struct managed_vm *v, uint64_t alloc) {
        if (!alloc || !v->rss_alloc || alloc < v->rss_alloc)
                return false;
        return !settle_rss_may_move(&v->m->settle_tun, v->rss, v->settle_rss, alloc - v->rss_alloc);
}

/* Whether v's guest statistics are read this round (settle.h): a settled VM's every
 * [controller] settled-stats-interval, any other's every round. QEMU's RSS (one pread, shared
 * with the fast signal; none when bounded, rss_bounded()) is read only for a VM that could be
 * settled; *ret_rss is it, else 0. */
static enum settle_verdict settle_of(struct managed_vm *v, uint64_t now, uint64_t real, bool bounded,
                                     uint64_t *ret_rss) {
        struct settle_vm s;

        *ret_rss = 0;
        if (!backend_last(v->link)->actual_usec)
                return SETTLE_READ;
        settle_input(v, real, &s);
        if (!settle_candidate(&v->m->settle_tun, &s))
                return SETTLE_READ;
        /* A read by the fast signal's timer in the last period will do: the rule looks for a move
         * of 32 MiB, not at the rate. */
        *ret_rss = s.rss = bounded ? v->rss : rss_now(v, now, SETTLE_RSS_AGE_USEC);
        return settle_judge(&v->m->settle_tun, &s, now, v->m->cfg->tick_usec);
}

/* The host's allocation counter now (bytes; 0 if unreadable), kept as the latest reading. */
static uint64_t read_alloc(struct manager *m) {
        uint64_t pages;

        if (hostmem_read_vmstat_alloc(m->cfg->host_vmstat, &pages, NULL) < 0 || pages > UINT64_MAX / m->page_size)
                return m->alloc_latest = 0;
        return m->alloc_latest = pages * m->page_size;
}

/* v's statistics are being asked for: what the settled rule compares them with next round, and
 * where the fast signal counts what the guest touches after them from (fastgrow_vm.rss_at_ask):
 * its RSS as the round read it (within half a period: read_qemu_proc()), else unknown. An older
 * read could predate the guest's report and count twice what it touched in between. */
static void stats_asked(struct managed_vm *v, uint64_t rss, uint64_t now) {
        v->settle_size = backend_last(v->link)->actual;
        v->settle_rss = rss;
        v->unsettled = false;
        v->ask_rss = rss_within(v, now, FAST_PERIOD_USEC / 2) ? v->rss : 0;
}

void start_round(struct manager *m) {
        uint64_t now = now_usec(), real = now_realtime_usec(), alloc;
        bool fast = fast_on(m);

        if (m->round_pending > 0)
                return;         /* the round in flight decides with the newest state */
        m->verified = false;
        alloc = read_alloc(m);
        for (size_t i = 0; i < m->n_vms; i++) {
                struct managed_vm *v = m->vms[i];
                bool running = backend_get_state(v->link) == VMLINK_RUNNING;
                bool bounded = running && rss_bounded(v, alloc) && settle_may(v, real);
                v->cpu_usec = POLICY_STAT_UNKNOWN;
                /* The round's sample of QEMU's RSS (the settled rule's, and the fast signal's at
                 * the tick), unless the timer read it within half a period. */
                if (running && !bounded)
                        rss_now(v, now, FAST_PERIOD_USEC / 2);
                /* Bounded or not, a VM whose CPU time a rule uses is read every round. The active
                 * rule asks whether QEMU used active_cpu_pct of a CPU over some tick: a reading
                 * after a gap spreads that tick over the whole span. A guest re-reading its page
                 * cache for 0.3 s every 3 s on a quiet host (nothing allocated, so bounded) was
                 * read once every few seconds, its passes averaged below the mark, and its cache
                 * taken as idle. */
                if (running && uses_cpu_time(v))
                        read_qemu_cpu(v);
                /* The fast signal's sample at the tick: once a tick is enough for a VM far from
                 * the grow condition (fastgrow_dense()); the 200 ms timer takes the others. */
                if (fast && running)
                        fast_sample(v, now, real, true);
                /* Asked of every VM, running or not: libvirt's link checks for a hang there. */
                uint64_t rss = 0;
                bool stats = !running || settle_of(v, now, real, bounded, &rss) != SETTLE_SKIP;
                m->counters.stats_deferred += !stats;
                v->skipped = !stats;
                if (stats && running)
                        /* What the statistics about to be read are compared with next round (no
                         * RSS read for a VM that could not settle: it is not settled then). */
                        stats_asked(v, rss, now);
                if (backend_sample(v->link, stats) == 0) {
                        v->in_round = true;
                        m->round_pending++;
                }
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

/* PROC/PID/NAME into buf (NUL-terminated, cut to len - 1 bytes) with one pread on a file kept
 * open for pid; its length, or -1 if unreadable (the process exited: the file is closed and
 * opened again at the next call, should the pid come back). */
static ssize_t proc_pread(const struct manager *m, struct proc_file *f, pid_t pid, const char *name, char *buf,
                          size_t len) {
        char path[64];
        ssize_t n;

        if (f->pid != pid || f->fd < 0) {
                closep(&f->fd);
                snprintf(path, sizeof(path), "%s/%d/%s", m->proc_dir, (int) pid, name);
                f->fd = open(path, O_RDONLY | O_CLOEXEC);
                f->pid = pid;
        }
        if (f->fd < 0 || (n = pread(f->fd, buf, len - 1, 0)) <= 0) {
                closep(&f->fd);
                f->fd = -1;
                return -1;
        }
        buf[n] = '\0';
        return n;
}

/* QEMU's CPU time, all its threads (into v->cpu_usec; POLICY_STAT_UNKNOWN if it cannot be read),
 * from the kernel's CPU-time clock of the process (clock_getcpuclockid(), kept per pid): one
 * clock_gettime(), no file. /proc/PID/stat, read for it until 8 Dec, has the kernel build 52
 * fields for one (3.5 µs a read here, against 0.4 µs for the clock and 1.2 µs for statm, which
 * the round reads for the RSS anyway). Any process may read another's CPU clock, as it may
 * read /proc/PID/stat. A pid reused by another process reads that process's clock until the
 * QMP connection's end tells ppnd; a counter that went back restarts the policy's baseline. */
static void read_qemu_cpu(struct managed_vm *v) {
        pid_t pid = backend_pid(v->link);
        struct timespec ts;

        v->cpu_usec = POLICY_STAT_UNKNOWN;
        if (pid <= 0)
                return;
        if (v->cpu_clock_pid != pid) {
                v->cpu_clock_pid = 0;
                if (clock_getcpuclockid(pid, &v->cpu_clock) != 0)
                        return;
                v->cpu_clock_pid = pid;
        }
        if (clock_gettime(v->cpu_clock, &ts) < 0 || ts.tv_sec < 0) {
                v->cpu_clock_pid = 0;
                return;
        }
        v->cpu_usec = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* One VM as the policy sees it. Times on the monotonic clock; QEMU's last-update converted. */
static void snapshot_vm(struct managed_vm *v, uint64_t mono, uint64_t real, struct policy_vm *p) {
        const struct vmlink_sample *x = backend_last(v->link);
        enum policy_driver d = driver_of(v);
        /* Not measured yet: QEMU may hold its whole boot size. Absent: its last target, at least
         * its reservation. */
        uint64_t held = v->target ? v->target : backend_get_state(v->link) == VMLINK_ABSENT ? v->entry.min_bytes
                                                                                         : v->entry.max_bytes;

        *p = (struct policy_vm) {
                .name = v->entry.name, .min = v->entry.min_bytes, .max = v->entry.max_bytes,
                .shares = v->entry.shares, .driver = d, .state = v->pstate,
                .cpu_usec = d == POLICY_DRIVER_DISCONNECTED ? POLICY_STAT_UNKNOWN : v->cpu_usec,
        };
        /* An absent VM keeps its last target (its reservation at least) in the sums. */
        p->actual = d == POLICY_DRIVER_OK && x->actual_usec ? x->actual : d == POLICY_DRIVER_NO_BALLOON ? v->entry.max_bytes : held;
        p->target = v->target ? v->target : p->actual;
        /* Being adopted (or started) and not read yet: counted at its max, which must not make
         * the pool cut the VMs it has read (at 2,000 VMs a round during adoption shrank 1,000+
         * of them by over-commit, and they grew back once the rest were read). */
        p->unmeasured = d == POLICY_DRIVER_DISCONNECTED && !v->target && backend_get_state(v->link) != VMLINK_ABSENT;
        p->reports_free_pages = d == POLICY_DRIVER_OK && x->free_page_reporting;
        p->stats = (struct policy_guest_stats) {
                .available = x->available, .free = x->free, .total = x->total, .swap_in = x->swap_in,
                .swap_out = x->swap_out, .major_faults = x->major_faults,
        };
        if (d == POLICY_DRIVER_OK && x->stats_usec && x->stats_update_sec) {
                uint64_t age = real > x->stats_update_sec * USEC_PER_SEC ? real - x->stats_update_sec * USEC_PER_SEC : 0;
                p->stats.last_update_usec = mono > age ? mono - age : 1;
        }
        /* A virtio-mem VM whose blocks are still moving is making progress, whatever its size did
         * this round: the actuator judges a stalled unplug itself (5 s without a block released:
         * unplug-stalled, then the balloon), and the policy's own stuck clock (also 5 s) starts
         * only after that. Both clocks ran from the same moment and raced: the policy, when it
         * came first, fixed the target at the size and cancelled the unplug (no fallback); in the
         * same round, it undid the fallback the actuator had just sent. */
        const struct actuator_plan *ap = backend_actuator_plan(v->link);
        if (ap && !ap->stalled && (ap->reason == ACTUATOR_UNPLUG || ap->reason == ACTUATOR_DEFLATE_FIRST ||
                                   ap->reason == ACTUATOR_PLUG))
                p->state.progress_usec = mono;
}

static void read_host(struct manager *m, struct policy_node *n) {
        struct hostmem_meminfo mi;
        struct hostmem_psi psi;

        if (hostmem_read_meminfo(m->cfg->host_meminfo, &mi, NULL) == 0) {
                n->host_available = mi.available;
                n->host_available_known = true;
        }
        m->host_over = n->host_available_known && policy_host_over(&m->tunables, n->physical, n->host_available);
        if (hostmem_read_psi(m->cfg->host_pressure, &psi, NULL) > 0 && psi.some.valid) {
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
        uint64_t lent = m->lstate ? ledger_state_lent(m->lstate, (int64_t) (now_realtime_usec() / USEC_PER_SEC)) : 0;
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

/* Whether d shrinks v on statistics this round did not read (v settled, settle.h). */
static bool shrinks_unread(const struct managed_vm *v, const struct policy_vm *p, const struct policy_decision *d) {
        return v->skipped && p->driver != POLICY_DRIVER_DISCONNECTED && d->apply && d->target < p->target;
}

/* A settled VM gives memory only on statistics read this round: its guest may have taken back
 * memory it had touched before (its RSS does not show that) since they were last read, up to
 * settled-stats-interval ago. When the policy would shrink such VMs, their statistics (and
 * QEMU's CPU time, where a rule uses it) are asked at once and nothing is applied: the last of
 * them to arrive runs decide() again, on them (one such pass a round). True if the decisions
 * were set aside for that. */
static bool verify_donors(struct manager *m, const struct policy_vm *pv, const struct policy_decision *d) {
        if (m->verified)
                return false;
        m->verified = true;
        for (size_t i = 0; i < m->n_vms; i++) {
                struct managed_vm *v = m->vms[i];
                if (!shrinks_unread(v, &pv[i], &d[i]))
                        continue;
                if (backend_sample(v->link, true) != 0)
                        continue;               /* not asked: held back (held_back()) */
                /* Its CPU time unread at the round (the clock failed): once more. */
                if (uses_cpu_time(v) && v->cpu_usec == POLICY_STAT_UNKNOWN)
                        read_qemu_cpu(v);
                stats_asked(v, v->rss, now_usec());
                v->skipped = false;
                m->counters.stats_deferred--;
                v->in_round = true;
                m->round_pending++;
        }
        if (m->round_pending == 0)
                return false;
        log_debug("%u settled VMs to shrink: their statistics read before the decision", m->round_pending);
        return true;
}

/* A shrink on unread statistics that verify_donors() could not have read (its read failed, or
 * the policy chose it only in the pass after the reads): not applied; the VM is read next round
 * and the policy decides on that. The memory it would have given was never handed out: the
 * pool grants only what balloons have returned. */
static bool held_back(struct managed_vm *v, const struct policy_vm *p, const struct policy_decision *d) {
        if (!shrinks_unread(v, p, d))
                return false;
        v->unsettled = true;
        log_debug("%s: not shrunk on statistics not read this round; read next round", v->entry.name);
        return true;
}

void decide(struct manager *m) {
        struct policy_node node = { .now_usec = now_usec() };
        struct policy_summary sum = { 0 };
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
        if (!m->lstate->node_ok || policy_decide(&m->tunables, &node, pv, m->n_vms, d, &sum) < 0)
                return;
        m->fast_free = (int64_t) sum.free - (int64_t) sum.granted;
        if (verify_donors(m, pv, d))
                return;
        for (size_t i = 0; i < m->n_vms; i++)
                if (pv[i].driver != POLICY_DRIVER_DISCONNECTED && !held_back(m->vms[i], &pv[i], &d[i]))
                        apply_decision(m->vms[i], &pv[i], &d[i]);
        record_samples(m, real);
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
static int tunables_from_config(const struct ppn_config *c, struct policy_tunables *ret, struct ppn_error *err);

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
        controller_tunables(m);
        manager_size_histories(m, m->n_vms);
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

/* ---- the fast signal: QEMU's resident set every 200 ms (fastgrow.h) ---- */

/* Resident bytes of v's QEMU from PROC/PID/statm; 0 if unreadable (it exited). The file stays
 * open between samples: a pread is a few µs, an open/read/close several times that. The
 * second field is read in place (no sscanf): this runs up to 10,000 times a second. */
static uint64_t read_rss(struct managed_vm *v, pid_t pid) {
        char buf[128], *p, *end;
        unsigned long long resident;
        ssize_t n = proc_pread(v->m, &v->statm, pid, "statm", buf, sizeof(buf));

        if (n <= 0)
                return 0;
        p = memchr(buf, ' ', (size_t) n);       /* "size resident shared ..." in pages */
        if (!p || p[1] < '0' || p[1] > '9')
                return 0;
        errno = 0;
        resident = strtoull(p + 1, &end, 10);
        if (errno || (*end != ' ' && *end != '\n' && *end != '\0'))
                return 0;
        return (uint64_t) resident * v->m->page_size;
}

/* Read less than age µs ago. */
static bool rss_within(const struct managed_vm *v, uint64_t now, uint64_t age) {
        return v->rss_usec && now >= v->rss_usec && now - v->rss_usec < age;
}

/* The fast signal sampled v within half a period: the tick's sample and the timer's are one. */
static bool fast_recent(const struct managed_vm *v, uint64_t now) {
        uint64_t last = fastgrow_last(&v->fast);
        return last && now >= last && now - last < FAST_PERIOD_USEC / 2;
}

/* v's QEMU's resident set (kept in v->rss) as read less than age µs ago, or now; 0 if unknown
 * (no pid: libvirt, or it exited). The settled rule and the fast signal share the reads. */
static uint64_t rss_now(struct managed_vm *v, uint64_t now, uint64_t age) {
        pid_t pid = backend_pid(v->link);

        if (pid <= 0)
                return 0;
        if (!rss_within(v, now, age)) {
                v->rss = read_rss(v, pid);
                v->rss_usec = now;
                v->rss_alloc = v->m->alloc_latest;
        }
        return v->rss;
}

/* Grows v now, within what the pool has free: the policy's own figure at its last round, less
 * what that round and fast grows since handed out (m->fast_free) — capacity less Σ targets for
 * the classic rules, host MemAvailable less the low mark for the reporting rules, never more
 * than the latter. The node's Σ actuals (status's "pool free") would be wrong for a reporting
 * pool: there Σ max is above the capacity by design, and the signal never ran. The policy sees
 * it as its own growth: the target in force moves and its hold after growth applies. */
static void fast_grow(struct managed_vm *v, const struct fastgrow_decision *d, uint64_t from) {
        struct manager *m = v->m;
        uint64_t grant = fastgrow_grant(m->fast_free, from, d->target);

        if (grant == 0) {
                m->fast_held_usec = now_usec();         /* look again once there is memory */
                return;
        }
        v->target = from + grant;
        v->pstate.last_grow_usec = now_usec();
        m->fast_free -= (int64_t) grant;
        if (backend_set_target(v->link, v->target, v->entry.min_bytes) >= 0)
                m->counters.balloon_commands++;
        manager_record(m, v->entry.name, "grow-fast", from, v->target, "%s; grown by %" PRIu64 " MiB before its next "
                       "statistics", d->why, grant / MIB);
}

/* What the fast signal knows of v without reading anything (into *in); false if v cannot be
 * sampled at all (not running, not decided yet, under a lease). The same within a period. */
static bool fast_input(const struct managed_vm *v, uint64_t real, bool tick, struct fastgrow_vm *in) {
        const struct vmlink_sample *x = backend_last(v->link);
        const struct manager *m = v->m;
        uint64_t upd = x->stats_update_sec * USEC_PER_SEC;

        if (backend_get_state(v->link) != VMLINK_RUNNING || backend_pid(v->link) <= 0 || !x->actual_usec ||
            !v->decided || v->pstate.lease_kind != POLICY_LEASE_NONE)
                return false;
        *in = (struct fastgrow_vm) {
                .stats_update = x->stats_update_sec, .stats_age_usec = real > upd ? real - upd : 0,
                .rss_at_ask = v->ask_rss,
                .available = x->available == VMLINK_STAT_UNKNOWN ? UINT64_MAX : x->available,
                .size = x->actual, .target = v->target ? v->target : x->actual, .max = v->entry.max_bytes,
                /* The counter at the timer (at or before the tick), and the one before it there. */
                .alloc_now = m->alloc_cur,
                .alloc_then = tick ? m->alloc_cur : m->alloc_prev,
                .then_usec = tick ? m->alloc_cur_usec : m->alloc_prev_usec,
        };
        return true;
}

/* Whether the fast signal's sample of v now needs its RSS: from the 200 ms timer for a VM that
 * could reach the grow condition before the next tick (fastgrow_dense()) while the host
 * allocates memory (host_busy()), and at the tick (tick true) for the others and for every VM
 * whose RSS the round has just read with its CPU time. A VM read within half a period already
 * has this sample. */
static bool fast_wants(struct managed_vm *v, uint64_t now, bool tick, const struct fastgrow_vm *in) {
        struct manager *m = v->m;

        /* The RSS is read only when a sample could grow the VM (fastgrow_may_grow()): by the timer
         * when it could reach the grow condition before the next tick, else at the tick. */
        if (!fastgrow_may_grow(&m->fast_tun, &v->fast, in) || fast_recent(v, now))
                return false;
        /* At the tick a dense VM is sampled only with the RSS the round read: one the round did
         * not read (rss_bounded()) has grown by less than the host allocated, and the timer's
         * first busy period bounds it from there. */
        bool dense = fastgrow_dense(&m->fast_tun, &v->fast, in);
        if ((!tick && !dense) || (tick && dense && !rss_within(v, now, FAST_PERIOD_USEC / 2)))
                return false;
        return true;
}

/* Between ticks, no read where even all the host allocated since v's last sample would not grow
 * it (fastgrow_bounded_out()): on a busy host, most VMs far from their grow condition. Counted. */
static bool fast_bounded(struct managed_vm *v, uint64_t now, const struct fastgrow_vm *in) {
        if (!fastgrow_bounded_out(&v->m->fast_tun, &v->fast, in, now))
                return false;
        v->m->counters.fast_reads[1]++;
        return true;
}

/* The sample fast_wants() asked for: v's RSS read, the rule applied, v grown if it says so. */
static void fast_read(struct managed_vm *v, uint64_t now, bool tick, struct fastgrow_vm *in) {
        struct fastgrow_decision d;

        v->m->counters.fast_reads[0] += !tick;
        if (!(in->rss = rss_now(v, now, FAST_PERIOD_USEC / 2)))
                return;
        if (fastgrow_sample(&v->m->fast_tun, &v->fast, in, now, &d) == 0 && d.grow)
                fast_grow(v, &d, in->target > in->size ? in->target : in->size);
}

/* One sample of the fast signal for v, if it may grow (fast_wants()) and, between ticks, is not
 * bounded out (fast_bounded()). */
static void fast_sample(struct managed_vm *v, uint64_t now, uint64_t real, bool tick) {
        struct fastgrow_vm in;

        if (fast_input(v, real, tick, &in) && fast_wants(v, now, tick, &in) && (tick || !fast_bounded(v, now, &in)))
                fast_read(v, now, tick, &in);
}

/* With less free in the pool than a fast grow takes, no VM can be grown: nothing is read. */
static bool fast_on(const struct manager *m) {
        return m->cfg->fast_signal && m->lstate && m->lstate->node_ok && m->fast_free >= (int64_t) FASTGROW_GRANT_MIN;
}

/* The host's allocation counter, read once a period: false when it allocated too little since
 * the last period for any QEMU to have grown at a rate the fast signal acts on
 * (fastgrow_host_quiet()): then no VM is read. At 2,000 VMs that is 2,000 reads of statm saved
 * per quiet period. Unreadable (no /proc/vmstat): always busy, every VM read as before. */
static bool host_busy(struct manager *m, uint64_t now) {
        m->alloc_prev = m->alloc_cur;
        m->alloc_prev_usec = m->alloc_cur_usec;
        m->alloc_cur = read_alloc(m);
        m->alloc_cur_usec = m->alloc_cur ? now : 0;
        return !m->alloc_cur || !m->alloc_prev || m->alloc_cur < m->alloc_prev ||
               !fastgrow_host_quiet(&m->fast_tun, m->alloc_cur - m->alloc_prev, now - m->alloc_prev_usec);
}

/* Room in m->fast_picks for every VM; false if there is none (then the period reads them all). */
static bool fast_picks_room(struct manager *m) {
        if (m->fast_picks_cap >= m->n_vms)
                return true;
        struct fastgrow_pick *p = reallocarray(m->fast_picks, m->n_vms, sizeof(*p));
        if (!p)
                return false;
        m->fast_picks = p;
        m->fast_picks_cap = m->n_vms;
        return true;
}

/* One busy period's samples. Under [controller] fast-signal-reads, at most its share of a
 * period (reads a second × 200 ms) are read: the VMs nearest their grow condition by the host's
 * allocations (fastgrow_left(), fastgrow_pick()), the others not this period. They are taken
 * nearest first and the per-VM bound (fastgrow_bounded_out(), a replay of the rule) is checked
 * only on those, until the share is read: the VMs beyond it are deferred unchecked. Each VM is
 * read at the tick anyway (the round), so none waits more than a tick; a burst's VM is among the
 * nearest once it has touched what it had available, and is read first. */
static void fast_period(struct manager *m, uint64_t now, uint64_t real) {
        size_t cap = (size_t) (m->cfg->fast_signal_reads * FAST_PERIOD_USEC / USEC_PER_SEC), n = 0, done = 0;
        struct fastgrow_pick *p;
        struct fastgrow_vm in;

        if (cap == 0 && m->cfg->fast_signal_reads > 0)
                cap = 1;
        if (cap == 0 || m->n_vms <= cap || !fast_picks_room(m)) {
                for (size_t i = 0; i < m->n_vms; i++)
                        fast_sample(m->vms[i], now, real, false);
                return;
        }
        p = m->fast_picks;
        for (size_t i = 0; i < m->n_vms; i++) {
                struct managed_vm *v = m->vms[i];
                if (fast_input(v, real, false, &in) && fast_wants(v, now, false, &in))
                        p[n++] = (struct fastgrow_pick) {
                                fastgrow_left(&m->fast_tun, &v->fast, &in, now),
                                fastgrow_last(&v->fast), i };
        }
        /* The nearest first, a share at a time: a VM bounded out is not read and the next one is
         * looked at, until the share is read or none is left. */
        size_t reads = 0;
        while (reads < cap && done < n) {
                size_t k = cap - reads < n - done ? cap - reads : n - done;
                fastgrow_pick(p + done, n - done, k);
                for (size_t j = done; j < done + k; j++) {
                        struct managed_vm *v = m->vms[p[j].i];
                        /* The input again (cheap, and the same within the period). */
                        if (!fast_input(v, real, false, &in))
                                continue;
                        if (!fast_bounded(v, now, &in)) {
                                fast_read(v, now, false, &in);
                                reads++;
                        }
                }
                done += k;
        }
        m->counters.fast_reads[2] += n - done;
}

/* The host gone over capacity (policy_host_over()) between two ticks: the round runs now, not up
 * to a tick later. A real node there swaps, or its OOM killer picks a QEMU; and the policy's
 * answer, a balloon inflating in the quietest cache, frees host memory only once it has gone
 * through the donor's free memory that reporting already returned, so every part of a second
 * counts. Once per onset: while the host stays over, the tick's rounds carry on. One read of the
 * meminfo file a period. */
static void over_capacity_check(struct manager *m) {
        struct hostmem_meminfo mi;
        bool was = m->host_over;
        char avail[FORMAT_SIZE_MAX];

        if (!m->lstate || !m->lstate->node_ok || hostmem_read_meminfo(m->cfg->host_meminfo, &mi, NULL) < 0)
                return;
        m->host_over = policy_host_over(&m->tunables, m->lstate->node.physical_bytes, mi.available);
        if (!m->host_over || was || m->round_pending > 0)
                return;         /* a round in flight reads the host when it decides */
        log_info("host over capacity (MemAvailable %s): deciding now, not at the next tick",
                 format_size(mi.available, avail, sizeof(avail)));
        m->counters.early_rounds++;
        start_round(m);
}

static int on_fast_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;
        uint64_t now = now_usec(), real = now_realtime_usec();

        over_capacity_check(m);
        if (!fast_on(m))
                m->fast_held_usec = now;
        else {
                /* After the signal could not act (a grow with no memory free, or none free at all),
                 * every period reads for one window whatever the host: a burst that filled its
                 * guest meanwhile is still in the rate when memory comes back, though the host may
                 * have gone quiet. */
                bool busy = host_busy(m, now) || now - m->fast_held_usec < m->fast_tun.window_usec + FAST_PERIOD_USEC;
                m->counters.fast_periods[busy]++;
                if (busy)
                        fast_period(m, now, real);
        }
        sd_event_source_set_time_relative(s, FAST_PERIOD_USEC);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* The fast signal's and the settled rule's tunables that come from the config in force (at
 * start and after a reload): set once, not per VM and round. */
static void controller_tunables(struct manager *m) {
        m->fast_tun.top_rate = m->cfg->fast_signal_rate;
        m->fast_tun.sparse_usec = m->cfg->tick_usec;
        m->settle_tun.interval_usec = m->cfg->settled_stats_interval_usec;
        m->settle_tun.stale_usec = m->tunables.stale_usec;
}

static int setup_fast_signal(struct manager *m, struct ppn_error *err) {
        int r;

        fastgrow_tunables_default(&m->fast_tun);
        settle_tunables_default(&m->settle_tun);
        controller_tunables(m);
        r = sd_event_add_time_relative(m->event, &m->fast_source, CLOCK_MONOTONIC, FAST_PERIOD_USEC, 10000,
                                       on_fast_timer, m);
        return r < 0 ? ppn_error_set(err, r, "cannot set up the fast signal's timer: %s", strerror(-r)) : 0;
}

int manager_new(struct ppn_config *cfg, const char *config_path, struct manager **ret, struct ppn_error *err) {
        _cleanup_(manager_freep) struct manager *m = calloc(1, sizeof(*m));
        int r;

        if (!m) {
                config_free(cfg);
                return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        m->cfg = cfg;
        m->pool.host_available_bytes = STATUS_UNKNOWN;
        m->pool.psi_some_avg10 = -1;
        m->proc_dir = "/proc";
        m->page_size = (uint64_t) sysconf(_SC_PAGESIZE);
        if (config_path && !(m->config_path = strdup(config_path)))
                return ppn_error_set(err, -ENOMEM, "out of memory");
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
        free(m->fast_picks);
        config_free(m->cfg);
        free(m->config_path);
        free(m);
        return NULL;
}
