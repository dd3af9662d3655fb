"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a plain ``nn.Module``.

The architecture is dlib's ``anet_type`` (examples/dnn_face_recognition_ex.cpp): a 29-conv ResNet on a
150x150 RGB chip that outputs a raw 128-d descriptor (same person when the Euclidean distance is < 0.6).
Reproducing dlib's numbers needs dlib's conventions, which differ from torchvision's in three places:

* strided convolutions and pools use **no padding** (dlib's default padding is ``filter/2`` only for
  stride 1), and output size is ``1 + (in + 2*pad - filter) // stride``, the same floor formula as torch;
* ``add_prev`` adds tensors of **different shapes** by zero-extending both to the larger size in every
  dimension (aligned at channel 0 / top-left). This happens in every "down" block (channels double) and,
  spatially, in the last two: the strided 3x3 conv maps 8x8 to 3x3 (then 4x4 to 1x1) while the 2x2/2
  average pool of the shortcut maps 8x8 to 4x4 (4x4 to 2x2), so the block output is 4x4 (2x2) with the
  conv branch in its top-left corner only;
* the "down" shortcut is a 2x2 stride-2 average pool of the block input (no padding; dlib averages over
  the window clipped to the image, but with padding 0 and floor sizing every window is whole, so this
  equals ``F.avg_pool2d(x, 2)``), not a 1x1 convolution.

dlib's ``affine`` layer is a frozen per-channel scale and shift that always follows a conv here, so it is
folded into the conv's weight and bias at load time (one multiply per weight, exact up to float32
rounding), which removes 29 elementwise passes. Input normalisation ((pixel - mean_rgb) / 256, means
read from the model file) lives in the module as buffers so callers pass raw 0..255 RGB pixels.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facestyle.errors import ImageError
from facestyle.models import dlib_format as dl

__all__ = [
    "CHIP_SIZE",
    "DESCRIPTOR_SIZE",
    "DlibResNet",
    "anet_spec",
    "chips_to_tensor",
    "load_dlib_resnet",
    "trunk_features",
    "add_into",
    "zero_extended_add",
]

CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
#: dlib's defaults for input_rgb_image_sized; the loader replaces them with the values in the file.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)

# (channels, number of plain residual blocks, whether the level starts with a "down" block), input first.
_LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),  # alevel4
    (64, 3, True),  # alevel3
    (128, 2, True),  # alevel2
    (256, 2, True),  # alevel1
    (256, 0, True),  # alevel0
)


def level_end_blocks() -> list[int]:
    """Index (into ``DlibResNet.blocks``) of the last block of each resolution level, input first."""
    ends, i = [], -1
    for _channels, plain, down in _LEVELS:
        i += plain + int(down)
        ends.append(i)
    return ends


# ---------------------------------------------------------------------------------------------------
# The dlib network type, for the file reader


def _block(n: int, stride: int, sub: dl.NetSpec) -> dl.NetSpec:
    return dl.affine(dl.con(n, 3, 3, 1, 1, dl.relu(dl.affine(dl.con(n, 3, 3, stride, stride, sub)))))


def _ares(n: int, sub: dl.NetSpec) -> dl.NetSpec:
    return dl.relu(dl.add_prev(1, _block(n, 1, dl.tag(1, sub))))


def _ares_down(n: int, sub: dl.NetSpec) -> dl.NetSpec:
    return dl.relu(
        dl.add_prev(2, dl.avg_pool(2, 2, 2, 2, dl.skip(1, dl.tag(2, _block(n, 2, dl.tag(1, sub))))))
    )


def anet_spec() -> dl.NetSpec:
    """dlib's ``anet_type`` (the face-recognition network) written with the reader's constructors."""
    net = dl.max_pool(
        3, 3, 2, 2, dl.relu(dl.affine(dl.con(32, 7, 7, 2, 2, dl.input_rgb_image_sized(CHIP_SIZE))))
    )
    for channels, plain, down in _LEVELS:
        if down:
            net = _ares_down(channels, net)
        for _ in range(plain):
            net = _ares(channels, net)
    return dl.loss_metric(dl.fc(DESCRIPTOR_SIZE, dl.avg_pool(0, 0, 1, 1, net), bias=False))


# ---------------------------------------------------------------------------------------------------
# Modules


def zero_extended_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev`` on NCHW tensors: zero-extend both to the larger C, H and W, then add.

    The smaller tensor occupies the low channels and the top-left corner, as in dlib's ``tt::add``.
    Returns a new tensor; see :func:`add_into` for the allocation-free form used in the network.
    """
    return add_into(a.clone(), b)


def add_into(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``zero_extended_add(a, b)``, reusing ``a``'s storage whenever ``a`` is at least as large as ``b``.

    In the "down" blocks the conv branch usually has more channels and the same or larger spatial size
    than the pooled shortcut, so the shortcut is added into a channel/corner slice of it in place,
    instead of padding both operands.
    """
    if a.shape == b.shape:
        return a.add_(b)
    target = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]
    if list(a.shape) != target:
        pads = (
            0,
            target[3] - a.shape[3],
            0,
            target[2] - a.shape[2],
            0,
            target[1] - a.shape[1],
            0,
            target[0] - a.shape[0],
        )
        a = F.pad(a, pads)
    a[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return a


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    # dlib pads by k//2 only at stride 1; the bias holds the folded affine shift.
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0, bias=True)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, avg-pooled shortcut).

    conv3x3(stride) + affine -> relu -> conv3x3 + affine, added to the shortcut, then relu; the affines
    are folded into the convs.
    """

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        if not down and cin != cout:
            raise ValueError("a stride-1 dlib residual block keeps its channel count")
        self.down = down
        self.conv1 = _conv(cin, cout, 3, 2 if down else 1)
        self.conv2 = _conv(cout, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        # y is a fresh tensor, so the shortcut can be added into it in place.
        y = add_into(y, F.avg_pool2d(x, 2, 2) if self.down else x)
        return F.relu(y, inplace=True)


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: (N, 3, 150, 150) RGB pixel values 0..255 -> (N, 128) raw descriptor.

    The output is NOT L2-normalised: like dlib's ``compute_face_descriptor`` it is the raw fc output
    (norms are typically 1.3-1.6), the space in which dlib's "distance < 0.6 = same person" holds.
    Build with :func:`load_dlib_resnet` to get dlib's weights; a bare
    ``DlibResNet()`` has PyTorch's random initialisation and is only useful as a shell to load into.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_scale", torch.tensor(1.0 / 256.0))
        self.stem = _conv(3, 32, 7, 2)
        blocks: list[ResidualBlock] = []
        cin = 32
        for channels, plain, down in _LEVELS:
            if down:
                blocks.append(ResidualBlock(cin, channels, down=True))
            blocks.extend(ResidualBlock(channels, channels, down=False) for _ in range(plain))
            cin = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, DESCRIPTOR_SIZE, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != CHIP_SIZE or x.shape[3] != CHIP_SIZE:
            raise ImageError(
                f"dlib ResNet expects (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) RGB chips, got {tuple(x.shape)}"
            )
        x = self.features(x)
        return self.fc(x.mean(dim=(2, 3)))

    def features(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The convolutional trunk: RGB pixel values 0..255 of any size -> output of block ``upto``.

        ``upto`` indexes :attr:`blocks` (negative counts from the end, as in Python); None runs them
        all. Block outputs are post-ReLU. This is the one place the trunk is run: the embedding
        (:meth:`forward`), last-stage fine-tuning, the grid detection head and style transfer all
        call it, with the input on the network's device.
        """
        n = len(self.blocks)
        last = n - 1 if upto is None else (upto + n if upto < 0 else upto)
        if not 0 <= last < n:
            raise IndexError(f"the dlib ResNet has blocks 0..{n - 1}, not {upto}")
        # dlib computes (pixel - mean) / 256 in float32. Scaling by 2**-8 is exact, so
        # pixel * 2**-8 + (-mean * 2**-8) rounds identically, and addcmul does it in one pass.
        x = torch.addcmul(self.mean_rgb * -self.inv_scale, self._match_layout(x), self.inv_scale)
        x = F.relu(self.stem(x), inplace=True)
        x = F.max_pool2d(x, 3, 2)
        for block in itertools.islice(self.blocks, last + 1):
            x = block(x)
        return x

    def _match_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Give the input the weights' memory layout: a mismatch makes every conv reorder its input.

        ``chips_to_tensor`` already returns a channels-last view of NHWC chips, so this is usually free.
        """
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


@torch.inference_mode()
def trunk_features(net: DlibResNet, images: np.ndarray, upto: int, batch: int = 32) -> torch.Tensor:
    """:meth:`DlibResNet.features` of ``(N, H, W, 3)`` uint8 RGB images, in batches on the network's
    device; returns a float32 CPU tensor ``(N, C, h, w)``. Frozen use only (inference mode)."""
    device = net.stem.weight.device
    outs = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).to(device)
        outs.append(net.features(x.permute(0, 3, 1, 2).float(), upto=upto).float().cpu())
    if not outs:
        raise ValueError("no images")
    return torch.cat(outs).contiguous()


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """(N, 150, 150, 3) or (150, 150, 3) uint8 RGB chips -> (N, 3, 150, 150) float32 pixel values."""
    arr = np.asarray(chips)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ImageError(f"expected {CHIP_SIZE}x{CHIP_SIZE} RGB chips, got an array of shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()


# ---------------------------------------------------------------------------------------------------
# Loading dlib's weights


class _Layers:
    """Forward-order cursor over the layers read from the file, checking each is what the module expects."""

    def __init__(self, net: dl.DlibNet) -> None:
        self._layers = net.layers
        self._i = 0
        self._source = net.source

    def take(self, kind: str) -> dl.DlibLayer:
        if self._i >= len(self._layers):
            raise dl.DlibFormatError(f"{self._source}: the network ends before a {kind} layer")
        layer = self._layers[self._i]
        if layer.kind != kind:
            raise dl.DlibFormatError(f"{self._source}: layer {self._i} is {layer.kind}, expected {kind}")
        self._i += 1
        return layer

    def done(self) -> None:
        if self._i != len(self._layers):
            raise dl.DlibFormatError(f"{self._source}: {len(self._layers) - self._i} unexpected extra layers")


def _fold_conv_affine(conv: nn.Conv2d, con: dl.DlibLayer, aff: dl.DlibLayer, source: str) -> None:
    """Load conv ``con`` followed by the per-channel affine ``aff`` into ``conv`` as one conv with bias."""
    weight = con.params["weight"]
    bias = con.params.get("bias", np.zeros(weight.shape[0], np.float32))
    if tuple(weight.shape) != tuple(conv.weight.shape):
        raise dl.DlibFormatError(f"{source}: conv weight {weight.shape}, expected {tuple(conv.weight.shape)}")
    if aff.attrs.get("disabled"):
        gamma = np.ones(weight.shape[0], np.float32)
        beta = np.zeros(weight.shape[0], np.float32)
    else:
        gamma = aff.params["gamma"].reshape(-1)
        beta = aff.params["beta"].reshape(-1)
    if aff.attrs.get("mode") != 0 or gamma.shape[0] != weight.shape[0]:
        raise dl.DlibFormatError(
            f"{source}: affine after a conv must be per-channel ({weight.shape[0]} values)"
        )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight * gamma[:, None, None, None]))
        conv.bias.copy_(torch.from_numpy(bias * gamma + beta))


def _load_block(block: ResidualBlock, layers: _Layers, source: str) -> None:
    layers.take("tag")
    _fold_conv_affine(block.conv1, layers.take("con"), layers.take("affine"), source)
    layers.take("relu")
    _fold_conv_affine(block.conv2, layers.take("con"), layers.take("affine"), source)
    if block.down:
        layers.take("tag")
        layers.take("skip")
        pool = layers.take("avg_pool")
        if (pool.attrs["nr"], pool.attrs["stride_y"], pool.attrs["padding_y"]) != (2, 2, 0):
            raise dl.DlibFormatError(f"{source}: unexpected shortcut pooling {pool.attrs}")
    layers.take("add_prev")
    layers.take("relu")


def load_dlib_net_into(model: DlibResNet, net: dl.DlibNet) -> DlibResNet:
    """Copy the weights of a parsed dlib ``anet_type`` into ``model`` (folding affines into convs)."""
    layers = _Layers(net)
    source = net.source
    inp = layers.take("input_rgb_image_sized")
    with torch.no_grad():
        model.mean_rgb.copy_(torch.from_numpy(inp.params["mean_rgb"]).view(1, 3, 1, 1))
    _fold_conv_affine(model.stem, layers.take("con"), layers.take("affine"), source)
    layers.take("relu")
    layers.take("max_pool")
    for block in model.blocks:
        _load_block(block, layers, source)
    layers.take("avg_pool")
    fc = layers.take("fc")
    weight = fc.params["weight"]  # dlib stores (num_inputs, num_outputs); torch wants (out, in)
    if weight.T.shape != tuple(model.fc.weight.shape):
        raise dl.DlibFormatError(
            f"{source}: fc weight {weight.shape}, expected transposed {model.fc.weight.shape}"
        )
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
    layers.done()
    return model


def _uninitialised_shell() -> DlibResNet:
    """A :class:`DlibResNet` with its parameters allocated but not randomly initialised.

    The loader overwrites every parameter (and :class:`_Layers` checks that every layer of the file was
    used); drawing 5.6M random weights first only to discard them was about a fifth of the load time of
    a one-off ``facestyle compare``. The shell is built on the meta device and its tensors allocated
    one by one: ``Module.to_empty`` would do the same but imports sympy (0.4 s) on the way.
    """
    with torch.device("meta"):
        model = DlibResNet()
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(torch.empty(param.shape), requires_grad=False)
    with torch.no_grad():
        model.mean_rgb = torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
        model.inv_scale = torch.tensor(1.0 / 256.0)
    return model


def load_dlib_resnet(path: str | Path, channels_last: bool = True) -> DlibResNet:
    """dlib's face-recognition ResNet with the weights of the dlib model file ``path``, in eval mode,
    on the CPU, frozen.

    The registry's ``dlib-resnet-v1`` entry calls this with its verified file
    (``facestyle.models.registry.create("dlib-resnet-v1")``). With ``channels_last`` (the default) the
    weights are stored NHWC, which oneDNN runs faster on CPU; results are the same to float32 rounding.
    Raises :class:`~facestyle.models.dlib_format.DlibFormatError` (a ChecksumError) for a bad file.
    """
    net = dl.read_dlib_net(path, anet_spec())
    model = load_dlib_net_into(_uninitialised_shell(), net)
    model.eval().requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
