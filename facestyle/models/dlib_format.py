"""Reader for dlib's binary serialisation format, as used by its DNN model files (``*.dat``).

dlib writes a network by recursing from the loss layer inwards: every wrapper (``add_layer``,
``add_tag_layer``, ``add_skip_layer``) writes its own version number and then its *sub-network first*
and its layer details after. The file therefore holds a run of wrapper versions followed by the layers
in forward order (input first). Nothing in the stream says which wrapper comes next, and tag ids are
not stored at all, so (exactly like dlib's C++ ``deserialize``) the reader must be told the network's
type. That type is a :class:`NetSpec` tree, built with the small constructors below that mirror dlib's
templates (``con``, ``affine``, ``tag``, ``skip``, ...).

Encodings (dlib/serialize.h, dlib/float_details.h, dlib/cuda/tensor.h):

* integers: a control byte (bit 7 = negative, low 4 bits = number of bytes) then the absolute value's
  bytes, little-endian;
* bool: the ASCII byte ``'1'`` or ``'0'``;
* floating point: two integers, a 64-bit mantissa and a 16-bit exponent, value = mantissa * 2**exponent
  (exponents 32000/32001/32002 mean +inf/-inf/nan);
* string: its length as an integer, then the raw bytes;
* tensor: version 2, then num_samples, k, nr, nc as integers, then that many little-endian float32;
  an ``alias_tensor`` (a view descriptor into a layer's params) is version 1 and the same four sizes.

Everything malformed -- truncated data, an unexpected version string, absurd sizes, trailing bytes --
raises :class:`DlibFormatError` (a :class:`~facestyle.errors.ChecksumError`, so the CLI maps it to the
"weights are bad" exit code) with a one-line message naming the file and the byte offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facestyle.errors import ChecksumError

__all__ = [
    "DlibFormatError",
    "DlibLayer",
    "DlibNet",
    "DlibStream",
    "NetSpec",
    "add_prev",
    "affine",
    "avg_pool",
    "con",
    "fc",
    "input_rgb_image_sized",
    "loss_metric",
    "max_pool",
    "read_dlib_net",
    "relu",
    "skip",
    "tag",
]

# float_details' special exponents.
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
# A tensor this large (elements) in a face model file can only be corruption; refuse before allocating.
_MAX_TENSOR_ELEMENTS = 1 << 31


class DlibFormatError(ChecksumError):
    """A dlib model file that cannot be parsed: truncated, corrupt, or of another network type."""


# ---------------------------------------------------------------------------------------------------
# Primitive stream


class DlibStream:
    """Cursor over the bytes of a dlib-serialised object, with one reader per primitive type."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self._data = memoryview(data)
        self.pos = 0
        self.source = source

    # -- errors -------------------------------------------------------------------------------------
    def error(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: not a valid dlib model file ({what} at byte {self.pos})")

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self._data):
            raise self.error(f"truncated: {what} needs {n} bytes, {self.remaining} left")
        chunk = self._data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    # -- integers -----------------------------------------------------------------------------------
    def _int(self, max_bytes: int, signed: bool, what: str) -> int:
        start = self.pos
        control = self._take(1, what)[0]
        negative = bool(control & 0x80)
        size = control & 0x0F
        # dlib rejects a zero length and lengths wider than the target type; the three bits in between
        # are reserved and always zero in files dlib writes.
        if size == 0 or size > max_bytes or control & 0x70 or (negative and not signed):
            self.pos = start
            raise self.error(f"bad integer control byte 0x{control:02x} for {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if negative else value

    def read_int(self, what: str = "integer", max_bytes: int = 8) -> int:
        """A signed integer (dlib's ``int``, ``long``, ``int64``...)."""
        return self._int(max_bytes, True, what)

    def read_uint(self, what: str = "unsigned integer", max_bytes: int = 8) -> int:
        """An unsigned integer (dlib's ``unsigned long``, ``size_t``...)."""
        return self._int(max_bytes, False, what)

    # -- other scalars ------------------------------------------------------------------------------
    def read_bool(self, what: str = "bool") -> bool:
        byte = self._take(1, what)[0]
        if byte not in (ord("0"), ord("1")):
            self.pos -= 1
            raise self.error(f"bad bool byte 0x{byte:02x} for {what}")
        return byte == ord("1")

    def read_float(self, what: str = "float") -> float:
        """A float/double in dlib's portable form: mantissa * 2**exponent.

        dlib also reads a legacy ASCII form (control byte with bits 0x70 set); model files of the DNN era
        never use it, so it is rejected as corruption rather than half-supported.
        """
        mantissa = self.read_int(f"{what} mantissa", 8)
        exponent = self.read_int(f"{what} exponent", 2)
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        if exponent == _EXP_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_string(self, what: str = "string", max_len: int = 1 << 20) -> str:
        n = self.read_uint(f"{what} length")
        if n > max_len:
            raise self.error(f"string length {n} for {what} is implausible")
        raw = bytes(self._take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"non-ASCII {what} {raw[:32]!r}") from None

    def expect_version(self, allowed: tuple[str, ...], what: str) -> str:
        """Read a layer's version string and check it is one dlib's reader accepts."""
        start = self.pos
        version = self.read_string(f"{what} version")
        if version not in allowed:
            self.pos = start
            raise self.error(f"expected {what} version {' or '.join(map(repr, allowed))}, found {version!r}")
        return version

    def expect_int_version(self, lo: int, hi: int, what: str) -> int:
        start = self.pos
        version = self.read_int(f"{what} version")
        if not lo <= version <= hi:
            self.pos = start
            raise self.error(f"unsupported {what} version {version}")
        return version

    # -- tensors ------------------------------------------------------------------------------------
    def _tensor_header(self, what: str, version: int) -> tuple[int, int, int, int]:
        self.expect_int_version(version, version, f"{what} tensor")
        dims = tuple(self.read_int(f"{what} tensor dimension") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative {what} tensor dimension {dims}")
        if math.prod(dims) > _MAX_TENSOR_ELEMENTS:
            raise self.error(f"implausible {what} tensor shape {dims}")
        return dims  # type: ignore[return-value]

    def read_tensor(self, what: str = "tensor") -> np.ndarray:
        """A ``resizable_tensor``: (num_samples, k, nr, nc) float32, copied out of the file buffer."""
        dims = self._tensor_header(what, 2)
        raw = self._take(4 * math.prod(dims), f"{what} tensor data")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only its shape is stored (it is a view into a layer's ``params``)."""
        return self._tensor_header(what, 1)


# ---------------------------------------------------------------------------------------------------
# Parsed layers


@dataclass
class DlibLayer:
    """One computational (or bookkeeping) layer read from a dlib network, in forward order.

    ``kind`` is dlib's layer name without the trailing underscore ("con", "affine", "relu", "max_pool",
    "avg_pool", "add_prev", "fc", "tag", "skip", "input_rgb_image_sized"); ``attrs`` holds its
    hyper-parameters and ``params`` its arrays, already split into their named parts
    (e.g. con: ``weight`` (out, in, kh, kw) and ``bias``; affine: per-channel ``gamma`` and ``beta``;
    fc: ``weight`` (num_inputs, num_outputs) exactly as dlib stores it).
    """

    kind: str
    version: str = ""
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A whole network: the loss layer's settings and the layers from the input to the output."""

    loss: DlibLayer
    layers: list[DlibLayer]
    source: str = ""


# ---------------------------------------------------------------------------------------------------
# Network type description (mirrors dlib's templates; needed because the stream is not self-describing)


@dataclass(frozen=True)
class NetSpec:
    """One node of a dlib network type: a wrapper (``layer``/``tag``/``skip``/``loss``) or the input."""

    wrapper: str  # "loss" | "layer" | "tag" | "skip" | "input"
    kind: str  # details type ("con", "relu", ..., "loss_metric", "input_rgb_image_sized") or "" for tag/skip
    sub: NetSpec | None = None
    attrs: tuple = ()  # expected hyper-parameters, as sorted (name, value) pairs; checked while reading


def _layer(kind: str, sub: NetSpec, **attrs) -> NetSpec:
    return NetSpec("layer", kind, sub, tuple(sorted(attrs.items())))


def input_rgb_image_sized(size: int) -> NetSpec:
    return NetSpec("input", "input_rgb_image_sized", None, (("nc", size), ("nr", size)))


def _default_padding(size: int, stride: int) -> int:
    """dlib's default padding for convolutions and pools: ``size // 2`` at stride 1, none when strided."""
    return size // 2 if stride == 1 else 0


def con(num_filters: int, nr: int, nc: int, stride_y: int, stride_x: int, sub: NetSpec) -> NetSpec:
    """dlib's ``con`` with its default padding (see :func:`_default_padding`)."""
    return _layer(
        "con",
        sub,
        num_filters=num_filters,
        nr=nr,
        nc=nc,
        stride_y=stride_y,
        stride_x=stride_x,
        padding_y=_default_padding(nr, stride_y),
        padding_x=_default_padding(nc, stride_x),
    )


def _pool(kind: str, nr: int, nc: int, stride_y: int, stride_x: int, sub: NetSpec) -> NetSpec:
    return _layer(
        kind,
        sub,
        nr=nr,
        nc=nc,
        stride_y=stride_y,
        stride_x=stride_x,
        padding_y=_default_padding(nr, stride_y),
        padding_x=_default_padding(nc, stride_x),
    )


def max_pool(nr: int, nc: int, stride_y: int, stride_x: int, sub: NetSpec) -> NetSpec:
    return _pool("max_pool", nr, nc, stride_y, stride_x, sub)


def avg_pool(nr: int, nc: int, stride_y: int, stride_x: int, sub: NetSpec) -> NetSpec:
    """dlib's ``avg_pool``; ``avg_pool(0, 0, 1, 1, ...)`` is ``avg_pool_everything`` (window = whole map)."""
    return _pool("avg_pool", nr, nc, stride_y, stride_x, sub)


def affine(sub: NetSpec) -> NetSpec:
    return _layer("affine", sub)


def relu(sub: NetSpec) -> NetSpec:
    return _layer("relu", sub)


def fc(num_outputs: int, sub: NetSpec, bias: bool = True) -> NetSpec:
    return _layer("fc", sub, num_outputs=num_outputs, bias_mode=0 if bias else 1)


def add_prev(tag_id: int, sub: NetSpec) -> NetSpec:
    return _layer("add_prev", sub, tag=tag_id)


def tag(tag_id: int, sub: NetSpec) -> NetSpec:
    return NetSpec("tag", "", sub, (("id", tag_id),))


def skip(tag_id: int, sub: NetSpec) -> NetSpec:
    return NetSpec("skip", "", sub, (("id", tag_id),))


def loss_metric(sub: NetSpec) -> NetSpec:
    return NetSpec("loss", "loss_metric", sub)


# ---------------------------------------------------------------------------------------------------
# Layer-details readers (one per dlib layer class; version strings as dlib's deserialize accepts them)


def _check_attrs(s: DlibStream, layer: DlibLayer, expected: dict, start: int) -> None:
    for name, want in expected.items():
        got = layer.attrs.get(name)
        if got != want:
            s.pos = start
            raise s.error(f"{layer.kind} layer has {name}={got}, the network type needs {want}")


def _read_con(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("con_4", "con_5", "con_6"), "con")
    params = s.read_tensor("con params")
    attrs = {
        "num_filters": s.read_int("con num_filters"),
        "nr": s.read_int("con nr"),
        "nc": s.read_int("con nc"),
        "stride_y": s.read_int("con stride_y"),
        "stride_x": s.read_int("con stride_x"),
        "padding_y": s.read_int("con padding_y"),
        "padding_x": s.read_int("con padding_x"),
    }
    filters = s.read_alias_tensor("con filters")
    biases = s.read_alias_tensor("con biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_mult", "bias_wd_mult"):
        attrs[name] = s.read_float(f"con {name}")
    attrs["use_bias"] = s.read_bool("con use_bias") if version in ("con_5", "con_6") else True
    attrs["use_relu"] = s.read_bool("con use_relu") if version == "con_6" else False
    n_filter = math.prod(filters)
    n_bias = math.prod(biases) if attrs["use_bias"] else 0
    flat = params.reshape(-1)
    if filters[0] != attrs["num_filters"] or (filters[2], filters[3]) != (attrs["nr"], attrs["nc"]):
        raise s.error(f"con filter shape {filters} disagrees with its settings {attrs}")
    if flat.size != n_filter + n_bias:
        raise s.error(f"con params hold {flat.size} values, filters {filters} + biases {biases} need more")
    out = {"weight": flat[:n_filter].reshape(filters)}
    if n_bias:
        out["bias"] = flat[n_filter : n_filter + n_bias].copy()
    return DlibLayer("con", version, attrs, out)


def _bn_as_affine(s: DlibStream, version: str) -> DlibLayer:
    """A ``bn_`` layer stored where an ``affine_`` is expected: fold its running statistics, as dlib does.

    dlib computes, in float32, gamma' = gamma / sqrt(running_var + eps) and beta' = beta - gamma' * mean.
    """
    params = s.read_tensor("bn params").reshape(-1)
    gamma_shape = s.read_alias_tensor("bn gamma")
    s.read_alias_tensor("bn beta")
    for what in ("means", "invstds"):
        s.read_tensor(f"bn {what}")
    running_means = s.read_tensor("bn running_means").reshape(-1)
    running_vars = s.read_tensor("bn running_variances").reshape(-1)
    s.read_uint("bn num_updates")
    s.read_uint("bn running_stats_window_size")
    for what in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        s.read_float(f"bn {what}")
    eps = s.read_float("bn eps")
    n = math.prod(gamma_shape)
    if params.size != 2 * n or running_means.size != n or running_vars.size != n:
        raise s.error("bn parameter sizes disagree")
    gamma = params[:n] / np.sqrt(running_vars + np.float32(eps))
    beta = params[n:] - gamma * running_means
    mode = 0 if version == "bn_con2" else 1
    return DlibLayer("affine", version, {"mode": mode}, {"gamma": gamma, "beta": beta})


def _read_affine(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("affine_", "affine_2", "bn_con2", "bn_fc2"), "affine")
    if version.startswith("bn_"):
        return _bn_as_affine(s, version)
    params = s.read_tensor("affine params").reshape(-1)
    gamma_shape = s.read_alias_tensor("affine gamma")
    beta_shape = s.read_alias_tensor("affine beta")
    mode = s.read_int("affine mode")
    disabled = s.read_bool("affine disabled") if version == "affine_2" else False
    n = math.prod(gamma_shape)
    if disabled:
        return DlibLayer("affine", version, {"mode": mode, "disabled": True}, {})
    if beta_shape != gamma_shape or params.size != 2 * n:
        raise s.error(f"affine params hold {params.size} values for gamma {gamma_shape}")
    return DlibLayer(
        "affine",
        version,
        {"mode": mode, "disabled": False},
        {"gamma": params[:n].copy(), "beta": params[n:].copy()},
    )


def _read_relu(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("relu_", "relu_2"), "relu")
    disabled = s.read_bool("relu disabled") if version == "relu_2" else False
    return DlibLayer("relu", version, {"disabled": disabled})


def _read_pool(kind: str):
    def read(s: DlibStream) -> DlibLayer:
        version = s.expect_version((f"{kind}_2",), kind)
        attrs = {
            "nr": s.read_int(f"{kind} nr"),
            "nc": s.read_int(f"{kind} nc"),
            "stride_y": s.read_int(f"{kind} stride_y"),
            "stride_x": s.read_int(f"{kind} stride_x"),
            "padding_y": s.read_int(f"{kind} padding_y"),
            "padding_x": s.read_int(f"{kind} padding_x"),
        }
        return DlibLayer(kind, version, attrs)

    return read


def _read_fc(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("fc_2", "fc_3"), "fc")
    num_outputs = s.read_uint("fc num_outputs")
    num_inputs = s.read_uint("fc num_inputs")
    params = s.read_tensor("fc params").reshape(-1)
    weights = s.read_alias_tensor("fc weights")
    s.read_alias_tensor("fc biases")
    bias_mode = s.read_int("fc bias_mode")
    attrs = {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_mult", "bias_wd_mult"):
        attrs[name] = s.read_float(f"fc {name}")
    attrs["use_bias"] = s.read_bool("fc use_bias") if version == "fc_3" else True
    has_bias = bias_mode == 0 and attrs["use_bias"]
    n_w = num_inputs * num_outputs
    if math.prod(weights) != n_w or params.size != n_w + (num_outputs if has_bias else 0):
        raise s.error(f"fc params hold {params.size} values for {num_inputs}x{num_outputs} weights")
    out = {"weight": params[:n_w].reshape(num_inputs, num_outputs)}
    if has_bias:
        out["bias"] = params[n_w:].copy()
    return DlibLayer("fc", version, attrs, out)


def _read_add_prev(s: DlibStream) -> DlibLayer:
    return DlibLayer("add_prev", s.expect_version(("add_prev_",), "add_prev"))


def _read_input_rgb_image_sized(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("input_rgb_image_sized",), "input layer")
    means = [s.read_float(f"input avg_{c}") for c in ("red", "green", "blue")]
    nr = s.read_uint("input nr")
    nc = s.read_uint("input nc")
    return DlibLayer(
        "input_rgb_image_sized", version, {"nr": nr, "nc": nc}, {"mean_rgb": np.asarray(means, np.float32)}
    )


def _read_loss_metric(s: DlibStream) -> DlibLayer:
    version = s.expect_version(("loss_metric_", "loss_metric_2"), "loss")
    if version == "loss_metric_":
        return DlibLayer("loss_metric", version, {"margin": 0.1, "distance_threshold": 0.75})
    margin = s.read_float("loss margin")
    dist = s.read_float("loss distance threshold")
    return DlibLayer("loss_metric", version, {"margin": margin, "distance_threshold": dist})


_DETAILS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool("max_pool"),
    "avg_pool": _read_pool("avg_pool"),
    "fc": _read_fc,
    "add_prev": _read_add_prev,
    "input_rgb_image_sized": _read_input_rgb_image_sized,
    "loss_metric": _read_loss_metric,
}

# Attributes that are part of a layer's type in dlib (template arguments) and so must match the spec.
# "tag" (add_prev's tag id) is not stored in the file: it comes from the spec alone.
_SPEC_ONLY = {"tag"}


# ---------------------------------------------------------------------------------------------------
# Wrappers


def _read_details(s: DlibStream, spec: NetSpec) -> DlibLayer:
    start = s.pos
    layer = _DETAILS[spec.kind](s)
    expected = dict(spec.attrs)
    for name in _SPEC_ONLY & expected.keys():
        layer.attrs[name] = expected.pop(name)
    _check_attrs(s, layer, expected, start)
    return layer


def _skip_training_state(s: DlibStream, what: str, n_tensors: int) -> None:
    """Bookkeeping dlib saves next to every layer (setup flags, cached output, gradients): read and drop."""
    for flag in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        s.read_bool(f"{what} {flag}")
    for i in range(n_tensors):
        s.read_tensor(f"{what} state {i}")


def _read_node(s: DlibStream, spec: NetSpec, out: list[DlibLayer]) -> None:
    if spec.wrapper == "input":
        out.append(_read_details(s, spec))
        return
    if spec.sub is None:
        raise ValueError(f"network spec node {spec.wrapper}/{spec.kind} has no sub-network")
    if spec.wrapper == "layer" and spec.sub.wrapper == "input":
        # add_layer<DETAILS, INPUT_LAYER>: v2 or v3 (v3 adds _sample_expansion_factor).
        version = s.expect_int_version(2, 3, "add_layer")
        out.append(_read_details(s, spec.sub))
        layer = _read_details(s, spec)
        _skip_training_state(s, spec.kind, 3)  # x_grad, cached_output, grad_final
        if version >= 3:
            s.read_int("add_layer sample_expansion_factor")
        out.append(layer)
    elif spec.wrapper == "layer":
        # add_layer<DETAILS, SUBNET>: v1 or v2 (v2 adds params_grad).
        version = s.expect_int_version(1, 2, "add_layer")
        _read_node(s, spec.sub, out)
        layer = _read_details(s, spec)
        _skip_training_state(s, spec.kind, 3 if version == 2 else 2)  # x_grad, cached_output[, params_grad]
        out.append(layer)
    elif spec.wrapper in ("tag", "skip"):
        if spec.sub.wrapper == "input":
            raise NotImplementedError("a tag directly on the input layer is not supported")
        s.expect_int_version(1, 1, f"add_{spec.wrapper}_layer")
        _read_node(s, spec.sub, out)
        out.append(DlibLayer(spec.wrapper, "", dict(spec.attrs)))
    else:
        raise ValueError(f"unknown network spec wrapper {spec.wrapper!r}")


def parse_dlib_net(data: bytes, spec: NetSpec, source: str = "<bytes>") -> DlibNet:
    """Parse a serialised ``add_loss_layer`` network of type ``spec`` from ``data``."""
    if spec.wrapper != "loss" or spec.sub is None:
        raise ValueError("the network spec must start with a loss layer")
    s = DlibStream(data, source)
    s.expect_int_version(1, 1, "add_loss_layer")
    loss = _read_details(s, spec)
    layers: list[DlibLayer] = []
    _read_node(s, spec.sub, layers)
    if s.remaining:
        raise s.error(f"{s.remaining} unexpected trailing bytes after the network")
    return DlibNet(loss, layers, source)


def read_dlib_net(path: str | Path, spec: NetSpec) -> DlibNet:
    """Read a dlib DNN model file of network type ``spec`` (see :mod:`facestyle.models.dlib_resnet`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"{path}: cannot read dlib model file ({exc.strerror or exc})") from None
    return parse_dlib_net(data, spec, str(path))
