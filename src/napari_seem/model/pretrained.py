"""``from_pretrained``: a ready SEEM model from a preset name, a checkpoint file, or both."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    checkpoint_search_dirs,
    download_checkpoint,
    find_local_checkpoint,
    guess_preset,
    load_into,
    read_state_dict,
)
from .config import PRESETS, RUN_SECTION, checkpoint_filename
from .seem import SEEM, build_seem

log = logging.getLogger(__name__)


AUTO = "auto"


def shipped_models() -> list[str]:
    """Models whose weights ship inside the package (work offline), e.g. ``seem_tiny_synthetic``."""
    from ..weights import shipped_model_names

    return shipped_model_names()


def available_models() -> list[str]:
    """Every name :func:`from_pretrained` accepts: official presets, then shipped models."""
    return [*PRESETS, *shipped_models()]


def training_run_config(weights: Path) -> Path | None:
    """The ``config.yaml`` that ``python -m napari_seem.train`` writes beside its weights, if
    ``weights`` has one (a YAML with a ``NAPARI_SEEM`` section), else None."""
    candidate = Path(weights).with_name("config.yaml")
    if not candidate.is_file():
        return None
    try:
        loaded = yaml.safe_load(candidate.read_text())
    except yaml.YAMLError:
        return None
    return candidate if isinstance(loaded, dict) and RUN_SECTION in loaded and "MODEL" in loaded else None


def default_model_name() -> str:
    """``"auto"`` resolves to: the official Focal-T v1 checkpoint when it is on this machine, else
    the shipped synthetic-microscopy model when installed, else ``seem_focalt_v1`` (downloaded)."""
    if find_local_checkpoint(checkpoint_filename("seem_focalt_v1")) is not None:
        return "seem_focalt_v1"
    shipped = shipped_models()
    return shipped[0] if shipped else "seem_focalt_v1"


def resolve_checkpoint(name_or_path: str | Path, download: bool = True) -> Path:
    """Path of the checkpoint for a preset name (local copy, Hugging Face cache or download),
    a shipped model name, or a file."""
    text = str(name_or_path)
    if text in shipped_models():
        from ..weights import shipped_model_path

        return shipped_model_path(text)[0]
    if text in PRESETS:
        filename = checkpoint_filename(text)
        local = find_local_checkpoint(filename)
        if local is not None:
            return local
        if not download:
            raise CheckpointNotFoundError(
                f"SEEM checkpoint {filename!r} is not on this machine; put it in {checkpoint_search_dirs()[0]}"
            )
        return download_checkpoint(filename)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{text!r} is neither a SEEM model ({', '.join(available_models())}) nor an existing checkpoint file"
        )
    return path


def from_pretrained(
    name_or_path: str | Path,
    config: str | Path | Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    download: bool = True,
) -> SEEM:
    """Build SEEM and load official (or compatible) weights.

    Args:
        name_or_path: a preset (``"seem_focalt_v1"``, ... see ``preset_names()``) whose official
            checkpoint is found locally or downloaded from ``xdecoder/SEEM``; a model shipped in
            the package (``"seem_tiny_synthetic"``); ``"auto"`` (see :func:`default_model_name`);
            or a ``.pt``/``.pth``/``.safetensors`` file.
        config: preset name, official SEEM YAML or dict. Default: the preset itself; for a file,
            the ``config.yaml`` beside it when a training run of ``python -m napari_seem.train``
            wrote it (it has a ``NAPARI_SEEM`` section), else the preset whose architecture fits
            the checkpoint's names and shapes.
        device: where the model lives.
        strict: raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped
            entry (default). With ``False`` such entries are logged and skipped.
        download: allow downloading a preset's checkpoint.
    """
    if str(name_or_path) == AUTO:
        name_or_path = default_model_name()
    path = resolve_checkpoint(name_or_path, download=download)
    state = read_state_dict(path)
    if config is None and str(name_or_path) in shipped_models():
        from ..weights import shipped_model_path

        config = shipped_model_path(str(name_or_path))[1]
    if config is None and str(name_or_path) not in PRESETS:
        config = training_run_config(path)
    if config is None:
        config = str(name_or_path) if str(name_or_path) in PRESETS else guess_preset(state)
        if config is None:
            raise CheckpointError(
                f"cannot tell which SEEM architecture {path} is; pass config= (a preset name or the official YAML)"
            )
    model = build_seem(config, device="cpu")
    report = load_into(model, state, strict=strict)
    if not report.ok:
        log.warning("loaded %s with differences: %s", path, report.summary())
    return model.to(device).eval()
