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

#define BALLOON_USAGE "balloon VM SIZE [--for DURATION]"
#define RELEASE_USAGE "release VM"
/* The lease length when --for is not given; as ppnd's [controller] override-default. */
#define LEASE_DEFAULT_USEC (UINT64_C(600) * 1000000)

static int check_range(const struct ledger_vm *vm, uint64_t size) {
        char a[32], b[32];

        if (size < vm->min_bytes) {
                fprintf(stderr, "ppnctl: refused: %s is below %s's minimum of %s (its reservation); "
                        "lower the minimum with 'ppnctl vm set %s min=...' first\n",
                        ctl_size((int64_t) size, a, sizeof(a)), vm->name, ctl_size((int64_t) vm->min_bytes, b, sizeof(b)),
                        vm->name);
                return CTL_FAILED;
        }
        if (size > vm->max_bytes) {
                fprintf(stderr, "ppnctl: refused: %s is above %s's maximum of %s (its boot size)\n",
                        ctl_size((int64_t) size, a, sizeof(a)), vm->name, ctl_size((int64_t) vm->max_bytes, b, sizeof(b)));
                return CTL_FAILED;
        }
        return CTL_OK;
}

/* A lease of 1 s to LEDGER_LEASE_MAX_SEC: a longer one would wrap the expiry. */
static bool lease_ok(const char *text, uint64_t *ret) {
        return parse_duration(text, ret) >= 0 && *ret >= 1000000 && *ret <= (uint64_t) LEDGER_LEASE_MAX_SEC * 1000000;
}

static int parse_balloon_args(int argc, char **argv, const char **ret_vm, uint64_t *ret_size, uint64_t *ret_for) {
        const char *pos[2] = { NULL, NULL };
        int n = 0;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--for") == 0 && i + 1 < argc) {
                        if (!lease_ok(argv[++i], ret_for))
                                return ctl_usage_error("balloon", BALLOON_USAGE, "'%s' is not a duration from 1s to 366d "
                                                       "(examples: 90s, 10m, 2h)", argv[i]);
                } else if (strncmp(argv[i], "--for=", 6) == 0) {
                        if (!lease_ok(argv[i] + 6, ret_for))
                                return ctl_usage_error("balloon", BALLOON_USAGE, "'%s' is not a duration from 1s to 366d",
                                                       argv[i] + 6);
                } else if (argv[i][0] == '-' || n == 2)
                        return ctl_usage_error("balloon", BALLOON_USAGE, "unexpected argument '%s'", argv[i]);
                else
                        pos[n++] = argv[i];
        }
        if (n != 2)
                return ctl_usage_error("balloon", BALLOON_USAGE, "need a VM and a size");
        if (parse_size(pos[1], ret_size) < 0 || *ret_size == 0)
                return ctl_usage_error("balloon", BALLOON_USAGE, "'%s' is not a size (examples: 512M, 2G)", pos[1]);
        if (*ret_size % MIB)
                return ctl_usage_error("balloon", BALLOON_USAGE, "'%s' is not a whole number of MiB (QEMU's balloon "
                                       "and the ledger count in MiB); e.g. 512M, 2G", pos[1]);
        *ret_vm = pos[0];
        return -1;
}

int ctl_balloon(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ledger_vm vm = { 0 };
        struct ppn_error e = { 0 };
        uint64_t size = 0, dur = LEASE_DEFAULT_USEC;
        int64_t expires;
        const char *name = NULL;
        char a[32];
        int r = parse_balloon_args(argc, argv, &name, &size, &dur);

        if (r >= 0)
                return r;
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_vm_get(l, name, &vm, &e);
        if (r < 0)
                return ctl_fail(&e, r);
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
                ppn_error_set(err, ENOMEM, "out of memory");
                return NULL;
        }
        json_object_object_add(args, "vm", json_object_new_string(name));
        r = ctl_client_call(g->socket, "release", args, &reply, err);
        json_object_put(args);
        if (r < 0)
                return NULL;
        what = json_member_string(reply, "released");
        snprintf(buf, len, "%s", what ? what : "none");
        json_object_put(reply);
        return buf;
}

int ctl_release(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ledger_vm vm = { 0 };
        struct ppn_error e = { 0 }, pe = { 0 };
        const char *name, *daemon;
        bool lease;
        char buf[16];
        int r;

        if (argc != 2 || argv[1][0] == '-')
                return ctl_usage_error("release", RELEASE_USAGE, "need exactly one VM name");
        name = argv[1];
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_vm_get(l, name, &vm, &e);
        if (r < 0)
                return ctl_fail(&e, r);
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
        return CTL_FAILED;
}
