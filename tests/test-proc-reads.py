#!/usr/bin/env python3
"""Which of a QEMU's /proc files ppnd reads, against a QEMU stand-in (TAP; tests/fake-qemu.c).

The fake stands in for QEMU where a real guest cannot make the case on demand: one fake process
per VM, one whose balloon says free-page-reporting=on (--free-page-reporting) and one whose
balloon does not. ppnd keeps each file it reads per QEMU open between reads (one pread each),
so its open descriptors say which files it reads.

Proven: ppnd reads one /proc file per QEMU, /proc/PID/statm (the resident set, which the round
samples), whether its balloon reports free pages or not, and no /proc/PID/stat: the CPU time
the active rule uses (for a VM whose balloon reports free pages, under [policy]
free-page-reporting = auto, the default) comes from the process's CPU-time clock, which the
quiet-host case below shows is read.

Quiet host: a static [host] vmstat (the host allocates nothing) lets the round skip the RSS of
a settled VM. Two reporting VMs, each with 1.5 GiB available of which 64 MiB is free (the rest
page cache); one's QEMU stand-in spins 150 ms of CPU every 2.5 s (--cpu-burn), as a QEMU does
while its guest re-reads a cached file, the other idles. When the node turns short (host
MemAvailable under the low mark) the idle VM's cache is taken and the busy one's kept: the
round reads a reporting VM's CPU time every tick, from the CPU-time clock (no /proc/PID/stat
open), even when it could skip its RSS. Before that
fix the busy VM went unread between ticks on such a host, the next reading averaged its passes
over the gap (6 %, under the 10 % mark), and once the activity seen before it settled was older
than the hold (active-hold = 4s here, 10 s by default) its cache was taken too.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import GIB, MIB, Node, Tap, wait_for  # noqa: E402


def open_proc_files(node):
    """The /proc/PID/NAME files ppnd holds open, as {pid: {name, ...}}."""
    files = {}
    fd_dir = '/proc/%d/fd' % node.ppnd.pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        parts = target.split('/')
        if len(parts) == 4 and parts[1] == 'proc' and parts[2].isdigit():
            files.setdefault(int(parts[2]), set()).add(parts[3])
    return files


def quiet_host(t):
    node = Node(tick='200ms')
    try:
        node.file_host(6 * GIB, vmstat=True, policy='active-hold = 4s\n')
        for name, burn in (('busy', {'cpu_burn': '150:2500'}), ('quiet', {})):
            node.add_vm(name, 'good', max_='2G', available=1536 * MIB, free=64 * MIB,
                        free_page_reporting=True, **burn)
        if not t.ok(node.start(), 'quiet host: ppnd starts'):
            return
        t.ok(node.wait_running(2), 'quiet host: both VMs adopted')
        # Settled, the host quiet: the rounds may skip their RSS; long past the 4 s hold of the
        # busy VM's activity as seen before it settled.
        time.sleep(10.0)
        t.ok(node.targets('busy') == [] and node.targets('quiet') == [],
             'quiet host: no VM shrunk while the node has memory',
             str((node.targets('busy'), node.targets('quiet'))))
        node.write_meminfo(150 * MIB)       # short (low mark 410 MiB), not over capacity
        shrunk = wait_for(lambda: [x for x in node.targets('quiet') if x < 2 * GIB], 5)
        t.ok(shrunk, "quiet host: the node short, the idle VM's cache is taken",
             str(node.targets('quiet')))
        time.sleep(1.0)
        st = node.status()
        t.ok([x for x in node.targets('busy') if x < 2 * GIB - 64 * MIB] == [],
             "quiet host: the busy VM's cache is kept (at most its free memory given)",
             '%s; %s' % (node.targets('busy'), st['busy'].get('reason')))
        t.ok('active (QEMU on a CPU' in (st['busy'].get('reason') or ''),
             'quiet host: its decision says it is active', str(st['busy'].get('reason')))
        busy = node.fakes['busy'][0].pid
        t.ok('stat' not in open_proc_files(node).get(busy, ()),
             "quiet host: its CPU time came from the process's CPU clock, no /proc/PID/stat open")
        t.ok(node.kill(15) == 0, 'quiet host: ppnd exits 0')
    finally:
        node.cleanup()


def main():
    t = Tap()
    quiet_host(t)
    node = Node(tick='200ms')
    try:
        node.calm_host()
        node.add_vm('reports', 'good', max_='2G', available=1024 * MIB, free_page_reporting=True)
        node.add_vm('classic', 'good', max_='2G', available=1024 * MIB)
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()
        pid = {name: p.pid for name, (p, _) in node.fakes.items()}
        t.ok(node.wait_running(2), 'both VMs adopted')
        time.sleep(2.0)         # ten rounds
        files = open_proc_files(node)
        t.note('open: %s' % {name: sorted(files.get(p, ())) for name, p in pid.items()})
        t.ok(all(files.get(pid[name]) == {'statm'} for name in pid),
             "each QEMU's resident set is read (/proc/PID/statm), and nothing else of /proc/PID",
             str(files))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
