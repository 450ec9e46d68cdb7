#!/usr/bin/env python3
"""Which of a QEMU's /proc files ppnd reads, against a QEMU stand-in (TAP; tests/fake-qemu.c).

The fake stands in for QEMU where a real guest cannot make the case on demand: one fake process
per VM, one whose balloon says free-page-reporting=on (--free-page-reporting) and one whose
balloon does not. ppnd keeps each file it reads per QEMU open between reads (one pread each),
so its open descriptors say which files it reads.

Proven: under [policy] free-page-reporting = auto (the default) ppnd reads /proc/PID/stat (the
CPU time, for the active rule) only for the VM whose balloon reports free pages; for the other
it reads only /proc/PID/statm (the resident set, which the round still samples), as no rule
uses that VM's CPU time.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, Node, Tap, wait_for  # noqa: E402


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


def main():
    t = Tap()
    node = Node(tick='200ms')
    try:
        node.calm_host()
        node.add_vm('reports', 'good', max_='2G', available=1024 * MIB, free_page_reporting=True)
        node.add_vm('classic', 'good', max_='2G', available=1024 * MIB)
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()
        pid = {name: p.pid for name, (p, _) in node.fakes.items()}
        adopted = wait_for(lambda: [v.get('state') for v in node.status().values()] == ['running'] * 2, 10)
        t.ok(adopted, 'both VMs adopted')
        time.sleep(2.0)         # ten rounds
        files = open_proc_files(node)
        t.note('open: %s' % {name: sorted(files.get(p, ())) for name, p in pid.items()})
        t.ok('stat' in files.get(pid['reports'], ()),
             "the reporting VM's QEMU CPU time is read (/proc/PID/stat)", str(files))
        t.ok('stat' not in files.get(pid['classic'], ()),
             "the classic VM's is not: no rule uses it", str(files))
        t.ok('statm' in files.get(pid['classic'], ()),
             "the classic VM's resident set is read (/proc/PID/statm)", str(files))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
