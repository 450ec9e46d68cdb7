/* SPDX-License-Identifier: Apache-2.0 */
#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"

#define VM(member, key, kind) JSON_FIELD(struct vm_status, member, key, JSON_KIND_##kind)
static const struct json_field vm_fields[] = {
        VM(name, "name", TEXT),
        VM(state, "state", TEXT),
        VM(min_bytes, "min_bytes", U64),
        VM(max_bytes, "max_bytes", U64),
        VM(target_bytes, "target_bytes", SIZE),
        VM(actual_bytes, "actual_bytes", SIZE),
        VM(base_bytes, "base_bytes", SIZE),
        VM(plugged_bytes, "plugged_bytes", SIZE),
        VM(balloon_bytes, "balloon_bytes", SIZE),
        VM(guest_available_bytes, "guest_available_bytes", SIZE),
        VM(stats_age_usec, "stats_age_usec", SIZE),
        VM(shares, "shares", U64),
        VM(cpu_weight, "cpu_weight", U64),
        VM(pid, "pid", I64),
        VM(override_left_usec, "override_left_usec", U64),
        VM(free_page_reporting, "free_page_reporting", BOOL),
        VM(reason, "reason", TEXT),
};

#define POOL(member, key, kind) JSON_FIELD(struct pool_status, member, key, JSON_KIND_##kind)
static const struct json_field pool_fields[] = {
        POOL(physical_bytes, "physical_bytes", U64),
        POOL(reserve_bytes, "reserve_bytes", U64),
        POOL(reserved_min_bytes, "reserved_min_bytes", U64),
        POOL(pool_available_bytes, "pool_available_bytes", I64),
        POOL(committed_bytes, "committed_bytes", U64),
        POOL(free_bytes, "free_bytes", I64),
        POOL(host_available_bytes, "host_available_bytes", SIZE),
        POOL(psi_some_avg10, "psi_some_avg10", PERCENT),
        POOL(n_vms, "vms", U64),
        POOL(n_running, "vms_running", U64),
};

void vm_status_write(const struct vm_status *s, FILE *f) {
        json_write_fields(f, vm_fields, ELEMENTSOF(vm_fields), s);
}

int vm_status_from_json(json_object *o, struct vm_status *ret) {
        struct vm_status s = { 0 };

        if (json_to_fields(o, vm_fields, ELEMENTSOF(vm_fields), &s) < 0)
                return -EINVAL;
        *ret = s;
        return 0;
}

json_object *pool_status_to_json(const struct pool_status *p) {
        return json_from_fields(pool_fields, ELEMENTSOF(pool_fields), p);
}

int pool_status_from_json(json_object *o, struct pool_status *ret) {
        struct pool_status p = { 0 };

        if (json_to_fields(o, pool_fields, ELEMENTSOF(pool_fields), &p) < 0)
                return -EINVAL;
        *ret = p;
        return 0;
}
