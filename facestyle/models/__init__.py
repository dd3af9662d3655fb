"""Model registry, weight files, and the network definitions (plain ``nn.Module``s)."""

from facestyle.models.registry import MODELS, ModelSpec, WeightFile, get_model, list_models
from facestyle.models.weights import facestyle_home, import_weights, load_torch_state, weight_path

__all__ = [
    "MODELS",
    "ModelSpec",
    "WeightFile",
    "facestyle_home",
    "get_model",
    "import_weights",
    "list_models",
    "load_torch_state",
    "weight_path",
]
