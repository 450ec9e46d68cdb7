/* SPDX-License-Identifier: Apache-2.0 */
#include "blockstats.h"

#include <stdlib.h>

int blockstats_read_decode(json_object *reply, uint64_t *ret_bytes, struct ppn_error *err) {
        uint64_t sum = 0;

        if (!json_object_is_type(reply, json_type_array))
                return ppn_error_set(err, -EBADMSG, "query-blockstats: the reply is not an array");
        for (size_t i = 0; i < json_object_array_length(reply); i++) {
                json_object *dev = json_object_array_get_idx(reply, i), *stats, *rd;
                if (!json_object_is_type(dev, json_type_object) || !json_object_object_get_ex(dev, "stats", &stats) ||
                    !json_object_is_type(stats, json_type_object))
                        return ppn_error_set(err, -EBADMSG, "query-blockstats: entry %zu has no stats object", i);
                if (!json_object_object_get_ex(stats, "rd_bytes", &rd) || !json_object_is_type(rd, json_type_int) ||
                    json_object_get_int64(rd) < 0)
                        return ppn_error_set(err, -EBADMSG,
                                             "query-blockstats: entry %zu: rd_bytes is not a non-negative integer", i);
                sum += json_object_get_uint64(rd);
        }
        *ret_bytes = sum;
        return 0;
}

struct call {
        blockstats_fn fn;
        void *userdata;
};

static void on_reply(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        struct qmp_error e = { 0 };
        uint64_t bytes = 0;

        if (!err && blockstats_read_decode(ret, &bytes, &e.error) < 0) {
                qmp_error_bad_reply(q, "query-blockstats", &e);
                err = &e;
        }
        c->fn(q, err ? 0 : bytes, err, c->userdata);
        free(c);
}

int blockstats_query(struct qmp *q, uint64_t timeout_usec, blockstats_fn fn, void *userdata,
                     struct qmp_error *err) {
        struct call c = { .fn = fn, .userdata = userdata };
        struct qmp_error e = { 0 };
        int r = qmp_call_with(q, "query-blockstats", NULL, timeout_usec, on_reply, &c, sizeof(c), &e);

        if (r < 0 && err)
                *err = e;
        return r;
}
