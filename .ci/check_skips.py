"""CI guard: fail when tests were skipped beyond what is allowed.

A skip hides a test. Only hardware or platform that may truly be absent may skip (a GPU, native
bfloat16, glibc), and only as many tests as `.ci/run` says. Reads pytest's JUnit XML report.

    python .ci/check_skips.py REPORT.xml --max N --allowed "hardware:" --allowed "platform:"
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report")
    parser.add_argument("--max", type=int, required=True, help="most skipped tests allowed")
    parser.add_argument("--allowed", action="append", default=[], help="a skip reason must start so")
    args = parser.parse_args()
    skipped = []
    for case in ET.parse(args.report).getroot().iter("testcase"):
        for skip in case.findall("skipped"):
            reason = (skip.get("message") or "").removeprefix("Skipped: ")
            skipped.append((f"{case.get('classname')}::{case.get('name')}", reason))
    bad = [(test, reason) for test, reason in skipped if not reason.startswith(tuple(args.allowed))]
    for test, reason in skipped:
        print(f"skipped: {test}: {reason}")
    if bad:
        print(f"CI guard: {len(bad)} test(s) skipped for a reason not allowed in .ci/run", file=sys.stderr)
        return 1
    if len(skipped) > args.max:
        print(
            f"CI guard: {len(skipped)} tests skipped, more than the {args.max} .ci/run allows",
            file=sys.stderr,
        )
        return 1
    print(f"CI guard: {len(skipped)} skipped (at most {args.max}), every reason allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
