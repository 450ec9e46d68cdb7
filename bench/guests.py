#!/usr/bin/env python3
"""Reaction and reclaim with a real guest (issue 7, parts 1 and 2).

    bench/guests.py reaction|reclaim|vmem OUT.jsonl

env: PPND, PPNCTL, TESTVM (default build/...), PPN_GUEST_DIR (build/guest),
     BENCH_REPS (5), REACTION_PAST_MIB (256), REACTION_VARIANTS ("plain deflate-on-oom"),
     FAST_SIGNAL (yes: ppnd's [controller] fast-signal; "no" measures without it)

The guest is the project's test guest (tests/guest) booted with the testvm CLI under TCG with
free page reporting on, as `ppnctl start` boots a VM, and a second QMP monitor (qmp2.sock)
from which this script measures: QEMU allows one client per monitor and ppnd holds the first. Every measurement is also taken as a floor on the same guest
in the same run, by driving the balloon directly, so results can be read as ratios.

reaction: run twice, with a plain balloon and with deflate-on-oom (the guest may then take
  memory back by itself; ppnd adopts that). A 1 GiB guest held at 384 MiB (an operator lease that then expires; the guest is
  idle, so ppnd keeps it there), then a program in the guest allocates everything available
  plus REACTION_PAST_MIB. Reaction = from the allocation's start until actual has grown by
  REACTION_PAST_MIB. Floor = stats interval (1 s) + the raw deflate time of the same distance
  (a direct `balloon` command, measured on this guest before ppnd starts). Also: the
  allocation's duration (vs. the same allocation with memory to spare: the stall cost) and
  OOM kills in the guest console ("Killed process"). The allocation is made in 64 MiB
  programs back to back, as fast as the guest can (one large malloc is refused by the guest's
  overcommit heuristic once the balloon has shrunk MemTotal).
reclaim: a 2 GiB guest (free page reporting and deflate-on-oom on, `ppnctl start`'s defaults)
  allocates and frees 1.5 GiB (reporting then returns most of it to the host by itself: the
  QEMU RSS columns show how much), then the node is declared short of memory (ppnd's host-low mark raised above MemAvailable with SIGHUP, as if
  the host ran low). Reclaim = until actual settles (and until 90 % of the reclaim is done),
  QEMU RSS before/after. Floor = a direct `balloon` to the same final size from the same
  state (re-created after ppnd has stopped).
vmem: the two actuators on the same guest in the same run, driven directly over QMP (the
  mechanisms' own speed, the floor under any controller): a guest with 1536 MiB of base memory
  and a 1536 MiB virtio-mem region touches 1 GiB and frees it, then gives it back (a) by the
  balloon (value 1536 -> 512 MiB) and (b) by unplugging (1 GiB plugged -> 0), and takes it again
  (deflate vs plug). GiB/s per repetition (median, min-max), the QEMU RSS that left the host,
  and the per-repetition ratio virtio-mem / balloon. Then ppnd's growth by plugging (records
  'vmem_growth'): the reaction scenario on a guest with 384 MiB of base memory and a 640 MiB
  region (nothing plugged, so its size is 384 MiB as the reaction guest's is), ppnd managing it
  with `--base 384M`. Reaction = from the allocation's start until the size (balloon actual +
  plugged) has grown by REACTION_PAST_MIB. Floor = stats interval + one direct `qom-set
  requested-size` plug of the same REACTION_PAST_MIB on the same guest in the same run: the
  floor of a controller that waits for the guest's statistics, as for the balloon. The ratio to
  the plug alone (reaction_over_raw) says what detection costs.
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PPND = os.environ.get('PPND', os.path.join(ROOT, 'build/src/ppnd'))
PPNCTL = os.environ.get('PPNCTL', os.path.join(ROOT, 'build/src/ppnctl'))
TESTVM = os.environ.get('TESTVM', os.path.join(ROOT, 'build/tests/guest/testvm'))
REPS = int(os.environ.get('BENCH_REPS', '5'))
PAST_MIB = int(os.environ.get('REACTION_PAST_MIB', '256'))
VARIANTS = os.environ.get('REACTION_VARIANTS', 'plain deflate-on-oom').split()
FAST_SIGNAL = os.environ.get('FAST_SIGNAL', 'yes')
MIB = 1 << 20
STATS_INTERVAL_S = 1.0   # ppnd's default [controller] stats-interval


def say(msg):
    print('==> ' + msg, file=sys.stderr, flush=True)


class Qmp:
    """A minimal QMP client (the second monitor); events are skipped."""

    def __init__(self, path, timeout=10):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile('rw')
        json.loads(self.f.readline())
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.f.write(json.dumps(msg) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'event' in r:
                continue
            if 'error' in r:
                raise RuntimeError('%s: %s' % (name, r['error']))
            return r['return']

    def actual(self):
        return self.cmd('query-balloon')['actual']

    def close(self):
        self.s.close()


class Guest:
    """A test guest booted with the testvm CLI, as `ppnctl start` boots a VM: virtio-balloon
    with free page reporting on (and deflate-on-oom when asked). disk: a raw image attached
    read-only on virtio-blk. region_mib: a virtio-mem region of that size beside the boot memory.
    wait=False returns at once; call wait_ready() later (to boot several guests at the same time)."""

    def __init__(self, work, mem_mib, deflate_on_oom=False, name='vm', disk=None, wait=True, region_mib=0):
        self.name = name
        self.region_mib = region_mib
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        extra = ('-chardev socket,id=mon2,path=%s/qmp2.sock,server=on,wait=off '
                 '-mon chardev=mon2,mode=control' % self.dir)
        if disk:
            extra += ' -drive file=%s,if=virtio,format=raw,readonly=on' % disk
        if region_mib:
            extra += (' -m %dM,maxmem=%dM,slots=1 -object memory-backend-ram,id=ppn-vmem0-mem,size=%dM '
                      '-device virtio-mem-pci,id=ppn-vmem0,memdev=ppn-vmem0-mem,requested-size=0'
                      % (mem_mib, mem_mib + region_mib, region_mib))
        self.log = open(os.path.join(work, name + '-testvm.log'), 'w')
        args = [TESTVM, 'boot', self.dir, '--mem', str(mem_mib), '--free-page-reporting', '--extra', extra]
        if deflate_on_oom:
            args.append('--deflate-on-oom')
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=180):
        ready = os.path.join(self.dir, 'ready')
        deadline = time.time() + timeout
        while not os.path.exists(ready):
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError('guest did not boot (see %s)' % self.log.name)
            time.sleep(0.2)
        time.sleep(0.1)
        info = dict(line.split(' ', 1) for line in open(ready).read().splitlines() if ' ' in line)
        self.pid = int(info['pid'])
        self.qmp_path = info['qmp']
        self.console = info['console']
        self.q = Qmp(os.path.join(self.dir, 'qmp2.sock'))

    def exec(self, cmd, timeout=120):
        r = subprocess.run([TESTVM, 'exec', self.dir, '--timeout', str(timeout)] + cmd.split(),
                           capture_output=True, text=True)
        return r.returncode, r.stdout

    def rss_mib(self):
        for line in open('/proc/%d/status' % self.pid):
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def oom_kills(self):
        try:
            return len(re.findall(r'Killed process', open(self.console, errors='replace').read()))
        except OSError:
            return 0

    @staticmethod
    def _wait(get, pred, timeout, poll):
        """(seconds until pred(get()) held, that value), or (None, get()) after timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            a = get()
            if pred(a):
                return time.monotonic() - t0, a
            time.sleep(poll)
        return None, get()

    def wait_actual(self, pred, timeout=30, poll=0.01):
        return self._wait(self.q.actual, pred, timeout, poll)

    def size(self):
        """What the guest holds: the balloon's actual (base - balloon) + what is plugged."""
        return self.q.actual() + (plugged(self) if self.region_mib else 0)

    def wait_size(self, pred, timeout=30, poll=0.01):
        return self._wait(self.size, pred, timeout, poll)

    def stop(self):
        try:
            self.q.close()
        except Exception:
            pass
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Daemon:
    """ppnd with its own ledger, config and control socket in work. vms: [(name, guest,
    min_mib, max_mib[, base_mib])]: base_mib adds --base (a virtio-mem region above it)."""

    def __init__(self, work, vms, physical, reserve, extra_config=''):
        self.work = work
        self.extra_config = extra_config
        self.names = [v[0] for v in vms]
        self.ledger = os.path.join(work, 'ledger.db')
        self.sock = os.path.join(work, 'run', 'ppnd.sock')
        self.conf = os.path.join(work, 'ppnd.conf')
        os.makedirs(os.path.join(work, 'run'), exist_ok=True)
        os.makedirs(os.path.join(work, 'no-cgroup'), exist_ok=True)
        self.ctl('node', 'set', 'physical=%s' % physical, 'reserve=%s' % reserve)
        for name, guest, min_mib, max_mib, *base in vms:
            self.ctl('vm', 'add', name, '--min', '%dM' % min_mib, '--max', '%dM' % max_mib,
                     '--qmp', guest.qmp_path, *(['--base', '%dM' % base[0]] if base else []))
        self.write_config('')
        self.log = open(os.path.join(work, 'ppnd.log'), 'w')
        self.p = subprocess.Popen([PPND, '--config', self.conf], stdout=self.log, stderr=subprocess.STDOUT)

    def write_config(self, policy):
        with open(self.conf, 'w') as f:
            f.write('[daemon]\nlog-level = info\nruntime-dir = %s/run\n[ledger]\npath = %s\n'
                    '[control]\nsocket = %s\n[cgroup]\nroot = %s/no-cgroup\n[controller]\nfast-signal = %s\n'
                    '%s[policy]\n%s' % (self.work, self.ledger, self.sock, self.work, FAST_SIGNAL,
                                         self.extra_config, policy))

    def ctl(self, *args, check=True):
        r = subprocess.run([PPNCTL, '--ledger', self.ledger, '--socket', self.sock] + list(args),
                           capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError('ppnctl %s: %s%s' % (' '.join(args), r.stdout, r.stderr))
        return r.stdout

    def status(self):
        try:
            out = self.ctl('--json', 'status', check=False)
            return {v['name']: v for v in json.loads(out)['vms']}
        except (ValueError, KeyError):
            return {}

    def wait_running(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            st = self.status()
            if all(st.get(n, {}).get('state') == 'running' and st[n].get('guest_available_bytes') is not None
                   for n in self.names):
                return st
            time.sleep(0.2)
        raise RuntimeError('ppnd did not adopt the guests (see %s)' % self.log.name)

    def events(self, after=0):
        """ppnd's events after sequence `after` (the control protocol's 'events' request)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.sock)
            s.sendall((json.dumps({'request': 'events', 'after': after, 'limit': 2000}) + '\n').encode())
            buf = b''
            while not buf.endswith(b'\n'):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def last_seq(self):
        return self.events(1 << 62)['last_seq']

    def first_growth(self, after):
        """The first event after sequence `after` that grew a VM (fast signal or policy)."""
        for e in self.events(after)['events']:
            if e['seq'] > after and e['kind'] in ('grow-fast', 'grow-pressure', 'grow-headroom', 'guest-deflated'):
                return e
        return None

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def rec(out, part, metric, value, unit, **extra):
    r = {'part': part}
    r.update(extra)
    r.update({'metric': metric, 'value': value, 'unit': unit})
    out.write(json.dumps(r) + '\n')
    out.flush()


def available_mib(g):
    rc, text = g.exec('cat /proc/meminfo')
    m = re.search(r'MemAvailable:\s+(\d+) kB', text)
    return int(m.group(1)) // 1024 if m else 0


CHUNK_MIB = 64


def timed_hog(g, name, mib):
    """Allocates mib MiB in 64 MiB programs (one large malloc is refused by the guest's
    overcommit heuristic once the balloon has shrunk MemTotal). Returns (seconds, chunks,
    status of the first failing chunk or 0)."""
    t0 = time.monotonic()
    k = 0
    while k * CHUNK_MIB < mib:
        rc, _ = g.exec('guest-work hog %s_%d %d' % (name, k, CHUNK_MIB))
        k += 1
        if rc != 0:
            return time.monotonic() - t0, k, rc
    return time.monotonic() - t0, k, 0


def stop_hog(g, name, chunks):
    for k in range(chunks):
        g.exec('guest-work stop %s_%d' % (name, k))


def raw_deflate(g, low, dist):
    """Direct balloon commands: low -> low + dist, REPS times; seconds each."""
    times = []
    for _ in range(REPS):
        g.q.cmd('balloon', value=low)
        g.wait_actual(lambda a: a <= low + MIB)
        t0 = time.monotonic()
        g.q.cmd('balloon', value=low + dist)
        dt, _ = g.wait_actual(lambda a: a >= low + dist - MIB)
        times.append(dt if dt is not None else time.monotonic() - t0)
    return times


def reaction(out, work):
    for variant in VARIANTS:
        sub = os.path.join(work, variant)
        os.makedirs(sub)
        reaction_one(out, sub, variant)


def raw_plug(g, dist):
    """Direct plugs of the region: nothing -> dist bytes plugged, REPS times; seconds each."""
    times = []
    for _ in range(REPS):
        request(g, 0)
        wait_plugged(g, lambda p: p == 0, timeout=120)
        t0 = time.monotonic()
        request(g, dist // MIB)
        dt = wait_plugged(g, lambda p: p >= dist)
        times.append(dt if dt is not None else time.monotonic() - t0)
    request(g, 0)
    wait_plugged(g, lambda p: p == 0, timeout=120)
    return times


def reaction_one(out, work, variant):
    """variant: plain, deflate-on-oom (a 1 GiB guest, balloon only) or virtio-mem (384 MiB of
    base memory and a 640 MiB region, nothing plugged, an empty balloon with deflate-on-oom as
    `ppnctl start` gives it; ppnd grows it by plugging, the floor is a direct plug)."""
    low = 384 * MIB
    vmem = variant == 'virtio-mem'
    if vmem:
        g = Guest(work, 384, deflate_on_oom=True, region_mib=640)
    else:
        g = Guest(work, 1024, deflate_on_oom=(variant == 'deflate-on-oom'))
    d = None
    try:
        g.exec('guest-work status x')
        if vmem:
            raw = raw_plug(g, PAST_MIB * MIB)
            request(g, 640)
            wait_plugged(g, lambda p: p >= 640 * MIB)
        else:
            raw = raw_deflate(g, low, PAST_MIB * MIB)
            g.q.cmd('balloon', value=1024 * MIB)
            g.wait_actual(lambda a: a >= 1023 * MIB)
        # The same allocation with memory to spare: its duration is the no-stall reference.
        ref_mib = max(64, available_mib(g) - 640 + PAST_MIB)
        free_times = []
        for i in range(REPS):
            dt, chunks, _ = timed_hog(g, 'ref%d' % i, min(ref_mib, 512))
            free_times.append(dt)
            stop_hog(g, 'ref%d' % i, chunks)
        if vmem:
            request(g, 0)
            wait_plugged(g, lambda p: p == 0, timeout=120)
        d = Daemon(work, [('g', g, 256, 1024) + ((384,) if vmem else ())], '4G', '256M')
        d.wait_running()
        reactions, hogs, ooms0 = [], [], g.oom_kills()
        decisions, arrivals = [], []
        failed = failed_alloc = 0
        for i in range(REPS):
            d.ctl('balloon', 'g', '%dM' % (low // MIB), '--for', '4s')
            g.wait_size(lambda a: a <= low + MIB, timeout=60)
            time.sleep(4.5)                     # the lease expires; the idle guest stays
            start = g.size()
            avail = available_mib(g)
            size = avail + PAST_MIB
            res = {}
            seq = d.last_seq()
            t0, t0_real = time.monotonic(), time.time()
            th = threading.Thread(target=lambda: res.update(zip(('t', 'chunks', 'rc'),
                                                                timed_hog(g, 'h%d' % i, size))))
            th.start()
            dt, _ = g.wait_size(lambda a: a >= start + PAST_MIB * MIB, timeout=60)
            th.join()
            if dt is None:
                failed += 1
            else:
                reactions.append(dt)
            hogs.append(res.get('t', 0))
            # Where the time went: ppnd's first growth decision (its event's wall-clock time)
            # after the allocation's start, and the balloon's arrival after that decision.
            grow = d.first_growth(seq)
            decided = grow['time_usec'] / 1e6 - t0_real if grow else None
            if decided is not None:
                decisions.append(decided)
                if dt is not None:
                    arrivals.append(dt - decided)
            say('reaction %s %d: start %d MiB, allocating %d MiB: %s s (decided %s s by %s), allocation took '
                '%.2f s (rc %s)' % (variant, i, start // MIB, size, '%.2f' % dt if dt is not None else 'never',
                                    '%.2f' % decided if decided is not None else 'never',
                                    grow['kind'] if grow else '-', res.get('t', 0), res.get('rc')))
            if res.get('rc'):
                failed_alloc += 1
            stop_hog(g, 'h%d' % i, res.get('chunks', 0))
            time.sleep(1)
        ooms = g.oom_kills() - ooms0
        floor = STATS_INTERVAL_S + statistics.median(raw)
        P = 'vmem_growth' if vmem else 'reaction'
        rec(out, P, 'raw_plug_median' if vmem else 'raw_deflate_median', round(statistics.median(raw) * 1000, 1),
            'ms', mib=PAST_MIB, guest=variant, min=round(min(raw) * 1000, 1), max=round(max(raw) * 1000, 1))
        rec(out, P, 'floor', round(floor * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
        if reactions:
            med = statistics.median(reactions)
            rec(out, P, 'reaction_median', round(med * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
            rec(out, P, 'reaction_max', round(max(reactions) * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
            rec(out, P, 'reaction_over_floor', round(med / floor, 2), 'ratio', mib=PAST_MIB, guest=variant)
            rec(out, P, 'reaction_min', round(min(reactions) * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
            # Against the mechanism alone (no controller can beat a plug or deflate made at the
            # allocation's first instant): what detection costs.
            rec(out, P, 'reaction_over_raw', round(med / statistics.median(raw), 2), 'ratio', mib=PAST_MIB,
                guest=variant)
            rec(out, P, 'reactions', ' '.join('%.2f' % x for x in reactions), 's', mib=PAST_MIB, guest=variant)
        if decisions:
            rec(out, P, 'decision_median', round(statistics.median(decisions) * 1000, 1), 'ms', mib=PAST_MIB,
                guest=variant, min=round(min(decisions) * 1000, 1), max=round(max(decisions) * 1000, 1))
        if arrivals:
            rec(out, P, 'arrival_median', round(statistics.median(arrivals) * 1000, 1), 'ms', mib=PAST_MIB,
                guest=variant, min=round(min(arrivals) * 1000, 1), max=round(max(arrivals) * 1000, 1))
        rec(out, P, 'loadavg', open('/proc/loadavg').read().split()[0], 'load', mib=PAST_MIB, guest=variant)
        rec(out, P, 'not_reached_60s', failed, 'count', mib=PAST_MIB, guest=variant)
        rec(out, P, 'repetitions', REPS, 'count', mib=PAST_MIB, guest=variant)
        rec(out, P, 'alloc_median_ppnd', round(statistics.median(hogs) * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
        rec(out, P, 'alloc_median_spare', round(statistics.median(free_times) * 1000, 1), 'ms', mib=PAST_MIB, guest=variant)
        rec(out, P, 'alloc_stall_ratio', round(statistics.median(hogs) / statistics.median(free_times), 2),
            'ratio', mib=PAST_MIB, guest=variant)
        rec(out, P, 'oom_kills', ooms, 'count', mib=PAST_MIB, guest=variant)
        rec(out, P, 'alloc_failed', failed_alloc, 'count', mib=PAST_MIB, guest=variant)
        rec(out, P, 'fast_signal', FAST_SIGNAL, 'config', mib=PAST_MIB, guest=variant)
    finally:
        if d:
            d.stop()
        g.stop()


def settle(g, timeout=120, quiet=3.0):
    """Polls actual until it has not moved for `quiet` s; returns [(t, actual)]."""
    t0 = time.monotonic()
    samples = [(0.0, g.q.actual())]
    last_change = 0.0
    while time.monotonic() - t0 < timeout:
        time.sleep(0.05)
        t, a = time.monotonic() - t0, g.q.actual()
        if abs(a - samples[-1][1]) > MIB // 2:
            last_change = t
        samples.append((t, a))
        if t - last_change > quiet and t > quiet:
            break
    return samples, last_change


def use_and_free(g, name, mib):
    _, chunks, rc = timed_hog(g, name, mib)
    for k in range(chunks):
        g.exec('guest-work free %s_%d' % (name, k))
    if rc:
        raise RuntimeError('the guest could not allocate %d MiB' % mib)


def reclaim(out, work):
    g = Guest(work, 2048, deflate_on_oom=True)   # as `ppnctl start` boots it
    d = None
    P = 'reclaim'
    try:
        use_and_free(g, 'r', 1536)
        d = Daemon(work, [('g', g, 256, 2048)], '4G', '256M')
        d.wait_running()
        time.sleep(3)
        rss0, a0 = g.rss_mib(), g.q.actual()
        avail_host = int(re.search(r'MemAvailable:\s+(\d+)', open('/proc/meminfo').read()).group(1)) * 1024
        d.write_config('host-low = %dM\n' % ((avail_host + 8 * (1 << 30)) // MIB))
        d.p.send_signal(1)                      # SIGHUP: [policy] applies live
        samples, t_settle = settle(g)
        a1 = samples[-1][1]
        rss1 = g.rss_mib()
        st = d.status().get('g', {})
        use = (st.get('actual_bytes') or a1) - (st.get('guest_available_bytes') or 0)
        t90 = next((t for t, a in samples if a0 - a >= 0.9 * (a0 - a1)), None)
        say('reclaim: %d -> %d MiB in %.2f s (90%% in %.2f s); RSS %.0f -> %.0f MiB'
            % (a0 // MIB, a1 // MIB, t_settle, t90 if t90 is not None else -1, rss0, rss1))
        d.stop()
        d = None
        # Floor: the same state again, then one direct balloon command to the same size.
        g.q.cmd('balloon', value=2048 * MIB)
        g.wait_actual(lambda a: a >= 2047 * MIB)
        use_and_free(g, 'f', 1536)
        t0 = time.monotonic()
        g.q.cmd('balloon', value=a1)
        dt, _ = g.wait_actual(lambda a: a <= a1 + MIB, timeout=60)
        floor = dt if dt is not None else time.monotonic() - t0
        rec(out, P, 'actual_before', a0 // MIB, 'MiB')
        rec(out, P, 'actual_after', a1 // MIB, 'MiB')
        rec(out, P, 'guest_use_after', use // MIB, 'MiB')
        rec(out, P, 'reclaim_time', round(t_settle, 2), 's')
        rec(out, P, 'reclaim_90pct', round(t90, 2) if t90 is not None else None, 's')
        rec(out, P, 'floor_direct_balloon', round(floor, 2), 's')
        rec(out, P, 'reclaim_over_floor', round(t_settle / floor, 2) if floor else None, 'ratio')
        rec(out, P, 'qemu_rss_before', round(rss0), 'MiB')
        rec(out, P, 'qemu_rss_after', round(rss1), 'MiB')
        rec(out, P, 'oom_kills', g.oom_kills(), 'count')
    finally:
        if d:
            d.stop()
        g.stop()


def plugged(g):
    return [d for d in g.q.cmd('query-memory-devices') if d['type'] == 'virtio-mem'][0]['data']['size']


def wait_plugged(g, pred, timeout=60):
    return g._wait(lambda: plugged(g), pred, timeout, 0.01)[0]


def request(g, mib):
    g.q.cmd('qom-set', path='/machine/peripheral/ppn-vmem0', property='requested-size', value=mib * MIB)


def gibps(seconds, mib=1024):
    return round(mib / 1024.0 / seconds, 3) if seconds else None


def touch_and_free(g, name):
    """1 GiB touched in the guest and freed: resident on the host, free in the guest."""
    use_and_free(g, name, 1024)
    for k in range(1024 // CHUNK_MIB):
        g.exec('guest-work stop %s_%d' % (name, k))


def vmem_one(g, i):
    """One repetition from base 1536 MiB, nothing plugged, balloon empty."""
    r = {}
    touch_and_free(g, 'b%d' % i)
    rss0 = g.rss_mib()
    t0 = time.monotonic()
    g.q.cmd('balloon', value=512 * MIB)
    dt, _ = g.wait_actual(lambda a: a <= 513 * MIB, timeout=120)
    r['balloon_reclaim'] = dt if dt is not None else time.monotonic() - t0
    r['balloon_rss_freed'] = rss0 - g.rss_mib()
    g.q.cmd('balloon', value=1536 * MIB)
    dt, _ = g.wait_actual(lambda a: a >= 1535 * MIB, timeout=120)
    r['balloon_grow'] = dt
    # The same gigabyte through virtio-mem: the guest's size goes 1536 -> 2560 -> 1536 MiB.
    t0 = time.monotonic()
    request(g, 1024)
    r['vmem_grow'] = wait_plugged(g, lambda p: p >= 1024 * MIB)
    touch_and_free(g, 'v%d' % i)
    rss0 = g.rss_mib()
    request(g, 0)
    r['vmem_reclaim'] = wait_plugged(g, lambda p: p == 0, timeout=120)
    r['vmem_rss_freed'] = rss0 - g.rss_mib()
    say('vmem %d: balloon reclaim %.2f s (RSS -%.0f MiB), grow %s s; virtio-mem reclaim %s s (RSS -%.0f MiB), '
        'plug %s s' % (i, r['balloon_reclaim'], r['balloon_rss_freed'], r['balloon_grow'], r['vmem_reclaim'],
                       r['vmem_rss_freed'], r['vmem_grow']))
    return r


def vmem(out, work):
    g = Guest(work, 1536, deflate_on_oom=True, region_mib=1536)
    P = 'vmem'
    try:
        g.exec('guest-work status x')
        reps = [vmem_one(g, i) for i in range(REPS)]
        for key in ('balloon_reclaim', 'vmem_reclaim', 'balloon_grow', 'vmem_grow'):
            vals = [gibps(r[key]) for r in reps if r[key]]
            if vals:
                rec(out, P, key + '_gibps_median', statistics.median(vals), 'GiB/s', min=min(vals), max=max(vals))
        for key in ('balloon_rss_freed', 'vmem_rss_freed'):
            vals = [r[key] for r in reps]
            rec(out, P, key + '_median', round(statistics.median(vals)), 'MiB', min=round(min(vals)), max=round(max(vals)))
        ratios = [r['balloon_reclaim'] / r['vmem_reclaim'] for r in reps if r['vmem_reclaim']]
        if ratios:
            rec(out, P, 'reclaim_vmem_over_balloon_median', round(statistics.median(ratios), 2), 'ratio',
                min=round(min(ratios), 2), max=round(max(ratios), 2))
        rec(out, P, 'repetitions', REPS, 'count')
        rec(out, P, 'oom_kills', g.oom_kills(), 'count')
        rec(out, P, 'loadavg', open('/proc/loadavg').read().split()[0], 'load')
    finally:
        g.stop()
    # ppnd's own growth of a virtio-mem guest against the plug it is made of (records 'vmem_growth').
    sub = os.path.join(work, 'growth')
    os.makedirs(sub)
    reaction_one(out, sub, 'virtio-mem')


def main():
    part, path = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix='ppn-bench-%s.' % part)
    try:
        with open(path, 'w') as out:
            {'reaction': reaction, 'reclaim': reclaim, 'vmem': vmem}[part](out, work)
    finally:
        if os.environ.get('PPN_KEEP_BENCH_DIR'):
            say('kept ' + work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
