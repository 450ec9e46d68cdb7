/* SPDX-License-Identifier: Apache-2.0 */
/* vmem's decoders on QEMU 7.2's own replies (captured from a real 512 MiB guest with a 2 GiB
 * region and 1 GiB plugged) and on broken ones, and the request checks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "vmem.h"

static const char real_reply[] =
        "[{\"type\": \"virtio-mem\", \"data\": {\"memdev\": \"/objects/ppn-vmem0-mem\", \"memaddr\": 4294967296, "
        "\"block-size\": 2097152, \"size\": 1073741824, \"node\": 0, \"max-size\": 2147483648, "
        "\"requested-size\": 1073741824, \"id\": \"ppn-vmem0\"}}]";

static int decode(const char *text, struct vmem_device *d, struct ppn_error *e) {
        json_object *o = json_tokener_parse(text);
        int r = vmem_devices_decode(o, d, e);
        json_object_put(o);
        return r;
}

static void test_decode_real(void **state) {
        struct vmem_device d;
        struct ppn_error e = {};
        assert_int_equal(decode(real_reply, &d, &e), 1);
        assert_string_equal(d.id, "ppn-vmem0");
        assert_int_equal(d.size, GIB);
        assert_int_equal(d.requested, GIB);
        assert_int_equal(d.max_size, 2 * GIB);
        assert_int_equal(d.block_size, 2 * MIB);
        /* No memory devices, or only a DIMM: no virtio-mem. */
        assert_int_equal(decode("[]", &d, &e), 0);
        assert_int_equal(decode("[{\"type\": \"dimm\", \"data\": {\"id\": \"d0\", \"size\": 1}}]", &d, &e), 0);
}

static void test_decode_broken(void **state) {
        static const struct { const char *text; const char *msg; } cases[] = {
                { "{}", "query-memory-devices: the reply is not an array" },
                { "[{\"type\": \"virtio-mem\"}]", "query-memory-devices: a virtio-mem entry without data" },
                { "[{\"type\": \"virtio-mem\", \"data\": {\"size\": 0, \"requested-size\": 0, \"max-size\": 0, \"block-size\": 2097152}}]",
                  "query-memory-devices: a virtio-mem device without a usable id (a device given no id= cannot be resized by id)" },
                { "[{\"type\": \"virtio-mem\", \"data\": {\"id\": \"v\", \"size\": -1, \"requested-size\": 0, \"max-size\": 0, \"block-size\": 2097152}}]",
                  "query-memory-devices: virtio-mem 'v' lacks size, requested-size, max-size or block-size" },
                { "[{\"type\": \"virtio-mem\", \"data\": {\"id\": \"v\", \"size\": 0, \"requested-size\": 0, \"max-size\": 8, \"block-size\": 3}}]",
                  "query-memory-devices: virtio-mem 'v' reports block-size 3, size 0, requested 0 beyond max-size 8" },
                { "[{\"type\": \"virtio-mem\", \"data\": {\"id\": \"v\", \"size\": 16, \"requested-size\": 0, \"max-size\": 8, \"block-size\": 2}}]", NULL },
                { "[{\"type\": \"virtio-mem\", \"data\": {\"id\": \"a/b\", \"size\": 0, \"requested-size\": 0, \"max-size\": 8, \"block-size\": 2}}]", NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vmem_device d = { .size = 42 };
                struct ppn_error e = {};
                assert_int_equal(decode(cases[i].text, &d, &e), -EBADMSG);
                if (cases[i].msg)
                        assert_string_equal(e.msg, cases[i].msg);
                assert_int_equal(d.size, 42);   /* untouched */
        }
}

static void test_event_and_checks(void **state) {
        json_object *data = json_tokener_parse("{\"size\": 134217728, \"qom-path\": \"/machine/peripheral/ppn-vmem0\", \"id\": \"ppn-vmem0\"}");
        struct qmp_event ev = { .id = QMP_EVENT_MEMORY_DEVICE_SIZE_CHANGE, .data = data };
        struct vmem_device d = { .id = "ppn-vmem0", .max_size = 2 * GIB, .block_size = 2 * MIB };
        struct ppn_error e = {};
        char id[16];
        uint64_t size;

        assert_int_equal(vmem_event_size(&ev, id, sizeof(id), &size), 0);
        assert_int_equal(size, 128 * MIB);
        assert_string_equal(id, "ppn-vmem0");
        ev.id = QMP_EVENT_BALLOON_CHANGE;
        assert_int_equal(vmem_event_size(&ev, id, sizeof(id), &size), -EINVAL);
        json_object_put(data);
        assert_int_equal(vmem_check_request(&d, GIB, &e), 0);
        assert_int_equal(vmem_check_request(&d, 0, &e), 0);
        assert_int_equal(vmem_check_request(&d, GIB + MIB, &e), -EINVAL);
        assert_string_equal(e.msg, "virtio-mem 'ppn-vmem0': 1074790400 bytes is not whole 2M blocks: refused");
        assert_int_equal(vmem_check_request(&d, 4 * GIB, &e), -ERANGE);
        assert_string_equal(e.msg, "virtio-mem 'ppn-vmem0': 4G is above the region 2G: refused");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decode_real),
                cmocka_unit_test(test_decode_broken),
                cmocka_unit_test(test_event_and_checks),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
