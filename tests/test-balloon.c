/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the balloon module: the pure guest-stats decoder (unknown values never become
 * numbers), target checks (nothing is sent for a refused target), and every call, async and
 * sync, against the scripted peer with replies recorded from QEMU 7.2.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>

#include "balloon.h"
#include "qmp-peer.h"
#include "util.h"

static void assert_contains(const char *haystack, const char *needle) {
        if (!strstr(haystack, needle))
                fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* The "return" value of a recorded reply, from a transcript line holding `needle`. */
static json_object *recorded_return(const char *transcript, const char *needle) {
        struct transcript t;
        json_object *ret = NULL;

        transcript_load(transcript, &t);
        for (size_t i = 0; i < t.n && !ret; i++) {
                json_object *msg;
                if (t.lines[i].dir != '<' || !strstr(t.lines[i].text, needle))
                        continue;
                msg = json_tokener_parse(t.lines[i].text);
                ret = json_object_get(json_object_object_get(msg, "return"));
                json_object_put(msg);
        }
        transcript_free(&t);
        assert_non_null(ret);
        return ret;
}

/* ---- the pure decoder ---------------------------------------------------------------- */

/* QEMU 7.2 before polling is enabled (recorded): every stat 2^64-1, last-update 0. */
static void test_stats_recorded_unknown(void **state) {
        json_object *reply = recorded_return("session.qmp", "\"last-update\": 0");
        struct balloon_stats s;
        uint64_t v = 42;

        assert_int_equal(balloon_stats_decode(reply, &s, NULL), 0);
        assert_int_equal(s.last_update, 0);
        assert_int_equal(s.known, 0);
        assert_int_equal(s.n_extra, 0);
        for (int i = 0; i < _BALLOON_STAT_MAX; i++) {
                assert_int_equal(balloon_stats_get(&s, i, &v), -ENODATA);
                assert_int_equal(s.value[i], 0); /* never 2^64-1 as a number */
        }
        assert_int_equal(v, 42);
        json_object_put(reply);
}

static bool stats_equal(const struct balloon_stats *a, const struct balloon_stats *b) {
        return memcmp(a->value, b->value, sizeof(a->value)) == 0 && a->known == b->known &&
               a->last_update == b->last_update && a->n_extra == b->n_extra;
}

/* A real guest (recorded in guest.qmp): the driver reports at start, and after polling is on. */
static void test_stats_recorded_real(void **state) {
        struct transcript t;
        unsigned n = 0;

        transcript_load("guest.qmp", &t);
        for (size_t i = 0; i < t.n; i++) {
                json_object *msg, *ret;
                struct balloon_stats s, fast;
                const char *raw, *raw_end;
                uint64_t total, free_mem, avail;

                if (t.lines[i].dir != '<' || !strstr(t.lines[i].text, "last-update"))
                        continue;
                msg = json_tokener_parse(t.lines[i].text);
                ret = json_object_object_get(msg, "return");
                assert_int_equal(balloon_stats_decode(ret, &s, NULL), 0);
                /* QEMU's own text (the "return" value, as sent) is in the fast decoder's subset. */
                raw = strstr(t.lines[i].text, "{\"stats\"");
                raw_end = raw ? strstr(raw, ", \"id\"") : NULL;
                assert_non_null(raw_end);
                assert_int_equal(balloon_stats_decode_text(raw, (size_t) (raw_end - raw), &fast), 0);
                assert_true(stats_equal(&fast, &s));
                assert_true(s.last_update > 1700000000); /* a real Unix time */
                assert_int_equal(s.known, (1u << _BALLOON_STAT_MAX) - 1);
                assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_TOTAL_MEMORY, &total), 0);
                assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_FREE_MEMORY, &free_mem), 0);
                assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_AVAILABLE_MEMORY, &avail), 0);
                /* 1024 MiB guest, then ballooned to 512 MiB: total is what the guest sees */
                assert_in_range(total, 400 * MIB, 1024 * MIB);
                assert_true(free_mem <= total && avail <= total);
                json_object_put(msg);
                n++;
        }
        assert_int_equal(n, 2);
        transcript_free(&t);
}

#define ALL_UNKNOWN(lu) "{\"stats\": {\"stat-htlb-pgalloc\": 18446744073709551615, " \
        "\"stat-swap-out\": 18446744073709551615, \"stat-available-memory\": 18446744073709551615, " \
        "\"stat-htlb-pgfail\": 18446744073709551615, \"stat-free-memory\": 18446744073709551615, " \
        "\"stat-minor-faults\": 18446744073709551615, \"stat-major-faults\": 18446744073709551615, " \
        "\"stat-total-memory\": 18446744073709551615, \"stat-swap-in\": 18446744073709551615, " \
        "\"stat-disk-caches\": 18446744073709551615}, \"last-update\": " #lu "}"

static const struct stats_case {
        const char *name;
        const char *json;
        int r;
        uint32_t known;
        uint64_t free_memory;      /* checked when known */
        unsigned n_extra;
} stats_cases[] = {
        { "all unknown, never updated", ALL_UNKNOWN(0), 0, 0, 0, 0 },
        { "all unknown, updated", ALL_UNKNOWN(1795946222), 0, 0, 0, 0 },
        { "numbers but never updated", "{\"stats\": {\"stat-free-memory\": 1000}, \"last-update\": 0}",
          0, 0, 0, 0 },
        { "mixed", "{\"stats\": {\"stat-free-memory\": 524288000, \"stat-swap-in\": 18446744073709551615, "
          "\"stat-total-memory\": 1000000000}, \"last-update\": 1795946222}", 0,
          (1u << BALLOON_STAT_FREE_MEMORY) | (1u << BALLOON_STAT_TOTAL_MEMORY), 524288000, 0 },
        { "2^64-2 is a number", "{\"stats\": {\"stat-free-memory\": 18446744073709551614}, \"last-update\": 5}",
          0, 1u << BALLOON_STAT_FREE_MEMORY, UINT64_C(18446744073709551614), 0 },
        { "zero is a number", "{\"stats\": {\"stat-free-memory\": 0}, \"last-update\": 5}", 0,
          1u << BALLOON_STAT_FREE_MEMORY, 0, 0 },
        { "newer kernel's extra stats", "{\"stats\": {\"stat-oom-kills\": 3, \"stat-alloc-stalls\": 0, "
          "\"stat-free-memory\": 7}, \"last-update\": 5}", 0, 1u << BALLOON_STAT_FREE_MEMORY, 7, 2 },
        { "no stats at all", "{\"stats\": {}, \"last-update\": 5}", 0, 0, 0, 0 },
        { "stats missing", "{\"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "stats not an object", "{\"stats\": [], \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "last-update missing", "{\"stats\": {}}", -EBADMSG, 0, 0, 0 },
        { "last-update negative", "{\"stats\": {}, \"last-update\": -1}", -EBADMSG, 0, 0, 0 },
        { "last-update a string", "{\"stats\": {}, \"last-update\": \"5\"}", -EBADMSG, 0, 0, 0 },
        { "stat negative", "{\"stats\": {\"stat-free-memory\": -5}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "stat a double", "{\"stats\": {\"stat-free-memory\": 1.5}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "stat a string", "{\"stats\": {\"stat-free-memory\": \"1\"}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "stat null", "{\"stats\": {\"stat-free-memory\": null}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        { "unknown stat a string", "{\"stats\": {\"stat-new\": \"x\"}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
        /* json-c saturates integers beyond 2^64-1 to 2^64-1: unknown, never a number */
        { "stat beyond 2^64", "{\"stats\": {\"stat-free-memory\": 18446744073709551616}, \"last-update\": 5}",
          0, 0, 0, 0 },
        { "an array", "[1]", -EBADMSG, 0, 0, 0 },
        { "not JSON", "{\"stats\": ", -EBADMSG, 0, 0, 0 },
        { "trailing bytes", "{\"stats\": {}, \"last-update\": 5} x", -EBADMSG, 0, 0, 0 },
        { "empty", "", -EBADMSG, 0, 0, 0 },
        /* For the fast decoder: json-c's reading of what it leaves to json-c. */
        { "a stat twice", "{\"stats\": {\"stat-free-memory\": 1, \"stat-free-memory\": 2}, \"last-update\": 5}",
          0, 1u << BALLOON_STAT_FREE_MEMORY, 2, 0 },
        { "an unknown stat twice", "{\"stats\": {\"stat-x\": 1, \"stat-x\": 2}, \"last-update\": 5}", 0, 0, 0, 1 },
        { "an escaped name", "{\"stats\": {\"stat-free\\u002dmemory\": 9}, \"last-update\": 5}",
          0, 1u << BALLOON_STAT_FREE_MEMORY, 9, 0 },
        { "another member", "{\"stats\": {}, \"last-update\": 5, \"x\": 1}", 0, 0, 0, 0 },
        { "blanks everywhere", " {\r\n\"stats\"\t: { \"stat-free-memory\" : 3 } ,\"last-update\":5 } ", 0,
          1u << BALLOON_STAT_FREE_MEMORY, 3, 0 },
        { "a leading zero", "{\"stats\": {\"stat-free-memory\": 03}, \"last-update\": 5}", -EBADMSG, 0, 0, 0 },
};

/* Cases balloon_stats_decode_text() must decode itself (the others it may leave to json-c). */
#define FAST_CASES 9

static void test_stats_table(void **state) {
        unsigned n_fast = 0;

        for (size_t i = 0; i < ELEMENTSOF(stats_cases); i++) {
                const struct stats_case *c = &stats_cases[i];
                struct balloon_stats s = { .known = 0xdead };
                struct ppn_error err = { 0 };
                uint64_t v = 0;
                int r = balloon_stats_parse(c->json, strlen(c->json), &s, &err);
                struct balloon_stats fast = { .known = 0xbeef };

                if (r != c->r)
                        fail_msg("%s: got %d (%s), want %d", c->name, r, err.msg, c->r);
                /* The fast decoder agrees with json-c's, or declines and touches nothing. */
                if (balloon_stats_decode_text(c->json, strlen(c->json), &fast) == 0) {
                        if (r != 0 || !stats_equal(&fast, &s))
                                fail_msg("%s: the fast decoder differs from json-c's", c->name);
                        n_fast++;
                } else
                        assert_int_equal(fast.known, 0xbeef);
                if (r < 0) {
                        assert_int_equal(s.known, 0xdead); /* untouched */
                        assert_contains(err.msg, "guest-stats");
                        continue;
                }
                if (s.known != c->known || s.n_extra != c->n_extra)
                        fail_msg("%s: known %#x extra %u", c->name, s.known, s.n_extra);
                if (c->known & (1u << BALLOON_STAT_FREE_MEMORY)) {
                        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_FREE_MEMORY, &v), 0);
                        assert_int_equal(v, c->free_memory);
                }
                for (int k = 0; k < _BALLOON_STAT_MAX; k++)
                        if (!(s.known & (1u << k)))
                                assert_int_equal(s.value[k], 0);
        }
        assert_int_equal(n_fast, FAST_CASES);
}

/* Every stat name decodes to its own stat: the sorted name table is complete and in order. */
static void test_stat_names(void **state) {
        for (int i = 0; i < _BALLOON_STAT_MAX; i++) {
                const char *name = balloon_stat_to_name(i);
                char json[128];
                struct balloon_stats s;
                uint64_t v;

                assert_non_null(name);
                snprintf(json, sizeof(json), "{\"stats\": {\"%s\": %d}, \"last-update\": 1}", name, 100 + i);
                assert_int_equal(balloon_stats_parse(json, strlen(json), &s, NULL), 0);
                assert_int_equal(s.known, 1u << i);
                assert_int_equal(balloon_stats_get(&s, i, &v), 0);
                assert_int_equal(v, 100 + i);
        }
        assert_null(balloon_stat_to_name(_BALLOON_STAT_MAX));
        assert_int_equal(balloon_stats_get(NULL, 0, NULL), -EINVAL);
}

static void test_check_target(void **state) {
        struct ppn_error err = { 0 };

        assert_int_equal(balloon_check_target(0, 0, &err), -EINVAL);
        assert_contains(err.msg, "target 0");
        assert_int_equal(balloon_check_target(256 * MIB, 512 * MIB, &err), -ERANGE);
        assert_contains(err.msg, "256M");
        assert_contains(err.msg, "512M");
        assert_int_equal(balloon_check_target(512 * MIB, 512 * MIB, NULL), 0);
        assert_int_equal(balloon_check_target(1, 0, NULL), 0);
        assert_int_equal(balloon_check_target(UINT64_MAX, 0, NULL), -ERANGE);
        assert_int_equal(balloon_check_target(BALLOON_TARGET_MAX, 0, NULL), 0);
}

static void test_event_actual(void **state) {
        json_object *data = json_tokener_parse("{\"actual\": 805306368}");
        json_object *bad = json_tokener_parse("{\"actual\": \"805306368\"}");
        struct qmp_event ev = { .id = QMP_EVENT_BALLOON_CHANGE, .name = "BALLOON_CHANGE", .data = data };
        uint64_t v = 0;

        assert_int_equal(balloon_event_actual(&ev, &v), 0);
        assert_int_equal(v, 768 * MIB);
        ev.data = bad;
        assert_int_equal(balloon_event_actual(&ev, &v), -EBADMSG);
        ev.data = NULL;
        assert_int_equal(balloon_event_actual(&ev, &v), -EBADMSG);
        ev.id = QMP_EVENT_STOP;
        assert_int_equal(balloon_event_actual(&ev, &v), -EINVAL);
        assert_int_equal(v, 768 * MIB);
        json_object_put(data);
        json_object_put(bad);
}

/* ---- calls against the scripted peer ------------------------------------------------- */

struct outcome {
        unsigned calls;
        struct qmp_error err;
        bool failed;
        uint64_t actual;
        struct balloon_stats stats;
        bool have_stats;
};

static void record_err(struct outcome *o, const struct qmp_error *err) {
        o->calls++;
        o->failed = err != NULL;
        if (err)
                o->err = *err;
}

static void on_done(struct qmp *q, const struct qmp_error *err, void *userdata) {
        record_err(userdata, err);
}

static void on_actual(struct qmp *q, uint64_t actual, const struct qmp_error *err, void *userdata) {
        struct outcome *o = userdata;
        record_err(o, err);
        o->actual = actual;
}

static void on_stats(struct qmp *q, const struct balloon_stats *s, const struct qmp_error *err,
                     void *userdata) {
        struct outcome *o = userdata;
        record_err(o, err);
        if (s) {
                o->stats = *s;
                o->have_stats = true;
        }
}

/* Sends tmpl with "%ID%" replaced by the id of cmd. */
static void reply_line(struct peer *p, json_object *cmd, const char *tmpl) {
        const char *at = strstr(tmpl, "%ID%");
        char line[2048];

        assert_non_null(at);
        snprintf(line, sizeof(line), "%.*s%s%s", (int) (at - tmpl), tmpl,
                 json_object_get_string(json_object_object_get(cmd, "id")), at + 4);
        peer_send_line(p, line);
}

/* A refused target never reaches QEMU: nothing written, nothing pending, no callback. */
static void test_target_refused_before_sending(void **state) {
        struct peer *p = ready_peer();
        struct outcome o = { 0 };
        struct qmp_error err = { 0 };

        assert_int_equal(balloon_set_target(p->q, 0, 0, 0, on_done, &o, &err), -EINVAL);
        assert_contains(err.error.msg, "test peer");
        assert_false(qmp_error_is_qemu(&err));
        assert_int_equal(balloon_set_target(p->q, 256 * MIB, 384 * MIB, 0, on_done, &o, &err), -ERANGE);
        assert_contains(err.error.msg, "below the floor");
        assert_int_equal(balloon_set_target_sync(p->q, 100 * MIB, 384 * MIB, 0, &err), -ERANGE);
        assert_int_equal(balloon_enable_stats(p->q, "a/b", 2, 0, on_done, &o, &err), -EINVAL);
        assert_int_equal(balloon_read_stats(p->q, "", 0, on_stats, &o, &err), -EINVAL);
        /* Ids go into the command text as they are: only what QEMU accepts as an id passes. */
        assert_int_equal(balloon_read_stats(p->q, "b\",\"x\":\"", 0, on_stats, &o, &err), -EINVAL);
        assert_int_equal(balloon_read_stats(p->q, "0balloon", 0, on_stats, &o, &err), -EINVAL);
        assert_int_equal(balloon_enable_stats(p->q, "bal\\n", 2, 0, on_done, &o, &err), -EINVAL);
        assert_int_equal(qmp_pending(p->q), 0);
        assert_null(peer_read_command(p));
        assert_int_equal(o.calls, 0);
        peer_done(p);
}

static void test_set_target_and_query(void **state) {
        struct peer *p = ready_peer();
        struct outcome set = { 0 }, query = { 0 };
        json_object *cmd;

        assert_int_equal(balloon_set_target(p->q, 512 * MIB, 256 * MIB, 0, on_done, &set, NULL), 0);
        cmd = peer_read_command(p);
        assert_string_equal(json_object_get_string(json_object_object_get(cmd, "execute")), "balloon");
        assert_int_equal(json_object_get_int64(json_object_object_get(json_object_object_get(cmd, "arguments"), "value")),
                         512 * MIB);
        reply_line(p, cmd, "{\"return\": {}, \"id\": %ID%}");
        json_object_put(cmd);
        assert_int_equal(set.calls, 1);
        assert_false(set.failed);

        assert_int_equal(balloon_query(p->q, 0, on_actual, &query, NULL), 0);
        cmd = peer_read_command(p);
        assert_string_equal(json_object_get_string(json_object_object_get(cmd, "execute")), "query-balloon");
        reply_line(p, cmd, "{\"return\": {\"actual\": 536870912}, \"id\": %ID%}");
        json_object_put(cmd);
        assert_int_equal(query.calls, 1);
        assert_int_equal(query.actual, 512 * MIB);
        peer_done(p);
}

static void test_query_malformed_reply(void **state) {
        struct peer *p = ready_peer();
        struct outcome o = { 0 };
        json_object *cmd;

        assert_int_equal(balloon_query(p->q, 0, on_actual, &o, NULL), 0);
        cmd = peer_read_command(p);
        reply_line(p, cmd, "{\"return\": {\"actual\": -4096}, \"id\": %ID%}");
        json_object_put(cmd);
        assert_int_equal(o.calls, 1);
        assert_int_equal(o.err.error.code, -EBADMSG);
        assert_false(qmp_error_is_qemu(&o.err));
        assert_contains(o.err.error.msg, "query-balloon on test peer");
        assert_int_equal(o.actual, 0);
        peer_done(p);
}

/* DeviceNotActive, as QEMU 7.2 without a balloon device answers (recorded). */
static void test_device_not_active(void **state) {
        struct transcript t;
        const char *reply = NULL;
        struct peer *p = ready_peer();
        struct outcome q1 = { 0 }, q2 = { 0 };
        json_object *cmd;
        char tmpl[512];

        transcript_load("no-balloon.qmp", &t);
        for (size_t i = 0; i < t.n && !reply; i++)
                if (strstr(t.lines[i].text, "DeviceNotActive"))
                        reply = t.lines[i].text;
        assert_non_null(reply);
        /* the recorded line with its id turned into a %s */
        snprintf(tmpl, sizeof(tmpl), "{\"id\": %%ID%%, %s", strchr(reply, ',') + 2);
        transcript_free(&t);

        assert_int_equal(balloon_query(p->q, 0, on_actual, &q1, NULL), 0);
        assert_int_equal(balloon_set_target(p->q, 512 * MIB, 0, 0, on_done, &q2, NULL), 0);
        cmd = peer_read_command(p);
        reply_line(p, cmd, tmpl);
        json_object_put(cmd);
        cmd = peer_read_command(p);
        reply_line(p, cmd, tmpl);
        json_object_put(cmd);
        for (int i = 0; i < 2; i++) {
                const struct qmp_error *e = i ? &q2.err : &q1.err;
                assert_int_equal(e->error.code, -ENODEV);
                assert_true(qmp_error_has_class(e, "DeviceNotActive"));
                assert_string_equal(e->desc, "No balloon device has been activated");
        }
        assert_contains(q1.err.error.msg, "query-balloon on test peer");
        peer_done(p);
}

static void test_stats_calls(void **state) {
        struct peer *p = ready_peer();
        struct outcome en = { 0 }, rd = { 0 };
        json_object *cmd, *args;
        uint64_t v;

        assert_int_equal(balloon_enable_stats(p->q, NULL, 2, 0, on_done, &en, NULL), 0);
        cmd = peer_read_command(p);
        args = json_object_object_get(cmd, "arguments");
        assert_string_equal(json_object_get_string(json_object_object_get(cmd, "execute")), "qom-set");
        assert_string_equal(json_object_get_string(json_object_object_get(args, "path")), "/machine/peripheral/balloon0");
        assert_string_equal(json_object_get_string(json_object_object_get(args, "property")),
                            "guest-stats-polling-interval");
        assert_int_equal(json_object_get_int(json_object_object_get(args, "value")), 2);
        reply_line(p, cmd, "{\"return\": {}, \"id\": %ID%}");
        json_object_put(cmd);
        assert_int_equal(en.calls, 1);
        assert_false(en.failed);

        assert_int_equal(balloon_read_stats(p->q, "bln", 0, on_stats, &rd, NULL), 0);
        cmd = peer_read_command(p);
        args = json_object_object_get(cmd, "arguments");
        assert_string_equal(json_object_get_string(json_object_object_get(args, "path")), "/machine/peripheral/bln");
        assert_string_equal(json_object_get_string(json_object_object_get(args, "property")), "guest-stats");
        reply_line(p, cmd, "{\"return\": {\"stats\": {\"stat-free-memory\": 400000000, \"stat-swap-in\": "
                           "18446744073709551615}, \"last-update\": 1795946300}, \"id\": %ID%}");
        json_object_put(cmd);
        assert_int_equal(rd.calls, 1);
        assert_true(rd.have_stats);
        assert_int_equal(balloon_stats_get(&rd.stats, BALLOON_STAT_FREE_MEMORY, &v), 0);
        assert_int_equal(v, 400000000);
        assert_int_equal(balloon_stats_get(&rd.stats, BALLOON_STAT_SWAP_IN, &v), -ENODATA);
        assert_int_equal(rd.stats.last_update, 1795946300);
        peer_done(p);
}

static void test_stats_device_not_found(void **state) {
        struct peer *p = ready_peer();
        struct outcome o = { 0 };
        json_object *cmd;

        assert_int_equal(balloon_read_stats(p->q, NULL, 0, on_stats, &o, NULL), 0);
        cmd = peer_read_command(p);
        reply_line(p, cmd, "{\"id\": %ID%, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": "
                           "\"Device '/machine/peripheral/balloon0' not found\"}}");
        json_object_put(cmd);
        assert_int_equal(o.calls, 1);
        assert_false(o.have_stats);
        assert_int_equal(o.err.error.code, -ENOENT);
        assert_true(qmp_error_has_class(&o.err, "DeviceNotFound"));
        peer_done(p);
}

/* Freeing the client with balloon calls in flight: each callback once, nothing leaked. */
static void test_free_with_calls_in_flight(void **state) {
        struct peer *p = ready_peer();
        struct outcome a = { 0 }, b = { 0 }, c = { 0 };

        assert_int_equal(balloon_query(p->q, 0, on_actual, &a, NULL), 0);
        assert_int_equal(balloon_read_stats(p->q, NULL, 0, on_stats, &b, NULL), 0);
        assert_int_equal(balloon_set_target(p->q, GIB, 0, 0, on_done, &c, NULL), 0);
        p->q = qmp_free(p->q);
        assert_int_equal(a.calls + b.calls + c.calls, 3);
        assert_int_equal(a.err.error.code, -ECANCELED);
        assert_int_equal(b.err.error.code, -ECANCELED);
        assert_int_equal(c.err.error.code, -ECANCELED);
        peer_done(p);
}

static void test_sync_calls(void **state) {
        static const char *const replies[] = {
                "{\"return\": {}, \"id\": %ID%}",
                "{\"return\": {\"actual\": 805306368}, \"id\": %ID%}",
                "{\"return\": {}, \"id\": %ID%}",
                "{\"return\": {\"stats\": {\"stat-total-memory\": 1000}, \"last-update\": 9}, \"id\": %ID%}",
                "{\"id\": %ID%, \"error\": {\"class\": \"DeviceNotActive\", \"desc\": \"No balloon device has been activated\"}}",
                "{\"return\": {\"stats\": 5, \"last-update\": 9}, \"id\": %ID%}",
        };
        struct peer *p = ready_peer();
        struct qmp_error err = { 0 };
        struct balloon_stats s = { 0 };
        uint64_t actual = 0, v;

        peer_autoreply(p, replies, ELEMENTSOF(replies));
        assert_int_equal(balloon_set_target_sync(p->q, 768 * MIB, 512 * MIB, 0, &err), 0);
        assert_int_equal(balloon_query_sync(p->q, 0, &actual, &err), 0);
        assert_int_equal(actual, 768 * MIB);
        assert_int_equal(balloon_enable_stats_sync(p->q, NULL, 1, 0, &err), 0);
        assert_int_equal(balloon_read_stats_sync(p->q, NULL, 0, &s, &err), 0);
        assert_int_equal(balloon_stats_get(&s, BALLOON_STAT_TOTAL_MEMORY, &v), 0);
        assert_int_equal(v, 1000);
        assert_int_equal(balloon_query_sync(p->q, 0, &actual, &err), -ENODEV);
        assert_true(qmp_error_has_class(&err, "DeviceNotActive"));
        assert_int_equal(balloon_read_stats_sync(p->q, NULL, 0, &s, &err), -EBADMSG);
        assert_contains(err.error.msg, "guest-stats");
        assert_int_equal(s.last_update, 9); /* untouched */
        /* The peer has nothing more to say: the sync call times out instead of hanging. */
        assert_int_equal(balloon_query_sync(p->q, 100 * 1000, &actual, &err), -ETIMEDOUT);
        assert_int_equal(actual, 768 * MIB);
        peer_done(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stats_recorded_unknown),
                cmocka_unit_test(test_stats_recorded_real),
                cmocka_unit_test(test_stats_table),
                cmocka_unit_test(test_stat_names),
                cmocka_unit_test(test_check_target),
                cmocka_unit_test(test_event_actual),
                cmocka_unit_test(test_target_refused_before_sending),
                cmocka_unit_test(test_set_target_and_query),
                cmocka_unit_test(test_query_malformed_reply),
                cmocka_unit_test(test_device_not_active),
                cmocka_unit_test(test_stats_calls),
                cmocka_unit_test(test_stats_device_not_found),
                cmocka_unit_test(test_free_with_calls_in_flight),
                cmocka_unit_test(test_sync_calls),
        };
        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests_name("balloon", tests, NULL, NULL);
}
