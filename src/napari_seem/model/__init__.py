"""SEEM v1 in plain PyTorch with the official state-dict names (no detectron2, no compiled ops).

>>> from napari_seem.model import build_seem, from_pretrained
>>> model = build_seem("seem_focalt_v1")                 # random weights, official names
>>> model = from_pretrained("seem_focalt_v1")            # official checkpoint (local or downloaded)
"""
from .checkpoint import CheckpointError, CheckpointNotFoundError, LoadReport, load_into, read_state_dict, save_safetensors
from .config import load_config, preset_names
from .pretrained import available_models, default_model_name, from_pretrained, resolve_checkpoint, shipped_models
from .seem import SEEM, ImageFeatures, build_seem

__all__ = [
    "SEEM",
    "ImageFeatures",
    "build_seem",
    "from_pretrained",
    "resolve_checkpoint",
    "available_models",
    "default_model_name",
    "shipped_models",
    "load_config",
    "preset_names",
    "load_into",
    "read_state_dict",
    "save_safetensors",
    "LoadReport",
    "CheckpointError",
    "CheckpointNotFoundError",
]
