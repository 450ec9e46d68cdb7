/* SPDX-License-Identifier: Apache-2.0 */
#include "ledger.h"

#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "pool.h"

struct ledger {
        sqlite3 *db;
        dev_t dev;                      /* of the file, while registered in open_files */
        ino_t ino;
        bool registered;
        char *path;
        char *meminfo_path;
        unsigned busy_timeout_ms;
        int64_t data_version;
};

/* Migration N brings the schema from version N to N+1. Append only; never edit a shipped one. */
static const char *const migrations[] = {
        "CREATE TABLE node ("
        "  id INTEGER PRIMARY KEY CHECK (id = 1),"
        "  physical_bytes INTEGER, reserve_bytes INTEGER, min_floor_bytes INTEGER);"
        "INSERT INTO node (id) VALUES (1);"
        "CREATE TABLE vm ("
        "  name TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,"
        "  min_bytes INTEGER NOT NULL, max_bytes INTEGER NOT NULL,"
        "  shares INTEGER NOT NULL, cpu_weight INTEGER NOT NULL, vcpus INTEGER NOT NULL,"
        "  qmp TEXT, disks TEXT NOT NULL DEFAULT '[]', qemu_args TEXT NOT NULL DEFAULT '[]',"
        "  override_target_bytes INTEGER, override_expires INTEGER);"
        "CREATE TABLE audit ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT, time_usec INTEGER NOT NULL, uid INTEGER NOT NULL,"
        "  vm TEXT, field TEXT NOT NULL, old TEXT, new TEXT);"
        "CREATE INDEX audit_vm ON audit (vm, id);",
        /* 1 -> 2: the fleet (docs/fleet.md). Nodes whose keys the operator confirmed, and the
         * capacity this node lends: fence is never reused (AUTOINCREMENT), so a grant's fence
         * names exactly one lending. */
        "CREATE TABLE fleet_trust ("
        "  id TEXT PRIMARY KEY, public_key TEXT NOT NULL, added_usec INTEGER NOT NULL);"
        "CREATE TABLE fleet_lend ("
        "  fence INTEGER PRIMARY KEY AUTOINCREMENT, grant_id TEXT NOT NULL UNIQUE,"
        "  borrower TEXT NOT NULL, bytes INTEGER NOT NULL CHECK (bytes > 0),"
        "  not_before INTEGER NOT NULL, expires INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
        /* 2 -> 3: the memory layout — boot memory and a virtio-mem region (NULL/0: none). */
        ("ALTER TABLE vm ADD COLUMN base_bytes INTEGER;"
         "ALTER TABLE vm ADD COLUMN vmem INTEGER NOT NULL DEFAULT 0;"),
        /* 3 -> 4: a VM may be a libvirt domain (reached through libvirt, not a QMP socket). */
        "ALTER TABLE vm ADD COLUMN libvirt_domain TEXT;",
};
_Static_assert(ELEMENTSOF(migrations) == LEDGER_SCHEMA_VERSION, "one migration per schema version");

/* ---- errors ---- */

static bool is_busy(int rc) {
        rc &= 0xff;
        return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

static int sql_error(struct ledger *l, int rc, struct ppn_error *err, const char *what) {
        int prim = rc & 0xff;
        if (is_busy(rc))
                return -EBUSY;   /* retried by the transaction loop; words added there */
        if (prim == SQLITE_NOTADB)
                return ppn_error_set(err, -EPROTO, "ledger '%s' is not an SQLite database; check --ledger "
                                     "or PPN_LEDGER (the file was not modified)", l->path);
        if (prim == SQLITE_CORRUPT)
                return ppn_error_set(err, -EPROTO, "ledger '%s' is damaged or truncated (%s); restore it from "
                                     "a backup or an export (the file was not modified)", l->path,
                                     sqlite3_errmsg(l->db));
        if (prim == SQLITE_READONLY || prim == SQLITE_CANTOPEN || prim == SQLITE_PERM)
                return ppn_error_set(err, -EACCES, "ledger '%s': %s while %s; writing needs write access "
                                     "to the file and its folder (this is uid %u)", l->path,
                                     sqlite3_errmsg(l->db), what, (unsigned) geteuid());
        if (prim == SQLITE_FULL)
                return ppn_error_set(err, -ENOSPC, "ledger '%s': disk full while %s; free space and retry",
                                     l->path, what);
        return ppn_error_set(err, -EIO, "ledger '%s': %s while %s", l->path, sqlite3_errmsg(l->db), what);
}

static int exec(struct ledger *l, const char *sql, struct ppn_error *err) {
        int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : sql_error(l, rc, err, sql);
}

static int prepare(struct ledger *l, const char *sql, sqlite3_stmt **ret, struct ppn_error *err) {
        int rc = sqlite3_prepare_v2(l->db, sql, -1, ret, NULL);
        return rc == SQLITE_OK ? 0 : sql_error(l, rc, err, "preparing a query");
}

static void finalizep(sqlite3_stmt **s) { sqlite3_finalize(*s); }
#define _cleanup_stmt_ _cleanup_(finalizep)

static int pragma_int(struct ledger *l, const char *sql, int64_t *ret, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, sql, &s, err), rc;
        if (r < 0)
                return r;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return sql_error(l, rc, err, "reading the schema");
        *ret = sqlite3_column_int64(s, 0);
        return 0;
}

/* ---- retry: lock contention is waited out, never shown ---- */

static void backoff(unsigned attempt) {
        /* 1–16 ms growing with attempts, jittered so two waiters do not collide in step. */
        unsigned ms = 1u + (unsigned) (rand() % (int) (attempt < 4 ? 1u << attempt : 16u));
        struct timespec ts = { 0, (long) ms * (long) NSEC_PER_MSEC };
        nanosleep(&ts, NULL);
}

typedef int (*tx_fn)(struct ledger *l, void *ud, struct ppn_error *err);

/* Runs fn inside BEGIN IMMEDIATE (write) or BEGIN (read) ... COMMIT, retrying the whole
 * transaction while it fails with -EBUSY, up to busy_timeout_ms. */
static int run_tx(struct ledger *l, bool write, tx_fn fn, void *ud, struct ppn_error *err) {
        uint64_t deadline = now_usec() + (uint64_t) l->busy_timeout_ms * USEC_PER_MSEC;
        for (unsigned attempt = 0;; attempt++) {
                int r = exec(l, write ? "BEGIN IMMEDIATE" : "BEGIN", err);
                if (r == 0) {
                        r = fn(l, ud, err);
                        if (r == 0)
                                r = exec(l, "COMMIT", err);
                        if (r < 0)
                                sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
                }
                if (r != -EBUSY)
                        return r;
                if (now_usec() > deadline)
                        return ppn_error_set(err, -EBUSY, "ledger '%s' stayed locked by another writer for "
                                             "%u ms; try again", l->path, l->busy_timeout_ms);
                log_debug("ledger %s busy, retrying (attempt %u)", l->path, attempt + 1);
                backoff(attempt);
        }
}

/* ---- open: check the header before SQLite may write, then migrate ---- */

static uint64_t file_size(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 ? (uint64_t) st.st_size : 0;
}

static uint32_t be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

/*
 * The 100-byte SQLite header (fileformat2 §1.3): magic at 0, page size at 16, page count at
 * 28 (valid when the change counter at 24 equals the version-valid-for at 92). A file shorter
 * than the count says is truncated. When a non-empty -wal or -journal sits beside it, the
 * file may legitimately be mid-checkpoint, so only the magic is checked and SQLite recovers.
 */
static int check_header(const char *path, uint64_t size, struct ppn_error *err) {
        _cleanup_free_ char *wal = NULL, *journal = NULL;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint8_t h[100];

        if (fd < 0)
                return ppn_error_set(err, -errno, "cannot read ledger '%s': %s", path, strerror(errno));
        if (size < sizeof(h) || read(fd, h, sizeof(h)) != (ssize_t) sizeof(h))
                return ppn_error_set(err, -EPROTO, "ledger '%s' is truncated (%" PRIu64 " bytes, shorter than "
                                     "an SQLite header); restore it from a backup or an export (the file "
                                     "was not modified)", path, size);
        if (memcmp(h, "SQLite format 3", 16) != 0)
                return ppn_error_set(err, -EPROTO, "ledger '%s' is not an SQLite database; check --ledger or "
                                     "PPN_LEDGER (the file was not modified)", path);
        if (asprintf(&wal, "%s-wal", path) < 0 || asprintf(&journal, "%s-journal", path) < 0)
                return -ENOMEM;
        if (file_size(wal) > 0 || file_size(journal) > 0)
                return 0;
        uint32_t page = (uint32_t) h[16] << 8 | h[17];
        uint64_t page_size = page == 1 ? 65536 : page;
        uint64_t pages = be32(h + 28);
        if (page_size < 512 || (page_size & (page_size - 1)) || size % page_size ||
            (be32(h + 24) == be32(h + 92) && pages * page_size > size))
                return ppn_error_set(err, -EPROTO, "ledger '%s' is truncated (%" PRIu64 " bytes, its header "
                                     "says %" PRIu64 "); restore it from a backup or an export (the file was "
                                     "not modified)", path, size, pages * page_size);
        return 0;
}

static int check_schema(struct ledger *l, int64_t *ret_version, struct ppn_error *err) {
        int64_t version, tables;
        int r = pragma_int(l, "PRAGMA user_version", &version, err);
        if (r == 0)
                r = pragma_int(l, "SELECT count(*) FROM sqlite_master", &tables, err);
        if (r < 0)
                return r;
        if (version > LEDGER_SCHEMA_VERSION)
                return ppn_error_set(err, -EPROTO, "ledger '%s' has schema version %" PRId64 " but this build "
                                     "knows versions up to %d; use a newer ppnctl/ppnd (the file was not "
                                     "modified)", l->path, version, LEDGER_SCHEMA_VERSION);
        if (version == 0 && tables > 0)
                return ppn_error_set(err, -EPROTO, "'%s' is an SQLite database but not a ppn ledger (it has "
                                     "tables and no ledger schema); check --ledger or PPN_LEDGER (the file "
                                     "was not modified)", l->path);
        *ret_version = version;
        return 0;
}

static int migrate_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        int64_t version;
        int r = check_schema(l, &version, err);   /* again, under the lock: another may have migrated */
        char sql[64];

        for (; r == 0 && version < LEDGER_SCHEMA_VERSION; version++) {
                log_debug("ledger %s: migrating schema %" PRId64 " -> %" PRId64, l->path, version, version + 1);
                r = exec(l, migrations[version], err);
                snprintf(sql, sizeof(sql), "PRAGMA user_version = %" PRId64, version + 1);
                if (r == 0)
                        r = exec(l, sql, err);
        }
        return r;
}

/* quick_check reads every page (about 1 ms per 100 KiB here): it catches a truncated or damaged
 * file that the header check could not, e.g. when a -wal beside it holds part of the data. */
static int quick_check(struct ledger *l, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "PRAGMA quick_check(1)", &s, err), rc;
        if (r < 0)
                return r;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return sql_error(l, rc, err, "checking the file");
        const char *res = (const char *) sqlite3_column_text(s, 0);
        if (!res || strcmp(res, "ok") != 0)
                return ppn_error_set(err, -EPROTO, "ledger '%s' is damaged or truncated (%s); restore it from "
                                     "a backup or an export (the file was not modified)", l->path,
                                     res ? res : "no result");
        return 0;
}

static int schema_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        int r = check_schema(l, ud, err);
        return r < 0 ? r : quick_check(l, err);
}

/* "file:/a%3Fb?immutable=1": percent-encodes what a URI path may not hold. */
static char *immutable_uri(const char *path) {
        char *u = malloc(strlen(path) * 3 + 32), *p = u;
        if (!u)
                return NULL;
        p += sprintf(p, "file:");
        for (const char *c = path; *c; c++)
                p += strchr("?#%", *c) ? sprintf(p, "%%%02X", (unsigned char) *c) : sprintf(p, "%c", *c);
        strcpy(p, "?immutable=1");
        return u;
}

static int open_db(struct ledger *l, bool read_only, bool immutable, struct ppn_error *err) {
        _cleanup_free_ char *uri = immutable ? immutable_uri(l->path) : NULL;
        int flags = SQLITE_OPEN_NOMUTEX | (read_only ? SQLITE_OPEN_READONLY
                                                     : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        if (immutable && !uri)
                return -ENOMEM;
        int rc = sqlite3_open_v2(immutable ? uri : l->path, &l->db, flags | (immutable ? SQLITE_OPEN_URI : 0), NULL);
        if (rc != SQLITE_OK)
                return ppn_error_set(err, -EACCES, "cannot open ledger '%s': %s; check the path and "
                                     "permissions", l->path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
        sqlite3_busy_timeout(l->db, (int) l->busy_timeout_ms);
        sqlite3_extended_result_codes(l->db, 1);
        return 0;
}

/*
 * A WAL reader needs the -shm file. When no connection has the ledger open (no -wal beside
 * it) and this reader cannot create files in its folder (an operator reading
 * /var/lib/ppn/ledger.db), the main file alone is the whole ledger: read it as immutable.
 * Small window: a writer that starts and closes (checkpointing) during this one read could
 * tear it; the daemon keeps the ledger open, so its -wal and -shm normally exist.
 */
static int reopen_immutable(struct ledger *l, struct ppn_error *err) {
        _cleanup_free_ char *wal = NULL;
        if (asprintf(&wal, "%s-wal", l->path) < 0)
                return -ENOMEM;
        if (access(wal, F_OK) == 0)
                return -EACCES;
        log_debug("ledger %s: cannot create -shm; reading the main file as immutable", l->path);
        sqlite3_close_v2(l->db);
        l->db = NULL;
        return open_db(l, true, true, err);
}

static int setup(struct ledger *l, bool read_only, struct ppn_error *err) {
        int64_t version = 0;
        int r = run_tx(l, false, schema_tx, &version, err);   /* reads only: nothing written yet */
        if (r == -EACCES && read_only && reopen_immutable(l, NULL) == 0)
                r = run_tx(l, false, schema_tx, &version, err);
        if (r < 0)
                return r;
        if (read_only) {
                if (version < LEDGER_SCHEMA_VERSION)
                        return ppn_error_set(err, -EPROTO, "ledger '%s' is empty or has an older schema "
                                             "(version %" PRId64 "); a write command (e.g. 'ppnctl node set' or "
                                             "'ppnctl vm add') creates or migrates it", l->path, version);
                return 0;
        }
        /* journal_mode=WAL needs the lock briefly on a fresh file; retry like any write. */
        for (unsigned attempt = 0; (r = exec(l, "PRAGMA journal_mode=WAL", err)) == -EBUSY && attempt < 1000; attempt++)
                backoff(attempt);
        if (r == 0)
                r = exec(l, "PRAGMA synchronous=FULL", err);
        if (r == 0 && version < LEDGER_SCHEMA_VERSION)
                r = run_tx(l, true, migrate_tx, NULL, err);
        return r;
}

/*
 * A new ledger is created empty with LEDGER_FILE_MODE before SQLite initializes it: SQLite would
 * create it 0644 (less the umask), readable by every local user, and its -wal and -shm take
 * the main file's mode. O_EXCL: a file that appeared meanwhile is left as it is.
 */
static int create_private(const char *path, struct ppn_error *err) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, LEDGER_FILE_MODE);
        if (fd < 0 && errno != EEXIST)
                return ppn_error_set(err, -errno, "cannot create ledger '%s': %m; check the path and "
                                     "that its folder exists and is writable", path);
        if (fd >= 0)
                close(fd);
        return 0;
}

/*
 * The ledger files this process has open. close(2) of ANY descriptor of a file drops every
 * POSIX lock the process holds on it, SQLite's included: check_header()'s open/close while
 * another connection of this process (ppnd's, beside its live-move thread's) holds the file
 * would let another process take the last-connection lock and delete -wal and -shm under it,
 * after which this process reads a stale index and reports the ledger damaged (seen in
 * bench/live.py: a node's ppnd after receiving, sending and receiving a VM again). So a file
 * already open here is not read raw again: it was checked when it was opened.
 */
static pthread_mutex_t open_files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { dev_t dev; ino_t ino; unsigned n; } open_files[16];

static bool open_files_has(dev_t dev, ino_t ino) {
        bool found = false;
        pthread_mutex_lock(&open_files_lock);
        for (size_t i = 0; i < ELEMENTSOF(open_files) && !found; i++)
                found = open_files[i].n > 0 && open_files[i].dev == dev && open_files[i].ino == ino;
        pthread_mutex_unlock(&open_files_lock);
        return found;
}

/* Counts l's file as open here (or not, when the table is full: then only its checks repeat). */
static void open_files_add(struct ledger *l, const struct stat *st) {
        size_t free_slot = ELEMENTSOF(open_files);
        pthread_mutex_lock(&open_files_lock);
        for (size_t i = 0; i < ELEMENTSOF(open_files) && !l->registered; i++) {
                if (open_files[i].n > 0 && open_files[i].dev == st->st_dev && open_files[i].ino == st->st_ino) {
                        open_files[i].n++;
                        l->registered = true;
                } else if (open_files[i].n == 0 && free_slot == ELEMENTSOF(open_files))
                        free_slot = i;
        }
        if (!l->registered && free_slot < ELEMENTSOF(open_files)) {
                open_files[free_slot].dev = st->st_dev;
                open_files[free_slot].ino = st->st_ino;
                open_files[free_slot].n = 1;
                l->registered = true;
        }
        l->dev = st->st_dev;
        l->ino = st->st_ino;
        pthread_mutex_unlock(&open_files_lock);
}

static void open_files_remove(struct ledger *l) {
        if (!l->registered)
                return;
        pthread_mutex_lock(&open_files_lock);
        for (size_t i = 0; i < ELEMENTSOF(open_files); i++)
                if (open_files[i].n > 0 && open_files[i].dev == l->dev && open_files[i].ino == l->ino) {
                        open_files[i].n--;
                        break;
                }
        pthread_mutex_unlock(&open_files_lock);
        l->registered = false;
}

int ledger_open(const char *path, const struct ledger_options *opts, struct ledger **ret,
                struct ppn_error *err) {
        struct ledger_options o = opts ? *opts : (struct ledger_options) {};
        struct ledger *l = calloc(1, sizeof(*l));
        struct stat st;
        int r;

        if (!l)
                return -ENOMEM;
        l->busy_timeout_ms = o.busy_timeout_ms ? o.busy_timeout_ms : 10000;
        l->path = strdup(path);
        l->meminfo_path = strdup(o.meminfo_path ? o.meminfo_path : "/proc/meminfo");
        if (!l->path || !l->meminfo_path) {
                ledger_close(l);
                return -ENOMEM;
        }
        bool exists = stat(path, &st) == 0;
        if (!exists && (errno != ENOENT || o.read_only))
                r = ppn_error_set(err, -errno, "ledger '%s' %s; check --ledger or PPN_LEDGER (a write "
                                  "command such as 'ppnctl node set' or 'ppnctl vm add' creates it)", path,
                                  errno == ENOENT ? "does not exist" : strerror(errno));
        else if (exists && !S_ISREG(st.st_mode))
                r = ppn_error_set(err, -EINVAL, "ledger '%s' is not a regular file; check --ledger", path);
        else if (!exists)
                r = create_private(path, err);
        else
                r = st.st_size > 0 && !open_files_has(st.st_dev, st.st_ino) ?
                    check_header(path, (uint64_t) st.st_size, err) : 0;
        if (r == 0)
                r = open_db(l, o.read_only, false, err);
        if (r == 0 && stat(path, &st) == 0)
                open_files_add(l, &st);
        if (r == 0)
                r = setup(l, o.read_only, err);
        if (r == 0)
                r = pragma_int(l, "PRAGMA data_version", &l->data_version, err);
        if (r < 0) {
                ledger_close(l);
                return r;
        }
        *ret = l;
        return 0;
}

struct ledger *ledger_close(struct ledger *l) {
        if (!l)
                return NULL;
        sqlite3_close_v2(l->db);
        open_files_remove(l);
        free(l->path);
        free(l->meminfo_path);
        free(l);
        return NULL;
}

int ledger_changed(struct ledger *l) {
        int64_t v;
        int r = pragma_int(l, "PRAGMA data_version", &v, NULL);
        if (r < 0)
                return r;
        if (v == l->data_version)
                return 0;
        l->data_version = v;
        return 1;
}

static int integrity_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "PRAGMA integrity_check", &s, err), rc;
        if (r < 0)
                return r;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return sql_error(l, rc, err, "checking integrity");
        const char *res = (const char *) sqlite3_column_text(s, 0);
        if (!res || strcmp(res, "ok") != 0)
                return ppn_error_set(err, -EPROTO, "ledger '%s' failed its integrity check: %s", l->path,
                                     res ? res : "(no result)");
        return 0;
}

int ledger_integrity_check(struct ledger *l, struct ppn_error *err) {
        return run_tx(l, false, integrity_tx, NULL, err);
}

/* ---- reading the state ---- */

static uint64_t read_meminfo_total(const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char buf[4096];
        size_t n;
        uint64_t total;

        if (!f)
                return 0;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        return ledger_parse_meminfo_total(buf, &total) == 0 ? total : 0;
}

/* Lists are stored as JSON arrays of strings: unambiguous for paths with commas or spaces. */
static int json_text_to_strv(const char *text, char ***ret) {
        struct json_object *a = text ? json_tokener_parse(text) : NULL;
        size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
        char **l = n ? calloc(n + 1, sizeof(char *)) : NULL;
        int r = 0;

        for (size_t i = 0; l && i < n && r == 0; i++) {
                const char *e = json_object_get_string(json_object_array_get_idx(a, i));
                if (!(l[i] = strdup(e ? e : "")))
                        r = -ENOMEM;
        }
        json_object_put(a);
        if (n && (!l || r < 0)) {
                for (size_t i = 0; l && i < n; i++)
                        free(l[i]);
                free(l);
                return -ENOMEM;
        }
        *ret = l;
        return 0;
}

static char *strv_to_json_text(char **l) {
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; l && l[i]; i++)
                json_object_array_add(a, json_object_new_string(l[i]));
        char *s = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
        json_object_put(a);
        return s;
}

static const char *col_text(sqlite3_stmt *s, int i) {
        return (const char *) sqlite3_column_text(s, i);
}

static int row_to_vm(sqlite3_stmt *s, struct ledger_vm *vm) {
        ledger_vm_init(vm);
        snprintf(vm->name, sizeof(vm->name), "%s", col_text(s, 0) ? col_text(s, 0) : "");
        snprintf(vm->uuid, sizeof(vm->uuid), "%s", col_text(s, 1) ? col_text(s, 1) : "");
        vm->min_bytes = (uint64_t) sqlite3_column_int64(s, 2);
        vm->max_bytes = (uint64_t) sqlite3_column_int64(s, 3);
        vm->shares = (uint32_t) sqlite3_column_int64(s, 4);
        vm->cpu_weight = (uint32_t) sqlite3_column_int64(s, 5);
        vm->vcpus = (uint32_t) sqlite3_column_int64(s, 6);
        if (col_text(s, 7) && !(vm->qmp = strdup(col_text(s, 7))))
                return -ENOMEM;
        if (json_text_to_strv(col_text(s, 8), &vm->disks) < 0 ||
            json_text_to_strv(col_text(s, 9), &vm->qemu_args) < 0)
                return -ENOMEM;
        vm->override_set = sqlite3_column_type(s, 10) != SQLITE_NULL;
        vm->override_target_bytes = (uint64_t) sqlite3_column_int64(s, 10);
        vm->override_expires = sqlite3_column_int64(s, 11);
        vm->base_bytes = (uint64_t) sqlite3_column_int64(s, 12);
        vm->vmem = sqlite3_column_int64(s, 13) != 0;
        if (col_text(s, 14) && !(vm->libvirt = strdup(col_text(s, 14))))
                return -ENOMEM;
        return 0;
}

static int load_node(struct ledger *l, struct ledger_state *st, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        struct ppn_error e = {};
        int r = prepare(l, "SELECT physical_bytes, reserve_bytes, min_floor_bytes FROM node WHERE id = 1", &s, err);
        int rc;

        if (r < 0)
                return r;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return rc == SQLITE_DONE ? ppn_error_set(err, -EPROTO, "ledger '%s' has no node row", l->path)
                                         : sql_error(l, rc, err, "reading node settings");
        st->settings = (struct ledger_node_settings) {
                .physical_bytes = (uint64_t) sqlite3_column_int64(s, 0),
                .reserve_bytes = (uint64_t) sqlite3_column_int64(s, 1),
                .min_floor_bytes = (uint64_t) sqlite3_column_int64(s, 2),
        };
        uint64_t total = st->settings.physical_bytes ? 0 : read_meminfo_total(l->meminfo_path);
        st->node_ok = ledger_node_resolve(&st->settings, total, &st->node, &e) == 0;
        if (!st->node_ok)
                snprintf(st->node_error, sizeof(st->node_error), "%s", e.msg);
        return 0;
}

static const char vm_columns[] =
        "name, uuid, min_bytes, max_bytes, shares, cpu_weight, vcpus, qmp, disks, qemu_args, "
        "override_target_bytes, override_expires, base_bytes, vmem, libvirt_domain";

static int load_vms(struct ledger *l, struct ledger_state *st, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        char sql[512];
        int r, rc;

        snprintf(sql, sizeof(sql), "SELECT %s FROM vm ORDER BY name", vm_columns);
        r = prepare(l, sql, &s, err);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct ledger_vm *n = realloc(st->vms, (st->n_vms + 1) * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                st->vms = n;
                r = row_to_vm(s, &st->vms[st->n_vms++]);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "reading VMs");
}

struct ledger_state *ledger_state_free(struct ledger_state *s) {
        if (!s)
                return NULL;
        free(s->lends);
        free(s->trusted);
        for (size_t i = 0; i < s->n_vms; i++)
                ledger_vm_done(&s->vms[i]);
        free(s->vms);
        free(s);
        return NULL;
}

static int load_lends(struct ledger *l, struct ledger_state *st, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "SELECT fence, grant_id, borrower, bytes, not_before, expires, revoked FROM fleet_lend "
                        "ORDER BY fence", &s, err), rc;

        if (r < 0)
                return r;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct ledger_lend *n = realloc(st->lends, (st->n_lends + 1) * sizeof(*n)), *x;
                if (!n)
                        return -ENOMEM;
                st->lends = n;
                x = &st->lends[st->n_lends++];
                *x = (struct ledger_lend) { .fence = sqlite3_column_int64(s, 0),
                                            .bytes = (uint64_t) sqlite3_column_int64(s, 3),
                                            .not_before = sqlite3_column_int64(s, 4),
                                            .expires = sqlite3_column_int64(s, 5),
                                            .revoked = sqlite3_column_int64(s, 6) != 0 };
                snprintf(x->grant_id, sizeof(x->grant_id), "%s", col_text(s, 1) ? col_text(s, 1) : "");
                snprintf(x->borrower, sizeof(x->borrower), "%s", col_text(s, 2) ? col_text(s, 2) : "");
        }
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "reading lendings");
}

static int load_trusted(struct ledger *l, struct ledger_trusted **ret, size_t *ret_n, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "SELECT id, public_key FROM fleet_trust ORDER BY id", &s, err), rc;

        if (r < 0)
                return r;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct ledger_trusted *n = realloc(*ret, (*ret_n + 1) * sizeof(*n)), *x;
                if (!n)
                        return -ENOMEM;
                *ret = n;
                x = &n[(*ret_n)++];
                snprintf(x->id, sizeof(x->id), "%s", col_text(s, 0) ? col_text(s, 0) : "");
                snprintf(x->public_key, sizeof(x->public_key), "%s", col_text(s, 1) ? col_text(s, 1) : "");
        }
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "reading trusted nodes");
}

uint64_t ledger_state_lent(const struct ledger_state *st, int64_t now) {
        uint64_t sum = 0;
        for (size_t i = 0; i < st->n_lends; i++)
                if (!st->lends[i].revoked && st->lends[i].expires > now)
                        sum += st->lends[i].bytes;
        return sum;
}

static int load_locked(struct ledger *l, struct ledger_state **ret, struct ppn_error *err) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = calloc(1, sizeof(*st));
        int r;

        if (!st)
                return -ENOMEM;
        r = load_node(l, st, err);
        if (r == 0)
                r = load_vms(l, st, err);
        if (r == 0)
                r = load_lends(l, st, err);
        if (r == 0)
                r = load_trusted(l, &st->trusted, &st->n_trusted, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(st);
        return 0;
}

static int load_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct ledger_state **ret = ud;
        ledger_state_free(*ret);   /* a retried attempt starts over */
        *ret = NULL;
        return load_locked(l, ret, err);
}

int ledger_load(struct ledger *l, struct ledger_state **ret, struct ppn_error *err) {
        struct ledger_state *st = NULL;
        int r = run_tx(l, false, load_tx, &st, err);
        if (r < 0) {
                ledger_state_free(st);
                return r;
        }
        *ret = st;
        return 0;
}

const struct ledger_vm *ledger_state_find(const struct ledger_state *s, const char *name) {
        for (size_t i = 0; i < s->n_vms; i++)
                if (strcmp(s->vms[i].name, name) == 0)
                        return &s->vms[i];
        return NULL;
}

int ledger_vm_get(struct ledger *l, const char *name, struct ledger_vm *ret, struct ppn_error *err) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        int r = ledger_load(l, &st, err);
        if (r < 0)
                return r;
        const struct ledger_vm *vm = ledger_state_find(st, name);
        if (!vm)
                return ppn_error_set(err, -ENOENT, "no VM '%s' in the ledger; see 'ppnctl vm list'", name);
        return ledger_vm_copy(vm, ret);
}

int ledger_node_get(struct ledger *l, struct ledger_node *ret, struct ppn_error *err) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        int r = ledger_load(l, &st, err);
        if (r < 0)
                return r;
        if (!st->node_ok)
                return ppn_error_set(err, -EINVAL, "%s", st->node_error);
        *ret = st->node;
        return 0;
}

/* ---- writing: load, change in memory, validate, admit, write the difference ---- */

typedef int (*change_fn)(struct ledger_state *after, void *ud, char *what, size_t what_len,
                         struct ppn_error *err);

struct write_ctx {
        change_fn change;
        void *ud;
        uid_t uid;
        sqlite3_stmt *audit;
};

static int state_copy(const struct ledger_state *src, struct ledger_state **ret) {
        _cleanup_(ledger_state_freep) struct ledger_state *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = *src;
        c->vms = NULL;
        c->n_vms = 0;
        c->lends = NULL;
        c->trusted = NULL;      /* writes never change trust through the state */
        c->n_trusted = 0;
        if (src->n_lends && !(c->lends = malloc(src->n_lends * sizeof(*c->lends))))
                return -ENOMEM;
        if (src->n_lends)
                memcpy(c->lends, src->lends, src->n_lends * sizeof(*c->lends));
        if (src->n_vms && !(c->vms = calloc(src->n_vms, sizeof(*c->vms))))
                return -ENOMEM;
        for (; c->n_vms < src->n_vms; c->n_vms++)
                if (ledger_vm_copy(&src->vms[c->n_vms], &c->vms[c->n_vms]) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

struct pool_vm *ledger_state_pool_vms(const struct ledger_state *st) {
        struct pool_vm *v = calloc(st->n_vms + 1, sizeof(*v));
        for (size_t i = 0; v && i < st->n_vms; i++)
                v[i] = (struct pool_vm) { .name = st->vms[i].name, .min_bytes = st->vms[i].min_bytes,
                                          .max_bytes = st->vms[i].max_bytes };
        return v;
}

static int check_after(struct ledger *l, const struct ledger_state *before, struct ledger_state *after,
                       const char *what, struct ppn_error *err) {
        uint64_t total = after->settings.physical_bytes ? 0 : read_meminfo_total(l->meminfo_path);
        int r = ledger_node_resolve(&after->settings, total, &after->node, err);
        if (r < 0)
                return r;
        after->node_ok = true;
        for (size_t i = 0; i < after->n_vms; i++) {
                r = ledger_vm_validate(&after->vms[i], &after->node, err);
                if (r < 0)
                        return r;
                /* Names are unique by construction (add refuses, import replaces by name). */
                for (size_t j = 0; j < i; j++)
                        if (strcmp(after->vms[i].uuid, after->vms[j].uuid) == 0)
                                return ppn_error_set(err, -EEXIST, "vm '%s' and vm '%s' would share the uuid %s; "
                                                     "names and uuids must be unique", after->vms[j].name,
                                                     after->vms[i].name, after->vms[i].uuid);
        }
        _cleanup_free_ struct pool_vm *pb = ledger_state_pool_vms(before), *pa = ledger_state_pool_vms(after);
        if (!pb || !pa)
                return -ENOMEM;
        int64_t now = (int64_t) (now_realtime_usec() / USEC_PER_SEC);
        struct pool_node nb = { before->node.physical_bytes, before->node.reserve_bytes, ledger_state_lent(before, now) };
        struct pool_node na = { after->node.physical_bytes, after->node.reserve_bytes, ledger_state_lent(after, now) };
        if (!before->node_ok)
                nb = (struct pool_node) {};   /* unknown capacity before: any change that fits is fine */
        return pool_admit(&nb, pb, before->n_vms, &na, pa, after->n_vms, what, err);
}

static int audit(struct ledger *l, struct write_ctx *w, const char *vm, const char *field, const char *old,
                 const char *new, struct ppn_error *err) {
        sqlite3_stmt *s = w->audit;
        int rc;
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, (int64_t) now_realtime_usec());
        sqlite3_bind_int64(s, 2, (int64_t) w->uid);
        sqlite3_bind_text(s, 3, vm, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, field, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, old, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, new, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "writing the audit log");
}

static bool same_text(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Audits every field that differs between a and b (either may be NULL: added/removed). */
static int audit_vm(struct ledger *l, struct write_ctx *w, const char *name, const struct ledger_vm *a,
                    const struct ledger_vm *b, bool *ret_changed, struct ppn_error *err) {
        bool changed = false;
        for (size_t i = 0; ledger_vm_fields[i]; i++) {
                _cleanup_free_ char *old = a ? ledger_vm_field_text(a, ledger_vm_fields[i]) : NULL;
                _cleanup_free_ char *new = b ? ledger_vm_field_text(b, ledger_vm_fields[i]) : NULL;
                if (same_text(old, new))
                        continue;
                changed = true;
                int r = audit(l, w, name, ledger_vm_fields[i], old, new, err);
                if (r < 0)
                        return r;
        }
        *ret_changed = changed;
        return 0;
}

static void bind_size(sqlite3_stmt *s, int i, uint64_t v) {
        if (v)
                sqlite3_bind_int64(s, i, (int64_t) v);
        else
                sqlite3_bind_null(s, i);
}

static int write_vm(struct ledger *l, const struct ledger_vm *vm, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        _cleanup_free_ char *disks = strv_to_json_text(vm->disks), *args = strv_to_json_text(vm->qemu_args);
        char sql[512];
        int r, rc;

        if (!disks || !args)
                return -ENOMEM;
        snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO vm (%s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", vm_columns);
        r = prepare(l, sql, &s, err);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, vm->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, vm->uuid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (int64_t) vm->min_bytes);
        sqlite3_bind_int64(s, 4, (int64_t) vm->max_bytes);
        sqlite3_bind_int64(s, 5, vm->shares);
        sqlite3_bind_int64(s, 6, vm->cpu_weight);
        sqlite3_bind_int64(s, 7, vm->vcpus);
        sqlite3_bind_text(s, 8, vm->qmp, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 9, disks, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 10, args, -1, SQLITE_STATIC);
        if (vm->override_set) {
                sqlite3_bind_int64(s, 11, (int64_t) vm->override_target_bytes);
                sqlite3_bind_int64(s, 12, vm->override_expires);
        }
        bind_size(s, 13, vm->base_bytes);
        sqlite3_bind_int(s, 14, vm->vmem);
        sqlite3_bind_text(s, 15, vm->libvirt, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "writing a VM");
}

static int delete_vm(struct ledger *l, const char *name, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "DELETE FROM vm WHERE name = ?", &s, err), rc;
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "removing a VM");
}

static int write_node(struct ledger *l, struct write_ctx *w, const struct ledger_node_settings *a,
                      const struct ledger_node_settings *b, struct ppn_error *err) {
        static const char *const names[] = { "physical", "reserve", "min-floor" };
        const uint64_t olds[] = { a->physical_bytes, a->reserve_bytes, a->min_floor_bytes };
        const uint64_t news[] = { b->physical_bytes, b->reserve_bytes, b->min_floor_bytes };
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r, rc;

        if (memcmp(olds, news, sizeof(olds)) == 0)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char o[24], n[24];
                if (olds[i] == news[i])
                        continue;
                snprintf(o, sizeof(o), "%" PRIu64, olds[i]);
                snprintf(n, sizeof(n), "%" PRIu64, news[i]);
                r = audit(l, w, NULL, names[i], olds[i] ? o : NULL, news[i] ? n : NULL, err);
                if (r < 0)
                        return r;
        }
        r = prepare(l, "UPDATE node SET physical_bytes = ?, reserve_bytes = ?, min_floor_bytes = ? WHERE id = 1",
                    &s, err);
        if (r < 0)
                return r;
        for (int i = 0; i < 3; i++)
                bind_size(s, i + 1, news[i]);
        rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "writing node settings");
}

static int write_diff(struct ledger *l, struct write_ctx *w, const struct ledger_state *before,
                      const struct ledger_state *after, struct ppn_error *err) {
        bool changed;
        int r = write_node(l, w, &before->settings, &after->settings, err);

        for (size_t i = 0; r == 0 && i < before->n_vms; i++)
                if (!ledger_state_find(after, before->vms[i].name)) {
                        r = audit_vm(l, w, before->vms[i].name, &before->vms[i], NULL, &changed, err);
                        if (r == 0)
                                r = delete_vm(l, before->vms[i].name, err);
                }
        for (size_t i = 0; r == 0 && i < after->n_vms; i++) {
                const struct ledger_vm *old = ledger_state_find(before, after->vms[i].name);
                r = audit_vm(l, w, after->vms[i].name, old, &after->vms[i], &changed, err);
                if (r == 0 && changed)
                        r = write_vm(l, &after->vms[i], err);
        }
        return r;
}

static int write_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct write_ctx *w = ud;
        _cleanup_(ledger_state_freep) struct ledger_state *before = NULL, *after = NULL;
        _cleanup_stmt_ sqlite3_stmt *audit_stmt = NULL;
        char what[256] = "this change";
        int r = load_locked(l, &before, err);

        if (r == 0)
                r = state_copy(before, &after);
        if (r == 0)
                r = w->change(after, w->ud, what, sizeof(what), err);
        if (r == 0)
                r = check_after(l, before, after, what, err);
        if (r == 0)
                r = prepare(l, "INSERT INTO audit (time_usec, uid, vm, field, old, new) VALUES (?,?,?,?,?,?)",
                            &audit_stmt, err);
        if (r < 0)
                return r;
        w->audit = audit_stmt;
        return write_diff(l, w, before, after, err);
}

static int write_change(struct ledger *l, change_fn fn, void *ud, uid_t uid, struct ppn_error *err) {
        struct write_ctx w = { .change = fn, .ud = ud, .uid = uid };
        return run_tx(l, true, write_tx, &w, err);
}

/* ---- the operations: each is a change_fn on the in-memory state ---- */

static struct ledger_vm *find_mut(struct ledger_state *st, const char *name, struct ppn_error *err) {
        for (size_t i = 0; i < st->n_vms; i++)
                if (strcmp(st->vms[i].name, name) == 0)
                        return &st->vms[i];
        ppn_error_set(err, -ENOENT, "no VM '%s' in the ledger; see 'ppnctl vm list'", name);
        return NULL;
}

static int append_vm(struct ledger_state *st, const struct ledger_vm *vm) {
        struct ledger_vm *n = realloc(st->vms, (st->n_vms + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        st->vms = n;
        int r = ledger_vm_copy(vm, &st->vms[st->n_vms]);
        if (r == 0)
                st->n_vms++;
        return r;
}

static int change_add(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct ledger_vm *vm = ud;
        char mib[POOL_MIB_MAX];

        if (ledger_state_find(st, vm->name))
                return ppn_error_set(err, -EEXIST, "vm '%s' already exists; change it with 'ppnctl vm set %s "
                                     "KEY=VALUE' or remove it first", vm->name, vm->name);
        snprintf(what, len, "admitting '%s' (min %s)", vm->name,
                 pool_format_mib((int64_t) vm->min_bytes, mib, sizeof(mib)));
        return append_vm(st, vm);
}

int ledger_vm_add(struct ledger *l, const struct ledger_vm *vm, uid_t uid,
                  char ret_uuid[LEDGER_UUID_LEN + 1], struct ppn_error *err) {
        struct ledger_vm v = *vm;   /* shallow: only uuid is changed */
        int r;

        if (!v.uuid[0]) {
                uint8_t rnd[16];
                _cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
                if (fd < 0 || read(fd, rnd, sizeof(rnd)) != (ssize_t) sizeof(rnd))
                        return ppn_error_set(err, -EIO, "cannot read /dev/urandom for the VM's uuid");
                ledger_uuid_format(rnd, v.uuid);
        }
        if (!ledger_name_valid(v.name))
                return ledger_vm_validate(&v, NULL, err);
        r = write_change(l, change_add, &v, uid, err);
        if (r == 0 && ret_uuid)
                memcpy(ret_uuid, v.uuid, sizeof(v.uuid));
        return r;
}

struct set_args {
        const char *name;
        const char *const *pairs;
        size_t n;
};

static int change_set(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct set_args *a = ud;
        struct ledger_vm *vm = find_mut(st, a->name, err);
        char o[POOL_MIB_MAX], n[POOL_MIB_MAX];

        if (!vm)
                return -ENOENT;
        uint64_t old_min = vm->min_bytes;
        /* An expired lease binds nothing: it is cleared here (audited with the change) so it
         * cannot refuse a new min or max. */
        if (vm->override_set && vm->override_expires <= (int64_t) (now_realtime_usec() / USEC_PER_SEC)) {
                vm->override_set = false;
                vm->override_target_bytes = 0;
                vm->override_expires = 0;
        }
        for (size_t i = 0; i < a->n; i++) {
                int r = ledger_vm_assign_pair(vm, a->pairs[i], err);
                if (r < 0)
                        return ppn_error_prefix(err, r, "vm '%s'", a->name);
        }
        snprintf(what, len, "raising the minimum of '%s' from %s to %s", a->name,
                 pool_format_mib((int64_t) old_min, o, sizeof(o)),
                 pool_format_mib((int64_t) vm->min_bytes, n, sizeof(n)));
        return 0;
}

int ledger_vm_set(struct ledger *l, const char *name, const char *const *pairs, size_t n_pairs, uid_t uid,
                  struct ppn_error *err) {
        struct set_args a = { name, pairs, n_pairs };
        return write_change(l, change_set, &a, uid, err);
}

static int change_remove(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        struct ledger_vm *vm = find_mut(st, ud, err);
        if (!vm)
                return -ENOENT;
        size_t i = (size_t) (vm - st->vms);
        ledger_vm_done(vm);
        memmove(&st->vms[i], &st->vms[i + 1], (st->n_vms - i - 1) * sizeof(*vm));
        st->n_vms--;
        return 0;
}

int ledger_vm_remove(struct ledger *l, const char *name, uid_t uid, struct ppn_error *err) {
        return write_change(l, change_remove, (void *) name, uid, err);
}

static bool vm_same(const struct ledger_vm *a, const struct ledger_vm *b) {
        json_object *ja = ledger_vm_to_json(a), *jb = ledger_vm_to_json(b);
        bool same = ja && jb && strcmp(json_object_to_json_string(ja), json_object_to_json_string(jb)) == 0;
        json_object_put(ja);
        json_object_put(jb);
        return same;
}

static int change_remove_unchanged(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct ledger_vm *expected = ud;
        struct ledger_vm *vm = find_mut(st, expected->name, err);
        if (!vm)
                return -ENOENT;
        if (!vm_same(vm, expected))
                return ppn_error_set(err, -ESTALE, "vm '%s' changed while it was being moved (see 'ppnctl ledger "
                                     "history %s'): its entry stays here", expected->name, expected->name);
        return change_remove(st, (void *) expected->name, what, len, err);
}

int ledger_vm_remove_unchanged(struct ledger *l, const struct ledger_vm *expected, uid_t uid, struct ppn_error *err) {
        return write_change(l, change_remove_unchanged, (void *) expected, uid, err);
}

static int change_node(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct set_args *a = ud;
        for (size_t i = 0; i < a->n; i++) {
                int r = ledger_node_assign_pair(&st->settings, a->pairs[i], err);
                if (r < 0)
                        return ppn_error_prefix(err, r, "node");
        }
        size_t off = 0;
        for (size_t i = 0; i < a->n && off < len; i++) {
                int w = snprintf(what + off, len - off, "%s%s", i ? " " : "setting ", a->pairs[i]);
                off += w > 0 ? (size_t) w : 0;
        }
        return 0;
}

int ledger_node_set(struct ledger *l, const char *const *pairs, size_t n_pairs, uid_t uid, struct ppn_error *err) {
        struct set_args a = { NULL, pairs, n_pairs };
        return write_change(l, change_node, &a, uid, err);
}

struct override_args {
        const char *name;
        bool set;
        uint64_t target;
        int64_t expires;
};

static int change_override(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct override_args *a = ud;
        struct ledger_vm *vm = find_mut(st, a->name, err);
        if (!vm)
                return -ENOENT;
        vm->override_set = a->set;
        vm->override_target_bytes = a->set ? a->target : 0;
        vm->override_expires = a->set ? a->expires : 0;
        return 0;
}

int ledger_override_set(struct ledger *l, const char *name, uint64_t target_bytes, int64_t expires,
                        uid_t uid, struct ppn_error *err) {
        struct override_args a = { name, true, target_bytes, expires };
        return write_change(l, change_override, &a, uid, err);
}

int ledger_override_clear(struct ledger *l, const char *name, uid_t uid, struct ppn_error *err) {
        struct override_args a = { name, false, 0, 0 };
        return write_change(l, change_override, &a, uid, err);
}

/* ---- export / import ---- */

static int export_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        struct json_object **ret = ud;
        int r = load_locked(l, &st, err);
        if (r < 0)
                return r;
        struct json_object *doc = json_object_new_object(), *vms = json_object_new_array();
        json_object_object_add(doc, "schema", json_object_new_int(LEDGER_SCHEMA_VERSION));
        json_object_object_add(doc, "node", ledger_node_settings_to_json(&st->settings));
        for (size_t i = 0; i < st->n_vms; i++)
                json_object_array_add(vms, ledger_vm_to_json(&st->vms[i]));
        json_object_object_add(doc, "vms", vms);
        json_object_put(*ret);
        *ret = doc;
        return 0;
}

int ledger_export(struct ledger *l, struct json_object **ret, struct ppn_error *err) {
        struct json_object *doc = NULL;
        int r = run_tx(l, false, export_tx, &doc, err);
        if (r < 0) {
                json_object_put(doc);
                return r;
        }
        *ret = doc;
        return 0;
}

struct import_args {
        struct json_object *doc;
        bool replace;
        const char *meminfo_path;
};

/* Names the entry for errors: "vms[2] ('web')" or "vms[2]". */
static int entry_error(struct ppn_error *err, int r, size_t i, struct json_object *o) {
        struct json_object *n;
        if (json_object_object_get_ex(o, "name", &n) && json_object_is_type(n, json_type_string))
                return ppn_error_prefix(err, r, "import: vms[%zu] ('%s')", i, json_object_get_string(n));
        return ppn_error_prefix(err, r, "import: vms[%zu]", i);
}

static int import_vm(struct ledger_state *st, struct json_object *o, size_t i, const struct ledger_node *node,
                     struct ppn_error *err) {
        struct ledger_vm vm;
        int r = ledger_vm_from_json(o, &vm, err);
        if (r < 0)
                return entry_error(err, r, i, o);
        struct ledger_vm *old = find_mut(st, vm.name, NULL);
        if (!vm.uuid[0])
                r = ppn_error_set(err, -EINVAL, "uuid: missing (an exported entry always has one)");
        else if (old && strcmp(old->uuid, vm.uuid) != 0)
                r = ppn_error_set(err, -EEXIST, "uuid: %s differs from the existing VM of that name (%s); "
                                  "remove or rename one of them", vm.uuid, old->uuid);
        else
                r = ledger_vm_validate(&vm, node, err);
        if (r == 0 && old) {
                ledger_vm_done(old);
                *old = vm;
                return 0;
        }
        if (r == 0)
                r = append_vm(st, &vm);
        ledger_vm_done(&vm);
        return r < 0 ? entry_error(err, r, i, o) : 0;
}

static int import_node(struct ledger_state *st, struct json_object *doc, struct ledger_node *ret,
                       const char *meminfo_path, struct ppn_error *err) {
        struct json_object *n;
        int r = 0;
        if (json_object_object_get_ex(doc, "node", &n) && !json_object_is_type(n, json_type_null))
                r = ledger_node_settings_from_json(n, &st->settings, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "import: node");
        uint64_t total = st->settings.physical_bytes ? 0 : read_meminfo_total(meminfo_path);
        r = ledger_node_resolve(&st->settings, total, ret, err);
        return r < 0 ? ppn_error_prefix(err, r, "import: node") : 0;
}

static int change_import(struct ledger_state *st, void *ud, char *what, size_t len, struct ppn_error *err) {
        const struct import_args *a = ud;
        struct json_object *vms, *schema;
        struct ledger_node node;
        size_t n;
        int r;

        if (!json_object_is_type(a->doc, json_type_object) ||
            !json_object_object_get_ex(a->doc, "vms", &vms) || !json_object_is_type(vms, json_type_array))
                return ppn_error_set(err, -EINVAL, "import: expected an object with a \"vms\" array (the "
                                     "form 'ppnctl ledger export' writes)");
        if (json_object_object_get_ex(a->doc, "schema", &schema) &&
            json_object_get_int64(schema) > LEDGER_SCHEMA_VERSION)
                return ppn_error_set(err, -EINVAL, "import: schema %" PRId64 " is newer than this build knows "
                                     "(%d); use a newer ppnctl", json_object_get_int64(schema), LEDGER_SCHEMA_VERSION);
        r = import_node(st, a->doc, &node, a->meminfo_path, err);
        if (r < 0)
                return r;
        if (a->replace)
                while (st->n_vms)
                        ledger_vm_done(&st->vms[--st->n_vms]);
        n = json_object_array_length(vms);
        for (size_t i = 0; i < n; i++) {
                r = import_vm(st, json_object_array_get_idx(vms, i), i, &node, err);
                if (r < 0)
                        return r;
        }
        snprintf(what, len, "importing %zu VM%s", n, n == 1 ? "" : "s");
        return 0;
}

int ledger_import(struct ledger *l, struct json_object *doc, bool replace, uid_t uid, struct ppn_error *err) {
        struct import_args a = { doc, replace, l->meminfo_path };
        return write_change(l, change_import, &a, uid, err);
}

/* ---- history ---- */

void ledger_audit_free(struct ledger_audit *a, size_t n) {
        for (size_t i = 0; a && i < n; i++) {
                free(a[i].vm);
                free(a[i].field);
                free(a[i].old_value);
                free(a[i].new_value);
        }
        free(a);
}

struct history_args {
        const char *vm;
        struct ledger_audit *rows;
        size_t n;
};

static char *dup_col(sqlite3_stmt *s, int i) {
        const char *t = col_text(s, i);
        return t ? strdup(t) : NULL;
}

static int history_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct history_args *h = ud;
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, h->vm ? "SELECT time_usec, uid, vm, field, old, new FROM audit WHERE vm = ? ORDER BY id"
                                 : "SELECT time_usec, uid, vm, field, old, new FROM audit ORDER BY id", &s, err);
        int rc;

        ledger_audit_free(h->rows, h->n);
        h->rows = NULL;
        h->n = 0;
        if (r < 0)
                return r;
        if (h->vm)
                sqlite3_bind_text(s, 1, h->vm, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct ledger_audit *n = realloc(h->rows, (h->n + 1) * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                h->rows = n;
                h->rows[h->n++] = (struct ledger_audit) {
                        .time_usec = sqlite3_column_int64(s, 0),
                        .uid = (uid_t) sqlite3_column_int64(s, 1),
                        .vm = dup_col(s, 2),
                        .field = dup_col(s, 3),
                        .old_value = dup_col(s, 4),
                        .new_value = dup_col(s, 5),
                };
        }
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, "reading the audit log");
}

int ledger_history(struct ledger *l, const char *vm, struct ledger_audit **ret, size_t *ret_n,
                   struct ppn_error *err) {
        struct history_args h = { .vm = vm };
        int r = run_tx(l, false, history_tx, &h, err);
        if (r < 0) {
                ledger_audit_free(h.rows, h.n);
                return r;
        }
        *ret = h.rows;
        *ret_n = h.n;
        return 0;
}

/* ---- the fleet: trusted node keys and lendings (schema 2) ---- */

static int audit_row(struct ledger *l, uid_t uid, const char *field, const char *old, const char *new,
                     struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        struct write_ctx w = { .uid = uid };
        int r = prepare(l, "INSERT INTO audit (time_usec, uid, vm, field, old, new) VALUES (?,?,?,?,?,?)", &s, err);
        if (r < 0)
                return r;
        w.audit = s;
        return audit(l, &w, NULL, field, old, new, err);
}

static int step_done(struct ledger *l, sqlite3_stmt *s, const char *what, struct ppn_error *err) {
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : sql_error(l, rc, err, what);
}

struct trust_args { const char *id, *public_key; uid_t uid; };

static int trust_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct trust_args *a = ud;
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "INSERT OR REPLACE INTO fleet_trust (id, public_key, added_usec) VALUES (?,?,?)", &s, err);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, a->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, a->public_key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (int64_t) now_realtime_usec());
        r = step_done(l, s, "recording a trusted node", err);
        return r < 0 ? r : audit_row(l, a->uid, "fleet-trust", NULL, a->id, err);
}

int ledger_trust_add(struct ledger *l, const char *id, const char *public_key, uid_t uid, struct ppn_error *err) {
        struct trust_args a = { id, public_key, uid };
        return run_tx(l, true, trust_tx, &a, err);
}

struct trust_list { struct ledger_trusted *v; size_t n; };

static int trust_list_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct trust_list *t = ud;
        free(t->v);     /* a retried attempt starts over */
        *t = (struct trust_list) {};
        return load_trusted(l, &t->v, &t->n, err);
}

int ledger_trust_list(struct ledger *l, struct ledger_trusted **ret, size_t *ret_n, struct ppn_error *err) {
        struct trust_list t = {};
        int r = run_tx(l, false, trust_list_tx, &t, err);
        if (r < 0) {
                free(t.v);
                return r;
        }
        *ret = t.v;
        *ret_n = t.n;
        return 0;
}

struct lend_args { const struct ledger_lend *lend; uid_t uid; int64_t fence; };

static int insert_lend(struct ledger *l, const struct ledger_lend *x, int64_t *ret_fence, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "INSERT INTO fleet_lend (grant_id, borrower, bytes, not_before, expires) VALUES (?,?,?,?,?)",
                        &s, err);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, x->grant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, x->borrower, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (int64_t) x->bytes);
        sqlite3_bind_int64(s, 4, x->not_before);
        sqlite3_bind_int64(s, 5, x->expires);
        r = step_done(l, s, "recording a lending", err);
        if (r == 0)
                *ret_fence = sqlite3_last_insert_rowid(l->db);
        return r;
}

/* Admission sees the lending as capacity taken from the pool, exactly as a VM's minimum. */
static int lend_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct lend_args *a = ud;
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        int64_t now = (int64_t) (now_realtime_usec() / USEC_PER_SEC);
        char what[128], size[FORMAT_SIZE_MAX], text[256];
        int r = load_locked(l, &st, err);

        if (r < 0)
                return r;
        if (!st->node_ok)
                return ppn_error_set(err, -EINVAL, "cannot lend: %s", st->node_error);
        _cleanup_free_ struct pool_vm *pv = ledger_state_pool_vms(st);
        if (!pv)
                return -ENOMEM;
        struct pool_node nb = { st->node.physical_bytes, st->node.reserve_bytes, ledger_state_lent(st, now) };
        struct pool_node na = nb;
        na.lent_bytes += a->lend->bytes;
        snprintf(what, sizeof(what), "lending %s to node %.12s", format_size(a->lend->bytes, size, sizeof(size)),
                 a->lend->borrower);
        r = pool_admit(&nb, pv, st->n_vms, &na, pv, st->n_vms, what, err);
        if (r == 0)
                r = insert_lend(l, a->lend, &a->fence, err);
        if (r < 0)
                return r;
        snprintf(text, sizeof(text), "grant %s: %" PRIu64 " bytes to %s from %" PRId64 " until %" PRId64 ", fence %" PRId64,
                 a->lend->grant_id, a->lend->bytes, a->lend->borrower, a->lend->not_before, a->lend->expires, a->fence);
        return audit_row(l, a->uid, "lend", NULL, text, err);
}

int ledger_lend_add(struct ledger *l, const struct ledger_lend *lend, uid_t uid, int64_t *ret_fence,
                    struct ppn_error *err) {
        struct lend_args a = { lend, uid, 0 };
        int r;

        if (lend->bytes == 0 || lend->bytes > LEDGER_SIZE_MAX || lend->expires <= lend->not_before)
                return ppn_error_set(err, -EINVAL, "a lending needs a size up to 1 PiB and an expiry after its start");
        r = run_tx(l, true, lend_tx, &a, err);
        if (r == 0)
                *ret_fence = a.fence;
        return r;
}

struct revoke_args { const char *grant_id; uid_t uid; };

static int lend_revoke_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        struct revoke_args *a = ud;
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(l, "UPDATE fleet_lend SET revoked = 1 WHERE grant_id = ? AND revoked = 0", &s, err);

        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, a->grant_id, -1, SQLITE_STATIC);
        r = step_done(l, s, "revoking a lending", err);
        if (r < 0)
                return r;
        if (sqlite3_changes(l->db) == 0)
                return ppn_error_set(err, -ENOENT, "no active lending with grant id %s in this node's ledger; "
                                     "see 'ppnctl fleet'", a->grant_id);
        return audit_row(l, a->uid, "lend", a->grant_id, "revoked", err);
}

int ledger_lend_revoke(struct ledger *l, const char *grant_id, uid_t uid, struct ppn_error *err) {
        struct revoke_args a = { grant_id, uid };
        return run_tx(l, true, lend_revoke_tx, &a, err);
}

/* ---- a VM admitted on a lending (live moves, docs/relocation.md) ---- */

struct draw_args {
        const struct ledger_vm *vm;     /* add: the entry; remove: its name and min */
        const char *grant_id;
        const char *borrower;
        bool add;
        uid_t uid;
};

/* Moves vm->min_bytes between an active lending to `borrower` and the VM's entry: the
 * capacity held for the borrower becomes the minimum of the borrower's VM (and back). */
static int draw_lend(struct ledger *l, const struct draw_args *a, struct ppn_error *err) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int64_t now = (int64_t) (now_realtime_usec() / USEC_PER_SEC);
        char text[160];
        int r = prepare(l, a->add ? "UPDATE fleet_lend SET bytes = bytes - ?1 WHERE grant_id = ?2 AND borrower = ?3 "
                                    "AND revoked = 0 AND not_before <= ?4 AND expires > ?4 AND bytes >= ?1"
                                  : "UPDATE fleet_lend SET bytes = bytes + ?1 WHERE grant_id = ?2", &s, err);
        if (r < 0)
                return r;
        bind_size(s, 1, a->vm->min_bytes);
        sqlite3_bind_text(s, 2, a->grant_id, -1, SQLITE_STATIC);
        if (a->add) {
                sqlite3_bind_text(s, 3, a->borrower, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 4, now);
        }
        if ((r = step_done(l, s, "drawing on a lending", err)) < 0)
                return r;
        if (sqlite3_changes(l->db) == 0)
                return ppn_error_set(err, a->add ? -ENOSPC : -ENOENT, "grant %s: no active lending to node %.12s "
                                     "here holds %" PRIu64 " MiB more (see 'ppnctl fleet')", a->grant_id,
                                     a->borrower ? a->borrower : "?", a->vm->min_bytes / MIB);
        snprintf(text, sizeof(text), "%s %" PRIu64 " bytes %s vm %s", a->add ? "drew" : "returned", a->vm->min_bytes,
                 a->add ? "for" : "from", a->vm->name);
        return audit_row(l, a->uid, "lend", a->grant_id, text, err);
}

static int draw_tx(struct ledger *l, void *ud, struct ppn_error *err) {
        const struct draw_args *a = ud;
        struct write_ctx w = { .change = a->add ? change_add : change_remove,
                               .ud = a->add ? (void *) a->vm : (void *) a->vm->name, .uid = a->uid };
        int r = draw_lend(l, a, err);
        return r < 0 ? r : write_tx(l, &w, err);
}

int ledger_vm_add_on_grant(struct ledger *l, const struct ledger_vm *vm, const char *grant_id, const char *borrower,
                           uid_t uid, struct ppn_error *err) {
        struct draw_args a = { vm, grant_id, borrower, true, uid };
        if (!ledger_name_valid(vm->name) || !vm->uuid[0])
                return ppn_error_set(err, -EINVAL, "a VM admitted on a lending needs a valid name and its uuid");
        return run_tx(l, true, draw_tx, &a, err);
}

int ledger_vm_remove_to_grant(struct ledger *l, const struct ledger_vm *vm, const char *grant_id, uid_t uid,
                              struct ppn_error *err) {
        struct draw_args a = { vm, grant_id, NULL, false, uid };
        return run_tx(l, true, draw_tx, &a, err);
}
