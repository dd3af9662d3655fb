"""Pretrained models: the registry (:mod:`.registry`), weight files (:mod:`.weights`), the networks
(plain ``nn.Module``\\ s) and the builders that put them together.

Import the submodule you need; this package imports nothing itself, so that reading the registry never
pulls in torch.
"""
