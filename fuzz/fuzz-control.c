/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the control socket's request path (control.c): line framing, the size limit,
 * JSON parsing, dispatch through the request table and the one error path.
 *
 * A control socket is created once (in a private folder on /dev/shm) with a 256-byte request
 * limit (the smallest the config allows, so the limit is hit often) and three handlers: "echo"
 * (replies with the request), "fail" (refuses with words) and "follow" (turns the connection
 * into a stream that gets a broadcast). Each input is one client connection: the first byte
 * chooses the chunk size of the writes (0 = one write), the rest is what the client sends;
 * then the client hangs up and reads everything the daemon answered.
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - every line the daemon sends is one JSON object; errors are {"error": non-empty string};
 *   - at most one answer per request line, plus broadcasts to a follower;
 *   - the connection is gone once the client hung up (no leaked connection state).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "check failed: %s\n", #x); abort(); } } while (0)
#define TOPIC 1

static char dir[] = "/dev/shm/ppn-fuzz-control.XXXXXX";
static char sock_path[96];
static sd_event *event;
static struct control *ctl;

static int on_echo(struct control_conn *conn, json_object *req, void *ud, json_object **ret,
                   struct ppn_error *err) {
        *ret = json_object_get(req);
        return 0;
}

static int on_fail(struct control_conn *conn, json_object *req, void *ud, json_object **ret,
                   struct ppn_error *err) {
        return ppn_error_set(err, -EINVAL, "refused on purpose");
}

static int on_follow(struct control_conn *conn, json_object *req, void *ud, json_object **ret,
                     struct ppn_error *err) {
        control_conn_follow(conn, TOPIC);
        *ret = json_object_new_object();
        return *ret ? 0 : -ENOMEM;
}

static const struct control_request table[] = {
        { "echo", on_echo },
        { "fail", on_fail },
        { "follow", on_follow },
};

static void cleanup(void) {
        control_free(ctl);
        sd_event_unref(event);
        rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        struct control_options o = { .path = sock_path, .group = (gid_t) -1, .max_request = 256,
                                     .max_clients = 4 };
        struct ppn_error err = { 0 };

        log_set_max_level(LOG_WARNING); /* malformed requests are logged at notice: quiet */
        CHECK(mkdtemp(dir));
        snprintf(sock_path, sizeof(sock_path), "%s/ppnd.sock", dir);
        CHECK(sd_event_new(&event) >= 0);
        if (control_new(event, &o, table, ELEMENTSOF(table), NULL, &ctl, &err) < 0) {
                fprintf(stderr, "control_new: %s\n", err.msg);
                abort();
        }
        atexit(cleanup);
        return 0;
}

struct answers {
        char buf[1 << 20];
        size_t len;
};

static void pump(int fd, struct answers *a) {
        for (int i = 0; i < 100000 && sd_event_run(event, 0) > 0; i++)
                ;
        for (;;) {
                ssize_t n = recv(fd, a->buf + a->len, sizeof(a->buf) - a->len, MSG_DONTWAIT);
                if (n <= 0)
                        break;
                a->len += (size_t) n;
                CHECK(a->len < sizeof(a->buf));
        }
}

static void feed(int fd, const uint8_t *p, size_t n, size_t chunk, struct answers *a) {
        while (n > 0) {
                ssize_t w = send(fd, p, n < chunk ? n : chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN)
                        return; /* the daemon hung up (request too large) */
                if (w > 0) {
                        p += w;
                        n -= (size_t) w;
                }
                pump(fd, a);
        }
}

/* Every answer line is one JSON object; an error carries words. Returns the number of lines. */
static size_t check_answers(const struct answers *a) {
        size_t n = 0;
        for (const char *p = a->buf, *end = a->buf + a->len; p < end; n++) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                json_object *o, *e;

                CHECK(nl); /* complete lines only */
                o = json_tokener_parse(strndupa(p, (size_t) (nl - p)));
                CHECK(o && json_object_is_type(o, json_type_object));
                if (json_object_object_get_ex(o, "error", &e))
                        CHECK(json_object_is_type(e, json_type_string) && json_object_get_string_len(e) > 0);
                json_object_put(o);
                p = nl + 1;
        }
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static struct answers a;
        json_object *msg;
        size_t lines = 0;
        int fd;

        if (size < 1)
                return 0;
        a.len = 0;
        memcpy(sa.sun_path, sock_path, strlen(sock_path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        pump(fd, &a);
        CHECK(control_n_connections(ctl) == 1);
        feed(fd, data + 1, size - 1, data[0] ? data[0] : SIZE_MAX, &a);
        msg = json_object_new_object();
        json_object_object_add(msg, "event", json_object_new_string("broadcast"));
        control_broadcast(ctl, TOPIC, msg);
        json_object_put(msg);
        shutdown(fd, SHUT_WR);
        pump(fd, &a);
        CHECK(control_n_connections(ctl) == 0);
        close(fd);
        for (size_t i = 1; i < size; i++)
                lines += data[i] == '\n';
        CHECK(check_answers(&a) <= lines + 2); /* + a broadcast, + a "too large" error */
        if (getenv("FUZZ_DEBUG")) /* to see what a seed reaches */
                fprintf(stderr, "%zu request lines, answers:\n%.*s", lines, (int) a.len, a.buf);
        return 0;
}
