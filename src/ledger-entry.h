/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The longest override lease: a year and a day. Longer is refused (ppnctl) or cut to it (ppnd
 * reading a ledger edited by hand): seconds times 10^6 must never overflow. */
#define LEDGER_LEASE_MAX_SEC (INT64_C(366) * 86400)

/*
 * The ledger's records as plain structs, and the pure code around them: defaults, validation,
 * KEY=VALUE assignment (one table shared by `ppnctl vm add|set`, `node set` and import), and
 * JSON conversion (shared by `--json`, export and import). No SQLite and no I/O here, so the
 * daemon's pure code and the unit tests use these without a database.
 *
 * Ranges and defaults (documented for operators; the tests pin them):
 *   name        [a-z0-9][a-z0-9_.-]{0,62}  (usable in file names, cgroup and unit names)
 *   min, max    whole MiB, 1 MiB ≤ min ≤ max ≤ 1 PiB; min ≥ the node's min floor
 *   shares      1–100000, default 1000     (relative memory weight under contention)
 *   cpu-weight  1–10000,  default 100      (cgroup v2 cpu.weight range and default)
 *   vcpus       1–255,    default 1
 *   qmp         absolute path, < 108 bytes (sun_path), optional
 *   base, vmem  with vmem on, the guest boots with `base` (whole 2 MiB blocks, at least the node's
 *               min floor, below max) and a virtio-mem region of max − base is plugged and
 *               unplugged in 2 MiB blocks; with vmem off (the default) base is unset and the
 *               guest boots with max, the balloon its only actuator
 *   libvirt     libvirt domain name: printable ASCII, no '/', <= 200 bytes, optional; not with qmp
 *   node: physical default MemTotal of /proc/meminfo; reserve default max(512 MiB, 5% of
 *   physical rounded down to whole MiB); min floor default 128 MiB — a guest ballooned to
 *   1 MiB panicked ("System is deadlocked on memory"), so the floor is not optional.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"
#include "vm.h"

#define LEDGER_NAME_MAX 63
#define LEDGER_UUID_LEN 36
#define LEDGER_SHARES_MIN 1
#define LEDGER_SHARES_MAX 100000
#define LEDGER_SHARES_DEFAULT 1000
#define LEDGER_CPU_WEIGHT_MIN 1
#define LEDGER_CPU_WEIGHT_MAX 10000
#define LEDGER_CPU_WEIGHT_DEFAULT 100
#define LEDGER_VCPUS_MAX 255
#define LEDGER_SIZE_MAX (UINT64_C(1) << 50)
#define LEDGER_RESERVE_MIN_DEFAULT (512 * MIB)
#define LEDGER_RESERVE_PERCENT_DEFAULT 5
#define LEDGER_MIN_FLOOR_DEFAULT (128 * MIB)
#define LEDGER_QMP_PATH_MAX 107
/* virtio-mem's block: QEMU 7.2's default for a memory-backend-ram region on x86 (2 MiB, the
 * transparent huge page size); the region and the boot memory are whole blocks. */
#define LEDGER_VMEM_BLOCK (2 * MIB)
/* libvirt refuses '/' in a domain name; ours are printable ASCII and at most this long. */
#define LEDGER_LIBVIRT_DOMAIN_MAX 200

struct ledger_vm {
        char name[LEDGER_NAME_MAX + 1];
        char uuid[LEDGER_UUID_LEN + 1];   /* RFC 4122 v4 text, set once at add */
        uint64_t min_bytes;               /* balloon minimum: the VM's reservation */
        uint64_t max_bytes;               /* the most the guest can have: boot size, or base + region */
        uint64_t base_bytes;              /* boot memory with vmem; 0 = unset (= max, no region) */
        bool vmem;                        /* a virtio-mem region of max − base */
        uint32_t shares;
        uint32_t cpu_weight;
        uint32_t vcpus;
        char *qmp;                        /* NULL when unset */
        char *libvirt;                    /* libvirt domain name (instead of qmp); NULL when unset */
        char **disks;                     /* NULL-terminated; NULL when none */
        char **qemu_args;                 /* extra QEMU arguments, NULL-terminated; NULL when none */
        bool override_set;                /* manual target lease */
        uint64_t override_target_bytes;
        int64_t override_expires;         /* unix seconds */
};

/* The node as stored: a 0 field means "not set, use the default". */
struct ledger_node_settings {
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t min_floor_bytes;
};

/* The node as effective, defaults resolved. */
struct ledger_node {
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t min_floor_bytes;
        bool physical_default;            /* physical came from meminfo */
        bool reserve_default;
        bool min_floor_default;
};

/* Defaults for a new entry (shares, cpu-weight, vcpus); everything else zero/NULL. */
void ledger_vm_init(struct ledger_vm *vm);
/* Frees the heap members and zeroes *vm. Accepts NULL. */
void ledger_vm_done(struct ledger_vm *vm);
/* Deep copy. 0 or -ENOMEM. */
int ledger_vm_copy(const struct ledger_vm *src, struct ledger_vm *ret);

bool ledger_name_valid(const char *name);

/*
 * Applies one setting to *vm (pure). Keys: min, max, base (a size, or "default" to unset),
 * vmem (on|off), shares, cpu-weight, vcpus, qmp,
 * disks (comma-separated list, replaces; empty clears), disk (appends one path),
 * qemu-args (space-separated list, replaces; empty clears), qemu-arg (appends one).
 * Returns 0, -ENOKEY for an unknown key, -EINVAL for a value that does not parse (err says
 * which and what is expected). Range checks across fields are ledger_vm_validate()'s job.
 */
int ledger_vm_assign(struct ledger_vm *vm, const char *key, const char *value, struct ppn_error *err);
/* Splits "key=value" and calls ledger_vm_assign; -EINVAL if there is no '='. */
int ledger_vm_assign_pair(struct ledger_vm *vm, const char *pair, struct ppn_error *err);
/* Same for node settings: physical, reserve, min-floor; value "default" unsets. */
int ledger_node_assign(struct ledger_node_settings *s, const char *key, const char *value, struct ppn_error *err);
int ledger_node_assign_pair(struct ledger_node_settings *s, const char *pair, struct ppn_error *err);

/* Checks one entry against the ranges above and the node's min floor. 0 or -EINVAL with
 * err naming the VM, the field, and what to do. */
int ledger_vm_validate(const struct ledger_vm *vm, const struct ledger_node *node, struct ppn_error *err);
/* Resolves defaults: physical from meminfo_total (bytes; 0 = unknown), reserve, floor.
 * -EINVAL if physical is unset and unknown, or reserve ≥ physical. */
int ledger_node_resolve(const struct ledger_node_settings *s, uint64_t meminfo_total,
                        struct ledger_node *ret, struct ppn_error *err);

/* Parses MemTotal out of /proc/meminfo text. 0 or -EINVAL. */
int ledger_parse_meminfo_total(const char *text, uint64_t *ret_bytes);

/* Value of one field as stored in the audit log ("2147483648", "a.img,b.img", NULL if unset).
 * Returns a malloc'd string or NULL; *ret_set false when the field has no value. */
char *ledger_vm_field_text(const struct ledger_vm *vm, const char *field);
/* Fields in audit order (NULL-terminated): uuid, min, max, shares, cpu-weight, vcpus, qmp,
 * disks, qemu-args, override, base, vmem. */
extern const char *const ledger_vm_fields[];

/* The boot memory QEMU gets (-m): base with vmem on, else max. And the virtio-mem region's size
 * (max − base with vmem on, else 0). */
uint64_t ledger_vm_boot_bytes(const struct ledger_vm *vm);
uint64_t ledger_vm_region_bytes(const struct ledger_vm *vm);
/* The machine an entry describes, as vm_build_argv() takes it: name, uuid, vCPUs, the operator's
 * QEMU options and the memory layout (boot memory; the virtio-mem region, plugged at start to the
 * VM's reservation: base plus what its minimum needs beyond base in whole blocks, ppnd plugs more
 * when the guest needs it). `ppnctl start` and a live move's destination start the same machine
 * from it; the caller adds paths, disks and device options. The strings stay vm's. */
void ledger_vm_spec(const struct ledger_vm *vm, struct vm_spec *ret);

/* Writes an RFC 4122 version 4 uuid (36 chars + NUL) from 16 random bytes. */
void ledger_uuid_format(const uint8_t random[16], char ret[LEDGER_UUID_LEN + 1]);
bool ledger_uuid_valid(const char *s);

/* JSON (json-c). Sizes in bytes; keys: name, uuid, min_bytes, max_bytes, shares, cpu_weight,
 * vcpus, qmp, disks, qemu_args, override {target_bytes, expires} or null, base_bytes (null when
 * unset), vmem (boolean). An entry without base_bytes/vmem (an older export) has vmem off. */
struct json_object;
struct json_object *ledger_vm_to_json(const struct ledger_vm *vm);
/* Fills *ret from an object (ledger_vm_init defaults for absent keys; name required).
 * -EINVAL with err naming the key on a wrong type or unknown key. Caller validates. */
int ledger_vm_from_json(struct json_object *o, struct ledger_vm *ret, struct ppn_error *err);
/* Node: physical_bytes, reserve_bytes, min_floor_bytes (effective) and *_default booleans. */
struct json_object *ledger_node_to_json(const struct ledger_node *node);
/* Stored settings: the same keys, each a number or null (= default). */
struct json_object *ledger_node_settings_to_json(const struct ledger_node_settings *s);
int ledger_node_settings_from_json(struct json_object *o, struct ledger_node_settings *ret,
                                   struct ppn_error *err);
