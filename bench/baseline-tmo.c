/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-tmo.h"

#include <math.h>

static uint64_t clamp(double v, uint64_t min, uint64_t max) {
        if (v < (double) min)
                return min;
        if (v > (double) max)
                return max;
        return (uint64_t) v;
}

uint64_t tmo_tick(struct tmo_state *st, uint64_t stall_usec, uint64_t actual, uint64_t min,
                  uint64_t max) {
        if (!st->started) {
                *st = (struct tmo_state) { .started = true, .limit = clamp((double) actual, min, max),
                                           .prev_stall_usec = stall_usec, .grace = TMO_INTERVAL - 1 };
                return st->limit;
        }
        uint64_t delta = stall_usec > st->prev_stall_usec ? stall_usec - st->prev_stall_usec : 0;
        st->prev_stall_usec = stall_usec;
        st->integral_usec += delta;
        double limit = (double) st->limit;
        if (st->integral_usec > TMO_PRESSURE_USEC) {
                double x = (double) st->integral_usec / TMO_PRESSURE_USEC / TMO_COEFF_BACKOFF;
                limit += limit * fmin(TMO_MAX_BACKOFF, x * x * TMO_MAX_BACKOFF);
        } else if (st->grace > 0) {
                st->grace--;
                return st->limit;
        } else {
                double integral = st->integral_usec ? (double) st->integral_usec : 1;
                double x = TMO_PRESSURE_USEC / integral / TMO_COEFF_PROBE;
                limit -= limit * fmin(TMO_MAX_PROBE, x * x * TMO_MAX_PROBE);
        }
        st->integral_usec = 0;
        st->grace = TMO_INTERVAL - 1;
        st->limit = clamp(limit, min, max);
        return st->limit;
}
