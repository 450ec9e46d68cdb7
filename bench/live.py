#!/usr/bin/env python3
"""Live relocation against a cold move of the same 1 GiB guest (docs/relocation.md).

    bench/live.py OUT.jsonl

env: PPN_GUEST_DIR (build/guest), BENCH_REPS (5), LIVE_TIMEOUT (30s)

Two ppnd nodes on this machine (A and B, 4 GiB each, paired through a real etcd on free
127.0.0.1 ports), the project's test guest with 1 GiB of RAM (minimum 512 MiB), its 8 MiB disk
on a file both nodes reach. The guest moves back and forth, A -> B -> A, with `ppnctl move
--live` (into the destination's own pool; no grant):

  live, idle:  the guest runs nothing;
  live, busy:  `guest-work burst` in the guest allocates and touches 256 MiB, frees it and
               starts again, without pause (every page written is a new non-zero page: zero
               pages would cost the migration almost nothing);
each at two caps on the stream, --max-bandwidth 32M (QEMU 7.2's own default) and 1G (more than
loopback carries under TCG here: in effect no cap). QEMU's other migration parameters are its
defaults (downtime-limit 300 ms, no auto-converge, no xbzrle: read from the guest's QEMU and
recorded). [fleet] migration-timeout is LIVE_TIMEOUT: a move that does not converge by then is
cancelled and the guest runs on where it was (recorded as not converged, with the figures
reached).

  cold:  `ppnctl move g --to DIR --timeout 1s` (stop, export, verify, remove) on the source,
         `ppnctl import DIR`, `ppnctl vm set g qemu-arg=...` (import drops an archive's QEMU
         options: the operator sets them again on the destination, here the guest's kernel,
         initramfs and command channel) and `ppnctl start g` on the destination, until the
         guest answers on its command channel again. The downtime of a cold move is all of it, and the guest's
         memory is lost. The test guest has no ACPI power-button handler: its stop is QEMU's
         quit after the 1 s timeout (a real guest's own shutdown would add its time).

Repetitions (BENCH_REPS, 5) are fixed before any result; every one is recorded, with the
1-minute load average at its start. Total time and downtime of live moves are QEMU's own
query-migrate figures (total-time, downtime), as `ppnctl --json move` reports them; wall is
ppnctl's whole run (request, admission, QEMU start on the destination, migration, outcome).
After every live move the guest must answer with the boot id it had before and its consoles
(both nodes') must show no new kernel Oops, BUG or panic line; a guest that rebooted (its
kernel crashed; panic=-1 restarts it), runs on after an Oops, or does not answer within 180 s
(then it is stopped and started again where it is) is recorded as guest_survived 0, with the
first such console line, and a busy guest's workload is started again so the next repetition
is still a busy one.
Each node's ppnd log and guest console are kept in OUT's folder, live-logs/.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('PPN_BUILD_ROOT', os.path.join(ROOT, 'build'))
os.environ.setdefault('PPN_GUEST_DIR', os.path.join(ROOT, 'build', 'guest'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
_spec = importlib.util.spec_from_file_location('live_move', os.path.join(ROOT, 'tests', 'test-live-move.py'))
live = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(live)
fleet = live.fleet

REPS = int(os.environ.get('BENCH_REPS', '5'))
TIMEOUT = os.environ.get('LIVE_TIMEOUT', '30s')
GUEST = os.environ['PPN_GUEST_DIR']
MIB = 1 << 20
BANDWIDTHS = ['32M', '1G']
# The test guest's QEMU options: its kernel and initramfs, and its command channel on a path
# relative to the node's folder (QEMU's working directory there: test-live-move.py, Node.start).
QEMU_ARGS = ['-kernel', GUEST + '/vmlinuz', '-initrd', GUEST + '/initramfs.gz', '-append', 'console=ttyS0 panic=-1',
             '-chardev', 'socket,id=ctl,path=g.ctl,server=on,wait=off', '-device', 'virtio-serial-pci',
             '-device', 'virtserialport,chardev=ctl,name=ctl']


def say(text):
    print('==> live: ' + text, file=sys.stderr, flush=True)


def loadavg():
    return float(open('/proc/loadavg').read().split()[0])


class Bench:
    def __init__(self, out):
        self.out = out

    def record(self, **rec):
        self.out.write(json.dumps(dict(part='live', **rec)) + '\n')
        self.out.flush()


def set_timeout(node):
    live.set_timeout(node, TIMEOUT)


def workload_rate(ch):
    """MiB/s the busy guest writes: its last burst's size over its time ('burst K: 256 MiB in T ms').
    None, with what the guest said, when no burst can be read: the workload is not running."""
    line = ch.run('guest-work status w') or ''
    try:
        words = line.split()
        return float(words[words.index('MiB') - 1]) / (float(words[words.index('in') + 1]) / 1000)
    except (ValueError, IndexError, ZeroDivisionError):
        oom = ch.run('dmesg | grep -i -e "out of memory" -e "killed process" | tail -2') or ''
        say('no write rate in the guest: status %r; %s' % (line[-200:], oom.strip()[-300:] or 'no OOM kill in dmesg'))
        return None


BURST = 'guest-work burst w 1000000 256 0 0'


def boot_id(ch):
    return ch.run('cat /proc/sys/kernel/random/boot_id')


def console_crashes(nodes):
    """The guest kernel's panic, Oops and BUG lines so far in the nodes' console logs."""
    hits = []
    for node in nodes:
        try:
            lines = open(os.path.join(node.logs, 'g.log'), errors='replace').read().splitlines()
        except OSError:
            continue
        hits += ['%s: %s' % (node.name, x.strip()) for x in lines
                 if any(w in x for w in ('Kernel panic', 'BUG', 'Oops'))]
    return hits


def live_moves(bench, nodes, where, mode, bw):
    for rep in range(REPS):
        src, dst = where, nodes[1] if where is nodes[0] else nodes[0]
        rate = workload_rate(src.channel()) if mode == 'busy' else None
        boot = boot_id(src.channel())
        crashes = len(console_crashes(nodes))
        if mode == 'busy':
            bench.record(metric='workload_running', value=0 if rate is None else 1, unit='bool',
                         mode='live-' + mode, bandwidth=bw, rep=rep + 1)
        load = loadavg()
        t0 = time.monotonic()
        r, out = live.move(src, 'g', '--to', dst.id, '--live', '--max-bandwidth', bw)
        wall = time.monotonic() - t0
        mig = out.get('migration', {})
        ok = r.returncode == 0 and out.get('outcome') == 'adopted'
        say('%s %s rep %d %s -> %s: %s in %.1f s (QEMU %.1f s, downtime %s ms, %.0f MiB), load %.1f%s' % (
            mode, bw, rep + 1, src.name, dst.name, out.get('outcome', r.stderr.strip()[-200:]), wall,
            mig.get('total_time_ms', 0) / 1000, mig.get('downtime_ms'), mig.get('transferred_bytes', 0) / MIB, load,
            '' if ok else ' (%s)' % out.get('reason')))
        base = dict(mode='live-' + mode, bandwidth=bw, rep=rep + 1)
        bench.record(metric='converged', value=1 if ok else 0, unit='bool', **base)
        bench.record(metric='total_time', value=mig.get('total_time_ms', 0) / 1000, unit='s', **base)
        bench.record(metric='downtime', value=mig.get('downtime_ms') if ok else None, unit='ms', **base)
        bench.record(metric='transferred', value=mig.get('transferred_bytes', 0) / MIB, unit='MiB', **base)
        bench.record(metric='wall', value=round(wall, 2), unit='s', **base)
        bench.record(metric='loadavg', value=load, unit='1-min load', **base)
        if rate is not None:
            bench.record(metric='guest_write_rate', value=round(rate, 1), unit='MiB/s', **base)
        bench.record(metric='outcome_' + (out.get('outcome') or 'error').replace(' ', '_'), value=1, unit='count',
                     **base)
        if ok:
            where = dst
        # The same guest runs on, or it rebooted (its kernel crashed, panic=-1) or hangs: a move
        # is only a success if the guest answers with the boot id it had before.
        answers = where.channel().wait_ready(180)
        rebooted = answers and boot_id(where.channel()) != boot
        new_crashes = console_crashes(nodes)[crashes:]
        survived = answers and not rebooted and not new_crashes
        bench.record(metric='guest_survived', value=1 if survived else 0, unit='bool', **base)
        if not survived:
            say('%s %s rep %d: the guest %s on %s (console: %s)' % (
                mode, bw, rep + 1, 'HANGS (no answer in 180 s)' if not answers else 'REBOOTED' if rebooted else
                'runs on after a kernel Oops', where.name, new_crashes[0] if new_crashes else 'no panic line'))
            if not answers:   # restart it where it is, for the next repetitions
                where.ctl('stop', 'g', '--timeout', '1s', check=False)
                where.ctl('start', 'g')
                if not where.channel().wait_ready(180):
                    raise RuntimeError('the guest does not boot again on %s' % where.name)
            if mode == 'busy':
                where.channel().run('guest-work stop w')
                where.channel().run(BURST)   # the workload may have died with it: start it again
                time.sleep(5)
        time.sleep(2)
    return where


def cold_moves(bench, nodes, where, scratch):
    for rep in range(REPS):
        src, dst = where, nodes[1] if where is nodes[0] else nodes[0]
        archive = os.path.join(scratch, 'archive')
        images = os.path.join(scratch, 'images-%s-%d' % (dst.name, rep))
        load = loadavg()
        t0 = time.monotonic()
        src.ctl('move', 'g', '--to', archive, '--timeout', '1s')
        t1 = time.monotonic()
        dst.ctl('import', archive, '--image-dir', images)
        dst.ctl('vm', 'set', 'g', *['qemu-arg=' + arg for arg in QEMU_ARGS])
        t2 = time.monotonic()
        dst.ctl('start', 'g')   # in the node's folder: the channel's relative path
        t3 = time.monotonic()
        ready = dst.channel().wait_ready(180)
        t4 = time.monotonic()
        say('cold rep %d %s -> %s: %.1f s (stop+export %.1f, import+set %.1f, start %.1f, boot %.1f), load %.1f' % (
            rep + 1, src.name, dst.name, t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, load))
        if not ready:
            raise RuntimeError('the guest did not boot on %s after a cold move' % dst.name)
        base = dict(mode='cold', bandwidth='', rep=rep + 1)
        bench.record(metric='converged', value=1, unit='bool', **base)
        bench.record(metric='total_time', value=round(t4 - t0, 2), unit='s', **base)
        bench.record(metric='downtime', value=round((t4 - t0) * 1000), unit='ms', **base)
        for metric, v in (('stop_export', t1 - t0), ('import', t2 - t1), ('start', t3 - t2), ('boot', t4 - t3)):
            bench.record(metric=metric, value=round(v, 2), unit='s', **base)
        bench.record(metric='loadavg', value=load, unit='1-min load', **base)
        shutil.rmtree(archive)
        where = dst
    return where


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not os.path.exists(os.path.join(GUEST, 'initramfs.gz')):
        say('skipped: no test guest in %s' % GUEST)
        return 0
    if not shutil.which('etcd'):
        say('skipped: etcd (Debian etcd-server) is not installed')
        return 0
    etcd = fleet.Etcd()
    nodes = []
    scratch = tempfile.mkdtemp(prefix='ppn-live-bench-')
    out = open(sys.argv[1] + '.tmp', 'w')
    bench = Bench(out)
    try:
        if not etcd.start():
            raise RuntimeError('etcd does not start')
        a = live.Node('A', etcd, '4G', live.free_port())
        b = live.Node('B', etcd, '4G', live.free_port() + 100)
        nodes = [a, b]
        for n in nodes:
            set_timeout(n)
            if not n.start():
                raise RuntimeError('ppnd %s does not start' % n.name)
        for n, other in ((a, b), (b, a)):
            live.wait_for(lambda: n.ctl('fleet', 'trust', other.id, other.fingerprint, check=False).returncode == 0, 10)
        disk = os.path.join(scratch, 'g.img')
        with open(disk, 'wb') as f:
            f.truncate(8 * MIB)
        a.ctl('vm', 'add', 'g', '--min', '512M', '--max', '1G', '--disk', disk,
              *[x for arg in QEMU_ARGS for x in ('--qemu-arg', arg)])
        a.ctl('start', 'g')
        if not a.channel().wait_ready(180):
            raise RuntimeError('the guest does not boot on A')
        params = a.qmp('g', 'query-migrate-parameters')
        caps = {c['capability']: c['state'] for c in a.qmp('g', 'query-migrate-capabilities')}
        bench.record(mode='qemu', bandwidth='', rep=0, metric='downtime_limit', value=params.get('downtime-limit'),
                     unit='ms')
        bench.record(mode='qemu', bandwidth='', rep=0, metric='auto_converge', value=int(caps.get('auto-converge', False)),
                     unit='bool')
        bench.record(mode='qemu', bandwidth='', rep=0, metric='xbzrle', value=int(caps.get('xbzrle', False)), unit='bool')
        say('%d repetitions each; QEMU downtime-limit %s ms, auto-converge %s; migration-timeout %s' % (
            REPS, params.get('downtime-limit'), caps.get('auto-converge'), TIMEOUT))
        where = a
        for bw in BANDWIDTHS:
            where = live_moves(bench, nodes, where, 'idle', bw)
        where.channel().run(BURST)
        time.sleep(5)
        for bw in BANDWIDTHS:
            where = live_moves(bench, nodes, where, 'busy', bw)
        where.channel().run('guest-work stop w')
        where = cold_moves(bench, nodes, where, scratch)
        where.ctl('stop', 'g', '--timeout', '2s', check=False)
    finally:
        out.close()
        keep = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), 'live-logs')
        shutil.rmtree(keep, ignore_errors=True)
        for n in nodes:
            n.ctl('stop', 'g', '--timeout', '1s', check=False)
            # ppnd's log and the guests' consoles on each node, for reading after the run
            for d, _, files in os.walk(n.dir):
                for f in files:
                    if f.endswith('.log'):
                        dest = os.path.join(keep, n.name, os.path.relpath(os.path.join(d, f), n.dir))
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        shutil.copyfile(os.path.join(d, f), dest)
            n.cleanup()
            for d in ('/sys/fs/cgroup/cpu/' + n.cgparent, '/sys/fs/cgroup/' + n.cgparent):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        etcd.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    os.rename(sys.argv[1] + '.tmp', sys.argv[1])
    return 0


if __name__ == '__main__':
    sys.exit(main())
