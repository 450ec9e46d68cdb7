/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-chromeos.h"

/* The balloon's stall check: inflating, given time, and barely moving. */
static bool stalled(const struct cros_host *h, const struct cros_vm *v, const struct cros_state *st) {
        if (v->target >= v->actual || !st->resize_usec || !st->check_usec ||
            h->now_usec < st->resize_usec + CROS_STALL_AFTER_USEC || h->now_usec <= st->check_usec)
                return false;
        double fell = st->check_actual > v->actual ? (double) (st->check_actual - v->actual) : 0;
        double rate = fell / ((double) (h->now_usec - st->check_usec) / 1e6);
        return rate < (double) CROS_STALL_RATE;
}

static bool blocked(const struct cros_host *h, const struct cros_state *st, int dir, bool high) {
        if (!st->resize_usec || st->dir != -dir || (high && !st->high))
                return false;
        uint64_t hold = st->high ? CROS_BLOCK_HIGH_USEC : CROS_BLOCK_LOW_USEC;
        return h->now_usec < st->resize_usec + hold;
}

static uint64_t clamp_size(const struct cros_vm *v, int64_t size) {
        int64_t lo = (int64_t) (v->min > v->max / 4 ? v->min : v->max / 4);
        if (size < lo)
                size = lo;
        if (size > (int64_t) v->max)
                size = (int64_t) v->max;
        return (uint64_t) size;
}

/* The midpoint rule: a new size and its priority, or 0 when the change is too small. */
static uint64_t midpoint(const struct cros_host *h, const struct cros_vm *v, bool *ret_high) {
        int64_t guest_slack = (int64_t) v->guest_available - (int64_t) CROS_GUEST_CRITICAL;
        int64_t host_slack = ((int64_t) h->available - (int64_t) h->critical) /
                             (int64_t) (h->n_vms ? h->n_vms : 1);
        int64_t delta = (guest_slack - host_slack) / 2;
        uint64_t size = clamp_size(v, (int64_t) v->actual - delta);
        uint64_t change = size > v->actual ? size - v->actual : v->actual - size;
        if (change <= v->max / 100)
                return 0;
        *ret_high = size < v->actual ? host_slack < 0 : guest_slack < 0;
        return size;
}

uint64_t cros_decide(const struct cros_host *h, const struct cros_vm *v, struct cros_state *st) {
        uint64_t size = 0;
        bool high = true;
        if (stalled(h, v, st))
                size = clamp_size(v, (int64_t) (v->actual + CROS_STALL_DEFLATE));
        else
                size = midpoint(h, v, &high);
        st->check_usec = h->now_usec;
        st->check_actual = v->actual;
        if (!size || size == v->target)
                return 0;
        int dir = size < v->actual ? -1 : 1;
        if (blocked(h, st, dir, high))
                return 0;
        *st = (struct cros_state) { .resize_usec = h->now_usec, .dir = dir, .high = high,
                                    .check_usec = h->now_usec, .check_actual = v->actual };
        return size;
}
