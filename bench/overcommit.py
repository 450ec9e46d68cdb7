#!/usr/bin/env python3
"""Real guests on an overcommitted node: no controller, MOM, Proxmox and ppnd (issue 12).

    bench/overcommit.py OUT.jsonl

env: PPND, PPNCTL, TESTVM, PPN_GUEST_DIR (as bench/guests.py), BASELINE (build/bench/ppn-baseline),
     BENCH_REPS (3), OVERCOMMIT_ARMS (none mom pve ppnd), PPN_KEEP_BENCH_DIR=1 keeps the work dir

The scenario is fixed here, before any result (SCENARIO below). Three test guests of 1 GiB
each, booted as `ppnctl start` boots a VM (virtio-balloon with free page reporting and
deflate-on-oom on), each with the same ext4 image on virtio-blk (read-only), so they have a real
page cache. The node has 2 GiB of RAM, 256 MiB of it used by the host itself: the QEMU
processes may use 1792 MiB (the capacity), less than their Σ max (3 GiB plus QEMU's own
memory). From t = 0 (the controller started):
  idle    t = 3 s: reads a 400 MiB file once (its page cache fills), then does nothing
  reader  t = 3 s: reads a 400 MiB file 10 times, 3 s apart (fast while it stays cached)
  burst   t = 8 s: 4 bursts, each allocating and touching 400 MiB, held 3 s, freed, 4 s apart
The arms, each on the same three guests (reset between arms: workloads stopped, caches dropped,
balloons at max, and a 5 s pause for free page reporting to hand the freed memory back):
  none    no controller: every VM at its max
  mom     bench/ppn-baseline mom: the MOM port, 5 s samples, policy every 10 s
  pve     bench/ppn-baseline pve: the Proxmox port, 2 s stats, cycle every 10 s
  ppnd    build/src/ppnd, node physical 2G, reserve 640M (the host's 256 MiB plus 128 MiB of
          QEMU's own memory per VM: a fresh 1 GiB test guest has 220 MiB RSS under TCG, of
          which ~100 MiB is guest memory), each VM min 256M max 1G
Every controller reads the node's memory as it would be there: MemTotal 2 GiB, MemAvailable =
2 GiB − 256 MiB − Σ QEMU RSS. MOM and Proxmox compute it in bench/baseline-driver.c; ppnd reads
it from a meminfo file this script rewrites every 0.2 s (NodeView; ppnd's `[host] meminfo`),
since the real /proc/meminfo of this machine is never low. ppnd's PSI is the machine's own.
This machine has far more RAM than the node: exceeding the capacity costs nothing here, so the
no-controller arm's times are also the times with memory to spare (the reference for slowdown),
and its seconds above capacity are what a real node of that size would have had to absorb
(swap, or the host's OOM killer).
Each repetition boots fresh guests and runs the arms in a rotated order.
Measured per run, from t = 0 until every workload has ended (at least window_s, at most
workload_timeout_s): Σ QEMU RSS sampled every 0.5 s as GiB·min (the memory the node gave to
get the same work done) and its mean, the seconds Σ RSS was above capacity, its peak; guest
OOM kills ("Killed process" in the consoles); each workload's busy time (reading; allocating
and touching) and whether it finished; balloon commands sent.
Per repetition, from its no-controller run: the footprint floor, a lower bound on the footprint
of any controller that leaves both workloads as fast as with memory to spare: the reader's and
the burst guest's RSS as they were with memory to spare (the reader's cache is its working set,
the bursts' memory is touched), plus the idle guest at the lowest RSS it had in any arm of the
repetition (each repetition boots fresh guests, so at most its RSS fresh from boot), at every
sample; as GiB·min and over the no-controller footprint.
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guests  # noqa: E402  (the Guest, Daemon and Qmp helpers of the other real-guest parts)

ROOT = guests.ROOT
BASELINE = os.environ.get('BASELINE', os.path.join(ROOT, 'build/bench/ppn-baseline'))
REPS = int(os.environ.get('BENCH_REPS', '3'))
ARMS = os.environ.get('OVERCOMMIT_ARMS', 'none mom pve ppnd').split()
MIB = 1 << 20

SCENARIO = {
    'guest_mib': 1024, 'min_mib': 256,
    'physical_mib': 2048, 'host_use_mib': 256, 'qemu_overhead_mib': 128,
    'window_s': 45, 'sample_s': 0.5, 'workload_timeout_s': 150,
    'file_mib': 400,
    'idle': {'at': 3, 'cmd': 'guest-work read idle 1 0 /mnt/idle.dat'},
    'reader': {'at': 3, 'cmd': 'guest-work read reader 10 3000 /mnt/reader.dat'},
    'burst': {'at': 8, 'cmd': 'guest-work burst burst 4 400 3000 4000'},
}
S = SCENARIO
CAPACITY = (S['physical_mib'] - S['host_use_mib']) * MIB
PPND_RESERVE_MIB = S['host_use_mib'] + 3 * S['qemu_overhead_mib']
VMS = ['idle', 'reader', 'burst']
MEASURED = ['reader', 'burst']          # the workloads whose completion time is measured


def say(msg):
    guests.say(msg)


def disk_image(path):
    """An ext4 image with the two files (random data), made once and kept."""
    if os.path.exists(path):
        return path
    tmp = path + '.d'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in ('reader.dat', 'idle.dat'):
        with open(os.path.join(tmp, f), 'wb') as out:
            for _ in range(S['file_mib']):
                out.write(os.urandom(MIB))
    size_mib = 2 * S['file_mib'] + 128
    subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'ppn-bench', '-d', tmp, path + '.tmp', '%dM' % size_mib],
                   check=True)
    os.rename(path + '.tmp', path)
    shutil.rmtree(tmp)
    return path


def loadavg():
    return open('/proc/loadavg').read().split()[0]


class NodeView(threading.Thread):
    """The node's /proc/meminfo as it would read there, rewritten every 0.2 s for ppnd (the
    same figure bench/baseline-driver.c computes for MOM and Proxmox)."""

    def __init__(self, gs, path):
        super().__init__(daemon=True)
        self.gs, self.path, self.stop_ev = gs, path, threading.Event()
        self.write()

    def write(self):
        used = S['host_use_mib'] * MIB + sum(int(g.rss_mib() * MIB) for g in self.gs)
        total = S['physical_mib'] * MIB
        avail = max(0, total - used) // 1024
        with open(self.path + '.tmp', 'w') as f:
            f.write('MemTotal:       %8d kB\nMemFree:        %8d kB\nMemAvailable:   %8d kB\n'
                    % (total // 1024, avail, avail))
        os.rename(self.path + '.tmp', self.path)

    def run(self):
        while not self.stop_ev.wait(0.2):
            try:
                self.write()
            except OSError:
                pass

    def finish(self):
        self.stop_ev.set()
        self.join()


class Sampler(threading.Thread):
    """Σ QEMU RSS and each balloon's actual every sample_s seconds."""

    def __init__(self, gs):
        super().__init__(daemon=True)
        self.gs, self.samples, self.stop_ev = gs, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic() - self.t0
            rss = {g.name: g.rss_mib() * MIB for g in self.gs}
            act = {}
            for g in self.gs:
                try:
                    act[g.name] = g.q.actual()
                except Exception:
                    act[g.name] = None
            self.samples.append((t, sum(rss.values()), rss, act))
            self.stop_ev.wait(S['sample_s'])

    def finish(self):
        self.stop_ev.set()
        self.join()
        return self.samples


def integrate(samples, until):
    """GiB·min of Σ RSS and seconds above capacity over [0, until] (left rectangles)."""
    area = above = 0.0
    for (t, r, _, _), (t2, _, _, _) in zip(samples, samples[1:]):
        if t >= until:
            break
        dt = min(t2, until) - t
        area += r * dt
        if r > CAPACITY:
            above += dt
    return area / (1 << 30) / 60, above


def mount_disk(g):
    rc, out = g.exec('mkdir -p /mnt && mount -t ext4 -o ro,noload /dev/vda /mnt && ls /mnt')
    if rc != 0 or 'reader.dat' not in out:
        raise RuntimeError('%s: cannot mount the disk: %s' % (g.name, out))


def reset(gs):
    """Every workload stopped, caches dropped, balloon at max, reporting given time."""
    for g in gs:
        for w in VMS:
            g.exec('guest-work stop %s' % w)
        g.exec('rm -f /run/work/*; sync; echo 3 > /proc/sys/vm/drop_caches')
        g.q.cmd('balloon', value=S['guest_mib'] * MIB)
        # The guest's statistics reports off again: each arm sets its own interval.
        g.q.cmd('qom-set', path='/machine/peripheral/balloon0', property='guest-stats-polling-interval', value=0)
    for g in gs:
        g.wait_actual(lambda a: a >= (S['guest_mib'] - 1) * MIB, timeout=30)
    time.sleep(5)


class Controller:
    """One arm's controller: nothing, ppn-baseline (mom, pve) or ppnd."""

    def __init__(self, arm, work, gs):
        self.arm, self.p, self.d, self.out = arm, None, None, None
        spec = [(g.name, g, S['min_mib'], S['guest_mib']) for g in gs]
        if arm in ('mom', 'pve'):
            vms = ['%s,%s,%d,%dM,%dM' % (n, g.qmp_path, g.pid, lo, hi) for n, g, lo, hi in spec]
            self.out = open(os.path.join(work, 'baseline.out'), 'w+')
            self.err = open(os.path.join(work, 'baseline.log'), 'w')
            self.p = subprocess.Popen([BASELINE, arm, '--physical', '%dM' % S['physical_mib'],
                                       '--host-use', '%dM' % S['host_use_mib']] + vms,
                                      stdout=self.out, stderr=self.err)
        elif arm == 'ppnd':
            self.port = free_port()
            self.view = NodeView(gs, os.path.join(work, 'node-meminfo'))
            self.view.start()
            self.d = guests.Daemon(work, spec, '%dM' % S['physical_mib'], '%dM' % PPND_RESERVE_MIB,
                                   '[metrics]\nenabled = true\naddress = 127.0.0.1\nport = %d\n'
                                   '[host]\nmeminfo = %s\n' % (self.port, self.view.path))

    def wait_started(self):
        if self.d:
            self.d.wait_running()
        elif self.p:
            time.sleep(0.5)
            if self.p.poll() is not None:
                raise RuntimeError('ppn-baseline %s exited (see %s)' % (self.arm, self.err.name))

    def stop(self):
        """Stops it; returns the balloon commands it sent."""
        if self.d:
            n = ppnd_commands(self.port)
            self.d.stop()
            self.view.finish()
            return n
        if self.p:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(30)
            self.out.seek(0)
            last = [json.loads(line) for line in self.out.read().splitlines() if line.startswith('{')]
            return last[-1].get('commands') if last and 'commands' in last[-1] else None
        return 0


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def ppnd_commands(port):
    """ppn_balloon_commands_total from ppnd's /metrics."""
    try:
        text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10).read().decode()
    except OSError:
        return None
    m = re.search(r'^ppn_balloon_commands_total (\d+)', text, re.M)
    return int(m.group(1)) if m else None


def workload_result(g, name):
    """(busy_s, finished) from the workload's last line ("done: busy B ms, total T ms")."""
    rc, out = g.exec('guest-work status %s' % name)
    m = re.search(r'done: busy (\d+) ms', out)
    return (int(m.group(1)) / 1000.0 if m else None), bool(m), out.strip()


def finished(g, name):
    rc, out = g.exec('guest-work status %s' % name)
    return '(exited)' in out or 'no workload' in out


def run_arm(out, arm, rep, work, gs):
    by = {g.name: g for g in gs}
    reset(gs)
    ooms0 = {g.name: g.oom_kills() for g in gs}
    load0 = loadavg()
    adir = os.path.join(work, '%s-%d' % (arm, rep))
    os.makedirs(adir)
    ctl = Controller(arm, adir, gs)
    ctl.wait_started()
    sampler = Sampler(gs)
    sampler.start()
    pending = sorted(((S[n]['at'], n) for n in VMS))
    for at, n in pending:
        delay = at - (time.monotonic() - sampler.t0)
        if delay > 0:
            time.sleep(delay)
        rc, text = by[n].exec(S[n]['cmd'])
        if rc != 0:
            raise RuntimeError('%s: %s: %s' % (n, S[n]['cmd'], text))
    deadline = sampler.t0 + S['workload_timeout_s']
    while time.monotonic() < deadline:
        if all(finished(by[n], n) for n in VMS):
            break
        time.sleep(1)
    end = time.monotonic() - sampler.t0
    while time.monotonic() - sampler.t0 < S['window_s']:
        time.sleep(0.5)
    samples = sampler.finish()
    commands = ctl.stop()
    window = max(end, S['window_s'])
    footprint, above = integrate(samples, window)
    peak = max(s[1] for s in samples if s[0] <= window)
    ooms = sum(g.oom_kills() - ooms0[g.name] for g in gs)
    results = {n: workload_result(by[n], n) for n in MEASURED}
    R = lambda metric, value, unit, **kw: guests.rec(out, 'overcommit', metric, value, unit, arm=arm, rep=rep, **kw)
    R('footprint', round(footprint, 3), 'GiB·min')
    R('mean_rss', round(footprint * 60 / window * 1024), 'MiB')
    R('above_capacity', round(above, 1), 's')
    R('peak_rss', round(peak / MIB), 'MiB')
    R('oom_kills', ooms, 'count')
    R('balloon_commands', commands, 'count')
    R('workloads_end', round(end, 1), 's')
    R('loadavg_start', float(load0), 'load')
    R('loadavg_end', float(loadavg()), 'load')
    for n, (busy, ok, _) in results.items():
        R('busy', round(busy, 2) if busy is not None else None, 's', workload=n)
        R('finished', int(ok), 'bool', workload=n)
    trace = os.path.join(work, 'trace-%s-%d.jsonl' % (arm, rep))
    with open(trace, 'w') as f:
        for t, r, rss, act in samples:
            f.write(json.dumps({'t': round(t, 2), 'sum_rss': r, 'rss': rss, 'actual': act}) + '\n')
    say('overcommit %s rep %d: footprint %.2f GiB·min, above capacity %.1f s, peak %d MiB, OOM kills %d, '
        'reader %s, burst %s, commands %s (load %s)'
        % (arm, rep, footprint, above, peak // MIB, ooms, results['reader'][2], results['burst'][2], commands,
           load0))
    return {n: results[n][0] for n in MEASURED}, [s for s in samples if s[0] <= window], window


def footprint_floor(out, rep, runs):
    """The repetition's footprint floor (see the top) from its no-controller run's samples;
    runs: {arm: (samples, window)}."""
    if 'none' not in runs:
        return
    idle = min(s[2]['idle'] for samples, _ in runs.values() for s in samples)
    samples, window = runs['none']
    floor = [(t, idle + rss['reader'] + rss['burst'], rss, act) for t, _, rss, act in samples]
    area, _ = integrate(floor, window)
    none, _ = integrate(samples, window)
    guests.rec(out, 'overcommit', 'footprint_floor', round(area, 3), 'GiB·min', rep=rep, idle_mib=int(idle // MIB))
    guests.rec(out, 'overcommit', 'footprint_floor_ratio', round(area / none, 3) if none else None, 'ratio', rep=rep)


def slowdowns(out, busy):
    """Each run's busy time over the median of the no-controller runs (memory to spare)."""
    if 'none' not in busy:
        return
    for n in MEASURED:
        ref = [b[n] for b in busy['none'].values() if b[n] is not None]
        if not ref:
            continue
        base = statistics.median(ref)
        for arm, runs in busy.items():
            for rep, b in runs.items():
                v = round(b[n] / base, 2) if b[n] is not None else None
                guests.rec(out, 'overcommit', 'slowdown', v, 'ratio', arm=arm, rep=rep, workload=n)


def boot_one(work, name, disk):
    """Boots one guest; one more try if it does not come up (a 60 s boot timeout can pass
    on this shared machine), saying why the first failed."""
    for attempt in (1, 2):
        wdir = os.path.join(work, 'try%d' % attempt) if attempt > 1 else work
        os.makedirs(wdir, exist_ok=True)
        g = guests.Guest(wdir, S['guest_mib'], deflate_on_oom=True, name=name, disk=disk, wait=False)
        try:
            g.wait_ready()
            mount_disk(g)
            return g
        except Exception as e:
            g.stop()
            tail = open(g.log.name, errors='replace').read()[-600:]
            say('%s: boot attempt %d failed: %s\n%s' % (name, attempt, e, tail))
            if attempt == 2:
                raise


def boot(work, disk):
    """One guest after another: three booting at once under TCG on a loaded machine can
    exceed testvm's boot timeout."""
    gs = []
    try:
        for n in VMS:
            gs.append(boot_one(work, n, disk))
    except Exception:
        for g in gs:
            g.stop()
        raise
    return gs


def main():
    path = sys.argv[1]
    work = tempfile.mkdtemp(prefix='ppn-bench-overcommit.')
    disk = disk_image(os.path.join(os.path.dirname(os.path.abspath(path)), 'overcommit-disk.img'))
    busy = {}
    try:
        with open(path, 'w') as out:
            guests.rec(out, 'overcommit', 'capacity', CAPACITY // MIB, 'MiB')
            guests.rec(out, 'overcommit', 'sum_max', len(VMS) * S['guest_mib'], 'MiB')
            guests.rec(out, 'overcommit', 'repetitions', REPS, 'count')
            try:
                for rep in range(1, REPS + 1):
                    rwork = os.path.join(work, 'rep%d' % rep)
                    os.makedirs(rwork)
                    say('overcommit: rep %d: booting %s (load %s)' % (rep, ', '.join(VMS), loadavg()))
                    gs = boot(rwork, disk)
                    try:
                        k = (rep - 1) % len(ARMS)
                        traces = {}
                        for arm in ARMS[k:] + ARMS[:k]:
                            b, samples, window = run_arm(out, arm, rep, rwork, gs)
                            busy.setdefault(arm, {})[rep] = b
                            traces[arm] = (samples, window)
                        footprint_floor(out, rep, traces)
                    finally:
                        for g in gs:
                            g.stop()
            finally:
                slowdowns(out, busy)        # the runs that were made, also after a failure
    finally:
        if os.environ.get('PPN_KEEP_BENCH_DIR'):
            say('kept ' + work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
