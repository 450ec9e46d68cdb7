/* SPDX-License-Identifier: Apache-2.0 */
/* The decision ring and the status JSON that ppnctl reads back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "eventlog.h"
#include "jsonutil.h"
#include "policy.h"
#include "status.h"

static void test_ring_wraps(void **state) {
        struct eventlog l;
        const struct ppn_event *out[8];
        size_t n;

        assert_int_equal(eventlog_init(&l, 4), 0);
        assert_int_equal(eventlog_since(&l, 0, out, 8), 0);
        for (int i = 1; i <= 6; i++)
                assert_int_equal(eventlog_addf(&l, 100 + i, "vm", "inflate", 0, i * MIB, "step %d", i)->seq, i);
        /* Capacity 4: events 3..6 remain, oldest first. */
        n = eventlog_since(&l, 0, out, 8);
        assert_int_equal(n, 4);
        assert_int_equal(out[0]->seq, 3);
        assert_string_equal(out[0]->reason, "step 3");
        assert_int_equal(out[3]->seq, 6);
        /* After a given seq. */
        n = eventlog_since(&l, 4, out, 8);
        assert_int_equal(n, 2);
        assert_int_equal(out[0]->seq, 5);
        /* A limit keeps the newest. */
        n = eventlog_since(&l, 0, out, 2);
        assert_int_equal(n, 2);
        assert_int_equal(out[0]->seq, 5);
        assert_int_equal(out[1]->seq, 6);
        assert_int_equal(eventlog_since(&l, 6, out, 8), 0);
        eventlog_done(&l);
        assert_int_equal(eventlog_init(&l, 0), -EINVAL);
}

static void test_event_json(void **state) {
        struct ppn_event ev = { .seq = 9, .realtime_usec = 1234567, .from_bytes = 512 * MIB, .to_bytes = 768 * MIB }, back;
        json_object *o, *bad;

        strcpy(ev.vm, "web");
        strcpy(ev.kind, "deflate");
        strcpy(ev.reason, "guest available 20M < headroom 64M");
        o = event_to_json(&ev);
        /* The keys and their order, as ppnctl events --json has always printed them. */
        assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                            "{\"seq\":9,\"time_usec\":1234567,\"vm\":\"web\",\"kind\":\"deflate\","
                            "\"from_bytes\":536870912,\"to_bytes\":805306368,"
                            "\"reason\":\"guest available 20M < headroom 64M\"}");
        assert_int_equal(event_from_json(o, &back), 0);
        assert_memory_equal(&ev, &back, sizeof(ev));
        json_object_put(o);
        bad = json_tokener_parse("{\"seq\":\"9\"}");
        assert_int_equal(event_from_json(bad, &back), -EINVAL);
        json_object_put(bad);
}

/* Every policy reason is an event kind, stored and sent whole (the ring once cut
 * "shrink-overcommit" to "shrink-overcomm" while status said the whole word). */
static void test_kinds_whole(void **state) {
        struct eventlog l;

        assert_int_equal(eventlog_init(&l, 4), 0);
        for (int r = 0; r < _POLICY_REASON_MAX; r++) {
                const char *kind = policy_reason_to_string((enum policy_reason) r);
                const struct ppn_event *ev = eventlog_addf(&l, 1, "vm", kind, 0, 0, "why");
                struct ppn_event back;
                json_object *o = event_to_json(ev);
                assert_string_equal(ev->kind, kind);
                assert_int_equal(event_from_json(o, &back), 0);
                assert_string_equal(back.kind, kind);
                json_object_put(o);
        }
        eventlog_done(&l);
}

/* A busy VM's events for a history reply: the newest that fit the budget, oldest first, the
 * rest counted; other VMs' events and those before `since` never included. Full, the ring of
 * 2,048 events with long reasons is ~850 KB of JSON, which with the samples overflowed the
 * control socket's 1 MiB reply queue. */
static void test_vm_json_bounded(void **state) {
        struct eventlog l;
        json_object *arr;
        size_t omitted = 99, n;
        char reason[EVENT_REASON_MAX];

        memset(reason, 'r', sizeof(reason) - 1);
        reason[sizeof(reason) - 1] = '\0';
        assert_int_equal(eventlog_init(&l, 2048), 0);
        for (int i = 1; i <= 2048; i++)
                eventlog_addf(&l, (uint64_t) i, i % 512 == 0 ? "other" : "web", "shrink-overcommit", GIB, GIB, "%d %s",
                              i, reason);
        arr = eventlog_vm_json(&l, "web", 0, 512 * 1024, &omitted);
        n = json_object_array_length(arr);
        assert_true(strlen(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN)) <= 512 * 1024);
        assert_true(n > 1000 && n < 2044);
        assert_int_equal(n + omitted, 2044);
        assert_int_equal(json_object_get_uint64(json_object_object_get(json_object_array_get_idx(arr, n - 1), "seq")),
                         2047);
        for (size_t i = 1; i < n; i++)
                assert_true(json_object_get_uint64(json_object_object_get(json_object_array_get_idx(arr, i), "seq")) >
                            json_object_get_uint64(json_object_object_get(json_object_array_get_idx(arr, i - 1), "seq")));
        json_object_put(arr);
        /* Everything fits: nothing omitted; since drops the older ones. */
        arr = eventlog_vm_json(&l, "other", 1000, 512 * 1024, &omitted);
        assert_int_equal(json_object_array_length(arr), 3);
        assert_int_equal(omitted, 0);
        json_object_put(arr);
        arr = eventlog_vm_json(&l, "web", 0, 10, &omitted);
        assert_int_equal(json_object_array_length(arr), 0);
        assert_int_equal(omitted, 2044);
        json_object_put(arr);
        eventlog_done(&l);
}

/* What vm_status_write() wrote, parsed by json-c (whole: nothing after the object). */
static json_object *status_json(const struct vm_status *s) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        json_tokener *tok = json_tokener_new();
        json_object *o;

        assert_non_null(f);
        vm_status_write(s, f);
        assert_int_equal(fclose(f), 0);
        o = json_tokener_parse_ex(tok, text, (int) len);
        assert_non_null(o);
        assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
        assert_int_equal(tok->char_offset, (int) len);
        json_tokener_free(tok);
        free(text);
        return o;
}

/* The raw text object serializes as its text, inside an ordinary object. */
static void test_raw_text(void **state) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "vms", json_object_new_raw(strdup("[{\"a\":1},null]")));
        json_object_object_add(o, "n", json_object_new_int(2));
        assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), "{\"vms\":[{\"a\":1},null],\"n\":2}");
        json_object_put(o);
}

static void test_vm_status_json(void **state) {
        struct vm_status s = {
                .min_bytes = 256 * MIB, .max_bytes = GIB, .target_bytes = 512 * MIB, .actual_bytes = STATUS_UNKNOWN,
                .base_bytes = 512 * MIB, .plugged_bytes = STATUS_UNKNOWN, .balloon_bytes = 0,
                .guest_available_bytes = STATUS_UNKNOWN, .stats_age_usec = 1500000, .shares = 1000,
                .cpu_weight = 300, .pid = 4242, .override_left_usec = 0,
        }, back;
        json_object *o, *v;

        strcpy(s.name, "db");
        strcpy(s.state, "absent");
        strcpy(s.reason, "QEMU exited; \"reservation\" kept\\\n\t\x01 é");
        o = status_json(&s);
        /* Unknown sizes are null, not a huge number. */
        assert_true(json_object_object_get_ex(o, "actual_bytes", &v));
        assert_null(v);
        assert_true(json_object_object_get_ex(o, "min_bytes", &v));
        assert_int_equal(json_object_get_uint64(v), 256 * MIB);
        assert_int_equal(vm_status_from_json(o, &back), 0);
        assert_memory_equal(&s, &back, sizeof(s));
        json_object_object_del(o, "reason");
        assert_int_equal(vm_status_from_json(o, &back), -EINVAL);
        json_object_put(o);
}

static void test_pool_status_json(void **state) {
        struct pool_status p = {
                .physical_bytes = 4 * GIB, .reserve_bytes = 512 * MIB, .reserved_min_bytes = 1536 * MIB,
                .pool_available_bytes = 2 * (int64_t) GIB, .committed_bytes = 3 * GIB, .free_bytes = -512 * (int64_t) MIB,
                .host_available_bytes = STATUS_UNKNOWN, .psi_some_avg10 = 1.25, .n_vms = 3, .n_running = 2,
        }, back;
        json_object *o = pool_status_to_json(&p);

        assert_int_equal(pool_status_from_json(o, &back), 0);
        assert_memory_equal(&p, &back, sizeof(p));
        json_object_put(o);
}

/* JSON_KIND_SETTING: 0 (a setting nobody set) is null both ways, in the object and in the text. */
struct setting_pair {
        uint64_t a, b;
};

static void test_setting_kind(void **state) {
        static const struct json_field fields[] = {
                JSON_FIELD(struct setting_pair, a, "a", JSON_KIND_SETTING),
                JSON_FIELD(struct setting_pair, b, "b", JSON_KIND_SETTING),
        };
        struct setting_pair p = { .a = 0, .b = 4 * GIB }, back = { .a = 7, .b = 7 };
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        json_object *o = json_from_fields(fields, ELEMENTSOF(fields), &p);

        assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), "{\"a\":null,\"b\":4294967296}");
        assert_non_null(f);
        json_write_fields(f, fields, ELEMENTSOF(fields), &p);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(text, "{\"a\":null,\"b\":4294967296}");
        free(text);
        assert_int_equal(json_to_fields(o, fields, ELEMENTSOF(fields), &back), 0);
        assert_memory_equal(&p, &back, sizeof(p));
        /* Missing, or not an integer: refused. */
        json_object_object_add(o, "b", json_object_new_string("4G"));
        assert_int_equal(json_to_fields(o, fields, ELEMENTSOF(fields), &back), -EINVAL);
        json_object_object_del(o, "a");
        assert_int_equal(json_to_fields(o, fields, ELEMENTSOF(fields), &back), -EINVAL);
        json_object_put(o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ring_wraps),
                cmocka_unit_test(test_event_json),
                cmocka_unit_test(test_kinds_whole),
                cmocka_unit_test(test_vm_json_bounded),
                cmocka_unit_test(test_vm_status_json),
                cmocka_unit_test(test_raw_text),
                cmocka_unit_test(test_pool_status_json),
                cmocka_unit_test(test_setting_kind),
        };
        return cmocka_run_group_tests_name("eventlog", tests, NULL, NULL);
}
