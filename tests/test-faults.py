#!/usr/bin/env python3
"""ppnd against broken QEMU monitors and a lying guest (TAP).

Six VMs in the ledger, each behind the fake QEMU (tests/fake-qemu.c; it stands in for a broken
QEMU and a lying guest: real QEMU cannot be made to stall mid-line or flood on demand, nor a
real guest to report impossible statistics): a good one, one that accepts and
never answers, one that stops half-way through its greeting, one that stops answering after
adoption, one that floods events, and one whose guest statistics lie (huge, zero, flapping,
pressure forever). For 12 s the control socket is asked for status every 100 ms.

Proven: status answers come in < 100 ms (95th percentile; the maximum and the machine's load
are printed); the good VM stays running and sampled
throughout (its statistics never within 1 s of stale); the silent, half and stalling monitors time out and are reconnected; no VM is ever
sent a target below its minimum or above its maximum (every 'balloon' each fake received);
ppnd's memory stays bounded under the flood; `ppnctl status` prints the same table from the
brief reply it asks for and from a full one (what a ppnd that ignores "brief" sends) of the
same node state (the replies taken from ppnd at once, served to ppnctl by a one-shot socket);
ppnd protects itself from the OOM killer (or,
without CAP_SYS_RESOURCE, says why it cannot); ppnd still exits cleanly (0) afterwards.
"""
import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import MIB, PPNCTL, Node, Tap  # noqa: E402

WATCH_S = 12.0
LATENCY_MAX_S = 0.100
RSS_MAX_KIB = 64 * 1024


def can_lower_oom_score(node):
    """CAP_SYS_RESOURCE in ppnd's effective set (some containers drop it even for root; a
    PPN_PPND_WRAP may bound it away)."""
    for line in node.proc('status').splitlines():
        if line.startswith('CapEff:'):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def vm_hwm_kib(node):
    for line in node.proc('status').splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    return -1


# The members of a brief status VM (docs/ppnd.md, "Control socket"): what the table shows.
BRIEF_KEYS = {'name', 'state', 'min_bytes', 'max_bytes', 'target_bytes', 'actual_bytes',
              'guest_available_bytes', 'cpu_weight', 'reason'}
# Table widths: a pipe (80 columns), the narrowest terminal ppnctl lays out (40), a wide one.
WIDTHS = (None, 40, 200)


def pipelined(node, lines):
    """The replies to several requests sent at once on one connection: ppnd handles the lines
    of one read in one pass of its loop, so every reply describes the same node state."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(node.sock)
        s.sendall(b''.join(json.dumps(l).encode() + b'\n' for l in lines))
        buf = b''
        while buf.count(b'\n') < len(lines):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    return buf.split(b'\n')[:len(lines)]


def table_from(reply, cols):
    """`ppnctl status` against a one-shot daemon that answers `reply` (a line ppnd wrote, whatever
    ppnctl asks: as a ppnd that ignores "brief" would). On a terminal of cols columns (a pty, with
    colour), or into a pipe if cols is None. Returns (output, the request ppnctl sent)."""
    d = tempfile.mkdtemp(prefix='ppn-brief-')
    path = os.path.join(d, 's')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got = {}

    def serve():
        c, _ = srv.accept()
        with c:
            got['request'] = c.makefile('rb').readline()
            c.sendall(reply + b'\n')
    th = threading.Thread(target=serve)
    th.start()
    argv = [PPNCTL, '--socket', path, 'status']
    try:
        if cols is None:
            out = subprocess.run(argv, capture_output=True, timeout=10, env=dict(os.environ, TERM='xterm')).stdout
        else:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 50, cols, 0, 0))
            p = subprocess.Popen(argv, stdout=slave, stderr=slave, env=dict(os.environ, TERM='xterm'))
            os.close(slave)
            out = b''
            while True:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            os.close(master)
            p.wait(timeout=10)
    finally:
        th.join(timeout=10)
        srv.close()
        os.unlink(path)
        os.rmdir(d)
    return out, json.loads(got.get('request') or b'{}')


def check_brief(t, node, rounds=8):
    """The table from a brief reply is byte for byte the table from a full one of the same node
    state, at three widths; the brief reply carries only BRIEF_KEYS; ppnctl asks for it."""
    diffs, asked, keys_bad, cut, marked, sizes = [], set(), [], 0, 0, []
    for _ in range(rounds):
        reqs = [{'request': 'status'}] + [{'request': 'status', 'brief': True,
                                           'reason_width': (w or 80) - 2} for w in WIDTHS]
        full, *briefs = pipelined(node, reqs)
        fvms = json.loads(full)['vms']
        for w, brief in zip(WIDTHS, briefs):
            bvms = json.loads(brief)['vms']
            keys_bad += [v['name'] for v in bvms if set(v) != BRIEF_KEYS]
            cut += sum(b['reason'] != f['reason'] for b, f in zip(bvms, fvms))
            sizes.append((len(full), len(brief)))
            a, req = table_from(full, w)
            b, _ = table_from(brief, w)
            asked.add((req.get('brief'), req.get('reason_width'), (w or 80) - 2))
            marked += sum(l.split()[5:6] == [b'?'] for l in a.splitlines())
            if a != b or not a:
                diffs.append('width %s:\n%s\n----\n%s' % (w, a.decode(errors='replace'),
                                                           b.decode(errors='replace')))
        time.sleep(0.3)
    t.ok(not diffs, 'ppnctl status: the table from a brief reply is the table from a full one of '
         'the same state, byte for byte (%d rounds at widths 80 (pipe), 40, 200)' % rounds,
         (diffs or [''])[0][:3000])
    t.ok(cut > 0, 'the comparison covers reasons the brief reply cut (%d) and rows whose AVAIL '
         'is "?" (%d)' % (cut, marked))
    t.ok(all(r is True and w == want for r, w, want in asked),
         'ppnctl status asks for "brief": true with "reason_width" = columns - 2', str(sorted(asked, key=str)))
    t.ok(not keys_bad, 'a brief VM carries exactly name, state, min, max, target, actual, '
         'available, cpu_weight and reason', ', '.join(keys_bad[:5]))
    t.ok(all(b < f for f, b in sizes), 'the brief reply is shorter (full/brief bytes: %s)'
         % ', '.join('%d/%d' % x for x in sizes[:3]))


def main():
    t = Tap()
    node = Node()
    try:
        node.ctl('node', 'set', 'physical=8G', 'reserve=1G')
        node.add_vm('good', 'good', available=1024 * MIB)
        node.add_vm('silent', 'silent')
        node.add_vm('half', 'half')
        node.add_vm('stall', 'stall', answer=5)
        node.add_vm('flood', 'flood', available=1024 * MIB)
        node.add_vm('hostile', 'hostile', hostile_period=1.5)
        if not t.ok(node.start(), 'ppnd starts and answers ping'):
            return t.done()

        lat, good_states, samples, hostile_rows = [], [], 0, []
        t0 = time.monotonic()
        while time.monotonic() - t0 < WATCH_S:
            reply, dt = node.request('status')
            lat.append(dt)
            vms = {v['name']: v for v in reply['vms']}
            if time.monotonic() - t0 > 2.0:
                good_states.append((vms['good']['state'], vms['good'].get('stats_age_usec')))
            samples += 1
            if samples % 10 == 0:
                out = node.ctl('status', check=False).stdout
                hostile_rows += [l for l in out.splitlines() if l.startswith('hostile ')]
            time.sleep(0.1)
        lat.sort()
        # p95 rather than the maximum: this machine's 2 cores are shared with other jobs
        # running TCG guests (load average 8 seen), and a descheduled sample says nothing about
        # ppnd. Unloaded, the maximum is ~45 ms; the numbers are printed either way.
        numbers = ('%d requests: median %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms; '
                   'load average %.1f on %d CPUs'
                   % (len(lat), lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.95)] * 1e3,
                      lat[int(len(lat) * 0.99)] * 1e3, lat[-1] * 1e3, os.getloadavg()[0],
                      os.cpu_count()))
        if node.sanitized():
            # ASan makes ppnd several times slower at reading the flood: the bound is the
            # release build's; here ppnd must only keep answering (every request was).
            t.ok(True, 'status latency bound # SKIP under ASan (%s)' % numbers)
        else:
            t.ok(lat[int(len(lat) * 0.95)] < LATENCY_MAX_S,
                 'status answers in < 100 ms (p95) while monitors stall, stop mid-line and flood',
                 numbers)
        t.ok(node.ppnd.poll() is None, 'ppnd is still running')
        t.ok(all(s == 'running' for s, _ in good_states),
             'the good VM stays running throughout', str(sorted(set(s for s, _ in good_states))))
        # Idle with 1 GiB available, the good VM settles (settle.h): read every 3 s, and asked
        # at the first tick (200 ms here) where its statistics are within 1 s of the 5 s
        # staleness bound: at most 4 s old plus a tick and the answer when status is asked.
        ages = [a for _, a in good_states if a is not None]
        t.ok(ages and max(ages) < 4_500_000, 'the good VM keeps being sampled (stats age < 4.5 s)',
             'max stats age %.1f s' % (max(ages) / 1e6 if ages else -1))

        st = node.status()
        for name in ('silent', 'half', 'stall'):
            connects = node.fake_log(name).count('connect')
            t.ok(st[name]['state'] != 'running' or connects >= 2,
                 '%s monitor: timed out and reconnected' % name,
                 'state %s (%s); %d connections in %.0f s'
                 % (st[name]['state'], st[name].get('reason') or '', connects, WATCH_S))
            t.ok(connects >= 2, '%s monitor: connected again after the timeout' % name)
        log = open(node.log).read()
        t.ok('did not answer' in log or 'stopped answering' in log or 'timed out' in log.lower()
             or 'no QMP greeting' in log, 'the timeouts are logged with the socket named')

        bad = []
        for name in node.fakes:
            for tgt in node.targets(name):
                if tgt < 512 * MIB or tgt > 2048 * MIB:
                    bad.append('%s: %d MiB' % (name, tgt // MIB))
        n_targets = sum(len(node.targets(n)) for n in node.fakes)
        t.ok(not bad, 'no target outside [min, max] was ever sent (%d targets seen)' % n_targets,
             ', '.join(bad[:10]))
        hostile = node.targets('hostile')
        t.ok(all(x <= 2048 * MIB for x in hostile),
             'the lying guest never got more than its maximum',
             'hostile targets (MiB): %s' % [x // MIB for x in hostile[:20]])
        t.ok(all(x >= 512 * MIB for x in node.targets('good')),
             'the lying guest never pushed the good VM below its minimum')

        # Its claims include 2^64-2 bytes available: the table must not print that as a
        # negative size (it once showed "-2"); impossible claims show as "?".
        negative = [r for r in hostile_rows if re.search(r'\s-\d', r)]
        t.ok(hostile_rows and not negative, 'ppnctl status never shows the lying guest a negative size',
             '%d rows; e.g. %s' % (len(hostile_rows), (negative or hostile_rows or [''])[0]))

        check_brief(t, node)

        hwm = vm_hwm_kib(node)
        flood_conn = node.fake_log('flood').count('connect')
        if node.sanitized():
            # ASan's shadow memory and 256 MiB quarantine are not ppnd's use.
            t.ok(True, 'ppnd memory bound # SKIP under ASan (VmHWM %d KiB)' % hwm)
        else:
            t.ok(0 < hwm < RSS_MAX_KIB, 'ppnd memory stays bounded under the event flood',
                 'VmHWM %d KiB (bound %d KiB)' % (hwm, RSS_MAX_KIB))
        adj = int(node.proc('oom_score_adj'))
        if can_lower_oom_score(node):
            t.ok(adj == -900, 'ppnd lowered its own oom_score_adj', 'oom_score_adj %d' % adj)
        else:
            t.ok(adj == 0 and 'CAP_SYS_RESOURCE' in open(node.log).read(),
                 'ppnd without CAP_SYS_RESOURCE (this container): says it cannot lower '
                 'oom_score_adj', 'oom_score_adj %d' % adj)
        rc = node.kill(signal.SIGTERM)
        t.ok(rc == 0, 'ppnd exits 0 on SIGTERM after all this (under ASan: no leak, no error)',
             'exit status %s' % rc)
        time.sleep(0.3)  # the fakes log the hang-up
        events = [int(l.split()[1]) for l in node.fake_log('flood') if l.startswith('events ')]
        t.ok(events and events[-1] > 10000, 'the flood was real: %d events read by ppnd in about '
             '%.0f s over %d connection(s)' % (events[-1] if events else 0, WATCH_S + 1, flood_conn))
    finally:
        node.cleanup()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
