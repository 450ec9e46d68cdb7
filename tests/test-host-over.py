#!/usr/bin/env python3
"""The host gone over capacity between two ticks: ppnd decides at once (TAP; tests/fake-qemu.c).

The fake stands in for QEMU (a guest whose statistics say what the case needs) and files here
for the host's memory ([host] meminfo), which this test sets. The tick is 30 s, so a decision
within a second or two of the change can only come from the 200 ms check of the host's
MemAvailable, not from a tick.

A reporting VM holds a 1.4 GiB page cache (1.5 GiB available, 64 MiB of it free) and is idle.
Its node (8 GiB, low mark 409.6 MiB) then reads MemAvailable 10 MiB, under a sixteenth of the
low mark: over capacity, where a real node swaps or its OOM killer picks a QEMU. Proven: the
VM's balloon is set within 2 s of that (a tick would take up to 30 s), ppnd's log says why,
ppn_rounds_early_total counts it, and a host only short (under the low mark, above a sixteenth
of it) starts no round between ticks.
"""
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import GIB, MIB, Node, Tap, free_port, wait_for  # noqa: E402


def early_rounds(port):
    text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=5).read().decode()
    m = re.search(r'^ppn_rounds_early_total (\d+)$', text, re.M)
    return int(m.group(1)) if m else None


def main():
    t = Tap()
    node = Node(tick='30s')
    port = free_port()
    try:
        with open(node.conf, 'a') as f:      # the config ends in [controller]
            f.write('[metrics]\nenabled = yes\naddress = 127.0.0.1\nport = %d\n' % port)
        node.file_host(6 * GIB)
        node.add_vm('idle', 'good', max_='2G', available=1536 * MIB, free=64 * MIB, free_page_reporting=True)
        if not t.ok(node.start(), 'ppnd starts'):
            return t.done()
        t.ok(node.wait_running(1), 'the VM is adopted')
        time.sleep(2.0)         # the round at adoption is over; the next tick is ~28 s away
        t.ok(node.targets('idle') == [], 'no balloon command while the host has memory',
             str(node.targets('idle')))

        node.write_meminfo(200 * MIB)       # short (under 409.6 MiB), not over (25.6 MiB)
        time.sleep(2.0)
        t.ok(node.targets('idle') == [] and early_rounds(port) == 0,
             'a host only short starts no round between ticks',
             '%s, %s early' % (node.targets('idle'), early_rounds(port)))

        t0 = time.monotonic()
        node.write_meminfo(10 * MIB)        # over capacity
        got = wait_for(lambda: node.targets('idle'), 10, step=0.05)
        took = time.monotonic() - t0
        t.ok(got and got[0] < 2 * GIB and took < 2.0,
             'over capacity: the balloon is set within 2 s (%.2f s), not at the next tick' % took, str(got))
        log = open(node.log).read()
        t.ok('host over capacity (MemAvailable 10M): deciding now, not at the next tick' in log,
             "ppnd's log says why", log[-500:])
        t.ok(early_rounds(port) == 1, 'ppn_rounds_early_total counts one round', str(early_rounds(port)))

        time.sleep(1.0)         # still over: no second early round for the same episode
        t.ok(early_rounds(port) == 1, 'one early round per episode', str(early_rounds(port)))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
