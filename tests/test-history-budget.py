#!/usr/bin/env python3
"""The history's memory budget against ppnd with a QEMU stand-in (TAP; the fake QEMU,
tests/fake-qemu.c: only the samples' count matters here, no guest needs to boot).

Proven: with `[daemon] history-memory` below what one VM's 60 samples take, `ppnctl history`
holds exactly 60 samples however long ppnd runs (the floor; the ring drops the oldest), newest
last and in time order; a SIGHUP with a larger budget (4K: 102 samples for one VM) grows the
ring without losing what it held, and it stops at the new size.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import Node, Tap, wait_for  # noqa: E402


def samples(node):
    r = node.ctl('history', 'web', '--json', check=False)
    if r.returncode != 0:
        return []
    return json.loads(r.stdout)['vms'][0]['samples']


def set_budget(node, budget):
    text = open(node.conf).read().split('\n')
    text = [l for l in text if not l.startswith('history-memory')]
    text.insert(text.index('[daemon]') + 1, 'history-memory = ' + budget)
    open(node.conf, 'w').write('\n'.join(text))


def main():
    t = Tap()
    node = Node(tick='100ms')
    try:
        set_budget(node, '1K')
        node.ctl('node', 'set', 'physical=8G', 'reserve=1G')
        node.add_vm('web', 'good', min_='512M', max_='2G')
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()
        # 60 samples at a 100 ms tick: 6 s; 3 s more to show the ring does not grow past them.
        full = wait_for(lambda: len(samples(node)) >= 60, 30)
        t.ok(full, 'the history fills up to 60 samples', '%d' % len(samples(node)))
        time.sleep(3)
        s = samples(node)
        times = [x['time_usec'] for x in s]
        t.ok(len(s) == 60, 'history-memory = 1K: exactly 60 samples (the floor) after running past them',
             '%d samples' % len(s))
        t.ok(times == sorted(times) and time.time() * 1e6 - times[-1] < 5e6,
             'in time order, the newest last and recent', '%s' % times[-3:])
        first_before = times[0]

        set_budget(node, '4K')
        node.ppnd.send_signal(signal.SIGHUP)
        grown = wait_for(lambda: len(samples(node)) > 61, 20)
        s = samples(node)
        t.ok(grown and s[0]['time_usec'] >= first_before,
             'SIGHUP with 4K: the ring grows past 60 and keeps the samples it held', '%d samples' % len(s))
        wait_for(lambda: len(samples(node)) >= 102, 30)
        time.sleep(2)
        n = len(samples(node))
        t.ok(n == 102, 'and stops at 4096 / 40 = 102 samples', '%d samples' % n)
        t.ok(node.kill(15) == 0, 'ppnd exits 0')
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
