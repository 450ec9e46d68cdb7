/* SPDX-License-Identifier: Apache-2.0 */
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"

static json_object *size_or_null(uint64_t v) {
        return v == STATUS_UNKNOWN ? NULL : json_object_new_uint64(v);
}

/* Reads a member that may be null (unknown). */
static int get_size(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return -EINVAL;
        if (!v)
                return *ret = STATUS_UNKNOWN, 0;
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        *ret = json_object_get_uint64(v);
        return 0;
}

json_object *vm_status_to_json(const struct vm_status *s) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "state", json_object_new_string(s->state));
        json_object_object_add(o, "min_bytes", json_object_new_uint64(s->min_bytes));
        json_object_object_add(o, "max_bytes", json_object_new_uint64(s->max_bytes));
        json_object_object_add(o, "target_bytes", size_or_null(s->target_bytes));
        json_object_object_add(o, "actual_bytes", size_or_null(s->actual_bytes));
        json_object_object_add(o, "base_bytes", size_or_null(s->base_bytes));
        json_object_object_add(o, "plugged_bytes", size_or_null(s->plugged_bytes));
        json_object_object_add(o, "balloon_bytes", size_or_null(s->balloon_bytes));
        json_object_object_add(o, "guest_available_bytes", size_or_null(s->guest_available_bytes));
        json_object_object_add(o, "stats_age_usec", size_or_null(s->stats_age_usec));
        json_object_object_add(o, "shares", json_object_new_uint64(s->shares));
        json_object_object_add(o, "cpu_weight", json_object_new_uint64(s->cpu_weight));
        json_object_object_add(o, "pid", json_object_new_int64(s->pid));
        json_object_object_add(o, "override_left_usec", json_object_new_uint64(s->override_left_usec));
        json_object_object_add(o, "free_page_reporting", json_object_new_boolean(s->free_page_reporting));
        json_object_object_add(o, "reason", json_object_new_string(s->reason));
        return o;
}

int vm_status_from_json(json_object *o, struct vm_status *ret) {
        struct vm_status s = { 0 };

        if (!json_object_is_type(o, json_type_object) ||
            json_member_text(o, "name", s.name, sizeof(s.name)) < 0 ||
            json_member_text(o, "state", s.state, sizeof(s.state)) < 0 ||
            get_size(o, "min_bytes", &s.min_bytes) < 0 || get_size(o, "max_bytes", &s.max_bytes) < 0 ||
            get_size(o, "target_bytes", &s.target_bytes) < 0 || get_size(o, "actual_bytes", &s.actual_bytes) < 0 ||
            get_size(o, "base_bytes", &s.base_bytes) < 0 || get_size(o, "plugged_bytes", &s.plugged_bytes) < 0 ||
            get_size(o, "balloon_bytes", &s.balloon_bytes) < 0 ||
            get_size(o, "guest_available_bytes", &s.guest_available_bytes) < 0 ||
            get_size(o, "stats_age_usec", &s.stats_age_usec) < 0 || get_size(o, "shares", &s.shares) < 0 ||
            get_size(o, "cpu_weight", &s.cpu_weight) < 0 || json_member_int64(o, "pid", &s.pid) < 0 ||
            get_size(o, "override_left_usec", &s.override_left_usec) < 0 ||
            json_member_text(o, "reason", s.reason, sizeof(s.reason)) < 0 ||
            json_member_bool(o, "free_page_reporting", &s.free_page_reporting) == -EINVAL)
                return -EINVAL;
        *ret = s;
        return 0;
}

json_object *pool_status_to_json(const struct pool_status *p) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "physical_bytes", json_object_new_uint64(p->physical_bytes));
        json_object_object_add(o, "reserve_bytes", json_object_new_uint64(p->reserve_bytes));
        json_object_object_add(o, "reserved_min_bytes", json_object_new_uint64(p->reserved_min_bytes));
        json_object_object_add(o, "pool_available_bytes", json_object_new_int64(p->pool_available_bytes));
        json_object_object_add(o, "committed_bytes", json_object_new_uint64(p->committed_bytes));
        json_object_object_add(o, "free_bytes", json_object_new_int64(p->free_bytes));
        json_object_object_add(o, "host_available_bytes", size_or_null(p->host_available_bytes));
        json_object_object_add(o, "psi_some_avg10", p->psi_some_avg10 < 0 ? NULL : json_object_new_double(p->psi_some_avg10));
        json_object_object_add(o, "vms", json_object_new_uint64(p->n_vms));
        json_object_object_add(o, "vms_running", json_object_new_uint64(p->n_running));
        return o;
}

int pool_status_from_json(json_object *o, struct pool_status *ret) {
        struct pool_status p = { 0 };
        json_object *v;

        if (!json_object_is_type(o, json_type_object) ||
            get_size(o, "physical_bytes", &p.physical_bytes) < 0 || get_size(o, "reserve_bytes", &p.reserve_bytes) < 0 ||
            get_size(o, "reserved_min_bytes", &p.reserved_min_bytes) < 0 ||
            json_member_int64(o, "pool_available_bytes", &p.pool_available_bytes) < 0 ||
            get_size(o, "committed_bytes", &p.committed_bytes) < 0 ||
            json_member_int64(o, "free_bytes", &p.free_bytes) < 0 ||
            get_size(o, "host_available_bytes", &p.host_available_bytes) < 0 ||
            get_size(o, "vms", &p.n_vms) < 0 || get_size(o, "vms_running", &p.n_running) < 0 ||
            !json_object_object_get_ex(o, "psi_some_avg10", &v))
                return -EINVAL;
        p.psi_some_avg10 = v ? json_object_get_double(v) : -1;
        *ret = p;
        return 0;
}
