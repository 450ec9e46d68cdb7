#!/usr/bin/env python3
"""A settled VM gives memory only on statistics read in that round (TAP; tests/fake-qemu.c).

The fake stands in for QEMU where a real guest cannot make the case on demand: a guest that
settles, then a node that must take memory from it at a chosen moment; its log records every
qom-get guest-stats it answers and every balloon target it is given.

[controller] settled-stats-interval is 20 s here and [policy] stats-stale-after 30 s: a settled
VM's statistics, when the pool comes to need its memory, may be up to 20 s old. On a calm host
of 8 GiB (1 GiB reserve) 'donor' (4 GiB, 3 GiB available, idle) settles; at JOIN s 'needy'
(4 GiB, nothing available: under pressure) joins and the node's VMs hold 1 GiB more than its
capacity, so the pool takes memory from the donor.
Proven: the donor is read rarely before (it is settled); its first shrink comes right after a
guest-stats read asked in that same round (ppnd reads a skipped VM's statistics before it shrinks
it, then decides again), not on the statistics it had; and no later than about two rounds after
the needy VM is adopted.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, Node, Tap, wait_for  # noqa: E402

GIB = 1024 * MIB

JOIN = 10.0             # s after ppnd starts
RUN = 18.0


def main():
    t = Tap()
    node = Node(tick='1s')
    try:
        node.calm_host(controller='settled-stats-interval = 20s\n', policy='stats-stale-after = 30s\n')
        node.add_vm('donor', 'good', max_='4G', available=3 * GIB)
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()
        t0 = time.monotonic()
        seen = {'donor': []}
        while time.monotonic() - t0 < JOIN:
            node.poll_logs(seen, t0)
            time.sleep(0.02)
        node.add_vm('needy', 'good', max_='4G', available=0)
        joined = time.monotonic() - t0
        adopted = None
        while time.monotonic() - t0 < RUN:
            node.poll_logs(seen, t0)
            if adopted is None and node.status().get('needy', {}).get('state') == 'running':
                adopted = time.monotonic() - t0
            time.sleep(0.02)

        reads = [at for at, line in seen['donor'] if line == 'stats']
        t.note('donor: guest-stats read at %s s; needy joined at %.1f s, running at %s s'
               % (', '.join('%.2f' % x for x in reads), joined, adopted))
        t.ok(len(reads) >= 1 and not [x for x in reads if 5 <= x < joined],
             'the donor is settled before the node needs its memory (not read from 5 s on)',
             'reads at %s' % reads)
        log = seen['donor']
        shrink = next((i for i, (_, line) in enumerate(log)
                       if line.startswith('target ') and int(line.split()[1]) < 4 * GIB), None)
        if not t.ok(shrink is not None, 'the pool takes memory from the donor',
                    'donor log %s' % [line for _, line in log]):
            return t.done()
        at, line = log[shrink]
        before = [x for x, l in log[:shrink] if l == 'stats']
        t.note('donor: %s at %.2f s; the read before it at %s s' % (line, at, before[-1] if before else None))
        t.ok(before and before[-1] >= joined and at - before[-1] < 0.5,
             'its first shrink follows a read of its statistics asked in that round',
             'shrink at %.2f s, reads before it at %s' % (at, before))
        t.ok(adopted is not None and at - adopted < 2.5,
             'and comes within about two rounds of the needy VM running',
             'needy running at %s s, shrink at %.2f s' % (adopted, at))
        t.ok(wait_for(lambda: node.status()['donor']['target_bytes'] <= 3 * GIB + 64 * MIB, 5),
             'the donor is shrunk by the node\'s excess', str(node.status().get('donor')))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
