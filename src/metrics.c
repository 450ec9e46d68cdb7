/* SPDX-License-Identifier: Apache-2.0 */
#include "metrics.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "log.h"

const char *const metrics_vm_states[] = { "running", "connecting", "absent", "error" };
const size_t metrics_n_vm_states = ELEMENTSOF(metrics_vm_states);

/* ---- counters ---- */

static size_t find_class(const struct metrics_counters *c, const char *name) {
        size_t i;

        for (i = 0; i < c->n_error_classes; i++)
                if (strcmp(c->errors[i].class, name) == 0)
                        break;
        return i;
}

void metrics_count_error(struct metrics_counters *c, const char *class) {
        const char *name = class && *class ? class : "transport";
        size_t i = find_class(c, name);

        /* The last slot is kept for "other": a new class once the others are taken lands there. */
        if (i == c->n_error_classes && i >= METRICS_ERROR_CLASSES_MAX - 1) {
                name = "other";
                i = find_class(c, name);
        }
        if (i == c->n_error_classes) {
                snprintf(c->errors[i].class, sizeof(c->errors[i].class), "%s", name);
                c->errors[i].count = 0;
                c->n_error_classes++;
        }
        c->errors[i].count++;
}

void metrics_count_decision(struct metrics_counters *c, enum policy_reason reason) {
        if ((unsigned) reason < _POLICY_REASON_MAX)
                c->decisions[reason]++;
}

/* ---- rendering ---- */

enum value_type { U64, I64 };

struct gauge {
        const char *name;
        const char *help;
        size_t offset;
        enum value_type type;
};

static const struct gauge node_gauges[] = {
        { "ppn_node_physical_bytes", "Physical memory the ledger hands out.",
          offsetof(struct metrics_node, physical_bytes), U64 },
        { "ppn_node_reserve_bytes", "Memory kept back for the host.", offsetof(struct metrics_node, reserve_bytes), U64 },
        { "ppn_node_reserved_min_bytes", "Sum of the VMs' minimums (reservations).",
          offsetof(struct metrics_node, reserved_min_bytes), U64 },
        { "ppn_node_pool_available_bytes", "Physical minus reserve minus the sum of minimums.",
          offsetof(struct metrics_node, pool_available_bytes), I64 },
        { "ppn_node_committed_bytes", "Sum of balloon actuals (a VM not connected counts at its maximum).",
          offsetof(struct metrics_node, committed_bytes), U64 },
        { "ppn_node_free_bytes", "Physical minus reserve minus committed.", offsetof(struct metrics_node, free_bytes), I64 },
        { "ppn_node_host_available_bytes", "MemAvailable of the host's /proc/meminfo.",
          offsetof(struct metrics_node, host_available_bytes), U64 },
        { "ppn_node_vms", "VMs in the ledger.", offsetof(struct metrics_node, n_vms), U64 },
        { "ppn_node_vms_running", "VMs whose QEMU is connected and managed.", offsetof(struct metrics_node, n_running), U64 },
};

static const struct gauge vm_gauges[] = {
        { "ppn_vm_min_bytes", "The VM's minimum (its reservation).", offsetof(struct metrics_vm, min_bytes), U64 },
        { "ppn_vm_max_bytes", "The VM's maximum (its boot size).", offsetof(struct metrics_vm, max_bytes), U64 },
        { "ppn_vm_target_bytes", "Balloon target in force.", offsetof(struct metrics_vm, target_bytes), U64 },
        { "ppn_vm_actual_bytes", "Memory the guest has now (balloon actual).", offsetof(struct metrics_vm, actual_bytes), U64 },
        { "ppn_vm_guest_available_bytes", "MemAvailable inside the guest (virtio-balloon statistics).",
          offsetof(struct metrics_vm, guest_available_bytes), U64 },
        { "ppn_vm_cpu_weight", "CPU weight of the VM's cgroup (1-10000).", offsetof(struct metrics_vm, cpu_weight), U64 },
};

static uint64_t field_u64(const void *base, size_t offset) {
        uint64_t v;
        memcpy(&v, (const char *) base + offset, sizeof(v));
        return v;
}

static void header(FILE *f, const char *name, const char *help, const char *type) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values may hold any UTF-8; the format escapes backslash, double quote and newline. */
static void label_value(FILE *f, const char *v) {
        for (; *v; v++) {
                if (*v == '\\' || *v == '"')
                        fprintf(f, "\\%c", *v);
                else if (*v == '\n')
                        fputs("\\n", f);
                else
                        fputc(*v, f);
        }
}

static void sample_label(FILE *f, const char *name, const char *label, const char *value) {
        fprintf(f, "%s{%s=\"", name, label);
        label_value(f, value);
        fputs("\"} ", f);
}

static void render_node(FILE *f, const struct metrics_node *n) {
        for (size_t i = 0; i < ELEMENTSOF(node_gauges); i++) {
                const struct gauge *g = &node_gauges[i];
                uint64_t v = field_u64(n, g->offset);
                if (g->type == U64 && v == METRICS_UNKNOWN)
                        continue;
                header(f, g->name, g->help, "gauge");
                if (g->type == I64)
                        fprintf(f, "%s %" PRId64 "\n", g->name, (int64_t) v);
                else
                        fprintf(f, "%s %" PRIu64 "\n", g->name, v);
        }
        if (n->psi_some_avg10 >= 0) {
                header(f, "ppn_node_memory_pressure_some_avg10_ratio",
                       "Share of the last 10 s some task waited for memory (PSI some avg10).", "gauge");
                fprintf(f, "ppn_node_memory_pressure_some_avg10_ratio %.4f\n", n->psi_some_avg10 / 100.0);
        }
}

/* The text is produced a piece at a time by a cursor (render_next()): the node's gauges, then
 * one VM's line of one family at a time, then the counters. metrics_render() joins the pieces;
 * the HTTP endpoint sends them as they come, so a scrape holds 16 KiB of text at a time instead
 * of the whole (~550 bytes per VM: 1.1 MB at 2,000 VMs, in a buffer grown by reallocation; with
 * it a scrape raised ppnd's peak RSS by 2.5 MiB there). */
enum stage { ST_HEAD, ST_GAUGES, ST_AGE, ST_OVERRIDE, ST_STUCK, ST_STATE, ST_COUNTERS, ST_END };

struct render_cursor {
        const struct metrics_snapshot *s;
        enum stage stage;
        size_t fam;             /* ST_GAUGES: the family in vm_gauges */
        size_t vm;              /* the next VM of the current family */
        bool any;               /* a line of the current family was written (its header is out) */
};

static bool state_known(const char *s) {
        for (size_t i = 0; i < metrics_n_vm_states; i++)
                if (strcmp(s, metrics_vm_states[i]) == 0)
                        return true;
        return false;
}

/* One VM's line of a family whose VMs may have no value: the header before the first line. */
static void vm_line_u64(FILE *f, struct render_cursor *c, const struct gauge *g, const struct metrics_vm *v) {
        uint64_t x = field_u64(v, g->offset);
        if (x == METRICS_UNKNOWN)
                return;
        if (!c->any)
                header(f, g->name, g->help, "gauge");
        c->any = true;
        sample_label(f, g->name, "vm", v->name);
        fprintf(f, "%" PRIu64 "\n", x);
}

/* One VM's line of a 0/1 family every VM has: the header before the first VM's. */
static void vm_line_flag(FILE *f, const struct render_cursor *c, const char *name, const char *help,
                         const struct metrics_vm *v, bool on) {
        if (c->vm == 0)
                header(f, name, help, "gauge");
        sample_label(f, name, "vm", v->name);
        fprintf(f, "%d\n", on);
}

static void vm_line(FILE *f, struct render_cursor *c, const struct metrics_vm *v) {
        switch (c->stage) {
        case ST_GAUGES:
                vm_line_u64(f, c, &vm_gauges[c->fam], v);
                break;
        case ST_AGE:
                if (v->stats_age_usec == METRICS_UNKNOWN)
                        break;
                if (!c->any)
                        header(f, "ppn_vm_stats_age_seconds", "Age of the guest's latest memory statistics.", "gauge");
                c->any = true;
                sample_label(f, "ppn_vm_stats_age_seconds", "vm", v->name);
                fprintf(f, "%.3f\n", (double) v->stats_age_usec / 1e6);
                break;
        case ST_OVERRIDE:
                vm_line_flag(f, c, "ppn_vm_override_active", "1 while an override lease holds the VM's target.", v,
                             v->override_active);
                break;
        case ST_STUCK:
                vm_line_flag(f, c, "ppn_vm_balloon_stuck", "1 while the VM's balloon makes no progress toward its target.",
                             v, v->stuck);
                break;
        case ST_STATE: {
                const char *cur = state_known(v->state) ? v->state : "error";
                if (c->vm == 0)
                        header(f, "ppn_vm_state", "1 for the state the VM's QEMU link is in, 0 for the others.", "gauge");
                for (size_t k = 0; k < metrics_n_vm_states; k++) {
                        fputs("ppn_vm_state{vm=\"", f);
                        label_value(f, v->name);
                        fprintf(f, "\",state=\"%s\"} %d\n", metrics_vm_states[k], strcmp(cur, metrics_vm_states[k]) == 0);
                }
                break;
        }
        default:
                break;
        }
}

static void render_counters(FILE *f, const struct metrics_counters *c);

/* Writes the next piece to f; false once everything has been written. */
static bool render_next(struct render_cursor *c, FILE *f) {
        const struct metrics_snapshot *s = c->s;

        for (;;) {
                switch (c->stage) {
                case ST_HEAD:
                        header(f, "ppn_build_info", "Version of the running ppnd.", "gauge");
                        sample_label(f, "ppn_build_info", "version", s->version ? s->version : PPN_VERSION);
                        fputs("1\n", f);
                        render_node(f, &s->node);
                        c->stage = ST_GAUGES;
                        return true;
                case ST_COUNTERS:
                        render_counters(f, s->counters);
                        c->stage = ST_END;
                        return true;
                case ST_END:
                        return false;
                default:
                        break;
                }
                if (c->vm < s->n_vms) {
                        vm_line(f, c, &s->vms[c->vm]);
                        c->vm++;
                        return true;
                }
                /* The family is done: the next one. */
                c->vm = 0;
                c->any = false;
                if (c->stage == ST_GAUGES && ++c->fam < ELEMENTSOF(vm_gauges))
                        continue;
                c->stage++;
        }
}

static void render_counters(FILE *f, const struct metrics_counters *c) {
        static const struct metrics_counters zero;

        if (!c)
                c = &zero;
        header(f, "ppn_balloon_commands_total", "Balloon targets sent to QEMU.", "counter");
        fprintf(f, "ppn_balloon_commands_total %" PRIu64 "\n", c->balloon_commands);
        header(f, "ppn_qmp_reconnects_total", "QMP connections established after a VM's first one.", "counter");
        fprintf(f, "ppn_qmp_reconnects_total %" PRIu64 "\n", c->reconnects);
        header(f, "ppn_stats_reads_deferred_total",
               "Rounds in which a settled VM's guest statistics were not read (settled-stats-interval).", "counter");
        fprintf(f, "ppn_stats_reads_deferred_total %" PRIu64 "\n", c->stats_deferred);
        header(f, "ppn_rounds_early_total",
               "Rounds started between two ticks because the host went over capacity.", "counter");
        fprintf(f, "ppn_rounds_early_total %" PRIu64 "\n", c->early_rounds);
        header(f, "ppn_fast_signal_periods_total",
               "Fast signal periods (200 ms) by the host's allocations: quiet (no QEMU read) or busy.", "counter");
        sample_label(f, "ppn_fast_signal_periods_total", "host", "quiet");
        fprintf(f, "%" PRIu64 "\n", c->fast_periods[0]);
        sample_label(f, "ppn_fast_signal_periods_total", "host", "busy");
        fprintf(f, "%" PRIu64 "\n", c->fast_periods[1]);
        header(f, "ppn_fast_signal_reads_total",
               "QEMU resident sets the fast signal read in busy periods, or did not read: bounded (even all the host "
               "allocated since the VM's last sample could not grow it) or deferred (beyond the period's share of "
               "fast-signal-reads, farther from growing than those read).", "counter");
        sample_label(f, "ppn_fast_signal_reads_total", "rss", "read");
        fprintf(f, "%" PRIu64 "\n", c->fast_reads[0]);
        sample_label(f, "ppn_fast_signal_reads_total", "rss", "bounded");
        fprintf(f, "%" PRIu64 "\n", c->fast_reads[1]);
        sample_label(f, "ppn_fast_signal_reads_total", "rss", "deferred");
        fprintf(f, "%" PRIu64 "\n", c->fast_reads[2]);
        header(f, "ppn_decisions_total", "Controller decisions by policy reason.", "counter");
        for (int r = 0; r < _POLICY_REASON_MAX; r++) {
                sample_label(f, "ppn_decisions_total", "reason", policy_reason_to_string((enum policy_reason) r));
                fprintf(f, "%" PRIu64 "\n", c->decisions[r]);
        }
        header(f, "ppn_qmp_errors_total",
               "QMP errors by class: QEMU's error class, or transport (connection lost, bad reply, timeout).", "counter");
        for (size_t i = 0; i < c->n_error_classes && i < METRICS_ERROR_CLASSES_MAX; i++) {
                sample_label(f, "ppn_qmp_errors_total", "class", c->errors[i].class);
                fprintf(f, "%" PRIu64 "\n", c->errors[i].count);
        }
}

int metrics_render(const struct metrics_snapshot *s, char **ret_text, size_t *ret_len) {
        struct render_cursor c = { .s = s };
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return -ENOMEM;
        while (render_next(&c, f))
                ;
        if (ferror(f) || fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret_text = buf;
        *ret_len = len;
        return 0;
}

/* ---- the HTTP endpoint ---- */

/* Prometheus scrapes every 15-60 s; 16 connections and a 10 s idle limit are plenty and keep
 * a stray client from holding the daemon's loop busy. */
#define METRICS_MAX_CONNECTIONS 16
#define METRICS_IDLE_TIMEOUT_SEC 10

struct metrics_server {
        struct MHD_Daemon *mhd;
        sd_event_source *io;
        sd_event_source *timer;
        const struct metrics_source *src;
        void *userdata;
        uint16_t port;
        uint64_t scrapes;
        bool streamed;          /* the last run handed a scrape's text to MHD */
};

/* An error page: a static text (the metrics themselves are streamed, serve_metrics()). */
static int queue_error(struct MHD_Connection *c, unsigned status, char *text, size_t len) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ok;

        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        ok = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return ok;
}

/* A scrape in flight: its own copy of the snapshot (the VMs and the counters: the daemon's may
 * change or go before the client has read everything), the cursor, and the pieces rendered but
 * not yet handed to MHD. */
struct stream {
        bool *read;             /* the server's: set when MHD asked for more */
        struct metrics_snapshot snap;
        struct metrics_vm *vms;
        struct metrics_counters counters;
        struct render_cursor cur;
        char *piece;
        size_t piece_len, piece_off;
};

#define STREAM_PIECE (16 * 1024)        /* render this much at a time */

static void stream_free(void *cls) {
        struct stream *st = cls;
        free(st->piece);
        free(st->vms);
        free(st);
}

/* MHD asks for up to max bytes at pos: what is left of the last pieces, then new ones. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct stream *st = cls;
        size_t out = 0;

        *st->read = true;
        while (out < max) {
                if (st->piece_off < st->piece_len) {
                        size_t n = st->piece_len - st->piece_off < max - out ? st->piece_len - st->piece_off : max - out;
                        memcpy(buf + out, st->piece + st->piece_off, n);
                        st->piece_off += n;
                        out += n;
                        continue;
                }
                if (st->cur.stage == ST_END)
                        break;
                free(st->piece);
                st->piece = NULL;
                st->piece_len = st->piece_off = 0;
                FILE *f = open_memstream(&st->piece, &st->piece_len);
                if (!f)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                while (ftell(f) < STREAM_PIECE && render_next(&st->cur, f))
                        ;
                if (ferror(f) || fclose(f) != 0) {
                        log_debug("metrics: out of memory in a scrape");
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
        }
        return out > 0 ? (ssize_t) out : MHD_CONTENT_READER_END_OF_STREAM;
}

/* The snapshot, copied out of the source (which gets it back at once). */
static struct stream *stream_new(const struct metrics_snapshot *snap, bool *read) {
        struct stream *st = calloc(1, sizeof(*st));

        if (!st)
                return NULL;
        st->snap = *snap;
        if (snap->n_vms) {
                st->vms = calloc(snap->n_vms, sizeof(*st->vms));
                if (!st->vms) {
                        free(st);
                        return NULL;
                }
                memcpy(st->vms, snap->vms, snap->n_vms * sizeof(*st->vms));
        }
        st->snap.vms = st->vms;
        if (snap->counters) {
                st->counters = *snap->counters;
                st->snap.counters = &st->counters;
        }
        st->cur = (struct render_cursor) { .s = &st->snap };
        st->read = read;
        return st;
}

static int serve_metrics(struct metrics_server *s, struct MHD_Connection *c) {
        static char failed[] = "ppnd could not collect its metrics; see its log\n";
        struct metrics_snapshot snap = { 0 };
        struct stream *st = NULL;
        int r = s->src->fill(s->userdata, &snap);

        if (r >= 0) {
                st = stream_new(&snap, &s->streamed);
                if (s->src->done)
                        s->src->done(s->userdata, &snap);
                r = st ? 0 : -ENOMEM;
        }
        if (r < 0) {
                log_debug("metrics: a scrape failed: %s", strerror(-r));
                return queue_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, sizeof(failed) - 1);
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_PIECE, stream_read, st,
                                                                      stream_free);
        if (!resp) {
                stream_free(st);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        s->scrapes++;
        return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        static char not_found[] = "ppnd serves its metrics at /metrics\n";
        static char not_allowed[] = "only GET and HEAD are served\n";
        struct metrics_server *s = cls;

        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return queue_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof(not_allowed) - 1);
        if (strcmp(url, "/metrics") != 0)
                return queue_error(c, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1);
        return serve_metrics(s, c);
}

/* At the connection limit MHD takes its listening socket out of its epoll set and puts it
 * back only from inside MHD_run(); closed connections do not always make its epoll descriptor
 * readable again, so without a run nothing ever re-adds the listener and the endpoint is dead
 * for good (16 idle clients, then gone, were enough). MHD therefore runs at least every
 * METRICS_RUN_MAX_MS: one cheap call a second on an idle daemon. */
#define METRICS_RUN_MAX_MS 1000

/* After every run, MHD says when it next needs to run without I/O (idle timeouts). */
static void rearm(struct metrics_server *s) {
        MHD_UNSIGNED_LONG_LONG ms = 0;

        if (MHD_get_timeout(s->mhd, &ms) != MHD_YES || ms > METRICS_RUN_MAX_MS)
                ms = METRICS_RUN_MAX_MS;
        /* A scrape being sent: MHD takes one piece a run and, while the socket still takes
         * more, gets no new edge from it; run again at once. A client that stops reading fills
         * its socket, MHD's stream callback is not called, and the loop waits for the edge
         * (EPOLLOUT) as for any other connection. */
        if (s->streamed)
                ms = 0;
        /* At once means at once: the loop's default accuracy would add up to 250 ms a piece. */
        sd_event_source_set_time_accuracy(s->timer, s->streamed ? 1 : 250 * USEC_PER_MSEC);
        sd_event_source_set_time_relative(s->timer, ms * USEC_PER_MSEC);
        sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        struct metrics_server *s = userdata;
        s->streamed = false;
        MHD_run(s->mhd);
        rearm(s);
        return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        return on_io(NULL, -1, 0, userdata);
}

static int listen_on(const struct metrics_server_options *o, uint16_t *ret_port, struct ppn_error *err) {
        struct sockaddr_storage ss = { 0 };
        struct sockaddr_in *in4 = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
        socklen_t sl;
        int one = 1;
        _cleanup_close_ int fd = -1;

        if (inet_pton(AF_INET, o->address, &in4->sin_addr) == 1) {
                *in4 = (struct sockaddr_in) { .sin_family = AF_INET, .sin_port = htons(o->port), .sin_addr = in4->sin_addr };
                sl = sizeof(*in4);
        } else if (inet_pton(AF_INET6, o->address, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(o->port);
                sl = sizeof(*in6);
        } else
                return ppn_error_set(err, -EINVAL, "metrics address '%s' is not a numeric IPv4 or IPv6 address; "
                                     "use e.g. 127.0.0.1 or ::1 in [metrics] address", o->address);
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return ppn_error_set(err, -errno, "cannot create the metrics socket: %m");
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &ss, sl) < 0)
                return ppn_error_set(err, -errno, "cannot listen for metrics on %s port %u: %m; choose another "
                                     "[metrics] port or set enabled = no", o->address, o->port);
        if (listen(fd, METRICS_MAX_CONNECTIONS) < 0 || getsockname(fd, (struct sockaddr *) &ss, &sl) < 0)
                return ppn_error_set(err, -errno, "cannot listen for metrics on %s port %u: %m", o->address, o->port);
        *ret_port = ntohs(ss.ss_family == AF_INET ? in4->sin_port : in6->sin6_port);
        return TAKE_FD(fd);
}

static int attach(sd_event *e, struct metrics_server *s, struct ppn_error *err) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        int r;

        if (!info)
                return ppn_error_set(err, -EIO, "the HTTP library has no epoll descriptor to watch");
        r = sd_event_add_io(e, &s->io, info->epoll_fd, EPOLLIN, on_io, s);
        if (r >= 0)
                r = sd_event_add_time_relative(e, &s->timer, CLOCK_MONOTONIC, 0, 0, on_timer, s);
        if (r < 0)
                return ppn_error_set(err, r, "cannot watch the metrics socket: %s", strerror(-r));
        rearm(s);
        return 0;
}

int metrics_server_new(sd_event *e, const struct metrics_server_options *o, const struct metrics_source *src,
                       void *userdata, struct metrics_server **ret, struct ppn_error *err) {
        _cleanup_(metrics_server_freep) struct metrics_server *s = NULL;
        int fd, r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        s->src = src;
        s->userdata = userdata;
        fd = listen_on(o, &s->port, err);
        if (fd < 0)
                return fd;
        /* No thread: MHD runs when its epoll descriptor, watched by our loop, is readable. */
        s->mhd = MHD_start_daemon(MHD_USE_EPOLL, 0, NULL, NULL, on_request, s,
                                  MHD_OPTION_LISTEN_SOCKET, fd,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) METRICS_MAX_CONNECTIONS,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) METRICS_IDLE_TIMEOUT_SEC,
                                  MHD_OPTION_END);
        if (!s->mhd) {
                close(fd);
                return ppn_error_set(err, -EIO, "cannot start the metrics HTTP server on %s port %u",
                                     o->address, s->port);
        }
        r = attach(e, s, err);
        if (r < 0)
                return r;
        log_debug("metrics: serving http://%s:%u/metrics", o->address, s->port);
        *ret = TAKE_PTR(s);
        return 0;
}

struct metrics_server *metrics_server_free(struct metrics_server *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        if (s->mhd)
                MHD_stop_daemon(s->mhd); /* closes the listening socket it was given */
        free(s);
        return NULL;
}

uint16_t metrics_server_port(const struct metrics_server *s) {
        return s->port;
}

uint64_t metrics_server_scrapes(const struct metrics_server *s) {
        return s->scrapes;
}
