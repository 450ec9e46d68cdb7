/* SPDX-License-Identifier: Apache-2.0 */
#include "ledger-entry.h"

#include <ctype.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <string.h>

#include "jsonutil.h"
#include "pool.h"

const char *const ledger_vm_fields[] = {
        "uuid", "min", "max", "shares", "cpu-weight", "vcpus", "qmp", "disks", "qemu-args", "override", "base", "vmem",
        "libvirt", NULL,
};

/* ---- string lists (NULL-terminated) ---- */

static size_t strv_len(char **l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        return n;
}

static char **strv_free(char **l) {
        for (size_t i = 0; l && l[i]; i++)
                free(l[i]);
        free(l);
        return NULL;
}

static int strv_push(char ***l, const char *s) {
        size_t n = strv_len(*l);
        char *copy = strdup(s);
        char **nl = copy ? realloc(*l, (n + 2) * sizeof(char *)) : NULL;
        if (!nl) {
                free(copy);
                return -ENOMEM;
        }
        nl[n] = copy;
        nl[n + 1] = NULL;
        *l = nl;
        return 0;
}

/* Splits on any of `seps`, dropping empty pieces. */
static int strv_split(const char *s, const char *seps, char ***ret) {
        _cleanup_free_ char *buf = strdup(s);
        char **l = NULL, *save = NULL;

        if (!buf)
                return -ENOMEM;
        for (char *t = strtok_r(buf, seps, &save); t; t = strtok_r(NULL, seps, &save))
                if (strv_push(&l, t) < 0) {
                        strv_free(l);
                        return -ENOMEM;
                }
        *ret = l;
        return 0;
}

static char *strv_join(char **l, const char *sep) {
        size_t len = 1;
        for (size_t i = 0; l && l[i]; i++)
                len += strlen(l[i]) + strlen(sep);
        char *s = malloc(len);
        if (!s)
                return NULL;
        s[0] = '\0';
        for (size_t i = 0; l && l[i]; i++) {
                if (i)
                        strcat(s, sep);
                strcat(s, l[i]);
        }
        return s;
}

/* ---- lifecycle ---- */

void ledger_vm_init(struct ledger_vm *vm) {
        *vm = (struct ledger_vm) {
                .shares = LEDGER_SHARES_DEFAULT,
                .cpu_weight = LEDGER_CPU_WEIGHT_DEFAULT,
                .vcpus = 1,
        };
}

void ledger_vm_done(struct ledger_vm *vm) {
        if (!vm)
                return;
        free(vm->qmp);
        free(vm->libvirt);
        strv_free(vm->disks);
        strv_free(vm->qemu_args);
        *vm = (struct ledger_vm) {};
}

static int strv_copy(char **src, char ***ret) {
        char **l = NULL;
        for (size_t i = 0; src && src[i]; i++)
                if (strv_push(&l, src[i]) < 0) {
                        strv_free(l);
                        return -ENOMEM;
                }
        *ret = l;
        return 0;
}

int ledger_vm_copy(const struct ledger_vm *src, struct ledger_vm *ret) {
        struct ledger_vm c = *src;
        c.qmp = c.libvirt = NULL;
        c.disks = c.qemu_args = NULL;
        if ((src->qmp && !(c.qmp = strdup(src->qmp))) || (src->libvirt && !(c.libvirt = strdup(src->libvirt))) || strv_copy(src->disks, &c.disks) < 0 ||
            strv_copy(src->qemu_args, &c.qemu_args) < 0) {
                ledger_vm_done(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

bool ledger_name_valid(const char *name) {
        size_t n = strlen(name);
        if (n == 0 || n > LEDGER_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                          (i > 0 && (c == '_' || c == '.' || c == '-'));
                if (!ok)
                        return false;
        }
        return true;
}

/* ---- KEY=VALUE assignment: one table ---- */

static int parse_vm_size(const char *key, const char *v, uint64_t *ret, struct ppn_error *err) {
        int r = parse_size(v, ret);
        if (r < 0)
                return ppn_error_set(err, -EINVAL, "%s '%s' is not a size; use bytes or a number with "
                                     "K, M, G or T (e.g. 512M, 2G, 1048576K)", key, v);
        return 0;
}

/* Integer fields: one table for parsing (assign, import) and validation. */
static const struct int_field {
        const char *key;
        size_t offset;
        uint32_t lo, hi, dflt;
} int_fields[] = {
        { "shares", offsetof(struct ledger_vm, shares), LEDGER_SHARES_MIN, LEDGER_SHARES_MAX, LEDGER_SHARES_DEFAULT },
        { "cpu-weight", offsetof(struct ledger_vm, cpu_weight), LEDGER_CPU_WEIGHT_MIN, LEDGER_CPU_WEIGHT_MAX,
          LEDGER_CPU_WEIGHT_DEFAULT },
        { "vcpus", offsetof(struct ledger_vm, vcpus), 1, LEDGER_VCPUS_MAX, 1 },
};

static uint32_t *int_field_ptr(struct ledger_vm *vm, const struct int_field *f) {
        return (uint32_t *) ((char *) vm + f->offset);
}

static int parse_ranged(const struct int_field *f, struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        uint64_t n;
        if (parse_u64(v, &n) < 0 || n < f->lo || n > f->hi)
                return ppn_error_set(err, -EINVAL, "%s '%s' is not an integer in %" PRIu32 "–%" PRIu32 " (default %" PRIu32 ")",
                                     f->key, v, f->lo, f->hi, f->dflt);
        *int_field_ptr(vm, f) = (uint32_t) n;
        return 0;
}

static int validate_ints(const struct ledger_vm *vm, struct ppn_error *err) {
        for (size_t i = 0; i < ELEMENTSOF(int_fields); i++) {
                const struct int_field *f = &int_fields[i];
                uint32_t v = *int_field_ptr((struct ledger_vm *) vm, f);
                if (v < f->lo || v > f->hi)
                        return ppn_error_set(err, -EINVAL, "vm '%s': %s %" PRIu32 " is out of range %" PRIu32 "–%" PRIu32
                                             " (default %" PRIu32 ")", vm->name, f->key, v, f->lo, f->hi, f->dflt);
        }
        return 0;
}

static int set_min(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return parse_vm_size("min", v, &vm->min_bytes, err);
}
static int set_max(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return parse_vm_size("max", v, &vm->max_bytes, err);
}
static int set_base(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        if (strcmp(v, "default") == 0) {
                vm->base_bytes = 0;
                return 0;
        }
        return parse_vm_size("base", v, &vm->base_bytes, err);
}
static int set_vmem(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
                return ppn_error_set(err, -EINVAL, "vmem '%s' is neither on nor off", v);
        vm->vmem = strcmp(v, "on") == 0;
        return 0;
}
static int set_shares(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return parse_ranged(&int_fields[0], vm, v, err);
}
static int set_cpu_weight(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return parse_ranged(&int_fields[1], vm, v, err);
}
static int set_vcpus(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return parse_ranged(&int_fields[2], vm, v, err);
}

/* An optional text field: "" clears it. */
static int set_text(char **field, const char *v) {
        char *copy = NULL;
        if (*v && !(copy = strdup(v)))
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

static int set_qmp(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return set_text(&vm->qmp, v);
}

static int set_libvirt(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return set_text(&vm->libvirt, v);
}

static int replace_list(char ***field, const char *v, const char *seps) {
        char **l = NULL;
        int r = strv_split(v, seps, &l);
        if (r < 0)
                return r;
        strv_free(*field);
        *field = l;
        return 0;
}

static int set_disks(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return replace_list(&vm->disks, v, ",");
}
static int add_disk(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        if (!*v)
                return ppn_error_set(err, -EINVAL, "disk: empty path; give the disk image's path");
        return strv_push(&vm->disks, v);
}
static int set_qemu_args(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return replace_list(&vm->qemu_args, v, " \t");
}
static int add_qemu_arg(struct ledger_vm *vm, const char *v, struct ppn_error *err) {
        return strv_push(&vm->qemu_args, v);
}

static const struct {
        const char *key;
        int (*assign)(struct ledger_vm *vm, const char *value, struct ppn_error *err);
} vm_keys[] = {
        { "base", set_base },
        { "cpu-weight", set_cpu_weight },
        { "disk", add_disk },
        { "disks", set_disks },
        { "libvirt", set_libvirt },
        { "max", set_max },
        { "min", set_min },
        { "qemu-arg", add_qemu_arg },
        { "qemu-args", set_qemu_args },
        { "qmp", set_qmp },
        { "shares", set_shares },
        { "vcpus", set_vcpus },
        { "vmem", set_vmem },
};

int ledger_vm_assign(struct ledger_vm *vm, const char *key, const char *value, struct ppn_error *err) {
        for (size_t i = 0; i < ELEMENTSOF(vm_keys); i++)
                if (strcmp(key, vm_keys[i].key) == 0)
                        return vm_keys[i].assign(vm, value, err);
        return ppn_error_set(err, -ENOKEY, "unknown key '%s'; keys are min, max, base, vmem, shares, "
                             "cpu-weight, vcpus, qmp, libvirt, disks, disk, qemu-args, qemu-arg", key);
}

static int split_pair(const char *pair, char *key, size_t keylen, const char **ret_value,
                      struct ppn_error *err) {
        const char *eq = strchr(pair, '=');
        if (!eq || eq == pair || (size_t) (eq - pair) >= keylen)
                return ppn_error_set(err, -EINVAL, "'%s' is not KEY=VALUE (e.g. min=1G)", pair);
        memcpy(key, pair, (size_t) (eq - pair));
        key[eq - pair] = '\0';
        *ret_value = eq + 1;
        return 0;
}

int ledger_vm_assign_pair(struct ledger_vm *vm, const char *pair, struct ppn_error *err) {
        char key[32];
        const char *value;
        int r = split_pair(pair, key, sizeof(key), &value, err);
        return r < 0 ? r : ledger_vm_assign(vm, key, value, err);
}

int ledger_node_assign(struct ledger_node_settings *s, const char *key, const char *value,
                       struct ppn_error *err) {
        uint64_t *field = strcmp(key, "physical") == 0  ? &s->physical_bytes
                          : strcmp(key, "reserve") == 0   ? &s->reserve_bytes
                          : strcmp(key, "min-floor") == 0 ? &s->min_floor_bytes : NULL;
        uint64_t v;

        if (!field)
                return ppn_error_set(err, -ENOKEY, "unknown key '%s'; keys are physical, reserve, min-floor", key);
        if (strcmp(value, "default") == 0) {
                *field = 0;
                return 0;
        }
        if (parse_size(value, &v) < 0 || v == 0 || v > LEDGER_SIZE_MAX)
                return ppn_error_set(err, -EINVAL, "%s '%s' is not a size between 1 byte and 1 PiB; use bytes "
                                     "or a number with K, M, G or T (e.g. 16G), or 'default'", key, value);
        *field = v;
        return 0;
}

int ledger_node_assign_pair(struct ledger_node_settings *s, const char *pair, struct ppn_error *err) {
        char key[32];
        const char *value;
        int r = split_pair(pair, key, sizeof(key), &value, err);
        return r < 0 ? r : ledger_node_assign(s, key, value, err);
}

/* ---- validation ---- */

static int validate_sizes(const struct ledger_vm *vm, const struct ledger_node *node, struct ppn_error *err) {
        char a[POOL_MIB_MAX], b[POOL_MIB_MAX];

        if (vm->max_bytes == 0 || vm->min_bytes == 0)
                return ppn_error_set(err, -EINVAL, "vm '%s': %s is not set; give it with --%s SIZE (e.g. 1G)",
                                     vm->name, vm->min_bytes ? "max" : "min", vm->min_bytes ? "max" : "min");
        if (vm->min_bytes % MIB || vm->max_bytes % MIB || vm->max_bytes > LEDGER_SIZE_MAX)
                return ppn_error_set(err, -EINVAL, "vm '%s': min and max must be whole MiB and at most 1 PiB "
                                     "(QEMU sizes guest RAM in MiB); e.g. 512M, 2G", vm->name);
        if (vm->min_bytes > vm->max_bytes)
                return ppn_error_set(err, -EINVAL, "vm '%s': min %s is above max %s; lower min or raise max",
                                     vm->name, pool_format_mib((int64_t) vm->min_bytes, a, sizeof(a)),
                                     pool_format_mib((int64_t) vm->max_bytes, b, sizeof(b)));
        if (node && vm->min_bytes < node->min_floor_bytes)
                return ppn_error_set(err, -EINVAL, "vm '%s': min %s is below the node's safe floor %s (a guest "
                                     "ballooned near zero panics); raise min, or lower the floor with "
                                     "'ppnctl node set min-floor=SIZE'",
                                     vm->name, pool_format_mib((int64_t) vm->min_bytes, a, sizeof(a)),
                                     pool_format_mib((int64_t) node->min_floor_bytes, b, sizeof(b)));
        return 0;
}

uint64_t ledger_vm_boot_bytes(const struct ledger_vm *vm) {
        return vm->vmem && vm->base_bytes ? vm->base_bytes : vm->max_bytes;
}

uint64_t ledger_vm_region_bytes(const struct ledger_vm *vm) {
        return vm->vmem && vm->base_bytes && vm->base_bytes < vm->max_bytes ? vm->max_bytes - vm->base_bytes : 0;
}

static uint64_t vmem_start_bytes(const struct ledger_vm *vm) {
        uint64_t region = ledger_vm_region_bytes(vm), base = ledger_vm_boot_bytes(vm), want;
        if (!region || vm->min_bytes <= base)
                return 0;
        want = (vm->min_bytes - base + LEDGER_VMEM_BLOCK - 1) / LEDGER_VMEM_BLOCK * LEDGER_VMEM_BLOCK;
        return want < region ? want : region;
}

void ledger_vm_spec(const struct ledger_vm *vm, struct vm_spec *ret) {
        *ret = (struct vm_spec) {
                .name = vm->name, .uuid = vm->uuid, .vcpus = vm->vcpus,
                .mem_bytes = ledger_vm_boot_bytes(vm), .vmem_bytes = ledger_vm_region_bytes(vm),
                .vmem_requested_bytes = vmem_start_bytes(vm), .extra = (const char *const *) vm->qemu_args,
        };
}

/* Boot memory and the virtio-mem region. The boot memory must carry the guest kernel on its own
 * (hot-plugged memory is onlined movable, unusable for kernel allocations), hence the floor. */
static int validate_layout(const struct ledger_vm *vm, const struct ledger_node *node, struct ppn_error *err) {
        uint64_t floor = node ? node->min_floor_bytes : LEDGER_MIN_FLOOR_DEFAULT;
        char a[POOL_MIB_MAX], b[POOL_MIB_MAX];

        if (!vm->vmem) {
                if (vm->base_bytes && vm->base_bytes != vm->max_bytes)
                        return ppn_error_set(err, -EINVAL, "vm '%s': base %s applies only with a virtio-mem region; "
                                             "give vmem=on, or unset it with base=default", vm->name,
                                             pool_format_mib((int64_t) vm->base_bytes, a, sizeof(a)));
                return 0;
        }
        if (!vm->base_bytes)
                return ppn_error_set(err, -EINVAL, "vm '%s': vmem=on needs the boot memory: give base=SIZE "
                                     "(e.g. base=512M; the region is max − base)", vm->name);
        if (vm->base_bytes >= vm->max_bytes)
                return ppn_error_set(err, -EINVAL, "vm '%s': base %s leaves no virtio-mem region below max %s; "
                                     "lower base or raise max", vm->name,
                                     pool_format_mib((int64_t) vm->base_bytes, a, sizeof(a)),
                                     pool_format_mib((int64_t) vm->max_bytes, b, sizeof(b)));
        if (vm->base_bytes % LEDGER_VMEM_BLOCK || vm->max_bytes % LEDGER_VMEM_BLOCK)
                return ppn_error_set(err, -EINVAL, "vm '%s': with vmem=on, base and max must be whole 2 MiB "
                                     "blocks (virtio-mem's block size), e.g. base=512M max=4G", vm->name);
        if (vm->base_bytes < floor)
                return ppn_error_set(err, -EINVAL, "vm '%s': base %s is below the node's safe floor %s: the "
                                     "boot memory alone must carry the guest kernel (plugged memory is "
                                     "movable); raise base", vm->name,
                                     pool_format_mib((int64_t) vm->base_bytes, a, sizeof(a)),
                                     pool_format_mib((int64_t) floor, b, sizeof(b)));
        return 0;
}

/* A domain name as libvirt accepts it (no '/'), printable and bounded so messages stay sane. */
static int validate_libvirt(const struct ledger_vm *vm, struct ppn_error *err) {
        const char *d = vm->libvirt;

        if (!d)
                return 0;
        if (vm->qmp)
                return ppn_error_set(err, -EINVAL, "vm '%s': both qmp '%s' and libvirt domain '%s'; a VM is reached "
                                     "one way: clear one (qmp= or libvirt=)", vm->name, vm->qmp, d);
        if (strlen(d) > LEDGER_LIBVIRT_DOMAIN_MAX)
                return ppn_error_set(err, -EINVAL, "vm '%s': libvirt domain name longer than %d bytes", vm->name,
                                     LEDGER_LIBVIRT_DOMAIN_MAX);
        for (const char *p = d; *p; p++)
                if (*p == '/' || *p <= ' ' || *p > '~')
                        return ppn_error_set(err, -EINVAL, "vm '%s': libvirt domain name '%s' has a '/', a space or a "
                                             "character outside printable ASCII; give the name `virsh list` shows",
                                             vm->name, d);
        return 0;
}

static int validate_override(const struct ledger_vm *vm, struct ppn_error *err) {
        char t[POOL_MIB_MAX], a[POOL_MIB_MAX], b[POOL_MIB_MAX];
        if (!vm->override_set ||
            (vm->override_target_bytes >= vm->min_bytes && vm->override_target_bytes <= vm->max_bytes))
                return 0;
        return ppn_error_set(err, -EINVAL, "vm '%s': override target %s is outside min %s – max %s; "
                             "choose a target in that range or clear the override first", vm->name,
                             pool_format_mib((int64_t) vm->override_target_bytes, t, sizeof(t)),
                             pool_format_mib((int64_t) vm->min_bytes, a, sizeof(a)),
                             pool_format_mib((int64_t) vm->max_bytes, b, sizeof(b)));
}

int ledger_vm_validate(const struct ledger_vm *vm, const struct ledger_node *node, struct ppn_error *err) {
        int r;

        if (!ledger_name_valid(vm->name))
                return ppn_error_set(err, -EINVAL, "vm name '%s' is not valid: use 1–63 characters from "
                                     "a-z 0-9 _ . - starting with a letter or digit (e.g. web-1)", vm->name);
        if (vm->uuid[0] && !ledger_uuid_valid(vm->uuid))
                return ppn_error_set(err, -EINVAL, "vm '%s': uuid '%s' is not RFC 4122 text "
                                     "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower-case hex)", vm->name, vm->uuid);
        r = validate_sizes(vm, node, err);
        if (r < 0)
                return r;
        r = validate_ints(vm, err);
        if (r == 0)
                r = validate_layout(vm, node, err);
        if (r < 0)
                return r;
        if (vm->qmp && (vm->qmp[0] != '/' || strlen(vm->qmp) > LEDGER_QMP_PATH_MAX))
                return ppn_error_set(err, -EINVAL, "vm '%s': qmp '%s' must be an absolute path of at most "
                                     "%d bytes (a Unix socket address)", vm->name, vm->qmp, LEDGER_QMP_PATH_MAX);
        r = validate_libvirt(vm, err);
        if (r < 0)
                return r;
        for (size_t i = 0; vm->disks && vm->disks[i]; i++)
                if (vm->disks[i][0] != '/')
                        return ppn_error_set(err, -EINVAL, "vm '%s': disk '%s' must be an absolute path",
                                             vm->name, vm->disks[i]);
        return validate_override(vm, err);
}

int ledger_node_resolve(const struct ledger_node_settings *s, uint64_t meminfo_total,
                        struct ledger_node *ret, struct ppn_error *err) {
        struct ledger_node n = {
                .physical_bytes = s->physical_bytes ? s->physical_bytes : meminfo_total,
                .physical_default = s->physical_bytes == 0,
                .reserve_default = s->reserve_bytes == 0,
                .min_floor_bytes = s->min_floor_bytes ? s->min_floor_bytes : LEDGER_MIN_FLOOR_DEFAULT,
                .min_floor_default = s->min_floor_bytes == 0,
        };
        char a[POOL_MIB_MAX], b[POOL_MIB_MAX];

        if (n.physical_bytes == 0)
                return ppn_error_set(err, -EINVAL, "physical RAM is not set and MemTotal could not be read; "
                                     "set it with 'ppnctl node set physical=SIZE'");
        /* 5% of physical, rounded down to whole MiB so messages and figures stay in whole MiB */
        n.reserve_bytes = s->reserve_bytes ? s->reserve_bytes
                                           : n.physical_bytes / 100 * LEDGER_RESERVE_PERCENT_DEFAULT / MIB * MIB;
        if (!s->reserve_bytes && n.reserve_bytes < LEDGER_RESERVE_MIN_DEFAULT)
                n.reserve_bytes = LEDGER_RESERVE_MIN_DEFAULT;
        if (n.reserve_bytes >= n.physical_bytes)
                return ppn_error_set(err, -EINVAL, "reserve %s is not below physical %s; lower reserve or "
                                     "raise physical with 'ppnctl node set'",
                                     pool_format_mib((int64_t) n.reserve_bytes, a, sizeof(a)),
                                     pool_format_mib((int64_t) n.physical_bytes, b, sizeof(b)));
        *ret = n;
        return 0;
}

int ledger_parse_meminfo_total(const char *text, uint64_t *ret_bytes) {
        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                unsigned long long kib;
                if (strncmp(p, "MemTotal:", 9) == 0 && sscanf(p + 9, " %llu kB", &kib) == 1 && kib > 0 &&
                    kib <= LEDGER_SIZE_MAX / 1024) {
                        *ret_bytes = (uint64_t) kib * 1024;
                        return 0;
                }
        }
        return -EINVAL;
}

/* ---- field text for the audit log ---- */

char *ledger_vm_field_text(const struct ledger_vm *vm, const char *field) {
        char buf[64];
        if (strcmp(field, "uuid") == 0)
                return vm->uuid[0] ? strdup(vm->uuid) : NULL;
        if (strcmp(field, "qmp") == 0)
                return vm->qmp ? strdup(vm->qmp) : NULL;
        if (strcmp(field, "libvirt") == 0)
                return vm->libvirt ? strdup(vm->libvirt) : NULL;
        if (strcmp(field, "disks") == 0)
                return vm->disks ? strv_join(vm->disks, ",") : NULL;
        if (strcmp(field, "qemu-args") == 0)
                return vm->qemu_args ? strv_join(vm->qemu_args, " ") : NULL;
        if (strcmp(field, "override") == 0) {
                if (!vm->override_set)
                        return NULL;
                snprintf(buf, sizeof(buf), "%" PRIu64 " until %" PRId64, vm->override_target_bytes,
                         vm->override_expires);
        } else if (strcmp(field, "min") == 0)
                snprintf(buf, sizeof(buf), "%" PRIu64, vm->min_bytes);
        else if (strcmp(field, "max") == 0)
                snprintf(buf, sizeof(buf), "%" PRIu64, vm->max_bytes);
        else if (strcmp(field, "shares") == 0)
                snprintf(buf, sizeof(buf), "%" PRIu32, vm->shares);
        else if (strcmp(field, "cpu-weight") == 0)
                snprintf(buf, sizeof(buf), "%" PRIu32, vm->cpu_weight);
        else if (strcmp(field, "vcpus") == 0)
                snprintf(buf, sizeof(buf), "%" PRIu32, vm->vcpus);
        else if (strcmp(field, "base") == 0) {
                if (!vm->base_bytes)
                        return NULL;
                snprintf(buf, sizeof(buf), "%" PRIu64, vm->base_bytes);
        } else if (strcmp(field, "vmem") == 0) {
                if (!vm->vmem)   /* off is the default: unset, so entries without a region audit as before */
                        return NULL;
                snprintf(buf, sizeof(buf), "on");
        }
        else
                return NULL;
        return strdup(buf);
}

/* ---- uuid ---- */

void ledger_uuid_format(const uint8_t random[16], char ret[LEDGER_UUID_LEN + 1]) {
        uint8_t b[16];
        memcpy(b, random, 16);
        b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);  /* version 4 */
        b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);  /* variant 10 */
        snprintf(ret, LEDGER_UUID_LEN + 1,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                 b[14], b[15]);
}

bool ledger_uuid_valid(const char *s) {
        if (strlen(s) != LEDGER_UUID_LEN)
                return false;
        for (size_t i = 0; i < LEDGER_UUID_LEN; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? s[i] != '-' : !isxdigit((unsigned char) s[i]) || isupper((unsigned char) s[i]))
                        return false;
        }
        return true;
}

/* ---- JSON ---- */

static struct json_object *strv_to_json(char **l) {
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; l && l[i]; i++)
                json_object_array_add(a, json_object_new_string(l[i]));
        return a;
}

struct json_object *ledger_vm_to_json(const struct ledger_vm *vm) {
        struct json_object *o = json_object_new_object(), *ov = NULL;

        json_object_object_add(o, "name", json_object_new_string(vm->name));
        json_object_object_add(o, "uuid", json_object_new_string(vm->uuid));
        json_object_object_add(o, "min_bytes", json_object_new_int64((int64_t) vm->min_bytes));
        json_object_object_add(o, "max_bytes", json_object_new_int64((int64_t) vm->max_bytes));
        json_object_object_add(o, "shares", json_object_new_int64(vm->shares));
        json_object_object_add(o, "cpu_weight", json_object_new_int64(vm->cpu_weight));
        json_object_object_add(o, "vcpus", json_object_new_int64(vm->vcpus));
        json_object_object_add(o, "qmp", vm->qmp ? json_object_new_string(vm->qmp) : NULL);
        json_object_object_add(o, "libvirt", vm->libvirt ? json_object_new_string(vm->libvirt) : NULL);
        json_object_object_add(o, "disks", strv_to_json(vm->disks));
        json_object_object_add(o, "qemu_args", strv_to_json(vm->qemu_args));
        if (vm->override_set) {
                ov = json_object_new_object();
                json_object_object_add(ov, "target_bytes", json_object_new_int64((int64_t) vm->override_target_bytes));
                json_object_object_add(ov, "expires", json_object_new_int64(vm->override_expires));
        }
        json_object_object_add(o, "override", ov);
        json_object_object_add(o, "base_bytes", vm->base_bytes ? json_object_new_int64((int64_t) vm->base_bytes) : NULL);
        json_object_object_add(o, "vmem", json_object_new_boolean(vm->vmem));
        return o;
}

static int json_u64(struct json_object *v, const char *key, uint64_t max, uint64_t *ret, struct ppn_error *err) {
        int64_t n;
        if (!json_object_is_type(v, json_type_int) || (n = json_object_get_int64(v)) < 0 || (uint64_t) n > max)
                return ppn_error_set(err, -EINVAL, "%s: expected an integer in 0–%" PRIu64, key, max);
        *ret = (uint64_t) n;
        return 0;
}

static int json_u32(struct json_object *v, const char *key, uint32_t *ret, struct ppn_error *err) {
        uint64_t n = 0;
        int r = json_u64(v, key, UINT32_MAX, &n, err);
        if (r == 0)
                *ret = (uint32_t) n;
        return r;
}

static int json_str(struct json_object *v, const char *key, size_t max, const char **ret, struct ppn_error *err) {
        if (!json_object_is_type(v, json_type_string) || strlen(json_object_get_string(v)) > max)
                return ppn_error_set(err, -EINVAL, "%s: expected a string of at most %zu bytes", key, max);
        *ret = json_object_get_string(v);
        return 0;
}

static int json_strv(struct json_object *v, const char *key, char ***ret, struct ppn_error *err) {
        char **l = NULL;
        if (json_object_is_type(v, json_type_null)) {
                *ret = NULL;
                return 0;
        }
        if (!json_object_is_type(v, json_type_array))
                return ppn_error_set(err, -EINVAL, "%s: expected an array of strings", key);
        for (size_t i = 0; i < json_object_array_length(v); i++) {
                struct json_object *e = json_object_array_get_idx(v, i);
                if (!json_object_is_type(e, json_type_string) || strv_push(&l, json_object_get_string(e)) < 0) {
                        strv_free(l);
                        return ppn_error_set(err, -EINVAL, "%s[%zu]: expected a string", key, i);
                }
        }
        strv_free(*ret);
        *ret = l;
        return 0;
}

static int json_override(struct json_object *v, struct ledger_vm *vm, struct ppn_error *err) {
        struct json_object *t, *e;
        if (json_object_is_type(v, json_type_null)) {
                vm->override_set = false;
                return 0;
        }
        if (!json_object_is_type(v, json_type_object) || !json_object_object_get_ex(v, "target_bytes", &t) ||
            !json_object_object_get_ex(v, "expires", &e) || !json_object_is_type(e, json_type_int) ||
            json_u64(t, "override.target_bytes", LEDGER_SIZE_MAX, &vm->override_target_bytes, NULL) < 0)
                return ppn_error_set(err, -EINVAL, "override: expected null or {\"target_bytes\": N, \"expires\": UNIX_SECONDS}");
        vm->override_expires = json_object_get_int64(e);
        vm->override_set = true;
        return 0;
}

static int vm_json_field(struct ledger_vm *vm, const char *key, struct json_object *v, struct ppn_error *err) {
        const char *s;
        int r;

        if (strcmp(key, "name") == 0 || strcmp(key, "uuid") == 0) {
                bool name = key[0] == 'n';
                r = json_str(v, key, name ? LEDGER_NAME_MAX : LEDGER_UUID_LEN, &s, err);
                if (r == 0)
                        strcpy(name ? vm->name : vm->uuid, s);
                return r;
        }
        if (strcmp(key, "min_bytes") == 0)
                return json_u64(v, key, LEDGER_SIZE_MAX, &vm->min_bytes, err);
        if (strcmp(key, "max_bytes") == 0)
                return json_u64(v, key, LEDGER_SIZE_MAX, &vm->max_bytes, err);
        if (strcmp(key, "shares") == 0)
                return json_u32(v, key, &vm->shares, err);
        if (strcmp(key, "cpu_weight") == 0)
                return json_u32(v, key, &vm->cpu_weight, err);
        if (strcmp(key, "vcpus") == 0)
                return json_u32(v, key, &vm->vcpus, err);
        if (strcmp(key, "qmp") == 0) {
                if (json_object_is_type(v, json_type_null))
                        return set_qmp(vm, "", err);
                r = json_str(v, key, 4096, &s, err);
                return r < 0 ? r : set_qmp(vm, s, err);
        }
        if (strcmp(key, "libvirt") == 0) {
                if (json_object_is_type(v, json_type_null))
                        return set_libvirt(vm, "", err);
                r = json_str(v, key, LEDGER_LIBVIRT_DOMAIN_MAX, &s, err);
                return r < 0 ? r : set_libvirt(vm, s, err);
        }
        if (strcmp(key, "disks") == 0)
                return json_strv(v, key, &vm->disks, err);
        if (strcmp(key, "qemu_args") == 0)
                return json_strv(v, key, &vm->qemu_args, err);
        if (strcmp(key, "override") == 0)
                return json_override(v, vm, err);
        if (strcmp(key, "base_bytes") == 0) {
                vm->base_bytes = 0;
                return json_object_is_type(v, json_type_null) ? 0 : json_u64(v, key, LEDGER_SIZE_MAX, &vm->base_bytes, err);
        }
        if (strcmp(key, "vmem") == 0) {
                if (!json_object_is_type(v, json_type_boolean))
                        return ppn_error_set(err, -EINVAL, "vmem: expected true or false");
                vm->vmem = json_object_get_boolean(v);
                return 0;
        }
        return ppn_error_set(err, -EINVAL, "%s: unknown key (known: name, uuid, min_bytes, max_bytes, "
                             "shares, cpu_weight, vcpus, qmp, libvirt, disks, qemu_args, override, base_bytes, vmem)", key);
}

int ledger_vm_from_json(struct json_object *o, struct ledger_vm *ret, struct ppn_error *err) {
        struct ledger_vm vm;
        int r = 0;

        if (!json_object_is_type(o, json_type_object))
                return ppn_error_set(err, -EINVAL, "expected an object");
        ledger_vm_init(&vm);
        json_object_object_foreach(o, key, v) {
                r = vm_json_field(&vm, key, v, err);
                if (r < 0)
                        break;
        }
        if (r == 0 && !vm.name[0])
                r = ppn_error_set(err, -EINVAL, "name: missing");
        if (r < 0) {
                ledger_vm_done(&vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* The effective node settings (`ppnctl node show --json`). */
static const struct json_field node_fields[] = {
        JSON_FIELD(struct ledger_node, physical_bytes, "physical_bytes", JSON_KIND_U64),
        JSON_FIELD(struct ledger_node, physical_default, "physical_default", JSON_KIND_BOOL),
        JSON_FIELD(struct ledger_node, reserve_bytes, "reserve_bytes", JSON_KIND_U64),
        JSON_FIELD(struct ledger_node, reserve_default, "reserve_default", JSON_KIND_BOOL),
        JSON_FIELD(struct ledger_node, min_floor_bytes, "min_floor_bytes", JSON_KIND_U64),
        JSON_FIELD(struct ledger_node, min_floor_default, "min_floor_default", JSON_KIND_BOOL),
};

/* The stored node settings (the ledger's "node" document): null = default. */
static const struct json_field node_settings_fields[] = {
        JSON_FIELD(struct ledger_node_settings, physical_bytes, "physical_bytes", JSON_KIND_SETTING),
        JSON_FIELD(struct ledger_node_settings, reserve_bytes, "reserve_bytes", JSON_KIND_SETTING),
        JSON_FIELD(struct ledger_node_settings, min_floor_bytes, "min_floor_bytes", JSON_KIND_SETTING),
};

struct json_object *ledger_node_to_json(const struct ledger_node *n) {
        return json_from_fields(node_fields, ELEMENTSOF(node_fields), n);
}

struct json_object *ledger_node_settings_to_json(const struct ledger_node_settings *s) {
        return json_from_fields(node_settings_fields, ELEMENTSOF(node_settings_fields), s);
}

/* Members may be missing (default); each present one must be in the table, and in range. */
int ledger_node_settings_from_json(struct json_object *o, struct ledger_node_settings *ret,
                                   struct ppn_error *err) {
        struct ledger_node_settings s = {};
        if (!json_object_is_type(o, json_type_object))
                return ppn_error_set(err, -EINVAL, "expected an object");
        json_object_object_foreach(o, key, v) {
                const struct json_field *f = NULL;
                for (size_t i = 0; i < ELEMENTSOF(node_settings_fields) && !f; i++)
                        if (strcmp(key, node_settings_fields[i].key) == 0)
                                f = &node_settings_fields[i];
                if (!f)
                        return ppn_error_set(err, -EINVAL, "%s: unknown key (known: physical_bytes, "
                                             "reserve_bytes, min_floor_bytes)", key);
                if (!json_object_is_type(v, json_type_null)) {
                        int r = json_u64(v, key, LEDGER_SIZE_MAX, (uint64_t *) (void *) ((char *) &s + f->offset), err);
                        if (r < 0)
                                return r;
                }
        }
        *ret = s;
        return 0;
}
