/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: everything read from etcd, which is untrusted (docs/fleet.md): the gateway's
 * replies (etcd_parse_range, etcd_parse_watch, etcd_parse_reply) and the fleet records in them
 * (fleet_capacity_decode, fleet_grant_decode, fleet_revocation_decode). The first byte of the
 * input picks the decoder, the rest is the reply or record.
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - success or a negative errno with words;
 *   - on success every key is a NUL-terminated string of at most ETCD_KEY_MAX bytes and every
 *     value at most ETCD_VALUE_MAX bytes, NUL-terminated past its length;
 *   - a decoded grant has bytes > 0 and expires > not_before.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "fleet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void check_kv(const struct etcd_kv *kv) {
        CHECK(kv->key && strlen(kv->key) <= ETCD_KEY_MAX);
        CHECK(kv->value && kv->value_len <= ETCD_VALUE_MAX && kv->value[kv->value_len] == 0);
}

static void check_result(int r, const struct ppn_error *err) {
        CHECK(r <= 0);
        if (r < 0 && r != -ENOMEM)
                CHECK(err->msg[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct ppn_error err = {};
        const char *body = (const char *) data + 1;
        size_t len = size ? size - 1 : 0;
        int r;

        if (size == 0)
                return 0;
        switch (data[0] % 6) {
        case 0: {
                struct etcd_range rg = {};
                r = etcd_parse_range(body, len, &rg, &err);
                check_result(r, &err);
                for (size_t i = 0; r == 0 && i < rg.n_kvs; i++)
                        check_kv(&rg.kvs[i]);
                etcd_range_done(&rg);
                break;
        }
        case 1: {
                struct etcd_watch_msg m = {};
                r = etcd_parse_watch(body, len, &m, &err);
                check_result(r, &err);
                for (size_t i = 0; r == 0 && i < m.n_events; i++)
                        check_kv(&m.events[i].kv);
                etcd_watch_msg_done(&m);
                break;
        }
        case 2: {
                int64_t rev = 0, f = 0;
                r = etcd_parse_reply(body, len, "deleted", &rev, &f, &err);
                check_result(r, &err);
                break;
        }
        case 3: {
                struct fleet_capacity c;
                r = fleet_capacity_decode(body, len, &c, &err);
                check_result(r, &err);
                CHECK(r < 0 || fleet_id_valid(c.node));
                break;
        }
        case 4: {
                struct fleet_grant g;
                r = fleet_grant_decode(body, len, &g, &err);
                check_result(r, &err);
                CHECK(r < 0 || (g.bytes > 0 && g.expires > g.not_before && g.fence > 0));
                break;
        }
        default: {
                struct fleet_revocation v;
                r = fleet_revocation_decode(body, len, &v, &err);
                check_result(r, &err);
                break;
        }
        }
        return 0;
}
