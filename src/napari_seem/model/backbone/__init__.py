"""Image backbones of SEEM (FocalNet and SAM ViT), selected by ``MODEL.BACKBONE.NAME``.

Every backbone maps ``x [B, 3, H, W]`` to ``{"res2".."res5": [B, C, H/s, W/s]}`` (strides
4, 8, 16, 32) and exposes ``out_channels`` / ``out_strides`` (dicts keyed by those names) and
``size_divisibility``.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .focal import FocalNet, build_focalnet
from .vit import SamViT, build_sam_vit

__all__ = ["FocalNet", "SamViT", "build_backbone"]

_BUILDERS = {"focal_dw": build_focalnet, "focal": build_focalnet, "vit": build_sam_vit}


def build_backbone(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the backbone named by ``cfg["MODEL"]["BACKBONE"]["NAME"]`` (``focal_dw``, ``focal``
    or ``vit``) from an official SEEM config dict; an unknown name raises ``ValueError``."""
    name = cfg["MODEL"]["BACKBONE"]["NAME"]
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[name](cfg)
