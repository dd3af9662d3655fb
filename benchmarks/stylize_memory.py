"""Peak memory of `stylize` on the CPU: the model (facestyle/style/memory.py) against measured peaks.

Each case runs in a child process (a fresh heap, as the CLI has): the real :func:`stylize` on the
shared tubingen photo and Starry Night, inside :func:`facestyle.heap.retained_heap` as every CPU run
is, and reports the process's peak resident memory (``VmHWM``, as ``ru_maxrss``). The cases keep a
short L-BFGS history (``lbfgs_history=2``, filled after 3 of their 4 steps): the model counts the
history analytically, and one 256 px case with the default 100 pairs checks that term. The child's
memory check is switched off (``FACESTYLE_MEMORY_AVAILABLE``): it is the thing being measured.

    python benchmarks/stylize_memory.py                     # every case, one at a time: a table
    python benchmarks/stylize_memory.py --cases hed-256 hed-1024 --fit hed-256 hed-1024

``--fit`` names the cases to fit BASELINE_BYTES and ACTIVATION_FACTOR on (least squares) and prints
them; the table's "predicted" column always uses the constants in facestyle/style/memory.py. Check
``free -g`` before the 2048 px case: it needs ~13 GiB. The results are in docs/style-memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONTENT = DATA / "style" / "content" / "tubingen.jpg"
STYLE = DATA / "style" / "styles" / "starry-night.jpg"


@dataclass(frozen=True)
class Case:
    name: str
    backbone: str | None  # None: the default (vgg16-hed unless vgg19-imagenet was imported)
    size: int
    steps: int = 4
    history: int | None = 2  # None: the default (100 pairs, fewer on large images)


CASES = [
    Case("hed-256", None, 256),
    Case("hed-512", None, 512),
    Case("hed-1024", None, 1024),
    Case("hed-2048", None, 2048),
    Case("hed-256-h100", None, 256, steps=102, history=None),
    Case("random-512", "vgg19-random", 512),
    Case("random-1024", "vgg19-random", 1024),
]


def options(case: Case):
    from facestyle.style.options import StyleOptions

    return StyleOptions(
        size=case.size, steps=case.steps, backbone=case.backbone, lbfgs_history=case.history, scales=1
    ).resolved()


def child(name: str, threads: int) -> None:
    """Run one case and print its peak memory as JSON (the last line of stdout)."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from facestyle.style.transfer import stylize

    case = next(c for c in CASES if c.name == name)
    t0 = time.perf_counter()
    result = stylize(CONTENT, [STYLE], options(case), device="cpu")
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"case": name, "vmhwm": hwm, "maxrss": maxrss, "seconds": time.perf_counter() - t0,
                      "losses": result.losses["total"], "schedule": result.schedule}))  # fmt: skip


def measure(case: Case, threads: int) -> dict:
    env = {**os.environ, "FACESTYLE_MEMORY_AVAILABLE": "1T"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", case.name, "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{case.name} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def predict(case: Case):
    from PIL import Image

    from facestyle.style.transfer import predict_memory

    with Image.open(CONTENT) as c, Image.open(STYLE) as s:
        content_hw, style_hw = (c.height, c.width), (s.height, s.width)
    return predict_memory(options(case), content_hw, [style_hw])


def fit(rows: list[tuple[Case, int]]) -> tuple[float, float]:
    """Least squares of measured = baseline + factor x counted activations + the known parts."""
    import numpy as np

    from facestyle.style import memory

    a, b = [], []
    for case, measured in rows:
        est = predict(case)
        counted = est.activations / memory.ACTIVATION_FACTOR
        known = est.peak - est.baseline - est.activations
        a.append([1.0, counted])
        b.append(measured - known)
    (baseline, factor), *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
    return float(baseline), float(factor)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES])
    parser.add_argument("--fit", nargs="*", default=[], help="cases to fit the two constants on")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child [1]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    from facestyle.style import memory

    gib = 1 << 30
    print(f"{'case':<14} {'backbone':<13} {'size':>5} {'pixels':>9} {'pairs':>5} {'predicted':>10} "
          f"{'measured':>9} {'error':>7} {'seconds':>8}")  # fmt: skip
    measured_rows = []
    for name in args.cases:
        case = next(c for c in CASES if c.name == name)
        est = predict(case)
        got = measure(case, args.threads)
        measured_rows.append((case, got["vmhwm"]))
        h, w = est.level
        pairs = got["schedule"][-1].get("lbfgs_history", 0)
        error = (est.peak - got["vmhwm"]) / got["vmhwm"]
        print(f"{name:<14} {options(case).backbone:<13} {case.size:>5} {h * w:>9} {pairs:>5} "
              f"{est.peak / gib:>8.2f} G {got['vmhwm'] / gib:>7.2f} G {error:>+7.1%} {got['seconds']:>8.1f}",
              flush=True)  # fmt: skip
    if args.fit:
        baseline, factor = fit([(c, m) for c, m in measured_rows if c.name in args.fit])
        print(f"\nfitted on {', '.join(args.fit)}: "
              f"BASELINE_BYTES = {baseline:,.0f}  ACTIVATION_FACTOR = {factor:.3f}")  # fmt: skip
        print(f"(in use: BASELINE_BYTES = {memory.BASELINE_BYTES:,}  "
              f"ACTIVATION_FACTOR = {memory.ACTIVATION_FACTOR})")  # fmt: skip


if __name__ == "__main__":
    main()
