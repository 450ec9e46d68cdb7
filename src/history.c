/* SPDX-License-Identifier: Apache-2.0 */
#include "history.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

int history_ring_init(struct history_ring *h, size_t capacity) {
        if (capacity == 0)
                return -EINVAL;
        *h = (struct history_ring) { .ring = calloc(capacity, sizeof(*h->ring)), .capacity = capacity };
        return h->ring ? 0 : -ENOMEM;
}

void history_ring_done(struct history_ring *h) {
        free(h->ring);
        *h = (struct history_ring) { 0 };
}

size_t history_capacity_for(uint64_t budget_bytes, size_t n_vms) {
        uint64_t per = budget_bytes / (n_vms ? n_vms : 1) / sizeof(struct history_sample);

        return per < HISTORY_SAMPLES_MIN ? HISTORY_SAMPLES_MIN : per > HISTORY_SAMPLES_MAX ? HISTORY_SAMPLES_MAX : (size_t) per;
}

int history_ring_resize(struct history_ring *h, size_t capacity) {
        struct history_sample *ring;
        size_t keep;

        if (capacity == 0)
                return -EINVAL;
        if (capacity == h->capacity)
                return 0;
        ring = calloc(capacity, sizeof(*ring));
        if (!ring)
                return -ENOMEM;
        keep = h->count < capacity ? h->count : capacity;
        for (size_t i = 0; i < keep; i++)
                ring[i] = *history_ring_get(h, h->count - keep + i);
        free(h->ring);
        *h = (struct history_ring) { .ring = ring, .capacity = capacity, .count = keep };
        return 0;
}

void history_ring_add(struct history_ring *h, const struct history_sample *s) {
        if (h->count < h->capacity) {
                h->ring[(h->head + h->count) % h->capacity] = *s;
                h->count++;
        } else {
                h->ring[h->head] = *s;
                h->head = (h->head + 1) % h->capacity;
        }
}

const struct history_sample *history_ring_get(const struct history_ring *h, size_t i) {
        return &h->ring[(h->head + i) % h->capacity];
}

size_t history_ring_first_since(const struct history_ring *h, uint64_t since_realtime_usec) {
        size_t lo = 0, hi = h->count;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (history_ring_get(h, mid)->realtime_usec < since_realtime_usec)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

uint64_t history_sample_guest_used(const struct history_sample *s) {
        if (s->actual_bytes == HISTORY_UNKNOWN || s->guest_available_bytes == HISTORY_UNKNOWN ||
            s->guest_available_bytes > s->actual_bytes)
                return HISTORY_UNKNOWN;
        return s->actual_bytes - s->guest_available_bytes;
}

json_object *history_sample_to_json(const struct history_sample *s) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "time_usec", json_object_new_int64((int64_t) s->realtime_usec));
        json_object_object_add(o, "target_bytes", json_size_or_null(s->target_bytes, HISTORY_UNKNOWN));
        json_object_object_add(o, "actual_bytes", json_size_or_null(s->actual_bytes, HISTORY_UNKNOWN));
        json_object_object_add(o, "guest_available_bytes", json_size_or_null(s->guest_available_bytes, HISTORY_UNKNOWN));
        json_object_object_add(o, "guest_total_bytes", json_size_or_null(s->guest_total_bytes, HISTORY_UNKNOWN));
        return o;
}

static int member(json_object *o, const char *name, bool nullable, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, name, &v))
                return -EINVAL;
        if (!v && nullable) {
                *ret = HISTORY_UNKNOWN;
                return 0;
        }
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return -EINVAL;
        *ret = (uint64_t) json_object_get_int64(v);
        return 0;
}

int history_sample_from_json(json_object *o, struct history_sample *ret) {
        struct history_sample s;

        if (!json_object_is_type(o, json_type_object) || member(o, "time_usec", false, &s.realtime_usec) < 0 ||
            member(o, "target_bytes", true, &s.target_bytes) < 0 ||
            member(o, "actual_bytes", true, &s.actual_bytes) < 0 ||
            member(o, "guest_available_bytes", true, &s.guest_available_bytes) < 0 ||
            member(o, "guest_total_bytes", true, &s.guest_total_bytes) < 0)
                return -EINVAL;
        *ret = s;
        return 0;
}

json_object *history_sample_to_array(const struct history_sample *s) {
        json_object *a = json_object_new_array_ext(5);

        json_object_array_add(a, json_object_new_int64((int64_t) s->realtime_usec));
        json_object_array_add(a, json_size_or_null(s->target_bytes, HISTORY_UNKNOWN));
        json_object_array_add(a, json_size_or_null(s->actual_bytes, HISTORY_UNKNOWN));
        json_object_array_add(a, json_size_or_null(s->guest_available_bytes, HISTORY_UNKNOWN));
        json_object_array_add(a, json_size_or_null(s->guest_total_bytes, HISTORY_UNKNOWN));
        return a;
}

static int element(json_object *a, size_t i, bool nullable, uint64_t *ret) {
        json_object *v = json_object_array_get_idx(a, i);

        if (!v && nullable) {
                *ret = HISTORY_UNKNOWN;
                return 0;
        }
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return -EINVAL;
        *ret = (uint64_t) json_object_get_int64(v);
        return 0;
}

int history_sample_from_array(json_object *a, struct history_sample *ret) {
        struct history_sample s;

        if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != 5 ||
            element(a, 0, false, &s.realtime_usec) < 0 || element(a, 1, true, &s.target_bytes) < 0 ||
            element(a, 2, true, &s.actual_bytes) < 0 || element(a, 3, true, &s.guest_available_bytes) < 0 ||
            element(a, 4, true, &s.guest_total_bytes) < 0)
                return -EINVAL;
        *ret = s;
        return 0;
}
