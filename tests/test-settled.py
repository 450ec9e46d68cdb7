#!/usr/bin/env python3
"""Adaptive sampling of settled VMs against ppnd with a QEMU stand-in (TAP; tests/fake-qemu.c).

The fake stands in for QEMU where a real guest cannot make the case on demand: one fake process
per VM, so the resident set ppnd reads for a VM (/proc/PID/statm) is that fake's, and the fake
raises it at a chosen moment (--touch: it writes new memory, as QEMU's RSS rises when its guest
touches memory); its log records every qom-get guest-stats it answers.

[controller] settled-stats-interval is 20 s here and [policy] stats-stale-after 30 s, so that
"read at once" and "read when due" are far apart whatever the phase of the rounds.
Proven: a settled VM's statistics are read far less often than every round, yet read again when
due and never held as stale; a settled VM whose QEMU's RSS rises by 256 MiB is read within
about a round of it; one whose balloon is moved (BALLOON_CHANGE) likewise.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, Node, Tap  # noqa: E402

TOUCH_AT = 12.0         # s after the fakes start
RUN = 30.0


def main():
    t = Tap()
    node = Node(tick='1s')
    try:
        node.calm_host(controller='settled-stats-interval = 20s\n', policy='stats-stale-after = 30s\n')
        # Each guest: 2 GiB, 1.5 GiB available: idle, nothing for the policy to do.
        t0 = time.monotonic()
        node.add_vm('calm', 'good', max_='2G', available=1536 * MIB)
        node.add_vm('touch', 'good', max_='2G', available=1536 * MIB, touch='%g:256M' % TOUCH_AT)
        node.add_vm('moved', 'good', max_='2G', available=1536 * MIB,
                    outside_balloon='%g:%d' % (TOUCH_AT, 1800 * MIB))
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()

        # Every new log line of each fake, with the time it was seen (polled every 20 ms).
        seen = {name: [] for name in node.fakes}
        while time.monotonic() - t0 < RUN:
            node.poll_logs(seen, t0)
            time.sleep(0.02)

        def reads(name, a, b):
            return [at for at, line in seen[name] if line == 'stats' and a <= at < b]

        def first(name, prefix):
            return next((at for at, line in seen[name] if line.startswith(prefix)), None)

        calm = reads('calm', 0, RUN)
        t.note('calm: guest-stats read at %s s' % ', '.join('%.1f' % x for x in calm))
        # Settled within a few rounds of adoption; then nothing until its 20 s are up.
        t.ok(len(reads('calm', 6, 18)) == 0 and len(calm) >= 2,
             'a settled VM is not read between its reads (12 rounds here: every round would be 12 reads)',
             'reads at %s' % calm)
        t.ok(len(reads('calm', 18, RUN)) >= 1, 'and is read again when its interval is up', 'reads at %s' % calm)

        for name, prefix, what in (('touch', 'touch', "its QEMU's RSS rises by 256 MiB"),
                                   ('moved', 'outside', 'its balloon is moved (BALLOON_CHANGE)')):
            at = first(name, prefix)
            after = [x for x in reads(name, at or RUN, RUN)]
            before = reads(name, 6, at or RUN)
            t.note('%s: %s at %s s; reads before %s, after %s' % (name, prefix, at, before, after))
            t.ok(at is not None and not before and after and after[0] - at < 2.5,
                 'a settled VM is read within ~a round when %s' % what,
                 'event at %s, reads %s' % (at, after))

        st = node.status()
        t.ok(all(not v['reason'].startswith('hold') for v in st.values()),
             'no VM is held (a settled VM is never held for stale statistics)',
             json.dumps({n: v['reason'] for n, v in st.items()}))
        held = [e for e in node.events() if e['kind'].startswith('hold')]
        t.ok(not held, 'no hold event during the run', json.dumps(held))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
