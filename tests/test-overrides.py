#!/usr/bin/env python3
"""Overrides and removal against ppnd with a QEMU stand-in (TAP; the fake QEMU, tests/fake-qemu.c).

The fake stands in for a QEMU whose balloon someone else moves at a chosen moment (a second
monitor client of a real QEMU; the fake serves one client, as each QEMU monitor does) and for a
QEMU that is killed while ppnd watches it; no guest needs to boot for either.
A VM whose balloon is moved outside ppnd gets an override ppnd makes itself.
Proven: `ppnctl release VM` really ends that override (status shows none, a "release" event
says so) although nothing of it is in the ledger; `release` with nothing to release says so and
exits 1; `ppnctl vm remove` of a VM whose QEMU runs is refused (exit 1) and its memory stays
committed, and succeeds once QEMU is gone; the "added" event names the QMP state once.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, Node, Tap, wait_for  # noqa: E402


def main():
    t = Tap()
    node = Node()
    try:
        node.ctl('node', 'set', 'physical=8G', 'reserve=1G')
        # At 4 s the balloon moves to 1 GiB behind ppnd's back (no pressure: 1 GiB available).
        node.add_vm('web', 'good', min_='512M', max_='2G', outside_balloon='4:%d' % (1024 * MIB))
        node.ctl('vm', 'add', 'cold', '--min', '256M', '--max', '1G')
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()

        added = [e for e in node.events() if e['kind'] == 'added']
        t.ok(len(added) == 2 and not any('QMP QMP' in e['reason'] for e in added),
             'the "added" events name the QMP state once', '\n'.join(e['reason'] for e in added))

        # ---- release with nothing to release ----
        r = node.ctl('release', 'cold', check=False)
        t.ok(r.returncode == 1 and 'nothing to release: cold has no override' in r.stderr and not r.stdout,
             'release of a VM without an override: says so, exit 1', 'rc %d: %s%s' % (r.returncode, r.stdout, r.stderr))

        # ---- an override ppnd detected ----
        st = wait_for(lambda: node.status()['web'].get('override_left_usec', 0) > 0 and node.status()['web'], 15)
        t.ok(st and st['reason'].startswith('override'), 'the balloon moved outside ppnd: ppnd holds an override',
             st and st['reason'])
        r = node.ctl('release', 'web', check=False)
        t.ok(r.returncode == 0 and 'override ppnd made when the balloon was moved outside it released' in r.stdout,
             'release of the detected override: exit 0, says what it ended', 'rc %d: %s%s' % (r.returncode, r.stdout, r.stderr))
        st = node.status()['web']
        t.ok(st.get('override_left_usec', 0) == 0, 'status shows no override any more', json.dumps(st))
        rel = [e for e in node.events() if e['vm'] == 'web' and e['kind'] == 'release']
        t.ok(len(rel) == 1 and 'balloon set outside ppnd' in rel[0]['reason'], 'one "release" event records it',
             json.dumps(rel))
        st = wait_for(lambda: not node.status()['web']['reason'].startswith('override') and node.status()['web'], 5)
        t.ok(st and st.get('override_left_usec', 0) == 0, 'the controller decides again (no new override)',
             st and st['reason'])
        r = node.ctl('release', 'web', check=False)
        t.ok(r.returncode == 1 and 'nothing to release' in r.stderr, 'a second release: nothing to release, exit 1',
             'rc %d: %s%s' % (r.returncode, r.stdout, r.stderr))

        # ---- an operator lease still releases through the ledger ----
        node.ctl('balloon', 'web', '768M', '--for', '60s')
        wait_for(lambda: node.status()['web']['reason'].startswith('lease'), 5)
        r = node.ctl('release', 'web', check=False)
        t.ok(r.returncode == 0 and 'operator lease released' in r.stdout, 'release of an operator lease: exit 0',
             'rc %d: %s%s' % (r.returncode, r.stdout, r.stderr))
        st = wait_for(lambda: node.status()['web'].get('override_left_usec', 0) == 0 and node.status()['web'], 5)
        t.ok(bool(st), 'and ppnd drops it', st and st['reason'])

        # ---- removing a running VM ----
        def pool():
            p = json.loads(node.ctl('pool', '--json').stdout)
            return p['vms'], p['reserved_min_bytes']
        before = pool()
        r = node.ctl('vm', 'remove', 'web', check=False)
        t.ok(r.returncode == 1 and "refused: vm 'web' is running" in r.stderr and 'ppnctl stop web' in r.stderr,
             'vm remove of a running VM is refused, saying why and what to do',
             'rc %d: %s%s' % (r.returncode, r.stdout, r.stderr))
        time.sleep(0.6)    # ppnd would notice a ledger change within 250 ms
        names = [v['name'] for v in json.loads(node.ctl('vm', 'list', '--json').stdout)]
        t.ok('web' in names and pool() == before and before == (2, 768 * MIB),
             'its entry stays and its memory stays counted by ppnd', 'vms %s; (vms, min) %s -> %s' % (names, before, pool()))
        p, _ = node.fakes['web']
        p.kill()
        p.wait()
        r = node.ctl('vm', 'remove', 'web', check=False)
        t.ok(r.returncode == 0, 'once its QEMU is gone, vm remove succeeds', r.stderr)
        after = wait_for(lambda: pool() == (1, 256 * MIB) and pool(), 5)
        t.ok(bool(after), 'and only then leaves the pool', 'vms, min: %s -> %s' % (before, pool()))
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
