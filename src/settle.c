/* SPDX-License-Identifier: Apache-2.0 */
#include "settle.h"

void settle_tunables_default(struct settle_tunables *ret) {
        *ret = (struct settle_tunables) {
                /* Three rounds at the default tick: two of three reads saved, below the policy's
                 * 5 s staleness bound with room for a report up to 2 s old when read. */
                .interval_usec = 3 * USEC_PER_SEC,
                .spare_bytes = 512 * MIB,
                .spare_pct = 25,
                /* Above the drift of an idle QEMU (its own allocations, page cache of its files),
                 * a tenth of a second of a guest touching memory at 300 MiB/s. */
                .rss_move = 32 * MIB,
                /* The policy's minimum step: a size this close is where the policy leaves it. */
                .arrive_bytes = 16 * MIB,
                .stale_usec = 5 * USEC_PER_SEC,
                .slack_usec = USEC_PER_SEC,
        };
}

static uint64_t dist(uint64_t a, uint64_t b) {
        return a > b ? a - b : b - a;
}

bool settle_candidate(const struct settle_tunables *t, const struct settle_vm *vm) {
        if (!t || !vm || t->interval_usec == 0)
                return false;
        uint64_t spare = (uint64_t) ((unsigned __int128) vm->size * t->spare_pct / 100);
        if (spare < t->spare_bytes)
                spare = t->spare_bytes;
        return vm->steady && !vm->pressure && vm->stats_read_usec && vm->available != UINT64_MAX &&
               vm->available >= spare && dist(vm->size, vm->target) < t->arrive_bytes;
}

static bool settled(const struct settle_tunables *t, const struct settle_vm *vm) {
        return settle_candidate(t, vm) && vm->size == vm->size_at_ask && vm->rss && vm->rss_at_ask &&
               dist(vm->rss, vm->rss_at_ask) < t->rss_move;
}

bool settle_rss_may_move(const struct settle_tunables *t, uint64_t rss, uint64_t rss_at_ask, uint64_t allocated) {
        if (!t || !rss || !rss_at_ask || allocated >= t->rss_move || rss > UINT64_MAX - allocated)
                return true;
        return rss + allocated >= rss_at_ask + t->rss_move;
}

enum settle_verdict settle_judge(const struct settle_tunables *t, const struct settle_vm *vm, uint64_t now,
                                 uint64_t tick) {
        if (!settled(t, vm))
                return SETTLE_READ;
        /* The round closest to interval_usec after the last read reads again. */
        if (now < vm->stats_read_usec || now - vm->stats_read_usec + tick / 2 >= t->interval_usec)
                return SETTLE_DUE;
        if (vm->stats_age_usec >= (t->stale_usec > t->slack_usec ? t->stale_usec - t->slack_usec : 0))
                return SETTLE_DUE;
        return SETTLE_SKIP;
}
