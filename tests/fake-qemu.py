#!/usr/bin/env python3
"""A stand-in for a QEMU whose monitor misbehaves, for ppnd's fault tests.

It is not QEMU: it listens on a QMP socket and plays one of the behaviours below, serving one
client at a time like QEMU. Real QEMU cannot be made to stall half-way through a line or flood
events on demand; everything else in the fault tests uses the same replies QEMU 7.2 sends
(tests/fixtures/qmp/*.qmp). It appends what happened to --log, one line each:
"connect", "target BYTES", "hangup", "events N" (events written so far).

Behaviours (--mode):
  good      a VM with a balloon: actual follows the target at once, guest statistics report
            --available bytes free (or, with --demand-flip, alternate every second between
            pressure (16 MiB available) and idle (most of the guest free)).
  silent    accepts the connection and never writes a byte.
  half      writes the first half of its greeting, then nothing.
  stall     greets, accepts capabilities and answers the first --answer commands, then
            never answers again (the connection stays open).
  flood     like good, and writes BALLOON_CHANGE and unknown events as fast as the socket takes.
  hostile   like good, but its guest statistics lie: huge, zero, flapping every second,
            claiming pressure forever (cycling through those every --hostile-period s).

--outside-balloon S:BYTES: S seconds after start the balloon moves to BYTES as if another
monitor client had set it (real QEMU serves a second -qmp monitor, as ppnctl start gives it;
this fake serves one), announced with QEMU's BALLOON_CHANGE event.
"""
import argparse
import json
import os
import selectors
import socket
import time

GREETING = ('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
            '"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n')
MIB = 1 << 20
U64_MAX = (1 << 64) - 1


class Guest:
    def __init__(self, a):
        self.a = a
        self.actual = a.max
        self.t0 = time.monotonic()
        self.events = 0    # events written (flood)
        self.outside = None
        if a.outside_balloon:
            at, size = a.outside_balloon.split(':')
            self.outside = (self.t0 + float(at), int(size))

    def outside_change(self):
        """The balloon set by someone else, once: the event to send, or b''."""
        if not self.outside or time.monotonic() < self.outside[0]:
            return b''
        self.actual = self.outside[1]
        self.outside = None
        log(self.a, 'outside %d' % self.actual)
        ts = time.time()
        return (json.dumps({'timestamp': {'seconds': int(ts), 'microseconds': 0},
                            'event': 'BALLOON_CHANGE', 'data': {'actual': self.actual}}) + '\r\n').encode()

    def stats(self):
        a, now = self.a, time.monotonic() - self.t0
        avail = a.available
        if a.demand_flip:
            avail = 16 * MIB if int(now) % 2 == 0 else self.actual - 64 * MIB
        s = {'stat-swap-in': 0, 'stat-swap-out': 0, 'stat-major-faults': 0,
             'stat-minor-faults': 100, 'stat-free-memory': avail,
             'stat-total-memory': self.actual, 'stat-available-memory': avail,
             'stat-disk-caches': 0, 'stat-htlb-pgalloc': 0, 'stat-htlb-pgfail': 0}
        if a.mode == 'hostile':
            phase = int(now / a.hostile_period) % 4
            tick = int(now)
            if phase == 0:    # huge: more memory than exists, absurd fault and swap rates
                s = {k: U64_MAX - 1 for k in s}
            elif phase == 1:  # zero: nothing free, nothing total
                s = {k: 0 for k in s}
            elif phase == 2:  # flapping every second between the two
                s = {k: (U64_MAX - 1 if tick % 2 else 0) for k in s}
            else:             # pressure forever: swapping and faulting hard, nothing available
                s.update({'stat-available-memory': 0, 'stat-free-memory': 0,
                          'stat-swap-in': tick * 1024 * MIB, 'stat-major-faults': tick * 10**6})
        return {'stats': s, 'last-update': int(time.time())}


def log(a, line):
    if a.log:
        with open(a.log, 'a') as f:
            f.write(line + '\n')


def answer(a, guest, cmd):
    """The reply QEMU 7.2 gives (see tests/fixtures/qmp/guest.qmp)."""
    name, args = cmd.get('execute'), cmd.get('arguments') or {}
    if name == 'qom-list':
        ret = [{'name': 'type', 'type': 'string'},
               {'name': 'balloon0', 'type': 'child<virtio-balloon-pci>'}]
    elif name == 'query-balloon':
        ret = {'actual': guest.actual}
    elif name == 'balloon':
        guest.actual = int(args.get('value', guest.actual))
        log(a, 'target %d' % guest.actual)
        ret = {}
    elif name == 'qom-get' and args.get('property') == 'guest-stats':
        ret = guest.stats()
    else:
        ret = {}
    out = {'return': ret}
    if 'id' in cmd:
        out['id'] = cmd['id']
    return json.dumps(out) + '\r\n'


def serve(a, conn, guest):
    sel = selectors.DefaultSelector()
    conn.setblocking(False)
    out = b''
    inbuf = b''
    answered = 0
    if a.mode == 'half':
        out = GREETING[:len(GREETING) // 2].encode()
    elif a.mode != 'silent':
        out = GREETING.encode()
    decoder = json.JSONDecoder()
    n_events = 0
    while True:
        want = selectors.EVENT_READ
        if out or a.mode == 'flood':
            want |= selectors.EVENT_WRITE
        try:
            sel.register(conn, want)
        except KeyError:
            sel.modify(conn, want)
        if a.mode != 'silent' and a.mode != 'half':
            out += guest.outside_change()
        for _, ev in sel.select(timeout=0.1 if guest.outside else 1.0):
            if ev & selectors.EVENT_READ:
                data = conn.recv(65536)
                if not data:
                    return
                inbuf += data
                text = inbuf.decode(errors='replace').lstrip()
                while text:
                    try:
                        cmd, end = decoder.raw_decode(text)
                    except ValueError:
                        break
                    text = text[end:].lstrip()
                    if a.mode in ('silent', 'half'):
                        continue
                    if a.mode == 'stall' and answered >= a.answer:
                        continue
                    answered += 1
                    out += answer(a, guest, cmd).encode()
                inbuf = text.encode()
            if ev & selectors.EVENT_WRITE:
                if not out and a.mode == 'flood':
                    n_events += 1
                    guest.events += 64
                    ts = time.time()
                    ev_name = 'BALLOON_CHANGE' if n_events % 2 else 'SOMETHING_NEW'
                    out = (json.dumps({'timestamp': {'seconds': int(ts), 'microseconds': 0},
                                       'event': ev_name, 'data': {'actual': guest.actual}})
                           + '\r\n').encode() * 64
                try:
                    n = conn.send(out)
                    out = out[n:]
                except BlockingIOError:
                    pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument('socket')
    p.add_argument('--mode', default='good',
                   choices=['good', 'silent', 'half', 'stall', 'flood', 'hostile'])
    p.add_argument('--max', type=int, default=2048 * MIB)
    p.add_argument('--available', type=int, default=1024 * MIB)
    p.add_argument('--demand-flip', action='store_true')
    p.add_argument('--answer', type=int, default=3)
    p.add_argument('--hostile-period', type=float, default=2.0)
    p.add_argument('--log')
    p.add_argument('--outside-balloon', metavar='S:BYTES')
    a = p.parse_args()
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(1)
    guest = Guest(a)   # the guest outlives monitor connections, as in QEMU
    while True:
        conn, _ = srv.accept()
        log(a, 'connect')
        try:
            serve(a, conn, guest)
        except (ConnectionResetError, BrokenPipeError):
            pass
        log(a, 'hangup')
        if guest.events:
            log(a, 'events %d' % guest.events)
        conn.close()


if __name__ == '__main__':
    main()
