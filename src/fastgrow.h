/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * fastgrow: the host-side demand signal, pure. A guest that touches new memory makes its QEMU
 * process fault on the host at once; ppnd samples each QEMU's resident set (/proc/PID/statm)
 * every 200 ms and grows a VM whose resident set climbs fast toward the end of what the guest
 * had available, before its next statistics arrive (1 s at best). Nothing inside the VM is
 * read: the resident set is the host's own figure.
 *
 * Measured (TCG, free page reporting on): a guest touching 300 MiB raised its QEMU's RSS
 * 238 -> 525 MiB during its 1.5 s allocation, visible at 100 ms sampling, while the minor-fault
 * count rose by only ~245 (guest RAM is backed by transparent huge pages): bytes are counted,
 * not faults.
 *
 * The rule, for one VM with guest statistics no older than stale_usec:
 *   rate       = RSS growth over the last window_usec, or over the last interval of at least
 *                recent_usec if that is larger (a burst's onset), in bytes/s;
 *   spent      = RSS now − RSS when the latest statistics were asked (or, not known, first
 *                seen): memory touched since;
 *   left       = the guest's available memory in those statistics − spent − rate × lookahead.
 *   grow when  rate ≥ burst (burst / 2 once spent > available − margin: nothing left whatever the
 *              pace) and left < margin, the VM is below its max, no growth of ours is
 *              still arriving (target > size + margin), and not already grown on these
 *              statistics (one fast grow per statistics sample: the next one shows its effect).
 *   new target = size + max(step, rate × 2 × lookahead), at most max.
 * A guest refilling memory it already has (page cache dropped and read again, memory freed and
 * touched again) spends out of its own available memory: left stays above the margin and
 * nothing happens. Only touching beyond what it had available grows it. The caller bounds the
 * growth by the pool's free memory.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define FASTGROW_SAMPLES 8
#define FASTGROW_GRANT_MIN (16 * MIB)   /* a fast grow smaller than this is not made */

struct fastgrow_tunables {
        uint64_t window_usec;     /* rate over this span (600 ms: 3 samples at 200 ms) */
        uint64_t recent_usec;     /* ... or over the last interval at least this long, if larger (150 ms) */
        uint64_t burst;           /* bytes/s of RSS growth that counts as a burst (64 MiB/s) */
        uint64_t lookahead_usec;  /* how far ahead the burst is projected (1 s: one stats interval) */
        uint64_t margin;          /* grow when less than this is left (64 MiB) */
        uint64_t step;            /* the least a fast grow gives (256 MiB: the policy's grow step) */
        uint64_t stale_usec;      /* statistics older than this: no fast grow (5 s) */
        uint64_t top_rate;        /* the fastest a guest is assumed to touch memory, bytes/s (1 GiB/s;
                                   * 0: every VM sampled at every period) */
        uint64_t sparse_usec;     /* the gap to the next sample of a VM not sampled densely (1 s: the tick) */
};

void fastgrow_tunables_default(struct fastgrow_tunables *ret);

/* Per VM, kept by the caller between samples; zero at adoption. */
struct fastgrow_state {
        uint64_t t[FASTGROW_SAMPLES];    /* ring of (time, rss) samples */
        uint64_t rss[FASTGROW_SAMPLES];
        unsigned n, head;
        uint64_t stats_seen;             /* the statistics sample (guest last-update) last seen */
        uint64_t rss_at_stats;           /* RSS when it was asked (vm->rss_at_ask) or first seen */
        uint64_t grown_for;              /* the statistics sample a fast grow was made on */
        uint64_t alloc_at_last;          /* the host's allocation counter at (or before) the newest sample; 0 = unknown */
};

struct fastgrow_vm {
        uint64_t rss;                    /* now */
        uint64_t stats_update;           /* guest statistics last-update (any unit, changes per sample); 0 = none */
        uint64_t stats_age_usec;
        /* QEMU's RSS when those statistics were asked (ppnd: read at the round that asked them),
         * 0 if unknown. New statistics count spent from it: a guest touching memory between the
         * ask and the first sample after the reply has it counted, and a VM with new statistics
         * is bounded and ordered like the others before it is sampled again. Unknown: spent
         * counts from the first sample that sees them. */
        uint64_t rss_at_ask;
        uint64_t available;              /* in those statistics; UINT64_MAX = unknown */
        uint64_t size;                   /* what the VM holds (base + plugged − balloon) */
        uint64_t target;                 /* target in force */
        uint64_t max;
        /* The host's cumulative allocated bytes (hostmem_parse_vmstat_alloc(), in bytes), read
         * at or before now (alloc_now) and at an earlier moment (alloc_then at then_usec); 0 =
         * not read. See fastgrow_host_quiet(). */
        uint64_t alloc_now, alloc_then, then_usec;
};

struct fastgrow_decision {
        bool grow;
        uint64_t target;
        uint64_t rate;                   /* bytes/s over the window */
        char why[160];
};

/* Whether a sample now could grow the VM, judged without its RSS (vm->rss is not read): false
 * when fastgrow_sample() would refuse whatever the RSS (no fresh statistics, at its max, growth
 * of ours still arriving, already grown on these statistics). The caller may then skip reading
 * the RSS: at 2,000 VMs and 200 ms each read is 10,000 system calls a second. Skipping leaves
 * the state as it was; the first sample afterwards counts from the RSS seen at the statistics
 * it knew (or, with new statistics, from the RSS when they were asked, else from itself), and
 * its rate runs from the sample before (over the window, or the last interval however long). */
bool fastgrow_may_grow(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm);

/* Whether a VM that may grow (fastgrow_may_grow()) needs a sample every period (200 ms) or one
 * every sparse_usec is enough: dense unless, even at top_rate from its last sample, it could not
 * reach the grow condition before the next sparse sample, that is unless
 *     available − spent > top_rate × (sparse_usec + lookahead_usec) + margin
 * with spent as at its last sample (RSS then − RSS at its statistics). A guest touching memory
 * at top_rate right after that sample has touched top_rate × sparse_usec by the next one, and
 * the rule projects its rate lookahead_usec further: below that bound no dense sample could have
 * grown it sooner. Statistics not sampled yet count spent from the RSS when they were asked
 * (vm->rss_at_ask), or as 0 if that is unknown, as the next sample will; unknown statistics or
 * top_rate 0: dense. */
bool fastgrow_dense(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm);

/* The gate before the per-VM reads: whether the host allocated too little over period_usec
 * (allocated bytes, from its cumulative counter) for any VM's resident set to have grown at
 * half the burst rate, the least fastgrow_sample() acts on. Then no VM needs a sample: none
 * could grow by this period's reads, and the rates over a span of such periods stay below the
 * threshold too. A period of 0 is never quiet.
 *
 * A VM not sampled over quiet periods has an old newest sample when the host turns busy; its
 * rate from there would dilute a burst's onset over the quiet span. fastgrow_sample() then
 * first adds a bound sample at then_usec: its RSS then was at most the RSS of its newest sample
 * plus what the whole host allocated in between (alloc_then − alloc_at_last), kept only when
 * that is below the RSS now (a bound above it proves nothing, and the rate then comes from the
 * real sample before it, over the longer span). Rates measured
 * from that bound are lower bounds: a bound never makes a burst, and the onset is seen at the
 * first busy period as if the VM had been read all along. */
bool fastgrow_host_quiet(const struct fastgrow_tunables *t, uint64_t allocated, uint64_t period_usec);

/* The same gate for one VM on a busy host: whether a sample now could not grow the VM whatever
 * its RSS, which is at most its newest sample's plus all the host allocated since
 * (vm->alloc_now − s->alloc_at_last). fastgrow_sample() decides on that bound without keeping
 * it (on a copy of s): the rule is monotone in the RSS (a higher one gives a higher rate, more
 * spent, less left), so if the bound does not grow the VM, its true RSS would not either, and
 * the read can be skipped. False (read) when the bound is unknown (no sample, counter not read
 * or gone back) and when the VM's statistics are newer than its newest sample with no RSS known
 * at their asking (vm->rss_at_ask): spent would count from this read. Rates at the next read
 * start from a bound sample where it proves growth (fastgrow_host_quiet()), so a burst may be
 * grown one period later than if read every period when the rest of the host allocated
 * meanwhile, never later otherwise; where the bound proves nothing the rate runs from the real
 * sample before, and the bound at the previous period is tried as well (the rule rises with
 * the RSS on either side of it). tests/test-fastgrow.c checks both. */
bool fastgrow_bounded_out(const struct fastgrow_tunables *t, const struct fastgrow_state *s,
                          const struct fastgrow_vm *vm, uint64_t now);

/* How near the VM is to the grow condition, for choosing which VMs to read when a period may
 * read only so many (ppnd's [controller] fast-signal-reads): what would be left of the available
 * memory in its statistics had its QEMU grown since its newest sample as fast as it could, less
 * what it touched before that since the statistics, in bytes; negative when that growth would
 * have taken it past. As fast as it could: by all the host allocated since (vm->alloc_now −
 * s->alloc_at_last, the bound of fastgrow_bounded_out()), and by no more than top_rate over the
 * time since (t may be NULL, top_rate 0: no such limit). The smaller, the nearer. On a host that
 * allocates all the time the bound grows with the time since a VM's newest sample, so the VMs
 * read longest ago sink toward the front, and a VM whose own samples show it has touched what
 * it had available stays there. Statistics not sampled yet count spent from the RSS when they
 * were asked (vm->rss_at_ask); with that unknown, or no sample at all: what they say is
 * available (spent counts from the next sample); unknown statistics or no bound at all
 * (counter not read or gone back, and no top_rate): INT64_MIN, read first. */
int64_t fastgrow_left(const struct fastgrow_tunables *t, const struct fastgrow_state *s, const struct fastgrow_vm *vm,
                      uint64_t now);

/* A VM a capped period could read, for fastgrow_pick(). */
struct fastgrow_pick {
        int64_t left;                    /* fastgrow_left() */
        uint64_t last;                   /* the time of its newest sample (0: none) */
        size_t i;                        /* the caller's index */
};

/* Puts the k nearest of p[0..n) first, nearest first: the smaller left, then the older newest
 * sample (ties are common when the bound has taken several VMs past: the one least recently
 * read goes first), then the smaller i. The rest follow in no order. O(n) on average. */
void fastgrow_pick(struct fastgrow_pick *p, size_t n, size_t k);

/* What a fast grow to target gives a VM now at from (the larger of its target and size), with
 * free bytes left to grant (the policy's free at its last round, less what was handed out
 * since): up to free; 0, no grow, when nothing is free or it would be under FASTGROW_GRANT_MIN.
 * ppnd and the simulator grant with it. */
uint64_t fastgrow_grant(int64_t free, uint64_t from, uint64_t target);

/* The time of the newest sample (0: none, or s NULL). */
uint64_t fastgrow_last(const struct fastgrow_state *s);

/* Adds a sample at now_usec and decides. 0, or -EINVAL for NULL pointers. */
int fastgrow_sample(const struct fastgrow_tunables *t, struct fastgrow_state *s, const struct fastgrow_vm *vm,
                    uint64_t now_usec, struct fastgrow_decision *ret);
