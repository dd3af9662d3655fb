"""Fine-tuning the last stage of the dlib face ResNet together with a classifier.

A frozen backbone only re-weights features it already has; unfreezing its last stage lets the
features themselves adapt to the new classes. Here "last stage" is the final residual block (256
channels, 4 x 4 -> 2 x 2 on a 150 px chip) plus the 128-d projection. Everything before it stays
frozen, so its output (the input of the last stage) is computed once per image and cached, as for the
frozen heads, and an epoch costs only the last block: seconds on a CPU for a few hundred images.

Embeddings stay L2-normalised, so a fine-tuned model is still a face embedder; the classifier on top
is a plain linear layer.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facestyle.models.dlib_resnet import DlibResNet, trunk_features


def stage_inputs(net: DlibResNet, chips: np.ndarray) -> torch.Tensor:
    """Activations entering the last residual block: ``(N, 150, 150, 3)`` uint8 chips -> (N, 256, 4, 4),
    computed on the network's device, returned on the CPU."""
    if not len(chips):
        return torch.zeros(0, 256, 4, 4)
    return trunk_features(net, chips, upto=-2)


class LastStage(nn.Module):
    """Copies of the last residual block and the projection (trainable), then a linear classifier.

    The copies live on the CPU whatever the network's device: :func:`stage_inputs` hands back CPU
    tensors (small, and cached per image), and one block is cheap to train there.
    """

    def __init__(self, net: DlibResNet, n_classes: int) -> None:
        super().__init__()
        block = copy.deepcopy(net.blocks[-1]).cpu()
        self.block = block.to(memory_format=torch.contiguous_format).float()
        self.fc = copy.deepcopy(net.fc).cpu().float()
        # The shared embedder is frozen (requires_grad False); the copies are what we train.
        self.block.requires_grad_(True)
        self.fc.requires_grad_(True)
        self.classifier = nn.Linear(self.fc.out_features, n_classes)

    def embed(self, acts: torch.Tensor) -> torch.Tensor:
        x = self.block(acts.contiguous())
        return F.normalize(self.fc(x.mean(dim=(2, 3))), dim=1)

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(acts))


def tune_last_stage(
    acts: torch.Tensor,
    labels: np.ndarray,
    net: DlibResNet,
    n_classes: int,
    epochs: int = 60,
    lr_stage: float = 1e-4,
    lr_head: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[LastStage, float]:
    """Train the last stage (small learning rate) and the classifier (large) with cross-entropy.

    ``acts`` are :func:`stage_inputs` of the training chips; the network itself stays frozen (the
    stage is a copy). Returns the trained stage (eval mode) and the seconds it took.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LastStage(net, n_classes)
    stage = list(model.block.parameters()) + list(model.fc.parameters())
    opt = torch.optim.Adam(
        [{"params": stage, "lr": lr_stage}, {"params": model.classifier.parameters(), "lr": lr_head}]
    )
    y = torch.from_numpy(np.asarray(labels, np.int64))
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(acts), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(acts[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), time.perf_counter() - t0
