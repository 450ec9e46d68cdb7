/* SPDX-License-Identifier: Apache-2.0 */
#include "baseline-hyperv.h"

uint64_t hv_want(const struct hv_vm *v, unsigned buffer_pct) {
        uint64_t want = v->committed / 100 * (100 + buffer_pct) +
                        v->committed % 100 * (100 + buffer_pct) / 100;
        if (want < v->min)
                want = v->min;
        if (want > v->max)
                want = v->max;
        return want;
}

void hv_targets(const struct hv_vm *vms, size_t n, uint64_t capacity, unsigned buffer_pct,
                uint64_t *ret_targets) {
        uint64_t sum_want = 0, sum_min = 0;
        double sum_weighted = 0;
        for (size_t i = 0; i < n; i++) {
                ret_targets[i] = hv_want(&vms[i], buffer_pct);
                sum_want += ret_targets[i];
                sum_min += vms[i].min;
                sum_weighted += (double) vms[i].weight * (double) (ret_targets[i] - vms[i].min);
        }
        if (sum_want <= capacity)
                return;
        double rest = capacity > sum_min ? (double) (capacity - sum_min) : 0;
        for (size_t i = 0; i < n; i++) {
                double extra = (double) (ret_targets[i] - vms[i].min);
                double give = sum_weighted > 0 ? rest * (double) vms[i].weight * extra / sum_weighted : 0;
                ret_targets[i] = vms[i].min + (uint64_t) (give < extra ? give : extra);
        }
}
