"""Load the model a training run starts from: a shipped model, an official preset or a checkpoint file."""
from __future__ import annotations

from ..model import build_seem, load_into, read_state_dict
from ..model.checkpoint import guess_preset
from ..model.config import PRESETS
from ..model.pretrained import resolve_checkpoint, training_run_config
from ..weights import SHIPPED_MODELS, shipped_model_path


def load_checkpoint(name_or_path: str, config: str | None):
    """A model with the weights of a shipped name, an official preset name or a checkpoint file."""
    if name_or_path in SHIPPED_MODELS:
        weights, shipped_config = shipped_model_path(name_or_path)
        config = config or shipped_config
        model = build_seem(config)
        state = read_state_dict(weights)
    else:
        path = resolve_checkpoint(name_or_path)
        state = read_state_dict(path)
        if config is None and name_or_path not in PRESETS:
            found = training_run_config(path)  # a run of this command: its config.yaml beside it
            config = str(found) if found is not None else None
        if config is None:
            config = name_or_path if name_or_path in PRESETS else guess_preset(state)
        if config is None:
            raise SystemExit(f"cannot tell the architecture of {path}; pass --config")
        model = build_seem(config)
    load_into(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model, config
