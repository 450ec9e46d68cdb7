#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/ (run once; the output is committed).

fuzz-qmp: what QEMU 7.2 sent in each recorded transcript (tests/fixtures/qmp/*.qmp, '<-'
lines, CRLF-terminated as QEMU writes them), each with a first control byte 0 (one write) and
again with 1 and 7 (split at every byte / in odd chunks).
fuzz-balloon-stats: every guest-stats reply in the transcripts, plus edge cases.
fuzz-ledger-import: documents as 'ppnctl ledger export' writes them, plus edge cases.
fuzz-config: tests/fixtures/config/*.conf and systemd/ppnd.conf.example.
fuzz-control: client sessions on the control socket.
fuzz-archive-manifest: manifests as 'ppnctl export' writes them, and hostile variants.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'tests', 'fixtures', 'qmp')


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def transcripts():
    for fn in sorted(os.listdir(FIXTURES)):
        if fn.endswith('.qmp'):
            lines = open(os.path.join(FIXTURES, fn)).read().splitlines()
            yield fn[:-4], [l[3:] for l in lines if l.startswith('<- ') and l != '<- EOF']


def qmp_seeds():
    for name, lines in transcripts():
        stream = ''.join(l + '\r\n' for l in lines).encode()
        for chunk in (0, 1, 7):
            write('fuzz-qmp', '%s-%d' % (name, chunk), bytes([chunk]) + stream)
    greeting = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}\r\n'
    ready = greeting + '{"return": {}, "id": 1}\r\n'
    extra = {
        'out-of-order': ready + '{"return": {}, "id": 4}\r\n{"event": "BALLOON_CHANGE", "data": {"actual": 1}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n{"return": {"actual": 5}, "id": 2}\r\n',
        'error-reply': ready + '{"error": {"class": "DeviceNotActive", "desc": "No balloon device has been activated"}, "id": 2}\r\n',
        'unknown-id': ready + '{"return": {}, "id": 99}\r\n',
        'half-line': ready + '{"return": {"act',
        'not-object': ready + '[1, 2, 3]\r\n',
        'second-greeting': ready + greeting,
    }
    for name, s in extra.items():
        write('fuzz-qmp', name, b'\0' + s.encode())


def stats_seeds():
    n = 0
    for name, lines in transcripts():
        for l in lines:
            msg = json.loads(l)
            ret = msg.get('return')
            if isinstance(ret, dict) and 'stats' in ret:
                write('fuzz-balloon-stats', '%s-%d' % (name, n), json.dumps(ret))
                n += 1
    full = {'stat-swap-in': 0, 'stat-swap-out': 0, 'stat-major-faults': 12, 'stat-minor-faults': 3456,
            'stat-free-memory': 700 << 20, 'stat-total-memory': 1 << 30,
            'stat-available-memory': 800 << 20, 'stat-disk-caches': 50 << 20,
            'stat-htlb-pgalloc': 0, 'stat-htlb-pgfail': 0}
    extra = {
        'full': {'stats': full, 'last-update': 1795946595},
        'never': {'stats': full, 'last-update': 0},
        'not-reported': {'stats': {'stat-free-memory': 18446744073709551615}, 'last-update': 5},
        'extra-stat': {'stats': dict(full, **{'stat-new-thing': 7}), 'last-update': 9},
        'negative': {'stats': {'stat-free-memory': -1}, 'last-update': 9},
        'float': {'stats': {'stat-free-memory': 1.5}, 'last-update': 9},
        'string': {'stats': {'stat-free-memory': '1'}, 'last-update': 9},
        'no-stats': {'last-update': 9},
    }
    for name, o in extra.items():
        write('fuzz-balloon-stats', name, json.dumps(o))
    write('fuzz-balloon-stats', 'huge', '{"stats": {"stat-free-memory": 99999999999999999999999}, "last-update": 1}')


def ledger_seeds():
    vm = {'name': 'web', 'uuid': '538de7bf-0533-4212-8ded-d6d035f81fd4', 'min_bytes': 512 << 20,
          'max_bytes': 4 << 30, 'shares': 200, 'cpu_weight': 100, 'vcpus': 1,
          'qmp': '/run/web.qmp', 'disks': ['/var/lib/ppn/web.qcow2'],
          'qemu_args': ['-smp', '2'], 'override': {'target_bytes': 1 << 30, 'expires': 1900000000}}
    db = dict(vm, name='db', uuid='6050c225-ab94-47f2-a3c8-189bed9332fb', min_bytes=1 << 30,
              qmp=None, disks=[], qemu_args=[], override=None)
    node = {'physical_bytes': 16 << 30, 'reserve_bytes': 1 << 30, 'min_floor_bytes': None}
    docs = {
        'export': {'schema': 1, 'node': node, 'vms': [db, vm]},
        'no-node': {'schema': 1, 'vms': [dict(vm, name='new', uuid='')]},
        'over-capacity': {'schema': 1, 'node': dict(node, physical_bytes=2 << 30), 'vms': [db, vm]},
        'empty': {'schema': 1, 'vms': []},
        'bad-min': {'schema': 1, 'vms': [dict(vm, min_bytes=1)]},
        'future-schema': {'schema': 2, 'vms': []},
        'dup': {'schema': 1, 'vms': [vm, vm]},
    }
    for name, d in docs.items():
        write('fuzz-ledger-import', name, json.dumps(d, indent=1))


def config_seeds():
    """The config fixtures and the example file, when present (they come with the daemon)."""
    root = os.path.join(HERE, '..')
    d = os.path.join(root, 'tests', 'fixtures', 'config')
    files = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith('.conf')] if os.path.isdir(d) else []
    example = os.path.join(root, 'systemd', 'ppnd.conf.example')
    if os.path.exists(example):
        files.append(example)
    for f in files:
        write('fuzz-config', os.path.basename(f), open(f, 'rb').read())


def control_seeds():
    """One client session each: the first byte is the chunk size (0: one write)."""
    sessions = {
        'echo': '{"request": "echo", "x": [1, 2, {"y": null}]}\n',
        'fail': '{"request": "fail"}\n',
        'follow': '{"request": "follow"}\n',
        'unknown': '{"request": "nope"}\n',
        'not-object': '[1]\n"request"\n{"request": 5}\n',
        'two-values': '{"request": "echo"} {"request": "echo"}\n',
        'many': '{"request": "echo"}\n' * 20,
        'blank-lines': '\n\n{"request": "echo"}\n\n',
        'too-large': '{"request": "echo", "pad": "' + 'x' * 300 + '"}\n',
        'no-newline': '{"request": "echo"}',
    }
    for name, s in sessions.items():
        write('fuzz-control', name, b'\0' + s.encode())
    write('fuzz-control', 'echo-split', b'\x03' + sessions['echo'].encode())


def manifest_seeds():
    """manifest.json as 'ppnctl export' writes it, plus the hostile shapes import must refuse."""
    uuid = '6a1f3c2e-9b7d-4e5f-8a1b-2c3d4e5f6a7b'
    vm = {'name': 'web', 'uuid': uuid, 'min_bytes': 512 << 20, 'max_bytes': 2 << 30,
          'shares': 1000, 'cpu_weight': 100, 'vcpus': 1, 'qmp': '/run/ppn/web.qmp',
          'disks': ['/srv/web.img'], 'qemu_args': ['-netdev', 'tap,script=/tmp/x']}
    disk = {'file': 'web.img', 'format': 'raw', 'size': 1 << 30, 'sha256': 'ab' * 32,
            'source': '/srv/web.img'}
    good = {'archive': 'ppn-vm', 'version': 1, 'name': 'web', 'uuid': uuid,
            'created': 1764400000, 'vm': vm, 'disks': [disk]}
    variants = {
        'good': good,
        'no-disks': dict(good, disks=[]),
        'two-disks': dict(good, disks=[disk, dict(disk, file='web-1.img', format='qcow2')]),
        'path-file': dict(good, disks=[dict(disk, file='../../etc/passwd')]),
        'dup-file': dict(good, disks=[disk, disk]),
        'bad-sha': dict(good, disks=[dict(disk, sha256='AB' * 32)]),
        'negative-size': dict(good, disks=[dict(disk, size=-1)]),
        'name-mismatch': dict(good, name='db'),
        'newer': dict(good, version=2),
        'vm-not-object': dict(good, vm=[1]),
    }
    for name, d in variants.items():
        write('fuzz-archive-manifest', name, json.dumps(d, indent=1))
    write('fuzz-archive-manifest', 'truncated', json.dumps(good)[:60])


if __name__ == '__main__':
    qmp_seeds()
    stats_seeds()
    ledger_seeds()
    config_seeds()
    control_seeds()
    manifest_seeds()
    sys.exit(0)
