#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""Reads a `udc-vm test --ktap` document with the kernel's own KTAP parser
(tools/testing/kunit/kunit.py parse) and checks that the parser finds what
the document's `# Totals:` line says: every case, none lost, no parse error.

    scripts/ktap-check.py KUNIT_PY FILE.ktap
"""
import json
import re
import subprocess
import sys
import tempfile


def statuses(group):
    for case in group.get("test_cases", []):
        yield case["status"]
    for sub in group.get("sub_groups", []):
        yield from statuses(sub)


def main():
    kunit, ktap = sys.argv[1], sys.argv[2]
    text = open(ktap, encoding="utf-8").read()
    m = re.search(r"^# Totals: pass:(\d+) fail:(\d+) xfail:\d+ xpass:\d+ skip:(\d+) error:(\d+)$", text, re.M)
    if not m:
        sys.exit(f"{ktap}: no kselftest '# Totals:' line")
    want = {"PASS": int(m[1]), "FAIL": int(m[2]) + int(m[4]), "SKIP": int(m[3])}
    with tempfile.NamedTemporaryFile(suffix=".json") as js:
        out = subprocess.run([sys.executable, kunit, "parse", f"--json={js.name}", ktap],
                             capture_output=True, text=True)
        errors = [l for l in out.stdout.splitlines() if "[ERROR]" in l or "Could not find" in l]
        if errors:
            sys.exit(f"{ktap}: kunit.py parse reports:\n" + "\n".join(errors))
        got = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        for s in statuses(json.load(open(js.name))):
            got[s] = got.get(s, 0) + 1
    print(f"ktap: {ktap}: kunit.py parse finds {got}, the document's totals say {want}")
    if got != want or sum(want.values()) == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
