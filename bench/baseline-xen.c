/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-xen.h"

void xen_targets(const uint64_t *mins, const uint64_t *maxes, size_t n, uint64_t capacity,
                 uint64_t *ret_targets) {
        double sum_min = 0, sum_range = 0;
        for (size_t i = 0; i < n; i++) {
                sum_min += (double) mins[i];
                sum_range += (double) (maxes[i] - mins[i]);
        }
        double f = sum_range > 0 ? ((double) capacity - sum_min) / sum_range : 0;
        if (f < 0)
                f = 0;
        if (f > 1)
                f = 1;
        for (size_t i = 0; i < n; i++)
                ret_targets[i] = mins[i] + (uint64_t) (f * (double) (maxes[i] - mins[i]));
}
