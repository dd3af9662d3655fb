"""Face-descriptor throughput: dlib's own ResNet vs our PyTorch port (facestyle.models.dlib_resnet).

Measured side by side in one process on real 150x150 chips made from LFW View 1 images exactly the way
dlib's pipeline makes them (HOG detector, upsampled once; 5-point shape predictor; get_face_chip with
padding 0.25). Methods are timed in interleaved rounds (every method once per round) so that load from
other processes on the machine hits all of them alike; the table reports the best round (least
disturbed) and the median. Conversion of uint8 chips to tensors is inside our timings, as dlib's
conversion is inside its own. "f/cpu-s" is faces per CPU-second of this process (all its threads):
less sensitive than wall-clock rates to other processes competing for the cores, though spinning
worker threads count as busy.

    python benchmarks/embed_throughput.py                 # 256 chips, 2 threads, 2 rounds
    python benchmarks/embed_throughput.py --chips 64 --rounds 1   # quick look

Target: our module >= 5x dlib's faces/s on the same cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

# OpenMP worker threads spin while waiting for work by default. On a small machine shared with other
# processes a spinning thread steals the core its partner needs, and 2-thread batch-1 inference became
# ~10x slower in our measurements. PASSIVE makes them sleep. It is read when the OpenMP runtime loads,
# so it must be set before torch is imported; run with OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestyle.io.images import load_image  # noqa: E402
from facestyle.models.dlib_resnet import chips_to_tensor, load_dlib_resnet  # noqa: E402
from facestyle.models.registry import path_of  # noqa: E402


def shared_data() -> Path:
    return Path(os.environ.get("FACESTYLE_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def make_chips(n: int) -> tuple[np.ndarray, int, float]:
    """First ``n`` LFW View 1 images (sorted by path) with a dlib face -> (chips, images tried, seconds)."""
    import dlib

    root = shared_data() / "faces" / "lfw-view1" / "images"
    paths = sorted(root.glob("*/*.jpg"))
    if not paths:
        sys.exit(f"no LFW images under {root}; set FACESTYLE_SHARED_DATA")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(path_of("dlib-shape-predictor-5")))
    chips, tried, start = [], 0, time.perf_counter()
    for path in paths:
        if len(chips) == n:
            break
        tried += 1
        img = load_image(path)
        faces = detector(img, 1)
        if faces:
            face = max(faces, key=lambda r: r.area())
            chips.append(dlib.get_face_chip(img, predictor(img, face), size=150, padding=0.25))
    return np.stack(chips), tried, time.perf_counter() - start


def ours(
    model: torch.nn.Module, batch: int, bf16: bool, channels_last: bool
) -> Callable[[np.ndarray], np.ndarray]:
    def run(chips: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            for i in range(0, len(chips), batch):
                x = chips_to_tensor(chips[i : i + batch])  # a channels-last view of the NHWC chips
                if not channels_last:
                    x = x.contiguous()
                out.append(model(x).float())
        return torch.cat(out).numpy()

    return run


def single_threaded(
    fn: Callable[[np.ndarray], np.ndarray], restore: int
) -> Callable[[np.ndarray], np.ndarray]:
    def run(chips: np.ndarray) -> np.ndarray:
        torch.set_num_threads(1)
        try:
            return fn(chips)
        finally:
            torch.set_num_threads(restore)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=256, help="real chips to embed (default 256)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (default 2)")
    ap.add_argument("--slow-subset", type=int, default=48, help="chips per round for the slow methods")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = ap.parse_args()

    import dlib

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    chips, tried, t_chips = make_chips(args.chips)
    n = len(chips)
    print(f"{n} chips from {tried} LFW View 1 images in {t_chips:.1f} s (dlib HOG x1 upsample + 5-point)")

    ref_model = dlib.face_recognition_model_v1(str(path_of("dlib-resnet-v1")))
    t = time.perf_counter()
    reference = np.array([np.asarray(d) for d in ref_model.compute_face_descriptor(list(chips))], np.float32)
    dlib_full = n / (time.perf_counter() - t)

    model_cl = load_dlib_resnet(path_of("dlib-resnet-v1"), channels_last=True)
    model_cf = load_dlib_resnet(path_of("dlib-resnet-v1"), channels_last=False)
    small = max(1, min(args.slow_subset, n))

    # name -> (callable, number of chips timed per round, batch label)
    methods: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int, str]] = {
        "dlib compute_face_descriptor (per chip)": (
            lambda c: np.array([np.asarray(ref_model.compute_face_descriptor(x)) for x in c], np.float32),
            small,
            "1",
        ),
        "dlib compute_face_descriptor (list of chips)": (
            lambda c: np.array(
                [np.asarray(d) for d in ref_model.compute_face_descriptor(list(c))], np.float32
            ),
            small,
            "16 (dlib)",
        ),
    }
    variants = [("fp32 NCHW", model_cf, False, False), ("fp32 channels_last", model_cl, False, True)]
    variants.append(("bf16 autocast channels_last", model_cl, True, True))
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(model_cl)
        t = time.perf_counter()
        with torch.inference_mode():
            compiled(chips_to_tensor(chips[:64]))
        print(f"torch.compile warm-up: {time.perf_counter() - t:.0f} s")
        variants.append(("torch.compile channels_last", compiled, False, True))
    for label, model, bf16, cl in variants:
        # bf16 has no native support on most CPUs (it is emulated), so it gets fewer, smaller runs.
        for batch in (1, 64) if bf16 else (1, 32, 64, 256):
            count = small if batch == 1 else n
            methods[f"ours {label} bs={batch}"] = (ours(model, batch, bf16, cl), count, str(batch))
    if args.threads > 1:  # one face at a time has too little work per layer to split across threads
        methods["ours fp32 channels_last bs=1, 1 thread"] = (
            single_threaded(ours(model_cl, 1, False, True), args.threads),
            small,
            "1",
        )

    for fn, _, _ in methods.values():  # warm-up: oneDNN primitive creation, allocator
        fn(chips[:2])

    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu_rates: dict[str, list[float]] = {name: [] for name in methods}
    diffs: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (fn, count, _) in methods.items():
            t, c = time.perf_counter(), time.process_time()
            out = fn(chips[:count])
            times[name].append(count / (time.perf_counter() - t))
            cpu_rates[name].append(count / max(time.process_time() - c, 1e-9))
            diffs[name] = float(np.abs(out - reference[:count]).max())
    load_end = os.getloadavg()[0]

    dlib_single = max(times["dlib compute_face_descriptor (per chip)"])
    dlib_batch = max(times["dlib compute_face_descriptor (list of chips)"])
    print(
        f"\ntorch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"load average {load_start:.1f} -> {load_end:.1f}"
    )
    print(f"dlib batch API over all {n} chips (one pass, reference run): {dlib_full:.1f} faces/s\n")
    header = (
        f"{'method':<48} {'batch':>9} {'faces':>6} {'best f/s':>9} {'median':>8} "
        f"{'x dlib1':>8} {'x dlibB':>8} {'f/cpu-s':>8} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, (_, count, batch) in methods.items():
        best, med = max(times[name]), statistics.median(times[name])
        print(
            f"{name:<48} {batch:>9} {count:>6} {best:>9.1f} {med:>8.1f} {best / dlib_single:>8.2f} "
            f"{best / dlib_batch:>8.2f} {max(cpu_rates[name]):>8.1f} {diffs[name]:>10.2e}"
        )
    best_rate, best_name = max((max(v), k) for k, v in times.items() if k.startswith("ours"))
    dlib_best = max(dlib_single, dlib_batch)
    print(
        f"\nbest: {best_name} at {best_rate:.1f} faces/s = {best_rate / dlib_best:.1f}x dlib's best "
        f"({dlib_best:.1f} faces/s); max|diff| is against dlib's descriptors of the same chips"
    )


if __name__ == "__main__":
    main()
