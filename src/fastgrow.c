/* SPDX-License-Identifier: Apache-2.0 */
#include "fastgrow.h"

#include <stdio.h>
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
 * rate from the newest sample at least recent_usec old (the last interval: a burst's onset). */
static uint64_t rate_of(const struct fastgrow_tunables *t, const struct fastgrow_state *s, uint64_t now) {
        unsigned oldest = s->head, recent = s->head;

        for (unsigned k = 1; k < s->n; k++) {
                unsigned i = (s->head + FASTGROW_SAMPLES - k) % FASTGROW_SAMPLES;
                if (now - s->t[i] > t->window_usec)
                        break;
                oldest = i;
                if (recent == s->head && now - s->t[i] >= t->recent_usec)
                        recent = i;
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

/* The bound sample at vm->then_usec (fastgrow_host_quiet()), when the newest sample is older and
 * the host's allocations since it are known. */
static void push_bound(struct fastgrow_state *s, const struct fastgrow_vm *vm, uint64_t now) {
        uint64_t last = s->n ? s->t[s->head] : 0;

        if (!s->n || !s->alloc_at_last || !vm->alloc_then || vm->alloc_then < s->alloc_at_last ||
            vm->then_usec <= last || vm->then_usec >= now)
                return;
        uint64_t grown = vm->alloc_then - s->alloc_at_last, rss = s->rss[s->head];
        push(s, vm->then_usec, rss > UINT64_MAX - grown ? UINT64_MAX : rss + grown);
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
        /* Statistics not sampled yet: the next sample counts from itself (spent 0 then). */
        uint64_t last = s->rss[s->head];
        uint64_t spent = s->n && vm->stats_update == s->stats_seen && last > s->rss_at_stats ? last - s->rss_at_stats : 0;
        double reach = (double) t->top_rate * (double) (t->sparse_usec + t->lookahead_usec) / 1e6;
        return (double) vm->available <= (double) spent + reach + (double) t->margin;
}

bool fastgrow_bounded_out(const struct fastgrow_tunables *t, const struct fastgrow_state *s,
                          const struct fastgrow_vm *vm, uint64_t now) {
        struct fastgrow_decision d;

        if (!t || !s || !vm || !s->n || !s->alloc_at_last || !vm->alloc_now || vm->alloc_now < s->alloc_at_last ||
            !vm->stats_update || vm->stats_update != s->stats_seen || now <= s->t[s->head])
                return false;
        uint64_t grown = vm->alloc_now - s->alloc_at_last, last = s->rss[s->head];
        struct fastgrow_state b = *s;
        struct fastgrow_vm at = *vm;
        at.rss = last > UINT64_MAX - grown ? UINT64_MAX : last + grown;
        return fastgrow_sample(t, &b, &at, now, &d) == 0 && !d.grow;
}

uint64_t fastgrow_left(const struct fastgrow_state *s, const struct fastgrow_vm *vm) {
        if (!s || !vm || !vm->stats_update || vm->available == UINT64_MAX)
                return 0;
        if (!s->n || vm->stats_update != s->stats_seen)
                return vm->available;
        if (!s->alloc_at_last || !vm->alloc_now || vm->alloc_now < s->alloc_at_last)
                return 0;
        uint64_t rss = s->rss[s->head], grown = vm->alloc_now - s->alloc_at_last;
        rss = rss > UINT64_MAX - grown ? UINT64_MAX : rss + grown;
        uint64_t spent = rss > s->rss_at_stats ? rss - s->rss_at_stats : 0;
        return vm->available > spent ? vm->available - spent : 0;
}

int fastgrow_sample(const struct fastgrow_tunables *t, struct fastgrow_state *s, const struct fastgrow_vm *vm,
                    uint64_t now, struct fastgrow_decision *ret) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX], c[FORMAT_SIZE_MAX];
        struct fastgrow_decision d = { 0 };

        if (!t || !s || !vm || !ret)
                return -EINVAL;
        push_bound(s, vm, now);
        push(s, now, vm->rss);
        s->alloc_at_last = vm->alloc_now;
        if (vm->stats_update && vm->stats_update != s->stats_seen) {
                s->stats_seen = vm->stats_update;
                s->rss_at_stats = vm->rss;
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
        snprintf(d.why, sizeof(d.why), "QEMU RSS rising %s/s: %s touched since the guest reported %s available",
                 format_size(d.rate, a, sizeof(a)), format_size(spent, b, sizeof(b)),
                 format_size(vm->available, c, sizeof(c)));
        *ret = d;
        return 0;
}
