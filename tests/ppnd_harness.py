"""Shared by the ppnd fault tests: a temporary node (ledger, config, fake QEMUs) and ppnd on it.

Everything lives in one temporary folder that is removed at the end; every process started
here is killed by its pid at the end, also when a check fails.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

MIB = 1 << 20
GIB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get('PPN_BUILD_ROOT', os.path.join(HERE, '..', 'build'))
PPND = os.path.join(BUILD, 'src', 'ppnd')
PPNCTL = os.path.join(BUILD, 'src', 'ppnctl')
FAKE = os.path.join(BUILD, 'tests', 'fake-qemu')

# The fake QEMU's behaviours by the names the tests use (tests/fake-qemu.h): a monitor that
# misbehaves, or a guest whose statistics lie; the balloon follows a target at once.
MODES = {
    'good': ['--monitor', 'good'],
    'silent': ['--monitor', 'silent'],
    'half': ['--monitor', 'half'],
    'stall': ['--monitor', 'stall'],
    'flood': ['--monitor', 'flood'],
    'hostile': ['--monitor', 'good', '--stats', 'hostile'],
}


class Tap:
    """TAP output: one line per check; the plan at the end."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, what, detail=''):
        self.n += 1
        print('%s %d - %s' % ('ok' if cond else 'not ok', self.n, what), flush=True)
        if detail:
            for line in str(detail).splitlines():
                print('# ' + line, flush=True)
        if not cond:
            self.failed += 1
        return cond

    def skip(self, what, why):
        """A case whose precondition the run could not establish: counted as skipped, not passed."""
        self.n += 1
        print('ok %d - %s # SKIP %s' % (self.n, what, why), flush=True)

    def note(self, text):
        print('# ' + text, flush=True)

    def done(self):
        print('1..%d' % self.n, flush=True)
        return 1 if self.failed else 0


class Node:
    def __init__(self, tick='200ms', retry_max='1s', control_group='', open_dirs=False):
        self.dir = tempfile.mkdtemp(prefix='ppn-faults-')
        self.run = os.path.join(self.dir, 'run')
        os.makedirs(self.run)
        if open_dirs:
            # Access tests: folders anyone may traverse, so only the files' own modes and
            # ppnd's peer check stand between another user and the ledger or socket.
            os.chmod(self.dir, 0o755)
            os.chmod(self.run, 0o755)
        self.ledger = os.path.join(self.dir, 'ledger.db')
        self.sock = os.path.join(self.run, 'ppnd.sock')
        self.conf = os.path.join(self.dir, 'ppnd.conf')
        self.log = os.path.join(self.dir, 'ppnd.log')
        self.fakes = {}
        self.ppnd = None
        # An empty folder as the cgroup root: placement fails (reported in status) and the
        # fake QEMUs, which are this test's own children, stay in the test's cgroup.
        os.makedirs(os.path.join(self.dir, 'cgroup'))
        with open(self.conf, 'w') as f:
            f.write('[daemon]\nlog-level = info\nruntime-dir = %s\n[ledger]\npath = %s\n'
                    '[control]\nsocket = %s\ngroup = %s\n[cgroup]\nroot = %s\n'
                    '[controller]\ntick = %s\nqmp-retry-max = %s\n'
                    % (self.run, self.ledger, self.sock, control_group,
                       os.path.join(self.dir, 'cgroup'), tick, retry_max))

    def ctl(self, *args, check=True, user=None):
        """ppnctl as root, or as `user` (a name: its uid, primary and supplementary groups)."""
        env = dict(os.environ, PPN_LEDGER=self.ledger, PPN_SOCKET=self.sock)
        prefix = ['setpriv', '--reuid=' + user, '--regid=' + user, '--init-groups'] if user else []
        r = subprocess.run(prefix + [PPNCTL] + list(args), env=env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError('ppnctl %s: %s' % (' '.join(args), r.stderr.strip()))
        return r

    def add_vm(self, name, mode, min_='512M', max_='2G', demand_flip=False, **fake_args):
        """A VM in the ledger and its QEMU: the fake (tests/fake-qemu.c) in `mode` (MODES),
        a guest of max_ whose balloon follows at once; fake_args are its options (available,
        answer, hostile_period, outside_balloon; True for a flag such as flip_odd); demand_flip:
        pressure and idle alternate every second."""
        path = os.path.join(self.run, name + '.qmp')
        log = os.path.join(self.dir, name + '.log')
        self.ctl('vm', 'add', name, '--min', min_, '--max', max_, '--qmp', path)
        argv = [FAKE, '--socket', path, '--log', log, '--max', str(parse_size(max_)),
                '--balloon', 'instant', '--stats', 'available'] + MODES[mode]
        if demand_flip:
            argv += ['--stats', 'flip']
        for k, v in fake_args.items():
            argv += ['--' + k.replace('_', '-')] + ([] if v is True else [str(v)])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        self.fakes[name] = (p, log)
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.02)

    def calm_host(self, controller='', policy=''):
        """A calm host of 8 GiB (1 GiB reserve): plenty of host memory and no pressure, read from
        files here instead of the machine's, so that no VM is shrunk for the node. controller
        and policy: more lines for those sections of the config."""
        with open(os.path.join(self.dir, 'meminfo'), 'w') as f:
            f.write('MemTotal: 33554432 kB\nMemFree: 30000000 kB\nMemAvailable: 31000000 kB\n')
        with open(self.conf, 'a') as f:      # the config ends in [controller]
            f.write('%s[policy]\n%shost-low-percent = 0\n%s' % (controller, policy, self._host_files()))
        self.ctl('node', 'set', 'physical=8G', 'reserve=1G')

    def _host_files(self):
        """Writes a pressure file with no pressure; returns the [host] lines naming it and the
        meminfo file here (which the caller writes)."""
        with open(os.path.join(self.dir, 'pressure'), 'w') as f:
            f.write('some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n'
                    'full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n')
        return '[host]\nmeminfo = %s/meminfo\npressure = %s/pressure\n' % (self.dir, self.dir)

    def file_host(self, available, vmstat=False, policy=''):
        """A host of 8 GiB (1 GiB reserve; low mark 5 %, 409.6 MiB) read from files here, not the
        machine's: its MemAvailable `available` bytes (write_meminfo() changes it), no pressure,
        and with vmstat a static allocation counter, a host that allocates nothing. policy: lines
        for [policy]."""
        self.write_meminfo(available)
        lines = self._host_files()
        if vmstat:
            with open(os.path.join(self.dir, 'vmstat'), 'w') as f:
                f.write('pgalloc_dma 0\npgalloc_dma32 1000\npgalloc_normal 500000\npgalloc_movable 0\n')
            lines += 'vmstat = %s/vmstat\n' % self.dir
        with open(self.conf, 'a') as f:      # the config ends in [controller]
            f.write(lines + ('[policy]\n' + policy if policy else ''))
        self.ctl('node', 'set', 'physical=8G', 'reserve=1G')

    def write_meminfo(self, available):
        """The file host's meminfo: 8 GiB, `available` bytes available (a new file renamed over
        it, so ppnd never reads half of one)."""
        path = os.path.join(self.dir, 'meminfo')
        with open(path + '.new', 'w') as f:
            f.write('MemTotal: %d kB\nMemFree: %d kB\nMemAvailable: %d kB\n'
                    % (8 * GIB // 1024, available // 1024, available // 1024))
        os.replace(path + '.new', path)

    def wait_running(self, n, timeout=10):
        """Whether all n VMs are adopted and running within timeout seconds."""
        return wait_for(lambda: [v.get('state') for v in self.status().values()] == ['running'] * n, timeout)

    def events(self):
        """ppnd's events, oldest first (ppnctl events --json: one object per line)."""
        return [json.loads(line) for line in self.ctl('events', '--json').stdout.splitlines() if line]

    def fake_log(self, name):
        try:
            return open(self.fakes[name][1]).read().splitlines()
        except FileNotFoundError:
            return []

    def poll_logs(self, seen, t0):
        """Appends to seen[name] each new line of that fake's log, with the time it is first seen
        here (s since t0): (at, line). Called every few tens of ms, the times are as fine."""
        now = time.monotonic() - t0
        for name, got in seen.items():
            got += [(now, line) for line in self.fake_log(name)[len(got):]]

    def targets(self, name):
        return [int(l.split()[1]) for l in self.fake_log(name) if l.startswith('target ')]

    def start(self):
        self.logf = open(self.log, 'a')
        # PPN_PPND_WRAP: a command ppnd runs under, e.g. setpriv with the unit's capabilities
        # (docs/operations.md, "Privileges").
        wrap = os.environ.get('PPN_PPND_WRAP', '').split()
        self.ppnd = subprocess.Popen(wrap + [PPND, '--config', self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.request('ping', quiet=True):
                return True
            time.sleep(0.025)
        return False

    def kill(self, sig=signal.SIGKILL):
        """Signals ppnd and waits for it; returns its exit status (None if not running).
        Under ASan a leak or error report at exit makes the status non-zero."""
        rc = None
        if self.ppnd and self.ppnd.poll() is None:
            self.ppnd.send_signal(sig)
            rc = self.ppnd.wait(timeout=10)
        self.ppnd = None
        return rc

    def request(self, name, quiet=False, timeout=2.0, raw=None, **args):
        """One control request (or the raw bytes given); returns (reply, seconds), or None if
        ppnd did not answer and quiet."""
        req = dict(args, request=name)
        t0 = time.monotonic()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(self.sock)
                s.sendall(raw if raw is not None else (json.dumps(req) + '\n').encode())
                buf = b''
                while not buf.endswith(b'\n'):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            return json.loads(buf), time.monotonic() - t0
        except (OSError, ValueError):
            if not quiet:
                raise
            return None

    def status(self):
        reply, _ = self.request('status')
        return {v['name']: v for v in reply['vms']}

    def sanitized(self):
        """ppnd runs under ASan (build-asan): timings and memory are not the release build's."""
        return 'libasan' in self.proc('maps')

    def proc(self, what):
        with open('/proc/%d/%s' % (self.ppnd.pid, what)) as f:
            return f.read()

    def cleanup(self):
        self.kill(signal.SIGTERM)
        for p, _ in self.fakes.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get('PPN_KEEP_DIR'):
            print('# kept %s' % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def free_port():
    """A TCP port on 127.0.0.1 free a moment ago (for a daemon's metrics or etcd's listeners)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, step=0.1):
    """cond()'s first true value within timeout seconds, polled every step; else its last."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def parse_size(s):
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)
