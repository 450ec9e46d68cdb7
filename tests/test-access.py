#!/usr/bin/env python3
"""Access control of ppnd's control socket and of the ledger, with real users (TAP; root).

The test creates a group and two real unprivileged users with groupadd/useradd (removed at
the end): a member of the group configured as ppnd's [control] group, and an outsider. The
folders are opened to everyone (0755) so that only the files' modes and ppnd's own peer check
protect anything.

Proven: the socket is 0660 root:GROUP and the ledger, -wal and -shm give nothing to others;
the outsider can neither read (status, events, pool, vm list, ledger export, history) nor
change anything (vm set, vm remove, balloon, node set, ledger import), each refused with exit 1
and a reason, and the ledger is byte-for-byte the same export with no audit row of the
outsider; with the socket file opened to everyone (0666), ppnd itself still refuses the
outsider by its peer credentials (SO_PEERCRED) and logs it; the member can use status but not
the release request (root only).
Requests that are oversized or malformed get an {"error": ...} reply and are logged; a peer
refused 40 times in a row does not flood the log (at most 10 notices per 10 s).
"""
import json
import os
import random
import socket
import stat
import subprocess
import sys
import grp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppnd_harness import Node, Tap  # noqa: E402


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def raw_as(user, node, data):
    """Connects to the control socket as `user` (a child with its uid and groups) and sends
    data; returns what it read, or 'connect: ERRNO' if the connection itself was refused.
    A refused peer may be answered and closed before its request is written: the answer is
    still read."""
    code = ('import socket,sys\n'
            's=socket.socket(socket.AF_UNIX)\n'
            'try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n print("connect:",e.strerror);sys.exit()\n'
            'try:\n s.sendall(sys.argv[2].encode())\nexcept OSError:\n pass\n'
            's.settimeout(2)\n'
            'b=b""\n'
            'while not b.endswith(b"\\n"):\n c=s.recv(4096)\n if not c: break\n b+=c\n'
            'print(b.decode().strip())\n')
    r = subprocess.run(['setpriv', '--reuid=' + user, '--regid=' + user, '--init-groups',
                        sys.executable, '-c', code, node.sock, data],
                       capture_output=True, text=True)
    return r.stdout.strip() + r.stderr.strip()


def main():
    t = Tap()
    if os.geteuid() != 0:
        print('1..0 # SKIP needs root (creates users)')
        return 0
    tag = '%04x' % random.randrange(1 << 16)
    group, member, outsider = 'ppnt-ctl-' + tag, 'ppnt-in-' + tag, 'ppnt-out-' + tag
    sh('groupadd', group)
    sh('useradd', '-M', '-U', '-s', '/usr/sbin/nologin', '-G', group, member)
    sh('useradd', '-M', '-U', '-s', '/usr/sbin/nologin', outsider)
    node = Node(control_group=group, open_dirs=True)
    try:
        node.ctl('node', 'set', 'physical=8G', 'reserve=1G')
        # A running VM for the requests to act on: the fake QEMU (tests/fake-qemu.c) stands in
        # for it, as what is tested is the socket and the ledger, not a guest.
        node.add_vm('web', 'good')
        if not t.ok(node.start(), 'ppnd starts with [control] group = %s' % group):
            return t.done()
        export0 = node.ctl('ledger', 'export').stdout
        audit0 = node.ctl('ledger', 'history').stdout

        st = os.stat(node.sock)
        t.ok(stat.S_IMODE(st.st_mode) == 0o660 and grp.getgrgid(st.st_gid).gr_name == group,
             'control socket is 0660 root:%s' % group,
             'mode %o group %s' % (stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name))
        modes = {}
        for suffix in ('', '-wal', '-shm'):
            p = node.ledger + suffix
            if os.path.exists(p):
                modes[os.path.basename(p)] = stat.S_IMODE(os.stat(p).st_mode)
        t.ok(modes and all(m & 0o007 == 0 for m in modes.values()),
             'ledger files give nothing to other users',
             ', '.join('%s %o' % kv for kv in sorted(modes.items())))

        reads = [['status'], ['events'], ['pool'], ['vm', 'list'], ['vm', 'show', 'web'],
                 ['node', 'show'], ['ledger', 'export'], ['ledger', 'history']]
        imp = os.path.join(node.dir, 'import.json')
        with open(imp, 'w') as f:
            f.write(export0)
        os.chmod(imp, 0o644)
        writes = [['vm', 'set', 'web', 'min=1G'], ['vm', 'remove', 'web'],
                  ['vm', 'add', 'evil', '--min', '512M', '--max', '1G'],
                  ['balloon', 'web', '600M'], ['release', 'web'], ['node', 'set', 'reserve=2G'],
                  ['ledger', 'import', imp, '--replace']]
        for argv in reads + writes:
            r = node.ctl(*argv, check=False, user=outsider)
            t.ok(r.returncode == 1 and r.stderr.strip() != '',
                 'outsider: ppnctl %s -> refused (exit 1, with a reason)' % ' '.join(argv),
                 'exit %d: %s' % (r.returncode, (r.stderr.strip() or r.stdout.strip())[:300]))
        t.ok(node.ctl('ledger', 'export').stdout == export0, 'the ledger is unchanged')
        t.ok(node.ctl('ledger', 'history').stdout == audit0, 'no audit row was added')
        reply = raw_as(outsider, node, '{"request": "status"}\n')
        t.ok(reply.startswith('connect:') and 'denied' in reply.lower(),
             'outsider: connecting to the socket is refused by its mode', reply[:200])

        os.chmod(node.sock, 0o666)
        reply = raw_as(outsider, node, '{"request": "status"}\n')
        t.ok('"error"' in reply and 'permission denied' in reply and '"vms"' not in reply,
             'outsider, socket opened to everyone: ppnd refuses by peer credentials', reply[:200])
        uid = int(subprocess.run(['id', '-u', outsider], capture_output=True, text=True).stdout)
        t.ok('refused uid %d' % uid in open(node.log).read(), 'and logs the refused uid')
        reply = raw_as(member, node, '{"request": "status"}\n')
        t.ok('"vms"' in reply and '"error"' not in reply, 'member of %s: status answered' % group,
             reply[:200])
        os.chmod(node.sock, 0o660)
        r = node.ctl('status', check=False, user=member)
        t.ok(r.returncode == 0, 'member: ppnctl status exit 0', r.stderr.strip()[:200])
        # The one request that changes something is root's, as the ledger is.
        reply = raw_as(member, node, '{"request": "release", "vm": "web"}\n')
        t.ok('only root may end an override' in reply and '"released"' not in reply,
             'member: the release request is refused', reply[:200])

        big, _ = node.request('status', raw=b'{"request": "status", "pad": "' + b'x' * 8192 + b'"}\n')
        t.ok('error' in big and 'too large' in big['error'], 'an oversized request: error reply',
             json.dumps(big)[:200])
        for bad in (b'{"request": \n', b'not json at all\n', b'[1, 2]\n', b'{"request": 42}\n',
                    b'{"request": "no-such-request"}\n', b'{"request": "status"} {"x": 1}\n'):
            reply, _ = node.request('status', raw=bad)
            t.ok('error' in reply and reply['error'], 'a malformed request %r: error reply' % bad,
                 json.dumps(reply)[:200])
        _, dt = node.request('ping')
        t.ok(True, 'ppnd still answers after the bad requests (%.1f ms)' % (dt * 1e3))
        log = [l for l in open(node.log).read().splitlines() if 'control:' in l]
        t.ok(any('too large' in l for l in log), 'the oversized request is logged',
             '\n'.join(log[-3:]))
        log = '\n'.join(log)
        t.ok('not one JSON object' in log or 'request must be' in log,
             'the malformed requests are logged')

        # An outsider connecting in a loop: every attempt refused, the log not flooded.
        os.chmod(node.sock, 0o666)
        loop = ('import socket,sys\n'
                'n=0\n'
                'for i in range(40):\n'
                ' s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);s.settimeout(2)\n'
                ' n+=b"permission denied" in s.recv(4096);s.close()\n'
                'print(n)\n')
        r = subprocess.run(['setpriv', '--reuid=' + outsider, '--regid=' + outsider,
                            '--init-groups', sys.executable, '-c', loop, node.sock],
                           capture_output=True, text=True)
        os.chmod(node.sock, 0o660)
        t.ok(r.stdout.strip() == '40', 'outsider connecting 40 times in a row: refused 40 times',
             r.stdout.strip() + r.stderr.strip()[-300:])
        node.request('ping')
        refusals = open(node.log).read().count('refused uid %d' % uid)
        t.ok(refusals <= 10, 'and the log is not flooded (%d of 41 refusals logged, at most 10 '
             'notices per 10 s)' % refusals)
    finally:
        node.cleanup()
        for u in (member, outsider):
            subprocess.run(['userdel', u], capture_output=True)
        subprocess.run(['groupdel', group], capture_output=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
