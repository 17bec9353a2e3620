"""FPN pixel decoder with a transformer encoder on the coarsest level (``transformer_encoder_fpn``).

Used by the FocalNet SEEM models. State-dict names follow the official module:
``adapter_{i}`` / ``layer_{i}`` (i = 1 for the finest level), ``mask_features``, ``input_proj``,
``transformer.encoder.layers.{k}.*`` and ``layer_{n}`` for the coarsest level.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNorm, fpn_lateral_conv, fpn_output_conv
from .position_encoding import PositionEmbeddingSine

NUM_MULTI_SCALE_LEVELS = 3


class TransformerEncoderLayer(nn.Module):
    """Self-attention + ReLU MLP block over a token sequence, post-norm or pre-norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _mlp(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """``src``, ``pos``: ``[L, B, C]`` (sequence first); returns ``[L, B, C]``.

        The position embedding is added to queries and keys only, not to the values.
        """
        if self.normalize_before:
            h = self.norm1(src)
            q = h + pos
            src = src + self.dropout1(self.self_attn(q, q, value=h, need_weights=False)[0])
            return src + self.dropout2(self._mlp(self.norm2(src)))
        q = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, q, value=src, need_weights=False)[0]))
        return self.norm2(src + self.dropout2(self._mlp(src)))


class TransformerEncoder(nn.Module):
    """Stack of :class:`TransformerEncoderLayer` with a final LayerNorm in pre-norm mode."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model) if normalize_before else None

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """``src``, ``pos``: ``[L, B, C]``; returns ``[L, B, C]``."""
        for layer in self.layers:
            src = layer(src, pos)
        if self.norm is not None:
            src = self.norm(src)
        return src


class TransformerEncoderOnly(nn.Module):
    """Transformer encoder applied to a feature map (flattened to tokens and back)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(
            d_model, nhead, num_layers, dim_feedforward, dropout, normalize_before
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """``src``, ``pos``: ``[B, C, H, W]``; returns ``[B, C, H, W]``."""
        b, c, h, w = src.shape
        tokens = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        out = self.encoder(tokens, pos)
        return out.permute(1, 2, 0).reshape(b, c, h, w)


class TransformerEncoderPixelDecoder(nn.Module):
    """FPN over the backbone levels whose coarsest level first goes through a transformer encoder.

    Args:
        input_channels: channels per backbone feature name (e.g. ``{"res2": 96, ...}``).
        input_strides: stride per feature name; levels are processed in stride order.
        conv_dim: channels of every FPN level.
        mask_dim: channels of ``mask_features``.
        norm: ``"GN"`` or ``""`` for the lateral/output convs.
        nheads, dim_feedforward, enc_layers, pre_norm, dropout: transformer encoder settings.
    """

    def __init__(
        self,
        input_channels: dict[str, int],
        input_strides: dict[str, int],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: str,
        nheads: int,
        dim_feedforward: int,
        enc_layers: int,
        pre_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        #: feature names from fine (stride 4) to coarse (stride 32)
        self.in_features = sorted(input_channels, key=lambda k: input_strides[k])
        channels = [input_channels[k] for k in self.in_features]
        n = len(channels)
        # registration order reproduces the official state-dict order
        for i, c in enumerate(channels[:-1], start=1):
            self.add_module(f"adapter_{i}", fpn_lateral_conv(c, conv_dim, norm))
            self.add_module(f"layer_{i}", fpn_output_conv(conv_dim, conv_dim, norm))
        self.mask_features = ConvNorm(conv_dim, mask_dim, 3, padding=1)
        self.input_proj = ConvNorm(channels[-1], conv_dim, 1)
        self.transformer = TransformerEncoderOnly(
            conv_dim, nheads, enc_layers, dim_feedforward, dropout, pre_norm
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.add_module(f"layer_{n}", fpn_output_conv(conv_dim, conv_dim, norm))

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Run the pixel decoder.

        Args:
            features: backbone maps ``name -> [B, C_name, H/s, W/s]`` (at least ``in_features``).

        Returns:
            ``mask_features`` ``[B, mask_dim, H/4, W/4]`` (finest level),
            ``transformer_encoder_features`` ``[B, conv_dim, H/32, W/32]`` (transformer output on the
            coarsest level, before its output conv),
            ``multi_scale_features``: 3 maps ``[B, conv_dim, H/s, W/s]`` from low to high resolution
            (strides 32, 16, 8 for res2..res5 inputs).
        """
        n = len(self.in_features)
        coarsest = features[self.in_features[-1]]
        encoded = self.transformer(self.input_proj(coarsest), self.pe_layer(coarsest))
        y = getattr(self, f"layer_{n}")(encoded)
        multi_scale = [y]
        for i in range(n - 1, 0, -1):
            lateral = getattr(self, f"adapter_{i}")(features[self.in_features[i - 1]])
            y = _add_upsampled(lateral, y)  # a new map: its convolution may overwrite it in inference
            y = getattr(self, f"layer_{i}")(y, reuse_input=not torch.is_grad_enabled())
            if len(multi_scale) < NUM_MULTI_SCALE_LEVELS:
                multi_scale.append(y)
        # the finest map is not needed after this convolution: in inference it may be overwritten
        reuse = not torch.is_grad_enabled() and all(y is not level for level in multi_scale)
        return self.mask_features(y, reuse_input=reuse), encoded, multi_scale

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Alias of :meth:`forward_features`."""
        return self.forward_features(features)


def _add_upsampled(lateral: Tensor, coarse: Tensor) -> Tensor:
    """``lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="nearest")``.

    In inference, when ``lateral`` is exactly twice the size of ``coarse``, the sum is done in
    place with broadcasting (nearest x2 repeats each pixel 2 x 2 times): the upsampled map, a
    full-resolution map at stride 4, is never materialised. The result is the same.
    """
    b, c, h, w = coarse.shape
    if torch.is_grad_enabled() or tuple(lateral.shape[-2:]) != (2 * h, 2 * w) or not lateral.is_contiguous():
        return lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="nearest")
    lateral.view(b, c, h, 2, w, 2).add_(coarse.view(b, c, h, 1, w, 1))
    return lateral

