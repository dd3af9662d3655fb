"""Style transfer speed and memory: facestyle's ``stylize`` against a plain PyTorch-tutorial implementation.

The reference below is written the way the official PyTorch neural-style tutorial does it: torchvision's
``vgg19().features`` (``vgg16().features`` for HED's VGG16) rebuilt into an ``nn.Sequential`` with a
normalisation module in front and ``ContentLoss``/``StyleLoss`` modules inserted after the tapped layers
(trimmed after the last loss, as the tutorial does), non-inplace ReLUs, and ``optim.LBFGS`` called in a
``while`` loop with the pixels clamped inside the closure. It optimises the *same* objective as ours (the
backbone's default style and content taps and per-layer style weights from its registry entry, the same
relative losses, weights and TV term) with the *same* backbone weights, so time and final loss are
comparable. ``--backbone`` picks the network: by default the one ``stylize`` would choose
(``vgg16-hed`` when the ImageNet VGG19 file is not imported); ``--backbone vgg19-random`` reproduces the
earlier VGG19 rows (weights do not change the speed). Both final images are scored by one evaluator
(facestyle's ``Objective`` at full size, on the same network with torch's own convolutions, so our Winograd
layers do not judge their own output), as the 8-bit images they would be saved as.

Peak memory is measured in a fresh subprocess per size (the child's own VmHWM, which includes the
Python/torch baseline), with enough steps (110) to fill the L-BFGS history.

    python benchmarks/stylize_speed.py                      # 512 px, 300 L-BFGS steps, memory at 512/1024
    python benchmarks/stylize_speed.py --size 256 --steps 100 --memory-sizes ""  # quick look
    python benchmarks/stylize_speed.py --backbone vgg19-random   # the earlier (untrained VGG19) rows
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from facestyle.heap import ENV as HEAP_ENV
from facestyle.heap import retained_heap
from facestyle.models import registry
from facestyle.models.hed import CAFFE_BGR_MEAN
from facestyle.models.vgg import VGG16_HED, VGG19_LAYERS
from facestyle.style.options import DEFAULTS, StyleOptions, default_style_backbone
from facestyle.style.transfer import Objective, fit_size, resize, stylize, to_tensor, to_uint8

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "style"


# ------------------------------------------------------------------ reference (PyTorch tutorial style)


def _gram_ref(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Our style image keeps its own aspect ratio, so the style target pass (made through this module
        # while the model is built) has another shape; the tutorial resizes the style image instead.
        if x.shape == self.target.shape:
            self.loss = (x - self.target).pow(2).sum() / self.target.pow(2).sum()
        return x


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor) -> None:
        super().__init__()
        self.target = _gram_ref(target_feature).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _gram_ref(x)
        self.loss = (g - self.target).pow(2).sum() / self.target.pow(2).sum()
        return x


class Normalization(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean) / self.std


class CaffeNormalization(nn.Module):
    """What a Caffe-trained VGG (HED's) expects: BGR pixels 0..255 minus the ImageNet means."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor(CAFFE_BGR_MEAN).view(-1, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.flip(1) * 255.0 - self.mean


def reference_cnn(name: str, body: nn.Module) -> tuple[nn.Module, list[str], nn.Module]:
    """(torchvision ``features``, its layer names, input normalisation) of backbone ``name``, with the
    weights of ``body`` (our extractor's network: same child indices, same parameters)."""
    if name == "vgg16-hed":
        cnn = torchvision.models.vgg16(weights=None).features.eval()
        for layer in cnn:  # Keras' "same" pooling rounds odd sides up (facestyle/models/vgg.py)
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
        names, norm = VGG16_HED.layers, CaffeNormalization()
    else:
        cnn = torchvision.models.vgg19(weights=None).features.eval()
        names, norm = VGG19_LAYERS, Normalization()
    state = body.state_dict()
    missing = set(state) - set(cnn.state_dict())
    assert not missing, f"reference network lacks {sorted(missing)}"
    cnn.load_state_dict(state, strict=False)  # same weights where both have layers
    return cnn, names, norm


def reference_model(cnn: nn.Module, names, norm, style_img, content_img, style_taps, content_taps):
    model = nn.Sequential(norm)
    content_losses, style_losses = [], []
    for name, layer in zip(names, cnn.children(), strict=False):
        if isinstance(layer, nn.ReLU):
            layer = nn.ReLU(inplace=False)
        model.add_module(name, layer)
        if name in content_taps:
            target = model(content_img).detach()
            cl = ContentLoss(target)
            model.add_module(f"content_loss_{name}", cl)
            content_losses.append(cl)
        if name in style_taps:
            target_feature = model(style_img).detach()
            sl = StyleLoss(target_feature)
            model.add_module(f"style_loss_{name}", sl)
            style_losses.append(sl)
    # trim off the layers after the last content and style losses
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], ContentLoss | StyleLoss):
            break
    return model[: i + 1], style_losses, content_losses


def run_reference(
    cnn, names, norm, content_img, style_img, steps, layers, content_weight, style_weight, tv_weight
):
    """The tutorial's loop; ``layers`` = (style taps and their weights lambda_l, content taps)."""
    style_weights, content_taps = layers
    input_img = content_img.clone()
    model, style_losses, content_losses = reference_model(
        cnn, names, norm, style_img, content_img, list(style_weights), content_taps
    )
    lam = [style_weights[n] for n in names if n in style_weights]  # in the order the losses were inserted
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    run = [0]
    while run[0] < steps:

        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(w * sl.loss for w, sl in zip(lam, style_losses, strict=True)) / sum(lam)
            content_score = sum(cl.loss for cl in content_losses)
            dy = input_img[:, :, 1:, :] - input_img[:, :, :-1, :]
            dx = input_img[:, :, :, 1:] - input_img[:, :, :, :-1]
            tv = dy.pow(2).mean() + dx.pow(2).mean()
            loss = style_weight * style_score + content_weight * content_score + tv_weight * tv
            loss.backward()
            run[0] += 1
            return loss

        # The tutorial steps in chunks of LBFGS's default 20 iterations; cap the last chunk so both
        # implementations make exactly ``steps`` evaluations.
        optimizer.param_groups[0]["max_iter"] = min(20, steps - run[0])
        optimizer.param_groups[0]["max_eval"] = min(25, steps - run[0])
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return input_img.detach()


# ----------------------------------------------------------------------------------------- harness


#: glibc tunable that turns its per-thread cache of small free chunks off (see ``peak_rss_mib``).
NO_TCACHE = "glibc.malloc.tcache_count=0"


def peak_rss_mib(
    size: int,
    steps: int,
    threads: int,
    retain_heap: bool = True,
    half: bool = False,
    history: int | None = None,
    tcache: bool = True,
    backbone: str = "vgg19-random",
) -> tuple[float, float]:
    """(baseline, peak) resident MiB of a fresh process running ``stylize`` on ``backbone`` (its default
    taps) at ``size`` (single scale),
    with facestyle's retained heap (the default) or without it (``FACESTYLE_RETAIN_HEAP=0``), in float32
    or with ``half`` (``stylize --half``), with ``history`` L-BFGS pairs (None: stylize's own choice,
    which shortens the history above ~450k pixels). ``tcache=False`` starts the child with glibc's
    thread cache off (``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``, read only at process start): the
    small chunks ``posix_memalign`` splits off each large block then merge again instead of waiting in
    that cache between free neighbours, which is most of the retained heap's extra memory at 1024 px.

    The baseline is taken after importing torch and building the backbone (the CUDA build of torch alone
    maps ~500 MiB); peak minus baseline is what the optimisation itself needs. Both are the kernel's
    high-water mark of the child's own memory (``VmHWM``): ``ru_maxrss`` is inherited across fork and
    exec on Linux, so in a child it reports the *parent's* peak whenever that was higher (every
    earlier figure from this benchmark was this benchmark's own RSS after its timing runs).

    L-BFGS keeps up to 100 curvature pairs (two image-sized tensors each); use ``steps`` > 100 to see the
    peak of a full-length run, which the history dominates at large sizes unless it is shortened.
    """
    code = (
        "import re, torch, numpy as np\n"
        "def hwm():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
        f"torch.set_num_threads({threads})\n"
        "from facestyle.models.registry import backbone\n"
        "from facestyle.style.options import StyleOptions\n"
        "from facestyle.style.transfer import stylize\n"
        f"ex = backbone({backbone!r})\n"
        "print(hwm())\n"
        "rng = np.random.default_rng(0)\n"
        f"c = rng.integers(0, 256, ({size}, {size}, 3), dtype=np.uint8)\n"
        f"s = rng.integers(0, 256, ({size}, {size}, 3), dtype=np.uint8)\n"
        f"options = StyleOptions(size={size}, steps={steps}, scales=1, backbone={backbone!r}, "
        f"half={half}, lbfgs_history={history})\n"
        "stylize(c, s, options, extractor=ex)\n"
        "print(hwm())\n"
    )
    env = {**os.environ, HEAP_ENV: "1" if retain_heap else "0"}
    if not tcache:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), NO_TCACHE]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    base, peak = (float(v) for v in out.stdout.strip().splitlines()[-2:])
    return base, peak


@contextlib.contextmanager
def heap_env(retain: bool):
    """``FACESTYLE_RETAIN_HEAP`` set for one block (stylize reads it), the previous value restored after."""
    before = os.environ.get(HEAP_ENV)
    os.environ[HEAP_ENV] = "1" if retain else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HEAP_ENV)
        else:
            os.environ[HEAP_ENV] = before


def comma_list(text: str, allowed: tuple[str, ...], option: str, ap: argparse.ArgumentParser) -> list[str]:
    """The non-empty items of a comma list, each checked against ``allowed`` before any work starts."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    for item in items:
        if item not in allowed:
            ap.error(f"{option} takes {' and/or '.join(allowed)}, not {item!r}")
    return items


def parse_schedule(text: str, ap: argparse.ArgumentParser) -> tuple[list[int] | None, int, list[str]]:
    """``--scales`` entry -> (steps per level or None for stylize's own split, scales, variants); checked
    before any timing, so a typo does not surface after the reference's ten minutes."""
    config, *variants = text.strip().split("/")
    unknown = set(variants) - {"plain", "system-heap", "half"}
    if unknown:
        ap.error(f"unknown schedule variant(s) {sorted(unknown)}; use /plain, /system-heap, /half")
    try:
        per_level = [int(n) for n in config.split("+")] if "+" in config else None
        scales = len(per_level) if per_level else int(config)
    except ValueError:
        ap.error(f"--scales entry {text.strip()!r} is neither K nor steps per level like 200+175")
    return per_level, scales, variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument(
        "--backbone",
        default=None,
        help="the network both implementations run, with its default taps and layer weights (default: "
        "the one stylize chooses, vgg19-imagenet if imported, else vgg16-hed); vgg19-random gives the "
        "earlier rows",
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument(
        "--scales",
        default="1,2,200+200",
        help="our schedules to time, comma list: K (stylize's --scales K and its default split) or explicit "
        "steps per level, coarsest first (200+200: 200 steps at half size, then 200 at full size); "
        "suffixes: '/plain' runs it without the first level's smoothing preconditioner, '/system-heap' "
        "without facestyle's retained heap (FACESTYLE_RETAIN_HEAP=0), '/half' with stylize's half=True "
        "(bfloat16 early layers on a CPU with native bfloat16)",
    )
    ap.add_argument("--content", default=str(DATA / "content" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(DATA / "styles" / "starry-night.jpg"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument(
        "--reference",
        default="default",
        help="tutorial reference runs, comma list: 'default' (glibc's own malloc behaviour, what anyone "
        "running the tutorial gets) and/or 'retained' (inside facestyle's retained_heap, to show what "
        "that alone buys); empty to skip",
    )
    ap.add_argument("--memory-sizes", default="512,1024", help="comma list; empty to skip")
    ap.add_argument("--memory-steps", type=int, default=110, help="> 100 fills the L-BFGS history")
    ap.add_argument(
        "--memory-heaps",
        default="retained",
        help="comma list: 'retained' (stylize as shipped), 'system' (FACESTYLE_RETAIN_HEAP=0) and/or "
        f"'retained-no-tcache' (retained, the child started with GLIBC_TUNABLES={NO_TCACHE})",
    )
    ap.add_argument(
        "--memory-precisions",
        default="float32",
        help="comma list: 'float32' and/or 'half' (stylize --half: bfloat16 early layers on a CPU with it)",
    )
    ap.add_argument(
        "--memory-histories",
        default="auto",
        help="comma list of L-BFGS history lengths: 'auto' (stylize's default: 100 pairs, fewer above ~450k "
        "pixels to keep them within 1 GiB) and/or a number of pairs, e.g. auto,100",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    references = comma_list(args.reference, ("default", "retained"), "--reference", ap)
    memory_heaps = comma_list(
        args.memory_heaps, ("retained", "system", "retained-no-tcache"), "--memory-heaps", ap
    )
    precisions = comma_list(args.memory_precisions, ("float32", "half"), "--memory-precisions", ap)
    histories = [v.strip() for v in args.memory_histories.split(",") if v.strip()]
    for v in histories:
        if v != "auto" and not (v.isdigit() and int(v) > 0):
            ap.error(f"--memory-histories takes 'auto' or a positive number of pairs, not {v!r}")
    schedules = [parse_schedule(v, ap) for v in args.scales.split(",") if v.strip()]
    name = args.backbone or default_style_backbone()
    if name not in ("vgg16-hed", "vgg19-imagenet", "vgg19-random"):
        ap.error(f"--backbone takes vgg16-hed, vgg19-imagenet or vgg19-random, not {name!r}")
    spec = registry.get_model(name)
    label = name + ("" if spec.trained else " (untrained)")
    layer_options = StyleOptions(backbone=name)
    style_taps, content_taps = layer_options.taps()
    style_weights = layer_options.style_layer_weights()
    torch.set_num_threads(args.threads)

    from facestyle.io.images import load_image

    content_arr, style_arr = load_image(args.content), load_image(args.style)
    hw = fit_size(content_arr.shape[:2], args.size)
    content_t = resize(to_tensor(content_arr), hw)
    style_t = resize(to_tensor(style_arr), fit_size(style_arr.shape[:2], args.size))
    weights = {k: DEFAULTS[k] for k in ("content_weight", "style_weight", "tv_weight")}

    taps = list(dict.fromkeys(style_taps + content_taps))
    extractor = registry.backbone(name, taps)
    # The judge uses torch's own convolutions (no Winograd), like the reference; same weights (same seed).
    judge = registry.backbone(name, taps, winograd=False)
    evaluator = Objective(
        judge, content_t, [style_t], [1.0], style_taps=style_taps, content_taps=content_taps,
        layer_weights=style_weights, **weights,
    )  # fmt: skip

    def score(img: torch.Tensor) -> float:
        """The judge's loss of an image as it would be saved: clipped and rounded to 8 bits (stylize's
        result already is; the reference's float tensor gets the same round trip)."""
        with torch.no_grad():
            return evaluator(to_tensor(to_uint8(img)))[1]["total"]

    rows = []
    for heap in references:
        cnn, names, norm = reference_cnn(name, extractor.body)
        t0 = time.perf_counter()
        with retained_heap() if heap == "retained" else contextlib.nullcontext():
            ref_img = run_reference(
                cnn, names, norm, content_t, style_t, args.steps, (style_weights, content_taps), **weights
            )
        rows.append(
            {"impl": "reference (tutorial)" + (" + retained heap" if heap == "retained" else ""),
             "schedule": f"{args.steps}@{args.size}",
             "seconds": time.perf_counter() - t0, "final_loss": score(ref_img)}
        )  # fmt: skip
        print(f"# {rows[-1]}", file=sys.stderr, flush=True)  # partial results survive an interrupted run
    for per_level, scales, variants in schedules:
        # stylize keeps freed memory in the process (facestyle/heap.py) unless the variable says not to.
        with heap_env(retain="system-heap" not in variants):
            t0 = time.perf_counter()
            options = StyleOptions(
                size=args.size, steps=None if per_level else args.steps, scales=scales,
                steps_per_scale=per_level, backbone=name,
                precondition="plain" not in variants, half="half" in variants, **weights,
            )  # fmt: skip
            res = stylize(content_arr, style_arr, options, extractor=extractor)
            secs = time.perf_counter() - t0
        sched = "+".join(f"{d['steps']}@{max(d['height'], d['width'])}" for d in res.schedule)
        rows.append(
            {"impl": (f"facestyle (scales={scales})" if per_level is None else "facestyle (explicit split)")
                     + "".join(f" {v}" for v in variants),
             "schedule": sched, "seconds": secs,
             "final_loss": score(to_tensor(res.image))}
        )  # fmt: skip
        print(f"# {rows[-1]}", file=sys.stderr, flush=True)
    if rows and rows[0]["impl"].startswith("reference"):
        base = rows[0]["seconds"]
        for r in rows:
            r["speedup"] = base / r["seconds"]
    memory = []
    sizes = [int(v) for v in filter(None, args.memory_sizes.split(","))]
    for size, heap, precision, history in itertools.product(sizes, memory_heaps, precisions, histories):
        pairs = None if history == "auto" else int(history)
        retain, half = heap.startswith("retained"), precision == "half"
        tcache = heap != "retained-no-tcache"
        base, peak = peak_rss_mib(size, args.memory_steps, args.threads, retain, half, pairs, tcache, name)
        row = {"size": size, "heap": heap, "precision": precision, "history": history}
        memory.append({**row, "baseline_mib": base, "peak_mib": peak})
        print(f"# {memory[-1]}", file=sys.stderr, flush=True)

    result = {
        "size": args.size, "steps": args.steps, "threads": args.threads,
        "backbone": label, "style_layers": style_weights, "content_layers": content_taps,
        "rows": rows, "peak_rss": memory,
        "maxrss_this_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    layers = ", ".join(f"{t} x{w:g}" for t, w in style_weights.items())
    print(
        f"{args.size} px, {args.steps} L-BFGS steps, {args.threads} threads, backbone {label}, "
        f"style {layers}, content {', '.join(content_taps)}"
    )
    print(
        f"{'implementation':<44} {'schedule (steps@px)':<22} {'seconds':>9} {'speedup':>8} {'final loss':>11}"
    )
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        print(f"{r['impl']:<44} {r['schedule']:<22} {r['seconds']:>9.1f} {sp:>8} {r['final_loss']:>11.5f}")
    for m in memory:
        base, peak = m["baseline_mib"], m["peak_mib"]
        print(
            f"stylize at {m['size']} px, {args.memory_steps} steps, fresh process, {m['heap']} heap, "
            f"{m['precision']}, L-BFGS history {m['history']}: "
            f"peak RSS {peak:.0f} MiB (baseline after imports + backbone {base:.0f} MiB; optimisation adds "
            f"{peak - base:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
