/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * archive: a VM's transferable archive, a plain directory any tool can copy (cp -a, rsync -S,
 * scp) and check by hand (`sha256sum`):
 *
 *   DIR/manifest.json   {"archive": "ppn-vm", "version": 1, "name": ..., "uuid": ...,
 *                        "created": <unix s>, "vm": {the ledger entry as JSON},
 *                        "disks": [{"file": "disk.img", "format": "raw"|"qcow2",
 *                                   "size": <bytes>, "sha256": "<64 hex>",
 *                                   "source": "<path on the exporting node>"}]}
 *   DIR/<file>...       the disk images, byte for byte, holes kept as holes
 *
 * Guarantees:
 * - Export never writes to its sources (opened O_RDONLY) and never overwrites anything: the
 *   archive directory must not exist or be empty; every file is created with O_EXCL.
 * - Each image is fsync'd, then the manifest is written last, atomically (temp file, fsync,
 *   rename, fsync of the directory), so a directory holding a manifest is complete. Export
 *   then re-reads every copy (page cache dropped first) and compares its sha256.
 * - Failures undo what the call itself created (files, then the directory if it made it).
 * - Verification checks every listed file: present, regular, exact size, sha256; the first
 *   failure is named ("disk.img: sha256 mismatch (archive altered or corrupt)").
 * - Copies are sparse: holes in the source (SEEK_DATA/SEEK_HOLE) and all-zero 64 KiB blocks
 *   inside data are left unwritten, so a 10 GiB image holding 300 MiB takes ~300 MiB.
 *
 * The manifest's "vm" object is opaque here: the caller (ppnctl) converts ledger entries.
 * Functions return 0 or -errno and put words into err: -ENOENT (missing file), -EEXIST (would
 * overwrite), -EBADMSG (bad manifest, size or checksum mismatch), -EINVAL, -EIO.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define ARCHIVE_MANIFEST "manifest.json"
#define ARCHIVE_KIND "ppn-vm"
#define ARCHIVE_VERSION 1
#define ARCHIVE_SHA256_HEX 64
/* Copy and hash unit: 1 MiB. Zero detection granularity inside data: 64 KiB (a qcow2
 * cluster, and the smallest hole most filesystems keep). */
#define ARCHIVE_CHUNK (1u << 20)
#define ARCHIVE_ZERO_BLOCK (64u << 10)

struct archive_disk {
        char *file;                          /* name inside the archive directory */
        char *format;                        /* "raw" or "qcow2" */
        uint64_t size;                       /* bytes (apparent size) */
        char sha256[ARCHIVE_SHA256_HEX + 1]; /* lowercase hex */
        char *source;                        /* path on the exporting node; NULL after import */
};

struct archive_manifest {
        char *name;
        char *uuid;
        int64_t created;                     /* unix seconds */
        json_object *vm;                     /* owned reference */
        struct archive_disk *disks;
        size_t n_disks;
};

void archive_manifest_done(struct archive_manifest *m);

/* Progress of a long copy or hash: bytes done of total for `file`. Called at most every
 * 1 MiB; the caller rate-limits what it prints. */
typedef void (*archive_progress_fn)(const char *file, uint64_t done, uint64_t total, void *userdata);

/* Pure. "qcow2" if the header starts with the qcow2 magic "QFI\xfb", else "raw". */
const char *archive_detect_format(const void *header, size_t len);

/* Pure. A safe archive file name: 1-255 bytes, no '/', not "." or "..", not starting with '.',
 * not the manifest's name, no control characters. */
bool archive_file_name_valid(const char *name);

/* Pure. Archive file names for the given source paths: their basenames, made unique and safe
 * ("disk.img", "disk-1.img"...; an unusable basename becomes "diskN.img"). NULL-terminated
 * malloc'd array (free with strv_free()). -ENOMEM. */
int archive_file_names(const char *const *sources, size_t n, char ***ret);
void strv_free(char **v);

/* Pure. Manifest <-> JSON. from_json checks the kind, version, uuid/name presence, every
 * disk's file name (valid, unique), format, size and sha256 syntax; -EBADMSG naming the key. */
json_object *archive_manifest_to_json(const struct archive_manifest *m);
int archive_manifest_from_json(json_object *o, struct archive_manifest *ret, struct ppn_error *err);

/* Reads DIR/manifest.json. -ENOENT (not an archive), -EBADMSG. */
int archive_manifest_read(const char *dir, struct archive_manifest *ret, struct ppn_error *err);

/* Durable replacement of dirfd/name (dirpath for messages): temp file in the same directory,
 * write loop, fsync, rename, fsync of the directory. */
int archive_write_file_atomic(int dirfd, const char *dirpath, const char *name, const void *data,
                              size_t len, mode_t mode, struct ppn_error *err);

/* sha256 of a file's content (holes read as zeros) and its size. */
int archive_hash_file(const char *path, archive_progress_fn progress, void *userdata,
                      char ret_hex[ARCHIVE_SHA256_HEX + 1], uint64_t *ret_size, struct ppn_error *err);

struct archive_copy_result {
        char sha256[ARCHIVE_SHA256_HEX + 1];  /* of the bytes read from the source */
        uint64_t size;
        uint64_t data_bytes;                  /* bytes actually written (the rest are holes) */
};
/* Sparse copy of src into a NEW file dst_dirfd/dst_name (O_EXCL), fsync'd. On failure the
 * new file is removed. */
int archive_copy_file(const char *src, int dst_dirfd, const char *dst_name, archive_progress_fn progress,
                      void *userdata, struct archive_copy_result *ret, struct ppn_error *err);

/* Checks every disk of m in dir (present, regular, size, sha256). -ENOENT / -EBADMSG naming
 * the file, with what to do. */
int archive_verify(const char *dir, const struct archive_manifest *m, archive_progress_fn progress,
                   void *userdata, struct ppn_error *err);

/*
 * Exports: creates dir (or uses it if empty), copies every source into it, writes the
 * manifest (name, uuid, vm, now), then verifies the copies. vm: a reference is taken.
 * On failure nothing the call created is left. -EEXIST if dir is not empty.
 */
int archive_export(const char *dir, const char *name, const char *uuid, json_object *vm,
                   const char *const *sources, size_t n_sources, archive_progress_fn progress,
                   void *userdata, struct ppn_error *err);

/*
 * Installs the verified images of archive `dir` into dest_dir, which must not exist (-EEXIST):
 * copied into a temporary sibling "dest_dir.tmp-XXXXXX", each copy's sha256 compared with the
 * manifest, then renamed into place and the parent fsync'd. On failure nothing is left.
 * *ret_paths: NULL-terminated absolute paths of the installed images (strv_free()).
 */
int archive_install(const char *dir, const struct archive_manifest *m, const char *dest_dir,
                    archive_progress_fn progress, void *userdata, char ***ret_paths,
                    struct ppn_error *err);

/* Removes a directory created by archive_install() (its files, then itself). 0 or -errno. */
int archive_remove_installed(const char *dest_dir, const struct archive_manifest *m);
