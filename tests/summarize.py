#!/usr/bin/env python3
"""Counts test cases across meson test logs and prints the final 'N passed, N failed' line.

TAP programs count one per case ("ok"/"not ok", "# SKIP"); other tests count as one.
A TAP program that crashed or timed out after its last "ok" counts one extra failure, so a
crash can never hide behind earlier passes.
Usage: summarize.py LABEL=BUILDDIR/meson-logs/testlog.json ...
"""
import json
import re
import sys

TAP = re.compile(r'^(not ok|ok)\b(.*)$')


def count(record):
    passed = failed = skipped = 0
    failures = []
    for line in (record.get('stdout') or '').splitlines():
        m = TAP.match(line)
        if not m:
            continue
        if re.search(r'#\s*skip', m.group(2), re.I):
            skipped += 1
        elif m.group(1) == 'ok':
            passed += 1
        else:
            failed += 1
            failures.append(m.group(2).strip())
    ok = record['result'] in ('OK', 'EXPECTEDFAIL', 'SKIP')
    if passed + failed + skipped == 0:
        if record['result'] == 'SKIP':
            skipped = 1
        elif ok:
            passed = 1
        else:
            failed = 1
    elif not ok and failed == 0:
        failed = 1
        failures.append('(%s: %s after the last case)' % (record['name'], record['result']))
    return passed, failed, skipped, failures


def main():
    tp = tf = ts = 0
    for arg in sys.argv[1:]:
        label, path = arg.split('=', 1)
        try:
            lines = open(path).read().splitlines()
        except OSError:
            print('%s: no test log at %s (the build or test run did not happen)' % (label, path))
            tf += 1
            continue
        for line in lines:
            rec = json.loads(line)
            p, f, s, fails = count(rec)
            tp, tf, ts = tp + p, tf + f, ts + s
            for what in fails:
                print('FAILED [%s] %s: %s' % (label, rec['name'], what))
    out = '%d passed, %d failed' % (tp, tf)
    if ts:
        out += ', %d skipped' % ts
    print(out)
    return 1 if tf else 0


if __name__ == '__main__':
    sys.exit(main())
