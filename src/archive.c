/* SPDX-License-Identifier: Apache-2.0 */
#include "archive.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <nettle/sha2.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "jsonutil.h"
#include "log.h"

static const char *const formats[] = { "raw", "qcow2" };

void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_freep(char ***v) { strv_free(*v); }
#define _cleanup_strv_free_ _cleanup_(strv_freep)

static void disk_done(struct archive_disk *d) {
        free(d->file);
        free(d->format);
        free(d->source);
        memset(d, 0, sizeof(*d));
}

void archive_manifest_done(struct archive_manifest *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_disks; i++)
                disk_done(&m->disks[i]);
        free(m->disks);
        free(m->name);
        free(m->uuid);
        json_object_put(m->vm);
        memset(m, 0, sizeof(*m));
}

const char *archive_detect_format(const void *header, size_t len) {
        static const unsigned char qcow2_magic[4] = { 'Q', 'F', 'I', 0xfb };
        return len >= 4 && memcmp(header, qcow2_magic, 4) == 0 ? "qcow2" : "raw";
}

bool archive_file_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > 255 || name[0] == '.' || strchr(name, '/') || strcmp(name, ARCHIVE_MANIFEST) == 0)
                return false;
        for (const char *p = name; *p; p++)
                if (iscntrl((unsigned char) *p))
                        return false;
        return true;
}

static bool in_list(char **v, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i], s) == 0)
                        return true;
        return false;
}

/* "disk.img" -> "disk-N.img" (suffix before the last dot, if any). */
static char *name_with_suffix(const char *base, unsigned k) {
        const char *dot = strrchr(base, '.');
        char *s;
        int r = dot && dot != base ? asprintf(&s, "%.*s-%u%s", (int) (dot - base), base, k, dot)
                                   : asprintf(&s, "%s-%u", base, k);
        return r < 0 ? NULL : s;
}

static char *unique_name(const char *source, size_t index, char **taken, size_t n_taken) {
        const char *slash = strrchr(source, '/');
        const char *base = slash ? slash + 1 : source;
        _cleanup_free_ char *fallback = NULL;
        if (!archive_file_name_valid(base)) {
                if (asprintf(&fallback, "disk%zu.img", index) < 0)
                        return NULL;
                base = fallback;
        }
        char *s = strdup(base);
        /* At most n_taken names can be in the way, so this ends by k = n_taken + 1. */
        for (unsigned k = 1; s && in_list(taken, n_taken, s); k++) {
                free(s);
                s = name_with_suffix(base, k);
        }
        return s;
}

int archive_file_names(const char *const *sources, size_t n, char ***ret) {
        _cleanup_strv_free_ char **v = calloc(n + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(v[i] = unique_name(sources[i], i, v, i)))
                        return -ENOMEM;
        *ret = TAKE_PTR(v);
        return 0;
}

json_object *archive_manifest_to_json(const struct archive_manifest *m) {
        json_object *o = json_object_new_object(), *disks = json_object_new_array();
        json_object_object_add(o, "archive", json_object_new_string(ARCHIVE_KIND));
        json_object_object_add(o, "version", json_object_new_int(ARCHIVE_VERSION));
        json_object_object_add(o, "name", json_object_new_string(m->name));
        json_object_object_add(o, "uuid", json_object_new_string(m->uuid));
        json_object_object_add(o, "created", json_object_new_int64(m->created));
        json_object_object_add(o, "vm", m->vm ? json_object_get(m->vm) : NULL);
        for (size_t i = 0; i < m->n_disks; i++) {
                const struct archive_disk *d = &m->disks[i];
                json_object *j = json_object_new_object();
                json_object_object_add(j, "file", json_object_new_string(d->file));
                json_object_object_add(j, "format", json_object_new_string(d->format));
                json_object_object_add(j, "size", json_object_new_int64((int64_t) d->size));
                json_object_object_add(j, "sha256", json_object_new_string(d->sha256));
                if (d->source)
                        json_object_object_add(j, "source", json_object_new_string(d->source));
                json_object_array_add(disks, j);
        }
        json_object_object_add(o, "disks", disks);
        return o;
}

static bool get_int64(json_object *o, const char *key, int64_t *ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return false;
        errno = 0;
        *ret = json_object_get_int64(v);
        return errno == 0;
}

static bool sha256_hex_valid(const char *s) {
        if (!s || strlen(s) != ARCHIVE_SHA256_HEX)
                return false;
        for (; *s; s++)
                if (!isdigit((unsigned char) *s) && !(*s >= 'a' && *s <= 'f'))
                        return false;
        return true;
}

static bool format_known(const char *f) {
        for (size_t i = 0; f && i < ELEMENTSOF(formats); i++)
                if (strcmp(f, formats[i]) == 0)
                        return true;
        return false;
}

static int disk_from_json(json_object *j, size_t i, struct archive_disk *d, struct ppn_error *err) {
        const char *file = json_member_string(j, "file"), *format = json_member_string(j, "format");
        const char *sha = json_member_string(j, "sha256"), *source = json_member_string(j, "source");
        int64_t size;
        if (!archive_file_name_valid(file))
                return ppn_error_set(err, -EBADMSG, "disks[%zu].file: missing or not a plain file name", i);
        if (!format_known(format))
                return ppn_error_set(err, -EBADMSG, "disks[%zu] ('%s').format: want \"raw\" or \"qcow2\"", i, file);
        if (!get_int64(j, "size", &size) || size < 0)
                return ppn_error_set(err, -EBADMSG, "disks[%zu] ('%s').size: want a byte count", i, file);
        if (!sha256_hex_valid(sha))
                return ppn_error_set(err, -EBADMSG, "disks[%zu] ('%s').sha256: want 64 lowercase hex digits", i, file);
        d->file = strdup(file);
        d->format = strdup(format);
        d->source = source ? strdup(source) : NULL;
        d->size = (uint64_t) size;
        memcpy(d->sha256, sha, sizeof(d->sha256));
        if (!d->file || !d->format || (source && !d->source))
                return -ENOMEM;
        return 0;
}

static int disks_from_json(json_object *o, struct archive_manifest *m, struct ppn_error *err) {
        json_object *a;
        if (!json_object_object_get_ex(o, "disks", &a) || !json_object_is_type(a, json_type_array))
                return ppn_error_set(err, -EBADMSG, "disks: missing or not an array");
        size_t n = json_object_array_length(a);
        m->disks = calloc(n ? n : 1, sizeof(*m->disks));
        if (!m->disks)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *j = json_object_array_get_idx(a, i);
                if (!json_object_is_type(j, json_type_object))
                        return ppn_error_set(err, -EBADMSG, "disks[%zu]: not an object", i);
                int r = disk_from_json(j, i, &m->disks[i], err);
                m->n_disks = i + 1;
                if (r < 0)
                        return r;
                for (size_t k = 0; k < i; k++)
                        if (strcmp(m->disks[k].file, m->disks[i].file) == 0)
                                return ppn_error_set(err, -EBADMSG, "disks[%zu]: file '%s' listed twice", i,
                                                     m->disks[i].file);
        }
        return 0;
}

static int header_from_json(json_object *o, struct archive_manifest *m, struct ppn_error *err) {
        const char *kind = json_member_string(o, "archive"), *name = json_member_string(o, "name");
        const char *uuid = json_member_string(o, "uuid");
        int64_t version;
        json_object *vm;
        if (!kind || strcmp(kind, ARCHIVE_KIND) != 0)
                return ppn_error_set(err, -EBADMSG, "archive: want \"%s\"", ARCHIVE_KIND);
        if (!get_int64(o, "version", &version) || version != ARCHIVE_VERSION)
                return ppn_error_set(err, -EBADMSG, "version: want %d (written by a newer ppn-pool?)", ARCHIVE_VERSION);
        if (!name || !*name || !uuid || !*uuid)
                return ppn_error_set(err, -EBADMSG, "name and uuid: required strings");
        if (!json_object_object_get_ex(o, "vm", &vm) || !json_object_is_type(vm, json_type_object))
                return ppn_error_set(err, -EBADMSG, "vm: missing or not an object");
        if (!get_int64(o, "created", &m->created))
                m->created = 0;
        m->name = strdup(name);
        m->uuid = strdup(uuid);
        m->vm = json_object_get(vm);
        return m->name && m->uuid ? 0 : -ENOMEM;
}

int archive_manifest_from_json(json_object *o, struct archive_manifest *ret, struct ppn_error *err) {
        struct archive_manifest m = {};
        if (!json_object_is_type(o, json_type_object))
                return ppn_error_set(err, -EBADMSG, "not a JSON object");
        int r = header_from_json(o, &m, err);
        if (r >= 0)
                r = disks_from_json(o, &m, err);
        if (r < 0) {
                archive_manifest_done(&m);
                return r == -ENOMEM ? ppn_error_set(err, r, "out of memory") : r;
        }
        *ret = m;
        return 0;
}

/* Reads a whole small file (at most max bytes). */
static int read_small_file(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        return read_full_fd(fd, max, ret, ret_len);
}

/* A manifest of 1 MiB would describe thousands of disks: larger is not ours. */
#define MANIFEST_MAX (1u << 20)

int archive_manifest_read(const char *dir, struct archive_manifest *ret, struct ppn_error *err) {
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        if (dfd < 0)
                return ppn_error_set(err, -errno, "%s: cannot open the archive directory: %s", dir, strerror(errno));
        int r = read_small_file(dfd, ARCHIVE_MANIFEST, MANIFEST_MAX, &text, &len);
        if (r == -ENOENT)
                return ppn_error_set(err, r, "%s: no %s: not a VM archive (or an export that did not finish)",
                                     dir, ARCHIVE_MANIFEST);
        if (r < 0)
                return ppn_error_set(err, r, "%s/%s: %s", dir, ARCHIVE_MANIFEST, strerror(-r));
        json_tokener *tok = json_tokener_new();
        json_object *o = tok ? json_tokener_parse_ex(tok, text, (int) len) : NULL;
        bool complete = tok && json_tokener_get_error(tok) == json_tokener_success &&
                        json_tokener_get_parse_end(tok) == len;
        if (tok)
                json_tokener_free(tok);
        if (!o || !complete) {
                json_object_put(o);
                return ppn_error_set(err, -EBADMSG, "%s/%s: not valid JSON (truncated or edited?)", dir, ARCHIVE_MANIFEST);
        }
        r = archive_manifest_from_json(o, ret, err);
        json_object_put(o);
        if (r < 0)
                return ppn_error_prefix(err, r, "%s/%s", dir, ARCHIVE_MANIFEST);
        return 0;
}

static int write_all(int fd, const void *data, size_t len) {
        const char *p = data;
        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

int archive_write_file_atomic(int dirfd, const char *dirpath, const char *name, const void *data,
                              size_t len, mode_t mode, struct ppn_error *err) {
        char tmp[300];
        if (snprintf(tmp, sizeof(tmp), ".%s.tmp-%d", name, (int) getpid()) >= (int) sizeof(tmp))
                return ppn_error_set(err, -ENAMETOOLONG, "%s/%s: name too long", dirpath, name);
        _cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0)
                return ppn_error_set(err, -errno, "%s/%s: cannot create: %s", dirpath, tmp, strerror(errno));
        int r = write_all(fd, data, len);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(dirfd, tmp, 0);
                return ppn_error_set(err, r, "%s/%s: cannot write: %s", dirpath, name, strerror(-r));
        }
        if (fsync(dirfd) < 0)
                return ppn_error_set(err, -errno, "%s: fsync of the directory failed: %s", dirpath, strerror(errno));
        return 0;
}

static void hex(const uint8_t *d, size_t n, char *out) {
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[d[i] >> 4];
                out[2 * i + 1] = digits[d[i] & 15];
        }
        out[2 * n] = 0;
}

static bool all_zero(const char *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* A pass over a file's content: data regions read, holes fed as zeros (without reading). */
struct pass {
        int fd, out;                 /* out: -1 when only hashing */
        const char *file;            /* for progress and messages */
        uint64_t size, done, written;
        struct sha256_ctx sha;
        char *buf;
        archive_progress_fn progress;
        void *userdata;
};

static int pass_hole(struct pass *p, uint64_t end) {
        memset(p->buf, 0, ARCHIVE_CHUNK);
        while (p->done < end) {
                size_t n = (size_t) (end - p->done < ARCHIVE_CHUNK ? end - p->done : ARCHIVE_CHUNK);
                sha256_update(&p->sha, n, (const uint8_t *) p->buf);
                p->done += n;
                if (p->progress)
                        p->progress(p->file, p->done, p->size, p->userdata);
        }
        return 0;
}

/* Writes the non-zero 64 KiB blocks of buf[0..n) at offset off of the output. */
static int write_sparse(struct pass *p, const char *buf, size_t n, uint64_t off) {
        for (size_t i = 0; i < n; i += ARCHIVE_ZERO_BLOCK) {
                size_t k = n - i < ARCHIVE_ZERO_BLOCK ? n - i : ARCHIVE_ZERO_BLOCK;
                if (all_zero(buf + i, k))
                        continue;
                for (size_t w = 0; w < k;) {
                        ssize_t r = pwrite(p->out, buf + i + w, k - w, (off_t) (off + i + w));
                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r < 0)
                                return -errno;
                        w += (size_t) r;
                }
                p->written += k;
        }
        return 0;
}

static int pass_data(struct pass *p, uint64_t end) {
        while (p->done < end) {
                size_t want = (size_t) (end - p->done < ARCHIVE_CHUNK ? end - p->done : ARCHIVE_CHUNK);
                ssize_t n = pread(p->fd, p->buf, want, (off_t) p->done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ENODATA;   /* the file shrank under us */
                sha256_update(&p->sha, (size_t) n, (const uint8_t *) p->buf);
                if (p->out >= 0) {
                        int r = write_sparse(p, p->buf, (size_t) n, p->done);
                        if (r < 0)
                                return r;
                }
                p->done += (uint64_t) n;
                if (p->progress)
                        p->progress(p->file, p->done, p->size, p->userdata);
        }
        return 0;
}

/* Walks data and holes. SEEK_DATA unsupported (EINVAL on some filesystems): all data. */
static int pass_run(struct pass *p) {
        while (p->done < p->size) {
                off_t data = lseek(p->fd, (off_t) p->done, SEEK_DATA);
                if (data < 0 && errno == ENXIO)
                        data = (off_t) p->size;          /* only a hole remains */
                else if (data < 0)
                        return pass_data(p, p->size);
                int r = pass_hole(p, (uint64_t) data);
                if (r < 0 || p->done >= p->size)
                        return r;
                off_t hole = lseek(p->fd, data, SEEK_HOLE);
                uint64_t end = hole < 0 || (uint64_t) hole > p->size ? p->size : (uint64_t) hole;
                if ((r = pass_data(p, end)) < 0)
                        return r;
        }
        return 0;
}

/* Opens a source read-only, relative to dirfd (AT_FDCWD for a path); O_NOATIME where allowed,
 * so even atime is left alone. The file is checked through the descriptor that is then read:
 * what was checked is what is hashed and copied. nofollow: a symbolic link is refused (-ELOOP)
 * rather than followed (an archive's own files). */
static int open_source_at(int dirfd, const char *path, bool nofollow, struct stat *st) {
        int flags = O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0);
        int fd = openat(dirfd, path, flags | O_NOATIME);
        if (fd < 0 && errno == EPERM)
                fd = openat(dirfd, path, flags);
        if (fd < 0)
                return -errno;
        if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
                int r = S_ISREG(st->st_mode) ? -errno : -EINVAL;
                close(fd);
                return r;
        }
        return fd;
}

static int open_source(const char *path, struct stat *st) {
        return open_source_at(AT_FDCWD, path, false, st);
}

static int source_error(struct ppn_error *err, const char *path, int r) {
        if (r == -EINVAL)
                return ppn_error_set(err, r, "%s: not a regular file", path);
        if (r == -ELOOP)
                return ppn_error_set(err, -EBADMSG, "%s: a symbolic link, not a regular file (an archive holds its "
                                     "images themselves); copy the archive again", path);
        return ppn_error_set(err, r, "%s: %s", path, strerror(-r));
}

/* Hashes the open file fd of size bytes (path only names it in messages). */
static int hash_fd(int fd, uint64_t size, const char *path, archive_progress_fn progress, void *userdata,
                   char ret_hex[ARCHIVE_SHA256_HEX + 1], struct ppn_error *err) {
        _cleanup_free_ char *buf = malloc(ARCHIVE_CHUNK);
        uint8_t digest[SHA256_DIGEST_SIZE];
        if (!buf)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        struct pass p = { .fd = fd, .out = -1, .file = path, .size = size, .buf = buf,
                          .progress = progress, .userdata = userdata };
        sha256_init(&p.sha);
        int r = pass_run(&p);
        if (r < 0)
                return ppn_error_set(err, r, "%s: read failed: %s", path, strerror(-r));
        sha256_digest(&p.sha, SHA256_DIGEST_SIZE, digest);
        hex(digest, sizeof(digest), ret_hex);
        return 0;
}

int archive_hash_file(const char *path, archive_progress_fn progress, void *userdata,
                      char ret_hex[ARCHIVE_SHA256_HEX + 1], uint64_t *ret_size, struct ppn_error *err) {
        struct stat st;
        _cleanup_close_ int fd = open_source(path, &st);
        if (fd < 0)
                return source_error(err, path, fd);
        int r = hash_fd(fd, (uint64_t) st.st_size, path, progress, userdata, ret_hex, err);
        if (r >= 0 && ret_size)
                *ret_size = (uint64_t) st.st_size;
        return r;
}

static int copy_into(struct pass *p, int out) {
        int r = pass_run(p);
        /* The tail may be a hole: set the size explicitly. */
        if (r >= 0 && ftruncate(out, (off_t) p->size) < 0)
                r = -errno;
        if (r >= 0 && fsync(out) < 0)
                r = -errno;
        return r;
}

/* Copies the open file fd of size bytes (src only names it in messages) to a new dst_name. */
static int copy_fd(int fd, uint64_t size, const char *src, int dst_dirfd, const char *dst_name,
                   archive_progress_fn progress, void *userdata, struct archive_copy_result *ret,
                   struct ppn_error *err) {
        _cleanup_free_ char *buf = malloc(ARCHIVE_CHUNK);
        uint8_t digest[SHA256_DIGEST_SIZE];
        if (!buf)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        _cleanup_close_ int out = openat(dst_dirfd, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (out < 0)
                return ppn_error_set(err, -errno, "%s: cannot create: %s", dst_name, strerror(errno));
        struct pass p = { .fd = fd, .out = out, .file = dst_name, .size = size, .buf = buf,
                          .progress = progress, .userdata = userdata };
        sha256_init(&p.sha);
        int r = copy_into(&p, out);
        if (r < 0) {
                unlinkat(dst_dirfd, dst_name, 0);
                return ppn_error_set(err, r, "copying %s to %s: %s", src, dst_name, strerror(-r));
        }
        /* Drop the copy from the page cache so a verification pass reads the disk. */
        posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED);
        sha256_digest(&p.sha, SHA256_DIGEST_SIZE, digest);
        hex(digest, sizeof(digest), ret->sha256);
        ret->size = p.size;
        ret->data_bytes = p.written;
        return 0;
}

int archive_copy_file(const char *src, int dst_dirfd, const char *dst_name, archive_progress_fn progress,
                      void *userdata, struct archive_copy_result *ret, struct ppn_error *err) {
        struct stat st;
        _cleanup_close_ int fd = open_source(src, &st);
        if (fd < 0)
                return source_error(err, src, fd);
        return copy_fd(fd, (uint64_t) st.st_size, src, dst_dirfd, dst_name, progress, userdata, ret, err);
}

/* Opens an archive's own file: in dfd, never through a symbolic link, a regular file. */
static int open_member(int dfd, const char *file, struct stat *st, struct ppn_error *err) {
        int fd = open_source_at(dfd, file, true, st);
        if (fd == -ENOENT)
                return ppn_error_set(err, fd, "%s: missing: the archive is incomplete; copy it again from the source",
                                     file);
        if (fd == -EINVAL)
                return ppn_error_set(err, -EBADMSG, "%s: not a regular file", file);
        return fd < 0 ? source_error(err, file, fd) : fd;
}

static int verify_one(int dfd, const struct archive_disk *d, archive_progress_fn progress, void *userdata,
                      struct ppn_error *err) {
        char got[ARCHIVE_SHA256_HEX + 1];
        struct stat st;
        _cleanup_close_ int fd = open_member(dfd, d->file, &st, err);
        if (fd < 0)
                return fd;
        if ((uint64_t) st.st_size != d->size)
                return ppn_error_set(err, -EBADMSG, "%s: size %jd, manifest says %ju (truncated or altered copy); "
                                     "copy the archive again", d->file, (intmax_t) st.st_size, (uintmax_t) d->size);
        int r = hash_fd(fd, d->size, d->file, progress, userdata, got, err);
        if (r < 0)
                return r;
        if (strcmp(got, d->sha256) != 0)
                return ppn_error_set(err, -EBADMSG, "%s: sha256 mismatch (archive altered or corrupt): "
                                     "got %.12s..., manifest says %.12s...; copy the archive again",
                                     d->file, got, d->sha256);
        return 0;
}

int archive_verify(const char *dir, const struct archive_manifest *m, archive_progress_fn progress,
                   void *userdata, struct ppn_error *err) {
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return ppn_error_set(err, -errno, "%s: %s", dir, strerror(errno));
        for (size_t i = 0; i < m->n_disks; i++) {
                int r = verify_one(dfd, &m->disks[i], progress, userdata, err);
                if (r < 0)
                        return ppn_error_prefix(err, r, "%s", dir);
        }
        return 0;
}

/* Opens dir for an export: created (0700 -> *ret_created) or existing and empty. */
static int open_export_dir(const char *dir, bool *ret_created, struct ppn_error *err) {
        bool created = mkdir(dir, 0755) == 0;
        if (!created && errno != EEXIST)
                return ppn_error_set(err, -errno, "%s: cannot create the archive directory: %s", dir, strerror(errno));
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return ppn_error_set(err, -errno, "%s: %s", dir, strerror(errno));
        if (!created) {
                int dup_fd = dup(fd);
                DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
                struct dirent *de;
                bool empty = true;
                while (d && (de = readdir(d)))
                        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                                empty = false;
                if (d)
                        closedir(d);
                if (!empty) {
                        close(fd);
                        return ppn_error_set(err, -EEXIST, "%s: exists and is not empty; nothing was "
                                             "overwritten; choose a new directory", dir);
                }
        }
        *ret_created = created;
        return fd;
}

static void undo_export(int dfd, const char *dir, const struct archive_manifest *m, bool created) {
        unlinkat(dfd, ARCHIVE_MANIFEST, 0);
        for (size_t i = 0; i < m->n_disks; i++)
                if (m->disks[i].file)
                        unlinkat(dfd, m->disks[i].file, 0);
        if (created)
                rmdir(dir);
}

/* Copies sources[i] to names[i]; each name moves into the manifest once its file exists (so a
 * failure undoes exactly the files created). */
static int copy_named(int dfd, struct archive_manifest *m, const char *const *sources, char **names,
                      archive_progress_fn progress, void *userdata, struct ppn_error *err) {
        for (size_t i = 0; i < m->n_disks; i++) {
                struct archive_disk *d = &m->disks[i];
                struct archive_copy_result c;
                char header[4] = {};
                int r = archive_copy_file(sources[i], dfd, names[i], progress, userdata, &c, err);
                if (r < 0)
                        return r;
                d->file = TAKE_PTR(names[i]);
                _cleanup_close_ int fd = openat(dfd, d->file, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || pread(fd, header, sizeof(header), 0) < 0)
                        return ppn_error_set(err, -errno, "%s: %s", d->file, strerror(errno));
                d->format = strdup(archive_detect_format(header, c.size < 4 ? (size_t) c.size : 4));
                d->source = strdup(sources[i]);
                d->size = c.size;
                memcpy(d->sha256, c.sha256, sizeof(d->sha256));
                if (!d->format || !d->source)
                        return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        return 0;
}

static int copy_disks(int dfd, struct archive_manifest *m, const char *const *sources,
                      archive_progress_fn progress, void *userdata, struct ppn_error *err) {
        char **names = NULL;
        if (archive_file_names(sources, m->n_disks, &names) < 0)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        int r = copy_named(dfd, m, sources, names, progress, userdata, err);
        for (size_t i = 0; i < m->n_disks; i++)
                free(names[i]);   /* those not taken: NULL holes stop strv_free() */
        free(names);
        return r;
}

static int write_manifest(int dfd, const char *dir, const struct archive_manifest *m, struct ppn_error *err) {
        json_object *o = archive_manifest_to_json(m);
        const char *text = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
        _cleanup_free_ char *line = NULL;
        int r = text && asprintf(&line, "%s\n", text) >= 0 ? 0 : -ENOMEM;
        json_object_put(o);
        if (r < 0)
                return ppn_error_set(err, r, "out of memory");
        return archive_write_file_atomic(dfd, dir, ARCHIVE_MANIFEST, line, strlen(line), 0644, err);
}

int archive_export(const char *dir, const char *name, const char *uuid, json_object *vm,
                   const char *const *sources, size_t n_sources, archive_progress_fn progress,
                   void *userdata, struct ppn_error *err) {
        struct archive_manifest m = { .created = (int64_t) time(NULL), .n_disks = n_sources };
        bool created = false;
        int r;
        _cleanup_close_ int dfd = open_export_dir(dir, &created, err);
        if (dfd < 0)
                return dfd;
        m.name = strdup(name);
        m.uuid = strdup(uuid);
        m.vm = json_object_get(vm);
        m.disks = calloc(n_sources ? n_sources : 1, sizeof(*m.disks));
        if (!m.name || !m.uuid || !m.disks)
                r = ppn_error_set(err, -ENOMEM, "out of memory");
        else
                r = copy_disks(dfd, &m, sources, progress, userdata, err);
        if (r >= 0)
                r = write_manifest(dfd, dir, &m, err);
        if (r >= 0)
                r = archive_verify(dir, &m, progress, userdata, err);
        if (r < 0)
                undo_export(dfd, dir, &m, created);
        archive_manifest_done(&m);
        return r;
}

/* Each image is opened once (no symbolic link followed) and hashed as it is copied: what is
 * installed is what matched the manifest, whatever happened to the archive since it was
 * verified. */
static int install_copies(const char *dir, const struct archive_manifest *m, int tfd, const char *tmp,
                          archive_progress_fn progress, void *userdata, struct ppn_error *err) {
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return ppn_error_set(err, -errno, "%s: %s", dir, strerror(errno));
        for (size_t i = 0; i < m->n_disks; i++) {
                const struct archive_disk *d = &m->disks[i];
                struct archive_copy_result c;
                struct stat st;
                _cleanup_close_ int fd = open_member(dfd, d->file, &st, err);
                if (fd < 0)
                        return ppn_error_prefix(err, fd, "%s", dir);
                int r = copy_fd(fd, (uint64_t) st.st_size, d->file, tfd, d->file, progress, userdata, &c, err);
                if (r < 0)
                        return r;
                if (c.size != d->size || strcmp(c.sha256, d->sha256) != 0)
                        return ppn_error_set(err, -EBADMSG, "%s/%s: changed while being installed (sha256 or size "
                                             "differs from the manifest); nothing was installed", dir, d->file);
        }
        if (fsync(tfd) < 0)
                return ppn_error_set(err, -errno, "%s: fsync: %s", tmp, strerror(errno));
        return 0;
}

static int installed_paths(const char *dest, const struct archive_manifest *m, char ***ret) {
        _cleanup_strv_free_ char **v = calloc(m->n_disks + 1, sizeof(char *));
        _cleanup_free_ char *abs = realpath(dest, NULL);
        if (!v || !abs)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_disks; i++)
                if (asprintf(&v[i], "%s/%s", abs, m->disks[i].file) < 0) {
                        v[i] = NULL;
                        return -ENOMEM;
                }
        *ret = TAKE_PTR(v);
        return 0;
}

/* fsync of the directory holding path. */
static int fsync_parent(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        _cleanup_close_ int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

int archive_install(const char *dir, const struct archive_manifest *m, const char *dest_dir,
                    archive_progress_fn progress, void *userdata, char ***ret_paths,
                    struct ppn_error *err) {
        _cleanup_free_ char *tmp = NULL;
        struct stat st;
        if (lstat(dest_dir, &st) == 0)
                return ppn_error_set(err, -EEXIST, "%s: already exists; nothing was overwritten; remove it or "
                                     "choose another image directory", dest_dir);
        if (asprintf(&tmp, "%s.tmp-XXXXXX", dest_dir) < 0)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        if (!mkdtemp(tmp))
                return ppn_error_set(err, -errno, "%s: cannot create: %s", tmp, strerror(errno));
        _cleanup_close_ int tfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r = tfd < 0 ? ppn_error_set(err, -errno, "%s: %s", tmp, strerror(errno))
                        : install_copies(dir, m, tfd, tmp, progress, userdata, err);
        /* rename(2) onto an existing empty directory would succeed: renameat2 NOREPLACE. */
        if (r >= 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, dest_dir, RENAME_NOREPLACE) < 0)
                r = ppn_error_set(err, -errno, "%s: cannot move into place: %s", dest_dir, strerror(errno));
        if (r < 0) {
                for (size_t i = 0; tfd >= 0 && i < m->n_disks; i++)
                        unlinkat(tfd, m->disks[i].file, 0);
                rmdir(tmp);
                return r;
        }
        fsync_parent(dest_dir);
        if (installed_paths(dest_dir, m, ret_paths) < 0) {
                archive_remove_installed(dest_dir, m);
                return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        return 0;
}

int archive_remove_installed(const char *dest_dir, const struct archive_manifest *m) {
        _cleanup_close_ int fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (size_t i = 0; i < m->n_disks; i++)
                unlinkat(fd, m->disks[i].file, 0);
        return rmdir(dest_dir) < 0 ? -errno : 0;
}
