/* SPDX-License-Identifier: Apache-2.0 */
/* Live moves, the pure parts: sealed messages (who signed, what kind, which move, tampering),
 * the request round trip, the address allow-list and query-migrate. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "relocate.h"

#define MOVE "0123456789abcdef0123456789abcdef"
#define OTHER_MOVE "fedcba9876543210fedcba9876543210"

static struct fleet_identity a, b, stranger;
static struct fleet_trusted trusted[2];

static int setup(void **state) {
        char dir[] = "/tmp/test-relocate-XXXXXX", path[64];
        struct ppn_error e = {};
        struct fleet_identity *ids[] = { &a, &b, &stranger };
        assert_non_null(mkdtemp(dir));
        for (int i = 0; i < 3; i++) {
                snprintf(path, sizeof(path), "%s/k%d", dir, i);
                assert_int_equal(fleet_identity_create(path, ids[i], &e), 0);
                unlink(path);
        }
        rmdir(dir);
        memcpy(trusted[0].id, a.id, sizeof(a.id));
        memcpy(trusted[0].pub, a.pub, sizeof(a.pub));
        memcpy(trusted[1].id, b.id, sizeof(b.id));
        memcpy(trusted[1].pub, b.pub, sizeof(b.pub));
        return 0;
}

/* A request from node to B for 'web' (min 256 MiB, max 512 MiB), ppnctl start's balloon options. */
static struct relocate_request request(const char *node, const char *move) {
        struct relocate_request r = { .time = 1000 };
        snprintf(r.move, sizeof(r.move), "%s", move);
        snprintf(r.source, sizeof(r.source), "%s", node);
        snprintf(r.dest, sizeof(r.dest), "%s", b.id);
        ledger_vm_init(&r.vm);
        snprintf(r.vm.name, sizeof(r.vm.name), "web");
        snprintf(r.vm.uuid, sizeof(r.vm.uuid), "2b453eb4-df82-4951-aaef-eb70c0b72a98");
        r.vm.min_bytes = 256 * MIB;
        r.vm.max_bytes = 512 * MIB;
        return r;
}

static char *sealed_request(const struct fleet_identity *signer, const char *node, const char *move) {
        struct relocate_request r = request(node, move);
        json_object *o = relocate_request_to_json(&r);
        char *text = relocate_seal(signer, o);
        json_object_put(o);
        return text;
}

static int open_request(const char *text, const char *move, struct relocate_request *ret, struct ppn_error *e) {
        json_object *body = NULL;
        int r = relocate_open(text, strlen(text), NULL, trusted, 2, "request", move, &body, e);
        if (r >= 0)
                r = relocate_request_from_json(body, ret, e);
        json_object_put(body);
        return r;
}

static void test_request_round_trip(void **state) {
        char *text = sealed_request(&a, a.id, MOVE);
        struct relocate_request r = {};
        struct ppn_error e = {};
        assert_int_equal(open_request(text, MOVE, &r, &e), 0);
        assert_string_equal(r.source, a.id);
        assert_string_equal(r.dest, b.id);
        assert_string_equal(r.grant, "");
        assert_string_equal(r.vm.name, "web");
        assert_int_equal(r.vm.min_bytes, 256 * MIB);
        assert_false(r.no_deflate_on_oom);
        assert_false(r.no_free_page_reporting);
        relocate_request_done(&r);
        free(text);
}

/* The source QEMU's balloon options travel with the request (the destination starts its QEMU
 * with them); a request without them (an older source) means on, ppnctl start's default; any
 * other type is refused. */
static void test_request_balloon_options(void **state) {
        struct relocate_request r = request(a.id, MOVE), back = {};
        struct ppn_error e = {};
        r.no_free_page_reporting = true;
        json_object *o = relocate_request_to_json(&r);
        assert_int_equal(relocate_request_from_json(o, &back, &e), 0);
        assert_false(back.no_deflate_on_oom);
        assert_true(back.no_free_page_reporting);
        relocate_request_done(&back);
        json_object_object_del(o, "free-page-reporting");
        json_object_object_del(o, "deflate-on-oom");
        assert_int_equal(relocate_request_from_json(o, &back, &e), 0);
        assert_false(back.no_deflate_on_oom);
        assert_false(back.no_free_page_reporting);
        relocate_request_done(&back);
        json_object_object_add(o, "deflate-on-oom", json_object_new_string("off"));
        assert_int_equal(relocate_request_from_json(o, &back, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "'deflate-on-oom' or 'free-page-reporting' is not true or false"));
        json_object_put(o);
}

static void test_refused(void **state) {
        struct relocate_request r = {};
        struct ppn_error e = {};
        char *by_stranger = sealed_request(&stranger, stranger.id, MOVE);
        char *impostor = sealed_request(&stranger, a.id, MOVE);   /* claims to be A */
        char *good = sealed_request(&a, a.id, MOVE);
        assert_int_equal(open_request(by_stranger, MOVE, &r, &e), -EPERM);
        assert_non_null(strstr(e.msg, "not trusted"));
        assert_int_equal(open_request(impostor, MOVE, &r, &e), -EPERM);
        assert_int_equal(open_request(good, OTHER_MOVE, &r, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "another move"));
        /* Tampered with in the store: one byte of the body changed. */
        char *p = strstr(good, "268435456");
        assert_non_null(p);
        p[0] = '9';
        assert_int_equal(open_request(good, MOVE, &r, &e), -EPERM);
        assert_non_null(strstr(e.msg, "does not verify"));
        /* An answer is not a request. */
        struct relocate_answer ans = { .ok = true, .address = "127.0.0.1", .port = 49152 };
        json_object *o = relocate_answer_to_json(MOVE, b.id, &ans), *body = NULL;
        char *sealed = relocate_seal(&b, o);
        assert_int_equal(relocate_open(sealed, strlen(sealed), b.id, trusted, 2, "request", MOVE, &body, &e), -EINVAL);
        assert_int_equal(relocate_open(sealed, strlen(sealed), a.id, trusted, 2, "answer", MOVE, &body, &e), -EPERM);
        assert_int_equal(relocate_open(sealed, strlen(sealed), b.id, trusted, 2, "answer", MOVE, &body, &e), 0);
        struct relocate_answer back;
        assert_int_equal(relocate_answer_from_json(body, &back, &e), 0);
        assert_true(back.ok);
        assert_int_equal(back.port, 49152);
        assert_int_equal(relocate_open("[1]", 3, NULL, trusted, 2, "answer", MOVE, &body, &e), -EINVAL);
        json_object_put(body);
        json_object_put(o);
        free(sealed);
        free(by_stranger);
        free(impostor);
        free(good);
}

static void test_outcome(void **state) {
        json_object *o = relocate_outcome_to_json(MOVE, a.id, RELOCATE_ABORTED, "timeout"), *body = NULL;
        char *text = relocate_seal(&a, o), reason[64];
        enum relocate_outcome oc = RELOCATE_ADOPTED;
        struct ppn_error e = {};
        assert_int_equal(relocate_open(text, strlen(text), NULL, trusted, 2, "outcome", MOVE, &body, &e), 0);
        assert_int_equal(relocate_outcome_from_json(body, &oc, reason, sizeof(reason), &e), 0);
        assert_int_equal(oc, RELOCATE_ABORTED);
        assert_string_equal(reason, "timeout");
        json_object_put(body);
        json_object_put(o);
        free(text);
}

static void test_address_allowed(void **state) {
        assert_true(relocate_address_allowed("127.0.0.1", "127.0.0.1"));
        assert_true(relocate_address_allowed("10.0.0.2, 10.0.0.3", "10.0.0.3"));
        assert_false(relocate_address_allowed("10.0.0.2,10.0.0.3", "10.0.0.30"));
        assert_false(relocate_address_allowed("10.0.0.22", "10.0.0.2"));
        assert_false(relocate_address_allowed("", "127.0.0.1"));
}

static void test_progress(void **state) {
        json_object *o = json_tokener_parse("{\"status\": \"completed\", \"total-time\": 5697, \"downtime\": 117, "
                                            "\"ram\": {\"total\": 403185664, \"transferred\": 84933186, \"remaining\": 0}}");
        struct relocate_progress p;
        relocate_progress_parse(o, &p);
        assert_string_equal(p.status, "completed");
        assert_int_equal(p.total_time_ms, 5697);
        assert_int_equal(p.downtime_ms, 117);
        assert_int_equal(p.transferred_bytes, 84933186);
        json_object_put(o);
        o = json_tokener_parse("{\"status\": \"failed\", \"error-desc\": \"Unable to write\"}");
        relocate_progress_parse(o, &p);
        assert_string_equal(p.status, "failed");
        assert_string_equal(p.error, "Unable to write");
        assert_int_equal(p.transferred_bytes, 0);
        json_object_put(o);
        o = json_object_new_object();
        relocate_progress_parse(o, &p);
        assert_string_equal(p.status, "none");
        json_object_put(o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_round_trip),
                cmocka_unit_test(test_request_balloon_options),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_outcome),
                cmocka_unit_test(test_address_allowed),
                cmocka_unit_test(test_progress),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
