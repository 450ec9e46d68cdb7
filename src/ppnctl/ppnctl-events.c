/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl events [--follow]: the daemon's recent decisions with their reasons. */
#include <string.h>
#include <time.h>

#include "control-client.h"
#include "eventlog.h"
#include "ppnctl.h"

static void print_event(const struct ppn_event *ev, bool json) {
        char when[32], from[FORMAT_SIZE_MAX], to[FORMAT_SIZE_MAX];
        time_t t = (time_t) (ev->realtime_usec / 1000000);
        struct tm tm;

        if (json) {
                json_object *o = event_to_json(ev);
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
                return;
        }
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
        printf("%s.%03u %-12s %-17s", when, (unsigned) (ev->realtime_usec / 1000 % 1000), ev->vm[0] ? ev->vm : "-",
               ev->kind);
        if (ev->from_bytes || ev->to_bytes)
                printf(" %s -> %s", ctl_size((int64_t) ev->from_bytes, from, sizeof(from)),
                       ctl_size((int64_t) ev->to_bytes, to, sizeof(to)));
        printf("  %s\n", ev->reason);
}

static int print_list(json_object *list, bool json) {
        size_t n = json_object_array_length(list);

        for (size_t i = 0; i < n; i++) {
                struct ppn_event ev;
                if (event_from_json(json_object_array_get_idx(list, i), &ev) < 0) {
                        fprintf(stderr, "ppnctl: the daemon sent an event this ppnctl cannot read\n");
                        return CTL_ERR_FAILED;
                }
                print_event(&ev, json);
        }
        fflush(stdout);
        return CTL_OK;
}

/* Streams {"event": ...} lines until the daemon goes away or the user interrupts. */
static int follow(struct control_client *c, bool json) {
        struct ppn_error err = { 0 };

        for (;;) {
                json_object *msg = NULL, *ev;
                struct ppn_event e;
                if (control_client_read(c, -1, &msg, &err) < 0) {
                        fprintf(stderr, "ppnctl: %s\n", err.msg);
                        return CTL_ERR_FAILED;
                }
                if (json_object_object_get_ex(msg, "event", &ev) && event_from_json(ev, &e) == 0) {
                        print_event(&e, json);
                        fflush(stdout);
                }
                json_object_put(msg);
        }
}

int ctl_events(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(control_client_freep) struct control_client *c = NULL;
        struct ppn_error err = { 0 };
        json_object *req, *reply = NULL, *list;
        bool json = args->json, follow_ = ctl_flag(args, "follow");
        int r;

        req = json_object_new_object();
        json_object_object_add(req, "request", json_object_new_string("events"));
        json_object_object_add(req, "follow", json_object_new_boolean(follow_));
        r = control_client_connect(g->socket, &c, &err);
        if (r >= 0)
                r = control_client_send(c, req, &err);
        if (r >= 0)
                r = control_client_read(c, 10000, &reply, &err);
        json_object_put(req);
        if (r < 0) {
                fprintf(stderr, "ppnctl: %s\n", err.msg);
                return CTL_ERR_FAILED;
        }
        if (!json_object_object_get_ex(reply, "events", &list) || !json_object_is_type(list, json_type_array)) {
                json_object_put(reply);
                fprintf(stderr, "ppnctl: the daemon's events reply has no list (version mismatch?)\n");
                return CTL_ERR_FAILED;
        }
        r = print_list(list, json);
        json_object_put(reply);
        if (r != CTL_OK || !follow_)
                return r;
        return follow(c, json);
}
