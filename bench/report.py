#!/usr/bin/env python3
"""Merges the benchmark parts' records into bench/results.json and prints Markdown tables.

    bench/report.py OUT_DIR RESULTS_JSON

OUT_DIR holds one JSON-lines file per part (sim.jsonl, scale.jsonl, reaction.jsonl,
reclaim.jsonl); every line is one measurement with its unit. Parts not run are left out.
"""
import datetime
import json
import os
import subprocess
import sys

PARTS = ['sim', 'reaction', 'reclaim', 'scale', 'fleet']
POLICIES = ['ppnd', 'mom', 'proxmox']
SIM_METRICS = [
    ('reclaimed', 'reclaimed GiB·s', 'higher'),
    ('pressure', 'pressure VM·s', 'lower'),
    ('oom_events', 'OOM events', 'lower'),
    ('host_overrun', 'host overrun s', 'lower'),
    ('commands', 'balloon cmds', 'lower'),
    ('free_4g', 'free 4 GiB s', 'lower'),
]


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
    if isinstance(v, float) and not v.is_integer():
        return '%.1f' % v if abs(v) >= 10 else '%.2f' % v
    return '%d' % v


def ratio(a, b):
    if a is None or b is None:
        return '—'
    if b == 0:
        return '=' if a == 0 else '∞'
    return '%.2f×' % (a / b)


def sim_tables(records):
    sim = {}
    for r in records:
        if r['part'] == 'sim':
            sim.setdefault(r['trace'], {}).setdefault(r['policy'], {})[r['metric']] = r['value']
    if not sim:
        return
    print('### Policy comparison (simulator, bench/sim)\n')
    cols = [m for m in SIM_METRICS if any(m[0] in p for t in sim.values() for p in t.values())]
    print('| trace | policy | ' + ' | '.join(c[1] for c in cols) + ' |')
    print('|---|---|' + '---:|' * len(cols))
    for trace in sorted(sim):
        for pol in POLICIES:
            vals = sim[trace].get(pol, {})
            cells = [fmt(vals[c[0]]) if c[0] in vals else '' for c in cols]
            print('| %s | %s | %s |' % (trace, pol, ' | '.join(cells)))
    print('\nRatios, baseline ÷ ppnd, summed over all traces (pressure, OOM, overrun, commands: '
          '> 1 = ppnd better; reclaimed: < 1 = ppnd reclaimed more):\n')
    print('| metric | MOM ÷ ppnd | Proxmox ÷ ppnd |')
    print('|---|---:|---:|')
    for key, label, _ in cols:
        tot = {}
        for pol in POLICIES:
            vals = [sim[t].get(pol, {}).get(key) for t in sim if key in sim[t].get(pol, {})]
            tot[pol] = None if any(v is None for v in vals) else sum(vals)
        print('| %s | %s | %s |' % (label, ratio(tot['mom'], tot['ppnd']),
                                     ratio(tot['proxmox'], tot['ppnd'])))
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
    pivot(records, 'scale', 'Scale (ppnd against fake QMP peers)',
          'cpu_per_tick: ppnd CPU per 1 s control tick; latency: burst start to growth command '
          '(measured by the fake); policy_decide: the pure policy alone, same N.')
    scale_ratios(records)
    pivot(records, 'fleet', 'Fleet scale (simulated nodes through one real etcd)',
          'writes_per_s: capacity records written in steady state under the threshold rule; '
          'revocation: put sent until each watcher had the event, over all watchers and revocations.')
    if not records:
        print('(no measurements)')


if __name__ == '__main__':
    main()
