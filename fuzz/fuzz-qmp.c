/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the QMP client's stream parser, fed as a hostile QEMU would feed it.
 *
 * The input is what "QEMU" writes on the socket, after one control byte: the chunk size of the
 * writes (0 = everything in one write, N = N bytes per write, each followed by dispatching the
 * loop, so messages split at every offset). The client sits on the other end of a socketpair,
 * exactly as in the daemon (qmp_open_fd()); nothing in qmp.c is bypassed. Once ready it sends
 * the commands a daemon sends (the order of tests/fixtures/qmp/guest.qmp, ids 2..9), so
 * replies in the input reach the balloon decoders. At the end the peer hangs up.
 *
 * Invariants checked on every input (a violation aborts, which libFuzzer records as a crash):
 *   - every accepted command's callback runs exactly once (by the end, after qmp_free());
 *   - the disconnected callback runs exactly once (the hang-up at the latest), never twice;
 *   - a failed command always carries a negative code and words.
 * Memory errors, leaks and undefined behaviour are caught by ASan/LSan/UBSan.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balloon.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
        unsigned n_calls, n_replies, n_disconnected, n_events;
        bool ready;
};

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void check_err(const struct qmp_error *err) {
        CHECK(err->error.code < 0);
        CHECK(err->error.msg[0]);
}

static void on_done(struct qmp *q, const struct qmp_error *err, void *userdata) {
        struct run *r = userdata;
        if (err)
                check_err(err);
        r->n_replies++;
}

static void on_actual(struct qmp *q, uint64_t actual, const struct qmp_error *err, void *userdata) {
        on_done(q, err, userdata);
}

static void on_stats(struct qmp *q, const struct balloon_stats *s, const struct qmp_error *err,
                     void *userdata) {
        uint64_t v;
        if (s)
                for (int i = 0; i < _BALLOON_STAT_MAX; i++)
                        (void) balloon_stats_get(s, i, &v);
        on_done(q, err, userdata);
}

/* The daemon's commands: query, stats, target, query, polling on, stats, target, query. */
static void send_commands(struct qmp *q, struct run *r) {
        r->n_calls += balloon_query(q, 0, on_actual, r, NULL) == 0;
        r->n_calls += balloon_read_stats(q, NULL, 0, on_stats, r, NULL) == 0;
        r->n_calls += balloon_set_target(q, 512 * MIB, 128 * MIB, 0, on_done, r, NULL) == 0;
        r->n_calls += balloon_query(q, 0, on_actual, r, NULL) == 0;
        r->n_calls += balloon_enable_stats(q, NULL, 1, 0, on_done, r, NULL) == 0;
        r->n_calls += balloon_read_stats(q, NULL, 0, on_stats, r, NULL) == 0;
        r->n_calls += balloon_set_target(q, 1024 * MIB, 128 * MIB, 0, on_done, r, NULL) == 0;
        r->n_calls += balloon_query(q, 0, on_actual, r, NULL) == 0;
}

static void on_ready(struct qmp *q, void *userdata) {
        struct run *r = userdata;
        struct qmp_version v;

        CHECK(!r->ready);
        r->ready = true;
        CHECK(qmp_is_ready(q));
        CHECK(qmp_qemu_version(q, &v) == 0);
        send_commands(q, r);
}

static void on_disconnected(struct qmp *q, const struct qmp_error *reason, void *userdata) {
        struct run *r = userdata;
        check_err(reason);
        CHECK(!qmp_is_ready(q));
        r->n_disconnected++;
}

static void on_event(struct qmp *q, const struct qmp_event *ev, void *userdata) {
        struct run *r = userdata;
        uint64_t actual;

        CHECK(ev->name);
        CHECK(ev->id < _QMP_EVENT_MAX);
        (void) balloon_event_actual(ev, &actual);
        r->n_events++;
}

static void pump(sd_event *e) {
        /* Dispatch until nothing is ready; no timer is due within a run (timeouts are 5 s). */
        for (int i = 0; i < 100000 && sd_event_run(e, 0) > 0; i++)
                ;
}

static void drain(int fd) {
        char buf[4096];
        while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                ;
}

/* Writes `n` bytes in `chunk` pieces, dispatching the client after each. */
static void feed(sd_event *e, int fd, const uint8_t *p, size_t n, size_t chunk) {
        while (n > 0) {
                ssize_t w = send(fd, p, n < chunk ? n : chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN)
                        return; /* the client hung up */
                if (w > 0) {
                        p += w;
                        n -= (size_t) w;
                }
                pump(e);
                drain(fd);
        }
}

static sd_event *event(void) {
        static sd_event *e;
        if (!e && sd_event_new(&e) < 0)
                abort();
        return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const struct qmp_callbacks cb = { .ready = on_ready, .disconnected = on_disconnected,
                                          .event = on_event };
        struct run r = { 0 };
        struct qmp *q = NULL;
        sd_event *e = event();
        size_t chunk;
        int sv[2];

        if (size < 1)
                return 0;
        chunk = data[0] ? data[0] : SIZE_MAX;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        CHECK(qmp_open_fd(e, sv[0], "fuzz peer", 0, &cb, &r, &q, NULL) == 0);
        CHECK(qmp_set_event_handler(q, QMP_EVENT_BALLOON_CHANGE, on_event, &r) == 0);
        feed(e, sv[1], data + 1, size - 1, chunk);
        shutdown(sv[1], SHUT_WR);
        pump(e);
        CHECK(r.n_disconnected == 1);
        CHECK(qmp_pending(q) == r.n_calls - r.n_replies);
        qmp_free(q);
        CHECK(r.n_replies == r.n_calls);
        if (getenv("FUZZ_DEBUG")) /* to see what a seed reaches */
                fprintf(stderr, "ready %d, commands %u, replies %u, events %u\n", r.ready,
                        r.n_calls, r.n_replies, r.n_events);
        close(sv[1]);
        pump(e);
        return 0;
}
