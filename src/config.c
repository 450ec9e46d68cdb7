/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <ini.h>
#include <stddef.h>
#include <string.h>

#include "log.h"

const char config_default_text[] =
        "[daemon]\n"
        "log-level = info\n"
        "runtime-dir = /run/ppn\n"
        "history-memory = 8M\n"
        "[ledger]\n"
        "path = /var/lib/ppn/ledger.db\n"
        "[control]\n"
        "socket = /run/ppn/ppnd.sock\n"
        "group =\n"
        "idle-timeout = 5s\n"
        "max-request = 4K\n"
        "[cgroup]\n"
        "root = auto\n"
        "parent = ppn.slice\n"
        "delegated = no\n"
        "[controller]\n"
        "stats-interval = 1\n"
        "tick = 1s\n"
        "override-default = 10m\n"
        "qmp-retry-max = 5s\n"
        "fast-signal = yes\n"
        "fast-signal-rate = 0\n"
        "fast-signal-reads = 1000\n"
        "settled-stats-interval = 3s\n"
        "[qemu]\n"
        "accel = kvm\n"
        "binary = qemu-system-x86_64\n"
        "log-dir = /var/log/ppn\n"
        "image-dir = /var/lib/ppn/images\n"
        "[fleet]\n"
        "enabled = no\n"
        "endpoints = http://127.0.0.1:2379\n"
        "ca =\n"
        "cert =\n"
        "key =\n"
        "lease-ttl = 15s\n"
        "republish = 60s\n"
        "threshold = 64M\n"
        "migration-address = 127.0.0.1\n"
        "migration-port = 49152\n"
        "migration-ports = 16\n"
        "migration-peers = 127.0.0.1\n"
        "migration-timeout = 10m\n"
        "[host]\n"
        "meminfo = /proc/meminfo\n"
        "pressure = /proc/pressure/memory\n"
        "vmstat = /proc/vmstat\n"
        "[libvirt]\n"
        "uri =\n"
        "[metrics]\n"
        "enabled = no\n"
        "address = 127.0.0.1\n"
        "port = 9464\n"
        "[policy]\n";

enum key_type {
        KEY_STRING,     /* any text, may be empty */
        KEY_PATH,       /* absolute path */
        KEY_PATH_AUTO,  /* absolute path or "auto" */
        KEY_NAME,       /* non-empty, no '/' (a cgroup or group name) */
        KEY_GROUP,      /* empty or a group name */
        KEY_BOOL,
        KEY_SIZE,
        KEY_DURATION,
        KEY_SECONDS,    /* whole seconds */
        KEY_UINT,
        KEY_PERCENT,    /* a decimal 0-100 (double) */
        KEY_LOGLEVEL,
        KEY_FPR,        /* auto, or a boolean: enum policy_fpr */
        KEY_ACCEL,
        KEY_PROGRAM,    /* an absolute path, or a name looked up in PATH (no '/') */
        KEY_IP,         /* a numeric IPv4 or IPv6 address (no host names: no resolver at start) */
        KEY_PATH_EMPTY, /* empty or an absolute path */
        KEY_URLS,       /* comma-separated http:// or https:// URLs, at least one */
        KEY_URI,        /* empty, or a libvirt URI: SCHEME://[HOST]/PATH[?QUERY], no spaces */
};

struct key {
        const char *section;
        const char *name;
        enum key_type type;
        size_t offset;
        uint64_t min, max;      /* for sizes, durations (usec), uints; 0/0 = unbounded */
        size_t width;           /* numeric fields: sizeof the field (unsigned or uint64_t) */
};

#define OFF(f) offsetof(struct ppn_config, f)
#define W(f) sizeof(((struct ppn_config *) 0)->f)
#define NUM(sec, name, type, f, lo, hi) { sec, name, type, OFF(f), lo, hi, W(f) }
/* The policy's own ranges are checked by policy_tunables_check(); these bounds only keep
 * values meaningful to parse (1 TiB, 1 h). */
#define POLICY_SIZE(name, f) NUM("policy", name, KEY_SIZE, policy.f, 0, UINT64_C(1) << 40)
#define POLICY_UINT(name, f, hi) NUM("policy", name, KEY_UINT, policy.f, 0, hi)
#define POLICY_TIME(name, f) NUM("policy", name, KEY_DURATION, policy.f, 0, UINT64_C(3600000000))

/* Sorted by section, then key. */
static const struct key keys[] = {
        { "cgroup", "delegated", KEY_BOOL, OFF(cgroup_delegated), 0, 0, 0 },
        { "cgroup", "parent", KEY_NAME, OFF(cgroup_parent), 0, 0, 0 },
        { "cgroup", "root", KEY_PATH_AUTO, OFF(cgroup_root), 0, 0, 0 },
        { "control", "group", KEY_GROUP, OFF(control_group), 0, 0, 0 },
        /* Long enough for a person typing into socat; short enough that idle clients free slots. */
        NUM("control", "idle-timeout", KEY_DURATION, control_idle_timeout_usec, 100000, UINT64_C(3600000000)),
        /* 256 B fits every request ppnctl sends; 1 MiB bounds what one client can make us hold. */
        NUM("control", "max-request", KEY_SIZE, control_max_request, 256, 1 << 20),
        { "control", "socket", KEY_PATH, OFF(control_socket), 0, 0, 0 },
        { "controller", "fast-signal", KEY_BOOL, OFF(fast_signal), 0, 0, 0 },
        /* Bytes/s; 0 (the default: see docs/policy.md, "Sampled where it can matter") samples every
         * VM every 200 ms. 64 GiB/s is beyond any guest's memory bandwidth. */
        NUM("controller", "fast-signal-rate", KEY_SIZE, fast_signal_rate, 0, UINT64_C(64) << 30),
        /* Reads a second between ticks (docs/policy.md, "At most so many reads"); 0 = no cap. */
        NUM("controller", "fast-signal-reads", KEY_UINT, fast_signal_reads, 0, 10000000),
        NUM("controller", "override-default", KEY_DURATION, override_usec, USEC_PER_SEC, 30 * 86400 * USEC_PER_SEC),
        NUM("controller", "qmp-retry-max", KEY_DURATION, qmp_retry_max_usec, 100000, UINT64_C(300000000)),
        /* 0 = every round; its upper bound is [policy] stats-stale-after (load_stream()). */
        NUM("controller", "settled-stats-interval", KEY_DURATION, settled_stats_interval_usec, 0, UINT64_C(3600000000)),
        /* QEMU's balloon stats interval is whole seconds; 1 s is the floor, 1 h is plenty. */
        NUM("controller", "stats-interval", KEY_SECONDS, stats_interval_sec, 1, 3600),
        NUM("controller", "tick", KEY_DURATION, tick_usec, 100000, 60000000),
        /* What all VMs' history samples share (history.h): 8 MiB keeps an hour for 58 VMs. */
        NUM("daemon", "history-memory", KEY_SIZE, history_memory, 1 << 10, UINT64_C(1) << 32),
        { "daemon", "log-level", KEY_LOGLEVEL, OFF(log_level), 0, 0, 0 },
        { "daemon", "runtime-dir", KEY_PATH, OFF(runtime_dir), 0, 0, 0 },
        { "fleet", "ca", KEY_PATH_EMPTY, OFF(fleet_ca), 0, 0, 0 },
        { "fleet", "cert", KEY_PATH_EMPTY, OFF(fleet_cert), 0, 0, 0 },
        { "fleet", "enabled", KEY_BOOL, OFF(fleet_enabled), 0, 0, 0 },
        { "fleet", "endpoints", KEY_URLS, OFF(fleet_endpoints), 0, 0, 0 },
        { "fleet", "key", KEY_PATH_EMPTY, OFF(fleet_key), 0, 0, 0 },
        /* Long enough to ride out a keepalive lost to one slow round; short enough that a dead
         * node's record disappears from the fleet within seconds. */
        NUM("fleet", "lease-ttl", KEY_DURATION, fleet_lease_usec, 5000000, 300000000),
        { "fleet", "migration-address", KEY_IP, OFF(migration_address), 0, 0, 0 },
        { "fleet", "migration-peers", KEY_STRING, OFF(migration_peers), 0, 0, 0 },
        NUM("fleet", "migration-port", KEY_UINT, migration_port, 1024, 65535),
        NUM("fleet", "migration-ports", KEY_UINT, migration_ports, 1, 4096),
        NUM("fleet", "migration-timeout", KEY_DURATION, migration_timeout_usec, 10000000, UINT64_C(86400000000)),
        NUM("fleet", "republish", KEY_DURATION, fleet_republish_usec, USEC_PER_SEC, 3600 * USEC_PER_SEC),
        NUM("fleet", "threshold", KEY_SIZE, fleet_threshold_bytes, 0, UINT64_C(1) << 40),
        { "host", "meminfo", KEY_PATH, OFF(host_meminfo), 0, 0, 0 },
        { "host", "pressure", KEY_PATH, OFF(host_pressure), 0, 0, 0 },
        { "host", "vmstat", KEY_PATH, OFF(host_vmstat), 0, 0, 0 },
        { "ledger", "path", KEY_PATH, OFF(ledger_path), 0, 0, 0 },
        { "libvirt", "uri", KEY_URI, OFF(libvirt_uri), 0, 0, 0 },
        { "metrics", "address", KEY_IP, OFF(metrics_address), 0, 0, 0 },
        { "metrics", "enabled", KEY_BOOL, OFF(metrics_enabled), 0, 0, 0 },
        NUM("metrics", "port", KEY_UINT, metrics_port, 1, 65535),
        POLICY_UINT("active-cpu-percent", active_cpu_pct, 100),
        POLICY_TIME("active-hold", active_hold_usec),
        { "policy", "free-page-reporting", KEY_FPR, OFF(policy.free_page_reporting), 0, 0, 0 },
        POLICY_SIZE("grow-step", grow_step_bytes),
        POLICY_UINT("grow-step-percent", grow_step_pct, 100),
        POLICY_SIZE("headroom", headroom_bytes),
        POLICY_UINT("headroom-percent", headroom_pct, 100),
        POLICY_SIZE("host-low", host_low_bytes),
        POLICY_UINT("host-low-percent", host_low_pct, 100),
        POLICY_UINT("idle-tax", idle_tax_pct, 99),
        POLICY_UINT("major-fault-burst", major_fault_burst, 100000000),
        POLICY_SIZE("min-step", min_step_bytes),
        POLICY_UINT("min-step-permille", min_step_permille, 1000),
        POLICY_SIZE("pressure-available", pressure_available_bytes),
        POLICY_UINT("pressure-available-percent", pressure_available_pct, 100),
        NUM("policy", "psi-threshold", KEY_PERCENT, policy.psi_some_threshold, 0, 100),
        POLICY_TIME("shrink-hold", shrink_hold_usec),
        POLICY_UINT("shrink-percent", shrink_pct, 100),
        POLICY_TIME("stats-stale-after", stale_usec),
        POLICY_TIME("stuck-after", stuck_usec),
        POLICY_TIME("stuck-retry-after", stuck_retry_usec),
        POLICY_SIZE("swap-in-burst", swap_in_burst),
        { "qemu", "accel", KEY_ACCEL, OFF(accel), 0, 0, 0 },
        { "qemu", "binary", KEY_PROGRAM, OFF(qemu_binary), 0, 0, 0 },
        { "qemu", "image-dir", KEY_PATH, OFF(image_dir), 0, 0, 0 },
        { "qemu", "log-dir", KEY_PATH, OFF(log_dir), 0, 0, 0 },
};

struct parser {
        const char *name;
        struct ppn_config *cfg;
        FILE *in;
        FILE *out;              /* problems, memstream */
        unsigned line;
        unsigned n_problems;
        unsigned last_problem_line;
        bool section_known;
        unsigned seen[ELEMENTSOF(keys)];        /* line a key was set on (duplicates) */
};

static void problem(struct parser *p, unsigned line, const char *fmt, ...) _printf_(3, 4);
static void problem(struct parser *p, unsigned line, const char *fmt, ...) {
        va_list ap;

        p->n_problems++;
        p->last_problem_line = line;
        if (line)
                fprintf(p->out, "%s:%u: ", p->name, line);
        else
                fprintf(p->out, "%s: ", p->name);
        va_start(ap, fmt);
        vfprintf(p->out, fmt, ap);
        va_end(ap);
        fputc('\n', p->out);
}

static bool section_exists(const char *s, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strlen(keys[i].section) == len && strncmp(keys[i].section, s, len) == 0)
                        return true;
        return false;
}

/* Checks the shape of one raw line; inih reports only the first bad line, we want them all. */
static void check_line(struct parser *p, const char *s) {
        const char *end;

        while (isspace((unsigned char) *s))
                s++;
        if (*s == '\0' || *s == ';' || *s == '#')
                return;
        if (*s != '[') {
                if (!strpbrk(s, "=:"))
                        problem(p, p->line, "syntax error: expected 'key = value' or '[section]'");
                return;
        }
        end = strchr(s, ']');
        if (!end) {
                problem(p, p->line, "syntax error: section header without ']'");
                p->section_known = false;
                return;
        }
        p->section_known = section_exists(s + 1, (size_t) (end - s - 1));
        if (!p->section_known)
                problem(p, p->line, "unknown section [%.*s]", (int) (end - s - 1), s + 1);
}

/* inih hands us a buffer of num bytes (INI_MAX_LINE, 200). A line holds at most num - 3
 * characters before its newline; a longer line, or one with a NUL byte (a binary file or a
 * bad editor), is one problem at its own line number and is read as empty, so the lines after
 * it keep their numbers and are still checked. */
static char *reader(char *str, int num, void *stream) {
        struct parser *p = stream;
        size_t len = 0, limit = (size_t) num - 3;
        bool nul = false, too_long = false;
        int c = EOF;

        while ((c = fgetc(p->in)) != EOF && c != '\n') {
                if (c == '\0')
                        nul = true;
                else if (len < limit)
                        str[len++] = (char) c;
                else
                        too_long = true;
        }
        if (c == EOF && len == 0 && !nul && !too_long)
                return NULL;
        p->line++;
        if (nul || too_long) {
                if (nul)
                        problem(p, p->line, "NUL byte in line: this is not a text file (or was saved in a wide encoding)");
                else
                        problem(p, p->line, "line too long (limit %zu characters)", limit);
                strcpy(str, "\n");
                return str;
        }
        str[len++] = '\n';
        str[len] = '\0';
        check_line(p, str);
        return str;
}

/* "30d", "5m", "100ms": the largest unit that divides exactly. */
static const char *format_usec(uint64_t usec, char *buf, size_t len) {
        static const struct { const char *unit; uint64_t n; } units[] = {
                { "d", 86400 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC }, { "m", 60 * USEC_PER_SEC },
                { "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC }, { "us", 1 },
        };
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (usec >= units[i].n && usec % units[i].n == 0) {
                        snprintf(buf, len, "%" PRIu64 "%s", usec / units[i].n, units[i].unit);
                        return buf;
                }
        snprintf(buf, len, "0");
        return buf;
}

static int parse_bounded(const struct key *k, const char *v, uint64_t *ret, char *why, size_t wl) {
        uint64_t x;
        int r;

        switch (k->type) {
        case KEY_SIZE:
                r = parse_size(v, &x);
                if (r < 0)
                        return snprintf(why, wl, "is not a size (examples: 4096, 64K, 512M, 2G)"), r;
                break;
        case KEY_DURATION:
        case KEY_SECONDS:
                r = parse_duration(v, &x);
                if (r < 0)
                        return snprintf(why, wl, "is not a duration (examples: 500ms, 30s, 10m, 2h)"), r;
                if (k->type == KEY_SECONDS) {
                        if (x % USEC_PER_SEC)
                                return snprintf(why, wl, "must be whole seconds (QEMU polls guest statistics in seconds)"), -EINVAL;
                        x /= USEC_PER_SEC;
                }
                break;
        default:
                r = parse_u64(v, &x);
                if (r < 0)
                        return snprintf(why, wl, "is not a non-negative integer"), r;
        }
        if ((k->min || k->max) && (x < k->min || x > k->max)) {
                char lo[24], hi[24];
                if (k->type == KEY_DURATION)
                        snprintf(why, wl, "is out of range (%s to %s)", format_usec(k->min, lo, sizeof(lo)),
                                 format_usec(k->max, hi, sizeof(hi)));
                else if (k->type == KEY_SIZE)
                        snprintf(why, wl, "is out of range (%s to %s)", format_size(k->min, lo, sizeof(lo)),
                                 format_size(k->max, hi, sizeof(hi)));
                else
                        snprintf(why, wl, "is out of range (%" PRIu64 " to %" PRIu64 ")", k->min, k->max);
                return -ERANGE;
        }
        *ret = x;
        return 0;
}

static bool name_ok(const char *v) {
        if (!*v || strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
                return false;
        for (const char *c = v; *c; c++)
                if (!isalnum((unsigned char) *c) && !strchr("._-", *c))
                        return false;
        return true;
}

static int parse_percent(const char *v, double *ret) {
        char *end;
        double d;

        if (!isdigit((unsigned char) v[0]))
                return -EINVAL;
        errno = 0;
        d = strtod(v, &end);
        if (errno || *end || !(d >= 0 && d <= 100))
                return -EINVAL;
        *ret = d;
        return 0;
}

static int parse_bool(const char *v, bool *ret) {
        static const char *const yes[] = { "yes", "true", "on", "1" }, *const no[] = { "no", "false", "off", "0" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcmp(v, yes[i]) == 0)
                        return *ret = true, 0;
                if (strcmp(v, no[i]) == 0)
                        return *ret = false, 0;
        }
        return -EINVAL;
}

static bool urls_ok(const char *v) {
        size_t n = 0;
        for (const char *s = v; *s;) {
                size_t len = strcspn(s, ",");
                if (!((len > 7 && strncmp(s, "http://", 7) == 0) || (len > 8 && strncmp(s, "https://", 8) == 0)))
                        return false;
                for (size_t i = 0; i < len; i++)
                        if ((unsigned char) s[i] <= ' ' || s[i] == '?' || s[i] == '#')
                                return false;
                n++;
                s += len + (s[len] == ',');
        }
        return n > 0 && n <= 16 && v[strlen(v) - 1] != ',';
}

/* Validates a text value; returns NULL if fine, else why not. */
static const char *check_text(enum key_type t, const char *v) {
        switch (t) {
        case KEY_PATH:
                return v[0] == '/' ? NULL : "must be an absolute path";
        case KEY_PATH_AUTO:
                return v[0] == '/' || strcmp(v, "auto") == 0 ? NULL : "must be an absolute path or 'auto'";
        case KEY_NAME:
                return name_ok(v) ? NULL : "must be a name of letters, digits, '.', '_', '-'";
        case KEY_GROUP:
                return !*v || name_ok(v) ? NULL : "must be empty (root only) or a group name";
        case KEY_ACCEL:
                return strcmp(v, "kvm") == 0 || strcmp(v, "tcg") == 0 ? NULL : "must be 'kvm' or 'tcg'";
        case KEY_PROGRAM:
                return v[0] == '/' || (v[0] && !strchr(v, '/')) ? NULL
                                                                : "must be an absolute path or a program name found in PATH";
        case KEY_URI:
                return !*v || (strstr(v, "://") && !strpbrk(v, " \t")) ? NULL
                        : "must be empty (no libvirt) or a libvirt URI such as qemu:///system";
        case KEY_IP: {
                unsigned char addr[sizeof(struct in6_addr)];
                return inet_pton(AF_INET, v, addr) == 1 || inet_pton(AF_INET6, v, addr) == 1
                               ? NULL
                               : "is not a numeric IP address; use e.g. 127.0.0.1 or ::1";
        }
        case KEY_PATH_EMPTY:
                return !*v || v[0] == '/' ? NULL : "must be empty or an absolute path";
        case KEY_URLS:
                return urls_ok(v) ? NULL : "must be comma-separated http:// or https:// URLs "
                                           "(example: http://10.0.0.1:2379,http://10.0.0.2:2379)";
        default:
                return NULL;
        }
}

static int set_value(struct parser *p, const struct key *k, const char *v) {
        void *field = (char *) p->cfg + k->offset;
        char why[160] = "";
        uint64_t x;
        bool b;
        int level;

        switch (k->type) {
        case KEY_BOOL:
                if (parse_bool(v, &b) < 0)
                        return problem(p, p->line, "%s: '%s' is not a boolean (yes/no)", k->name, v), 0;
                *(bool *) field = b;
                return 0;
        case KEY_FPR:
                if (strcmp(v, "auto") == 0)
                        *(enum policy_fpr *) field = POLICY_FPR_AUTO;
                else if (parse_bool(v, &b) == 0)
                        *(enum policy_fpr *) field = b ? POLICY_FPR_YES : POLICY_FPR_NO;
                else
                        return problem(p, p->line, "%s: '%s' is not 'auto', 'yes' or 'no'", k->name, v), 0;
                return 0;
        case KEY_LOGLEVEL:
                level = log_level_from_string(v);
                if (level < 0)
                        return problem(p, p->line, "%s: '%s' is not a log level (debug, info, notice, warning, err)", k->name, v), 0;
                *(int *) field = level;
                return 0;
        case KEY_SIZE: case KEY_DURATION: case KEY_SECONDS: case KEY_UINT:
                if (parse_bounded(k, v, &x, why, sizeof(why)) < 0)
                        return problem(p, p->line, "%s: '%s' %s", k->name, v, why), 0;
                if (k->width == sizeof(unsigned))
                        *(unsigned *) field = (unsigned) x;
                else
                        *(uint64_t *) field = x;
                return 0;
        case KEY_PERCENT:
                if (parse_percent(v, (double *) field) < 0)
                        return problem(p, p->line, "%s: '%s' is not a percentage from 0 to 100 (examples: 1, 2.5)",
                                       k->name, v), 0;
                return 0;
        default: {
                const char *bad = check_text(k->type, v);
                char *copy;
                if (bad)
                        return problem(p, p->line, "%s: '%s' %s", k->name, v, bad), 0;
                copy = strdup(v);
                if (!copy)
                        return -ENOMEM;
                free(*(char **) field);
                *(char **) field = copy;
                return 0;
        }
        }
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        struct parser *p = user;

        if (!p->section_known)
                return 1;       /* the section header was already reported */
        if (!*section) {
                problem(p, p->line, "'%s' is outside any section", name);
                return 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (strcmp(keys[i].section, section) != 0 || strcmp(keys[i].name, name) != 0)
                        continue;
                if (p->seen[i]) {
                        problem(p, p->line, "duplicate key '%s' (first set on line %u)", name, p->seen[i]);
                        return 1;
                }
                p->seen[i] = p->line;
                return set_value(p, &keys[i], value) < 0 ? 0 : 1;
        }
        problem(p, p->line, "unknown key '%s' in section [%s]", name, section);
        return 1;
}

/* The key types whose field is a heap string (set_value's default branch): config_free()
 * frees exactly these, so a new text type cannot leak. */
static bool key_is_text(enum key_type t) {
        switch (t) {
        case KEY_BOOL: case KEY_SIZE: case KEY_DURATION: case KEY_SECONDS: case KEY_UINT:
        case KEY_PERCENT: case KEY_LOGLEVEL: case KEY_FPR:
                return false;
        default:
                return true;
        }
}

struct ppn_config *config_free(struct ppn_config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (key_is_text(keys[i].type))
                        free(*(char **) ((char *) c + keys[i].offset));
        }
        free(c);
        return NULL;
}

/* Runs inih over an open stream into cfg; problems go to out. Returns the problem count. */
static unsigned parse_stream(const char *name, FILE *in, struct ppn_config *cfg, FILE *out) {
        struct parser p = { .name = name, .cfg = cfg, .in = in, .out = out, .section_known = true };
        int r;

        /* One meaning per line: no continuation lines; ';' and '#' start comments anywhere. */
        ini_allow_multiline = false;
        ini_inline_comment_prefixes = (char *) ";#";
        r = ini_parse_stream(reader, &p, handler, &p);
        if (r > 0 && p.n_problems == 0)
                problem(&p, (unsigned) r, "syntax error");
        else if (r < 0)
                problem(&p, 0, "cannot parse (out of memory)");
        return p.n_problems;
}

static int load_stream(const char *name, FILE *in, int open_errno, struct ppn_config **ret, char **ret_problems) {
        _cleanup_config_ struct ppn_config *c = NULL;
        _cleanup_free_ char *text = NULL;
        struct ppn_error perr = { 0 };
        size_t len = 0;
        unsigned n = 0;
        int r;
        FILE *out;

        out = open_memstream(&text, &len);
        if (!out)
                return -ENOMEM;
        r = config_new_default(&c);
        if (r < 0) {
                fclose(out);
                return r;
        }
        if (in)
                n = parse_stream(name, in, c, out);
        else
                fprintf(out, "%s: cannot open: %s\n", name, strerror(open_errno)), n = 1;
        c->policy.override_usec = c->override_usec;
        if (n == 0 && policy_tunables_check(&c->policy, &perr) < 0)
                fprintf(out, "%s: [policy]: %s\n", name, perr.msg), n = 1;
        /* A settled VM's statistics must never be held until the policy finds them stale. */
        if (n == 0 && c->settled_stats_interval_usec >= c->policy.stale_usec)
                fprintf(out, "%s: [controller] settled-stats-interval (%.1f s) must be below [policy] stats-stale-after "
                        "(%.1f s): lower it, or 0 to read every VM's statistics every round\n", name,
                        (double) c->settled_stats_interval_usec / 1e6, (double) c->policy.stale_usec / 1e6), n = 1;
        if (fclose(out) != 0)
                return -ENOMEM;
        if (n > 0) {
                if (ret_problems)
                        *ret_problems = TAKE_PTR(text);
                return -EINVAL;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int config_new_default(struct ppn_config **ret) {
        _cleanup_config_ struct ppn_config *c = NULL;
        _cleanup_fclose_ FILE *in = NULL, *out = NULL;

        c = calloc(1, sizeof(*c));
        in = fmemopen((void *) config_default_text, strlen(config_default_text), "r");
        out = fopen("/dev/null", "we");
        if (!c || !in || !out)
                return -ENOMEM;
        policy_tunables_default(&c->policy);
        /* The default text is tested to parse cleanly (test-config); a problem here is a bug. */
        if (parse_stream("(built-in)", in, c, out) > 0)
                return -EINVAL;
        *ret = TAKE_PTR(c);
        return 0;
}

int config_load_file(const char *path, struct ppn_config **ret, char **ret_problems) {
        _cleanup_fclose_ FILE *in = fopen(path, "re");
        return load_stream(path, in, errno, ret, ret_problems);
}

int config_load_string(const char *name, const char *text, struct ppn_config **ret, char **ret_problems) {
        _cleanup_fclose_ FILE *in = fmemopen((void *) text, strlen(text), "r");
        if (!in)
                return -ENOMEM;
        return load_stream(name, in, 0, ret, ret_problems);
}

static bool str_differs(const char *a, const char *b) {
        return strcmp(a ? a : "", b ? b : "") != 0;
}

int config_restart_needed(const struct ppn_config *a, const struct ppn_config *b, char *buf, size_t len) {
        static const struct { const char *name; size_t off; } fixed[] = {
                { "daemon.runtime-dir", OFF(runtime_dir) },
                { "ledger.path", OFF(ledger_path) },
                { "control.socket", OFF(control_socket) },
                { "control.group", OFF(control_group) },
                { "cgroup.root", OFF(cgroup_root) },
                { "cgroup.parent", OFF(cgroup_parent) },
                { "metrics.address", OFF(metrics_address) },
                { "fleet.endpoints", OFF(fleet_endpoints) },
                { "fleet.ca", OFF(fleet_ca) },
                { "fleet.cert", OFF(fleet_cert) },
                { "fleet.key", OFF(fleet_key) },
                { "libvirt.uri", OFF(libvirt_uri) },
                { "fleet.migration-address", OFF(migration_address) },
        };
        /* Read once at start too: the control socket's limits, cgroup placement, the HTTP
         * listener. Compared byte for byte (numbers and booleans). */
        static const struct { const char *name; size_t off, size; } values[] = {
                { "control.max-request", OFF(control_max_request), sizeof(a->control_max_request) },
                { "control.idle-timeout", OFF(control_idle_timeout_usec), sizeof(a->control_idle_timeout_usec) },
                { "cgroup.delegated", OFF(cgroup_delegated), sizeof(a->cgroup_delegated) },
                { "metrics.enabled", OFF(metrics_enabled), sizeof(a->metrics_enabled) },
                { "metrics.port", OFF(metrics_port), sizeof(a->metrics_port) },
        };
        size_t used = 0;
        int n = 0;

        if (len)
                buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(fixed) + ELEMENTSOF(values); i++) {
                bool differs;
                const char *name;
                if (i < ELEMENTSOF(fixed)) {
                        name = fixed[i].name;
                        differs = str_differs(*(char *const *) ((const char *) a + fixed[i].off),
                                              *(char *const *) ((const char *) b + fixed[i].off));
                } else {
                        size_t k = i - ELEMENTSOF(fixed);
                        name = values[k].name;
                        differs = memcmp((const char *) a + values[k].off, (const char *) b + values[k].off,
                                         values[k].size) != 0;
                }
                if (!differs)
                        continue;
                if (used < len)
                        used += (size_t) snprintf(buf + used, len - used, "%s%s", n ? ", " : "", name);
                n++;
        }
        return n;
}
