#!/usr/bin/env python3
"""Merges the benchmark parts' records into bench/results.json and prints Markdown tables.

    bench/report.py OUT_DIR RESULTS_JSON

OUT_DIR holds one JSON-lines file per part (sim.jsonl, scale.jsonl, reaction.jsonl,
reclaim.jsonl, overcommit.jsonl, vmem.jsonl, fleet.jsonl, live.jsonl); every line is one measurement with its unit. Parts not run are left out.
"""
import datetime
import json
import os
import statistics
import subprocess
import sys

PARTS = ['sim', 'reaction', 'reclaim', 'scale', 'fleet', 'overcommit', 'vmem', 'live']
POLICIES = ['none', 'ppnd', 'ppnd-fpr', 'ppnd-fpr-nofast', 'ppnd-10s', 'mom', 'mom-matched', 'mom-vdsm', 'mom-vdsm-matched',
            'proxmox', 'proxmox-matched', 'hyperv', 'xen', 'chromeos', 'chromeos-matched', 'tmo']
SIM_METRICS = [
    ('footprint', 'footprint GiB·min'),
    ('host_overrun', 'host overrun s'),
    ('pressure', 'pressure VM·s'),
    ('oom_episodes', 'OOM episodes'),
    ('oom_time', 'OOM s'),
    ('slowdown', 'worst slowdown ×'),
    ('commands', 'balloon cmds'),
    ('free_4g', 'free 4 GiB s'),
]
# The targets, per family, on medians: ppnd's host overrun and OOM episodes <= every
# baseline's, pressure <= 0.5 x the best baseline's, footprint <= the best baseline's.
TARGETS = [('host_overrun', 'min', 1.0), ('oom_episodes', 'min', 1.0),
           ('pressure', 'min', 0.5), ('footprint', 'min', 1.0)]
BASELINES = [p for p in POLICIES if not p.startswith('ppnd')]


def load(out_dir):
    records = []
    for part in PARTS:
        path = os.path.join(out_dir, part + '.jsonl')
        if not os.path.exists(path):
            continue
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def fmt(v):
    if v is None:
        return 'never'
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not v.is_integer():
        return '%.1f' % v if abs(v) >= 10 else '%.2f' % v
    return '%d' % v


def ratio(a, b):
    if a is None or b is None:
        return '—'
    if b == 0:
        return '=' if a == 0 else '∞'
    return '%.2f×' % (a / b)


def median(vals):
    """Median of the seeds; None (never) sorts last."""
    vs = sorted(vals, key=lambda v: (v is None, v if v is not None else 0))
    n = len(vs)
    if n % 2:
        return vs[n // 2]
    a, b = vs[n // 2 - 1], vs[n // 2]
    return None if a is None or b is None else (a + b) / 2


def spread(vals):
    known = [v for v in vals if v is not None]
    lo = fmt(min(known)) if known else 'never'
    hi = 'never' if any(v is None for v in vals) else fmt(max(known))
    return '%s [%s–%s]' % (fmt(median(vals)), lo, hi)


def family_of(trace):
    return trace.rsplit('-s', 1)[0]


def sim_collect(records):
    """{family: {policy: {metric: [value per seed]}}}, seeds in trace-name order."""
    fam = {}
    for r in sorted((r for r in records if r['part'] == 'sim'), key=lambda r: r['trace']):
        (fam.setdefault(family_of(r['trace']), {}).setdefault(r['policy'], {})
            .setdefault(r['metric'], []).append(r['value']))
    return fam


def target_check(pols, ppnd):
    """Which of the targets the medians of ppnd (one configuration) meet on one family."""
    out = []
    for key, _, factor in TARGETS:
        if key not in pols.get(ppnd, {}):
            continue
        ours = median(pols[ppnd][key])
        best, who = min((median(pols[b][key]), b) for b in BASELINES if b in pols and key in pols[b])
        ok = ours <= factor * best + 1e-9
        out.append('%s %s (%s; best baseline %s, %s%s)' % (
            key, 'met' if ok else 'MISSED', fmt(ours), who, fmt(best),
            '' if factor == 1.0 else ', target %s× it' % factor))
    return out


def floor_line(pols):
    """The pressure-free footprint floor (ppn-sim's policy "floor") against the smallest baseline
    footprint: where the best baseline's pressure is 0 and its smallest footprint is under the
    floor, no policy meets both the pressure and the footprint target."""
    if 'floor' not in pols or 'footprint' not in pols['floor']:
        return
    floor = median(pols['floor']['footprint'])
    best_fp, who_fp = min((median(pols[b]['footprint']), b) for b in BASELINES if b in pols)
    best_p = min(median(pols[b]['pressure']) for b in BASELINES if b in pols)
    verdict = ('no policy can meet both the pressure target (0, as the best baseline has 0) and the '
               'footprint target here' if best_p == 0 and best_fp < floor else
               'the two targets are not exclusive by this bound')
    # The bound checked against every run of the family with no pressure at all (per seed).
    floors = pols['floor']['footprint']
    runs = below = 0
    for pol, m in pols.items():
        if pol == 'floor':
            continue
        for k, (p, fp) in enumerate(zip(m.get('pressure', []), m.get('footprint', []))):
            if p == 0 and fp is not None and k < len(floors):
                runs += 1
                below += fp < floors[k]
    print('Footprint floor with no pressure (every working set resident): %s GiB·min; the smallest '
          'baseline footprint, %s, is %s: %s. Runs with no pressure: %d, %d of them below the floor '
          '(0, or the bound is wrong).  ' % (spread(floors), who_fp, fmt(best_fp), verdict, runs, below))


def unfit_line(pols):
    """ppn-sim's policy "floor", metric "unfit": the seconds in which every working set resident
    does not fit the host. In each of them any policy has a VM under pressure or the host
    overrun, so pressure + host overrun >= unfit on every run (checked here on every run of the
    family). Where the best baseline's median host overrun is 0, ppnd's must be 0 too, which
    takes 0 on more than half the seeds; its median pressure is then at least the median of the
    smallest such unfit values padded with zeros: above half the best baseline's pressure, no
    policy meets both targets; symmetrically where the best baseline's median pressure is 0."""
    if 'floor' not in pols or 'unfit' not in pols['floor']:
        return
    unfit = pols['floor']['unfit']
    n = len(unfit)
    runs = bad = 0
    for pol, m in pols.items():
        if pol == 'floor':
            continue
        for k, (p, o) in enumerate(zip(m.get('pressure', []), m.get('host_overrun', []))):
            if k < n:
                runs += 1
                bad += p + o < unfit[k] - 1e-6
    best_o, who_o = min((median(pols[b]['host_overrun']), b) for b in BASELINES if b in pols)
    best_p, who_p = min((median(pols[b]['pressure']), b) for b in BASELINES if b in pols)
    # A median of 0 takes 0 on more than half the seeds: there the other measure carries the
    # whole bound, and the median of the smallest such bounds padded with zeros is the least
    # median any policy can have.
    m = n // 2 + 1
    least = median(sorted(unfit)[:m] + [0] * (n - m))
    if best_o == 0:
        verdict = ('with 0 s of overrun on %d of %d seeds, median pressure ≥ %s VM·s, against a target of '
                   '≤ %s (0.5× %s)' % (m, n, fmt(least), fmt(0.5 * best_p), who_p))
        exclusive = least > 0.5 * best_p + 1e-9
    elif best_p == 0:
        verdict = ('with 0 pressure on %d of %d seeds, median overrun ≥ %s s, against a target of ≤ %s (%s)'
                   % (m, n, fmt(least), fmt(best_o), who_o))
        exclusive = least > best_o + 1e-9
    else:
        verdict = 'neither target is 0 (overrun ≤ %s, pressure ≤ %s)' % (fmt(best_o), fmt(0.5 * best_p))
        exclusive = False
    verdict += (': no policy can meet both the host-overrun and the pressure target here' if exclusive else
                ': the two targets are not exclusive by this bound')
    print('Demand the host cannot hold even with no VM under pressure (every working set resident): %s s; '
          'every run has pressure VM·s + overrun s ≥ it (%d runs, %d below: 0, or the bound is wrong); %s.  '
          % (spread(unfit), runs, bad, verdict))


def sim_tables(records):
    fam = sim_collect(records)
    if not fam:
        return
    print('### Policy comparison (simulator, bench/sim)\n')
    print('Per trace family: median [min–max] over seeds 1..8 (each seed one trace). '
          'Lower is better in every column.\n')
    for family in sorted(fam):
        pols = fam[family]
        cols = [m for m in SIM_METRICS if any(m[0] in p and any(v is not None for v in p[m[0]])
                                              for p in pols.values())]
        nseeds = max(len(v) for p in pols.values() for v in p.values())
        print('#### %s (%d seeds)\n' % (family, nseeds))
        print('| policy | ' + ' | '.join(c[1] for c in cols) + ' |')
        print('|---|' + '---:|' * len(cols))
        for pol in POLICIES:
            if pol not in pols:
                continue
            cells = [spread(pols[pol][c[0]]) if c[0] in pols[pol] else '' for c in cols]
            print('| %s | %s |' % (pol, ' | '.join(cells)))
        print()
        for ppnd in ('ppnd', 'ppnd-fpr'):
            if ppnd in pols:
                print('Targets, %s (medians): %s.  ' % (ppnd, '; '.join(target_check(pols, ppnd))))
        floor_line(pols)
        unfit_line(pols)
        print()


def pivot(records, part, title, note=''):
    """One row per combination of the record's other keys (vms, guest, ...), one column per
    metric (with its unit), in the order the metrics were measured."""
    rows = [r for r in records if r['part'] == part]
    if not rows:
        return
    print('### %s\n' % title)
    if note:
        print(note + '\n')
    keys = [k for k in rows[0] if k not in ('part', 'metric', 'value', 'unit')]
    metrics, table = [], {}
    for r in rows:
        col = '%s (%s)' % (r['metric'], r['unit'])
        if col not in metrics:
            metrics.append(col)
        table.setdefault(tuple(r.get(k, '') for k in keys), {})[col] = r['value']
    print('| ' + ' | '.join(keys + metrics) + ' |')
    print('|' + '---|' * len(keys) + '---:|' * len(metrics))
    for key, vals in table.items():
        cells = [str(k) for k in key] + [fmt(vals[m]) if m in vals else '' for m in metrics]
        print('| ' + ' | '.join(cells) + ' |')
    print()


OC_ARMS = ['none', 'mom', 'pve', 'ppnd']
OC_COLUMNS = [  # (metric, workload, label)
    ('footprint', None, 'Σ RSS GiB·min'),
    ('mean_rss', None, 'mean Σ RSS MiB'),
    ('workloads_end', None, 'run s'),
    ('above_capacity', None, 'above capacity s'),
    ('peak_rss', None, 'peak Σ RSS MiB'),
    ('oom_kills', None, 'guest OOM kills'),
    ('slowdown', 'reader', 'reader slowdown ×'),
    ('slowdown', 'burst', 'burst slowdown ×'),
    ('finished', 'reader', 'reader finished'),
    ('finished', 'burst', 'burst finished'),
    ('balloon_commands', None, 'balloon cmds'),
    ('loadavg_start', None, 'load'),
]


def med_range(vals):
    """'median (min–max)' of the values measured; a value missing in some run is named."""
    have = [v for v in vals if v is not None]
    if not have:
        return 'never' if vals else ''
    med = statistics.median(have)
    text = fmt(float(med)) if len(have) == 1 else '%s (%s–%s)' % (fmt(float(med)), fmt(float(min(have))),
                                                                   fmt(float(max(have))))
    missing = len(vals) - len(have)
    return text + (' [%d never]' % missing if missing else '')


def overcommit_tables(records):
    """Per arm: median (min–max) over the repetitions, then every run; and the issue's targets
    for each arm, each against the no-controller arm's median."""
    rows = [r for r in records if r['part'] == 'overcommit' and 'arm' in r]
    if not rows:
        return
    conf = {r['metric']: r['value'] for r in records if r['part'] == 'overcommit' and 'arm' not in r}
    runs = {}
    for r in rows:
        runs.setdefault(r['arm'], {}).setdefault(r['rep'], {})[(r['metric'], r.get('workload'))] = r['value']
    arms = [a for a in OC_ARMS if a in runs]
    print('### Overcommit (3 real guests, TCG)\n')
    print('Capacity %s MiB for Σ QEMU RSS, Σ max %s MiB; %s repetitions; median (min–max). Slowdown = '
          'busy time over the no-controller median (memory to spare).\n'
          % (conf.get('capacity', '?'), conf.get('sum_max', '?'), conf.get('repetitions', '?')))
    print('| arm | ' + ' | '.join(c[2] for c in OC_COLUMNS) + ' |')
    print('|---|' + '---:|' * len(OC_COLUMNS))
    for arm in arms:
        reps = runs[arm]
        cells = [med_range([reps[k].get((m, w)) for k in sorted(reps)]) for m, w, _ in OC_COLUMNS]
        print('| %s | %s |' % (arm, ' | '.join(cells)))
    print('\nEvery run:\n')
    print('| arm | rep | ' + ' | '.join(c[2] for c in OC_COLUMNS) + ' |')
    print('|---|---:|' + '---:|' * len(OC_COLUMNS))
    for arm in arms:
        for rep in sorted(runs[arm]):
            v = runs[arm][rep]
            cells = [fmt(v.get((m, w))) if (m, w) in v else '' for m, w, _ in OC_COLUMNS]
            print('| %s | %d | %s |' % (arm, rep, ' | '.join(cells)))
    none = runs.get('none')
    if not none:
        print()
        return
    floors = [r for r in records if r['part'] == 'overcommit' and r['metric'] == 'footprint_floor_ratio']
    if floors:
        print('\nFootprint floor (any controller that leaves both workloads as fast as with memory to spare: '
              'reader and burst at their no-controller RSS, the idle guest at its lowest), ÷ none, per repetition: '
              '%s; median %s\n' % (', '.join(fmt(r['value']) for r in sorted(floors, key=lambda r: r['rep'])),
                                   fmt(statistics.median([r['value'] for r in floors]))))
    ref = statistics.median([r[('footprint', None)] for r in none.values()])
    print('\nTargets (0 OOM kills, 0 s above capacity, slowdown ≤ 1.2× for each workload, footprint '
          '≤ 0.7× no controller), medians:\n')
    print('| arm | footprint ÷ none | OOM kills | above capacity s | worst slowdown × | all met |')
    print('|---|---:|---:|---:|---:|---|')
    for arm in arms:
        reps = runs[arm].values()
        fp = statistics.median([r[('footprint', None)] for r in reps]) / ref if ref else None
        oom = statistics.median([r[('oom_kills', None)] for r in reps])
        above = statistics.median([r[('above_capacity', None)] for r in reps])
        slows = [statistics.median([r.get(('slowdown', w)) or float('inf') for r in reps]) for w in ('reader', 'burst')]
        worst = max(slows)
        met = fp is not None and fp <= 0.7 and oom == 0 and above == 0 and worst <= 1.2
        print('| %s | %s | %s | %s | %s | %s |' % (arm, '%.2f×' % fp if fp is not None else '—', fmt(float(oom)),
                                                  fmt(float(above)), 'never' if worst == float('inf') else '%.2f' % worst,
                                                  'yes' if met else 'no'))
    print()


def scale_ratios(records):
    """How ppnd's CPU per tick grows between consecutive node sizes (equal factors = linear)."""
    cpu = {r['vms']: r['value'] for r in records
           if r['part'] == 'scale' and r['metric'] == 'cpu_per_tick'}
    sizes = sorted(cpu)
    if len(sizes) < 2:
        return
    steps = ['%d→%d VMs (%s): CPU per tick %s' % (a, b, ratio(b, a), ratio(cpu[b], cpu[a]))
             for a, b in zip(sizes, sizes[1:])]
    print('Scaling, VMs × vs CPU per tick ×: ' + '; '.join(steps) + '\n')


LIVE_COLUMNS = [('converged', 'converged'), ('guest_survived', 'guest ran on'), ('total_time', 'total s'), ('downtime', 'downtime ms'),
                ('transferred', 'sent MiB'), ('wall', 'ppnctl wall s'), ('guest_write_rate', 'guest writes MiB/s'),
                ('loadavg', 'load')]


def live_tables(records):
    """One row per kind of move: median (min–max) over its repetitions; downtime over the moves
    that completed only (a cancelled migration has none)."""
    rows = [r for r in records if r['part'] == 'live' and r['mode'] != 'qemu']
    if not rows:
        return
    conf = {r['metric']: r['value'] for r in records if r['part'] == 'live' and r['mode'] == 'qemu'}
    print('### Live relocation vs cold move (1 GiB guest, two nodes on 127.0.0.1, TCG)\n')
    print('QEMU downtime-limit %s ms, auto-converge %s, xbzrle %s. Live: QEMU\'s own query-migrate figures; '
          'cold: stop + export + import + start until the guest answers (all of it is downtime).\n'
          % (conf.get('downtime_limit'), 'on' if conf.get('auto_converge') else 'off',
             'on' if conf.get('xbzrle') else 'off'))
    groups = {}
    for r in rows:
        groups.setdefault((r['mode'], r['bandwidth']), {}).setdefault(r['metric'], []).append(r['value'])
    print('| move | cap | ' + ' | '.join(label for _, label in LIVE_COLUMNS) + ' |')
    print('|---|---|' + '---:|' * len(LIVE_COLUMNS))
    for (mode, bw), m in groups.items():
        cells = []
        for metric, _ in LIVE_COLUMNS:
            vals = m.get(metric, [])
            if metric in ('converged', 'guest_survived'):
                cells.append('%d of %d' % (sum(vals), len(vals)) if vals else '')
            elif metric == 'downtime':
                cells.append(med_range([v for v in vals if v is not None]) or 'none')
            else:
                cells.append(med_range(vals))
        print('| %s | %s | %s |' % (mode, bw or '—', ' | '.join(cells)))
    print()


def main():
    out_dir, results = sys.argv[1], sys.argv[2]
    records = load(out_dir)
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                             text=True, check=False).stdout.strip()
    except OSError:
        rev = ''
    doc = {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'commit': rev, 'host': os.uname().nodename, 'cpus': os.cpu_count(),
        'records': records,
    }
    with open(results, 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')
    print('## Benchmarks (%s, commit %s, %d CPUs)\n' % (doc['date'], rev, doc['cpus']))
    sim_tables(records)
    pivot(records, 'reaction', 'Reaction (real guest, TCG)',
          'Reaction = allocation start until the balloon gave the guest the memory past its '
          'target; floor = stats interval + raw deflate of the same distance, same guest, same run.')
    pivot(records, 'reclaim', 'Reclaim (real guest, TCG)',
          'Floor = one direct balloon command to the same final size from the same state.')
    pivot(records, 'vmem', 'virtio-mem vs balloon (real guest, TCG, direct QMP)',
          '1 GiB touched, freed and given back by the balloon and by unplugging, then taken again '
          '(deflate vs plug); same guest, same run; min-max over the repetitions.')
    pivot(records, 'vmem_growth', 'virtio-mem: ppnd growing a guest by plugging (real guest, TCG)',
          'Reaction = allocation start until the size (base + plugged - balloon) grew by the distance; '
          'floor = stats interval + one direct plug of the same distance, same guest, same run; '
          'reaction_over_raw: against the plug alone.')
    pivot(records, 'scale', 'Scale (ppnd against fake QMP peers)',
          'cpu_per_tick: ppnd CPU per 1 s control tick; latency: burst start to growth command '
          '(measured by the fake); policy_decide: the pure policy alone, same N.')
    scale_ratios(records)
    pivot(records, 'fleet', 'Fleet scale (simulated nodes through one real etcd)',
          'writes_per_s: capacity records written in steady state under the threshold rule; '
          'revocation: put sent until each watcher had the event, over all watchers and revocations.')
    overcommit_tables(records)
    live_tables(records)
    if not records:
        print('(no measurements)')


if __name__ == '__main__':
    main()
