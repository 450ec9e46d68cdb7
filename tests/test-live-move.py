#!/usr/bin/env python3
"""Live moves between two ppnd nodes on this machine (docs/relocation.md), against a real etcd
and real guests (the test guest from tests/guest, under TCG).

A and B are paired (each trusts the other's key); B lends capacity to A. The guest, started on A
by 'ppnctl start' from its ledger entry, has its disk on storage both nodes reach (a file both
see at the same path) and a command channel (virtio-serial) through which a marker is written
into guest memory (tmpfs) and onto the disk.

  4. forged and expired grants cannot place the VM on B: refused, nothing on B
  2. a grant too small for the VM's minimum: refused before migration, the shortfall named,
     the VM never paused on A (its QEMU never started a migration)
  1. the move A -> B within B's grant: same uuid, markers intact, uptime continues, B's pool
     accounts for it (drawn from the lending), A's ledger released it, B's ppnd manages it
  3. back B -> A with the destination QEMU (on A) killed mid-migration: the VM still runs on
     B, A's ledger has no entry, A's pool is as before
Failures, each B -> A with the stream capped so that it is still running when the fault comes,
each ending with the VM running on B, nothing for it on A and both ledgers as before:
  - a timeout: B's [fleet] migration-timeout (10 s, the least it takes) passes: B cancels the migration;
  - a network cut: iptables drops every packet to and from A's migration ports on 127.0.0.1
    (the stream stalls as on a cut link: nothing fails, TCP just retransmits) until B gives up
    after RELOCATE_STALL_USEC (20 s) without progress;
  - A's ppnd killed (SIGKILL) mid-migration, its incoming QEMU left running: when ppnd starts
    again it settles the move from its journal (aborted, QEMU killed, entry removed).
"""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppnd_harness as h  # noqa: E402

_spec = importlib.util.spec_from_file_location('fleet_nodes', os.path.join(h.HERE, 'test-fleet-nodes.py'))
fleet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fleet)

GUEST = os.environ.get('PPN_GUEST_DIR', os.path.join(h.BUILD, 'guest'))
MIB = 1 << 20
VM_MIN, VM_MAX = 256 * MIB, 384 * MIB


class Node(fleet.FleetNode):
    """A fleet node whose VMs are real QEMUs in real cgroups (a parent group of its own)."""

    def __init__(self, name, etcd, physical, port):
        super().__init__(name, etcd, physical)
        self.cgparent = 'ppn-live-%s-%d.slice' % (name, os.getpid())
        self.logs = os.path.join(self.dir, 'logs')
        text = open(self.conf).read().replace('root = %s\n' % os.path.join(self.dir, 'cgroup'),
                                               'root = auto\nparent = %s\n' % self.cgparent)
        text += ('migration-port = %d\nmigration-ports = 4\nmigration-timeout = 120s\n'
                 '[qemu]\naccel = tcg\nlog-dir = %s\n' % (port, self.logs))
        with open(self.conf, 'w') as f:
            f.write(text)

    def ctl(self, *args, check=True, user=None):
        env = dict(os.environ, PPN_LEDGER=self.ledger, PPN_SOCKET=self.sock, PPN_CONFIG=self.conf,
                   PPN_RUNTIME_DIR=self.run, PPN_LOG_DIR=os.path.join(self.dir, 'logs'), PPN_ACCEL='tcg',
                   PPN_CGROUP_PARENT=getattr(self, 'cgparent', 'ppn.slice'))
        env.pop('PPN_CGROUP_ROOT', None)
        r = subprocess.run([h.PPNCTL] + list(args), env=env, capture_output=True, text=True, cwd=self.dir)
        if check and r.returncode != 0:
            raise RuntimeError('ppnctl %s: %s' % (' '.join(args), r.stderr.strip()))
        return r

    def start(self):
        # QEMU resolves the guest channel's relative path in its working directory: ppnctl's
        # and ppnd's here, so each node's copy of the VM has its own channel socket.
        old = os.getcwd()
        os.chdir(self.dir)
        try:
            return super().start()
        finally:
            os.chdir(old)

    def channel(self):
        return Channel(os.path.join(self.dir, 'g.ctl'))

    def popen(self, *args):
        env = dict(os.environ, PPN_LEDGER=self.ledger, PPN_SOCKET=self.sock, PPN_CONFIG=self.conf,
                   PPN_RUNTIME_DIR=self.run, PPN_LOG_DIR=self.logs, PPN_ACCEL='tcg', PPN_CGROUP_PARENT=self.cgparent)
        return subprocess.Popen([h.PPNCTL] + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.dir)

    def vms(self):
        return {v['name']: v for v in json.loads(self.ctl('--json', 'vm', 'list').stdout)}

    def pool(self):
        return json.loads(self.ctl('--json', 'pool').stdout)

    def qmp(self, name, cmd):
        return qmp_call(os.path.join(self.run, name + '.ppnctl.qmp'), cmd)


def qmp_call(path, cmd, args=None):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        f = s.makefile('rw')
        f.readline()
        f.write(json.dumps({'execute': 'qmp_capabilities'}) + '\n')
        f.flush()
        f.readline()
        f.write(json.dumps({'execute': cmd, 'arguments': args or {}}) + '\n')
        f.flush()
        while True:
            m = json.loads(f.readline())
            if 'return' in m or 'error' in m:
                return m.get('return', m)


class Channel:
    """The test guest's command channel (tests/guest/README.md, "Protocol")."""
    seq = 0

    def __init__(self, path):
        self.path = path

    def run(self, cmd, timeout=60):
        Channel.seq += 1
        tag = '%d.%d' % (os.getpid(), Channel.seq)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            s.sendall(('%s %s\n' % (tag, cmd)).encode())
            buf = b''
            while b'@@end %s ' % tag.encode() not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        text = buf.decode(errors='replace')
        begin = text.find('@@begin %s\n' % tag)
        end = text.find('@@end %s ' % tag)
        return text[begin + len('@@begin %s\n' % tag):end].strip() if begin >= 0 and end >= 0 else None

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.run('echo up', timeout=5) == 'up':
                    return True
            except OSError:
                pass
            time.sleep(1)
        return False


def wait_for(cond, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def uptime(ch):
    out = ch.run('cat /proc/uptime')
    return float(out.split()[0]) if out else None


def move(node, *args):
    r = node.ctl('--json', 'move', *args, check=False)
    try:
        return r, json.loads(r.stdout)
    except ValueError:
        return r, {}


def check_refusals(t, etcd, a, b, vm_uuid, small_gid, stranger):
    now = int(time.time())
    for what, g, want in (
            ('expired', fleet.forge(b.key, b.id, a.id, 1 << 30, now - 7200, now - 3600), 'expired'),
            ('forged (signed by another key)', fleet.forge(stranger, b.id, a.id, 1 << 30, now, now + 3600),
             'signature')):
        etcd.put('/ppn/grants/' + g['id'], json.dumps(g))
        pool0 = b.pool()
        r, out = move(a, 'g', '--to', b.id, '--live', '--grant', g['id'])
        t.ok(r.returncode == 1 and out.get('outcome') == 'refused by the destination' and want in out.get('reason', ''),
             'a %s grant cannot place the VM on B: refused with the reason' % what, r.stdout.strip() + r.stderr.strip())
        t.ok('g' not in b.vms() and b.pool() == pool0 and 'g' in a.vms(), '... nothing on B, the entry still on A')
    r, out = move(a, 'g', '--to', b.id, '--live', '--grant', small_gid)
    t.ok(r.returncode == 1 and 'short by 128 MiB' in out.get('reason', ''),
         'a grant of 128 MiB for a VM with a minimum of 256 MiB: refused, the shortfall named', out.get('reason'))
    st = a.qmp('g', 'query-migrate')
    t.ok(st.get('status') is None and a.qmp('g', 'query-status').get('status') == 'running',
         '... before any migration: A\'s QEMU never migrated nor paused (query-migrate empty, running)', st)
    t.ok('g' not in b.vms() and a.vms()['g']['uuid'] == vm_uuid, '... B\'s ledger has no entry')


def settled(node, ch):
    """The guest past its boot (uptime >= 20 s) and its balloon where ppnd wants it."""
    up = uptime(ch)
    vms = json.loads(node.ctl('status', '--json').stdout)['vms']
    g = next((v for v in vms if v['name'] == 'g'), {})
    return up is not None and up >= 20 and g.get('target_bytes') is not None and \
        g.get('target_bytes') == g.get('actual_bytes')


def check_move(t, a, b, gid, uuid, ch):
    # Moved once the guest is quiet: under TCG (QEMU 7.2) a guest still writing memory fast
    # can arrive corrupt (docs/relocation.md, Limits); that is QEMU's, not what this checks.
    t.ok(wait_for(lambda: settled(a, ch), 90, step=1), 'the guest on A has booted and its balloon is settled')
    up0 = uptime(ch)
    a_pool0, b_pool0 = a.pool(), b.pool()
    src_argv = qemu_argv(a)
    r, out = move(a, 'g', '--to', b.id, '--live', '--grant', gid)
    t.ok(r.returncode == 0 and out.get('outcome') == 'adopted', 'live move A -> B within B\'s grant: adopted',
         r.stdout.strip() + r.stderr.strip())
    # QEMU < 9.0 under TCG loses guest writes during a migration (docs/relocation.md, Limits):
    # ppnctl says so, and only then.
    version = subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.split()[3]
    warned = 'fixed in QEMU 9.0' in out.get('warning', '')
    t.ok(warned == (int(version.split('.')[0]) < 9), 'ppnctl %s that QEMU %s under TCG can lose guest writes' % (
        'warned' if warned else 'did not warn', version), out.get('warning'))
    mig = out.get('migration', {})
    t.note('migration: %.1f s, downtime %s ms, %.1f MiB sent' % (mig.get('total_time_ms', 0) / 1000,
                                                                 mig.get('downtime_ms'),
                                                                 mig.get('transferred_bytes', 0) / MIB))
    bv = b.vms().get('g', {})
    t.ok(bv.get('uuid') == uuid and bv.get('min_bytes') == VM_MIN and bv.get('max_bytes') == VM_MAX,
         'B\'s ledger holds the entry with the same uuid, min and max', bv)
    t.ok('g' not in a.vms(), 'A\'s ledger released it')
    # The guest was started with --no-deflate-on-oom (not in its entry): B's QEMU must have been
    # started with the same devices and options, or the guest runs on with other features than
    # it negotiated. Only the node's own paths and the incoming migration may differ.
    dst_argv = qemu_argv(b)
    t.ok(src_argv and src_argv == dst_argv, 'B\'s QEMU has the command line A\'s had (the node\'s paths aside)',
         [x for x in set(src_argv or []) ^ set(dst_argv or [])])
    t.ok(qmp_call(os.path.join(b.run, 'g.ppnctl.qmp'), 'qom-get', {'path': '/machine/peripheral/balloon0',
                                                                  'property': 'deflate-on-oom'}) is False,
         '... its balloon has deflate-on-oom off, as on A')
    ch = b.channel()
    t.ok(ch.run('cat /run/marker') == 'marker-in-memory', 'the marker in guest memory is intact')
    t.ok(ch.run('dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 11') == 'marker-disk',
         'the marker on the shared disk reads back in the guest')
    up1 = uptime(ch)
    t.ok(up0 is not None and up1 is not None and up1 > up0, 'no reboot: guest uptime went on (%s -> %s s)' % (up0, up1))
    b_pool1 = {}
    wait_for(lambda: b_pool1.update(b.pool()) or b_pool1['reserved_min_bytes'] != b_pool0['reserved_min_bytes'], 10)
    # Σ min up by the minimum, pool_available unchanged: the lending gave up what the VM holds.
    t.ok(b_pool1['reserved_min_bytes'] - b_pool0['reserved_min_bytes'] == VM_MIN and
         b_pool1['pool_available_bytes'] == b_pool0['pool_available_bytes'],
         'B\'s pool accounts for the VM: its minimum drawn from the lending', (b_pool0, b_pool1))
    t.ok(wait_for(lambda: a_pool0['reserved_min_bytes'] - a.pool()['reserved_min_bytes'] == VM_MIN, 10),
         'A\'s pool released the minimum')
    st = {}
    t.ok(wait_for(lambda: st.update(b.status().get('g', {})) or st.get('actual_bytes'), 20),
         'ppnd on B manages it (balloon actual read over QMP)', st)
    # The balloon moves when asked through B's ppnd: the controller's, from now on.
    b.ctl('balloon', 'g', '300M', '--for', '10m')
    t.ok(wait_for(lambda: abs(b.status().get('g', {}).get('actual_bytes', 0) - 300 * MIB) <= 4 * MIB, 60),
         'ppnd on B balloons it (to 300 MiB)', b.status().get('g'))
    b.ctl('release', 'g')


def qemu_pid(path_part):
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                cmd = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\0')
            except OSError:
                continue
            if cmd and b'qemu' in os.path.basename(cmd[0]) and any(path_part.encode() in c for c in cmd):
                return int(p)
    return None


def qemu_argv(node):
    """The command line of the node's QEMU of g, with the node's folder and the incoming migration's
    own options (-incoming defer, its monitor socket's name) taken out."""
    pid = qemu_pid(node.run + '/g.')
    if pid is None:
        return None
    argv = open('/proc/%d/cmdline' % pid).read().split('\0')[:-1]
    argv = [x.replace(node.dir, 'NODE').replace('.incoming.qmp', '.qmp') for x in argv]
    if '-incoming' in argv:
        i = argv.index('-incoming')
        del argv[i:i + 2]
    return argv


def check_kill(t, a, b, uuid):
    a_pool0 = a.pool()
    p = b.popen('--json', 'move', 'g', '--to', a.id, '--live', '--max-bandwidth', '2M')
    dest = {}
    found = wait_for(lambda: dest.update(pid=qemu_pid(a.run + '/g.')) or dest['pid'], 60)
    t.ok(found and 'g' in a.vms(), 'B -> A: A admitted the VM and started its QEMU (pid %s)' % dest.get('pid'))
    time.sleep(3)   # the migration runs (1 MiB/s)
    if found:
        os.kill(dest['pid'], signal.SIGKILL)
    out, err = p.communicate(timeout=180)
    res = json.loads(out) if out.strip() else {}
    t.ok(p.returncode == 1 and res.get('outcome') == 'aborted', 'the destination QEMU killed mid-migration: the move '
         'is aborted', out + err)
    t.ok(res.get('migration', {}).get('transferred_bytes', 0) > 0, '... it was killed mid-migration (%s bytes sent)'
         % res.get('migration', {}).get('transferred_bytes'))
    t.ok(b.qmp('g', 'query-status').get('status') == 'running', 'the VM still runs on B')
    t.ok(b.vms().get('g', {}).get('uuid') == uuid, '... with its entry in B\'s ledger')
    t.ok(wait_for(lambda: 'g' not in a.vms(), 20), 'A\'s ledger has no entry')
    # ppnd's figures follow its ledger at its next tick (200 ms here).
    t.ok(wait_for(lambda: a.pool() == a_pool0, 10), 'A\'s pool is as before', (a_pool0, a.pool()))
    t.ok(not b.vms()['g'].get('override'), 'B\'s balloon hold for the move is cleared')


def set_timeout(node, value):
    """ppnctl reads [fleet] migration-timeout at each run: the source's limit for one move."""
    with open(node.conf) as f:
        text = f.read()
    old = text[text.index('migration-timeout = '):].split('\n', 1)[0]
    with open(node.conf, 'w') as f:
        f.write(text.replace(old, 'migration-timeout = %s' % value))


def start_failing_move(t, a, b, what, bandwidth='2M'):
    """B -> A, capped; returns (ppnctl, pid of A's incoming QEMU or None) once it runs."""
    p = b.popen('--json', 'move', 'g', '--to', a.id, '--live', '--max-bandwidth', bandwidth)
    dest = {}
    found = wait_for(lambda: dest.update(pid=qemu_pid(a.run + '/g.')) or dest['pid'], 60)
    t.ok(found and 'g' in a.vms(), '%s: A admitted the VM and started its QEMU (pid %s)' % (what, dest.get('pid')))
    return p, dest.get('pid')


def check_aborted(t, a, b, uuid, a_pool0, p, what, want_reason, timeout=180):
    """The move ended aborted with the reason; the VM runs on B only; A holds nothing."""
    out, err = p.communicate(timeout=timeout)
    res = json.loads(out) if out.strip() else {}
    t.ok(p.returncode == 1 and res.get('outcome') == 'aborted' and want_reason in res.get('reason', ''),
         '%s: the move is aborted, with the reason (%r)' % (what, want_reason), out + err)
    t.ok(res.get('migration', {}).get('transferred_bytes', 0) > 0, '... the migration had started (%s bytes sent)'
         % res.get('migration', {}).get('transferred_bytes'))
    t.ok(b.qmp('g', 'query-status').get('status') == 'running', '... the VM still runs on B')
    t.ok(b.vms().get('g', {}).get('uuid') == uuid and not b.vms()['g'].get('override'),
         '... its entry stays in B\'s ledger, the balloon hold cleared')
    t.ok(wait_for(lambda: 'g' not in a.vms(), 30), '... A\'s ledger has no entry')
    t.ok(wait_for(lambda: qemu_pid(a.run + '/g.') is None, 30), '... A\'s incoming QEMU is gone')
    t.ok(wait_for(lambda: a.pool() == a_pool0, 10), '... A\'s pool is as before', (a_pool0, a.pool()))
    return res


def check_timeout(t, a, b, uuid):
    a_pool0 = a.pool()
    set_timeout(b, '10s')
    try:
        p, _ = start_failing_move(t, a, b, 'timeout', '1M')
        check_aborted(t, a, b, uuid, a_pool0, p, 'timeout', 'migration-timeout')
    finally:
        set_timeout(b, '120s')


def iptables(op, port, nports):
    """Drops what goes to or comes from A's migration ports on the loopback (both directions)."""
    rng = '%d:%d' % (port, port + nports - 1)
    ok = True
    for match in ('--dport', '--sport'):
        r = subprocess.run(['iptables', op, 'INPUT', '-i', 'lo', '-p', 'tcp', match, rng, '-j', 'DROP', '-m', 'comment',
                            '--comment', 'ppn-test-live-move-%d' % os.getpid()], capture_output=True, text=True)
        ok = ok and r.returncode == 0
    return ok


def check_cut(t, a, b, uuid):
    what = 'network cut'
    if not shutil.which('iptables') or not iptables('-A', a.mport, 4) or not iptables('-D', a.mport, 4):
        t.skip(what, 'iptables is missing or cannot add rules here (needs CAP_NET_ADMIN)')
        return
    a_pool0 = a.pool()
    p, _ = start_failing_move(t, a, b, what)
    time.sleep(3)   # the stream runs (2 MiB/s)
    cut = iptables('-A', a.mport, 4)
    try:
        t0 = time.monotonic()
        check_aborted(t, a, b, uuid, a_pool0, p, what, 'no migration traffic')
        t.note('the cut was given up on after %.1f s' % (time.monotonic() - t0))
    finally:
        if cut:
            iptables('-D', a.mport, 4)


def check_dest_dies(t, a, b, uuid):
    what = 'A\'s ppnd killed'
    a_pool0 = a.pool()
    journal = os.path.join(os.path.dirname(a.ledger), 'incoming-move')
    p, pid = start_failing_move(t, a, b, what)
    time.sleep(3)
    a.kill(signal.SIGKILL)
    t.ok(pid and os.path.exists('/proc/%d' % pid) and os.path.exists(journal) and 'g' in a.vms(),
         '... its incoming QEMU still runs, the admitted entry and the journal (%s) stay' % journal)
    time.sleep(2)
    t.ok(a.start(), '... ppnd A starts again')
    check_aborted(t, a, b, uuid, a_pool0, p, what, 'ppnd restarted')
    t.ok(not os.path.exists(journal), '... A\'s journal is removed')


def main():
    t = h.Tap()
    if not os.path.exists(os.path.join(GUEST, 'initramfs.gz')):
        print('1..0 # SKIP no test guest in %s (./run builds it)' % GUEST)
        return 0
    etcd = fleet.Etcd()
    nodes = []
    shared = tempfile.mkdtemp(prefix='ppn-shared-')
    try:
        if not t.ok(etcd.start(), 'etcd starts on 127.0.0.1:%d' % etcd.client):
            return t.done()
        a = Node('A', etcd, '4G', h.free_port())
        a.mport = int(open(a.conf).read().split('migration-port = ')[1].split()[0])
        b = Node('B', etcd, '2G', h.free_port() + 100)
        nodes = [a, b]
        stranger_dir = tempfile.mkdtemp(prefix='ppn-stranger-')
        subprocess.run([h.PPNCTL, '--ledger', os.path.join(stranger_dir, 'ledger.db'), 'node', 'init'],
                       capture_output=True, check=True)
        for n in nodes:
            t.ok(n.start(), 'ppnd %s starts' % n.name)
        for n, other in ((a, b), (b, a)):   # the pairing: each confirms the other's fingerprint
            wait_for(lambda: n.ctl('fleet', 'trust', other.id, other.fingerprint, check=False).returncode == 0, 10)
        gid = json.loads(b.ctl('--json', 'lend', a.id, '512M', '--for', '1h').stdout)['id']
        small = json.loads(b.ctl('--json', 'lend', a.id, '128M', '--for', '1h').stdout)['id']
        disk = os.path.join(shared, 'g.img')
        with open(disk, 'wb') as f:
            f.truncate(8 * MIB)
        ctl_sock = 'g.ctl'   # relative: in each node's folder (Node.start)
        args = ['-kernel', GUEST + '/vmlinuz', '-initrd', GUEST + '/initramfs.gz', '-append', 'console=ttyS0 panic=-1',
                '-chardev', 'socket,id=ctl,path=%s,server=on,wait=off' % ctl_sock, '-device', 'virtio-serial-pci',
                '-device', 'virtserialport,chardev=ctl,name=ctl']
        a.ctl('vm', 'add', 'g', '--min', '256M', '--max', '384M', '--disk', disk,
              *[x for arg in args for x in ('--qemu-arg', arg)])
        uuid = a.vms()['g']['uuid']
        a.ctl('start', 'g', '--no-deflate-on-oom')   # an option the entry does not carry (check_move)
        ch = a.channel()
        if not t.ok(ch.wait_ready(), 'the guest boots on A (command channel answers)'):
            return t.done()
        ch.run('echo marker-in-memory > /run/marker')
        ch.run('printf marker-disk | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null')
        check_refusals(t, etcd, a, b, uuid, small, os.path.join(stranger_dir, 'node.key'))
        check_move(t, a, b, gid, uuid, ch)
        check_kill(t, a, b, uuid)
        check_timeout(t, a, b, uuid)
        check_cut(t, a, b, uuid)
        check_dest_dies(t, a, b, uuid)
        b.ctl('stop', 'g', '--timeout', '2s', check=False)
        for n in nodes:
            rc = n.kill(signal.SIGTERM)
            t.ok(rc == 0, 'ppnd %s exits cleanly (status %s)' % (n.name, rc))
        shutil.rmtree(stranger_dir, ignore_errors=True)
    finally:
        for n in nodes:
            n.ctl('stop', 'g', '--timeout', '1s', check=False)
            n.cleanup()
            for d in ('/sys/fs/cgroup/cpu/' + n.cgparent, '/sys/fs/cgroup/' + n.cgparent):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        etcd.cleanup()
        shutil.rmtree(shared, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
