"""Pixel decoder with a multi-scale deformable transformer encoder (``transformer_encoder_deform``).

Used by the SAM-ViT SEEM models. State-dict names follow the official module: ``input_proj.{l}.{0,1}``
(1x1 conv + GroupNorm per encoder level, coarsest first), ``transformer.level_embed``,
``transformer.encoder.layers.{k}.*``, ``mask_features`` and ``adapter_{i}`` / ``layer_{i}`` for the
extra FPN levels finer than the encoder levels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNorm, fpn_lateral_conv, fpn_output_conv
from .ms_deform_attn import MSDeformAttn
from .position_encoding import PositionEmbeddingSine

NUM_MULTI_SCALE_LEVELS = 3


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm block: deformable self-attention over all levels, then a ReLU MLP."""

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """``src``, ``pos``: ``[N, S, C]``; ``reference_points``: ``[N, S, L, 2]``; returns ``[N, S, C]``."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnEncoder(nn.Module):
    """Stack of :class:`MSDeformAttnEncoderLayer`; every token is a query at its own pixel centre."""

    def __init__(self, layers: list[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def reference_points(
        spatial_shapes: list[tuple[int, int]], n_levels: int, batch: int, device: torch.device
    ) -> Tensor:
        """Normalised pixel centres ``(x, y)`` of all tokens: ``[batch, S, n_levels, 2]`` (same point per level)."""
        refs = []
        for h, w in spatial_shapes:
            ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h
            xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        ref = torch.cat(refs, 0)
        return ref[None, :, None, :].expand(batch, -1, n_levels, -1)

    def forward(self, src: Tensor, pos: Tensor, spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """``src``, ``pos``: ``[N, S, C]``; returns ``[N, S, C]``."""
        ref = self.reference_points(spatial_shapes, len(spatial_shapes), src.shape[0], src.device)
        ref = ref.to(src.dtype)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable transformer encoder over a list of feature maps with a learned per-level embedding."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        dim_feedforward: int,
        num_feature_levels: int,
        enc_n_points: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = MSDeformAttnEncoder(
            [
                MSDeformAttnEncoderLayer(
                    d_model, dim_feedforward, num_feature_levels, nhead, enc_n_points, dropout
                )
                for _ in range(num_encoder_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[Tensor], pos_embeds: list[Tensor]) -> list[Tensor]:
        """Encode the levels jointly.

        Args:
            srcs: ``L`` maps ``[N, C, H_l, W_l]``.
            pos_embeds: matching position embeddings ``[N, C, H_l, W_l]``.

        Returns:
            the encoded maps, same shapes and order as ``srcs``.
        """
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
             for lvl, p in enumerate(pos_embeds)],
            1,
        )
        memory = self.encoder(tokens, pos, shapes)
        n, _, c = memory.shape
        chunks = memory.split([h * w for h, w in shapes], dim=1)
        return [z.transpose(1, 2).reshape(n, c, h, w) for z, (h, w) in zip(chunks, shapes)]


class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over the coarse levels plus a top-down FPN for the finer ones.

    Args:
        input_channels: channels per backbone feature name.
        input_strides: stride per feature name.
        conv_dim: channels of every level.
        mask_dim: channels of ``mask_features``.
        norm: ``"GN"`` or ``""`` for the extra FPN convs (the encoder input projections always use
            GroupNorm(32)).
        nheads, dim_feedforward, enc_layers, dropout: deformable encoder settings.
        transformer_in_features: feature names fed to the deformable encoder (e.g. res3..res5).
        common_stride: stride of ``mask_features``; one FPN level is added per factor 2 between the
            finest encoder level and it.
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
        transformer_in_features: list[str],
        common_stride: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        #: feature names from fine to coarse
        self.in_features = sorted(input_channels, key=lambda k: input_strides[k])
        #: encoder feature names from fine to coarse
        self.transformer_in_features = [k for k in self.in_features if k in transformer_in_features]
        enc_channels = [input_channels[k] for k in self.transformer_in_features]

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in enc_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            conv_dim,
            nheads,
            enc_layers,
            dim_feedforward,
            num_feature_levels=len(enc_channels),
            dropout=dropout,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = ConvNorm(conv_dim, mask_dim, 1)

        min_stride = min(input_strides[k] for k in self.transformer_in_features)
        self.num_fpn_levels = int(round(math.log2(min_stride) - math.log2(common_stride)))
        for i, k in enumerate(self.in_features[: self.num_fpn_levels], start=1):
            self.add_module(f"adapter_{i}", fpn_lateral_conv(input_channels[k], conv_dim, norm))
            self.add_module(f"layer_{i}", fpn_output_conv(conv_dim, conv_dim, norm))

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Run the pixel decoder.

        Args:
            features: backbone maps ``name -> [B, C_name, H/s, W/s]``.

        Returns:
            ``mask_features`` ``[B, mask_dim, H/4, W/4]`` (1x1 conv of the finest level),
            ``transformer_encoder_features`` ``[B, conv_dim, H/32, W/32]`` (encoder output of the
            coarsest level, identical to ``multi_scale_features[0]``),
            ``multi_scale_features``: the first 3 levels from low to high resolution, i.e. the encoder
            outputs at strides 32, 16, 8 for res3..res5 encoder inputs.
        """
        coarse_to_fine = self.transformer_in_features[::-1]
        srcs = [proj(features[k]) for proj, k in zip(self.input_proj, coarse_to_fine)]
        pos = [self.pe_layer(features[k]) for k in coarse_to_fine]
        out = self.transformer(srcs, pos)
        for i in range(self.num_fpn_levels, 0, -1):
            lateral = getattr(self, f"adapter_{i}")(features[self.in_features[i - 1]])
            y = lateral + F.interpolate(
                out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(getattr(self, f"layer_{i}")(y))
        return self.mask_features(out[-1]), out[0], out[:NUM_MULTI_SCALE_LEVELS]

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Alias of :meth:`forward_features`."""
        return self.forward_features(features)
