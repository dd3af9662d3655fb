"""Open-set identification: rank-1 accepted and strangers accepted, per threshold rule, side by side.

One photo per identity is enrolled; the identities' other photos are the known probes; people never
enrolled are the strangers. A known probe counts as "rank-1 accepted" when its best identity is the
right one and scores at or above the threshold; a stranger counts as accepted when its best score does.

Rules compared in one run, on the same embeddings:

* ``default``: the model's threshold (0.908 for dlib-resnet-v1, measured on LFW);
* ``gallery``: :func:`facestyle.gallery.adaptive.adaptive_threshold` (a normal fit to each identity's
  nearest-other-identity score, at its ``1 - target`` quantile; never below the default);
* ``nearest-empirical``: the plain ``1 - target`` quantile of those N scores;
* ``pairs-normal``: a normal fit of all between-identity pair scores, at its ``(1 - target)^(1/N)``
  quantile (never below the default): the parametric alternative;
* ``t-norm``: z = (best - mean of the other identities' scores) / their std >= 3, the enrolled
  identities as cohort;
* ``gallery+t-norm``: both combined, the lenient way: accepted at the gallery's threshold, or at the
  model's default when the best score also stands out (z >= 3), which is meant to win back the known
  probes that the gallery's threshold refuses;
* ``oracle``: the lowest single threshold at which the strangers of this very draw are accepted at
  most at the target rate, chosen with the answers known: no threshold rule can do better on the
  draw, so its rank-1 is the ceiling of every rule above except T-norm's;
* ``calibrate``: what ``facestyle calibrate`` stores: the threshold for FAR 1e-3 on LFW View 1's
  DevTrain pairs (1,100 impostor pairs; disjoint from the DevTest people, not from all View 1
  people), the same for every gallery.

Data sets: AT&T (40 people x 10 photos; N enrolled of s1..s40 in a seeded order, the rest strangers)
and LFW View 1 (people with 2+ photos can be enrolled; 500 people with one photo are the strangers).
Each N is averaged over ``--seeds`` draws of who is enrolled.

    python benchmarks/open_set.py                 # AT&T N=10,20,30 and LFW N=10,20,40,300
    python benchmarks/open_set.py --no-lfw        # AT&T only (~1 min)
    python benchmarks/open_set.py --embeddings /tmp/open_set.npz   # embed once, reuse after
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from facestyle.api import FacePipeline
from facestyle.eval.calibrate import calibrate
from facestyle.gallery.adaptive import DEFAULT_TARGET, adaptive_threshold, estimate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
Z_MIN = 3.0


@dataclass
class Population:
    """Embeddings of people: ``people[name] = (k, D)`` unit vectors (photos with a face only)."""

    name: str
    people: dict[str, np.ndarray]
    strangers: dict[str, np.ndarray]  # people who are never enrolled (may be empty: drawn from people)


def embed_people(folders: dict[str, list[Path]], pipe: FacePipeline) -> dict[str, np.ndarray]:
    paths = [p for files in folders.values() for p in files]
    table = pipe.features(face="largest").embed(paths)
    rows = dict(zip(map(str, paths), zip(table.values, table.ok, strict=True), strict=True))
    people = {}
    for name, files in folders.items():
        vecs = [rows[str(p)][0] for p in files if rows[str(p)][1]]
        if vecs:
            people[name] = np.stack(vecs).astype(np.float32)
    return people


def att(pipe: FacePipeline) -> Population:
    root = DATA / "att"
    folders = {f"s{i}": sorted((root / f"s{i}").glob("*.pgm")) for i in range(1, 41)}
    return Population("AT&T", embed_people(folders, pipe), {})


def lfw(pipe: FacePipeline, strangers: int = 500) -> Population:
    root = DATA / "lfw-view1" / "images"
    folders = {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}
    several = {k: v for k, v in folders.items() if len(v) >= 2}
    single = sorted(k for k, v in folders.items() if len(v) == 1)
    chosen = [single[i] for i in np.random.default_rng(0).choice(len(single), strangers, replace=False)]
    people = embed_people(several, pipe)
    others = embed_people({k: folders[k] for k in chosen}, pipe)
    return Population("LFW View 1", {k: v for k, v in people.items() if len(v) >= 2}, others)


def pairs_normal(vectors: np.ndarray, default: float, target: float) -> float:
    scores = vectors @ vectors.T
    upper = scores[np.triu_indices(len(vectors), 1)]
    n = len(vectors)
    level = (1 - target) ** (1 / n)
    return max(default, NormalDist(float(upper.mean()), float(upper.std())).inv_cdf(level))


def nearest_empirical(vectors: np.ndarray, default: float, target: float) -> float:
    nearest = estimate(vectors, np.arange(len(vectors))).nearest
    return max(default, float(np.quantile(nearest, 1 - target)))


def rates(
    gallery: np.ndarray,
    known: list[tuple[int, np.ndarray]],
    strangers: np.ndarray,
    t: float | None,
    z_floor: float | None = None,
):
    """(rank-1 accepted, strangers accepted) at threshold ``t``; by T-norm when ``t`` is None; with
    ``z_floor``, also accepted from ``z_floor`` up when the best score stands out (z >= 3)."""

    def accepted(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best = scores.argmax(axis=1)
        top = scores.max(axis=1)
        rest = np.sort(scores, axis=1)[:, :-1]
        z = (top - rest.mean(axis=1)) / np.maximum(rest.std(axis=1), 1e-9)
        if t is None:
            return best, z >= Z_MIN
        if z_floor is None:
            return best, top >= t
        return best, (top >= t) | ((top >= z_floor) & (z >= Z_MIN))

    labels = np.array([i for i, _ in known])
    probes = np.stack([v for _, v in known])
    best, ok = accepted(probes @ gallery.T)
    rank1 = float(((best == labels) & ok).mean())
    _, s_ok = accepted(strangers @ gallery.T)
    return rank1, float(s_ok.mean())


def trial(
    pop: Population, n: int, seed: int, default: float, target: float, calibrated: float
) -> dict[str, tuple]:
    names = sorted(pop.people)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    enrolled = order[:n]
    gallery = np.stack([pop.people[k][0] for k in enrolled])
    known = [(i, v) for i, k in enumerate(enrolled) for v in pop.people[k][1:]]
    if pop.strangers:
        strangers = np.concatenate(list(pop.strangers.values()))
    else:  # AT&T: everyone not enrolled, all photos
        strangers = np.concatenate([pop.people[k] for k in order[n:]])
    adaptive = adaptive_threshold(estimate(gallery, np.arange(n)), default, target)
    rules = {
        "default": default,
        "gallery": adaptive.threshold,
        "pairs-normal": pairs_normal(gallery, default, target),
        "nearest-empirical": nearest_empirical(gallery, default, target),
        "t-norm": None,
        "calibrate": calibrated,
    }
    rules["oracle"] = oracle_threshold(gallery, strangers, target)
    out = {rule: (t, *rates(gallery, known, strangers, t)) for rule, t in rules.items()}
    t = adaptive.threshold
    out["gallery+t-norm"] = (t, *rates(gallery, known, strangers, t, z_floor=default))
    return out


def oracle_threshold(gallery: np.ndarray, strangers: np.ndarray, target: float) -> float:
    """The lowest threshold that accepts at most ``target`` of ``strangers`` (their best scores)."""
    top = np.sort((strangers @ gallery.T).max(axis=1))[::-1]
    allowed = int(np.floor(target * len(top)))  # strangers that may get in
    return float(np.nextafter(top[allowed], np.inf)) if allowed < len(top) else -1.0


def load_or_embed(path: Path | None, make) -> tuple[list[Population], float]:
    """The populations and the calibrated threshold, from ``path`` if it holds them, else computed
    (and saved there): embedding LFW View 1 takes minutes, the rules take seconds."""
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as data:
            pops: dict[str, Population] = {}
            for key in data.files:
                if key == "calibrated":
                    continue
                pop, part, person = key.split("|", 2)
                p = pops.setdefault(pop, Population(pop, {}, {}))
                getattr(p, part)[person] = data[key]
            return list(pops.values()), float(data["calibrated"])
    pops, calibrated = make()
    if path is not None:
        arrays = {f"{p.name}|{part}|{k}": v for p in pops for part in ("people", "strangers")
                  for k, v in getattr(p, part).items()}  # fmt: skip
        np.savez(path, calibrated=np.float64(calibrated), **arrays)
    return pops, calibrated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--target", type=float, default=DEFAULT_TARGET)
    ap.add_argument("--no-lfw", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--embeddings", type=Path, help="npz file: load the embeddings from it, or save them there"
    )
    args = ap.parse_args()
    pipe = FacePipeline()
    default = float(pipe.embedder.default_threshold)
    t0 = time.perf_counter()

    def make() -> tuple[list[Population], float]:
        pops = [att(pipe)] + ([] if args.no_lfw else [lfw(pipe)])
        pairs = DATA / "lfw-view1" / "pairsDevTrain.txt"
        cal = calibrate(pairs, pipe.features(face="central"), 1e-3, DATA / "lfw-view1" / "images")
        return pops, cal.threshold

    pops, calibrated = load_or_embed(args.embeddings, make)
    print(
        f"# embeddings ready in {time.perf_counter() - t0:.0f} s; calibrate: {calibrated:.4f}",
        file=sys.stderr,
    )
    sizes = {"AT&T": (10, 20, 30), "LFW View 1": (10, 20, 40, 300)}
    rows = []
    for pop in pops:
        if args.no_lfw and pop.name != "AT&T":
            continue
        for n in sizes[pop.name]:
            runs = [trial(pop, n, seed, default, args.target, calibrated) for seed in range(args.seeds)]
            for rule in runs[0]:
                t = [r[rule][0] for r in runs]
                rows.append({
                    "data": pop.name, "N": n, "rule": rule,
                    "threshold": None if t[0] is None else float(np.mean(t)),
                    "rank1_accepted": float(np.mean([r[rule][1] for r in runs])),
                    "strangers_accepted": float(np.mean([r[rule][2] for r in runs])),
                })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"one photo enrolled per identity; mean of {args.seeds} draws; target stranger rate {args.target}")
    head = f"{'data':<11} {'N':>4}  {'rule':<17} {'threshold':>9}"
    print(f"{head}  {'rank-1 accepted':>15}  {'strangers accepted':>18}")
    for r in rows:
        t = "z>=3" if r["threshold"] is None else f"{r['threshold']:.3f}"
        print(
            f"{r['data']:<11} {r['N']:>4}  {r['rule']:<17} {t:>9}  {r['rank1_accepted']:>15.3f}  "
            f"{r['strangers_accepted']:>18.3f}"
        )


if __name__ == "__main__":
    main()
