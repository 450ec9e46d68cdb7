/* SPDX-License-Identifier: Apache-2.0 */
#include "fastgrow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fastgrow_tunables_default(struct fastgrow_tunables *ret) {
        *ret = (struct fastgrow_tunables) {
                /* 3 samples at 200 ms: one late sample does not make a burst. */
                .window_usec = 600000,
                /* The window alone dilutes a burst's onset with the quiet samples before it (at
                 * its first sample a 190 MiB/s burst shows as ~60 MiB/s): the last interval of at
                 * least 150 ms counts too, so a burst is seen one sample sooner. Measured before
                 * (bench/README.md): decisions at the second or third sample, 0.14-0.56 s into
                 * a full-speed allocation. */
                .recent_usec = 150000,
                /* A guest allocating at full speed raised RSS by ~190 MiB/s under TCG (300 MiB in
                 * 1.5 s); a third of that is a burst, page-cache trickles are not. */
                .burst = 64 * MIB,
                .lookahead_usec = USEC_PER_SEC,
                .margin = 64 * MIB,
                .step = 256 * MIB,
                .stale_usec = 5000000,
                /* Guests under KVM touch new memory at GiB/s (TCG: 0.2-0.6 GiB/s measured here);
                 * assuming 1 GiB/s, a VM more than ~2 GiB away from the grow condition is
                 * sampled once per tick instead of five times. ppnd takes it from [controller]
                 * fast-signal-rate, 0 (every VM dense) by default for now (docs/policy.md). */
                .top_rate = GIB,
                .sparse_usec = USEC_PER_SEC,
        };
}

static void push(struct fastgrow_state *s, uint64_t now, uint64_t rss) {
        s->head = (s->head + 1) % FASTGROW_SAMPLES;
        s->t[s->head] = now;
        s->rss[s->head] = rss;
        if (s->n < FASTGROW_SAMPLES)
                s->n++;
}

/* RSS growth in bytes/s from sample i to the newest (0 if it fell or i is the newest). */
static uint64_t rate_from(const struct fastgrow_state *s, unsigned i, uint64_t now) {
        uint64_t dt = now - s->t[i], cur = s->rss[s->head], old = s->rss[i];

        if (i == s->head || dt == 0 || cur <= old)
                return 0;
        return (uint64_t) ((double) (cur - old) * 1e6 / (double) dt);
}

/* RSS growth in bytes/s: the larger of the rate from the oldest sample within the window and the
 * rate from the newest sample at least recent_usec old (the last interval: a burst's onset), even
 * one older than the window: a VM read less often than the window (left to the tick by the read
 * cap) has its growth since its last read as its rate, not none. */
static uint64_t rate_of(const struct fastgrow_tunables *t, const struct fastgrow_state *s, uint64_t now) {
        unsigned oldest = s->head, recent = s->head;

        for (unsigned k = 1; k < s->n; k++) {
                unsigned i = (s->head + FASTGROW_SAMPLES - k) % FASTGROW_SAMPLES;
                bool in_window = now - s->t[i] <= t->window_usec;
                if (in_window)
                        oldest = i;
                if (recent == s->head && now - s->t[i] >= t->recent_usec)
                        recent = i;
                if (!in_window)
                        break;
        }
        uint64_t w = rate_from(s, oldest, now), r = rate_from(s, recent, now);
        return w > r ? w : r;
}

/* The refusals of fastgrow_sample() that do not depend on the RSS; grown: a fast grow was made
 * on the statistics in vm already. */
static bool refused(const struct fastgrow_tunables *t, const struct fastgrow_vm *vm, bool grown) {
        return !vm->stats_update || vm->available == UINT64_MAX || vm->stats_age_usec > t->stale_usec ||
               grown || vm->size >= vm->max || vm->target > vm->size + t->margin;
}

bool fastgrow_host_quiet(const struct fastgrow_tunables *t, uint64_t allocated, uint64_t period_usec) {
        if (!t || period_usec == 0)
                return false;
        return (double) allocated < (double) t->burst / 2.0 * (double) period_usec / 1e6;
}

uint64_t fastgrow_grant(int64_t free, uint64_t from, uint64_t target) {
        uint64_t want = target > from ? target - from : 0;
        uint64_t grant = free > 0 && (uint64_t) free < want ? (uint64_t) free : want;

        return free <= 0 || grant < FASTGROW_GRANT_MIN ? 0 : grant;
}

uint64_t fastgrow_last(const struct fastgrow_state *s) {
        return s && s->n ? s->t[s->head] : 0;
}

/* The most the RSS can have been at vm->then_usec: the newest sample's plus all the host
 * allocated in between (fastgrow_host_quiet()); false when unknown (no sample, the counters not
 * read or gone back) or then_usec is not between the newest sample and now. */
static bool bound_then(const struct fastgrow_state *s, const struct fastgrow_vm *vm, uint64_t now, uint64_t *ret) {
        if (!s->n || !s->alloc_at_last || !vm->alloc_then || vm->alloc_then < s->alloc_at_last ||
            vm->then_usec <= fastgrow_last(s) || vm->then_usec >= now)
                return false;
        *ret = sat_add(s->rss[s->head], vm->alloc_then - s->alloc_at_last);
        return true;
}

/* The bound sample at vm->then_usec (bound_then()), when the newest sample is older and the
 * host's allocations since it are known, and only when it proves growth: below the RSS now.
 * A bound at or above it says nothing of the rate (from it, 0), yet would take the place of the
 * real sample before it in the window: on a host that allocated more than the VM grew (a busy
 * host, a VM left unread for periods by the read cap), a burst the VM made since its last read
 * would not show at all. */
static void push_bound(struct fastgrow_state *s, const struct fastgrow_vm *vm, uint64_t now) {
        uint64_t bound;

        if (bound_then(s, vm, now, &bound) && bound < vm->rss)
                push(s, vm->then_usec, bound);
}

/* Where spent counts from for the statistics in vm: the RSS at them once sampled, else the RSS
 * when they were asked (vm->rss_at_ask); false if neither is known (spent counts from the next
 * sample then). */
static bool anchor_of(const struct fastgrow_state *s, const struct fastgrow_vm *vm, uint64_t *ret) {
        if (s->n && vm->stats_update == s->stats_seen) {
                *ret = s->rss_at_stats;
                return true;
        }
        if (vm->rss_at_ask) {
                *ret = vm->rss_at_ask;
                return true;
        }
        return false;
}

bool fastgrow_may_grow(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm) {
        if (!t || !s || !vm)
                return false;
        /* New statistics reset the one-grow-per-statistics mark, as the sample would. */
        return !refused(t, vm, vm->stats_update == s->stats_seen && s->grown_for == s->stats_seen);
}

bool fastgrow_dense(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm) {
        if (!t || !s || !vm || t->top_rate == 0 || !vm->stats_update || vm->available == UINT64_MAX)
                return true;
        /* No anchor known for these statistics: the next sample counts from itself (spent 0 then). */
        uint64_t last = s->rss[s->head], anchor = 0;
        uint64_t spent = s->n && anchor_of(s, vm, &anchor) && last > anchor ? last - anchor : 0;
        double reach = (double) t->top_rate * (double) (t->sparse_usec + t->lookahead_usec) / 1e6;
        return (double) vm->available <= (double) spent + reach + (double) t->margin;
}

static int sample(const struct fastgrow_tunables *t, struct fastgrow_state *s, const struct fastgrow_vm *vm,
                  uint64_t now, bool why, struct fastgrow_decision *ret);

bool fastgrow_bounded_out(const struct fastgrow_tunables *t, const struct fastgrow_state *s,
                          const struct fastgrow_vm *vm, uint64_t now) {
        struct fastgrow_decision d;
        uint64_t anchor;

        if (!t || !s || !vm || !s->n || !s->alloc_at_last || !vm->alloc_now || vm->alloc_now < s->alloc_at_last ||
            !vm->stats_update || !anchor_of(s, vm, &anchor) || now <= s->t[s->head])
                return false;
        struct fastgrow_state b = *s;
        struct fastgrow_vm at = *vm;
        at.rss = sat_add(s->rss[s->head], vm->alloc_now - s->alloc_at_last);
        if (sample(t, &b, &at, now, false, &d) < 0 || d.grow)
                return false;
        /* An RSS at or below the bound at then_usec has no bound sample before it (push_bound())
         * and its rate runs from the real sample before, over the longer span: the rule rises with
         * the RSS on each side of that bound, so the bound itself is the other RSS to try. */
        if (bound_then(s, vm, now, &at.rss)) {
                b = *s;
                if (sample(t, &b, &at, now, false, &d) < 0 || d.grow)
                        return false;
        }
        return true;
}

/* a − b for the ordering, saturated to int64_t. */
static int64_t signed_diff(uint64_t a, uint64_t b) {
        if (a >= b)
                return a - b > (uint64_t) INT64_MAX ? INT64_MAX : (int64_t) (a - b);
        return b - a > (uint64_t) INT64_MAX ? INT64_MIN + 1 : -(int64_t) (b - a);
}

int64_t fastgrow_left(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm,
                      uint64_t now) {
        if (!s || !vm || !vm->stats_update || vm->available == UINT64_MAX)
                return INT64_MIN;
        uint64_t anchor;
        if (!s->n || !anchor_of(s, vm, &anchor))
                return signed_diff(vm->available, 0);
        /* The most it could have grown since its newest sample: all the host allocated, and no
         * more than top_rate over the time since. */
        bool by_host = s->alloc_at_last && vm->alloc_now && vm->alloc_now >= s->alloc_at_last;
        bool by_rate = t && t->top_rate && now >= s->t[s->head];
        if (!by_host && !by_rate)
                return INT64_MIN;
        uint64_t grown = by_host ? vm->alloc_now - s->alloc_at_last : UINT64_MAX;
        if (by_rate) {
                double r = (double) t->top_rate * (double) (now - s->t[s->head]) / 1e6;
                if (r < (double) grown)
                        grown = (uint64_t) r;
        }
        uint64_t last = s->rss[s->head], spent = last > anchor ? last - anchor : 0;
        spent = sat_add(spent, grown);
        return signed_diff(vm->available, spent);
}

/* Nearer first: the smaller left, then the older newest sample, then the caller's order. */
static bool pick_before(const struct fastgrow_pick *x, const struct fastgrow_pick *y) {
        if (x->left != y->left)
                return x->left < y->left;
        if (x->last != y->last)
                return x->last < y->last;
        return x->i < y->i;
}

static int pick_cmp(const void *a, const void *b) {
        const struct fastgrow_pick *x = a, *y = b;
        return pick_before(x, y) ? -1 : pick_before(y, x) ? 1 : 0;
}

static void pick_swap(struct fastgrow_pick *p, size_t a, size_t b) {
        struct fastgrow_pick x = p[a];
        p[a] = p[b];
        p[b] = x;
}

void fastgrow_pick(struct fastgrow_pick *p, size_t n, size_t k) {
        size_t lo = 0, hi = n, depth = 0;

        if (!p || k == 0 || n == 0)
                return;
        if (k > n)
                k = n;
        /* Quickselect until [0, k) holds the k nearest (median of three; after 2 log2 n rounds a
         * sort of what is left, so an unlucky input costs n log n, not n²), then those k in order. */
        for (size_t m = n; m; m >>= 1)
                depth += 2;
        while (hi - lo > 1 && k > lo && k < hi) {
                if (depth-- == 0) {
                        qsort(p + lo, hi - lo, sizeof(*p), pick_cmp);
                        break;
                }
                size_t mid = lo + (hi - lo) / 2, last = hi - 1;
                if (pick_before(&p[mid], &p[lo]))
                        pick_swap(p, mid, lo);
                if (pick_before(&p[last], &p[lo]))
                        pick_swap(p, last, lo);
                if (pick_before(&p[last], &p[mid]))
                        pick_swap(p, last, mid);
                pick_swap(p, mid, last);        /* the median as pivot, at the end */
                size_t store = lo;
                for (size_t i = lo; i < last; i++)
                        if (pick_before(&p[i], &p[last]))
                                pick_swap(p, i, store++);
                pick_swap(p, store, last);      /* [lo, store) before the pivot, the rest not */
                if (store < k)
                        lo = store + 1;
                else
                        hi = store;
        }
        qsort(p, k, sizeof(*p), pick_cmp);
}

/* fastgrow_sample(), with the reason written only if why: the bound's replays
 * (fastgrow_bounded_out()) keep only whether it grows. On a busy host most replays do grow, and
 * a reason (an snprintf() and three format_size()) cost ~1,900 instructions of the ~2,400 a
 * replay took (callgrind, 500 VMs). */
static int sample(const struct fastgrow_tunables *t, struct fastgrow_state *s, const struct fastgrow_vm *vm,
                  uint64_t now, bool why, struct fastgrow_decision *ret) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX], c[FORMAT_SIZE_MAX];
        struct fastgrow_decision d = { 0 };

        if (!t || !s || !vm || !ret)
                return -EINVAL;
        push_bound(s, vm, now);
        push(s, now, vm->rss);
        s->alloc_at_last = vm->alloc_now;
        if (vm->stats_update && vm->stats_update != s->stats_seen) {
                s->stats_seen = vm->stats_update;
                s->rss_at_stats = vm->rss_at_ask ? vm->rss_at_ask : vm->rss;
        }
        d.rate = rate_of(t, s, now);
        *ret = d;
        uint64_t spent = vm->rss > s->rss_at_stats ? vm->rss - s->rss_at_stats : 0;
        /* A guest that has already touched all it had available but the margin is out of memory
         * whatever its pace: half the burst rate is enough then. Measured: a loaded guest filling
         * itself at ~70 MiB/s in 150 MiB programs dipped below 64 MiB/s between programs and was
         * OOM-killed before the rate said burst. */
        uint64_t burst = vm->available != UINT64_MAX && vm->available < spent + t->margin ? t->burst / 2 : t->burst;
        if (d.rate < burst || refused(t, vm, s->grown_for == s->stats_seen))
                return 0;
        uint64_t ahead = (uint64_t) ((double) d.rate * (double) t->lookahead_usec / 1e6);
        if (vm->available > spent + ahead + t->margin)
                return 0;   /* it touches memory it already had available */
        uint64_t grow = ahead * 2 > t->step ? ahead * 2 : t->step;
        d.grow = true;
        d.target = vm->size + grow < vm->max ? vm->size + grow : vm->max;
        s->grown_for = s->stats_seen;
        if (why)
                snprintf(d.why, sizeof(d.why), "QEMU RSS rising %s/s: %s touched since the guest reported %s available",
                         format_size(d.rate, a, sizeof(a)), format_size(spent, b, sizeof(b)),
                         format_size(vm->available, c, sizeof(c)));
        *ret = d;
        return 0;
}

int fastgrow_sample(const struct fastgrow_tunables *t, struct fastgrow_state *s, const struct fastgrow_vm *vm,
                    uint64_t now, struct fastgrow_decision *ret) {
        return sample(t, s, vm, now, true, ret);
}
