/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the QMP client against a scripted peer on a socketpair. The peer replays
 * transcripts recorded from QEMU 7.2 (tests/fixtures/qmp/) byte by byte, in odd chunks, in
 * one batch and pipelined, and feeds the client what a real socket can: events between
 * replies, errors, silence, EOF mid-message, oversized and malformed messages.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/param.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "jsonutil.h"
#include "qmp-peer.h"
#include "qmp.h"
#include "util.h"

#define MAX_IDS 64

struct call_result {
        unsigned calls;            /* callback invocations: must end at exactly 1 */
        bool done;
        bool failed;
        json_object *ret;          /* own reference */
        struct qmp_error err;
};

static void on_result(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call_result *r = userdata;

        r->calls++;
        r->done = true;
        if (err) {
                r->failed = true;
                r->err = *err;
        } else
                r->ret = json_object_get(ret);
}

static void result_clear(struct call_result *r) {
        json_object_put(r->ret);
        *r = (struct call_result) { 0 };
}

static void assert_contains(const char *haystack, const char *needle) {
        if (!strstr(haystack, needle))
                fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* ---- transcript replay ----------------------------------------------------------------- */

enum replay_mode { REPLAY_ORDERED, REPLAY_PIPELINED };

struct replay_case {
        const char *transcript;
        enum replay_mode mode;
        size_t chunk;
};

struct replay {
        struct peer peer;
        struct transcript t;
        struct call_result results[MAX_IDS]; /* by transcript id */
        uint64_t client_id[MAX_IDS];         /* transcript id -> the id the client used */
};

static int top_level_id(const char *text) {
        json_object *o = json_tokener_parse(text), *v;
        int id = -1;

        if (o && json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_int))
                id = json_object_get_int(v);
        json_object_put(o);
        assert_true(id < MAX_IDS);
        return id;
}

/* QEMU's message with its transcript id replaced by the id our client used. */
static char *rewrite_id(const struct replay *r, const char *text) {
        int id = top_level_id(text);
        char from[32], to[32], *s, *at;

        if (id < 0)
                return strdup(text);
        snprintf(from, sizeof(from), "\"id\": %d", id);
        snprintf(to, sizeof(to), "\"id\": %" PRIu64, r->client_id[id]);
        at = strstr(text, from);
        assert_non_null(at);
        assert_true(asprintf(&s, "%.*s%s%s", (int) (at - text), text, to, at + strlen(from)) > 0);
        return s;
}

/* Makes the client send the transcript's command (qmp_capabilities it sends by itself). */
static void issue(struct replay *r, const char *text) {
        json_object *want = json_tokener_parse(text), *args = NULL;
        const char *execute;
        struct qmp_error err;
        int id;

        if (!want) /* raw bytes the recorder sent on purpose; our client never sends those */
                return;
        id = top_level_id(text);
        execute = json_object_get_string(json_object_object_get(want, "execute"));
        json_object_object_get_ex(want, "arguments", &args);
        if (strcmp(execute, "qmp_capabilities") != 0)
                assert_int_equal(qmp_call(r->peer.q, execute, args ? json_object_get(args) : NULL, 0,
                                          on_result, &r->results[id], &err), 0);
        json_object_put(want);
}

/* Reads what the client sent and checks it is the transcript's command. */
static void expect(struct replay *r, const char *text) {
        json_object *want = json_tokener_parse(text), *got;
        json_object *want_args = NULL, *got_args = NULL;

        if (!want)
                return;
        got = peer_read_command(&r->peer);
        assert_non_null(got);
        assert_string_equal(json_object_get_string(json_object_object_get(got, "execute")),
                            json_object_get_string(json_object_object_get(want, "execute")));
        json_object_object_get_ex(want, "arguments", &want_args);
        json_object_object_get_ex(got, "arguments", &got_args);
        assert_true(json_object_equal(want_args, got_args));
        r->client_id[top_level_id(text)] = json_object_get_uint64(json_object_object_get(got, "id"));
        json_object_put(got);
        json_object_put(want);
}

static void batch_add(const struct replay *r, char **batch, size_t *len, const char *text) {
        _cleanup_free_ char *s = rewrite_id(r, text);
        size_t n = strlen(s);

        *batch = realloc(*batch, *len + n + 3);
        assert_non_null(*batch);
        memcpy(*batch + *len, s, n);
        memcpy(*batch + *len + n, "\r\n", 3);
        *len += n + 2;
}

static void batch_flush(struct replay *r, char **batch, size_t *len) {
        if (*len)
                peer_write(&r->peer, *batch, *len);
        free(*batch);
        *batch = NULL;
        *len = 0;
}

static void peer_close(struct peer *p) {
        close(p->fd);
        p->fd = -1;
        peer_pump(p);
}

/* Each command, then QEMU's messages up to the next command, in p->chunk pieces. */
static void replay_ordered(struct replay *r, size_t from) {
        _cleanup_free_ char *batch = NULL;
        size_t len = 0;

        for (size_t i = from; i < r->t.n; i++) {
                const struct transcript_line *l = &r->t.lines[i];
                if (l->dir == '<') {
                        batch_add(r, &batch, &len, l->text);
                        continue;
                }
                batch_flush(r, &batch, &len);
                if (l->dir == 'E') {
                        peer_close(&r->peer);
                        continue;
                }
                issue(r, l->text);
                expect(r, l->text);
        }
        batch_flush(r, &batch, &len);
}

/* The handshake in order, then every command at once, then every answer in one write. */
static void replay_pipelined(struct replay *r) {
        _cleanup_free_ char *batch = NULL;
        size_t len = 0, start = 0;
        bool eof = false;

        while (start < r->t.n && !(r->t.lines[start].dir == '<' && top_level_id(r->t.lines[start].text) == 1))
                start++;
        assert_true(start < r->t.n);
        r->peer.chunk = PEER_BATCH;
        for (size_t i = 0; i <= start; i++)
                if (r->t.lines[i].dir == '>') {
                        batch_flush(r, &batch, &len);
                        expect(r, r->t.lines[i].text);
                } else
                        batch_add(r, &batch, &len, r->t.lines[i].text);
        batch_flush(r, &batch, &len);
        for (size_t i = start + 1; i < r->t.n; i++)
                if (r->t.lines[i].dir == '>')
                        issue(r, r->t.lines[i].text);
        for (size_t i = start + 1; i < r->t.n; i++)
                if (r->t.lines[i].dir == '>')
                        expect(r, r->t.lines[i].text);
        for (size_t i = start + 1; i < r->t.n; i++)
                if (r->t.lines[i].dir == '<')
                        batch_add(r, &batch, &len, r->t.lines[i].text);
                else
                        eof = eof || r->t.lines[i].dir == 'E';
        batch_flush(r, &batch, &len);
        if (eof)
                peer_close(&r->peer);
}

static void verify_reply(struct replay *r, json_object *msg, int id) {
        struct call_result *res = &r->results[id];
        json_object *v;

        assert_int_equal(res->calls, 1);
        if (json_object_object_get_ex(msg, "return", &v)) {
                assert_false(res->failed);
                assert_true(json_object_equal(res->ret, v));
                return;
        }
        assert_true(json_object_object_get_ex(msg, "error", &v));
        assert_true(res->failed);
        assert_true(qmp_error_is_qemu(&res->err));
        assert_string_equal(res->err.class, json_object_get_string(json_object_object_get(v, "class")));
        assert_string_equal(res->err.desc, json_object_get_string(json_object_object_get(v, "desc")));
        assert_contains(res->err.error.msg, "test peer");
        assert_contains(res->err.error.msg, res->err.desc);
        assert_true(res->err.error.code < 0);
}

static void verify_event(struct replay *r, json_object *msg, size_t *n) {
        const char *name = json_object_get_string(json_object_object_get(msg, "event"));
        json_object *ts = json_object_object_get(msg, "timestamp"), *data = NULL;
        const struct peer_event *ev;

        assert_true(*n < r->peer.n_events);
        ev = &r->peer.events[(*n)++];
        assert_string_equal(ev->name, name);
        assert_int_equal(ev->id, qmp_event_from_name(name));
        assert_int_equal(ev->via_handler, ev->id == QMP_EVENT_STOP || ev->id == QMP_EVENT_SHUTDOWN);
        assert_int_equal(ev->timestamp_usec,
                         json_object_get_int64(json_object_object_get(ts, "seconds")) * 1000000 +
                         json_object_get_int64(json_object_object_get(ts, "microseconds")));
        json_object_object_get_ex(msg, "data", &data);
        assert_true(json_object_equal(ev->data, data));
}

/* The client delivered exactly what the transcript says QEMU sent, in order. */
static void verify(struct replay *r) {
        size_t n_events = 0;
        bool eof = false;

        for (size_t i = 0; i < r->t.n; i++) {
                const struct transcript_line *l = &r->t.lines[i];
                json_object *msg;
                int id;

                eof = eof || l->dir == 'E';
                if (l->dir != '<')
                        continue;
                msg = json_tokener_parse(l->text);
                id = top_level_id(l->text);
                if (json_object_object_get_ex(msg, "event", NULL))
                        verify_event(r, msg, &n_events);
                else if (id > 1) /* 1 is qmp_capabilities, the client's own */
                        verify_reply(r, msg, id);
                json_object_put(msg);
        }
        assert_int_equal(n_events, r->peer.n_events);
        assert_int_equal(r->peer.n_ready, 1);
        if (eof) {
                assert_int_equal(r->peer.n_disconnected, 1);
                assert_int_equal(r->peer.reason.error.code, -ECONNRESET);
                assert_false(qmp_error_is_qemu(&r->peer.reason));
                assert_contains(r->peer.reason.error.msg, "test peer");
                assert_null(strstr(r->peer.reason.error.msg, "middle"));
                assert_false(qmp_is_ready(r->peer.q));
        }
}

static int find_command(const struct transcript *t, const char *execute, int nth) {
        for (size_t i = 0; i < t->n; i++) {
                json_object *o;
                bool match;
                if (t->lines[i].dir != '>' || !(o = json_tokener_parse(t->lines[i].text)))
                        continue;
                match = strcmp(json_object_get_string(json_object_object_get(o, "execute")), execute) == 0;
                json_object_put(o);
                if (match && nth-- == 0)
                        return top_level_id(t->lines[i].text);
        }
        fail_msg("no %s in the transcript", execute);
        return -1;
}

/* Facts that must hold whatever the recording: the meaning, not just the bytes. */
static void check_meaning(struct replay *r) {
        struct qmp_version v;

        assert_int_equal(qmp_qemu_version(r->peer.q, &v), 0);
        assert_int_equal(v.major, 7);
        assert_int_equal(v.minor, 2);
        assert_contains(v.package, "Debian");
}

static void check_session(struct replay *r) {
        struct call_result *res;
        int id;

        id = find_command(&r->t, "query-balloon", 0);
        res = &r->results[id];
        assert_int_equal(json_object_get_uint64(json_object_object_get(res->ret, "actual")), 1024 * MIB);
        res = &r->results[find_command(&r->t, "balloon", 1)]; /* value 0 */
        assert_string_equal(res->err.class, "GenericError");
        assert_int_equal(res->err.error.code, -EREMOTEIO);
        assert_contains(res->err.error.msg, "balloon on test peer");
        res = &r->results[find_command(&r->t, "qom-get", 2)]; /* a device that does not exist */
        assert_true(qmp_error_has_class(&res->err, "DeviceNotFound"));
        assert_int_equal(res->err.error.code, -ENOENT);
        res = &r->results[find_command(&r->t, "no-such-command", 0)];
        assert_int_equal(res->err.error.code, -EOPNOTSUPP);
        assert_int_equal(r->peer.events[0].id, QMP_EVENT_STOP);
        assert_true(r->peer.events[0].via_handler);
}

static void check_no_balloon(struct replay *r) {
        struct call_result *res = &r->results[find_command(&r->t, "query-balloon", 0)];

        assert_true(qmp_error_has_class(&res->err, "DeviceNotActive"));
        assert_int_equal(res->err.error.code, -ENODEV);
        assert_string_equal(res->err.desc, "No balloon device has been activated");
        res = &r->results[find_command(&r->t, "balloon", 0)];
        assert_int_equal(res->err.error.code, -ENODEV);
}

/* A real guest: BALLOON_CHANGE events (rate-limited, the first one intermediate) end at the
 * target, and query-balloon agrees. */
static void check_guest(struct replay *r) {
        struct peer_event *last = NULL;
        struct call_result *res;

        for (size_t i = 0; i < r->peer.n_events; i++) {
                assert_int_equal(r->peer.events[i].id, QMP_EVENT_BALLOON_CHANGE);
                assert_false(r->peer.events[i].via_handler);
                if (!last && json_object_get_uint64(json_object_object_get(r->peer.events[i].data, "actual")) == 512 * MIB)
                        last = &r->peer.events[i];
        }
        assert_non_null(last);
        res = &r->results[find_command(&r->t, "query-balloon", 1)];
        assert_int_equal(json_object_get_uint64(json_object_object_get(res->ret, "actual")), 512 * MIB);
}

static void test_replay(void **state) {
        const struct replay_case *c = *state;
        struct replay *r = calloc(1, sizeof(*r));

        assert_non_null(r);
        transcript_load(c->transcript, &r->t);
        peer_setup(&r->peer, 0);
        r->peer.chunk = c->chunk;
        if (c->mode == REPLAY_ORDERED)
                replay_ordered(r, 0);
        else
                replay_pipelined(r);
        verify(r);
        check_meaning(r);
        if (strcmp(c->transcript, "session.qmp") == 0)
                check_session(r);
        else if (strcmp(c->transcript, "no-balloon.qmp") == 0)
                check_no_balloon(r);
        else if (strcmp(c->transcript, "guest.qmp") == 0)
                check_guest(r);
        for (size_t i = 0; i < MAX_IDS; i++)
                result_clear(&r->results[i]);
        peer_teardown(&r->peer);
        transcript_free(&r->t);
        free(r);
}

static const struct replay_case replay_cases[] = {
        { "session.qmp", REPLAY_ORDERED, PEER_BATCH },
        { "session.qmp", REPLAY_ORDERED, 1 },
        { "session.qmp", REPLAY_ORDERED, 7 },
        { "session.qmp", REPLAY_PIPELINED, PEER_BATCH },
        { "guest.qmp", REPLAY_ORDERED, PEER_BATCH },
        { "guest.qmp", REPLAY_ORDERED, 1 },
        { "guest.qmp", REPLAY_PIPELINED, PEER_BATCH },
        { "no-balloon.qmp", REPLAY_ORDERED, PEER_BATCH },
        { "no-balloon.qmp", REPLAY_ORDERED, 1 },
        { "no-balloon.qmp", REPLAY_PIPELINED, PEER_BATCH },
};

/* ---- one socket behaviour at a time ---------------------------------------------------- */

static void call(struct peer *p, const char *execute, uint64_t timeout_usec, struct call_result *r) {
        struct qmp_error err;
        assert_int_equal(qmp_call(p->q, execute, NULL, timeout_usec, on_result, r, &err), 0);
}

/* Two commands in flight; QEMU's answers come in the other order, between events. */
static void test_replies_between_events_any_order(void **state) {
        struct peer *p = ready_peer();
        struct call_result a = { 0 }, b = { 0 };
        json_object *ca, *cb;
        char buf[1024];

        call(p, "query-balloon", 0, &a);
        call(p, "query-balloon", 0, &b);
        ca = peer_read_command(p);
        cb = peer_read_command(p);
        assert_non_null(ca);
        assert_non_null(cb);
        snprintf(buf, sizeof(buf),
                 "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": 805306368}}\r\n"
                 "{\"return\": {\"actual\": 536870912}, \"id\": %s}\r\n"
                 "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"NEW_IN_QEMU_99\"}\r\n"
                 "{\"return\": {\"actual\": 1073741824}, \"id\": %s}\r\n",
                 json_object_get_string(json_object_object_get(cb, "id")),
                 json_object_get_string(json_object_object_get(ca, "id")));
        peer_write(p, buf, strlen(buf));
        assert_int_equal(a.calls, 1);
        assert_int_equal(b.calls, 1);
        assert_int_equal(json_object_get_uint64(json_object_object_get(a.ret, "actual")), 1024 * MIB);
        assert_int_equal(json_object_get_uint64(json_object_object_get(b.ret, "actual")), 512 * MIB);
        assert_int_equal(p->n_events, 2);
        assert_int_equal(p->events[0].id, QMP_EVENT_BALLOON_CHANGE);
        assert_int_equal(p->events[0].timestamp_usec, 1000002);
        assert_int_equal(p->events[1].id, QMP_EVENT_UNKNOWN);
        assert_string_equal(p->events[1].name, "NEW_IN_QEMU_99");
        assert_false(p->events[1].via_handler);
        assert_int_equal(qmp_pending(p->q), 0);
        json_object_put(ca);
        json_object_put(cb);
        result_clear(&a);
        result_clear(&b);
        peer_done(p);
}

/* ---- the fast path for plain replies (qmp_call_fast) ---- */

struct fast_call {
        struct call_result r;      /* first: on_result() takes this struct */
        unsigned fast_calls;
        bool decline, free_client;
        char text[256];
};

/* As qmp_fast_fn asks: reads the text wholly in the subset, or declines. */
static int on_fast(struct qmp *q, const char *ret, size_t len, void *userdata) {
        struct json_scan js = { ret, ret + len };
        struct fast_call *f = userdata;

        f->fast_calls++;
        snprintf(f->text, sizeof(f->text), "%.*s", (int) len, ret);
        if (f->decline || !json_scan_value(&js) || !json_scan_end(&js))
                return -EAGAIN;
        if (f->free_client)
                qmp_free(q);
        return 0;
}

static uint64_t call_fast(struct peer *p, const char *execute, struct fast_call *f) {
        json_object *cmd;
        uint64_t id;

        assert_int_equal(qmp_call_fast(p->q, execute, NULL, 0, on_result, on_fast, f, NULL), 0);
        cmd = peer_read_command(p);
        assert_non_null(cmd);
        id = json_object_get_uint64(json_object_object_get(cmd, "id"));
        json_object_put(cmd);
        return id;
}

/* A plain reply in the subset goes to the fast decoder alone, with the text of its value; one
 * the decoder declines, or that is not plain, goes through json-c to the reply callback. */
static void test_fast_replies(void **state) {
        struct peer *p = ready_peer();
        struct fast_call a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 }, e = { 0 };
        char buf[1024];
        uint64_t ia, ib, ic, id, ie;

        ia = call_fast(p, "query-balloon", &a);
        b.decline = true;
        ib = call_fast(p, "query-balloon", &b);
        ic = call_fast(p, "query-balloon", &c);
        id = call_fast(p, "query-balloon", &d);
        ie = call_fast(p, "query-balloon", &e);
        snprintf(buf, sizeof(buf),
                 "{\"return\": {\"actual\": 805306368}, \"id\": %" PRIu64 "}\r\n"
                 "{\"return\": {\"actual\": 5},\"id\":%" PRIu64 " }\n"
                 "{\"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": 7}, "
                 "\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n"
                 "{\"return\": {\"actual\": 6}, \"id\": %" PRIu64 ", \"extra\": true}\r\n"
                 "{\"return\": {\"actual\": \"\\u0036\"}, \"id\": %" PRIu64 "}\r\n"
                 "{\"id\": %" PRIu64 ", \"return\": {\"actual\": 8}}\r\n", ia, ib, ic, id, ie);
        peer_write(p, buf, strlen(buf));
        /* a: fast, exactly its value's text; the reply callback is not called. */
        assert_int_equal(a.fast_calls, 1);
        assert_string_equal(a.text, "{\"actual\": 805306368}");
        assert_int_equal(a.r.calls, 0);
        /* b: declined, then parsed by json-c and given to the reply callback. */
        assert_int_equal(b.fast_calls, 1);
        assert_int_equal(b.r.calls, 1);
        assert_int_equal(json_object_get_uint64(json_object_object_get(b.r.ret, "actual")), 5);
        /* c (another member) and e (id first) are not plain: json-c alone; d's value has an
         * escape: its decoder declines it. */
        assert_int_equal(e.fast_calls, 0);
        assert_int_equal(e.r.calls, 1);
        assert_int_equal(json_object_get_uint64(json_object_object_get(e.r.ret, "actual")), 8);
        assert_int_equal(c.fast_calls, 0);
        assert_int_equal(c.r.calls, 1);
        assert_int_equal(d.fast_calls, 1);
        assert_int_equal(d.r.calls, 1);
        assert_string_equal(json_object_get_string(json_object_object_get(d.r.ret, "actual")), "6");
        assert_int_equal(p->n_events, 1);
        assert_int_equal(qmp_pending(p->q), 0);
        assert_int_equal(p->n_disconnected, 0);
        result_clear(&b.r);
        result_clear(&c.r);
        result_clear(&d.r);
        result_clear(&e.r);
        peer_done(p);
}

/* An event in QEMU's form (the fast path) and the same event with its members in another order
 * (json-c's way) give the handlers the same thing: name, id, handler, stamp and data, whatever
 * the data (nested, strings, numbers past INT64_MAX) and the stamp (out of range: 0). What the
 * fast path does not take (a key twice, an escape, data not an object) goes through json-c. */
static void test_fast_events(void **state) {
        static const struct { const char *stamp, *name, *data; } cases[] = {
                { "\"seconds\": 1795947034, \"microseconds\": 403872", "BALLOON_CHANGE", "{\"actual\": 1072693248}" },
                { "\"seconds\": 1, \"microseconds\": 2", "STOP", NULL },
                { "\"seconds\": 0, \"microseconds\": 2", "NEW_IN_QEMU_99", "{}" },
                { "\"seconds\": 3, \"microseconds\": 1000000", "MEMORY_DEVICE_SIZE_CHANGE",
                  "{\"id\": \"vm0\", \"size\": 18446744073709551615, \"qom-path\": \"/machine/peripheral/vm0\"}" },
                { "\"seconds\": 9223372036854775808, \"microseconds\": 0", "RESET",
                  "{\"a\": {\"b\": {\"c\": 9223372036854775807}}, \"d\": \"\"}" },
                { "\"seconds\": 4, \"microseconds\": 5", "BALLOON_CHANGE", "{\"actual\": 1, \"actual\": 2}" },
                { "\"seconds\": 4, \"microseconds\": 5", "BALLOON_CHANGE", "{\"actual\": \"\\u0031\"}" },
                { "\"seconds\": 4, \"microseconds\": 5", "BALLOON_CHANGE", "[1]" },
        };
        struct peer *p = ready_peer();
        char buf[512];
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *d = cases[i].data;
                n = (size_t) snprintf(buf, sizeof(buf), "{\"timestamp\": {%s}, \"event\": \"%s\"%s%s}\r\n"
                                      "{\"event\": \"%s\", \"timestamp\": {%s}%s%s}\r\n",
                                      cases[i].stamp, cases[i].name, d ? ", \"data\": " : "", d ?: "",
                                      cases[i].name, cases[i].stamp, d ? ", \"data\": " : "", d ?: "");
                assert_true(n < sizeof(buf));
                peer_write(p, buf, n);
        }
        assert_int_equal(p->n_events, 2 * ELEMENTSOF(cases));
        assert_int_equal(p->n_disconnected, 0);
        for (size_t i = 0; i < p->n_events; i += 2) {
                const struct peer_event *a = &p->events[i], *b = &p->events[i + 1];
                assert_string_equal(a->name, b->name);
                assert_int_equal(a->id, b->id);
                assert_int_equal(a->via_handler, b->via_handler);
                assert_int_equal(a->timestamp_usec, b->timestamp_usec);
                assert_int_equal(!a->data, !b->data);
                assert_true(!a->data || json_object_equal(a->data, b->data));
        }
        assert_int_equal(p->events[0].timestamp_usec, 1795947034403872ULL);
        assert_int_equal(p->events[2].id, QMP_EVENT_STOP);
        assert_true(p->events[2].via_handler);
        assert_int_equal(p->events[4].timestamp_usec, 0);
        assert_int_equal(p->events[6].timestamp_usec, 0);
        assert_int_equal(json_object_get_uint64(json_object_object_get(p->events[6].data, "size")), UINT64_MAX);
        assert_int_equal(p->events[8].timestamp_usec, 0);
        assert_int_equal(json_object_get_int64(json_object_object_get(p->events[10].data, "actual")), 2);
        assert_string_equal(json_object_get_string(json_object_object_get(p->events[12].data, "actual")), "1");
        assert_true(json_object_is_type(p->events[14].data, json_type_array));
        peer_done(p);
}

/* A reply split over two reads goes through json-c; one the decoder frees the client from
 * fails the other commands once, with -ECANCELED, and is itself answered once. */
static void test_fast_split_and_free(void **state) {
        struct peer *p = ready_peer();
        struct fast_call a = { 0 }, b = { 0 }, c = { 0 };
        char buf[256];
        uint64_t ia, ib;
        size_t n;

        ia = call_fast(p, "query-balloon", &a);
        n = (size_t) snprintf(buf, sizeof(buf), "{\"return\": {\"actual\": 1}, \"id\": %" PRIu64 "}\r\n", ia);
        peer_write(p, buf, 10);
        peer_write(p, buf + 10, n - 10);
        assert_int_equal(a.fast_calls, 0);
        assert_int_equal(a.r.calls, 1);
        assert_false(a.r.failed);
        b.free_client = true;
        ib = call_fast(p, "query-balloon", &b);
        (void) call_fast(p, "query-status", &c);
        n = (size_t) snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %" PRIu64 "}\r\n", ib);
        peer_write(p, buf, n);
        p->q = NULL;    /* freed by on_fast */
        assert_int_equal(b.fast_calls, 1);
        assert_int_equal(b.r.calls, 0);
        assert_int_equal(c.fast_calls, 0);
        assert_int_equal(c.r.calls, 1);
        assert_int_equal(c.r.err.error.code, -ECANCELED);
        result_clear(&a.r);
        peer_done(p);
}

/* Corked commands are queued, not written, until the last qmp_uncork(); then all go out. */
static void test_cork(void **state) {
        struct peer *p = ready_peer();
        struct call_result a = { 0 }, b = { 0 };
        json_object *ca, *cb;

        qmp_cork(p->q);
        qmp_cork(p->q);
        call(p, "query-balloon", 0, &a);
        call(p, "query-status", 0, &b);
        assert_null(peer_read_command(p));      /* the loop ran: still nothing written */
        qmp_uncork(p->q);
        assert_null(peer_read_command(p));
        qmp_uncork(p->q);
        ca = peer_read_command(p);
        cb = peer_read_command(p);
        assert_non_null(ca);
        assert_non_null(cb);
        assert_string_equal(json_object_get_string(json_object_object_get(ca, "execute")), "query-balloon");
        assert_string_equal(json_object_get_string(json_object_object_get(cb, "execute")), "query-status");
        qmp_uncork(p->q);                       /* unbalanced: ignored */
        json_object_put(ca);
        json_object_put(cb);
        peer_done(p);
}

/* A peer that stops answering: the command fails after its own timeout, then the connection. */
static void test_command_timeout(void **state) {
        struct peer *p = ready_peer();
        struct call_result fast = { 0 }, slow = { 0 };
        struct qmp_error err;
        uint64_t t0 = now_usec(), dt;

        call(p, "query-balloon", 50 * 1000, &fast);
        call(p, "query-status", 5 * 1000000, &slow);
        assert_true(peer_run_until(p, &fast.done, 3 * 1000000));
        dt = now_usec() - t0;
        assert_true(dt >= 50 * 1000);
        assert_true(dt < 2 * 1000000);
        assert_int_equal(fast.err.error.code, -ETIMEDOUT);
        assert_contains(fast.err.error.msg, "query-balloon");
        assert_contains(fast.err.error.msg, "test peer");
        assert_contains(fast.err.error.msg, "50 ms");
        /* The other command fails with the disconnect, at once and exactly once. */
        assert_int_equal(slow.calls, 1);
        assert_int_equal(slow.err.error.code, -ETIMEDOUT);
        assert_contains(slow.err.error.msg, "query-status");
        assert_int_equal(p->n_disconnected, 1);
        assert_int_equal(p->reason.error.code, -ETIMEDOUT);
        assert_int_equal(qmp_call(p->q, "query-status", json_object_new_object(), 0, on_result,
                                  &slow, &err), -ENOTCONN);
        assert_contains(err.error.msg, "closed");
        peer_pump(p);
        assert_int_equal(fast.calls, 1);
        assert_int_equal(slow.calls, 1);
        peer_done(p);
}

/* The commands of a connection share one timer, armed for the earliest deadline: a shorter
 * timeout sent after a longer one still fires on time, and a timer that fires for a command
 * answered meanwhile waits for the next one instead of failing it early. */
static void test_command_timeout_shared_timer(void **state) {
        struct peer *p = ready_peer();
        struct call_result answered = { 0 }, slow = { 0 }, fast = { 0 };
        uint64_t t0, dt;

        call(p, "query-status", 5 * 1000000, &slow);
        call(p, "query-balloon", 100 * 1000, &answered);
        json_object_put(peer_read_command(p));  /* query-status: never answered */
        peer_answer(p, "query-balloon", "{\"actual\": 1073741824}");
        assert_true(answered.done);
        assert_false(answered.failed);
        t0 = now_usec();
        call(p, "query-kvm", 300 * 1000, &fast);
        assert_true(peer_run_until(p, &fast.done, 4 * 1000000));
        dt = now_usec() - t0;
        assert_true(dt >= 300 * 1000);  /* not at the answered command's deadline */
        assert_true(dt < 3 * 1000000);  /* nor at the slow one's */
        assert_int_equal(fast.err.error.code, -ETIMEDOUT);
        assert_contains(fast.err.error.msg, "query-kvm");
        assert_contains(fast.err.error.msg, "300 ms");
        assert_int_equal(slow.calls, 1);
        assert_int_equal(slow.err.error.code, -ETIMEDOUT);
        assert_contains(slow.err.error.msg, "stopped answering");
        assert_int_equal(answered.calls, 1);
        result_clear(&answered);
        peer_done(p);
}

/* r, a command sent on p, times out (and p's connection with it), not before deadline. */
static void expect_timeout(struct peer *p, const struct call_result *r, const char *command, uint64_t deadline) {
        assert_true(peer_run_until(p, &r->done, 3 * 1000000));
        assert_true(now_usec() >= deadline);
        assert_int_equal(r->err.error.code, -ETIMEDOUT);
        assert_contains(r->err.error.msg, command);
        assert_int_equal(p->n_disconnected, 1);
}

/* Connections on one loop share its hub's timer for their commands' deadlines: each command
 * times out at its own deadline, a connection that closes leaves the others' deadlines as they
 * were, and the deadline of a command answered meanwhile fails nothing. */
static void test_command_timeout_hub(void **state) {
        struct peer *a = ready_peer(), *b = ready_peer_on(a->e), *c = ready_peer_on(a->e);
        struct call_result ra = { 0 }, rb = { 0 }, rc = { 0 };
        uint64_t t0 = now_usec();

        call(a, "query-status", 300 * 1000, &ra);
        call(b, "query-balloon", 100 * 1000, &rb);
        call(c, "query-kvm", 600 * 1000, &rc);
        peer_answer(b, "query-balloon", "{\"actual\": 1073741824}");
        assert_true(rb.done);
        assert_false(rb.failed);
        expect_timeout(a, &ra, "query-status", t0 + 300 * 1000);
        assert_false(rc.done);
        expect_timeout(c, &rc, "query-kvm", t0 + 600 * 1000);
        /* b's command was answered: its deadline passed without a failure. */
        assert_int_equal(rb.calls, 1);
        assert_int_equal(b->n_disconnected, 0);
        assert_true(qmp_is_ready(b->q));
        result_clear(&rb);
        peer_done(c);
        peer_done(b);
        peer_done(a);
}

static void test_greeting_timeout(void **state) {
        struct peer p;
        uint64_t t0 = now_usec();

        peer_setup(&p, 50 * 1000);
        while (!p.n_disconnected && now_usec() - t0 < 5 * 1000000)
                assert_true(sd_event_run(p.e, 100 * 1000) >= 0);
        assert_true(now_usec() - t0 >= 50 * 1000);
        assert_int_equal(p.n_ready, 0);
        assert_int_equal(p.n_disconnected, 1);
        assert_int_equal(p.reason.error.code, -ETIMEDOUT);
        assert_contains(p.reason.error.msg, "greeting");
        assert_contains(p.reason.error.msg, "test peer");
        peer_teardown(&p);
}

static void test_capabilities_refused(void **state) {
        struct peer p;
        struct transcript t;
        json_object *cmd;
        char line[256];

        peer_setup(&p, 0);
        transcript_load("session.qmp", &t);
        peer_send_line(&p, t.lines[0].text);
        transcript_free(&t);
        cmd = peer_read_command(&p);
        assert_non_null(cmd);
        snprintf(line, sizeof(line), "{\"id\": %s, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}",
                 json_object_get_string(json_object_object_get(cmd, "id")));
        json_object_put(cmd);
        peer_send_line(&p, line);
        assert_int_equal(p.n_ready, 0);
        assert_int_equal(p.n_disconnected, 1);
        assert_int_equal(p.reason.error.code, -EREMOTEIO);
        assert_contains(p.reason.error.msg, "capabilities negotiation");
        peer_teardown(&p);
}

static void test_eof_mid_message(void **state) {
        static const char half[] = "{\"return\": {\"actual\": 10737";
        struct peer *p = ready_peer();
        struct call_result r = { 0 };

        call(p, "query-balloon", 0, &r);
        peer_write(p, half, strlen(half));
        assert_int_equal(r.calls, 0);
        peer_close(p);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.err.error.code, -ECONNRESET);
        assert_contains(r.err.error.msg, "query-balloon");
        assert_int_equal(p->n_disconnected, 1);
        assert_contains(p->reason.error.msg, "middle of a message");
        assert_contains(p->reason.error.msg, "test peer");
        peer_done(p);
}

static void test_eof_before_greeting(void **state) {
        struct peer p;

        peer_setup(&p, 0);
        peer_close(&p);
        assert_int_equal(p.n_ready, 0);
        assert_int_equal(p.n_disconnected, 1);
        assert_int_equal(p.reason.error.code, -ECONNRESET);
        peer_teardown(&p);
}

/* An event of exactly `total` bytes counted as the client does: from the end of the previous
 * message, so the previous message's "\r\n" counts. */
static char *event_of_size(size_t total) {
        static const char head[] = "{\"event\": \"BIG\", \"data\": {\"s\": \"", tail[] = "\"}}";
        size_t fill = total - 2 - strlen(head) - strlen(tail);
        char *s = malloc(total + 1);

        assert_non_null(s);
        memcpy(s, head, strlen(head));
        memset(s + strlen(head), 'a', fill);
        memcpy(s + strlen(head) + fill, tail, strlen(tail));
        memcpy(s + strlen(head) + fill + strlen(tail), "\r\n", 3);
        return s;
}

static void test_message_size_limit(void **state) {
        struct peer *p = ready_peer();
        struct call_result r = { 0 };
        _cleanup_free_ char *max = event_of_size(QMP_MESSAGE_MAX), *over = event_of_size(QMP_MESSAGE_MAX + 1);

        call(p, "query-balloon", 0, &r);
        peer_write(p, max, strlen(max));
        assert_int_equal(p->n_events, 1);
        assert_int_equal(p->n_disconnected, 0);
        peer_write(p, over, strlen(over));
        assert_int_equal(p->n_events, 1);
        assert_int_equal(p->n_disconnected, 1);
        assert_int_equal(p->reason.error.code, -EMSGSIZE);
        assert_contains(p->reason.error.msg, "larger than 1048576 bytes");
        assert_contains(p->reason.error.msg, "test peer");
        assert_int_equal(r.err.error.code, -EMSGSIZE);
        peer_done(p);
}

static const struct bad_input {
        const char *name;
        const char *bytes;
        size_t len;                /* 0: strlen */
        int code;
        const char *words;
} bad_inputs[] = {
        { "broken JSON", "{\"return\": }\r\n", 0, -EPROTO, "malformed JSON" },
        { "garbage", "garbage\r\n", 0, -EPROTO, "malformed JSON" },
        { "not an object", "[1, 2]\r\n", 0, -EPROTO, "not an object" },
        { "unknown id", "{\"return\": {}, \"id\": 999}\r\n", 0, -EPROTO, "unknown command id 999" },
        { "negative id", "{\"return\": {}, \"id\": -1}\r\n", 0, -EPROTO, "unknown command id" },
        { "reply without id", "{\"return\": {}}\r\n", 0, -EPROTO, "without an id" },
        { "string id", "{\"return\": {}, \"id\": \"2\"}\r\n", 0, -EPROTO, "without an id" },
        { "error not an object", "{\"error\": \"x\", \"id\": 2}\r\n", 0, -EPROTO, "malformed error" },
        { "error without class", "{\"error\": {\"desc\": \"x\"}, \"id\": 2}\r\n", 0, -EPROTO, "malformed error" },
        { "event not a string", "{\"event\": 5}\r\n", 0, -EPROTO, "malformed event" },
        { "second greeting", "{\"QMP\": {}}\r\n", 0, -EPROTO, "second greeting" },
        { "no known key", "{\"hello\": 1}\r\n", 0, -EPROTO, "neither" },
        { "invalid UTF-8", "{\"event\": \"X\xff\"}\r\n", 0, -EPROTO, "malformed JSON" },
        { "NUL byte", "{\"event\": \"X\0Y\"}\r\n", 17, -EPROTO, "malformed JSON" },
        { "too deep", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]\r\n", 0,
          -EPROTO, "malformed JSON" },
        { "trailing brace", "{\"event\": \"STOP\"}}\r\n", 0, -EPROTO, "malformed JSON" },
        { "bare number", "12345 ", 0, -EPROTO, "not an object" },
};

/* Whatever the garbage: a clear error naming the socket, the pending command failed once, the
 * connection closed, nothing leaked (ASan) and nothing crashed. */
static void test_bad_input(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_inputs); i++) {
                const struct bad_input *b = &bad_inputs[i];
                struct peer *p = ready_peer();
                struct call_result r = { 0 };

                call(p, "query-status", 0, &r); /* its id is 2 */
                peer_write(p, b->bytes, b->len ?: strlen(b->bytes));
                if (p->n_disconnected != 1)
                        fail_msg("%s: not disconnected", b->name);
                if (p->reason.error.code != b->code || !strstr(p->reason.error.msg, b->words) ||
                    !strstr(p->reason.error.msg, "test peer"))
                        fail_msg("%s: got %d \"%s\"", b->name, p->reason.error.code, p->reason.error.msg);
                if (r.calls != 1 || r.err.error.code != b->code)
                        fail_msg("%s: the pending command got %u calls, %d", b->name, r.calls, r.err.error.code);
                assert_false(qmp_error_is_qemu(&r.err));
                peer_done(p);
        }
}

/* QEMU's own answer to bytes it could not parse has no id (recorded in bad-input.qmp). */
static void test_qemu_parse_error_reply(void **state) {
        struct peer *p = ready_peer();
        struct call_result r = { 0 };
        struct transcript t;
        const char *line = NULL;

        transcript_load("bad-input.qmp", &t);
        for (size_t i = 0; i < t.n && !line; i++)
                if (t.lines[i].dir == '<' && strstr(t.lines[i].text, "JSON parse error"))
                        line = t.lines[i].text;
        assert_non_null(line);
        call(p, "query-status", 0, &r);
        peer_send_line(p, line);
        assert_int_equal(p->n_disconnected, 1);
        assert_int_equal(p->reason.error.code, -EPROTO);
        assert_contains(p->reason.error.msg, "rejected a message: JSON parse error");
        assert_int_equal(r.err.error.code, -EPROTO);
        transcript_free(&t);
        peer_done(p);
}

static void test_call_before_ready(void **state) {
        struct peer p;
        struct qmp_error err;
        struct call_result r = { 0 };

        peer_setup(&p, 0);
        /* args are consumed even on failure: ASan's leak check holds us to it */
        assert_int_equal(qmp_call(p.q, "query-balloon", json_object_new_object(), 0, on_result, &r, &err),
                         -ENOTCONN);
        assert_contains(err.error.msg, "not ready");
        assert_int_equal(qmp_call(p.q, "", NULL, 0, on_result, &r, &err), -EINVAL);
        assert_int_equal(r.calls, 0);
        peer_teardown(&p);
}

static void test_free_with_pending(void **state) {
        struct peer *p = ready_peer();
        struct call_result a = { 0 }, b = { 0 };

        call(p, "query-balloon", 0, &a);
        call(p, "query-status", 0, &b);
        assert_int_equal(qmp_pending(p->q), 2);
        p->q = qmp_free(p->q);
        assert_int_equal(a.calls, 1);
        assert_int_equal(b.calls, 1);
        assert_int_equal(a.err.error.code, -ECANCELED);
        assert_int_equal(b.err.error.code, -ECANCELED);
        assert_int_equal(p->n_disconnected, 0);
        peer_done(p);
}

struct free_in_callback {
        struct peer *p;
        struct call_result r;
};

static void free_on_reply(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct free_in_callback *f = userdata;
        on_result(q, ret, err, &f->r);
        f->p->q = qmp_free(q);
}

/* The reply callback frees the client while more messages sit in the same read buffer. */
static void test_free_inside_callback(void **state) {
        struct peer *p = ready_peer();
        struct free_in_callback f = { .p = p };
        struct call_result second = { 0 };
        struct qmp_error err;
        static const char both[] = "{\"return\": {}, \"id\": 2}\r\n"
                                   "{\"event\": \"STOP\"}\r\n{\"return\": {}, \"id\": 3}\r\n";

        assert_int_equal(qmp_call(p->q, "stop", NULL, 0, free_on_reply, &f, &err), 0);
        call(p, "query-status", 0, &second);
        peer_write(p, both, strlen(both));
        assert_null(p->q);
        assert_int_equal(f.r.calls, 1);
        assert_false(f.r.failed);
        assert_int_equal(second.calls, 1);
        assert_int_equal(second.err.error.code, -ECANCELED);
        assert_int_equal(p->n_events, 0);
        result_clear(&f.r);
        peer_done(p);
}

struct nested {
        int r;
        struct qmp_error err;
};

static void call_sync_on_reply(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct nested *n = userdata;
        n->r = qmp_call_sync(q, "query-status", NULL, 0, NULL, &n->err);
}

static void test_call_sync_inside_loop(void **state) {
        struct peer *p = ready_peer();
        struct nested n = { 0 };
        struct qmp_error err;

        assert_int_equal(qmp_call(p->q, "query-balloon", NULL, 0, call_sync_on_reply, &n, &err), 0);
        peer_answer(p, "query-balloon", "{\"actual\": 1}");
        assert_int_equal(n.r, -EBUSY);
        assert_contains(n.err.error.msg, "inside its event loop");
        peer_done(p);
}

static void test_event_table(void **state) {
        for (int i = QMP_EVENT_UNKNOWN + 1; i < _QMP_EVENT_MAX; i++) {
                const char *name = qmp_event_to_name(i);
                assert_non_null(name);
                /* bsearch finds every name only if the table is sorted */
                assert_int_equal(qmp_event_from_name(name), i);
        }
        assert_int_equal(qmp_event_from_name("BALLOON_CHANGED"), QMP_EVENT_UNKNOWN);
        assert_int_equal(qmp_event_from_name(""), QMP_EVENT_UNKNOWN);
        assert_int_equal(qmp_event_from_name(NULL), QMP_EVENT_UNKNOWN);
        assert_null(qmp_event_to_name(QMP_EVENT_UNKNOWN));
        assert_int_equal(qmp_set_event_handler(NULL, QMP_EVENT_STOP, NULL, NULL), -EINVAL);
}

static void test_peer_pid_socketpair(void **state) {
        struct peer *p = ready_peer();
        pid_t pid = 0;

        assert_int_equal(qmp_peer_pid(p->q, &pid), 0);
        assert_int_equal(pid, getpid());
        peer_close(p);
        assert_int_equal(qmp_peer_pid(p->q, &pid), -ENOTCONN);
        peer_done(p);
}

static void test_connect_errors(void **state) {
        char dir[] = "/tmp/test-qmp-XXXXXX", path[96], longpath[200];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct qmp_error err;
        struct qmp *q = NULL;
        sd_event *e = NULL;
        int fd;

        assert_non_null(mkdtemp(dir));
        assert_int_equal(sd_event_new(&e), 0);
        snprintf(path, sizeof(path), "%s/missing.sock", dir);
        assert_int_equal(qmp_connect(e, path, 0, NULL, NULL, &q, &err), -ENOENT);
        assert_contains(err.error.msg, path);
        assert_contains(err.error.msg, "no such socket");
        assert_null(q);
        /* Bound but not listening: what a dead QEMU leaves behind. */
        snprintf(path, sizeof(path), "%s/dead.sock", dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(qmp_connect(e, path, 0, NULL, NULL, &q, &err), -ECONNREFUSED);
        assert_contains(err.error.msg, path);
        assert_contains(err.error.msg, "nobody is listening");
        close(fd);
        unlink(path);
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[sizeof(longpath) - 1] = '\0';
        assert_int_equal(qmp_connect(e, longpath, 0, NULL, NULL, &q, &err), -ENAMETOOLONG);
        assert_int_equal(qmp_connect_sync("/nonexistent/qmp.sock", 0, &q, &err), -ENOENT);
        assert_contains(err.error.msg, "/nonexistent/qmp.sock");
        assert_null(q);
        rmdir(dir);
        sd_event_unref(e);
}

/* ---- mutated transcripts --------------------------------------------------------------- */

/* xorshift64: a fixed seed keeps the run reproducible. */
static uint64_t rnd(uint64_t *state) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        return *state;
}

/* session.qmp's messages after the handshake, as one stream; ids already match our client's
 * (it numbers from 1 with qmp_capabilities, as the recorder did). */
static char *session_stream(const struct transcript *t, size_t *ret_len, unsigned *ret_calls) {
        char *s = NULL;
        size_t len = 0;
        unsigned calls = 0;

        for (size_t i = 3; i < t->n; i++) {
                size_t n = strlen(t->lines[i].text);
                if (t->lines[i].dir == '>') {
                        calls++;
                        continue;
                }
                if (t->lines[i].dir != '<')
                        continue;
                s = realloc(s, len + n + 2);
                assert_non_null(s);
                memcpy(s + len, t->lines[i].text, n);
                memcpy(s + len + n, "\r\n", 2);
                len += n + 2;
        }
        *ret_len = len;
        *ret_calls = calls;
        return s;
}

static void mutate(char *s, size_t *len, uint64_t *seed) {
        static const char junk[] = "{}[]\",:\\0123456789eE+-.truefalsenull \r\n\xff\x00";
        unsigned n = 1 + rnd(seed) % 4;

        for (unsigned k = 0; k < n && *len > 1; k++) {
                size_t at = rnd(seed) % *len;
                switch (rnd(seed) % 3) {
                case 0: /* replace a byte */
                        s[at] = junk[rnd(seed) % (sizeof(junk) - 1)];
                        break;
                case 1: { /* cut a range */
                        size_t cut = MIN(*len - at, 1 + rnd(seed) % 64);
                        memmove(s + at, s + at + cut, *len - at - cut);
                        *len -= cut;
                        break;
                }
                default: /* truncate */
                        *len = at + 1;
                }
        }
}

/* 300 damaged replays in random chunk sizes: every command completes exactly once, the
 * connection ends exactly once, and under ASan nothing is leaked or touched after free. */
static void test_mutated_session(void **state) {
        struct transcript t;
        size_t len;
        unsigned n_calls;
        _cleanup_free_ char *clean = NULL;
        uint64_t seed = 0x9e3779b97f4a7c15u;
        unsigned survived = 0;

        transcript_load("session.qmp", &t);
        clean = session_stream(&t, &len, &n_calls);
        for (int round = 0; round < 300; round++) {
                struct peer *p = ready_peer();
                struct call_result r[32] = { 0 };
                _cleanup_free_ char *s = malloc(len);
                size_t slen = len;

                assert_true(n_calls <= ELEMENTSOF(r));
                memcpy(s, clean, len);
                mutate(s, &slen, &seed);
                for (unsigned i = 0; i < n_calls; i++)
                        call(p, "query-status", 0, &r[i]);
                p->chunk = 1 + rnd(&seed) % 300;
                peer_write(p, s, slen);
                survived += p->n_disconnected == 0;
                peer_close(p);
                assert_int_equal(p->n_disconnected, 1);
                for (unsigned i = 0; i < n_calls; i++) {
                        assert_int_equal(r[i].calls, 1);
                        result_clear(&r[i]);
                }
                peer_done(p);
        }
        printf("# %u of 300 damaged streams were still valid QMP up to the EOF\n", survived);
        transcript_free(&t);
}

/* ---- the synchronous layer against a scripted QEMU in a child process ------------------ */

static void child_send(int fd, const char *line) {
        dprintf(fd, "%s\r\n", line);
}

/* Reads one command line; returns its id or -1. */
static int child_read_id(FILE *in) {
        char line[4096];
        json_object *o;
        int id;

        if (!fgets(line, sizeof(line), in))
                return -1;
        o = json_tokener_parse(line);
        id = o ? json_object_get_int(json_object_object_get(o, "id")) : -1;
        json_object_put(o);
        return id;
}

/* The child listens itself, so SO_PEERCRED names it, as it names QEMU for a real socket. */
static _Noreturn void scripted_qemu(const char path[static 96], int ready_fd, const char *greeting) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int l = socket(AF_UNIX, SOCK_STREAM, 0), c, id;
        char line[256];
        FILE *in;

        /* Never outlive a failed test: die with the parent, and after 30 s in any case. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm(30);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (bind(l, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(l, 1) < 0)
                _exit(2);
        (void) !write(ready_fd, "x", 1);
        c = accept(l, NULL, NULL);
        in = fdopen(dup(c), "r");
        if (c < 0 || !in)
                _exit(3);
        child_send(c, greeting);
        for (int step = 0; (id = child_read_id(in)) >= 0; step++) {
                if (step == 0 || step == 1)
                        snprintf(line, sizeof(line), step == 0 ? "{\"return\": {}, \"id\": %d}"
                                 : "{\"return\": {\"actual\": 1073741824}, \"id\": %d}", id);
                else
                        snprintf(line, sizeof(line), "{\"id\": %d, \"error\": {\"class\": \"DeviceNotActive\", "
                                 "\"desc\": \"No balloon device has been activated\"}}", id);
                child_send(c, line);
                if (step == 2)
                        break; /* then vanish, as a QEMU that exits */
        }
        _exit(0);
}

static void test_sync_against_process(void **state) {
        char dir[] = "/tmp/test-qmp-XXXXXX", path[96], x;
        struct qmp_error err = { 0 };
        _cleanup_qmp_ struct qmp *q = NULL;
        json_object *reply = NULL;
        struct transcript t;
        struct qmp_version v;
        int pipefd[2], status;
        pid_t child, peer = 0;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/qmp.sock", dir);
        transcript_load("session.qmp", &t);
        assert_int_equal(pipe(pipefd), 0);
        child = fork();
        assert_true(child >= 0);
        if (child == 0)
                scripted_qemu(path, pipefd[1], t.lines[0].text);
        close(pipefd[1]);
        assert_int_equal(read(pipefd[0], &x, 1), 1);
        close(pipefd[0]);
        transcript_free(&t);

        if (qmp_connect_sync(path, 2 * 1000000, &q, &err) < 0)
                fail_msg("%s", err.error.msg);
        assert_int_equal(qmp_peer_pid(q, &peer), 0);
        assert_int_equal(peer, child);
        assert_int_equal(qmp_qemu_version(q, &v), 0);
        assert_int_equal(v.micro, 22);
        assert_int_equal(qmp_call_sync(q, "query-balloon", NULL, 0, &reply, &err), 0);
        assert_int_equal(json_object_get_uint64(json_object_object_get(reply, "actual")), GIB);
        json_object_put(reply);
        reply = NULL;
        /* The client's loop sits idle longer than the next command's timeout: the command still
         * gets its whole timeout (it once timed out at once, from the loop's stale clock). */
        usleep(300000);
        assert_int_equal(qmp_call_sync(q, "balloon", NULL, 200000, &reply, &err), -ENODEV);
        assert_true(qmp_error_has_class(&err, "DeviceNotActive"));
        assert_contains(err.error.msg, path);
        assert_null(reply);
        assert_int_equal(qmp_call_sync(q, "query-balloon", NULL, 0, &reply, &err), -ECONNRESET);
        assert_contains(err.error.msg, path);
        assert_false(qmp_is_ready(q));
        assert_int_equal(waitpid(child, &status, 0), child);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        unlink(path);
        rmdir(dir);
}

/* ---- many connections on one loop ------------------------------------------------------ */

#define MANY 64                 /* below the hub's batch of 256: one dispatch serves them all */

struct many;
struct many_slot {
        struct many *m;
        unsigned calls;
        int code;
};

struct many {
        sd_event *e;
        struct qmp *q[MANY];
        int peer[MANY];
        struct many_slot slot[MANY];
        unsigned ready, replies;
        bool free_others;       /* the first reply frees every other client */
};

static void many_on_ready(struct qmp *q, void *userdata) {
        ((struct many *) userdata)->ready++;
}

static void many_on_reply(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct many_slot *s = userdata;
        struct many *m = s->m;

        s->calls++;
        s->code = err ? err->error.code : 0;
        m->replies++;
        if (err || !m->free_others)
                return;
        m->free_others = false;
        for (size_t i = 0; i < MANY; i++)
                if (m->q[i] != q)
                        m->q[i] = qmp_free(m->q[i]);
}

static void many_write_all(struct many *m, const char *line) {
        for (size_t i = 0; i < MANY; i++)
                assert_int_equal(write(m->peer[i], line, strlen(line)), (ssize_t) strlen(line));
}

static void many_setup(struct many *m) {
        static const struct qmp_callbacks cb = { .ready = many_on_ready };
        struct qmp_error err;
        int fds[2];

        *m = (struct many) { 0 };
        assert_int_equal(sd_event_new(&m->e), 0);
        for (size_t i = 0; i < MANY; i++) {
                assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
                m->peer[i] = fds[1];
                assert_int_equal(qmp_open_fd(m->e, fds[0], "test peer", 0, &cb, m, &m->q[i], &err), 0);
                m->slot[i].m = m;
        }
        /* The capabilities reply may come with the greeting: it is read after the command. */
        many_write_all(m, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n"
                          "{\"return\": {}, \"id\": 1}\r\n");
        while (m->ready < MANY)
                assert_true(sd_event_run(m->e, 1000000) > 0);
        for (size_t i = 0; i < MANY; i++)
                assert_int_equal(qmp_call(m->q[i], "query-status", NULL, 0, many_on_reply, &m->slot[i], &err), 0);
        while (sd_event_run(m->e, 0) > 0)       /* sends the commands */
                ;
        many_write_all(m, "{\"return\": {}, \"id\": 2}\r\n");
}

static void many_teardown(struct many *m) {
        for (size_t i = 0; i < MANY; i++) {
                m->q[i] = qmp_free(m->q[i]);
                close(m->peer[i]);
        }
        m->e = sd_event_unref(m->e);
}

/* All connections of a loop answer at once (ppnd's round): ONE iteration of the loop serves
 * them all. With a source per connection it would serve one and poll again: O(N^2) a round. */
static void test_many_replies_one_dispatch(void **state) {
        struct many m;

        many_setup(&m);
        assert_int_equal(sd_event_run(m.e, 0), 1);
        assert_int_equal(m.replies, MANY);
        for (size_t i = 0; i < MANY; i++) {
                assert_int_equal(m.slot[i].calls, 1);
                assert_int_equal(m.slot[i].code, 0);
                assert_true(qmp_is_ready(m.q[i]));
        }
        many_teardown(&m);
}

/* A reply callback frees the other clients while their replies sit in the same batch: each of
 * them gets -ECANCELED once, nothing is read from a freed client (ASan checks the memory). */
static void test_free_others_in_batch(void **state) {
        unsigned ok = 0, canceled = 0;
        struct many m;

        many_setup(&m);
        m.free_others = true;
        assert_int_equal(sd_event_run(m.e, 0), 1);
        for (size_t i = 0; i < MANY; i++) {
                assert_int_equal(m.slot[i].calls, 1);
                ok += m.slot[i].code == 0;
                canceled += m.slot[i].code == -ECANCELED;
        }
        assert_int_equal(ok, 1);
        assert_int_equal(canceled, MANY - 1);
        /* The loop goes on with the one client left, and frees its shared set with it. */
        assert_int_equal(sd_event_run(m.e, 0), 0);
        many_teardown(&m);
}

int main(void) {
        struct CMUnitTest tests[ELEMENTSOF(replay_cases) + 32];
        static char names[ELEMENTSOF(replay_cases)][96];
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(replay_cases); i++) {
                const struct replay_case *c = &replay_cases[i];
                if (c->chunk == PEER_BATCH)
                        snprintf(names[i], sizeof(names[i]), "replay %s %s, batched", c->transcript,
                                 c->mode == REPLAY_PIPELINED ? "pipelined" : "in order");
                else
                        snprintf(names[i], sizeof(names[i]), "replay %s in order, %zu-byte reads",
                                 c->transcript, c->chunk);
                tests[n++] = (struct CMUnitTest) { .name = names[i], .test_func = test_replay,
                                                   .initial_state = (void *) c };
        }
#define T(f) tests[n++] = (struct CMUnitTest) cmocka_unit_test(f)
        T(test_replies_between_events_any_order);
        T(test_command_timeout);
        T(test_cork);
        T(test_fast_replies);
        T(test_fast_split_and_free);
        T(test_fast_events);
        T(test_command_timeout_shared_timer);
        T(test_command_timeout_hub);
        T(test_greeting_timeout);
        T(test_capabilities_refused);
        T(test_eof_mid_message);
        T(test_eof_before_greeting);
        T(test_message_size_limit);
        T(test_bad_input);
        T(test_qemu_parse_error_reply);
        T(test_mutated_session);
        T(test_call_before_ready);
        T(test_free_with_pending);
        T(test_free_inside_callback);
        T(test_call_sync_inside_loop);
        T(test_event_table);
        T(test_peer_pid_socketpair);
        T(test_connect_errors);
        T(test_sync_against_process);
        T(test_many_replies_one_dispatch);
        T(test_free_others_in_batch);
#undef T
        signal(SIGPIPE, SIG_IGN);
        return _cmocka_run_group_tests("qmp", tests, n, NULL, NULL);
}
