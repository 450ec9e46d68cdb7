/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl balloon VM SIZE [--for DURATION] and ppnctl release VM: an operator's override lease.
 * The lease is written to the ledger (audited, survives a daemon restart); ppnd notices the
 * commit within 250 ms and holds the VM at SIZE until the lease expires or is released.
 * `release` also asks ppnd (control socket) to end an override it made itself when the balloon
 * was moved outside it; with nothing to release it says so and fails.
 * A SIZE below the VM's minimum (its reservation) or above its maximum is refused here,
 * and again by the ledger.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "control-client.h"
#include "jsonutil.h"
#include "ledger.h"
#include "ppnctl.h"

/* The lease length when --for is not given; as ppnd's [controller] override-default. */
#define LEASE_DEFAULT_USEC (UINT64_C(600) * 1000000)

static int check_range(const struct ledger_vm *vm, uint64_t size) {
        char a[32], b[32];

        if (size < vm->min_bytes) {
                fprintf(stderr, "ppnctl: refused: %s is below %s's minimum of %s (its reservation); "
                        "lower the minimum with 'ppnctl vm set %s min=...' first\n",
                        ctl_size((int64_t) size, a, sizeof(a)), vm->name, ctl_size((int64_t) vm->min_bytes, b, sizeof(b)),
                        vm->name);
                return CTL_ERR_FAILED;
        }
        if (size > vm->max_bytes) {
                fprintf(stderr, "ppnctl: refused: %s is above %s's maximum of %s (its boot size)\n",
                        ctl_size((int64_t) size, a, sizeof(a)), vm->name, ctl_size((int64_t) vm->max_bytes, b, sizeof(b)));
                return CTL_ERR_FAILED;
        }
        return CTL_OK;
}

/* A lease of 1 s to LEDGER_LEASE_MAX_SEC: a longer one would wrap the expiry. */
static bool lease_ok(const char *text, uint64_t *ret) {
        return parse_duration(text, ret) >= 0 && *ret >= 1000000 && *ret <= (uint64_t) LEDGER_LEASE_MAX_SEC * 1000000;
}

/* The operands and --for of balloon; 0 or CTL_ERR_USAGE (printed). */
static int parse_balloon_args(const struct ctl_args *args, const char **ret_vm, uint64_t *ret_size, uint64_t *ret_for) {
        const char *size = args->argv[2];

        for (size_t i = 0; i < args->n_given; i++)      /* each --for is checked, the last one counts */
                if (!lease_ok(args->given[i].value, ret_for))
                        return ctl_usage_error(args, "'%s' is not a duration from 1s to 366d%s", args->given[i].value,
                                               args->given[i].inline_value ? "" : " (examples: 90s, 10m, 2h)");
        if (parse_size(size, ret_size) < 0 || *ret_size == 0)
                return ctl_usage_error(args, "'%s' is not a size (examples: 512M, 2G)", size);
        if (*ret_size % MIB)
                return ctl_usage_error(args, "'%s' is not a whole number of MiB (QEMU's balloon "
                                       "and the ledger count in MiB); e.g. 512M, 2G", size);
        *ret_vm = args->argv[1];
        return 0;
}

int ctl_balloon(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ledger_vm vm = { 0 };
        struct ppn_error e = { 0 };
        uint64_t size = 0, dur = LEASE_DEFAULT_USEC;
        int64_t expires;
        const char *name = NULL;
        char a[32];
        int r = parse_balloon_args(args, &name, &size, &dur);

        if (r < 0)
                return r;
        r = ctl_open_vm(g, true, name, &l, &vm);
        if (r)
                return r;
        r = check_range(&vm, size);
        ledger_vm_done(&vm);
        if (r != CTL_OK)
                return r;
        expires = (int64_t) ((now_realtime_usec() + dur) / 1000000);
        r = ledger_override_set(l, name, size, expires, getuid(), &e);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("%s: held at %s for %" PRIu64 " s (until released or expired); ppnd applies it within a second\n",
               name, ctl_size((int64_t) size, a, sizeof(a)), dur / 1000000);
        return CTL_OK;
}

/* Asks ppnd to end an override it made itself. Returns the "released" answer ("detected",
 * "operator", "none"), or NULL with err saying why ppnd could not be asked. */
static const char *release_in_ppnd(const struct ctl_globals *g, const char *name, char *buf, size_t len,
                                   struct ppn_error *err) {
        json_object *args = json_object_new_object(), *reply = NULL;
        const char *what;
        int r;

        if (!args) {
                ppn_error_set(err, -ENOMEM, "out of memory");
                return NULL;
        }
        json_object_object_add(args, "vm", json_object_new_string(name));
        r = control_client_call(g->socket, "release", args, &reply, err);
        json_object_put(args);
        if (r < 0)
                return NULL;
        what = json_member_string(reply, "released");
        snprintf(buf, len, "%s", what ? what : "none");
        json_object_put(reply);
        return buf;
}

int ctl_release(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ledger_vm vm = { 0 };
        struct ppn_error e = { 0 }, pe = { 0 };
        const char *name, *daemon;
        bool lease;
        char buf[16];
        int r;

        name = args->argv[1];
        r = ctl_open_vm(g, true, name, &l, &vm);
        if (r)
                return r;
        lease = vm.override_set && vm.override_expires > (int64_t) (now_realtime_usec() / 1000000);
        if (vm.override_set)            /* an expired one is tidied away too */
                r = ledger_override_clear(l, name, getuid(), &e);
        ledger_vm_done(&vm);
        if (r < 0)
                return ctl_fail(&e, r);
        if (lease)
                printf("%s: operator lease released; ppnd resumes control within a second\n", name);
        /* An override ppnd made when the balloon was moved outside it is not in the ledger. */
        daemon = release_in_ppnd(g, name, buf, sizeof(buf), &pe);
        if (daemon && strcmp(daemon, "detected") == 0)
                printf("%s: override ppnd made when the balloon was moved outside it released; control resumes\n",
                       name);
        if (lease || (daemon && strcmp(daemon, "detected") == 0))
                return CTL_OK;
        if (!daemon)
                fprintf(stderr, "ppnctl: %s has no operator lease in the ledger, and ppnd could not be asked about "
                        "an override of its own: %s\n", name, pe.msg);
        else
                fprintf(stderr, "ppnctl: nothing to release: %s has no override (no lease in force in the ledger, "
                        "none held by ppnd)\n", name);
        return CTL_ERR_FAILED;
}
