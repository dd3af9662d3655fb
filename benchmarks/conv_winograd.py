"""Per-layer time of VGG19's 3x3 convolutions: torch (NCHW and channels-last) against facestyle's Winograd.

Each row is one VGG19 convolution at the activation size a ``--size`` px image gives it, timed forward
and forward + input-gradient (what style transfer runs), side by side in one process, best of
``--repeats`` after a warm-up (the minimum is the steadiest figure on a shared machine). The last column
says whether ``worth_winograd`` picks Winograd for that layer. Timing runs inside facestyle's
``retained_heap``, as ``stylize`` runs its steps; ``--system-heap`` times glibc's default behaviour,
where every block above 32 MiB (Winograd's tile buffers at the early layers) is unmapped on free and
faulted in again on the next call.

    python benchmarks/conv_winograd.py                 # 512x384 (a 512 px landscape image), 2 threads
    python benchmarks/conv_winograd.py --size 1024 --json
    python benchmarks/conv_winograd.py --bf16          # also bfloat16 oneDNN (default if the CPU has it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F

from facestyle.device import native_bfloat16
from facestyle.heap import retained_heap
from facestyle.models.vgg import VGG19_CFG
from facestyle.models.winograd import WinogradConv2d, worth_winograd


def vgg19_conv_shapes(height: int, width: int) -> list[tuple[str, int, int, int, int]]:
    """(name, C_in, C_out, H, W) of VGG19's convolutions up to conv5_1 for an input of height x width."""
    shapes, c_in, block, conv, h, w = [], 3, 1, 1, height, width
    for item in VGG19_CFG:
        if item == "M":
            block, conv, h, w = block + 1, 1, h // 2, w // 2
            continue
        shapes.append((f"conv{block}_{conv}", c_in, int(item), h, w))
        if (block, conv) == (5, 1):
            break
        c_in, conv = int(item), conv + 1
    return shapes


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_layers(size: int, repeats: int, bf16: bool = False) -> list[dict]:
    """One row per VGG19 convolution: forward and forward + input-gradient times, ms, of each path
    (with ``bf16`` also oneDNN channels-last in bfloat16, what ``stylize --half`` runs on the CPU)."""
    rows = []
    for name, c_in, c_out, h, w in vgg19_conv_shapes(size * 3 // 4, size):
        conv = WinogradConv2d(c_in, c_out).requires_grad_(False)
        x = torch.randn(1, c_in, h, w).relu()
        upstream = torch.randn(1, c_out, h, w)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        w_cl = conv.weight.contiguous(memory_format=torch.channels_last)

        def torch_nchw(x=x, conv=conv):
            return F.conv2d(x, conv.weight, conv.bias, padding=1)

        def torch_cl(x=x_cl, w=w_cl, conv=conv):
            return F.conv2d(x, w, conv.bias, padding=1)

        def torch_cl_bf16(x, w=w_cl.bfloat16(), b=conv.bias.bfloat16()):
            return F.conv2d(x, w, b, padding=1)

        def both(fn, x, upstream=upstream):
            def run():
                xi = x.detach().requires_grad_(True)
                fn(xi).backward(upstream.to(xi.dtype))

            return run

        row = {
            "layer": name,
            "c_in": c_in,
            "c_out": c_out,
            "h": h,
            "w": w,
            "winograd_used": worth_winograd(c_in, c_out),
        }
        paths = [("nchw", torch_nchw, x), ("channels_last", torch_cl, x_cl), ("winograd", conv, x_cl)]
        if bf16:
            paths.append(("bf16", torch_cl_bf16, x_cl.bfloat16()))
        for label, fn, xi in paths:
            row[f"{label}_fwd_ms"] = 1e3 * best_time(lambda fn=fn, xi=xi: fn(xi), repeats)
            row[f"{label}_fwd_bwd_ms"] = 1e3 * best_time(both(fn, xi), repeats)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="long side; the short side is 3/4 of it")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--system-heap", action="store_true", help="time without facestyle's retained heap")
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=native_bfloat16(),
        help="also time oneDNN in bfloat16 (stylize --half on the CPU); default: if the CPU has it natively",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with contextlib.nullcontext() if args.system_heap else retained_heap():
        rows = time_layers(args.size, args.repeats, args.bf16)
    heap = "glibc's default heap" if args.system_heap else "retained heap"

    if args.json:
        print(json.dumps({"size": args.size, "threads": args.threads, "heap": heap, "rows": rows}, indent=2))
        return
    print(
        f"VGG19 convolutions at {args.size * 3 // 4}x{args.size}, {args.threads} threads, {heap}, "
        f"best of {args.repeats} (ms)"
    )
    print(
        f"{'layer':<8} {'C_in->C_out':>12} {'HxW':>9} | {'fwd nchw':>9} {'cl':>7} {'wino':>7} {'x':>5} | "
        f"{'fwd+bwd nchw':>12} {'cl':>7} {'wino':>7} {'x':>5} | used"
        + (" | fwd+bwd bf16" if args.bf16 else "")
    )
    totals = {k: 0.0 for k in ("nchw", "chosen", "half")}
    for r in rows:
        f_n, f_c, f_w = r["nchw_fwd_ms"], r["channels_last_fwd_ms"], r["winograd_fwd_ms"]
        b_n, b_c, b_w = r["nchw_fwd_bwd_ms"], r["channels_last_fwd_bwd_ms"], r["winograd_fwd_bwd_ms"]
        totals["nchw"] += r["nchw_fwd_bwd_ms"]
        totals["chosen"] += r["winograd_fwd_bwd_ms"] if r["winograd_used"] else r["channels_last_fwd_bwd_ms"]
        if args.bf16:  # --half: bfloat16 where oneDNN runs, Winograd (float32) where it is used
            totals["half"] += r["winograd_fwd_bwd_ms"] if r["winograd_used"] else r["bf16_fwd_bwd_ms"]
        print(
            f"{r['layer']:<8} {r['c_in']:>5}->{r['c_out']:<5} {r['h']:>4}x{r['w']:<4} | "
            f"{f_n:>9.1f} {f_c:>7.1f} {f_w:>7.1f} {f_n / f_w:>4.2f}x | "
            f"{b_n:>12.1f} {b_c:>7.1f} {b_w:>7.1f} {b_n / b_w:>4.2f}x | "
            f"{'winograd' if r['winograd_used'] else 'oneDNN  '}"
            + (f" | {r['bf16_fwd_bwd_ms']:>13.1f}" if args.bf16 else "")
        )
    print(
        f"all convolutions, forward + input gradient: torch NCHW {totals['nchw']:.0f} ms, facestyle's choice "
        f"(channels-last oneDNN or Winograd per layer) {totals['chosen']:.0f} ms, "
        f"{totals['nchw'] / totals['chosen']:.2f}x"
    )
    if args.bf16:
        print(
            f"with --half (bfloat16 oneDNN where oneDNN is used, float32 Winograd elsewhere): "
            f"{totals['half']:.0f} ms, {totals['chosen'] / totals['half']:.2f}x over the float32 choice"
        )


if __name__ == "__main__":
    main()
