/* SPDX-License-Identifier: Apache-2.0 */
#include "pool.h"

#include <inttypes.h>
#include <string.h>

static int64_t capacity(const struct pool_node *node) {
        uint64_t lim = (uint64_t) INT64_C(1) << 61;
        uint64_t phys = node->physical_bytes > lim ? lim : node->physical_bytes;
        uint64_t res = node->reserve_bytes > lim ? lim : node->reserve_bytes;
        return (int64_t) phys - (int64_t) res;
}

static uint64_t sum_min(const struct pool_vm *vms, size_t n) {
        uint64_t s = 0;
        for (size_t i = 0; i < n; i++)
                s = sat_add(s, vms[i].min_bytes);
        return s;
}

/* Figures are clamped to ±2^62 so that differences of two of them cannot overflow; a real
 * node is many orders of magnitude below that (the ledger caps sizes at 1 PiB). */
#define FIGURE_LIMIT (INT64_C(1) << 62)

static int64_t clamp(int64_t cap, uint64_t minus) {
        if (minus > (uint64_t) FIGURE_LIMIT)
                minus = (uint64_t) FIGURE_LIMIT;
        int64_t v = cap - (int64_t) minus;
        return v < -FIGURE_LIMIT ? -FIGURE_LIMIT : v > FIGURE_LIMIT ? FIGURE_LIMIT : v;
}

static int64_t available(const struct pool_node *node, const struct pool_vm *vms, size_t n) {
        return clamp(capacity(node), sat_add(sum_min(vms, n), node->lent_bytes));
}

void pool_compute(const struct pool_node *node, const struct pool_vm *vms, size_t n_vms,
                  struct pool_figures *ret) {
        struct pool_figures f = {
                .physical_bytes = node->physical_bytes,
                .reserve_bytes = node->reserve_bytes,
                .reserved_min_bytes = sum_min(vms, n_vms),
                .lent_bytes = node->lent_bytes,
                .committed_bytes = node->lent_bytes,
                .pool_available_bytes = available(node, vms, n_vms),
                .n_vms = n_vms,
        };
        for (size_t i = 0; i < n_vms; i++) {
                f.committed_bytes = sat_add(f.committed_bytes,
                                            vms[i].actual_known ? vms[i].actual_bytes : vms[i].max_bytes);
                f.n_actual_known += vms[i].actual_known;
        }
        f.free_bytes = clamp(capacity(node), f.committed_bytes);
        *ret = f;
}

char *pool_format_mib(int64_t bytes, char *buf, size_t len) {
        if (bytes % (int64_t) MIB == 0)
                snprintf(buf, len, "%" PRId64 " MiB", bytes / (int64_t) MIB);
        else
                snprintf(buf, len, "%.1f MiB", (double) bytes / (double) MIB);
        return buf;
}

/* Appends "a 4096 MiB, b 2048 MiB" (up to 3, largest first, ties by name) or "none". */
static void biggest_reservations(const struct pool_vm *vms, size_t n, char *buf, size_t len) {
        size_t picked[3], k = 0, off = 0;

        buf[0] = '\0';
        for (; k < 3 && k < n; k++) {
                size_t best = SIZE_MAX;
                for (size_t i = 0; i < n; i++) {
                        bool taken = false;
                        for (size_t j = 0; j < k; j++)
                                taken |= picked[j] == i;
                        if (taken || vms[i].min_bytes == 0)
                                continue;
                        if (best == SIZE_MAX || vms[i].min_bytes > vms[best].min_bytes ||
                            (vms[i].min_bytes == vms[best].min_bytes && strcmp(vms[i].name, vms[best].name) < 0))
                                best = i;
                }
                if (best == SIZE_MAX)
                        break;
                picked[k] = best;
        }
        for (size_t j = 0; j < k; j++) {
                char mib[POOL_MIB_MAX];
                int w = snprintf(buf + off, len - off, "%s%s %s", j ? ", " : "", vms[picked[j]].name,
                                 pool_format_mib((int64_t) vms[picked[j]].min_bytes, mib, sizeof(mib)));
                if (w < 0 || (size_t) w >= len - off)
                        break;
                off += (size_t) w;
        }
        if (off == 0)
                snprintf(buf, len, "none");
}

int pool_admit(const struct pool_node *before_node, const struct pool_vm *before, size_t n_before,
               const struct pool_node *after_node, const struct pool_vm *after, size_t n_after,
               const char *what, struct ppn_error *err) {
        int64_t has = available(before_node, before, n_before);
        int64_t left = available(after_node, after, n_after);
        char needs_s[POOL_MIB_MAX], has_s[POOL_MIB_MAX], short_s[POOL_MIB_MAX], big[256];

        if (left >= 0 || left >= has)
                return 0;
        biggest_reservations(before, n_before, big, sizeof(big));
        return ppn_error_set(err, -ENOSPC,
                             "refused: %s needs %s but the pool has %s available (short by %s); "
                             "biggest reservations: %s",
                             what, pool_format_mib(has - left, needs_s, sizeof(needs_s)),
                             pool_format_mib(has, has_s, sizeof(has_s)),
                             pool_format_mib(-left, short_s, sizeof(short_s)), big);
}
