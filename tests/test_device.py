"""Device choice and the CPU's bfloat16 capability probe."""

from __future__ import annotations

import pytest
import torch

from facestyle.device import available_devices, native_bfloat16, resolve_device
from facestyle.errors import ParameterError


def test_requested_device_and_environment_override(monkeypatch):
    monkeypatch.delenv("FACESTYLE_DEVICE", raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("FACESTYLE_DEVICE", "cuda:1")
    assert resolve_device() == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit request wins


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps", "meta", "bogus"])
def test_devices_this_machine_lacks_are_one_line_parameter_errors(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert available_devices() == ["cpu"]
    with pytest.raises(ParameterError) as info:
        resolve_device(name)
    message = str(info.value)
    assert message.startswith(f"device={name!r} is not") and message.endswith("available here: cpu")
    assert "\n" not in message


def test_native_bfloat16_follows_torch_probes(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert native_bfloat16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bfloat16() is True


def test_native_bfloat16_is_false_when_torch_has_no_probe(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert native_bfloat16() is False
