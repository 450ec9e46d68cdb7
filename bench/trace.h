/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Guest-demand traces for the simulator (files written by bench/gentraces.py):
 *
 *   # comment
 *   node physical_mib=N reserve_mib=N base_mib=N
 *   vm name=S kind=S max_mib=N min_mib=N shares=N cache_mib=N init_mib=N [files_mib=N]
 *                                                                            (one per VM)
 *   t,NAME,NAME,...
 *   0,CELL,CELL,...                                                          (one per second)
 *
 * CELL is WS or WS:IO. WS is the VM's anonymous working set in MiB during that second; IO is
 * what its programs read from files that second, MiB/s (default 0). cache_mib is the file
 * data the workload re-reads (its hot page cache); files_mib the size of the other files it
 * reads (cold data that fills the page cache once read). Sizes below are bytes.
 */

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct trace_vm {
        char name[32];
        char kind[16];
        uint64_t max, min, shares;
        uint64_t cache;            /* page cache the guest would like (file working set) */
        uint64_t init;             /* actual at t = 0 */
        uint64_t files;            /* cold file data it reads (files_mib, default 0) */
};

struct trace {
        char name[32];             /* file name without directory and .csv */
        uint64_t physical, reserve, base;
        size_t n_vms;
        size_t seconds;
        struct trace_vm *vms;
        uint32_t *ws_mib;          /* seconds × n_vms, row-major */
        uint32_t *io_mib;          /* same shape: file reads, MiB/s */
};

/* Reads a trace file. 0, -EINVAL (with words: file and line), -ENOMEM, or -errno from open. */
int trace_load(const char *path, struct trace **ret, struct ppn_error *err);
struct trace *trace_free(struct trace *t);

/* Working set of VM i at second s (clamped to the last second), bytes. */
uint64_t trace_ws(const struct trace *t, size_t i, size_t s);
/* File reads of VM i at second s (clamped likewise), bytes per second. */
uint64_t trace_io(const struct trace *t, size_t i, size_t s);
