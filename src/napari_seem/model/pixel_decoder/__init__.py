"""Pixel decoders of SEEM: turn backbone features into multi-scale features and mask features."""
from __future__ import annotations

from typing import Any

from torch import nn

from .deformable import MSDeformAttnPixelDecoder
from .fpn import TransformerEncoderPixelDecoder
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "MSDeformAttnPixelDecoder",
    "PositionEmbeddingSine",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]

#: transformer dim_feedforward of the deformable encoder (fixed in the official code, not configurable)
DEFORMABLE_DIM_FEEDFORWARD = 1024


def build_pixel_decoder(
    cfg: dict[str, Any], input_channels: dict[str, int], input_strides: dict[str, int]
) -> nn.Module:
    """Build the pixel decoder named by ``cfg["MODEL"]["ENCODER"]["NAME"]``.

    Args:
        cfg: official SEEM config dict (reads ``MODEL.ENCODER`` and ``MODEL.DECODER`` fields).
        input_channels: backbone output channels per feature name (``res2``..``res5``).
        input_strides: backbone output strides per feature name.

    Returns:
        :class:`TransformerEncoderPixelDecoder` for ``transformer_encoder_fpn`` or
        :class:`MSDeformAttnPixelDecoder` for ``transformer_encoder_deform``.

    Raises:
        ValueError: unknown encoder name.
    """
    enc = cfg["MODEL"]["ENCODER"]
    dec = cfg["MODEL"]["DECODER"]
    name = enc["NAME"]
    used = [k for k in input_channels if k in enc["IN_FEATURES"]]
    channels = {k: input_channels[k] for k in used}
    strides = {k: input_strides[k] for k in used}
    if name == "transformer_encoder_fpn":
        return TransformerEncoderPixelDecoder(
            channels,
            strides,
            conv_dim=enc["CONVS_DIM"],
            mask_dim=enc["MASK_DIM"],
            norm=enc["NORM"],
            nheads=dec["NHEADS"],
            dim_feedforward=dec["DIM_FEEDFORWARD"],
            enc_layers=enc["TRANSFORMER_ENC_LAYERS"],
            pre_norm=dec["PRE_NORM"],
            dropout=dec["DROPOUT"],
        )
    if name == "transformer_encoder_deform":
        return MSDeformAttnPixelDecoder(
            channels,
            strides,
            conv_dim=enc["CONVS_DIM"],
            mask_dim=enc["MASK_DIM"],
            norm=enc["NORM"],
            nheads=dec["NHEADS"],
            dim_feedforward=DEFORMABLE_DIM_FEEDFORWARD,
            enc_layers=enc["TRANSFORMER_ENC_LAYERS"],
            transformer_in_features=enc["DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"],
            common_stride=enc["COMMON_STRIDE"],
            dropout=dec["DROPOUT"],
        )
    raise ValueError(f"unknown pixel decoder (MODEL.ENCODER.NAME) {name!r}")
