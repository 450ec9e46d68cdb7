/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the guest statistics decoder (balloon_stats_parse()), whose input is written by
 * the guest kernel and relayed by QEMU: untrusted.
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - success or -EBADMSG with words, nothing else;
 *   - on failure the output is untouched (written only on success);
 *   - on success a stat is readable iff its bit is set in `known`, an unknown stat reads as 0,
 *     and the "not reported" value 2^64-1 never appears as a value;
 *   - the fast decoder (balloon_stats_decode_text(), no json-c) either declines (-EAGAIN,
 *     output untouched) or gives exactly what the json-c decoder gives.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "balloon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void check_stats(const struct balloon_stats *s) {
        uint64_t v;

        CHECK((s->known >> _BALLOON_STAT_MAX) == 0);
        for (int i = 0; i < _BALLOON_STAT_MAX; i++) {
                int r = balloon_stats_get(s, i, &v);
                if (s->known & (1u << i)) {
                        CHECK(r == 0 && v == s->value[i] && v != UINT64_MAX);
                } else {
                        CHECK(r == -ENODATA);
                        CHECK(s->value[i] == 0);
                }
                CHECK(balloon_stat_to_name(i));
        }
        CHECK(balloon_stats_get(s, _BALLOON_STAT_MAX, &v) == -EINVAL);
}

static bool stats_equal(const struct balloon_stats *a, const struct balloon_stats *b) {
        return memcmp(a->value, b->value, sizeof(a->value)) == 0 && a->known == b->known &&
               a->last_update == b->last_update && a->n_extra == b->n_extra;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct balloon_stats s, untouched, fast;
        struct ppn_error err = { 0 };
        int r, fr;

        memset(&s, 0xa5, sizeof(s));
        untouched = fast = s;
        r = balloon_stats_parse((const char *) data, size, &s, &err);
        fr = balloon_stats_decode_text((const char *) data, size, &fast);
        if (fr == 0)
                CHECK(r == 0 && stats_equal(&fast, &s));
        else
                CHECK(fr == -EAGAIN && stats_equal(&fast, &untouched));
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -ENOMEM);
                CHECK(err.msg[0]);
                CHECK(memcmp(&s, &untouched, sizeof(s)) == 0);
                return 0;
        }
        CHECK(r == 0);
        check_stats(&s);
        return 0;
}
