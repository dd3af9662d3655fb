"""Cold start: whole-process wall time of one-off commands, facestyle beside face_recognition's CLI.

A user who runs ``facestyle compare a.jpg b.jpg`` once pays for the interpreter, the imports, loading
the weights and one detection per photo. This script times whole processes, side by side in one run,
interleaved (every command once per round) so load from other processes hits all of them alike:

* ``python -c "import torch"``: the floor every PyTorch tool pays;
* ``facestyle --help``;
* ``facestyle compare A B`` (MTCNN + dlib ResNet, two photos);
* ``facestyle verify NAME B`` against a one-person gallery enrolled before timing;
* ``face_recognition KNOWN_DIR B``: face_recognition's own CLI on the same pair (dlib HOG + ResNet).
  Its package imports ``pkg_resources``, which recent setuptools lacks; the command runs its CLI
  through a three-line shim of that one function (the shim costs nothing measurable).
* ``python -c "import facenet_pytorch"``: what facestyle used to pay to build MTCNN (it imports all of
  torchvision); facestyle now runs its own P/R/O-Net modules on the same weight files.

    python benchmarks/cold_start.py              # 7 rounds
    python benchmarks/cold_start.py --rounds 3

Target (issue 18): compare and verify at most ``import torch`` + ~0.4 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

FR_SHIM = (
    "import sys, types, importlib.util, pathlib\n"
    "try:\n    import pkg_resources\n"
    "except ImportError:\n"
    "    spec = importlib.util.find_spec('face_recognition_models')\n"
    "    root = pathlib.Path(next(iter(spec.submodule_search_locations)))\n"
    "    shim = types.ModuleType('pkg_resources')\n"
    "    shim.resource_filename = lambda pkg, rel: str(root / rel)\n"
    "    sys.modules['pkg_resources'] = shim\n"
    "from face_recognition.face_recognition_cli import main\n"
    "sys.argv = ['face_recognition', *sys.argv[1:]]\n"
    "main()\n"
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("FACESTYLE_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    args = parser.parse_args()

    lfw = args.data / "faces" / "lfw-view1" / "images"
    a, b = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    known = work / "known"
    known.mkdir()
    shutil.copy(a, known / "aaron.jpg")
    env = {**os.environ, "FACESTYLE_HOME": str(work / "home"), "FACESTYLE_GALLERY": str(work / "gallery")}
    facestyle = str(BIN / "facestyle")
    enroll = subprocess.run(
        [facestyle, "enroll", "aaron", str(a), "--quiet"], capture_output=True, text=True, env=env
    )
    if enroll.returncode != 0:
        sys.exit(f"could not enroll the verify gallery: {enroll.stderr.strip()}")

    commands = {
        "python -c 'import torch' (floor)": [sys.executable, "-c", "import torch"],
        "facestyle --help": [facestyle, "--help"],
        "facestyle compare A B": [facestyle, "compare", str(a), str(b)],
        "facestyle verify aaron B": [facestyle, "verify", "aaron", str(b)],
        "face_recognition KNOWN B (its CLI)": [sys.executable, "-c", FR_SHIM, str(known), str(b)],
        "python -c 'import facenet_pytorch' (old MTCNN path)": [
            sys.executable,
            "-c",
            "import facenet_pytorch",
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, cmd in commands.items():
            seconds, proc = timed(cmd, env)
            if proc.returncode not in (0, 1):
                sys.exit(f"{name} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
            times[name].append(seconds)
    shutil.rmtree(work, ignore_errors=True)

    floor = statistics.median(times["python -c 'import torch' (floor)"])
    fr = statistics.median(times["face_recognition KNOWN B (its CLI)"])
    print(
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"python {sys.version.split()[0]}"
    )
    print(f"{'command':<52} {'median s':>9} {'min s':>7} {'- torch':>8} {'vs face_recognition':>20}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<52} {med:9.2f} {min(values):7.2f} {med - floor:+8.2f} {med / fr:19.2f}x")


if __name__ == "__main__":
    main()
