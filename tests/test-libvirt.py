#!/usr/bin/env python3
"""ppnd drives two domains that a real libvirtd runs (TAP).

A libvirtd of the test's own (tests/libvirtd-private.sh: private mount namespace, private
socket) defines and starts two type='qemu' (TCG) domains from XML that boot the test guest with
a virtio balloon (autodeflate, freePageReporting, stats period 1 s). ppnd adopts both by
domain name through [libvirt] uri and must: read their statistics, reclaim idle memory and
never go below a minimum, grow a guest under demand, set the ledger's CPU weight so the kernel
value in the domain's own cgroup means that weight, show them in `ppnctl status`, treat a
`virsh setmem` made by hand as an override lease, notice `virsh destroy` within 1 s, and carry
on after libvirtd restarts. Nothing about libvirt is faked; a libvirtd that cannot start is a
failure with its own words.

Skips (exit 77 after "1..0 # SKIP") when not root or libvirtd/virsh/the test guest are missing.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import BUILD, HERE, MIB, PPNCTL, Node, Tap  # noqa: E402

GUEST = os.environ.get('PPN_GUEST_DIR', os.path.join(BUILD, 'guest'))
TESTVM = os.path.join(BUILD, 'tests', 'guest', 'testvm')
PRIVATE = os.path.join(HERE, 'libvirtd-private.sh')
DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mib}</memory>
  <currentMemory unit='MiB'>{mib}</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest}/vmlinuz</kernel><initrd>{guest}/initramfs.gz</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='{dir}/console.log'/><target port='0'/></serial>
    <channel type='unix'><source mode='bind' path='{dir}/ctl.sock'/><target type='virtio' name='ctl'/></channel>
    <memballoon model='virtio' autodeflate='on' freePageReporting='on'><stats period='1'/></memballoon>
  </devices>
</domain>
"""


def skip(why):
    print('1..0 # SKIP ' + why)
    sys.exit(77)


class Libvirtd:
    """A private libvirtd (and virtlogd) under self.dir; stopped, with its domains, at the end."""

    def __init__(self, top):
        self.dir = os.path.join(top, 'libvirt')
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, 'sock', 'libvirt-sock')
        self.uri = 'qemu+unix:///system?socket=' + self.sock
        self.log = os.path.join(self.dir, 'libvirtd.log')
        self.proc = None

    def start(self, restart=False):
        logf = open(self.log, 'a')
        if restart:
            argv = ['nsenter', '--mount=/proc/%d/ns/mnt' % self.virtlogd_pid(), PRIVATE, self.dir, '--restart']
        else:
            argv = ['unshare', '-m', '--propagation', 'private', PRIVATE, self.dir]
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.proc.poll() is not None:
                return False
            if os.path.exists(self.sock) and self.virsh('version', check=False).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def virtlogd_pid(self):
        with open(os.path.join(self.dir, 'virtlogd.pid')) as f:
            return int(f.read().strip())

    def virsh(self, *args, check=True):
        r = subprocess.run(['virsh', '-c', self.uri] + list(args), capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError('virsh %s: %s' % (' '.join(args), r.stderr.strip()))
        return r

    def stop_daemon(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def qemu_pid(self, name):
        with open(os.path.join(self.dir, 'ns', 'run', 'libvirt', 'qemu', name + '.pid')) as f:
            return int(f.read().strip())

    def log_tail(self, n=15):
        try:
            return '\n'.join(open(self.log).read().splitlines()[-n:])
        except OSError:
            return ''

    def cleanup(self, domains):
        if self.proc and self.proc.poll() is None:
            for d in domains:
                self.virsh('destroy', d, check=False)
        self.stop_daemon()
        try:
            os.kill(self.virtlogd_pid(), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def cpu_group_of(pid):
    """The domain's own cgroup directory for the cpu controller (QEMU's group is its emulator/
    child on v1 and v2 alike), and the file holding the weight there."""
    with open('/proc/%d/cgroup' % pid) as f:
        lines = f.read().splitlines()
    for line in lines:
        _, ctrls, path = line.split(':', 2)
        if 'cpu' in ctrls.split(','):
            return os.path.dirname('/sys/fs/cgroup/cpu' + path), 'cpu.shares'
    for line in lines:
        if line.startswith('0::'):
            return os.path.dirname('/sys/fs/cgroup' + line[3:]), 'cpu.weight'
    return None, None


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def guest_exec(gdir, cmd, timeout=120):
    r = subprocess.run([TESTVM, 'exec', gdir, '--timeout', str(timeout), cmd], capture_output=True, text=True,
                       timeout=timeout + 30)
    return r.returncode, r.stdout + r.stderr


def wait_for(pred, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def main():
    if os.geteuid() != 0:
        skip('needs root (libvirtd, cgroups)')
    for prog in ('libvirtd', 'virtlogd', 'virsh', 'unshare', 'nsenter'):
        if not shutil.which(prog):
            skip('%s not installed (libvirt-daemon-system, libvirt-clients)' % prog)
    if not os.path.exists(os.path.join(GUEST, 'initramfs.gz')) or not os.path.exists(TESTVM):
        skip('no test guest in %s (./run builds it)' % GUEST)

    t = Tap()
    node = Node(tick='500ms', retry_max='1s')
    lv = Libvirtd(node.dir)
    domains = ['g1', 'g2']
    try:
        return run(t, node, lv, domains)
    finally:
        lv.cleanup(domains)
        if os.path.exists(node.log) and t.failed:
            for line in ['ppnd log tail:'] + open(node.log).read().splitlines()[-25:]:
                t.note(line)
        node.cleanup()


def run(t, node, lv, domains):
    if not t.ok(lv.start(), 'a private libvirtd starts (%s)' % lv.uri, lv.log_tail()):
        return t.done()
    # Boot both domains from XML, as an operator would: define, then start.
    for d in domains:
        gdir = os.path.join(node.dir, d)
        os.makedirs(gdir)
        xml = os.path.join(gdir, d + '.xml')
        with open(xml, 'w') as f:
            f.write(DOMAIN_XML.format(name=d, mib=512, guest=os.path.abspath(GUEST), dir=gdir))
        lv.virsh('define', xml)
        lv.virsh('start', d)
    for d in domains:
        gdir = os.path.join(node.dir, d)
        with open(os.path.join(gdir, 'ready'), 'w') as f:
            f.write('pid %d\n' % lv.qemu_pid(d))
        rc, out = guest_exec(gdir, 'echo up', timeout=90)
        if not t.ok(rc == 0 and 'up' in out, 'domain %s boots the test guest' % d, out):
            return t.done()

    # Import: both domains proposed from what libvirt reports (libvirt's default cpu_shares is
    # the kernel default, i.e. ledger weight 100 on either cgroup version).
    r = node.ctl('vm', 'import-libvirt', '--uri', lv.uri, '--json', check=False)
    try:
        props = {p['domain']: p for p in json.loads(r.stdout)}
    except ValueError:
        props = {}
    t.ok(sorted(props) == domains and all(p['max_bytes'] == 512 * MIB and p['min_bytes'] == 256 * MIB and
                                          p['cpu_weight'] == 100 and p['name'] == d for d, p in props.items()),
         'ppnctl vm import-libvirt proposes both domains (max 512M, min 256M, weight 100)', r.stdout + r.stderr)
    scratch = dict(os.environ, PPN_LEDGER=os.path.join(node.dir, 'import.db'), PPN_SOCKET=node.sock)
    subprocess.run([PPNCTL, 'node', 'set', 'physical=4G'], env=scratch, capture_output=True)
    r = subprocess.run([PPNCTL, 'vm', 'import-libvirt', '--uri', lv.uri, '--apply'], env=scratch, capture_output=True,
                       text=True)
    shown = subprocess.run([PPNCTL, 'vm', 'show', 'g2', '--json'], env=scratch, capture_output=True, text=True)
    t.ok(r.returncode == 0 and '"libvirt": "g2"' in shown.stdout.replace('":"', '": "'),
         'import-libvirt --apply adds entries that name their domain', r.stdout + r.stderr + shown.stdout)

    # The ledger: capacity 896 MiB for Σ max 1 GiB, so idle memory must be reclaimed.
    node.ctl('node', 'set', 'physical=1G', 'reserve=128M')
    node.ctl('vm', 'add', 'g1', '--min', '192M', '--max', '512M', '--cpu-weight', '300', '--libvirt', 'g1')
    node.ctl('vm', 'add', 'g2', '--min', '192M', '--max', '512M', '--cpu-weight', '50')
    r = node.ctl('adopt', 'g2', '--libvirt', 'g2')
    t.ok('libvirt domain' in r.stdout, 'ppnctl adopt g2 --libvirt g2', r.stdout + r.stderr)
    text = open(node.conf).read().replace('[controller]\n', '[controller]\noverride-default = 30s\n', 1)
    with open(node.conf, 'w') as f:
        f.write(text + '[libvirt]\nuri = %s\n' % lv.uri)
    if not t.ok(node.start(), 'ppnd starts'):
        return t.done()

    def running_with_stats():
        st = node.status()
        return all(st[d]['state'] == 'running' and st[d].get('guest_available_bytes') is not None
                   for d in domains) and st
    st = wait_for(running_with_stats, 30)
    t.ok(bool(st), 'ppnd adopts both domains and reads their guest statistics',
         json.dumps(node.status(), indent=1))
    if not st:
        return t.done()

    # CPU weight: the kernel's value in the domain's own cgroup means the ledger's weight.
    for d, weight in (('g1', 300), ('g2', 50)):
        group, fname = cpu_group_of(lv.qemu_pid(d))
        want = weight if fname == 'cpu.weight' else round(weight * 1024 / 100)
        got = wait_for(lambda: read_int(os.path.join(group, fname)) == want and want, 10)
        t.ok(bool(got), '%s: %s/%s = %d for ledger weight %d' % (d, group, fname, want, weight),
             'read %s' % read_int(os.path.join(group, fname)))
    node.ctl('vm', 'set', 'g1', 'cpu-weight=500')
    group, fname = cpu_group_of(lv.qemu_pid('g1'))
    want = 500 if fname == 'cpu.weight' else 5120
    t.ok(bool(wait_for(lambda: read_int(os.path.join(group, fname)) == want, 5)),
         'a live weight change (300 -> 500) reaches the kernel: %s = %d' % (fname, want),
         'read %s' % read_int(os.path.join(group, fname)))

    # Reclaim idle memory until the pool fits (Σ actual within the 896 MiB capacity, each at most
    # its 448 MiB share + 16), never below the minimum (sampled every 200 ms meanwhile).
    below = []

    def reclaimed():
        st = node.status()
        for d in domains:
            a, tg = st[d].get('actual_bytes'), st[d].get('target_bytes')
            if (a is not None and a + MIB < 192 * MIB) or (tg is not None and tg < 192 * MIB):
                below.append((d, a, tg))
        acts = [st[d].get('actual_bytes') or 1 << 40 for d in domains]
        return sum(acts) <= 896 * MIB + 16 * MIB and max(acts) <= 464 * MIB and st
    st = wait_for(reclaimed, 90)
    t.ok(bool(st), 'idle memory reclaimed from both domains until the pool fits (Σ actual <= 896 MiB of 1 GiB)',
         json.dumps(node.status(), indent=1))
    t.ok(not below, 'no domain below its 192 MiB minimum meanwhile', repr(below[:5]))
    if st:
        t.note('after reclaim: ' + ', '.join('%s actual %d MiB' % (d, st[d]['actual_bytes'] // MIB) for d in domains))
    dommem = lv.virsh('dommemstat', 'g1').stdout
    m = re.search(r'^actual (\d+)', dommem, re.M)
    t.ok(m and abs(int(m.group(1)) * 1024 - node.status()['g1']['actual_bytes']) <= 64 * MIB,
         'libvirt reports the same balloon size as ppnctl status (virsh dommemstat)', dommem)

    # Grow under demand: a 300 MiB working set in g2.
    before = node.status()['g2']['target_bytes']
    rc, out = guest_exec(os.path.join(node.dir, 'g2'), 'guest-work hog h1 300', timeout=180)
    t.ok(rc == 0, 'a 300 MiB working set in g2 completes', out)
    grown = wait_for(lambda: node.status()['g2']['target_bytes'] >= before + 32 * MIB and node.status(), 30)
    t.ok(bool(grown), 'ppnd grows g2 under demand (target %d MiB before)' % (before // MIB),
         json.dumps(node.status()['g2'], indent=1))
    guest_exec(os.path.join(node.dir, 'g2'), 'guest-work free h1', timeout=60)

    # A `virsh setmem` by hand is an override lease, not something to fight.
    lv.virsh('setmem', 'g1', '300M', '--live')

    def overridden():
        s = node.status()['g1']
        return s.get('override_left_usec', 0) > 0 and s
    s = wait_for(overridden, 10)
    t.ok(bool(s), 'virsh setmem g1 300M becomes an override lease', json.dumps(node.status()['g1'], indent=1))
    # The lease follows the balloon while it moves (TCG deflates slowly), then holds.
    s = wait_for(lambda: (lambda x: x['target_bytes'] == x['actual_bytes'] and
                          abs(x['actual_bytes'] - 300 * MIB) <= 16 * MIB and x)(node.status()['g1']), 20)
    t.ok(bool(s), 'ppnd follows g1 to the hand-set 300 MiB and holds it there', json.dumps(node.status()['g1'], indent=1))
    time.sleep(2)
    s = node.status()['g1']
    t.ok(abs(s['actual_bytes'] - 300 * MIB) <= 16 * MIB and s['override_left_usec'] > 0,
         'still held 2 s later, lease running', json.dumps(s, indent=1))
    ev, _ = node.request('events', limit=200)
    t.ok(any(e['vm'] == 'g1' and 'override' in e['kind'] + e['reason'] for e in ev['events']),
         'the override is in the event log', json.dumps([e for e in ev['events'] if e['vm'] == 'g1'][-5:], indent=1))

    # virsh destroy is noticed within 1 s.
    t0 = time.monotonic()
    lv.virsh('destroy', 'g2')
    t_cmd = time.monotonic()
    gone = wait_for(lambda: node.status()['g2']['state'] != 'running', 5, step=0.02)
    dt = time.monotonic() - t_cmd
    t.ok(bool(gone) and dt <= 1.0, 'virsh destroy g2 noticed %.0f ms after virsh returned (limit 1000)' % (dt * 1000),
         json.dumps(node.status()['g2'], indent=1))
    t.note('virsh destroy itself took %.0f ms' % ((t_cmd - t0) * 1000))

    # libvirtd frozen (SIGSTOP): every libvirt call would hang, but they run on ppnd's libvirt
    # thread, so its loop keeps answering; after 10 s without an answer its domains are held.
    os.kill(lv.proc.pid, signal.SIGSTOP)
    try:
        # A balloon set queued behind the hung call: after the thaw it runs right after that call
        # and posts no reply when it succeeds, which once left g1 held until libvirtd stopped. That
        # was a race this test hits only sometimes (without the fix: 1 failure in 8 runs here).
        node.ctl('balloon', 'g1', '320M', '--for', '1m')
        slowest, t_end = 0.0, time.monotonic() + 4
        while time.monotonic() < t_end:
            _, dt = node.request('status', timeout=5)
            slowest = max(slowest, dt)
            time.sleep(0.1)
        t.ok(slowest < 0.5, 'libvirtd frozen: ppnd still answers within 0.5 s (slowest %.0f ms over 4 s)'
             % (slowest * 1000))
        dropped = wait_for(lambda: node.status()['g1']['state'] != 'running' and node.status(), 20)
        t.ok(bool(dropped), 'a libvirtd that does not answer for 10 s: g1 shown absent (held)',
             json.dumps(node.status()['g1'], indent=1))
    finally:
        os.kill(lv.proc.pid, signal.SIGCONT)
    # Thawed, the hung call returns and ppnd looks its domains up again at once.
    t_thaw = time.monotonic()
    back = wait_for(lambda: node.status()['g1']['state'] == 'running' and node.status(), 20, step=0.05)
    t.ok(bool(back), 'libvirtd thawed: g1 running again within 20 s', json.dumps(node.status()['g1'], indent=1))
    t.note('g1 running again %.2f s after SIGCONT' % (time.monotonic() - t_thaw))
    r = lv.virsh('version', check=False)
    t.ok(r.returncode == 0, 'libvirtd thawed answers virsh', r.stderr)

    # libvirtd restarted: ppnd reconnects and carries on (g1 keeps running throughout).
    lv.stop_daemon()
    t.ok(bool(wait_for(lambda: node.status()['g1']['state'] != 'running', 10, step=0.05)),
         'libvirtd stopped: g1 shown absent', json.dumps(node.status()['g1'], indent=1))
    ok = lv.start(restart=True)
    t.ok(ok, 'libvirtd restarted', lv.log_tail())
    back = wait_for(lambda: node.status()['g1']['state'] == 'running' and node.status(), 20)
    t.ok(bool(back), 'ppnd reconnects: g1 running again', json.dumps(node.status()['g1'], indent=1))
    # Carries on: an operator lease is carried out through the new connection.
    node.ctl('balloon', 'g1', '256M', '--for', '1m')
    moved = wait_for(lambda: abs(node.status()['g1']['actual_bytes'] - 256 * MIB) <= 8 * MIB and node.status(), 30)
    t.ok(bool(moved), 'after the restart ppnd still moves the balloon through libvirt (ppnctl balloon g1 256M)',
         json.dumps(node.status()['g1'], indent=1))
    node.ctl('release', 'g1')
    r = node.ctl('stop', 'g1', check=False)
    t.ok(r.returncode == 1 and "is libvirt domain 'g1'" in r.stderr and lv.virsh('domstate', 'g1').stdout.strip() == 'running',
         'ppnctl stop refuses a libvirt domain (virsh is its tool); the domain keeps running', r.stderr)
    r = node.ctl('status')
    t.ok('g1' in r.stdout and 'g2' in r.stdout, 'ppnctl status lists both libvirt VMs', r.stdout)
    for line in r.stdout.splitlines():
        t.note(line)

    rc = node.kill(signal.SIGTERM)
    t.ok(rc == 0, 'ppnd exits cleanly (status %s)' % rc)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
