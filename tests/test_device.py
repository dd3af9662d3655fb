"""Device choice and the CPU's bfloat16 capability probe."""

from __future__ import annotations

import torch

from facestyle.device import default_device, native_bfloat16


def test_requested_device_and_environment_override(monkeypatch):
    monkeypatch.delenv("FACESTYLE_DEVICE", raising=False)
    assert default_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("FACESTYLE_DEVICE", "cuda:1")
    assert default_device() == torch.device("cuda:1")
    assert default_device("cpu") == torch.device("cpu")  # an explicit request wins


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
