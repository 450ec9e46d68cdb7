#!/usr/bin/env python3
"""Writes the simulator's guest-demand traces under bench/traces/ from one fixed seed.

    bench/gentraces.py [OUTDIR]     (default: the traces/ directory next to this file)

The traces are committed; this program exists so anyone can see how they were made and
regenerate them bit for bit (own xorshift generator: no dependence on Python's `random`).

A trace is a node plus VMs, and per VM a working set (anonymous memory the guest's programs
need resident, MiB) for every second. Kinds:
  steady   30-60 % of max, +-2 % noise
  bursty   20-30 % of max, bursts of +30-50 % of max arriving every ~120 s, lasting 20-90 s
  diurnal  20 % -> 75 % -> 20 % of max over a 1200 s "day" (compressed), random phase
  growing  15 % of max growing linearly to 80 % (a load or a leak), restart at a random time
Each VM also has a file working set (page cache it would like, 5-10 % of max) and a balloon
minimum of 25 % of max (>= 512 MiB). The node's physical size makes the sum of maxima about
1.5x the capacity (overcommit) while the peak sum of demand still fits, so a good policy can
avoid all pressure and a poor one cannot blame the node.
"""
import os
import sys

SEED = 20261129
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


def steady(rng, mx):
    base = rng.uniform(0.30, 0.60) * mx
    return [base * (1 + rng.uniform(-0.02, 0.02)) for _ in range(DURATION)]


def bursty(rng, mx):
    base = rng.uniform(0.20, 0.30) * mx
    ws = [base] * DURATION
    t = int(rng.uniform(10, 120))
    while t < DURATION:
        lift = rng.uniform(0.30, 0.50) * mx
        length = int(rng.uniform(20, 90))
        for u in range(t, min(DURATION, t + length)):
            ws[u] = base + lift
        t += length + int(rng.uniform(30, 210))
    return ws


def diurnal(rng, mx):
    import math
    lo, hi, period = 0.20 * mx, 0.75 * mx, 1200.0
    phase = rng.uniform(0, period)
    return [lo + (hi - lo) * (1 - math.cos(2 * math.pi * (t + phase) / period)) / 2
            for t in range(DURATION)]


def growing(rng, mx):
    lo, hi = 0.15 * mx, 0.80 * mx
    restart = int(rng.uniform(0.6, 0.95) * DURATION)
    ws = []
    for t in range(DURATION):
        u = t if t < restart else t - restart
        ws.append(min(hi, lo + (hi - lo) * u / restart))
    return ws


KINDS = {'steady': steady, 'bursty': bursty, 'diurnal': diurnal, 'growing': growing}


def make_vms(rng, kinds):
    vms = []
    for i, kind in enumerate(kinds):
        mx = rng.choice(MAXES)
        ws = [int(round(w)) for w in KINDS[kind](rng, mx)]
        vms.append({
            'name': '%s%d' % (kind[:3], i), 'kind': kind, 'max': mx,
            'min': max(512, mx // 4), 'shares': 1000,
            'cache': int(rng.uniform(0.05, 0.10) * mx), 'init': mx, 'ws': ws,
        })
    return vms


def node_for(vms):
    """Physical size: sum of maxima / 1.5, but at least the peak demand plus 10 %."""
    capacity = sum(v['max'] for v in vms) / 1.5
    peak = max(sum(v['ws'][t] + KERNEL_MIB + v['cache'] // 2 for v in vms)
               for t in range(DURATION))
    capacity = max(capacity, peak * 1.10)
    return int(capacity) + RESERVE_MIB


def write(path, title, vms, physical, duration):
    with open(path, 'w') as f:
        f.write('# ppn-pool bench trace v1: %s (bench/gentraces.py, seed %d)\n' % (title, SEED))
        f.write('node physical_mib=%d reserve_mib=%d base_mib=%d\n' % (physical, RESERVE_MIB, BASE_MIB))
        for v in vms:
            f.write('vm name=%s kind=%s max_mib=%d min_mib=%d shares=%d cache_mib=%d init_mib=%d\n'
                    % (v['name'], v['kind'], v['max'], v['min'], v['shares'], v['cache'], v['init']))
        f.write('t,' + ','.join(v['name'] for v in vms) + '\n')
        for t in range(duration):
            f.write('%d,' % t + ','.join(str(v['ws'][t]) for v in vms) + '\n')


def idle4g():
    """One VM used 7 GiB and went idle at 1 GiB; a second VM runs ballooned at 2 GiB until,
    at t=60 s, its working set starts to grow to 6.5 GiB over 20 s (a job loading its data).
    The node (12 GiB) has 0.5 GiB unpromised: about 4.8 GiB must come from the idle VM.
    Measures how fast each policy takes 4 GiB back from it."""
    dur = 600
    idle = {'name': 'idle', 'kind': 'idle', 'max': 8192, 'min': 1024, 'shares': 1000,
            'cache': 256, 'init': 8192, 'ws': [7168 if t < 30 else 1024 for t in range(dur)]}
    busy = {'name': 'busy', 'kind': 'step', 'max': 8192, 'min': 1024, 'shares': 1000,
            'cache': 256, 'init': 2048, 'ws': [512 if t < 60 else 512 + int(6144 * min(1.0, (t - 60) / 20.0))
                   for t in range(dur)]}
    return [idle, busy], 12288, dur


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), 'traces')
    os.makedirs(out, exist_ok=True)
    rng = Rng(SEED)
    mixes = {
        'mixed': ['steady', 'bursty', 'diurnal', 'growing'] * 3,
        'steady': ['steady'] * 8,
        'bursty': ['bursty'] * 8,
        'diurnal': ['diurnal'] * 8,
        'growing': ['growing'] * 8,
    }
    for name, kinds in mixes.items():
        vms = make_vms(rng, kinds)
        write(os.path.join(out, name + '.csv'), name, vms, node_for(vms), DURATION)
    vms, physical, dur = idle4g()
    write(os.path.join(out, 'idle4g.csv'), 'idle4g', vms, physical, dur)


if __name__ == '__main__':
    main()
