"""Sine/cosine 2-D position embedding (DETR style) used by the pixel decoders and the SEEM decoder."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sinusoidal position embedding.

    Rows and columns are encoded independently with ``num_pos_feats`` channels each (interleaved
    sin/cos over geometrically spaced frequencies) and concatenated as ``[y, x]``.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: base of the frequency progression.
        normalize: rescale the cumulative coordinates to ``[0, scale]``.
        scale: coordinate range when ``normalize`` is set (default ``2*pi``).
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale requires normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embed the positions of ``x``.

        Args:
            x: ``[B, C, H, W]``; only its shape, dtype and device are used.
            mask: optional ``[B, H, W]`` bool, True on padded pixels (excluded from the coordinates).

        Returns:
            ``[B, 2 * num_pos_feats, H, W]`` embedding, channels ``[y-part, x-part]``.
        """
        b, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((b, h, w), dtype=torch.bool, device=x.device)
        valid = ~mask
        y = valid.cumsum(1, dtype=x.dtype)  # 1-based row coordinate
        xx = valid.cumsum(2, dtype=x.dtype)  # 1-based column coordinate
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            xx = xx / (xx[:, :, -1:] + eps) * self.scale

        idx = torch.arange(self.num_pos_feats, dtype=x.dtype, device=x.device)
        freq = self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / self.num_pos_feats)

        pos_x = xx[..., None] / freq
        pos_y = y[..., None] / freq
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
