"""Winograd F(4x4, 3x3) convolution for frozen 3x3 layers on the CPU (Lavin & Gray, CVPR 2016).

Why this exists: style transfer spends ~80% of every step in VGG19's 3x3 convolutions, forward and
backward to the pixels, and oneDNN already runs them near this CPU's peak (benchmarks/conv_winograd.py).
The only way left to make a step cheaper is fewer multiplications. Winograd's minimal filtering computes
each 4x4 output tile from a 6x6 input tile with 36 multiplications per channel pair instead of 144. With
the transforms written as matrix products, the work becomes one batched GEMM of 36 (tiles x C_in) @
(C_in x C_out) products, plus the input and output transforms.

The transforms cost memory traffic proportional to the channels, the GEMM to their product, so the trade
pays only for wide layers. :func:`worth_winograd` encodes the measured rule (VGG19's conv3_1 onwards).
Numerically the result matches ``F.conv2d`` to ~1e-5 relative in float32, about as closely as two of
oneDNN's own algorithms match each other.

Only the gradient with respect to the *input* is computed (the backward of a stride-1, pad-1 3x3
convolution is another such convolution, with the kernel flipped and the channels swapped), which is
what optimising an image needs. A layer whose weights require gradients, or that is not on the CPU,
falls back to ``F.conv2d``. A bfloat16 input is computed in float32 (and its gradient returned as
bfloat16), also under CPU autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The F(4x4, 3x3) matrices of Lavin & Gray (2016), interpolation points 0, +-1, +-2 and infinity:
# Y = A^T [(G g G^T) * (B^T d B)] A for a 6x6 input tile d and a 3x3 kernel g (cross-correlation).
_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)
TILE = 4  # output tile side; input tiles are TILE + 2


def _kron(m: tuple) -> Tensor:
    """2-D transform ``M x M^T`` of a flattened tile as one matrix (so it runs as one GEMM)."""
    t = torch.tensor(m, dtype=torch.float64)
    return torch.kron(t, t)


_INPUT_T = _kron(_BT).float()  # (36, 36)
_OUTPUT_T = _kron(_AT).float()  # (16, 36)
_KERNEL_T = _kron(_G)  # (36, 9), float64: the kernel transform is done once, in double


def transform_weights(weight: Tensor) -> Tensor:
    """(C_out, C_in, 3, 3) kernel -> (36, C_in, C_out) Winograd-domain kernel, float32."""
    c_out, c_in = weight.shape[:2]
    flat = weight.detach().to("cpu", torch.float64).reshape(c_out * c_in, 9)
    return (_KERNEL_T @ flat.T).reshape(36, c_out, c_in).transpose(1, 2).float().contiguous()


def conv3x3_nhwc(x: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
    """Stride-1, pad-1 3x3 cross-correlation of one image.

    ``x``: (H, W, C_in) contiguous float32 (one image, channels last); ``kernel``: from
    :func:`transform_weights`. Returns a fresh (1, C_out, H, W) tensor in ``torch.channels_last`` layout.
    """
    h, w, c_in = x.shape
    c_out = kernel.shape[2]
    th, tw = -(-h // TILE), -(-w // TILE)
    # One pixel of zero padding on every side, plus whatever completes the last tile.
    padded = F.pad(x, (0, 0, 1, TILE * tw + 1 - w, 1, TILE * th + 1 - h))
    row = padded.shape[1] * c_in
    # (6, 6, th, tw, C) overlapping tiles as a view, then one copy into GEMM layout.
    tiles = padded.as_strided((6, 6, th, tw, c_in), (row, c_in, TILE * row, TILE * c_in, 1))
    v = (_INPUT_T @ tiles.reshape(36, th * tw * c_in)).view(36, th * tw, c_in)
    m = torch.bmm(v, kernel)  # (36, tiles, C_out): the multiplications that Winograd saves
    y = (_OUTPUT_T @ m.view(36, -1)).view(TILE, TILE, th, tw, c_out).permute(2, 0, 3, 1, 4)
    out = torch.empty((1, c_out, h, w), dtype=x.dtype, memory_format=torch.channels_last)
    dst = out[0].permute(1, 2, 0)  # (H, W, C_out) view of the output's storage
    if h % TILE == 0 and w % TILE == 0:
        dst, src = dst.view(th, TILE, tw, TILE, c_out), y
    else:
        src = y.reshape(TILE * th, TILE * tw, c_out)[:h, :w]
    if bias is not None:
        torch.add(src, bias, out=dst)
    else:
        dst.copy_(src)
    return out


def _conv_batch(x: Tensor, kernel: Tensor, bias: Tensor | None) -> Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    outs = [conv3x3_nhwc(img.permute(1, 2, 0), kernel, bias) for img in x]
    return outs[0] if len(outs) == 1 else torch.cat(outs).contiguous(memory_format=torch.channels_last)


class _FrozenWinograd(torch.autograd.Function):
    """Winograd forward and input-gradient backward; the weights are constants."""

    @staticmethod
    def forward(ctx, x: Tensor, forward_kernel: Tensor, backward_kernel: Tensor, bias: Tensor) -> Tensor:  # noqa: ANN001
        ctx.backward_kernel = backward_kernel
        return _conv_batch(x, forward_kernel, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        return _conv_batch(grad, ctx.backward_kernel, None), None, None, None


def worth_winograd(in_channels: int, out_channels: int) -> bool:
    """Whether the Winograd path is faster than oneDNN for a layer this wide.

    The transforms cost ~C_in + C_out per pixel, the saved multiplications ~C_in * C_out. On this
    project's 2-core AVX-512 machine (benchmarks/conv_winograd.py) 128->256 and wider won (1.6-2.5x) and
    64->64, 64->128 and 128->128 lost (0.5-0.9x), so the line is drawn at a channel product of 128*256.
    """
    return in_channels * out_channels >= 128 * 256


class WinogradConv2d(nn.Conv2d):
    """A frozen 3x3, stride-1, pad-1 ``nn.Conv2d`` that runs Winograd F(4x4, 3x3) on the CPU.

    It is an ``nn.Conv2d`` (same parameters, same state-dict keys), so weights load into it unchanged; the
    Winograd-domain kernels are recomputed whenever the weights change (load, in-place copy, ``.to``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1)
        self._cache_key: tuple | None = None
        self._kernels: tuple[Tensor, Tensor] | None = None

    def _winograd_kernels(self) -> tuple[Tensor, Tensor]:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device)
        if key != self._cache_key or self._kernels is None:
            w = self.weight.detach()
            # Input gradient of a 3x3 pad-1 correlation: correlate with the flipped, channel-swapped kernel.
            self._kernels = (transform_weights(w), transform_weights(w.flip(2, 3).transpose(0, 1)))
            self._cache_key = key
        return self._kernels

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or self.weight.requires_grad:
            return super().forward(x)
        if x.dtype == torch.bfloat16:
            # From layers run in bfloat16 (``stylize --half`` on the CPU). Here Winograd in float32 is
            # about as fast as oneDNN in bfloat16, so the wide layers go back to full precision.
            x = x.float()
        elif x.dtype != torch.float32:
            return super().forward(x)
        forward_kernel, backward_kernel = self._winograd_kernels()
        bias = self.bias.detach() if self.bias is not None else None
        # CPU autocast would demote the transforms' and the GEMM's matrix products to bfloat16, and the
        # transforms (coefficients up to 8) amplify that rounding more than a direct convolution does.
        with torch.autocast("cpu", enabled=False):
            return _FrozenWinograd.apply(x, forward_kernel, backward_kernel, bias)
