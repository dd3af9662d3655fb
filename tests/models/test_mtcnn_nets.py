"""Our own P/R/O-Net modules compute what facenet-pytorch's do, with the same weight files.

facenet-pytorch is the reference (it is installed as the weights' source); facestyle no longer imports
it to detect faces, which saves about a second of start-up (benchmarks/cold_start.py).
"""

from __future__ import annotations

import pytest
import torch

from facestyle.models.builders import mtcnn_nets
from facestyle.models.registry import MTCNN
from facestyle.models.weights import load_torch_state


@pytest.mark.parametrize(
    "index,filename,reference_class,shape",
    [
        (0, "pnet.pt", "PNet", (2, 3, 37, 51)),
        (1, "rnet.pt", "RNet", (7, 3, 24, 24)),
        (2, "onet.pt", "ONet", (7, 3, 48, 48)),
    ],
)
def test_same_outputs_as_facenet_pytorch(
    index: int, filename: str, reference_class: str, shape: tuple
) -> None:
    import facenet_pytorch.models.mtcnn as reference

    ours = mtcnn_nets(MTCNN, "cpu")[index]
    theirs = getattr(reference, reference_class)(pretrained=False)
    theirs.load_state_dict(load_torch_state(MTCNN, filename))
    theirs.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(index)) * 0.5
    with torch.no_grad():
        got, want = ours(x), theirs(x)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        # Measured: within 2.8e-7 (ours run channels-last, a different summation order); float32 rounding.
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_weights_load_key_for_key() -> None:
    from facestyle.models.mtcnn import NETWORKS

    for filename, network in NETWORKS.items():
        state = load_torch_state(MTCNN, filename)
        missing, unexpected = network().load_state_dict(state, strict=False)
        assert not missing and not unexpected, (filename, missing, unexpected)


def test_loaded_networks_stay_channels_last() -> None:
    """The speed of our MTCNN rests on NHWC conv weights (benchmarks/detect.py); loading the state dict
    and moving to a device must not turn them back to NCHW."""
    for net in mtcnn_nets(MTCNN, "cpu"):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs
        for conv in convs:
            assert conv.weight.is_contiguous(memory_format=torch.channels_last), type(net).__name__
