/* SPDX-License-Identifier: Apache-2.0 */
#include "policy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* QEMU's last-update has whole-second resolution: a sample may look up to 1 s "in the future"
 * after the caller's clock conversion. Beyond 2 s it is nonsense. */
#define FUTURE_SLACK_USEC (2 * USEC_PER_SEC)
/* Growth under pressure covers what a fast allocator touches before help arrives: the next
 * 1 s statistics sample plus about 1 s for the balloon to deflate and the guest to see it. */
#define GROW_LOOKAHEAD_USEC (2 * USEC_PER_SEC)

void policy_tunables_default(struct policy_tunables *ret) {
        *ret = (struct policy_tunables) {
                /* Hyper-V keeps a 20 % buffer; 10 % with a 128 MiB floor keeps a 1 GiB guest's
                 * page cache and a burst of allocations alive without hoarding on big guests. */
                .headroom_bytes = 128 * MIB,
                .headroom_pct = 10,
                /* Below 64 MiB (or 5 % of its size) available, a Linux guest is reclaiming hard. */
                .pressure_available_bytes = 64 * MIB,
                .pressure_available_pct = 5,
                /* 1 MiB/s of swap-in (256 pages/s) is a working set that does not fit. */
                .swap_in_burst = 1 * MIB,
                /* Major faults also count file reads: 500/s (~2 MiB/s of 4 KiB faults) is a burst. */
                .major_fault_burst = 500,
                /* One step, not 5 %: 256 MiB or 25 % of the target, whichever is larger. */
                .grow_step_bytes = 256 * MIB,
                .grow_step_pct = 25,
                /* Halve the excess each tick: 4 GiB idle is 94 % reclaimed in 4 s, and the guest
                 * gets time to drop caches instead of swapping. */
                .shrink_pct = 50,
                /* No change under 16 MiB or 1 % of the maximum (MOM skips < 0.25 %, Proxmox < 10 MiB). */
                .min_step_bytes = 16 * MIB,
                .min_step_permille = 10,
                .host_low_bytes = 256 * MIB,
                .host_low_pct = 5,
                /* 1 % of wall time with a task stalled on memory, over 10 s: the host is paying. */
                .psi_some_threshold = 1.0,
                /* 5 stats intervals at 1 s. */
                .stale_usec = 5 * USEC_PER_SEC,
                /* As Xen squeezed: no progress for 5 s = stuck. */
                .stuck_usec = 5 * USEC_PER_SEC,
                .stuck_retry_usec = 60 * USEC_PER_SEC,
                .override_usec = 600 * USEC_PER_SEC,
                /* Overloads are short (88 % last < 2 min): do not take back at once what was
                 * just given unless the node needs it. */
                .shrink_hold_usec = 10 * USEC_PER_SEC,
                /* VMware's default idle memory tax. */
                .idle_tax_pct = 75,
                /* A tenth of a CPU over a tick: a guest reading its files or computing; an idle
                 * guest's timer ticks and statistics stay well below. Held 10 s, as after a
                 * growth (shrink_hold_usec): a working set re-read every few seconds stays active. */
                .active_cpu_pct = 10,
                .active_hold_usec = 10 * USEC_PER_SEC,
                /* Each VM as its balloon says: a target is a promise the capacity must cover
                 * unless the guest hands its free memory back (see pool_measure_reported). */
                .free_page_reporting = POLICY_FPR_AUTO,
        };
}

int policy_tunables_check(const struct policy_tunables *t, struct ppn_error *err) {
        if (t->headroom_pct > 100 || t->pressure_available_pct > 100 || t->grow_step_pct > 100 ||
            t->host_low_pct > 100)
                return ppn_error_set(err, -EINVAL, "policy: percentages must be 0..100");
        if (t->shrink_pct < 1 || t->shrink_pct > 100)
                return ppn_error_set(err, -EINVAL, "policy: shrink percentage %u outside 1..100", t->shrink_pct);
        if (t->active_cpu_pct > 100)
                return ppn_error_set(err, -EINVAL, "policy: active CPU percentage %u outside 0..100", t->active_cpu_pct);
        if (t->idle_tax_pct > 99)
                return ppn_error_set(err, -EINVAL, "policy: idle tax %u%% above 99%%", t->idle_tax_pct);
        if (t->min_step_bytes < MIB || t->min_step_permille > 1000)
                return ppn_error_set(err, -EINVAL, "policy: minimum step must be ≥ 1 MiB and ≤ 1000‰");
        if (t->grow_step_bytes < t->min_step_bytes)
                return ppn_error_set(err, -EINVAL, "policy: growth step below the minimum step");
        if (!(t->psi_some_threshold >= 0 && t->psi_some_threshold <= 100))
                return ppn_error_set(err, -EINVAL, "policy: PSI threshold outside 0..100");
        if (t->stale_usec == 0 || t->stuck_usec == 0 || t->override_usec == 0)
                return ppn_error_set(err, -EINVAL, "policy: stale, stuck and override times must be > 0");
        return 0;
}

static const char *const reason_names[_POLICY_REASON_MAX] = {
        [POLICY_REASON_STEADY] = "steady",
        [POLICY_REASON_GROW_PRESSURE] = "grow-pressure",
        [POLICY_REASON_GROW_HEADROOM] = "grow-headroom",
        [POLICY_REASON_WAIT_MEMORY] = "wait-memory",
        [POLICY_REASON_SHRINK_NODE] = "shrink-node",
        [POLICY_REASON_SHRINK_DEMAND] = "shrink-demand",
        [POLICY_REASON_SHRINK_FAIR] = "shrink-fair",
        [POLICY_REASON_SHRINK_OVERCOMMIT] = "shrink-overcommit",
        [POLICY_REASON_SMALL_CHANGE] = "small-change",
        [POLICY_REASON_CLAMP] = "clamp",
        [POLICY_REASON_HOLD_BAD_CONFIG] = "hold-bad-config",
        [POLICY_REASON_HOLD_DISCONNECTED] = "hold-disconnected",
        [POLICY_REASON_HOLD_NO_BALLOON] = "hold-no-balloon",
        [POLICY_REASON_HOLD_NO_STATS] = "hold-no-stats",
        [POLICY_REASON_HOLD_STALE_STATS] = "hold-stale-stats",
        [POLICY_REASON_HOLD_BAD_STATS] = "hold-bad-stats",
        [POLICY_REASON_STUCK] = "stuck",
        [POLICY_REASON_LEASE] = "lease",
        [POLICY_REASON_OVERRIDE] = "override",
        [POLICY_REASON_GUEST_DEFLATED] = "guest-deflated",
};

const char *policy_reason_to_string(enum policy_reason r) {
        if ((unsigned) r >= _POLICY_REASON_MAX)
                return NULL;
        return reason_names[r];
}

void policy_lease_set(struct policy_vm_state *s, uint64_t target, uint64_t expiry_usec) {
        /* An operator's explicit size is worth one more try even on a balloon found stuck. */
        s->stuck_since_usec = 0;
        s->stuck_actual = 0;
        s->lease_kind = POLICY_LEASE_OPERATOR;
        s->lease_target = target;
        s->lease_expiry_usec = expiry_usec;
}

void policy_lease_clear(struct policy_vm_state *s) {
        s->lease_kind = POLICY_LEASE_NONE;
        s->lease_target = 0;
        s->lease_expiry_usec = 0;
}

static uint64_t clampu(uint64_t v, uint64_t lo, uint64_t hi) {
        return v < lo ? lo : v > hi ? hi : v;
}

static uint64_t subu(uint64_t a, uint64_t b) {
        return a > b ? a - b : 0;
}

static uint64_t distu(uint64_t a, uint64_t b) {
        return a > b ? a - b : b - a;
}

static uint64_t pct_of(uint64_t v, unsigned pct) {
        return (uint64_t) ((unsigned __int128) v * pct / 100);
}

uint64_t policy_min_step(const struct policy_tunables *t, uint64_t max) {
        uint64_t s = (uint64_t) ((unsigned __int128) max * t->min_step_permille / 1000);
        if (s < t->min_step_bytes)
                s = t->min_step_bytes;
        return (s + MIB - 1) / MIB * MIB;   /* whole MiB: targets stay MiB-aligned */
}

/* Sizes in reason strings: "512M", "1.5G". */
#define SZ(v) format_size((v), (char[FORMAT_SIZE_MAX]) { 0 }, FORMAT_SIZE_MAX)

/* Working data of one VM during a tick. */
struct vm_work {
        const struct policy_vm *in;
        struct policy_decision *out;
        bool pinned;          /* target decided in classify(); the pool does not move it */
        uint64_t min_step;
        uint64_t t;           /* current target clamped to [min, max] */
        uint64_t use, headroom, need, ent;
        uint64_t grant;       /* bytes given from free memory this tick */
        uint64_t cap1, cap2;  /* what may be taken this tick: idle tier, fair-share tier */
        bool moving_down, moving_up;  /* balloon still on its way to the target in force */
        uint64_t taken1, taken2;
        bool reports;         /* free page reporting rules for this VM (vm_reports) */
        bool cache_kept;      /* active: its page cache was not counted as idle (donor_caps) */
        bool cache_yields;    /* the host over capacity and this the quietest active cache (pick_quietest) */
};

bool policy_vm_reports(const struct policy_tunables *t, bool reports_free_pages) {
        return t && (t->free_page_reporting == POLICY_FPR_YES ||
                     (t->free_page_reporting == POLICY_FPR_AUTO && reports_free_pages));
}

/* Whether the free page reporting rules apply to this VM. */
static bool vm_reports(const struct policy_tunables *tun, const struct policy_vm *v) {
        return policy_vm_reports(tun, v->reports_free_pages);
}

static void set_why(struct policy_decision *d, const char *fmt, ...) _printf_(2, 3);
static void set_why(struct policy_decision *d, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->why, sizeof(d->why), fmt, ap);
        va_end(ap);
}

/* Fixes the VM's target for this tick; apply when it differs from what is in force and the
 * driver can take a command. */
static void pin(struct vm_work *w, uint64_t target, enum policy_reason reason) {
        w->pinned = true;
        w->out->pinned = true;
        w->out->target = target;
        w->out->reason = reason;
        w->out->apply = target != w->in->target && w->in->driver == POLICY_DRIVER_OK;
}

/* Resets progress tracking to "the target in force was just set, actual is where it is". */
static void progress_reset(struct policy_vm_state *s, uint64_t now, uint64_t target, uint64_t actual) {
        s->set_usec = now;
        s->set_target = target;
        s->actual_at_set = actual;
        s->best_distance = distu(actual, target);
        s->progress_usec = now;
}

static uint64_t counter_rate(uint64_t prev, uint64_t cur, uint64_t dt_usec) {
        if (prev == POLICY_STAT_UNKNOWN || cur == POLICY_STAT_UNKNOWN || cur < prev || dt_usec == 0)
                return 0;   /* not reported, or the guest rebooted: restart the baseline */
        return (uint64_t) ((unsigned __int128) (cur - prev) * USEC_PER_SEC / dt_usec);
}

/* Counter rates over the last two distinct samples; unchanged while the sample is the same. */
static void update_rates(struct policy_vm_state *s, const struct policy_guest_stats *st, uint64_t actual) {
        uint64_t use = subu(actual, st->available);

        if (st->last_update_usec <= s->prev_update_usec)
                return;
        if (s->prev_update_usec != 0) {
                uint64_t dt = st->last_update_usec - s->prev_update_usec;
                s->swap_in_rate = counter_rate(s->prev_swap_in, st->swap_in, dt);
                s->major_fault_rate = counter_rate(s->prev_major_faults, st->major_faults, dt);
                /* Use falling (a free, or a deflate-on-oom guest giving back) is not growth. */
                s->use_growth_rate = use > s->prev_use ? counter_rate(s->prev_use, use, dt) : 0;
        }
        s->prev_update_usec = st->last_update_usec;
        s->prev_swap_in = st->swap_in;
        s->prev_major_faults = st->major_faults;
        s->prev_use = use;
}

/* Guest statistics are untrusted input: returns POLICY_REASON_STEADY if usable, else the hold
 * reason with its words in d->why. */
static enum policy_reason stats_check(const struct policy_tunables *tun, const struct policy_node *node,
                                      const struct policy_vm *vm, struct policy_decision *d) {
        const struct policy_guest_stats *st = &vm->stats;
        uint64_t now = node->now_usec;

        if (st->last_update_usec == 0 || st->available == POLICY_STAT_UNKNOWN || st->total == POLICY_STAT_UNKNOWN) {
                set_why(d, "no guest statistics (no driver, or stats polling off): target kept");
                return POLICY_REASON_HOLD_NO_STATS;
        }
        if (st->last_update_usec > now + FUTURE_SLACK_USEC) {
                set_why(d, "guest statistics dated %" PRIu64 " s in the future: target kept",
                        (st->last_update_usec - now) / USEC_PER_SEC);
                return POLICY_REASON_HOLD_BAD_STATS;
        }
        if (now > st->last_update_usec && now - st->last_update_usec > tun->stale_usec) {
                set_why(d, "guest statistics %" PRIu64 " s old (limit %" PRIu64 " s): target kept",
                        (now - st->last_update_usec) / USEC_PER_SEC, tun->stale_usec / USEC_PER_SEC);
                return POLICY_REASON_HOLD_STALE_STATS;
        }
        if (st->total == 0 || st->available > st->total ||
            (st->free != POLICY_STAT_UNKNOWN && st->free > st->total) || st->total > vm->max) {
                set_why(d, "nonsensical guest statistics (total %s, available %s, maximum %s): target kept",
                        SZ(st->total), SZ(st->available), SZ(vm->max));
                return POLICY_REASON_HOLD_BAD_STATS;
        }
        return POLICY_REASON_STEADY;
}

/* A lease made from a change behind our back: follow actual, send nothing (unless actual left
 * [min, max]: then the bound is restored, a reservation is not negotiable). */
/* An override holds a VM where someone put it, whatever that costs the guest; a guest under
 * pressure under one is flagged in its reason, so the operator sees what the override costs. */
static const char *starving_note(bool starving) {
        return starving ? "; STARVING: guest under memory pressure (ppnctl release ends the override)" : "";
}

static bool classify_followed(const struct policy_node *node, struct vm_work *w, bool starving) {
        const struct policy_vm *vm = w->in;
        struct policy_vm_state *s = &w->out->state;
        uint64_t target = clampu(vm->actual, vm->min, vm->max);

        if (s->lease_kind != POLICY_LEASE_DETECTED)
                return false;
        s->lease_target = vm->actual;
        progress_reset(s, node->now_usec, target, vm->actual);
        pin(w, target, POLICY_REASON_OVERRIDE);
        w->out->apply = target != vm->actual && vm->driver == POLICY_DRIVER_OK;
        set_why(w->out, "balloon set outside ppnd: following actual %s for %" PRIu64 " s more%s%s",
                SZ(vm->actual), (s->lease_expiry_usec - node->now_usec) / USEC_PER_SEC,
                target != vm->actual ? " (outside [min, max]: bound restored)" : "", starving_note(starving));
        return true;
}

/* Progress of actual toward the target in force. Returns true if actual moved AWAY from it by
 * more than a minimum step: someone else set the balloon (or the guest deflated itself). */
static bool track_progress(const struct policy_node *node, struct vm_work *w) {
        const struct policy_vm *vm = w->in;
        struct policy_vm_state *s = &w->out->state;
        uint64_t dist = distu(vm->actual, vm->target);

        if (s->set_usec == 0 || s->set_target != vm->target) {
                progress_reset(s, node->now_usec, vm->target, vm->actual);
                return false;
        }
        if (dist > s->best_distance + w->min_step)
                return true;
        if (dist < w->min_step || dist + MIB <= s->best_distance) {
                if (dist < s->best_distance)
                        s->best_distance = dist;
                s->progress_usec = node->now_usec;
        }
        return false;
}

static bool guest_short(const struct policy_tunables *tun, const struct policy_vm *vm) {
        uint64_t low = pct_of(vm->actual, tun->pressure_available_pct);
        return vm->stats.available < (low > tun->pressure_available_bytes ? low : tun->pressure_available_bytes);
}

/* Actual moved away from the target nobody changed here: adopt a guest's own deflate under
 * pressure (deflate-on-oom), otherwise make it an override lease. Never fought.
 *
 * A guest deflates itself the moment an allocation fails, between two of its statistics
 * samples: the sample in hand when the rise is first seen may be older than the burst and
 * show a comfortable guest. So a rise with fresh statistics is judged on a sample taken after
 * it was seen; meanwhile the target is kept and nothing is sent. A fall (the balloon
 * inflated) is never the guest's doing, and unusable statistics do not get better by waiting
 * (they turn stale within stale_usec): both are judged at once. */
static void classify_moved(const struct policy_tunables *tun, const struct policy_node *node,
                           struct vm_work *w, bool stats_ok) {
        const struct policy_vm *vm = w->in;
        struct policy_vm_state *s = &w->out->state;
        uint64_t target = clampu(vm->actual, vm->min, vm->max);
        bool rose = vm->actual > vm->target;

        if (rose && stats_ok && guest_short(tun, vm)) {
                s->rise_sample_usec = 0;
                pin(w, target, POLICY_REASON_GUEST_DEFLATED);
                s->last_grow_usec = node->now_usec;
                set_why(w->out, "guest took memory itself (deflate-on-oom): actual %s above target %s, adopted",
                        SZ(vm->actual), SZ(vm->target));
                return;
        }
        /* QEMU dates a sample in whole seconds and ppnd converts it to the monotonic clock
         * each round (a few µs apart): a newer sample is at least half a second newer. */
        if (rose && stats_ok &&
            (s->rise_sample_usec == 0 || vm->stats.last_update_usec < s->rise_sample_usec + USEC_PER_SEC / 2)) {
                if (s->rise_sample_usec == 0)
                        s->rise_sample_usec = vm->stats.last_update_usec;
                pin(w, w->t, POLICY_REASON_STEADY);
                set_why(w->out, "balloon rose to %s above target %s: judged on the guest's next sample "
                        "(its own deflate-on-oom, or a change outside ppnd)", SZ(vm->actual), SZ(vm->target));
                return;
        }
        s->rise_sample_usec = 0;
        s->lease_kind = POLICY_LEASE_DETECTED;
        s->lease_target = vm->actual;
        s->lease_expiry_usec = node->now_usec + tun->override_usec;
        pin(w, target, POLICY_REASON_OVERRIDE);
        w->out->apply = target != vm->actual && vm->driver == POLICY_DRIVER_OK;
        set_why(w->out, "balloon moved to %s, ppnd asked %s: changed outside ppnd, override lease for %" PRIu64 " s",
                SZ(vm->actual), SZ(vm->target), tun->override_usec / USEC_PER_SEC);
}

/* Stuck: not within a minimum step of the target and no progress for stuck_usec. The VM is
 * then fixed at its actual (both ways, as Xen squeezed does) until actual moves by itself or
 * stuck_retry_usec passes. */
static bool classify_stuck(const struct policy_tunables *tun, const struct policy_node *node, struct vm_work *w) {
        const struct policy_vm *vm = w->in;
        struct policy_vm_state *s = &w->out->state;
        uint64_t now = node->now_usec;

        if (s->stuck_since_usec == 0 && distu(vm->actual, vm->target) >= w->min_step &&
            subu(now, s->progress_usec) >= tun->stuck_usec) {
                s->stuck_since_usec = now;
                s->stuck_actual = vm->actual;
        } else if (s->stuck_since_usec != 0 &&
                   (distu(vm->actual, s->stuck_actual) >= w->min_step ||
                    subu(now, s->stuck_since_usec) >= tun->stuck_retry_usec)) {
                s->stuck_since_usec = 0;
                s->stuck_actual = 0;
                progress_reset(s, now, vm->target, vm->actual);
                return false;
        }
        if (s->stuck_since_usec == 0)
                return false;
        pin(w, clampu(vm->actual, vm->min, vm->max), POLICY_REASON_STUCK);
        set_why(w->out, "balloon stuck at %s (no progress for %" PRIu64 " s, %" PRIu64 " s ago): fixed at its actual, retry in %" PRIu64 " s",
                SZ(vm->actual), tun->stuck_usec / USEC_PER_SEC, subu(now, s->stuck_since_usec) / USEC_PER_SEC,
                (s->stuck_since_usec + tun->stuck_retry_usec - now) / USEC_PER_SEC);
        return true;
}

/* Use, headroom, pressure and need of a VM whose statistics are usable. */
static void classify_demand(const struct policy_tunables *tun, struct vm_work *w) {
        const struct policy_vm *vm = w->in;
        const struct policy_vm_state *s = &w->out->state;
        struct policy_decision *d = w->out;

        /* A balloon still more than a step away from its target gets no further step in the
         * same direction: piling targets on a slow balloon would hide a stuck one. */
        w->moving_down = vm->actual >= vm->target + w->min_step;
        w->moving_up = vm->target >= vm->actual + w->min_step;
        w->use = subu(vm->actual, vm->stats.available);
        w->headroom = pct_of(w->use, tun->headroom_pct);
        if (w->headroom < tun->headroom_bytes)
                w->headroom = tun->headroom_bytes;
        d->pressure = guest_short(tun, vm) ||
                (tun->swap_in_burst > 0 && s->swap_in_rate >= tun->swap_in_burst) ||
                (tun->major_fault_burst > 0 && s->major_fault_rate >= tun->major_fault_burst);
        w->need = w->use + w->headroom;
        if (d->pressure) {
                uint64_t step = pct_of(w->t, tun->grow_step_pct);
                uint64_t seen = (uint64_t) ((unsigned __int128) s->use_growth_rate * GROW_LOOKAHEAD_USEC / USEC_PER_SEC);
                if (step < tun->grow_step_bytes)
                        step = tun->grow_step_bytes;
                /* A guest allocating fast gets what it will have touched before the next
                 * sample and the balloon's move: its observed growth over the look-ahead. */
                if (step < seen)
                        step = seen;
                if (w->need < w->t + step)
                        w->need = w->t + step;
        }
        w->need = clampu(w->need, vm->min, vm->max);
        d->use = w->use;
        d->need = w->need;
}

/* QEMU's CPU time over the last tick, read on the host: a VM whose QEMU used at least
 * active_cpu_pct of a CPU is active for active_hold_usec. Not over a tick in which its balloon
 * inflated (a step or more above the target in force now, or at the last tick after a shrink
 * was sent: the tick it arrives counts the second before): the guest's vCPU is then busy giving
 * pages to the balloon, our own doing, not the guest's work (seen on real guests: an idle guest
 * whose balloon took 600 MiB counted as more recently active than a reader). */
static void update_activity(const struct policy_tunables *tun, const struct policy_node *node,
                            const struct vm_work *w, struct policy_vm_state *s) {
        const struct policy_vm *vm = w->in;
        uint64_t now = node->now_usec;
        bool inflating = vm->actual >= vm->target + w->min_step ||
                         (s->set_target == vm->target && s->actual_at_set >= s->set_target + w->min_step &&
                          s->best_distance >= w->min_step);

        /* Not read this tick (the QEMU disconnected, its /proc unreadable): the baseline stays,
         * and the next reading is judged over the whole span, which spreads a busy tick over it.
         * ppnd reads it every round for that reason (manager-round.c, start_round()). */
        if (vm->cpu_usec == POLICY_STAT_UNKNOWN)
                return;
        /* A counter that went back is a new QEMU process: only the baseline restarts. */
        if (!inflating && s->prev_cpu_at_usec != 0 && now > s->prev_cpu_at_usec && vm->cpu_usec > s->prev_cpu_usec &&
            (unsigned __int128) (vm->cpu_usec - s->prev_cpu_usec) * 100 >=
                    (unsigned __int128) (now - s->prev_cpu_at_usec) * tun->active_cpu_pct)
                s->active_usec = now;
        s->prev_cpu_usec = vm->cpu_usec;
        s->prev_cpu_at_usec = now;
}

static bool vm_active(const struct policy_tunables *tun, const struct policy_node *node, const struct vm_work *w) {
        uint64_t a = w->out->state.active_usec;
        return tun->active_hold_usec > 0 && a != 0 && node->now_usec - a < tun->active_hold_usec;
}

/* Expired leases end before anything else: control resumes from where the balloon is. */
static void expire_lease(const struct policy_node *node, const struct policy_vm *vm, struct policy_vm_state *s) {
        if (s->lease_kind == POLICY_LEASE_NONE || node->now_usec < s->lease_expiry_usec)
                return;
        policy_lease_clear(s);
        progress_reset(s, node->now_usec, vm->target, vm->actual);
}

static void classify(const struct policy_tunables *tun, const struct policy_node *node, struct vm_work *w) {
        const struct policy_vm *vm = w->in;
        struct policy_decision *d = w->out;

        *d = (struct policy_decision) { .target = vm->target, .state = vm->state };
        w->min_step = policy_min_step(tun, vm->max);
        if (vm->max == 0 || vm->min > vm->max) {
                pin(w, vm->target, POLICY_REASON_HOLD_BAD_CONFIG);
                d->apply = false;
                set_why(d, "bad entitlement (min %s, max %s): nothing done", SZ(vm->min), SZ(vm->max));
                return;
        }
        w->t = clampu(vm->target, vm->min, vm->max);
        if (vm->driver != POLICY_DRIVER_OK) {
                bool gone = vm->driver == POLICY_DRIVER_DISCONNECTED;
                pin(w, w->t, gone ? POLICY_REASON_HOLD_DISCONNECTED : POLICY_REASON_HOLD_NO_BALLOON);
                set_why(d, gone ? "QMP not connected: target kept" : "no balloon device: target kept");
                return;
        }
        expire_lease(node, vm, &d->state);
        update_activity(tun, node, w, &d->state);
        enum policy_reason verdict = stats_check(tun, node, vm, d);
        if (verdict == POLICY_REASON_STEADY)
                update_rates(&d->state, &vm->stats, vm->actual);
        bool starving = verdict == POLICY_REASON_STEADY && guest_short(tun, vm);
        if (classify_followed(node, w, starving))
                return;
        if (track_progress(node, w))
                return classify_moved(tun, node, w, verdict == POLICY_REASON_STEADY);
        d->state.rise_sample_usec = 0;
        if (classify_stuck(tun, node, w))
                return;
        if (d->state.lease_kind == POLICY_LEASE_OPERATOR) {
                uint64_t lease = clampu(d->state.lease_target, vm->min, vm->max);
                pin(w, lease, POLICY_REASON_LEASE);
                set_why(d, "operator lease %s%s for %" PRIu64 " s more%s", SZ(lease),
                        lease != d->state.lease_target ? " (clamped to [min, max])" : "",
                        (d->state.lease_expiry_usec - node->now_usec) / USEC_PER_SEC, starving_note(starving));
                return;
        }
        if (verdict != POLICY_REASON_STEADY)
                return pin(w, w->t, verdict);
        classify_demand(tun, w);
}


/* Weighted water-filling: x_i = clamp(lo_i + λ·weight_i, lo_i, hi_i) with Σ x_i = amount (or
 * every x_i = hi_i if that is less, every x_i = lo_i if amount ≤ Σ lo_i). Integer, exact up to
 * rounding down, deterministic. */
struct wf_item {
        uint64_t lo, hi, weight, x;
        bool done;
};

static void waterfill(struct wf_item *it, size_t n, uint64_t amount) {
        uint64_t sum_lo = 0;

        for (size_t i = 0; i < n; i++) {
                it[i].x = it[i].lo;
                it[i].done = it[i].hi <= it[i].lo || it[i].weight == 0;
                sum_lo += it[i].lo;
        }
        if (amount <= sum_lo)
                return;
        uint64_t rem = amount - sum_lo;
        for (;;) {
                unsigned __int128 wsum = 0;
                bool saturated = false;
                for (size_t i = 0; i < n; i++)
                        if (!it[i].done)
                                wsum += it[i].weight;
                if (wsum == 0)
                        return;
                /* Items whose room fits within their share at the current level are filled;
                 * the level only rises when they leave, so this never overfills. */
                for (size_t i = 0; i < n; i++) {
                        uint64_t room = it[i].hi - it[i].lo;
                        if (it[i].done || (unsigned __int128) room * wsum > (unsigned __int128) rem * it[i].weight)
                                continue;
                        it[i].x = it[i].hi;
                        it[i].done = true;
                        rem -= room;
                        saturated = true;
                }
                if (saturated)
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (!it[i].done)
                                it[i].x = it[i].lo + (uint64_t) ((unsigned __int128) rem * it[i].weight / wsum);
                return;
        }
}

/* The tick's node-level picture. */
struct pool {
        uint64_t capacity, committed, sum_targets, free, host_low;
        uint64_t deficit, granted, over, reclaim;
        uint64_t unmeasured;    /* Σ (target − min) of VMs not measured yet: not a reason to reclaim */
        bool node_short, contended, psi_high, host_avail_low;
        bool starving;          /* a VM under pressure still misses memory after the pool's grant */
        bool reported;          /* every VM reports free pages: free memory is the host's (pool_measure_reported) */
        size_t reporting;       /* VMs under the reporting rules (all, none, or a mixed pool) */
        uint64_t host_avail;    /* host MemAvailable (reported mode) */
        bool host_over;         /* host MemAvailable under a sixteenth of the low mark: over capacity */
};

static uint64_t work_target(const struct vm_work *w) {
        return w->pinned ? w->out->target : w->t;
}

/* With free page reporting, memory a guest holds free is back on the host within seconds: a
 * target above use costs the host nothing until the guest touches it. So growth is paid from
 * what the host really has — MemAvailable above the low mark — and Σ targets above the
 * capacity is no reason to reclaim (reported_over); memory is taken back when the node is
 * short or a VM waits (take_reported). */
static void pool_measure_reported(const struct policy_node *node, size_t n, struct pool *p) {
        if (n == 0 || p->reporting < n || !node->host_available_known)
                return;
        p->reported = true;
        p->host_avail = node->host_available;
        p->free = subu(node->host_available, p->host_low);
}

/* What a VM costs the capacity. A classic VM: its target (its actual while the balloon has not
 * reached it). In a mixed pool a reporting VM costs what the host backs, actual − guest
 * MemFree (its free memory is back on the host), at most that: its target above is no promise.
 * Without a usable MemFree it costs as a classic VM. */
static uint64_t charged(const struct vm_work *w, uint64_t t) {
        uint64_t c = t > w->in->actual ? t : w->in->actual;
        uint64_t f = w->in->stats.free;
        if (!w->reports || w->in->driver != POLICY_DRIVER_OK || f == POLICY_STAT_UNKNOWN || f > w->in->actual)
                return c;
        return c < w->in->actual - f ? c : w->in->actual - f;
}

uint64_t policy_host_low(const struct policy_tunables *t, uint64_t physical) {
        uint64_t low = pct_of(physical, t->host_low_pct);
        return low < t->host_low_bytes ? t->host_low_bytes : low;
}

bool policy_host_over(const struct policy_tunables *t, uint64_t physical, uint64_t host_available) {
        return host_available < policy_host_low(t, physical) / 16;
}

static void pool_measure(const struct policy_tunables *tun, const struct policy_node *node,
                         struct vm_work *w, size_t n, struct pool *p) {
        p->capacity = subu(node->physical, node->reserve);
        for (size_t i = 0; i < n; i++) {
                uint64_t t = work_target(&w[i]);
                p->reporting += w[i].reports;
                if (w[i].reports) {
                        p->sum_targets += charged(&w[i], t);
                        p->committed += charged(&w[i], t);
                } else {
                        p->sum_targets += t;
                        p->committed += t > w[i].in->actual ? t : w[i].in->actual;
                }
                if (w[i].in->unmeasured && w[i].in->driver == POLICY_DRIVER_DISCONNECTED)
                        p->unmeasured += subu(t, w[i].in->min);
        }
        /* Only memory really back in the pool is handed out: a shrinking balloon's pages count
         * until actual shows them returned. */
        p->free = subu(p->capacity, p->committed);
        p->host_low = policy_host_low(tun, node->physical);
        if (node->host_available_known) {
                p->host_avail_low = node->host_available < p->host_low;
                if (p->free > subu(node->host_available, p->host_low))
                        p->free = subu(node->host_available, p->host_low);
        }
        p->host_over = node->host_available_known && policy_host_over(tun, node->physical, node->host_available);
        p->psi_high = node->psi_known && node->psi_some_avg10 > tun->psi_some_threshold;
        p->node_short = p->host_avail_low || p->psi_high;
        pool_measure_reported(node, n, p);
}

/* With free page reporting the node is over only when the host is short, by what brings host
 * MemAvailable back to the growth mark (twice the low mark); Σ targets does not matter. */
static uint64_t reported_over(const struct pool *p) {
        return p->node_short ? subu(2 * p->host_low, p->host_avail) : 0;
}

/* Entitlements: what the pool left after pinned VMs is water-filled by shares over
 * [min, need]. Uncontended, everyone is entitled to its need. */
static int pool_entitle(struct vm_work *w, size_t n, struct pool *p) {
        _cleanup_free_ struct wf_item *it = calloc(n ? n : 1, sizeof(*it));
        uint64_t pinned = 0, sum_need = 0;

        if (!it)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (w[i].pinned)
                        pinned += w[i].out->target;
                else
                        sum_need += w[i].need;
        }
        uint64_t avail = subu(p->capacity, pinned);
        p->contended = sum_need > avail;
        for (size_t i = 0; i < n; i++)
                it[i] = (struct wf_item) { .lo = w[i].in->min, .hi = w[i].need, .weight = w[i].in->shares };
        if (p->contended) {
                for (size_t i = 0; i < n; i++)
                        if (w[i].pinned)
                                it[i].hi = it[i].lo = 0;
                waterfill(it, n, avail);
        }
        for (size_t i = 0; i < n; i++) {
                if (w[i].pinned)
                        continue;
                w[i].ent = p->contended ? it[i].x : w[i].need;
                w[i].out->fair_share = w[i].ent;
        }
        return 0;
}

/* A VM under pressure grows by whatever it is owed, however small: hysteresis is for VMs
 * that can wait. */
static bool is_grower(const struct vm_work *w) {
        return !w->pinned && !w->moving_up && w->ent > w->t &&
               (w->ent - w->t >= w->min_step || w->out->pressure);
}

/* Growth from free memory only; VMs under pressure first, then by shares. A grant smaller than
 * a minimum step is not worth a command: the VM waits for reclaim. */
static int pool_grant(struct vm_work *w, size_t n, struct pool *p) {
        _cleanup_free_ struct wf_item *it = calloc(n ? n : 1, sizeof(*it));

        if (!it)
                return -ENOMEM;

        for (int round = 0; round < 2; round++) {
                bool want_pressure = round == 0;
                for (size_t i = 0; i < n; i++) {
                        bool in = is_grower(&w[i]) && w[i].out->pressure == want_pressure;
                        uint64_t shares = w[i].in->shares ? w[i].in->shares : 1;
                        uint64_t deficit = (w[i].ent - w[i].t) / MIB * MIB;
                        it[i] = (struct wf_item) { .hi = in ? deficit : 0, .weight = in ? shares : 0 };
                }
                waterfill(it, n, p->free - p->granted);
                for (size_t i = 0; i < n; i++) {
                        uint64_t g = it[i].x / MIB * MIB;
                        /* Relief of pressure is never held back by the minimum step. */
                        if (g < w[i].min_step && g < it[i].hi && !w[i].out->pressure)
                                g = 0;
                        w[i].grant += g;
                        p->granted += g;
                }
        }
        /* What growers still miss is asked from donors; a shortfall under a step is not. */
        for (size_t i = 0; i < n; i++) {
                uint64_t shortfall = is_grower(&w[i]) ? subu((w[i].ent - w[i].t) / MIB * MIB, w[i].grant) : 0;
                bool pressure = w[i].out->pressure && shortfall > 0;
                if (shortfall >= w[i].min_step || pressure)
                        p->deficit += shortfall;
                p->starving |= pressure;
        }
        p->over = p->reported ? reported_over(p)
                              : subu(subu(p->sum_targets + p->granted, p->unmeasured), p->capacity);
        p->reclaim = p->deficit + p->over;
        return 0;
}

/* Idle memory within this band above use + headroom is never reclaimed: half the headroom,
 * at least a minimum step, so a target just set to use + headroom does not flap. */
static uint64_t hysteresis(const struct vm_work *w) {
        return w->headroom / 2 > w->min_step ? w->headroom / 2 : w->min_step;
}

/* The guest's free memory (MemFree), 0 when it does not say. */
static uint64_t guest_free(const struct vm_work *w) {
        uint64_t f = w->in->stats.free;
        return f == POLICY_STAT_UNKNOWN ? 0 : f;
}

/* What a donor may give this tick. The step is bounded to shrink_pct of its excess over its
 * entitlement (at least a minimum step): a guest is never emptied in one go. Tier 1 is idle
 * memory above use + headroom, only beyond the hysteresis band and not right after a growth
 * (unless the node is short or over-committed); tier 2, only under contention, is the rest
 * of the step down to the fair share. */
static void donor_caps(const struct policy_tunables *tun, const struct policy_node *node,
                       const struct pool *p, struct vm_work *w) {
        uint64_t excess = subu(w->t, w->ent);
        uint64_t step = pct_of(excess, tun->shrink_pct);
        uint64_t idle = subu(w->t, w->need);
        uint64_t hyst = hysteresis(w);
        uint64_t since_grow = subu(node->now_usec, w->out->state.last_grow_usec);
        bool urgent = p->node_short || p->over > 0 || p->starving;

        if (w->pinned || w->grant > 0 || excess == 0 || w->moving_down)
                return;
        if (step < w->min_step)
                step = w->min_step;
        /* With free page reporting the guest's free memory comes first and frees nothing on
         * the host: the step bounds what comes after it. */
        if (w->reports)
                step = guest_free(w) + pct_of(subu(excess, guest_free(w)), tun->shrink_pct);
        /* A reporting VM whose QEMU is running (vm_active) may be re-reading its page cache:
         * while no VM is out of memory, its idle memory is its free memory only. Its cache is
         * taken after it has been quiet for active_hold_usec, or down to its fair share under
         * contention (tier 2). */
        if (w->reports && !p->starving && !w->cache_yields && vm_active(tun, node, w) && idle > guest_free(w)) {
                idle = guest_free(w);
                w->cache_kept = true;
        }
        /* In a mixed pool a reporting VM's target above what it holds costs nothing: it gives
         * nothing for Σ targets over the capacity alone (only when the node is short or a VM
         * waits). */
        if (w->reports && !p->node_short && p->deficit == 0)
                return;
        /* Another VM is out of memory: a donor above its fair share gives down to it at once
         * (the balloon's speed is the only bound), not half its excess a tick. */
        if (p->starving && p->contended)
                step = excess;
        if (step > excess)
                step = excess;
        step = step / MIB * MIB;
        /* Hysteresis and the hold after growth protect against flapping, never against a VM
         * that is out of memory: with one starving, any idle memory above use + headroom goes. */
        if ((idle >= hyst || p->starving) &&
            (urgent || w->out->state.last_grow_usec == 0 || since_grow >= tun->shrink_hold_usec))
                w->cap1 = (idle < step ? idle : step) / MIB * MIB;
        if (p->contended)
                w->cap2 = step - w->cap1;
}

/* VMware's shares-per-page ratio with the idle tax: ρ = S / (P·(f + k·(1−f))), f the active
 * fraction of the pages P, k = 1/(1−τ). The lowest ρ gives first. */
static double donor_rho(const struct vm_work *w, unsigned tax_pct) {
        double pages = (double) subu(w->t, w->taken1 + w->taken2) / (double) MIB;
        double f, k = 100.0 / (double) (100 - tax_pct);

        if (pages <= 0)
                return 1e300;
        f = (double) w->use / MIB / pages;
        if (f > 1)
                f = 1;
        return (double) w->in->shares / (pages * (f + k * (1 - f)));
}

struct by_rho {
        double rho;
        size_t i;
};

static int by_rho_cmp(const void *a, const void *b) {
        const struct by_rho *x = a, *y = b;
        if (x->rho != y->rho)
                return x->rho < y->rho ? -1 : 1;
        return x->i < y->i ? -1 : x->i > y->i;
}

/* Whether x may give another step from tier (1 or 2): it has some of its cap left, and a first
 * step of less than the minimum only when a VM is starving. */
static bool greedy_may_give(const struct vm_work *x, int tier, bool starving) {
        uint64_t left = tier == 1 ? x->cap1 - x->taken1 : x->cap2 - x->taken2;
        return left > 0 && (left >= x->min_step || x->taken1 + x->taken2 > 0 || starving);
}

/* Restores the min-heap order (by_rho_cmp) of h[0..n) below k. */
static void rho_sift_down(struct by_rho *h, size_t n, size_t k) {
        for (;;) {
                size_t c = 2 * k + 1;
                if (c >= n)
                        return;
                if (c + 1 < n && by_rho_cmp(&h[c + 1], &h[c]) < 0)
                        c++;
                if (by_rho_cmp(&h[c], &h[k]) >= 0)
                        return;
                struct by_rho t = h[k];
                h[k] = h[c];
                h[c] = t;
                k = c;
        }
}

/* Takes up to want bytes from tier (1 or 2), a minimum step at a time from the lowest ρ (ties:
 * the lowest index), into *ret_got (may exceed want by less than a step: it stays in the pool).
 * The donors wait in a min-heap by ρ: a step changes only its donor's ρ (upward: fewer pages),
 * so each step costs O(log n), not a pass over every VM (at 2,000 VMs and GiBs to reclaim in
 * steps of tens of MiB, the pass was most of the policy's time). */
static int take_greedy(const struct policy_tunables *tun, struct vm_work *w, size_t n, int tier, uint64_t want,
                       bool starving, uint64_t *ret_got) {
        _cleanup_free_ struct by_rho *h = NULL;
        uint64_t got = 0;
        size_t hn = 0;

        *ret_got = 0;
        if (want == 0)
                return 0;
        h = calloc(n ? n : 1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (greedy_may_give(&w[i], tier, starving))
                        h[hn++] = (struct by_rho) { .rho = donor_rho(&w[i], tun->idle_tax_pct), .i = i };
        for (size_t k = hn / 2; k-- > 0;)
                rho_sift_down(h, hn, k);
        while (got < want && hn > 0) {
                struct vm_work *best = &w[h[0].i];
                uint64_t *taken = tier == 1 ? &best->taken1 : &best->taken2;
                uint64_t left = (tier == 1 ? best->cap1 : best->cap2) - *taken;
                uint64_t chunk = left < best->min_step ? left : best->min_step;
                /* The last piece may be smaller than a step if this VM already gives ≥ one. */
                if (want - got < chunk && best->taken1 + best->taken2 > 0)
                        chunk = (want - got + MIB - 1) / MIB * MIB;
                *taken += chunk;
                got += chunk;
                if (greedy_may_give(best, tier, starving))
                        h[0].rho = donor_rho(best, tun->idle_tax_pct);
                else
                        h[0] = h[--hn];
                rho_sift_down(h, hn, 0);
        }
        *ret_got = got;
        return 0;
}

/* What a donor yields to the host if its balloon takes `take` bytes: nothing for the guest's
 * free memory (free page reporting returned it already), the rest — page cache pushed out,
 * or anonymous memory pushed to swap — in full. */
static uint64_t host_yield(const struct vm_work *w, uint64_t take) {
        return subu(take, guest_free(w));
}

/* One pass over the donors, lowest ρ first, each allowed up to its tier-1 cap (tier 1) or
 * both caps (tier 2): a donor gives what covers want (host bytes), never more than its cap.
 * Returns the host bytes still wanted. */
static uint64_t reported_pass(struct vm_work *w, const struct by_rho *order, size_t n, int tier,
                              uint64_t want) {
        for (size_t k = 0; k < n && want > 0; k++) {
                struct vm_work *d = &w[order[k].i];
                uint64_t cap = tier == 1 ? d->cap1 : d->cap1 + d->cap2;
                uint64_t had = d->taken1 + d->taken2;
                uint64_t more = subu(host_yield(d, cap), host_yield(d, had));
                uint64_t take = cap;
                if (more == 0)
                        continue;
                if (more > want) {
                        /* The free memory (or what was taken already), then want more. */
                        uint64_t base = had > guest_free(d) ? had : guest_free(d);
                        take = (base + want + MIB - 1) / MIB * MIB;
                        if (take > cap)
                                take = cap;
                        more = want;
                }
                d->taken1 = take < d->cap1 ? take : d->cap1;
                d->taken2 = take - d->taken1;
                want -= more;
        }
        return want;
}

/* Free page reporting: shrinking a balloon over free memory frees nothing on the host, so the
 * pool asks donors, lowest ρ first, for their free memory plus what covers want in host bytes:
 * idle memory first (page cache a guest can drop), then, under contention, down to fair
 * shares. What no donor can cover waits for the next tick. */
static int take_reported(const struct policy_tunables *tun, const struct pool *p, struct vm_work *w,
                         size_t n, uint64_t want) {
        _cleanup_free_ struct by_rho *order = calloc(n ? n : 1, sizeof(*order));

        if (!order)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                order[i] = (struct by_rho) { .rho = donor_rho(&w[i], tun->idle_tax_pct), .i = i };
        qsort(order, n, sizeof(*order), by_rho_cmp);
        want = reported_pass(w, order, n, 1, want);
        if (want > 0 && p->contended)
                reported_pass(w, order, n, 2, want);
        return 0;
}

/* The host over capacity (MemAvailable under a sixteenth of the low mark, 16 MiB up to a 5 GiB
 * node: a real node is then about to swap or to OOM-kill a QEMU) is out of memory as a starving
 * VM is, but one cache suffices: of the reporting VMs whose page cache the active rule keeps (it
 * holds more than its free memory, and more than the hysteresis band, above use + headroom), the
 * one whose QEMU was on a CPU least recently loses the rule and gives like an inactive VM — the
 * host's own LRU, one VM at a time. While any reporting VM's balloon is inflating, memory is on
 * its way back and no cache yields: a second cache is never taken while the first is still
 * coming back. */
static void pick_quietest(const struct policy_tunables *tun, const struct policy_node *node,
                          struct vm_work *w, size_t n, const struct pool *p) {
        struct vm_work *q = NULL;

        if (!p->host_over || p->starving)
                return;
        for (size_t i = 0; i < n; i++)
                if (w[i].reports && w[i].moving_down)
                        return;
        for (size_t i = 0; i < n; i++) {
                uint64_t held = subu(w[i].in->actual, w[i].need);
                if (w[i].pinned || !w[i].reports || !vm_active(tun, node, &w[i]) || held <= guest_free(&w[i]) ||
                    held < hysteresis(&w[i]))
                        continue;
                if (!q || w[i].out->state.active_usec < q->out->state.active_usec)
                        q = &w[i];
        }
        if (q)
                q->cache_yields = true;
}

static int pool_reclaim(const struct policy_tunables *tun, const struct policy_node *node,
                        struct vm_work *w, size_t n, struct pool *p) {
        uint64_t want = p->reclaim, got = 0;
        int r;

        pick_quietest(tun, node, w, n, p);
        for (size_t i = 0; i < n; i++)
                donor_caps(tun, node, p, &w[i]);
        if (p->reported)
                return want > 0 ? take_reported(tun, p, w, n, want) : 0;
        if (p->node_short) {
                /* The node needs memory back: every donor gives its whole tier-1 step. */
                for (size_t i = 0; i < n; i++) {
                        w[i].taken1 = w[i].cap1;
                        got += w[i].cap1;
                }
        } else if ((r = take_greedy(tun, w, n, 1, want, p->starving, &got)) < 0)
                return r;
        want = subu(want, got);
        if (want > 0 && p->contended)
                return take_greedy(tun, w, n, 2, want, p->starving, &got);
        return 0;
}

static enum policy_reason shrink_reason(const struct pool *p, const struct vm_work *w) {
        /* With free page reporting "over" is the host's shortfall, never Σ targets. */
        bool for_overcommit = p->over > 0 && p->deficit == 0 && !p->reported;
        if (p->node_short && w->taken1 > 0)
                return POLICY_REASON_SHRINK_NODE;
        if (for_overcommit)
                return POLICY_REASON_SHRINK_OVERCOMMIT;
        return w->taken2 > 0 ? POLICY_REASON_SHRINK_FAIR : POLICY_REASON_SHRINK_DEMAND;
}

static void why_shrink(const struct policy_node *node, const struct pool *p, struct vm_work *w) {
        struct policy_decision *d = w->out;
        switch (d->reason) {
        case POLICY_REASON_SHRINK_NODE:
                if (w->cache_yields) {
                        set_why(d, "host over capacity (MemAvailable %s): quietest active cache (QEMU on a CPU %" PRIu64
                                   " s ago) reclaimed %s → %s",
                                SZ(node->host_available), subu(node->now_usec, d->state.active_usec) / USEC_PER_SEC,
                                SZ(w->in->target), SZ(d->target));
                        break;
                }
                set_why(d, "node short (%s): idle reclaimed %s → %s, keeping use %s + headroom %s",
                        p->host_avail_low ? "host MemAvailable low" : "host memory PSI high",
                        SZ(w->in->target), SZ(d->target), SZ(w->use), SZ(w->headroom));
                break;
        case POLICY_REASON_SHRINK_OVERCOMMIT:
                set_why(d, "targets exceed capacity %s by %s: %s → %s",
                        SZ(p->capacity), SZ(p->over), SZ(w->in->target), SZ(d->target));
                break;
        case POLICY_REASON_SHRINK_FAIR:
                set_why(d, "above its fair share %s under contention: %s → %s",
                        SZ(w->ent), SZ(w->in->target), SZ(d->target));
                break;
        default:
                set_why(d, "idle memory for other VMs' demand: %s → %s, keeping use %s + headroom %s",
                        SZ(w->in->target), SZ(d->target), SZ(w->use), SZ(w->headroom));
                break;
        }
}

/* Idle memory not taken this tick: say whether hysteresis, the hold after growth, or simply
 * nobody needing it kept it. */
static void idle_kept(const struct policy_node *node, const struct pool *p, struct vm_work *w) {
        struct policy_decision *d = w->out;
        uint64_t idle = subu(w->t, w->need);
        uint64_t since_grow = subu(node->now_usec, d->state.last_grow_usec);

        if (w->cache_kept && p->reclaim > 0) {
                d->reason = POLICY_REASON_SMALL_CHANGE;
                set_why(d, "active (QEMU on a CPU %" PRIu64 " s ago): its page cache is kept, only free memory %s is idle",
                        subu(node->now_usec, d->state.active_usec) / USEC_PER_SEC, SZ(guest_free(w)));
        } else if (idle < hysteresis(w)) {
                d->reason = POLICY_REASON_SMALL_CHANGE;
                set_why(d, "use %s + headroom %s: %s idle is inside the hysteresis band %s",
                        SZ(w->use), SZ(w->headroom), SZ(idle), SZ(hysteresis(w)));
        } else if (p->reclaim > 0 && d->state.last_grow_usec != 0 && w->cap1 == 0) {
                d->reason = POLICY_REASON_SMALL_CHANGE;
                set_why(d, "grown %" PRIu64 " s ago: its idle %s is not taken back yet",
                        since_grow / USEC_PER_SEC, SZ(idle));
        } else {
                d->reason = POLICY_REASON_STEADY;
                set_why(d, "use %s + headroom %s; idle %s kept: nobody needs it", SZ(w->use), SZ(w->headroom), SZ(idle));
        }
}

static void finalize_vm(const struct policy_node *node, const struct pool *p, struct vm_work *w) {
        const struct policy_vm *vm = w->in;
        struct policy_decision *d = w->out;
        uint64_t shrink = w->taken1 + w->taken2;

        d->target = clampu(w->t + w->grant - shrink, vm->min, vm->max);
        d->apply = d->target != vm->target;
        if (w->grant > 0) {
                d->reason = d->pressure ? POLICY_REASON_GROW_PRESSURE : POLICY_REASON_GROW_HEADROOM;
                d->state.last_grow_usec = node->now_usec;
                if (d->pressure)
                        set_why(d, "guest pressure (available %s, swap-in %s/s, %" PRIu64 " major faults/s): %s → %s",
                                SZ(vm->stats.available), SZ(d->state.swap_in_rate), d->state.major_fault_rate,
                                SZ(vm->target), SZ(d->target));
                else
                        set_why(d, "use %s + headroom %s above target: %s → %s",
                                SZ(w->use), SZ(w->headroom), SZ(vm->target), SZ(d->target));
        } else if (shrink > 0) {
                d->reason = shrink_reason(p, w);
                why_shrink(node, p, w);
        } else if (is_grower(w)) {
                d->reason = POLICY_REASON_WAIT_MEMORY;
                set_why(d, "needs %s more, none free yet (reclaiming %s from others)",
                        SZ(w->ent - w->t), SZ(p->reclaim));
        } else if (d->apply) {
                d->reason = POLICY_REASON_CLAMP;
                set_why(d, "target %s outside [min %s, max %s]: corrected to %s",
                        SZ(vm->target), SZ(vm->min), SZ(vm->max), SZ(d->target));
        } else if (w->moving_up || w->moving_down) {
                d->reason = POLICY_REASON_STEADY;
                set_why(d, "balloon on its way: actual %s, target %s", SZ(vm->actual), SZ(vm->target));
        } else if (w->ent > w->t) {
                d->reason = POLICY_REASON_SMALL_CHANGE;
                set_why(d, "use %s + headroom %s: %s more is below the minimum step %s",
                        SZ(w->use), SZ(w->headroom), SZ(w->ent - w->t), SZ(w->min_step));
        } else if (w->ent < w->t) {
                idle_kept(node, p, w);
        } else {
                d->reason = POLICY_REASON_STEADY;
                set_why(d, "use %s + headroom %s = target %s", SZ(w->use), SZ(w->headroom), SZ(w->t));
        }
}

static void summarize(const struct policy_node *node, const struct pool *p, const struct policy_decision *d,
                      size_t n, struct policy_summary *ret) {
        struct policy_summary s = {
                .capacity = p->capacity,
                .committed = p->committed,
                .targets_before = p->sum_targets,
                .free = p->free,
                .granted = p->granted,
                .reclaim_wanted = p->reclaim,
                .node_short = p->node_short,
                .contended = p->contended,
                .reporting = p->reporting,
        };
        for (size_t i = 0; i < n; i++)
                s.targets_after += d[i].target;
        snprintf(s.why, sizeof(s.why), "capacity %s, committed %s, free %s%s%s%s",
                 SZ(s.capacity), SZ(s.committed), SZ(s.free),
                 p->host_avail_low ? ", host MemAvailable low" : "", p->psi_high ? ", host memory PSI high" : "",
                 p->contended ? ", contended: fair shares apply" : "");
        *ret = s;
}

int policy_decide(const struct policy_tunables *tun, const struct policy_node *node,
                  const struct policy_vm *vms, size_t n,
                  struct policy_decision *decisions, struct policy_summary *summary) {
        _cleanup_free_ struct vm_work *w = NULL;
        struct pool p = { 0 };
        int r;

        if (!tun || !node || (n > 0 && (!vms || !decisions)))
                return -EINVAL;
        w = calloc(n ? n : 1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                w[i].in = &vms[i];
                w[i].out = &decisions[i];
                classify(tun, node, &w[i]);
                w[i].reports = vm_reports(tun, &vms[i]);
                decisions[i].reporting = w[i].reports;
        }
        pool_measure(tun, node, w, n, &p);
        r = pool_entitle(w, n, &p);
        if (r >= 0)
                r = pool_grant(w, n, &p);
        if (r >= 0)
                r = pool_reclaim(tun, node, w, n, &p);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!w[i].pinned)
                        finalize_vm(node, &p, &w[i]);
                if (decisions[i].apply)
                        progress_reset(&decisions[i].state, node->now_usec, decisions[i].target, vms[i].actual);
        }
        if (summary)
                summarize(node, &p, decisions, n, summary);
        return 0;
}
