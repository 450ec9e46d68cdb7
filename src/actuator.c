/* SPDX-License-Identifier: Apache-2.0 */
#include "actuator.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const reason_names[] = {
        [ACTUATOR_STEADY] = "steady",
        [ACTUATOR_PLUG] = "plug",
        [ACTUATOR_UNPLUG] = "unplug",
        [ACTUATOR_BALLOON] = "balloon-remainder",
        [ACTUATOR_DEFLATE_FIRST] = "deflate-first",
        [ACTUATOR_UNPLUG_STALLED] = "unplug-stalled",
        [ACTUATOR_GUEST_RESET] = "guest-reset",
};

const char *actuator_reason_to_string(enum actuator_reason r) {
        return r < ELEMENTSOF(reason_names) ? reason_names[r] : "?";
}

void actuator_tunables_default(struct actuator_tunables *ret) {
        *ret = (struct actuator_tunables) {
                /* An unplug of 1.5 GiB took 1.0–1.2 s under TCG: 5 s without any block going is
                 * not slowness but a guest that cannot offline its memory. */
                .stall_usec = 5 * USEC_PER_SEC,
                /* Offlining can succeed later (pinned pages freed); retrying costs one command. */
                .retry_usec = 60 * USEC_PER_SEC,
                /* The node's default minimum floor: a guest ballooned near zero panicked. */
                .base_floor = 128 * MIB,
                /* The policy's default minimum step: a rise below it is not taken for a change
                 * made outside ppnd. */
                .ahead_max = 16 * MIB,
        };
}

static void why(struct actuator_plan *p, enum actuator_reason r, const char *fmt, ...) _printf_(3, 4);
static void why(struct actuator_plan *p, enum actuator_reason r, const char *fmt, ...) {
        va_list ap;
        p->reason = r;
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof(p->why), fmt, ap);
        va_end(ap);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The target's part above base, in whole blocks rounded up, at most the region. */
static uint64_t plugged_wanted(const struct actuator_vm *vm, uint64_t target) {
        if (target <= vm->base)
                return 0;
        uint64_t above = target - vm->base;
        return min_u64((above + vm->block - 1) / vm->block * vm->block, vm->region / vm->block * vm->block);
}

/* Tracks an unplug under way: progress, stall, retry. Returns true while it is stalled. */
static bool track_unplug(const struct actuator_tunables *t, const struct actuator_vm *vm, uint64_t now,
                         struct actuator_state *s) {
        bool unplugging = vm->requested < vm->plugged;

        if (s->stalled_since_usec) {
                if (now - s->stalled_since_usec < t->retry_usec && vm->plugged >= s->unplug_best)
                        return true;
                s->stalled_since_usec = 0;     /* retry (or the guest let go meanwhile) */
                s->unplug_progress_usec = 0;
                return false;
        }
        if (!unplugging) {
                s->unplug_progress_usec = 0;
                return false;
        }
        if (!s->unplug_progress_usec || vm->plugged < s->unplug_best) {
                s->unplug_best = vm->plugged;
                s->unplug_progress_usec = now;
                return false;
        }
        if (now - s->unplug_progress_usec < t->stall_usec)
                return false;
        s->stalled_since_usec = now;
        return true;
}

/* The balloon value wanted once the plan is done: target − plugged wanted, within [floor, base]. */
static uint64_t final_value(const struct actuator_vm *vm, uint64_t target, uint64_t want, uint64_t floor) {
        uint64_t v = target > want ? target - want : 0;
        return min_u64(max_u64(v, floor), vm->base);   /* QEMU caps a value above base anyway */
}

static void send_value(struct actuator_plan *p, uint64_t value) {
        if (value == p->state.sent_value)
                return;
        p->set_value = true;
        p->value = value;
        p->state.sent_value = value;
}

/*
 * Reclaim while the balloon holds more than the final plan wants (an unplug retried after a
 * stall, or a VM adopted that way): the balloon gives back at most ahead_max per step and as
 * much is unplugged with it, so the size rises above the target by less than the policy's
 * minimum step (not mistaken for a change made outside ppnd) and never falls below it.
 * Returns the plugged size to request for this step.
 */
static uint64_t deflate_ahead(const struct actuator_tunables *t, const struct actuator_vm *vm, uint64_t want,
                              uint64_t final, struct actuator_plan *p) {
        uint64_t d = min_u64(final - vm->balloon_actual, t->ahead_max);
        uint64_t blocks = max_u64(d / vm->block, 1) * vm->block;
        uint64_t step = vm->plugged > blocks ? vm->plugged - blocks : 0;

        d = min_u64(blocks, final - vm->balloon_actual);
        send_value(p, vm->balloon_actual + d);
        p->reason = ACTUATOR_DEFLATE_FIRST;
        return max_u64(step, want);
}

/* The balloon's move once blocks are settled: growth deflates at once (it is growth whatever
 * the blocks do), inflation for the remainder waits until the blocks are where they should be. */
static void plan_balloon(const struct actuator_vm *vm, uint64_t want, uint64_t final, struct actuator_plan *p) {
        if (!vm->balloon)
                return;
        if (vm->plugged == want || vm->balloon_actual < final)
                send_value(p, final);
}

static void explain(struct actuator_plan *p, const struct actuator_vm *vm, uint64_t target, uint64_t want) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX], c[FORMAT_SIZE_MAX];

        format_size(vm->plugged, a, sizeof(a));
        format_size(want, b, sizeof(b));
        format_size(target, c, sizeof(c));
        if (p->stalled)
                why(p, ACTUATOR_UNPLUG_STALLED, "the guest did not release its blocks (%s plugged): the balloon "
                    "reclaims toward %s instead; unplug retried later", a, c);
        else if (want > vm->plugged)
                why(p, ACTUATOR_PLUG, "plugging %s -> %s for %s", a, b, c);
        else if (p->reason == ACTUATOR_DEFLATE_FIRST)
                why(p, ACTUATOR_DEFLATE_FIRST, "the balloon gives back step by step as blocks go, %s -> %s for %s",
                    a, b, c);
        else if (want < vm->plugged)
                why(p, ACTUATOR_UNPLUG, "unplugging %s -> %s for %s", a, b, c);
        else if (p->set_value)
                why(p, ACTUATOR_BALLOON, "%s plugged; the balloon holds the rest for %s", a, c);
        else
                why(p, ACTUATOR_STEADY, "%s plugged for %s", a, c);
}

int actuator_plan(const struct actuator_tunables *t, const struct actuator_vm *vm, uint64_t target,
                  uint64_t now, const struct actuator_state *state, struct actuator_plan *ret) {
        struct actuator_plan p = { .state = state ? *state : (struct actuator_state) { 0 } };
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];
        bool reset;

        if (!t || !vm || !ret || !target || !vm->block || (vm->block & (vm->block - 1)))
                return -EINVAL;
        /* Plugged fell below the last step's while the request did not ask for less: reset. */
        reset = vm->plugged < p.state.prev_plugged && vm->requested >= p.state.prev_plugged;
        if (reset) {
                p.state = (struct actuator_state) { 0 };
                why(&p, ACTUATOR_GUEST_RESET, "plugged memory fell from %s to %s with nobody asking (guest "
                    "reset); re-planned", format_size(state->prev_plugged, a, sizeof(a)),
                    format_size(vm->plugged, b, sizeof(b)));
        }
        p.state.prev_plugged = vm->plugged;
        uint64_t want = plugged_wanted(vm, target);
        p.stalled = want < vm->plugged && track_unplug(t, vm, now, &p.state);
        if (want >= vm->plugged && !p.stalled) {
                p.state.stalled_since_usec = 0;
                p.state.unplug_progress_usec = 0;
        }
        if (p.stalled)
                want = vm->plugged;           /* hold what is plugged; the balloon reclaims */
        p.floor = max_u64(vm->min > want ? vm->min - want : 0, min_u64(vm->base, t->base_floor));
        uint64_t final = final_value(vm, target, want, p.floor), step = want;
        if (want < vm->plugged && vm->balloon && vm->balloon_actual < final)
                step = deflate_ahead(t, vm, want, final, &p);
        else
                plan_balloon(vm, want, final, &p);
        if (vm->requested != step) {
                p.set_requested = true;
                p.requested = step;
        }
        if (!reset)
                explain(&p, vm, target, want);
        *ret = p;
        return 0;
}
