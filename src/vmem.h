/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * vmem: one VM's virtio-mem device over its QMP connection (qmp.h), modelled on balloon.h.
 *
 *   devices    "query-memory-devices": every memory device; the first of type "virtio-mem"
 *              is the one this project drives (ppnctl start creates id ppn-vmem0; a QEMU
 *              started elsewhere may name it anything). Its data: id, size (plugged),
 *              requested-size, max-size (the region), block-size, memdev.
 *   request    "qom-set /machine/peripheral/<id> requested-size <bytes>": QEMU acknowledges at
 *              once; the guest driver plugs or unplugs blocks over time (0 -> 1 GiB in 0.07 s,
 *              2 GiB -> 512 MiB in 1.0-1.2 s under TCG). Whole blocks, at most max-size:
 *              anything else is refused here before anything is sent.
 *   size       "qom-get ... size": what is plugged now. MEMORY_DEVICE_SIZE_CHANGE events carry
 *              the same number but QEMU rate-limits them to 1/s and the first one often shows
 *              an intermediate size: poll for the truth.
 *
 * A guest reset unplugs everything (QEMU keeps requested-size; the guest plugs it again once
 * its driver is up). QEMU refuses a new requested-size during a migration.
 * Errors as qmp.h describes them; a reply without the documented shape is -EBADMSG.
 */

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"

#define VMEM_ID_MAX QMP_DEVICE_ID_MAX

struct vmem_device {
        char id[VMEM_ID_MAX];      /* device id under /machine/peripheral */
        uint64_t size;             /* plugged */
        uint64_t requested;        /* requested-size */
        uint64_t max_size;         /* the region */
        uint64_t block_size;
};

/*
 * Pure decoders (no I/O; separately testable).
 * vmem_devices_decode(): the "return" of query-memory-devices (an array). 1 and *ret for the
 * first virtio-mem device, 0 if there is none (other memory devices are skipped), -EBADMSG
 * (err says what) if the array or that device's data lacks a field or has a negative or
 * non-integer number, a block size that is not a power of two, or size/requested above max-size.
 */
int vmem_devices_decode(json_object *reply, struct vmem_device *ret, struct ppn_error *err);
/* The "size" and "id" of a MEMORY_DEVICE_SIZE_CHANGE event: 0, -EINVAL (another event) or
 * -EBADMSG. id_len bytes of ret_id are written (NUL-terminated, cut if longer). */
int vmem_event_size(const struct qmp_event *ev, char *ret_id, size_t id_len, uint64_t *ret_size);

/* Checks a request against the device: -EINVAL if not whole blocks, -ERANGE above max-size. */
int vmem_check_request(const struct vmem_device *dev, uint64_t bytes, struct ppn_error *err);

typedef void (*vmem_done_fn)(struct qmp *q, const struct qmp_error *err, void *userdata);
/* dev is NULL when QEMU has no virtio-mem device (and err is NULL). */
typedef void (*vmem_query_fn)(struct qmp *q, const struct vmem_device *dev, const struct qmp_error *err,
                              void *userdata);

/* Asynchronous: 0 when sent (fn runs exactly once, from the loop), or -errno with err set and fn
 * never called. timeout_usec 0 = QMP_TIMEOUT_DEFAULT_USEC. */
int vmem_query(struct qmp *q, uint64_t timeout_usec, vmem_query_fn fn, void *userdata, struct qmp_error *err);
int vmem_set_requested(struct qmp *q, const struct vmem_device *dev, uint64_t bytes, uint64_t timeout_usec,
                       vmem_done_fn fn, void *userdata, struct qmp_error *err);

/* Synchronous. vmem_query_sync: 1 and *ret, 0 if no device, or -errno. */
int vmem_query_sync(struct qmp *q, uint64_t timeout_usec, struct vmem_device *ret, struct qmp_error *err);
int vmem_set_requested_sync(struct qmp *q, const struct vmem_device *dev, uint64_t bytes, uint64_t timeout_usec,
                            struct qmp_error *err);
/* qom-get size: what is plugged now. */
int vmem_get_size_sync(struct qmp *q, const char *id, uint64_t timeout_usec, uint64_t *ret_bytes,
                       struct qmp_error *err);
