/* SPDX-License-Identifier: Apache-2.0 */
#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"

#define VM(member, key, kind) JSON_FIELD(struct vm_status, member, key, JSON_KIND_##kind)
/* Each member once; the full and the brief tables list them. */
#define F_NAME VM(name, "name", TEXT)
#define F_STATE VM(state, "state", TEXT)
#define F_MIN VM(min_bytes, "min_bytes", U64)
#define F_MAX VM(max_bytes, "max_bytes", U64)
#define F_TARGET VM(target_bytes, "target_bytes", SIZE)
#define F_ACTUAL VM(actual_bytes, "actual_bytes", SIZE)
#define F_AVAILABLE VM(guest_available_bytes, "guest_available_bytes", SIZE)
#define F_CPU_WEIGHT VM(cpu_weight, "cpu_weight", U64)
#define F_REASON VM(reason, "reason", TEXT)
static const struct json_field vm_fields[] = {
        F_NAME,
        F_STATE,
        F_MIN,
        F_MAX,
        F_TARGET,
        F_ACTUAL,
        VM(base_bytes, "base_bytes", SIZE),
        VM(plugged_bytes, "plugged_bytes", SIZE),
        VM(balloon_bytes, "balloon_bytes", SIZE),
        F_AVAILABLE,
        VM(stats_age_usec, "stats_age_usec", SIZE),
        VM(shares, "shares", U64),
        F_CPU_WEIGHT,
        VM(pid, "pid", I64),
        VM(override_left_usec, "override_left_usec", U64),
        VM(free_page_reporting, "free_page_reporting", BOOL),
        F_REASON,
};

/* What `ppnctl status` shows in its table: a subset of the above, in the same order. */
static const struct json_field vm_brief_fields[] = {
        F_NAME, F_STATE, F_MIN, F_MAX, F_TARGET, F_ACTUAL, F_AVAILABLE, F_CPU_WEIGHT, F_REASON,
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

void vm_status_write_brief(const struct vm_status *s, size_t reason_width, FILE *f) {
        struct vm_status b = *s;
        char cut[sizeof(s->reason) + 4];

        /* Cut only where that makes it shorter: a cut reason must still fit the member whole
         * (a reason of 191 bytes cut at 190 columns would not, and the reader would break the
         * mark). The table cuts the full reason to the same text (text_fit of text_fit). */
        if (reason_width > 0 && strlen(text_fit(s->reason, reason_width, cut, sizeof(cut))) < strlen(s->reason))
                memcpy(b.reason, cut, strlen(cut) + 1);
        json_write_fields(f, vm_brief_fields, ELEMENTSOF(vm_brief_fields), &b);
}

int vm_status_brief_from_json(json_object *o, struct vm_status *ret) {
        struct vm_status s = { 0 };

        if (json_to_fields(o, vm_brief_fields, ELEMENTSOF(vm_brief_fields), &s) < 0)
                return -EINVAL;
        *ret = s;
        return 0;
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
