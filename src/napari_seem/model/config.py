"""SEEM model configurations: named presets and official SEEM YAML files.

A config is the plain nested ``dict`` that ``yaml.safe_load`` gives for an official SEEM
config file, with the official field names (``cfg["MODEL"]["BACKBONE"]["FOCAL"]["EMBED_DIM"]``).
Presets reproduce the architectures of the released checkpoints of the Hugging Face repo
``xdecoder/SEEM``; a user who has a checkpoint of another shape brings the official YAML that
produced it (``load_config("path/to/focall_unicl_lang_v1.yaml")``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

_PRESET_DIR = Path(__file__).with_name("presets")
_BASE_PRESET = "seem_focalt_v1"

_FOCAL_L = {"MODEL": {"BACKBONE": {"NAME": "focal", "FOCAL": {
    "EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "FOCAL_LEVELS": [4, 4, 4, 4], "FOCAL_WINDOWS": [3, 3, 3, 3]}}}}


def _sam_vit(size: str) -> dict:
    return {
        "MODEL": {
            "BACKBONE": {"NAME": "vit", "VIT": {
                "SIZE": size, "OUT_FEATURES": ["res2", "res3", "res4", "res5"], "OUT_INDICES": [0, 1, 2, 3]}},
            "ENCODER": {"NAME": "transformer_encoder_deform"},
            "DECODER": {"SIZE_DIVISIBILITY": 1024},
        }
    }


def _v0(overrides: dict) -> dict:
    out = copy.deepcopy(overrides)
    out.setdefault("MODEL", {})["NAME"] = "seem_model_v0"
    out["MODEL"].setdefault("DECODER", {})["NAME"] = "seem_v0"
    return out


#: preset name -> (overrides on the Focal-T v1 base, checkpoint file in ``xdecoder/SEEM``)
PRESETS: dict[str, tuple[dict, str]] = {
    "seem_focalt_v1": ({}, "seem_focalt_v1.pt"),
    "seem_focall_v1": (_FOCAL_L, "seem_focall_v1.pt"),
    "seem_samvitb_v1": (_sam_vit("base"), "seem_samvitb_v1.pt"),
    "seem_samvitl_v1": (_sam_vit("large"), "seem_samvitl_v1.pt"),
    "seem_focalt_v0": (_v0({}), "seem_focalt_v0.pt"),
    "seem_focall_v0": (_v0(_FOCAL_L), "seem_focall_v0.pt"),
}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """Recursively merge ``overrides`` into a deep copy of ``base`` (dicts merge, other values replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: config section (ours, beside the official ones) with how a model trained by
#: ``python -m napari_seem.train`` is meant to run: ``VOCABULARY`` (its class names) and
#: ``SHORT_SIDE`` (model-side resolution; null: the image's own size, as in training)
RUN_SECTION = "NAPARI_SEEM"


def run_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{"vocabulary": [...], "short_side": ...}`` from a config's :data:`RUN_SECTION` (only the
    entries it has; empty for the official configs)."""
    section = cfg.get(RUN_SECTION) or {}
    settings: dict[str, Any] = {}
    if section.get("VOCABULARY"):
        settings["vocabulary"] = [str(name) for name in section["VOCABULARY"]]
    if "SHORT_SIDE" in section:
        side = section["SHORT_SIDE"]
        settings["short_side"] = None if side is None else int(side)
    return settings


def preset_names() -> list[str]:
    """Names accepted by :func:`load_config` and ``build_seem``."""
    return list(PRESETS)


def load_config(name_or_path: str | Path | Mapping[str, Any]) -> dict:
    """Return the config dict for a preset name, an official SEEM YAML file, or a dict.

    A YAML file (or dict) is merged over the Focal-T v1 preset, so a file may hold only the fields
    that differ; the official full config files work unchanged.

    Raises:
        ValueError: unknown preset name or unreadable YAML.
        FileNotFoundError: a path that does not exist.
    """
    base = yaml.safe_load((_PRESET_DIR / f"{_BASE_PRESET}.yaml").read_text())
    if isinstance(name_or_path, Mapping):
        return merge(base, name_or_path)
    text = str(name_or_path)
    if text in PRESETS:
        return merge(base, PRESETS[text][0])
    path = Path(text).expanduser()
    if path.suffix.lower() not in {".yaml", ".yml"}:
        raise ValueError(
            f"unknown SEEM model config {text!r}: expected one of {', '.join(PRESETS)} or a .yaml file"
        )
    if not path.is_file():
        raise FileNotFoundError(f"SEEM config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse SEEM config {path}: {err}") from err
    if not isinstance(loaded, Mapping) or "MODEL" not in loaded:
        raise ValueError(f"{path} is not a SEEM config: it has no MODEL section")
    return merge(base, loaded)


def checkpoint_filename(preset: str) -> str:
    """File name of a preset's official checkpoint in the ``xdecoder/SEEM`` Hugging Face repo."""
    if preset not in PRESETS:
        raise ValueError(f"unknown SEEM preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[preset][1]
