#!/usr/bin/env python3
"""A busy guest's live migration between two plain QEMUs, without ppnd or ppnctl: does the guest
arrive intact? (docs/relocation.md, "Limits".)

    bench/plain-migrate.py [--accel ACCEL] [--smp N] [--moves N] [--no-balloon]
                           [--bandwidth SIZE] [--stopped] OUT.jsonl

env: PPN_GUEST_DIR (build/guest)

The test guest (1 GiB, tests/guest) is started with the same devices and options as
`ppnctl start` gives it (src/vm.c: -nodefaults, the virtio-balloon with deflate-on-oom and
free-page-reporting on, a virtio disk, the guest's kernel, initramfs and command channel), with
`-accel ACCEL` (default `tcg`: multi-threaded TCG; `tcg,thread=single` for one TCG thread) and
`-smp N` (default 1). In the guest, `guest-work burst` writes fresh memory without pause (256 MiB
allocated, touched, freed, again), as in bench/live.py's busy moves. Then the guest moves back and
forth MOVES times (default 10), the way ppnd and ppnctl do it: the destination QEMU started with
`-S -incoming defer`, `migrate-incoming tcp:127.0.0.1:PORT`; the source's `max-bandwidth` set
(default 1G) and `migrate`; `query-migrate` followed every 0.25 s until `completed` (or
`failed`, or 120 s: `migrate_cancel`); then the destination is resumed (`cont`) and the source
quits. With --stopped the source's vCPUs are stopped (`stop`) before `migrate`: the whole
migration is downtime, and the guest writes nothing while it runs. Other migration parameters and capabilities are QEMU's defaults (recorded).

After each move, 10 s later: the guest must answer on its command channel (60 s) with the boot id
it had before, both consoles must show no new "Kernel panic", "BUG" or "Oops" line, and the
workload must still be running. A guest that fails is recorded (with the first console line),
killed, and a fresh one is booted for the next move. Every move is recorded.
"""
import argparse
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
GUEST = os.environ.get('PPN_GUEST_DIR', os.path.join(ROOT, 'build', 'guest'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
_spec = importlib.util.spec_from_file_location('live_move', os.path.join(ROOT, 'tests', 'test-live-move.py'))
live = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(live)
from ppnd_harness import parse_size  # noqa: E402

BURST = 'guest-work burst w 1000000 256 0 0'
MIB = 1 << 20


def say(text):
    print('==> plain-migrate: ' + text, file=sys.stderr, flush=True)


class Qemu:
    """One QEMU of the guest, in its own folder (QMP socket, command channel, console)."""
    n = 0

    def __init__(self, scratch, opts, disk, incoming=False):
        Qemu.n += 1
        self.dir = os.path.join(scratch, 'q%d' % Qemu.n)
        os.makedirs(self.dir)
        self.qmp_path = os.path.join(self.dir, 'qmp.sock')
        self.console = os.path.join(self.dir, 'console.log')
        self.argv = ['qemu-system-x86_64', '-name', 'guest=g', '-uuid', '8a4b7b8e-16f4-4cc4-9a7a-3c1c1c0e0b16',
                     '-accel', opts.accel, '-m', '1024M', '-smp', str(opts.smp), '-nodefaults', '-no-user-config',
                     '-display', 'none', '-S',
                     '-chardev', 'socket,id=ppn-qmp,path=%s,server=on,wait=off' % self.qmp_path,
                     '-mon', 'chardev=ppn-qmp,mode=control',
                     '-chardev', 'file,id=ppn-console,path=%s,append=on' % self.console,
                     '-serial', 'chardev:ppn-console']
        if not opts.no_balloon:
            self.argv += ['-device', 'virtio-balloon-pci,id=ppn-balloon,deflate-on-oom=on,free-page-reporting=on']
        self.argv += ['-drive', 'file=%s,format=raw,if=virtio' % disk,
                      '-kernel', GUEST + '/vmlinuz', '-initrd', GUEST + '/initramfs.gz',
                      '-append', 'console=ttyS0 panic=-1',
                      '-chardev', 'socket,id=ctl,path=%s,server=on,wait=off' % os.path.join(self.dir, 'g.ctl'),
                      '-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=ctl,name=ctl']
        if incoming:
            self.argv += ['-incoming', 'defer']
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, 'qemu.err'), 'w'))
        if not live.wait_for(lambda: os.path.exists(self.qmp_path), 30):
            raise RuntimeError('QEMU does not start: %s' % open(os.path.join(self.dir, 'qemu.err')).read())

    def qmp(self, cmd, args=None):
        return live.qmp_call(self.qmp_path, cmd, args)

    def channel(self):
        return live.Channel(os.path.join(self.dir, 'g.ctl'))

    def crashes(self):
        try:
            lines = open(self.console, errors='replace').read().splitlines()
        except OSError:
            return []
        return [x.strip() for x in lines if any(w in x for w in ('Kernel panic', 'BUG', 'Oops'))]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def boot(scratch, opts, disk):
    q = Qemu(scratch, opts, disk)
    q.qmp('cont')
    if not q.channel().wait_ready(180):
        raise RuntimeError('the guest does not boot')
    q.channel().run(BURST)
    time.sleep(5)
    return q


def move(src, scratch, opts, disk, port):
    """Migrate src to a new QEMU the way ppnd/ppnctl do; returns (dst or None, query-migrate)."""
    dst = Qemu(scratch, opts, disk, incoming=True)
    dst.qmp('migrate-incoming', {'uri': 'tcp:127.0.0.1:%d' % port})
    src.qmp('migrate-set-parameters', {'max-bandwidth': opts.bandwidth})
    if opts.stopped:   # the guest writes nothing while its memory is sent
        src.qmp('stop')
    src.qmp('migrate', {'uri': 'tcp:127.0.0.1:%d' % port})
    deadline = time.monotonic() + 120
    st = {}
    while time.monotonic() < deadline:
        st = src.qmp('query-migrate')
        if st.get('status') in ('completed', 'failed', 'cancelled'):
            break
        time.sleep(0.25)
    if st.get('status') != 'completed':
        src.qmp('migrate_cancel')
        dst.kill()
        if src.qmp('query-status').get('status') != 'running':
            src.qmp('cont')
        return None, st
    # The destination is resumed once it has the whole state (ppnd: migration status completed).
    live.wait_for(lambda: dst.qmp('query-migrate').get('status') == 'completed', 30)
    dst.qmp('cont')
    src.qmp('quit')
    src.proc.wait()
    return dst, st


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--accel', default='tcg')
    p.add_argument('--smp', type=int, default=1)
    p.add_argument('--moves', type=int, default=10)
    p.add_argument('--no-balloon', action='store_true')
    p.add_argument('--bandwidth', default='1G')
    p.add_argument('--stopped', action='store_true')
    p.add_argument('out')
    opts = p.parse_args()
    opts.bandwidth = parse_size(opts.bandwidth)
    if not os.path.exists(os.path.join(GUEST, 'initramfs.gz')):
        say('skipped: no test guest in %s' % GUEST)
        return 0
    scratch = tempfile.mkdtemp(prefix='ppn-plain-mig-')
    disk = os.path.join(scratch, 'g.img')
    with open(disk, 'wb') as f:
        f.truncate(8 * MIB)
    config = dict(accel=opts.accel, smp=opts.smp, balloon=not opts.no_balloon, bandwidth=opts.bandwidth,
                  stopped=opts.stopped,
                  qemu=subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True)
                  .stdout.split('\n')[0])
    out = open(opts.out, 'a')
    qemus = []
    try:
        q = boot(scratch, opts, disk)
        qemus.append(q)
        caps = {c['capability']: c['state'] for c in q.qmp('query-migrate-capabilities')}
        params = q.qmp('query-migrate-parameters')
        config.update(caps_on=sorted(k for k, v in caps.items() if v), downtime_limit=params.get('downtime-limit'))
        say('config %s' % json.dumps(config))
        port = live.free_port()
        for i in range(opts.moves):
            boot_id = q.channel().run('cat /proc/sys/kernel/random/boot_id')
            status = q.channel().run('guest-work status w') or ''
            load = float(open('/proc/loadavg').read().split()[0])
            dst, st = move(q, scratch, opts, disk, port)
            rec = dict(config, move=i + 1, load=load, status=st.get('status'), total_ms=st.get('total-time'),
                       downtime_ms=st.get('downtime'), mib=round(st.get('ram', {}).get('transferred', 0) / MIB),
                       dirty_sync=st.get('ram', {}).get('dirty-sync-count'), workload_before=status[-80:])
            if dst is None:
                rec.update(converged=0)
                say('move %d: not converged (%s)' % (i + 1, st.get('status')))
            else:
                qemus.append(dst)
                time.sleep(10)
                answers = dst.channel().wait_ready(60)
                same = answers and dst.channel().run('cat /proc/sys/kernel/random/boot_id') == boot_id
                work = (dst.channel().run('guest-work status w') or '') if answers else ''
                crashes = [c for x in qemus for c in x.crashes()]
                ok = bool(same and not crashes and 'burst' in work)
                rec.update(converged=1, intact=int(ok), answers=int(bool(answers)), same_boot=int(bool(same)),
                           console=crashes[:3], workload_after=work[-80:])
                say('move %d: completed in %.1f s (downtime %s ms, %d MiB, %s syncs), load %.1f: %s%s' % (
                    i + 1, st.get('total-time', 0) / 1000, st.get('downtime'), rec['mib'], rec['dirty_sync'], load,
                    'intact' if ok else 'CORRUPT', '' if ok else ' (%s)' % (crashes[0] if crashes else
                                                                             'answers %s, same boot %s, workload %r' % (answers, same, work[-60:]))))
                q = dst
                if not ok:   # a fresh guest for the next move
                    for x in qemus:
                        x.kill()
                    qemus = []
                    q = boot(scratch, opts, disk)
                    qemus.append(q)
            out.write(json.dumps(rec) + '\n')
            out.flush()
            time.sleep(2)
    finally:
        for x in qemus:
            x.kill()
        out.close()
        keep = os.path.join(os.path.dirname(os.path.abspath(opts.out)), 'plain-migrate-logs')
        os.makedirs(keep, exist_ok=True)
        for d in sorted(os.listdir(scratch)):
            c = os.path.join(scratch, d, 'console.log')
            if os.path.exists(c):
                shutil.copyfile(c, os.path.join(keep, '%s-%s.log' % (os.path.splitext(os.path.basename(opts.out))[0], d)))
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
