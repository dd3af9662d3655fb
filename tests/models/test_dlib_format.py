"""dlib serialisation reader: hand-encoded primitives, a hand-built tiny network, the real model file,
and clear errors on damaged files."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from facestyle.errors import ChecksumError, FacestyleError
from facestyle.models import dlib_format as dl
from facestyle.models.dlib_resnet import anet_spec, load_dlib_resnet
from facestyle.models.registry import path_of

# ---------------------------------------------------------------------------------------------------
# A minimal encoder for building test files by hand (the inverse of the reader, written from dlib's
# documented format: control byte = sign bit | byte count, then little-endian magnitude).


def enc_int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def enc_float(v: float) -> bytes:
    if v == 0:
        return enc_int(0) + enc_int(0)
    m, e = math.frexp(v)
    mantissa = int(m * (1 << 24))
    return enc_int(mantissa) + enc_int(e - 24)


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_bool(b: bool) -> bytes:
    return b"1" if b else b"0"


def enc_tensor(a: np.ndarray) -> bytes:
    a = np.asarray(a, np.float32)
    dims = a.shape if a.ndim == 4 else (1, a.size, 1, 1)
    return enc_int(2) + b"".join(enc_int(d) for d in dims) + a.astype("<f4").tobytes()


def enc_alias(*dims: int) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in dims)


def training_state(n_tensors: int) -> bytes:
    return b"1" + b"1" + b"0" + enc_tensor(np.zeros((0, 0, 0, 0))) * n_tensors


# ---------------------------------------------------------------------------------------------------
# Primitives


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x07", 7),
        (b"\x02\x2c\x01", 300),
        (b"\x81\x05", -5),
        (b"\x84\x00\x00\x00\x80", -(2**31)),
    ],
)
def test_integers_decode_per_dlib_control_byte(raw: bytes, value: int) -> None:
    s = dl.DlibStream(raw)
    assert s.read_int() == value
    assert s.remaining == 0


def test_floats_are_mantissa_times_power_of_two() -> None:
    # 0.5 = 1 * 2**-1; 122.782f as dlib wrote it into the face model (mantissa 0xf59062, exponent -17).
    s = dl.DlibStream(b"\x01\x01\x81\x01" + b"\x03\x62\x90\xf5\x81\x11" + enc_int(1) + enc_int(32000))
    assert s.read_float() == 0.5
    assert np.float32(s.read_float()) == np.float32(122.782)
    assert s.read_float() == math.inf


def test_strings_bools_and_tensors() -> None:
    data = enc_str("con_5") + b"10" + enc_tensor(np.arange(6, dtype=np.float32).reshape(1, 2, 1, 3))
    s = dl.DlibStream(data)
    assert s.read_string() == "con_5"
    assert s.read_bool() is True
    assert s.read_bool() is False
    t = s.read_tensor()
    assert t.shape == (1, 2, 1, 3)
    np.testing.assert_array_equal(t.reshape(-1), [0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    ("raw", "reader", "message"),
    [
        (b"\x00", "read_int", "control byte"),  # zero length is invalid in dlib
        (b"\x03\x01\x02", "read_int", "truncated"),
        (b"\x81\x01", "read_uint", "control byte"),  # negative where unsigned is required
        (b"x", "read_bool", "bad bool"),
        (b"", "read_string", "truncated"),
    ],
)
def test_malformed_primitives_raise_format_error(raw: bytes, reader: str, message: str) -> None:
    with pytest.raises(dl.DlibFormatError, match=message):
        getattr(dl.DlibStream(raw, "x.dat"), reader)()


def test_tensor_with_missing_data_is_truncated() -> None:
    data = enc_int(2) + enc_int(1) + enc_int(4) + enc_int(1) + enc_int(1) + struct.pack("<3f", 1, 2, 3)
    with pytest.raises(dl.DlibFormatError, match="truncated"):
        dl.DlibStream(data).read_tensor()


# ---------------------------------------------------------------------------------------------------
# A tiny hand-built network: loss_metric<fc_no_bias<2, avg_pool_everything<relu<affine<con<2,3,3,2,2,
# input_rgb_image_sized<8>>>>>>>


TINY_SPEC = dl.loss_metric(
    dl.fc(
        2,
        dl.avg_pool(0, 0, 1, 1, dl.relu(dl.affine(dl.con(2, 3, 3, 2, 2, dl.input_rgb_image_sized(8))))),
        bias=False,
    )
)

CON_W = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 10
CON_B = np.array([0.5, -0.25], np.float32)
FC_W = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # (num_inputs, num_outputs) as dlib stores it


def _con_bytes() -> bytes:
    params = np.concatenate([CON_W.reshape(-1), CON_B])
    out = enc_str("con_5") + enc_tensor(params)
    out += enc_int(2) + enc_int(3) + enc_int(3) + enc_int(2) + enc_int(2) + enc_int(0) + enc_int(0)
    out += enc_alias(2, 3, 3, 3) + enc_alias(1, 2, 1, 1)
    out += enc_float(1.0) + enc_float(1.0) + enc_float(1.0) + enc_float(0.0) + enc_bool(True)
    return out


def _bn_con_bytes(gamma, beta, mean, var, eps) -> bytes:
    out = enc_str("bn_con2") + enc_tensor(np.concatenate([gamma, beta])) + enc_alias(1, 2, 1, 1) * 2
    out += enc_tensor(np.zeros(2)) * 2 + enc_tensor(mean) + enc_tensor(var)
    out += enc_int(10) + enc_int(1000) + enc_float(1.0) * 4 + enc_float(eps)
    return out


def _tiny_net(affine_bytes: bytes) -> bytes:
    inner = enc_int(3) + enc_str("input_rgb_image_sized") + enc_float(122.782) + enc_float(117.001)
    inner += enc_float(104.298) + enc_int(8) + enc_int(8) + _con_bytes() + training_state(3) + enc_int(1)
    net = enc_int(2) + inner + affine_bytes + training_state(3)
    net = enc_int(2) + net + enc_str("relu_") + training_state(3)
    pool = enc_str("avg_pool_2") + b"".join(enc_int(v) for v in (0, 0, 1, 1, 0, 0))
    net = enc_int(2) + net + pool + training_state(3)
    fc = enc_str("fc_2") + enc_int(2) + enc_int(2) + enc_tensor(FC_W.reshape(-1)) + enc_alias(2, 2, 1, 1)
    fc += enc_alias(0, 0, 0, 0) + enc_int(1) + enc_float(1.0) * 2 + enc_float(1.0) + enc_float(0.0)
    net = enc_int(1) + net + fc + training_state(2)  # version-1 add_layer: no params_grad
    return enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6) + net


def test_tiny_network_round_trip() -> None:
    affine = enc_str("affine_2") + enc_tensor([2.0, 3.0, 0.1, 0.2]) + enc_alias(1, 2, 1, 1) * 2
    affine += enc_int(0) + enc_bool(False)
    net = dl.parse_dlib_net(_tiny_net(affine), TINY_SPEC, "tiny.dat")
    assert [layer.kind for layer in net.layers] == [
        "input_rgb_image_sized",
        "con",
        "affine",
        "relu",
        "avg_pool",
        "fc",
    ]
    assert net.loss.attrs["margin"] == pytest.approx(0.04, abs=1e-7)
    np.testing.assert_array_equal(net.layers[0].params["mean_rgb"], np.float32([122.782, 117.001, 104.298]))
    con = net.layers[1]
    np.testing.assert_array_equal(con.params["weight"], CON_W)
    np.testing.assert_array_equal(con.params["bias"], CON_B)
    assert (con.attrs["stride_y"], con.attrs["padding_y"], con.attrs["use_bias"]) == (2, 0, True)
    np.testing.assert_array_equal(net.layers[2].params["gamma"], [2.0, 3.0])
    np.testing.assert_allclose(net.layers[2].params["beta"], [0.1, 0.2])
    np.testing.assert_array_equal(net.layers[5].params["weight"], FC_W)
    assert net.layers[5].attrs["bias_mode"] == 1


def test_batch_norm_in_place_of_affine_is_folded_like_dlib() -> None:
    gamma, beta = np.float32([2.0, 1.0]), np.float32([0.5, -1.0])
    mean, var, eps = np.float32([1.0, -2.0]), np.float32([3.0, 0.0]), 1.0
    net = dl.parse_dlib_net(_tiny_net(_bn_con_bytes(gamma, beta, mean, var, eps)), TINY_SPEC)
    aff = net.layers[2]
    # gamma' = gamma / sqrt(var + eps) = [1, 1]; beta' = beta - gamma' * mean = [-0.5, 1]
    np.testing.assert_allclose(aff.params["gamma"], [1.0, 1.0])
    np.testing.assert_allclose(aff.params["beta"], [-0.5, 1.0])


def test_wrong_hyper_parameter_is_rejected() -> None:
    spec = dl.loss_metric(
        dl.fc(
            2,
            dl.avg_pool(0, 0, 1, 1, dl.relu(dl.affine(dl.con(2, 3, 3, 1, 1, dl.input_rgb_image_sized(8))))),
            bias=False,
        )
    )
    affine = enc_str("affine_") + enc_tensor([1.0, 1.0, 0.0, 0.0]) + enc_alias(1, 2, 1, 1) * 2 + enc_int(0)
    with pytest.raises(dl.DlibFormatError, match=r"con layer has \w+=0, the network type needs 1"):
        dl.parse_dlib_net(_tiny_net(affine), spec, "tiny.dat")


# ---------------------------------------------------------------------------------------------------
# The real model file


@pytest.fixture(scope="module")
def model_path():
    return path_of("dlib-resnet-v1")


def test_real_model_file_parses_completely(model_path) -> None:
    net = dl.read_dlib_net(model_path, anet_spec())
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("relu") == 29
    assert kinds.count("add_prev") == 14 and kinds.count("skip") == 4 and kinds.count("avg_pool") == 5
    assert kinds[0] == "input_rgb_image_sized" and kinds[-1] == "fc"
    assert net.loss.attrs["distance_threshold"] == pytest.approx(0.6)
    np.testing.assert_array_equal(net.layers[0].params["mean_rgb"], np.float32([122.782, 117.001, 104.298]))
    stem = net.layers[1]
    assert stem.params["weight"].shape == (32, 3, 7, 7)
    assert (stem.attrs["stride_y"], stem.attrs["padding_y"]) == (2, 0)
    assert net.layers[-1].params["weight"].shape == (256, 128)
    # Conv weights from the architecture alone: stem 7x7 3->32, then 3x3 convs per residual block.
    convs = [(32, 3, 7)] + [(32, 32, 3)] * 6
    for cin, cout, plain in ((32, 64, 3), (64, 128, 2), (128, 256, 2), (256, 256, 0)):
        convs += [(cout, cin, 3), (cout, cout, 3)] + [(cout, cout, 3)] * (2 * plain)
    expected = sum(o * i * k * k for o, i, k in convs)
    got = sum(layer.params["weight"].size for layer in net.layers if layer.kind == "con")
    assert got == expected


def test_truncated_model_file_gives_one_line_error(model_path, tmp_path) -> None:
    data = model_path.read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(dl.DlibFormatError) as info:
        load_dlib_resnet(bad)
    msg = str(info.value)
    assert "truncated.dat" in msg and "truncated" in msg and "\n" not in msg
    assert isinstance(info.value, ChecksumError) and isinstance(info.value, FacestyleError)
    assert info.value.exit_code == ChecksumError.exit_code


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("version", "expected con version 'con_4' or 'con_5' or 'con_6', found 'con_9'"),
        ("trailing", "2 unexpected trailing bytes"),
        ("empty", "truncated"),
        ("garbage", "integer control byte 0x50"),
    ],
)
def test_corrupt_model_file_gives_format_error(model_path, tmp_path, damage: str, why: str) -> None:
    data = bytearray(model_path.read_bytes())
    if damage == "version":
        at = data.index(b"con_4")
        data[at : at + 5] = b"con_9"
    elif damage == "trailing":
        data += b"\x00\x01"
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"PK\x03\x04 this is a zip, not a dlib model" * 10)
    bad = tmp_path / "bad.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(dl.DlibFormatError, match="bad.dat: not a valid dlib model file") as info:
        load_dlib_resnet(bad)
    assert why in str(info.value)


def test_missing_file_is_a_format_error(tmp_path) -> None:
    with pytest.raises(dl.DlibFormatError, match="cannot read"):
        dl.read_dlib_net(tmp_path / "nope.dat", anet_spec())
