/* SPDX-License-Identifier: Apache-2.0 */
#include "eventlog.h"

#include <string.h>

#include "jsonutil.h"

int eventlog_init(struct eventlog *l, size_t capacity) {
        if (capacity == 0)
                return -EINVAL;
        *l = (struct eventlog){ .capacity = capacity };
        l->ring = calloc(capacity, sizeof(*l->ring));
        return l->ring ? 0 : -ENOMEM;
}

void eventlog_done(struct eventlog *l) {
        free(l->ring);
        *l = (struct eventlog){ 0 };
}

const struct ppn_event *eventlog_add(struct eventlog *l, const struct ppn_event *ev) {
        struct ppn_event *slot;

        if (l->count < l->capacity)
                slot = &l->ring[(l->head + l->count++) % l->capacity];
        else {
                slot = &l->ring[l->head];
                l->head = (l->head + 1) % l->capacity;
        }
        *slot = *ev;
        slot->seq = ++l->last_seq;
        return slot;
}

const struct ppn_event *eventlog_addv(struct eventlog *l, uint64_t realtime_usec, const char *vm, const char *kind,
                                      uint64_t from, uint64_t to, const char *fmt, va_list ap) {
        struct ppn_event ev = { .realtime_usec = realtime_usec, .from_bytes = from, .to_bytes = to };

        snprintf(ev.vm, sizeof(ev.vm), "%s", vm ? vm : "");
        snprintf(ev.kind, sizeof(ev.kind), "%s", kind);
        vsnprintf(ev.reason, sizeof(ev.reason), fmt, ap);
        return eventlog_add(l, &ev);
}

const struct ppn_event *eventlog_addf(struct eventlog *l, uint64_t realtime_usec, const char *vm, const char *kind,
                                      uint64_t from, uint64_t to, const char *fmt, ...) {
        const struct ppn_event *stored;
        va_list ap;

        va_start(ap, fmt);
        stored = eventlog_addv(l, realtime_usec, vm, kind, from, to, fmt, ap);
        va_end(ap);
        return stored;
}

size_t eventlog_since(const struct eventlog *l, uint64_t after_seq, const struct ppn_event **out, size_t max) {
        size_t first = 0, n;

        /* Entries are in seq order; skip those at or before after_seq. */
        while (first < l->count && l->ring[(l->head + first) % l->capacity].seq <= after_seq)
                first++;
        n = l->count - first;
        if (n > max) {
                first += n - max;
                n = max;
        }
        for (size_t i = 0; i < n; i++)
                out[i] = &l->ring[(l->head + first + i) % l->capacity];
        return n;
}

json_object *eventlog_vm_json(const struct eventlog *l, const char *vm, uint64_t since_usec, size_t budget,
                              size_t *ret_omitted) {
        json_object *arr = json_object_new_array();
        size_t used = 2, omitted = 0, first = l->count; /* "[]" */

        if (!arr)
                return NULL;
        /* Newest first, to find where the budget ends; then added oldest first. */
        for (size_t i = l->count; i-- > 0;) {
                const struct ppn_event *ev = &l->ring[(l->head + i) % l->capacity];
                if (strcmp(ev->vm, vm) != 0 || ev->realtime_usec < since_usec)
                        continue;
                json_object *o = event_to_json(ev);
                size_t len = o ? strlen(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) + 1 : 0;
                json_object_put(o);
                if (omitted || !o || used + len > budget) {
                        omitted++;
                        continue;
                }
                used += len;
                first = i;
        }
        for (size_t i = first; i < l->count; i++) {
                const struct ppn_event *ev = &l->ring[(l->head + i) % l->capacity];
                if (strcmp(ev->vm, vm) == 0 && ev->realtime_usec >= since_usec)
                        json_object_array_add(arr, event_to_json(ev));
        }
        if (ret_omitted)
                *ret_omitted = omitted;
        return arr;
}

/* An event as JSON: the one table both ways (ppnd writes it, ppnctl reads it). */
static const struct json_field event_fields[] = {
        JSON_FIELD(struct ppn_event, seq, "seq", JSON_KIND_U64),
        JSON_FIELD(struct ppn_event, realtime_usec, "time_usec", JSON_KIND_U64),
        JSON_FIELD(struct ppn_event, vm, "vm", JSON_KIND_TEXT),
        JSON_FIELD(struct ppn_event, kind, "kind", JSON_KIND_TEXT),
        JSON_FIELD(struct ppn_event, from_bytes, "from_bytes", JSON_KIND_U64),
        JSON_FIELD(struct ppn_event, to_bytes, "to_bytes", JSON_KIND_U64),
        JSON_FIELD(struct ppn_event, reason, "reason", JSON_KIND_TEXT),
};

json_object *event_to_json(const struct ppn_event *ev) {
        return json_from_fields(event_fields, ELEMENTSOF(event_fields), ev);
}

int event_from_json(json_object *o, struct ppn_event *ret) {
        struct ppn_event ev = { 0 };

        if (json_to_fields(o, event_fields, ELEMENTSOF(event_fields), &ev) < 0)
                return -EINVAL;
        *ret = ev;
        return 0;
}
