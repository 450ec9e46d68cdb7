#!/usr/bin/env python3
"""Writes the simulator's guest-demand traces: every family with seeds 1..8.

    bench/gentraces.py OUTDIR

Files are OUTDIR/FAMILY-sSEED.csv (format: bench/trace.h). The same seeds always give the
same files, bit for bit (own xorshift generator: no dependence on Python's `random`), so
`./run bench sim` writes them under build/ each run instead of committing ~9 MB of CSV. The
seeds were fixed before any result was seen: 1..8 for every family, all reported.

A trace is a node plus VMs, and per VM and second an anonymous working set (MiB the guest's
programs need resident) and optionally the file data its programs read that second (MiB/s).
Kinds of VM:
  steady   30-60 % of max, +-2 % noise
  bursty   20-30 % of max, bursts of +30-50 % of max arriving every ~120 s, lasting 20-90 s
  diurnal  20 % -> 75 % -> 20 % of max over a 1200 s "day" (compressed), random phase
  growing  15 % of max growing linearly to 80 % (a load), restart at a random time
  leak     20-30 % of max growing 0.3-1.0 MiB/s for the whole trace (a slow leak), never freed
  reader   20-35 % of anonymous memory; reads files at 20-120 MiB/s in phases of 60-300 s
           (a backup, a scan, a build): the page cache fills whatever memory is free
  surge    25-35 % of max, rising to 65-85 % of max in the node's surge windows (all surge
           VMs at once, 3-6 minutes each): concurrent demand above the node's capacity
Every VM has a hot file set (page cache it re-reads, 5-10 % of max) and a balloon minimum of
25 % of max (>= 512 MiB); every VM starts at its maximum (as with no controller).

Families (the node's capacity = physical - reserve):
  steady, bursty, diurnal, growing (8 VMs of one kind), mixed (12 VMs, the four kinds):
      capacity = sum of maxima / 1.5 — whether peak demand fits is left to the trace;
  overcommit (8 surge VMs): capacity = the peak sum of demand / 1.25, so for minutes demand
      exceeds what the node has, whatever the policy;
  cache (4 readers, 4 bursty), leak (3 leak, 5 steady): capacity = sum of maxima / 1.5;
  mix (12 VMs: 2 each of steady, bursty, diurnal, leak, reader, surge): sum of maxima / 1.5;
  idle4g: one VM used 7 GiB and went idle, a second grows by 6 GiB in 20 s at 50-70 s;
      the node has about 0.5 GiB unpromised: ~4.8 GiB must come from the idle VM.
"""
import math
import os
import sys

SEED_BASE = 20261206
SEEDS = range(1, 9)
DURATION = 1800  # s
MAXES = [2048, 4096, 4096, 8192]  # MiB
KERNEL_MIB = 96                   # keep equal to SIM_KERNEL in bench/sim-model.h
BASE_MIB = 1024                   # host OS + QEMU overheads outside the guests
RESERVE_MIB = 1536


class Rng:
    """xorshift64*: small, deterministic, portable."""

    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= (s >> 12)
        s ^= (s << 25) & 0xFFFFFFFFFFFFFFFF
        s ^= (s >> 27)
        self.s = s
        return (s * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF

    def uniform(self, lo, hi):
        return lo + (hi - lo) * (self.next() >> 11) / float(1 << 53)

    def choice(self, seq):
        return seq[self.next() % len(seq)]


def steady(rng, mx, node):
    base = rng.uniform(0.30, 0.60) * mx
    return [base * (1 + rng.uniform(-0.02, 0.02)) for _ in range(DURATION)], None


def bursty(rng, mx, node):
    base = rng.uniform(0.20, 0.30) * mx
    ws = [base] * DURATION
    t = int(rng.uniform(10, 120))
    while t < DURATION:
        lift = rng.uniform(0.30, 0.50) * mx
        length = int(rng.uniform(20, 90))
        for u in range(t, min(DURATION, t + length)):
            ws[u] = base + lift
        t += length + int(rng.uniform(30, 210))
    return ws, None


def diurnal(rng, mx, node):
    lo, hi, period = 0.20 * mx, 0.75 * mx, 1200.0
    phase = rng.uniform(0, period)
    return [lo + (hi - lo) * (1 - math.cos(2 * math.pi * (t + phase) / period)) / 2
            for t in range(DURATION)], None


def growing(rng, mx, node):
    lo, hi = 0.15 * mx, 0.80 * mx
    restart = int(rng.uniform(0.6, 0.95) * DURATION)
    ws = []
    for t in range(DURATION):
        u = t if t < restart else t - restart
        ws.append(min(hi, lo + (hi - lo) * u / restart))
    return ws, None


def leak(rng, mx, node):
    base = rng.uniform(0.20, 0.30) * mx
    rate = rng.uniform(0.3, 1.0)
    return [min(0.95 * mx - KERNEL_MIB, base + rate * t) for t in range(DURATION)], None


def reader(rng, mx, node):
    base = rng.uniform(0.20, 0.35) * mx
    ws = [base * (1 + rng.uniform(-0.02, 0.02)) for _ in range(DURATION)]
    io = [0] * DURATION
    t = int(rng.uniform(0, 200))
    while t < DURATION:
        rate = rng.uniform(20, 120)
        length = int(rng.uniform(60, 300))
        for u in range(t, min(DURATION, t + length)):
            io[u] = rate
        t += length + int(rng.uniform(60, 400))
    return ws, io


def surge(rng, mx, node):
    base = rng.uniform(0.25, 0.35) * mx
    high = rng.uniform(0.65, 0.85) * mx
    ws = [base] * DURATION
    for start, length in node['surges']:
        lag = int(rng.uniform(0, 20))  # not all in the same second
        for u in range(start + lag, min(DURATION, start + length)):
            ws[u] = high
    return ws, None


KINDS = {'steady': steady, 'bursty': bursty, 'diurnal': diurnal, 'growing': growing,
         'leak': leak, 'reader': reader, 'surge': surge}

FAMILIES = {
    'steady': (['steady'] * 8, 'max'),
    'bursty': (['bursty'] * 8, 'max'),
    'diurnal': (['diurnal'] * 8, 'max'),
    'growing': (['growing'] * 8, 'max'),
    'mixed': (['steady', 'bursty', 'diurnal', 'growing'] * 3, 'max'),
    'overcommit': (['surge'] * 8, 'peak'),
    'cache': (['reader', 'bursty'] * 4, 'max'),
    'leak': (['leak'] * 3 + ['steady'] * 5, 'max'),
    'mix': (['steady', 'bursty', 'diurnal', 'leak', 'reader', 'surge'] * 2, 'max'),
}


def surges(rng):
    """The node's surge windows: 2-3 of 3-6 minutes, apart."""
    out, t = [], int(rng.uniform(60, 300))
    for _ in range(int(rng.uniform(2, 4))):
        length = int(rng.uniform(180, 360))
        if t + length > DURATION:
            break
        out.append((t, length))
        t += length + int(rng.uniform(120, 400))
    return out


def make_vms(rng, kinds, node):
    vms = []
    for i, kind in enumerate(kinds):
        mx = rng.choice(MAXES)
        ws, io = KINDS[kind](rng, mx, node)
        vms.append({
            'name': '%s%d' % (kind[:3], i), 'kind': kind, 'max': mx,
            'min': max(512, mx // 4), 'shares': 1000,
            'cache': int(rng.uniform(0.05, 0.10) * mx), 'init': mx,
            'files': 3 * mx if io else 0,
            'ws': [int(round(w)) for w in ws],
            'io': [int(round(x)) for x in io] if io else None,
        })
    return vms


def physical_for(vms, sizing):
    if sizing == 'max':
        capacity = sum(v['max'] for v in vms) / 1.5
    else:
        peak = max(sum(v['ws'][t] + KERNEL_MIB + v['cache'] for v in vms) for t in range(DURATION))
        capacity = peak / 1.25
    return int(capacity) + RESERVE_MIB


def cell(v, t):
    if v['io'] and v['io'][t]:
        return '%d:%d' % (v['ws'][t], v['io'][t])
    return str(v['ws'][t])


def write(path, title, seed, vms, physical, duration):
    with open(path, 'w') as f:
        f.write('# ppn-pool bench trace v2: %s (bench/gentraces.py, seed %d)\n' % (title, seed))
        f.write('node physical_mib=%d reserve_mib=%d base_mib=%d\n' % (physical, RESERVE_MIB, BASE_MIB))
        for v in vms:
            f.write('vm name=%s kind=%s max_mib=%d min_mib=%d shares=%d cache_mib=%d init_mib=%d'
                    ' files_mib=%d\n' % (v['name'], v['kind'], v['max'], v['min'], v['shares'],
                                         v['cache'], v['init'], v['files']))
        f.write('t,' + ','.join(v['name'] for v in vms) + '\n')
        for t in range(duration):
            f.write('%d,' % t + ','.join(cell(v, t) for v in vms) + '\n')


def idle4g(rng):
    dur = 600
    start = int(rng.uniform(50, 70))
    grow = int(rng.uniform(5632, 6656))
    idle = {'name': 'idle', 'kind': 'idle', 'max': 8192, 'min': 1024, 'shares': 1000,
            'cache': 256, 'init': 8192, 'files': 0, 'io': None,
            'ws': [7168 if t < 30 else 1024 for t in range(dur)]}
    busy = {'name': 'busy', 'kind': 'step', 'max': 8192, 'min': 1024, 'shares': 1000,
            'cache': 256, 'init': 2048, 'files': 0, 'io': None,
            'ws': [512 if t < start else 512 + int(grow * min(1.0, (t - start) / 20.0))
                   for t in range(dur)]}
    return [idle, busy], 12288, dur


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: bench/gentraces.py OUTDIR')
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for fi, (name, (kinds, sizing)) in enumerate(FAMILIES.items()):
        for s in SEEDS:
            seed = SEED_BASE + 1000 * fi + s
            rng = Rng(seed)
            node = {'surges': surges(rng)}
            vms = make_vms(rng, kinds, node)
            write(os.path.join(out, '%s-s%d.csv' % (name, s)), name, seed, vms,
                  physical_for(vms, sizing), DURATION)
    for s in SEEDS:
        seed = SEED_BASE + 1000 * len(FAMILIES) + s
        vms, physical, dur = idle4g(Rng(seed))
        write(os.path.join(out, 'idle4g-s%d.csv' % s), 'idle4g', seed, vms, physical, dur)


if __name__ == '__main__':
    main()
