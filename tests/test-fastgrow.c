/* SPDX-License-Identifier: Apache-2.0 */
/* The host-side demand signal: RSS traces at 200 ms in, fast grows out. The traces follow what
 * was measured here (a 300 MiB allocation raised a QEMU's RSS 238 -> 525 MiB in 1.5 s). */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fastgrow.h"

#define MS UINT64_C(1000)

struct trace {
        uint64_t rss_start;
        uint64_t rate;          /* bytes/s from t = 0 */
        uint64_t available;     /* in the statistics seen at t = 0 */
        uint64_t size, target, max;
};

/* Samples every 200 ms for 1 s; returns the time of the first grow (ms) or -1, and its target. */
static long run(const struct trace *tr, uint64_t *ret_target) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        fastgrow_tunables_default(&t);
        for (uint64_t ms = 0; ms <= 1000; ms += 200) {
                struct fastgrow_vm vm = {
                        .rss = tr->rss_start + tr->rate * ms / 1000, .stats_update = 1700000000,
                        .stats_age_usec = ms * MS, .available = tr->available, .size = tr->size,
                        .target = tr->target, .max = tr->max,
                };
                struct fastgrow_decision d;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, 5000000 + ms * MS, &d), 0);
                if (d.grow) {
                        *ret_target = d.target;
                        return (long) ms;
                }
        }
        return -1;
}

static void test_table(void **state) {
        static const struct {
                const char *what;
                struct trace tr;
                long at_ms;             /* -1: never */
                uint64_t target;
        } cases[] = {
                { "a burst past what the guest had available: grown at the second sample (200 ms), by 2 s of the rate",
                  { 238 * MIB, 190 * MIB, 150 * MIB, GIB, GIB, 4 * GIB }, 200, GIB + 380 * MIB },
                { "the same burst with plenty available (refilling memory it has): nothing",
                  { 238 * MIB, 190 * MIB, 900 * MIB, 2 * GIB, 2 * GIB, 4 * GIB }, -1, 0 },
                { "a slow rise (page cache trickling in): nothing",
                  { 238 * MIB, 20 * MIB, 10 * MIB, GIB, GIB, 4 * GIB }, -1, 0 },
                { "at its max already: nothing",
                  { 238 * MIB, 190 * MIB, 50 * MIB, 4 * GIB, 4 * GIB, 4 * GIB }, -1, 0 },
                { "a growth of ours still arriving (target well above size): nothing",
                  { 238 * MIB, 190 * MIB, 50 * MIB, GIB, 2 * GIB, 4 * GIB }, -1, 0 },
                { "near max: capped at max",
                  { 238 * MIB, 190 * MIB, 50 * MIB, 3900 * MIB, 3900 * MIB, 4 * GIB }, 200, 4 * GIB },
                { "a slow allocation (40 MiB/s) with nothing left beyond the margin: grown at 200 ms by 256 MiB",
                  { 238 * MIB, 40 * MIB, 30 * MIB, GIB, GIB, 4 * GIB }, 200, GIB + 256 * MIB },
                { "the same pace with 150 MiB available: nothing within 1 s (more than the margin still left)",
                  { 238 * MIB, 40 * MIB, 150 * MIB, GIB, GIB, 4 * GIB }, -1, 0 },
                { "a burst from little available: the step is at least 256 MiB",
                  { 238 * MIB, 70 * MIB, 20 * MIB, GIB, GIB, 4 * GIB }, 200, GIB + 256 * MIB },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t target = 0;
                long at = run(&cases[i].tr, &target);
                if (at != cases[i].at_ms || (at >= 0 && target != cases[i].target))
                        fail_msg("case %zu (%s): grew at %ld ms to %llu MiB", i, cases[i].what, at,
                                 (unsigned long long) (target / MIB));
        }
}

/* A burst after quiet samples (RSS flat at 300 MiB, samples every 200 ms from 0; the burst
 * starts at 700 ms at 200 MiB/s; the guest reported `available` at t = 0). Returns the time
 * of the first grow (ms, within 2 s) or -1, and its target. */
static long run_onset(uint64_t available, uint64_t *ret_target) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        fastgrow_tunables_default(&t);
        for (uint64_t ms = 0; ms <= 2000; ms += 200) {
                struct fastgrow_vm vm = {
                        .rss = 300 * MIB + (ms > 700 ? (ms - 700) * 200 * MIB / 1000 : 0), .stats_update = 10,
                        .stats_age_usec = ms * MS, .available = available, .size = GIB, .target = GIB,
                        .max = 4 * GIB,
                };
                struct fastgrow_decision d;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, ms * MS, &d), 0);
                if (d.grow) {
                        *ret_target = d.target;
                        return (long) ms;
                }
        }
        return -1;
}

/* The onset of a burst is seen at its first full sample interval, not when the 600 ms window
 * has filled. By hand, available 236 MiB (as in bench/guests.py reaction):
 *   800 ms: RSS +20 MiB; window (from 200 ms) 33 MiB/s, last interval 100 MiB/s;
 *           left = 236 - 20 - 100 = 116 MiB > 64: nothing.
 *  1000 ms: RSS +60 MiB; window (from 400 ms) 100 MiB/s, last interval 200 MiB/s;
 *           left = 236 - 60 - 200 < 64: grow by 2 s of 200 MiB/s = 400 MiB. (With the window
 *           alone, left = 236 - 60 - 100 = 76 MiB: not until 1200 ms, by 333 MiB.)
 * The guard: the same burst with 900 MiB available (memory it has) grows nothing within 2 s
 * (at 2000 ms: left = 900 - 260 - 200 = 440 MiB). */
static void test_onset(void **state) {
        uint64_t target = 0;

        assert_int_equal(run_onset(236 * MIB, &target), 1000);
        assert_int_equal(target, GIB + 400 * MIB);
        assert_int_equal(run_onset(900 * MIB, &target), -1);
}

/* The last interval counts only when at least recent_usec long: a sample 10 ms after the one
 * before it, 5 MiB higher (500 MiB/s over 10 ms), with 40 MiB available. By hand: the last
 * interval of >= 150 ms is from 400 ms: 5 MiB / 210 ms = 23.8 MiB/s; the window (from 200 ms)
 * 12.2 MiB/s; the burst mark is halved (40 < 5 + 64): 32 MiB/s; nothing. */
static void test_short_interval(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        struct fastgrow_vm vm = { .rss = 300 * MIB, .stats_update = 10, .available = 40 * MIB, .size = GIB,
                                  .target = GIB, .max = 4 * GIB };

        fastgrow_tunables_default(&t);
        for (uint64_t ms = 0; ms <= 600; ms += 200) {
                assert_int_equal(fastgrow_sample(&t, &s, &vm, ms * MS, &d), 0);
                assert_false(d.grow);
        }
        vm.rss += 5 * MIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 610 * MS, &d), 0);
        assert_false(d.grow);
        assert_int_equal(d.rate, 5 * MIB * 1000 / 210);
}

/* One fast grow per statistics sample; stale or unknown statistics: none. */
static void test_once_per_stats_and_stale(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        struct fastgrow_vm vm = { .rss = 300 * MIB, .stats_update = 10, .available = 30 * MIB, .size = GIB,
                                  .target = GIB, .max = 4 * GIB };
        int grows = 0;

        fastgrow_tunables_default(&t);
        for (int k = 0; k < 10; k++) {
                vm.rss += 40 * MIB;   /* 200 MiB/s */
                assert_int_equal(fastgrow_sample(&t, &s, &vm, (uint64_t) k * 200 * MS, &d), 0);
                grows += d.grow;
        }
        assert_int_equal(grows, 1);
        vm.stats_update = 11;         /* new statistics: may grow again */
        vm.rss += 40 * MIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 2000 * MS, &d), 0);
        vm.rss += 40 * MIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 2200 * MS, &d), 0);
        vm.rss += 40 * MIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 2400 * MS, &d), 0);
        assert_false(d.grow);         /* 120 MiB spent of 30 MiB available ... */
        assert_non_null(d.rate ? "" : NULL);
        struct fastgrow_state s2 = { 0 };
        vm.stats_age_usec = 6000000;  /* stale */
        for (int k = 0; k < 5; k++) {
                vm.rss += 40 * MIB;
                assert_int_equal(fastgrow_sample(&t, &s2, &vm, (uint64_t) k * 200 * MS, &d), 0);
                assert_false(d.grow);
        }
        assert_int_equal(fastgrow_sample(NULL, &s2, &vm, 0, &d), -EINVAL);
}

/* fastgrow_may_grow() says no exactly where a sample cannot grow, whatever the RSS: ppnd then
 * skips reading it. A burst sampled only when may_grow says yes grows as when always sampled. */
static void test_may_grow(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        struct fastgrow_vm vm = { .stats_update = 10, .available = 30 * MIB, .size = GIB, .target = GIB,
                                  .max = 4 * GIB };

        fastgrow_tunables_default(&t);
        assert_true(fastgrow_may_grow(&t, &s, &vm));
        struct fastgrow_vm no = vm;
        no.size = no.target = no.max;                           /* at its max */
        assert_false(fastgrow_may_grow(&t, &s, &no));
        no = vm;
        no.target = vm.size + t.margin + 1;                     /* our growth still arriving */
        assert_false(fastgrow_may_grow(&t, &s, &no));
        no = vm;
        no.stats_age_usec = t.stale_usec + 1;                   /* stale statistics */
        assert_false(fastgrow_may_grow(&t, &s, &no));
        no = vm;
        no.available = UINT64_MAX;                              /* unknown available */
        assert_false(fastgrow_may_grow(&t, &s, &no));
        no = vm;
        no.stats_update = 0;                                    /* no statistics */
        assert_false(fastgrow_may_grow(&t, &s, &no));
        assert_false(fastgrow_may_grow(NULL, &s, &vm));

        /* A burst read only when allowed: one grow, then no read until new statistics. */
        int grows = 0, reads = 0;
        vm.rss = 300 * MIB;
        for (int k = 0; k < 10; k++) {
                vm.rss += 40 * MIB;   /* 200 MiB/s */
                if (!fastgrow_may_grow(&t, &s, &vm))
                        continue;
                reads++;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, (uint64_t) k * 200 * MS, &d), 0);
                grows += d.grow;
        }
        assert_int_equal(grows, 1);
        assert_int_equal(reads, 2);   /* the rate needs two samples; after the grow, none */
        vm.stats_update = 11;
        assert_true(fastgrow_may_grow(&t, &s, &vm));
        /* Each refusal above holds for fastgrow_sample() too, whatever the RSS. */
        struct fastgrow_vm refuse[] = { vm, vm, vm };
        refuse[0].size = refuse[0].target = refuse[0].max;
        refuse[1].target = vm.size + t.margin + 1;
        refuse[2].stats_age_usec = t.stale_usec + 1;
        for (size_t i = 0; i < 3; i++) {
                struct fastgrow_state s3 = { 0 };
                assert_false(fastgrow_may_grow(&t, &s3, &refuse[i]));
                for (int k = 0; k < 10; k++) {
                        refuse[i].rss = 300 * MIB + (uint64_t) k * 100 * MIB;
                        assert_int_equal(fastgrow_sample(&t, &s3, &refuse[i], (uint64_t) k * 200 * MS, &d), 0);
                        assert_false(d.grow);
                }
        }
}

/* fastgrow_dense(): a VM is sampled every 200 ms only where top_rate × (tick + look-ahead) +
 * margin reaches past what it has left. Defaults: 1 GiB/s, 1 s, 1 s, 64 MiB: 2 GiB + 64 MiB. */
static void test_dense(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        struct fastgrow_vm vm = { .stats_update = 10, .available = 4 * GIB, .size = 8 * GIB, .target = 8 * GIB,
                                  .max = 16 * GIB, .rss = GIB };

        fastgrow_tunables_default(&t);
        assert_int_equal(t.top_rate, GIB);
        assert_false(fastgrow_dense(&t, &s, &vm));              /* 4 GiB left: once a tick */
        vm.available = 2 * GIB + 64 * MIB;
        assert_true(fastgrow_dense(&t, &s, &vm));               /* at the bound: dense */
        vm.available = 2 * GIB + 65 * MIB;
        assert_false(fastgrow_dense(&t, &s, &vm));
        vm.available = 4 * GIB;
        /* Spent since the statistics counts: 2 GiB touched since leaves 2 GiB, within reach. */
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 0, &d), 0);
        vm.rss = 3 * GIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, USEC_PER_SEC, &d), 0);
        assert_true(fastgrow_dense(&t, &s, &vm));
        /* New statistics not sampled yet: spent starts again from 0 at the next sample. */
        vm.stats_update = 11;
        assert_false(fastgrow_dense(&t, &s, &vm));
        /* Unknown available, no statistics, rate 0 (the old behaviour), NULL: dense. */
        struct fastgrow_vm u = vm;
        u.available = UINT64_MAX;
        assert_true(fastgrow_dense(&t, &s, &u));
        u = vm;
        u.stats_update = 0;
        assert_true(fastgrow_dense(&t, &s, &u));
        t.top_rate = 0;
        assert_true(fastgrow_dense(&t, &s, &vm));
        assert_true(fastgrow_dense(NULL, &s, &vm));
        /* A longer tick reaches farther: 10 s at 1 GiB/s is 11 GiB + 64 MiB. */
        t.top_rate = GIB;
        t.sparse_usec = 10 * USEC_PER_SEC;
        assert_true(fastgrow_dense(&t, &s, &vm));
}

/* Sampled as ppnd does (every VM at the 1 s tick, between ticks every 200 ms only when
 * fastgrow_dense() says so), a guest allocating at any rate up to top_rate from any moment is
 * grown no later than when sampled every 200 ms, and grown iff it is then. Returns the first
 * grow's time in ms (-1: none) and counts the samples taken. */
static long sim(uint64_t available, uint64_t rate, uint64_t start_ms, bool adaptive, unsigned *ret_samples) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;

        fastgrow_tunables_default(&t);
        *ret_samples = 0;
        for (uint64_t ms = 0; ms <= 4800; ms += 200) {
                uint64_t ran = ms > start_ms ? ms - start_ms : 0;
                struct fastgrow_vm vm = { .stats_update = 1700000000, .stats_age_usec = ms * MS, .available = available,
                                          .size = 8 * GIB, .target = 8 * GIB, .max = 32 * GIB,
                                          .rss = 2 * GIB + rate / 1000 * ran };
                if (adaptive && ms % 1000 != 0 && !fastgrow_dense(&t, &s, &vm))
                        continue;
                (*ret_samples)++;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, ms * MS, &d), 0);
                if (d.grow)
                        return (long) ms;
        }
        return -1;
}

static void test_sparse_no_later(void **state) {
        static const uint64_t avail[] = { 512 * MIB, 1536 * MIB, 2 * GIB + 100 * MIB, 3 * GIB, 4 * GIB, 6 * GIB };
        static const uint64_t rates[] = { 100 * MIB, 190 * MIB, 600 * MIB, GIB };
        static const uint64_t starts[] = { 0, 50, 200, 250, 999, 1000, 1900 };
        unsigned saved = 0, total = 0, grown = 0;

        for (size_t a = 0; a < ELEMENTSOF(avail); a++)
                for (size_t r = 0; r < ELEMENTSOF(rates); r++)
                        for (size_t k = 0; k < ELEMENTSOF(starts); k++) {
                                unsigned nd, na;
                                long dense = sim(avail[a], rates[r], starts[k], false, &nd);
                                long adapt = sim(avail[a], rates[r], starts[k], true, &na);
                                if ((dense < 0) != (adapt < 0) || adapt > dense)
                                        fail_msg("available %" PRIu64 " MiB, %" PRIu64 " MiB/s from %" PRIu64
                                                 " ms: grown at %ld ms sampled every 200 ms, at %ld ms sampled adaptively",
                                                 avail[a] / MIB, rates[r] / MIB, starts[k], dense, adapt);
                                grown += dense >= 0;
                                saved += nd - na;
                                total += nd;
                        }
        /* The grid has both outcomes, and the adaptive sampler reads markedly less. */
        assert_true(grown > 0 && grown < ELEMENTSOF(avail) * ELEMENTSOF(rates) * ELEMENTSOF(starts));
        assert_true(saved * 3 > total);
}

/* The host gate (fastgrow_host_quiet()) as ppnd runs it: every 200 ms the host's allocation
 * counter is read (the VM's growth plus `noise` bytes/s from the rest of the host); between
 * ticks (every 1 s, where the round's read of /proc/PID/stat gives the RSS for free) the VM is
 * read only when the period was not quiet, and each sample carries the counter now and at the
 * previous period; with bound, a busy period reads the VM only if all the host allocated since
 * its last sample could grow it (fastgrow_bounded_out()), and runs one period longer (4.8 s and
 * 5 s, both within the statistics' 5 s): a burst it grows one period later is still seen. Returns
 * the first grow's time in ms (-1: none) and counts the reads between ticks. */
static long gated(uint64_t available, uint64_t rate, uint64_t start_ms, uint64_t noise, bool gate, bool bound,
                  unsigned *ret_reads) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        uint64_t prev_alloc = 0;

        fastgrow_tunables_default(&t);
        *ret_reads = 0;
        for (uint64_t ms = 0; ms <= (bound ? 5000 : 4800); ms += 200) {
                uint64_t ran = ms > start_ms ? ms - start_ms : 0;
                uint64_t rss = 2 * GIB + rate / 1000 * ran;
                uint64_t alloc = 10 * GIB + rss + noise / 1000 * ms;
                struct fastgrow_vm vm = { .stats_update = 1700000000, .stats_age_usec = ms * MS, .available = available,
                                          .size = 8 * GIB, .target = 8 * GIB, .max = 32 * GIB, .rss = rss,
                                          .alloc_now = alloc, .alloc_then = prev_alloc,
                                          .then_usec = ms ? (ms - 200) * MS : 0 };
                bool quiet = ms && fastgrow_host_quiet(&t, alloc - prev_alloc, 200 * MS);
                prev_alloc = alloc;
                if (gate && ms % 1000 != 0 && quiet)
                        continue;
                if (bound && ms % 1000 != 0 && fastgrow_bounded_out(&t, &s, &vm, ms * MS))
                        continue;
                *ret_reads += ms % 1000 != 0;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, ms * MS, &d), 0);
                if (d.grow)
                        return (long) ms;
        }
        return -1;
}

static void test_host_gate(void **state) {
        struct fastgrow_tunables t;
        fastgrow_tunables_default(&t);
        /* Half the burst rate (32 MiB/s) over 200 ms is 6.4 MiB. */
        assert_true(fastgrow_host_quiet(&t, 6 * MIB, 200 * MS));
        assert_false(fastgrow_host_quiet(&t, 7 * MIB, 200 * MS));
        assert_true(fastgrow_host_quiet(&t, 0, 200 * MS));
        assert_false(fastgrow_host_quiet(&t, 0, 0));
        assert_false(fastgrow_host_quiet(NULL, 0, 200 * MS));

        static const uint64_t avail[] = { 100 * MIB, 512 * MIB, 1536 * MIB, 3 * GIB };
        static const uint64_t rates[] = { 0, 30 * MIB, 40 * MIB, 100 * MIB, 190 * MIB, 600 * MIB, GIB };
        static const uint64_t starts[] = { 0, 50, 200, 250, 700, 999, 1000, 1900 };
        static const uint64_t noises[] = { 0, 5 * MIB, 20 * MIB, 64 * MIB };
        unsigned grown = 0;
        for (size_t z = 0; z < ELEMENTSOF(noises); z++) {
                unsigned read_gated = 0, read_all = 0, read_bound = 0;
                for (size_t a = 0; a < ELEMENTSOF(avail); a++)
                        for (size_t r = 0; r < ELEMENTSOF(rates); r++)
                                for (size_t k = 0; k < ELEMENTSOF(starts); k++) {
                                        unsigned na, ng, nb;
                                        long all = gated(avail[a], rates[r], starts[k], noises[z], false, false, &na);
                                        long g = gated(avail[a], rates[r], starts[k], noises[z], true, false, &ng);
                                        long b = gated(avail[a], rates[r], starts[k], noises[z], true, true, &nb);
                                        /* Grown iff it is when read every 200 ms; no later on a host
                                         * whose only allocations are the guest's, at most one period
                                         * later when the rest of the host allocates too (the bound
                                         * then counts the others' memory). */
                                        long late = noises[z] ? 200 : 0;
                                        if ((all < 0) != (g < 0) || g > all + late || (all < 0) != (b < 0) ||
                                            b > all + late)
                                                fail_msg("available %" PRIu64 " MiB, %" PRIu64 " MiB/s from %" PRIu64
                                                         " ms, host noise %" PRIu64 " MiB/s: grown at %ld ms read every"
                                                         " 200 ms, at %ld ms gated, at %ld ms gated and bounded",
                                                         avail[a] / MIB, rates[r] / MIB, starts[k], noises[z] / MIB, all, g,
                                                         b);
                                        grown += all >= 0;
                                        read_all += na;
                                        read_gated += ng;
                                        read_bound += nb;
                                }
                /* A quiet host saves most reads; one allocating at half the burst rate saves none. */
                if (noises[z] == 0)
                        assert_true(read_gated * 2 < read_all);
                if (noises[z] >= t.burst / 2)
                        assert_int_equal(read_gated, read_all);
                /* The per-VM bound reads no more than the gate, and on a host that allocates all
                 * the time it still leaves out the VMs far from their grow condition. */
                assert_true(read_bound <= read_gated);
                if (noises[z] >= t.burst / 2)
                        assert_true(read_bound * 3 < read_gated * 2);
                print_message("# host noise %" PRIu64 " MiB/s: reads between ticks %u every period, %u gated, %u "
                              "gated and bounded\n", noises[z] / MIB, read_all, read_gated, read_bound);
        }
        assert_true(grown > 0);
}

/* A VM left unread for periods on a busy host (the read cap deferred it), during which its
 * guest touched 512 MiB, more than the 384 MiB it had available: at its next read it grows. The
 * host allocated more than the VM grew, so the bound sample at the last period (its RSS then at
 * most its last sample's plus all the host allocated) is above its RSS now and says nothing;
 * kept, it took the real sample's place in the window and the burst showed as a rate of 0. */
static void test_deferred_burst(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_state s = { 0 };
        struct fastgrow_decision d;
        fastgrow_tunables_default(&t);
        struct fastgrow_vm vm = { .rss = GIB, .stats_update = 7, .available = 384 * MIB, .size = 2 * GIB,
                                  .target = 2 * GIB, .max = 4 * GIB, .alloc_now = 10 * GIB };
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 1000 * MS, &d), 0);
        assert_false(d.grow);
        /* 2 s later: the host allocated 2 GiB (its 512 MiB among them), 1.9 GiB by the last period. */
        vm.rss = GIB + 512 * MIB;
        vm.alloc_then = 10 * GIB + 1900 * MIB;
        vm.then_usec = 2800 * MS;
        vm.alloc_now = 12 * GIB;
        assert_int_equal(fastgrow_sample(&t, &s, &vm, 3000 * MS, &d), 0);
        assert_true(d.grow);
        assert_true(d.rate >= 200 * MIB);
        /* A bound below the RSS now still counts: the host allocated 100 MiB by the last period. */
        struct fastgrow_state q = { 0 };
        vm.rss = GIB;
        vm.alloc_now = 10 * GIB;
        vm.alloc_then = vm.then_usec = 0;
        assert_int_equal(fastgrow_sample(&t, &q, &vm, 1000 * MS, &d), 0);
        vm.rss = GIB + 512 * MIB;
        vm.alloc_then = 10 * GIB + 100 * MIB;
        vm.then_usec = 2800 * MS;
        vm.alloc_now = 10 * GIB + 600 * MIB;
        assert_int_equal(fastgrow_sample(&t, &q, &vm, 3000 * MS, &d), 0);
        assert_int_equal(q.n, 3);                       /* the first sample, the bound, this one */
        assert_true(d.grow);
        assert_true(d.rate >= 2 * GIB);                 /* 412 MiB in 200 ms: the onset, undiluted */
}

/* New statistics count spent from the RSS when they were asked (rss_at_ask): a guest that
 * touched 400 MiB between the ask and the first sample after the reply has it counted and grows;
 * with the ask's RSS unknown, spent counts from that sample and it does not. The order and the
 * bound see the same. */
static void test_anchor_at_ask(void **state) {
        struct fastgrow_tunables t;
        struct fastgrow_decision d;
        fastgrow_tunables_default(&t);
        for (int known = 0; known < 2; known++) {
                struct fastgrow_state s = { 0 };
                struct fastgrow_vm vm = { .rss = GIB, .stats_update = 7, .available = 384 * MIB, .size = 2 * GIB,
                                          .target = 2 * GIB, .max = 4 * GIB, .alloc_now = 10 * GIB };
                assert_int_equal(fastgrow_sample(&t, &s, &vm, 1000 * MS, &d), 0);
                /* The round at 1.2 s asks new statistics (RSS still 1 GiB); they say 384 MiB. */
                vm.stats_update = 8;
                vm.rss_at_ask = known ? GIB : 0;
                if (known) {
                        assert_int_equal(fastgrow_left(NULL, &s, &vm, 1400 * MS), 384 * MIB);
                        assert_true(fastgrow_dense(&t, &s, &vm));
                }
                /* 400 MiB touched by 5 s: 100 MiB/s, a burst, whose next second alone would not
                 * reach the margin: only the memory touched since the ask says it is past. */
                vm.rss = GIB + 400 * MIB;
                assert_int_equal(fastgrow_sample(&t, &s, &vm, 5000 * MS, &d), 0);
                assert_int_equal(d.grow, known);
                assert_int_equal(s.rss_at_stats, known ? GIB : GIB + 400 * MIB);
        }
}

/* fastgrow_bounded_out() is sound: whenever it says a read may be skipped, no RSS between the
 * newest sample's and the bound would have grown the VM, whether or not a bound sample comes
 * before it. Random states, a grid of RSS values. */
static void test_bounded_sound(void **state) {
        struct fastgrow_tunables t;
        unsigned seed = 777, skipped = 0;
        fastgrow_tunables_default(&t);
        for (int n = 0; n < 20000; n++) {
#define RND(m) ((seed = seed * 1103515245u + 12345u), (uint64_t) ((seed >> 8) % (m)))
                struct fastgrow_state s = { 0 };
                struct fastgrow_decision d;
                uint64_t t0 = 1000 * MS, rss0 = GIB + RND(512) * MIB;
                struct fastgrow_vm vm = { .rss = rss0, .stats_update = 7, .available = (64 + RND(2000)) * MIB,
                                          .size = 3 * GIB, .target = 3 * GIB, .max = 6 * GIB, .alloc_now = 10 * GIB };
                /* One or two samples first, the second some way into a rise. */
                assert_int_equal(fastgrow_sample(&t, &s, &vm, t0, &d), 0);
                uint64_t t1 = t0;
                if (RND(2)) {
                        t1 = t0 + (100 + RND(900)) * MS;
                        vm.rss = rss0 + RND(300) * MIB;
                        vm.alloc_now += vm.rss - rss0 + RND(200) * MIB;
                        if (fastgrow_sample(&t, &s, &vm, t1, &d) == 0 && d.grow)
                                continue;
                }
                uint64_t now = t1 + (200 + RND(2000)) * MS, a0 = vm.alloc_now;
                vm.then_usec = now - 200 * MS > t1 ? now - 200 * MS : 0;
                vm.alloc_then = vm.then_usec ? a0 + RND(300) * MIB : 0;
                vm.alloc_now = (vm.alloc_then ? vm.alloc_then : a0) + RND(100) * MIB;
                if (!fastgrow_bounded_out(&t, &s, &vm, now))
                        continue;
                skipped++;
                uint64_t last = s.rss[s.head], top = last + (vm.alloc_now - a0);
                for (uint64_t r = last; r <= top; r += 4 * MIB) {
                        struct fastgrow_state c = s;
                        struct fastgrow_vm x = vm;
                        x.rss = r;
                        assert_int_equal(fastgrow_sample(&t, &c, &x, now, &d), 0);
                        if (d.grow)
                                fail_msg("case %d: bounded out, yet an RSS of %" PRIu64 " MiB (newest %" PRIu64
                                         ", bound %" PRIu64 ") grows it", n, r / MIB, last / MIB, top / MIB);
                }
#undef RND
        }
        print_message("%u of 20000 bounded out\n", skipped);
        assert_true(skipped > 1000);
}

/* fastgrow_left(): the order a capped period reads VMs in, by hand. */
static void test_left(void **state) {
        struct fastgrow_state s = { 0 };
        struct fastgrow_vm vm = { .stats_update = 7, .available = 400 * MIB, .alloc_now = 5 * GIB + 50 * MIB };
        struct fastgrow_tunables t;
        fastgrow_tunables_default(&t);
        t.top_rate = 0;
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000), 400 * MIB);     /* no sample yet */
        s.n = 1;
        s.head = 0;
        s.t[0] = 1000;
        s.rss[0] = 1100 * MIB;
        s.stats_seen = 6;
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000), 400 * MIB);     /* statistics not sampled yet */
        s.stats_seen = 7;
        s.rss_at_stats = 1000 * MIB;
        s.alloc_at_last = 5 * GIB;
        /* 100 MiB touched by its newest sample, at most 50 more since: 250 left. */
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000 + USEC_PER_SEC), 250 * MIB);
        assert_int_equal(fastgrow_left(NULL, &s, &vm, 1000 + USEC_PER_SEC), 250 * MIB);
        /* It may have touched it all, and 200 MiB more: how far past orders such VMs. */
        vm.alloc_now = 5 * GIB + 500 * MIB;
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000 + USEC_PER_SEC), -200 * (int64_t) MIB);
        /* No faster than top_rate: 1 GiB/s for 200 ms is at most ~205 MiB, below the host's 500. */
        t.top_rate = GIB;
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000 + 200000), 400 * MIB - 100 * MIB - (int64_t) (GIB / 5));
        /* ... and the host's bound where it is the smaller one. */
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000 + USEC_PER_SEC), -200 * (int64_t) MIB);
        /* Counter gone back or unknown: the rate alone bounds it; neither: read first. */
        vm.alloc_now = 5 * GIB - 1;
        assert_int_equal(fastgrow_left(&t, &s, &vm, 1000 + 200000), 400 * MIB - 100 * MIB - (int64_t) (GIB / 5));
        t.top_rate = 0;
        assert_true(fastgrow_left(&t, &s, &vm, 1000 + 200000) == INT64_MIN);
        s.alloc_at_last = 0;
        vm.alloc_now = 5 * GIB;
        assert_true(fastgrow_left(&t, &s, &vm, 1000 + 200000) == INT64_MIN);
        s.alloc_at_last = 5 * GIB;
        vm.available = UINT64_MAX;
        assert_true(fastgrow_left(&t, &s, &vm, 1000 + 200000) == INT64_MIN);  /* statistics unknown */
        vm.available = 400 * MIB;
        vm.stats_update = 0;
        assert_true(fastgrow_left(&t, &s, &vm, 1000 + 200000) == INT64_MIN);
        assert_true(fastgrow_left(&t, NULL, &vm, 1000) == INT64_MIN);
}

/* The VMs read longest ago sink toward the front: on a host allocating 1 GiB/s, of two VMs with
 * the same memory left at their last sample, the one read a second ago comes before the one read
 * in the last period; and of two read in the last period, the one that had touched all it had
 * available comes first. */
static void test_left_orders(void **state) {
        struct fastgrow_state a = { .n = 1, .stats_seen = 7, .rss_at_stats = GIB, .alloc_at_last = 10 * GIB };
        struct fastgrow_state b = a, c = a;
        struct fastgrow_vm vm = { .stats_update = 7, .available = 800 * MIB, .alloc_now = 11 * GIB };
        uint64_t now = 10 * USEC_PER_SEC;
        a.t[0] = now - USEC_PER_SEC;            /* read a second ago: the host allocated 1 GiB since */
        a.rss[0] = GIB + 100 * MIB;
        b.t[0] = now - 200000;
        b.rss[0] = GIB + 100 * MIB;
        b.alloc_at_last = 11 * GIB - 200 * MIB;
        c.t[0] = now - 200000;                  /* read in the last period, all it had touched */
        c.rss[0] = GIB + 800 * MIB;
        c.alloc_at_last = 11 * GIB - 200 * MIB;
        int64_t la = fastgrow_left(NULL, &a, &vm, now), lb = fastgrow_left(NULL, &b, &vm, now),
                lc = fastgrow_left(NULL, &c, &vm, now);
        assert_true(la < lb);
        assert_true(lc < lb);
}

static bool pick_before_ref(const struct fastgrow_pick *x, const struct fastgrow_pick *y) {
        if (x->left != y->left)
                return x->left < y->left;
        if (x->last != y->last)
                return x->last < y->last;
        return x->i < y->i;
}

static int pick_ref_cmp(const void *a, const void *b) {
        const struct fastgrow_pick *x = a, *y = b;
        return pick_before_ref(x, y) ? -1 : pick_before_ref(y, x) ? 1 : 0;
}

/* fastgrow_pick(): the k first are the k nearest of a full sort, in its order, for inputs with
 * many ties (the bound takes most VMs past on a busy host), sorted, reversed and all equal. */
static void test_pick(void **state) {
        enum { N = 700 };
        static struct fastgrow_pick p[N], ref[N];
        unsigned seed = 12345;
        /* By hand: equal left, the older sample first; then the index. */
        struct fastgrow_pick h[] = { { 0, 50, 0 }, { -5, 90, 1 }, { 0, 10, 2 }, { 0, 10, 3 }, { 7, 1, 4 } };
        fastgrow_pick(h, 5, 3);
        assert_int_equal(h[0].i, 1);
        assert_int_equal(h[1].i, 2);
        assert_int_equal(h[2].i, 3);
        fastgrow_pick(NULL, 5, 3);
        fastgrow_pick(h, 0, 3);
        for (int shape = 0; shape < 5; shape++)
                for (size_t k = 0; k <= N; k += (k < 10 ? 1 : 97)) {
                        for (size_t i = 0; i < N; i++) {
                                seed = seed * 1103515245u + 12345u;
                                int64_t l = shape == 0 ? (int64_t) (seed >> 8) % 50 - 25     /* many ties */
                                          : shape == 1 ? (int64_t) i                         /* sorted */
                                          : shape == 2 ? (int64_t) (N - i)                   /* reversed */
                                          : shape == 3 ? 0                                   /* all equal */
                                          : (int64_t) (seed >> 4) - (1 << 26);
                                p[i] = (struct fastgrow_pick) { l, shape == 3 ? 5 : (seed >> 16) % 4, i };
                        }
                        memcpy(ref, p, sizeof(p));
                        qsort(ref, N, sizeof(*ref), pick_ref_cmp);
                        fastgrow_pick(p, N, k);
                        for (size_t j = 0; j < k; j++)
                                assert_int_equal(p[j].i, ref[j].i);
                        /* Nothing lost: the rest is the rest. */
                        bool seen[N] = { false };
                        for (size_t j = 0; j < N; j++)
                                seen[p[j].i] = true;
                        for (size_t j = 0; j < N; j++)
                                assert_true(seen[j]);
                }
}

/* fastgrow_grant(), by hand: a VM at 1 GiB asking for 1.5 GiB wants 512 MiB; it gets what is free
 * up to that, nothing when nothing is free (or less than nothing: fast grows since the round
 * took more than it had), and nothing when the grant would be under 16 MiB. */
static void test_grant(void **state) {
        assert_int_equal(fastgrow_grant(4 * (int64_t) GIB, GIB, GIB + 512 * MIB), 512 * MIB);
        assert_int_equal(fastgrow_grant(100 * (int64_t) MIB, GIB, GIB + 512 * MIB), 100 * MIB);
        assert_int_equal(fastgrow_grant(16 * (int64_t) MIB, GIB, GIB + 512 * MIB), 16 * MIB);
        assert_int_equal(fastgrow_grant(15 * (int64_t) MIB, GIB, GIB + 512 * MIB), 0);
        assert_int_equal(fastgrow_grant(0, GIB, GIB + 512 * MIB), 0);
        assert_int_equal(fastgrow_grant(-(int64_t) GIB, GIB, GIB + 512 * MIB), 0);
        assert_int_equal(fastgrow_grant(4 * (int64_t) GIB, GIB, GIB + 8 * MIB), 0);
        assert_int_equal(fastgrow_grant(4 * (int64_t) GIB, GIB, GIB), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_table),
                cmocka_unit_test(test_grant),
                cmocka_unit_test(test_onset),
                cmocka_unit_test(test_short_interval),
                cmocka_unit_test(test_once_per_stats_and_stale),
                cmocka_unit_test(test_may_grow),
                cmocka_unit_test(test_dense),
                cmocka_unit_test(test_sparse_no_later),
                cmocka_unit_test(test_host_gate),
                cmocka_unit_test(test_deferred_burst),
                cmocka_unit_test(test_anchor_at_ask),
                cmocka_unit_test(test_bounded_sound),
                cmocka_unit_test(test_left),
                cmocka_unit_test(test_left_orders),
                cmocka_unit_test(test_pick),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
