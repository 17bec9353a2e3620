"""SAM ViT image backbone of SEEM (``vit``; SIZE ``base`` / ``large`` / ``huge``).

The SAM image encoder (patch embedding, absolute position embedding, pre-LN blocks with
decomposed relative position embeddings, windowed attention except in a few global blocks)
followed by a simple feature pyramid (:class:`SimpleFPN`) that turns the stride-16 token map
into ``res2..res5`` (strides 4, 8, 16, 32) with 2x2 transposed convs / a 2x2 strided conv.

The absolute position embedding has the fixed grid ``img_size // patch_size`` and is added
without interpolation, so the token grid must have exactly that size: the input must be
``img_size`` up to ``img_size + patch_size - 1`` pixels on each side (SEEM pads to 1024).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SamViT", "SimpleFPN", "build_sam_vit"]

#: SIZE -> (embed_dim, depth, num_heads, global attention block indices)
_SAM_SIZES: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "base": (768, 12, 12, (2, 5, 8, 11)),
    "large": (1024, 24, 16, (5, 11, 17, 23)),
    "huge": (1280, 32, 16, (7, 15, 23, 31)),
}
_OUT_NAMES = ("res2", "res3", "res4", "res5")


def _rel_pos_table(size: int, rel_pos: Tensor) -> Tensor:
    """Per (query, key) index pair along one axis, its relative embedding.

    ``rel_pos [2*size-1, C]`` -> ``[size, size, C]`` with entry ``[i, j] = rel_pos[i - j + size - 1]``.
    """
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + size - 1]


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D token grid with decomposed relative position bias.

    ``rel_pos_h`` / ``rel_pos_w`` (``[2*S-1, head_dim]``, S = the grid side it is built for)
    add ``q . R_h[qy - ky]`` and ``q . R_w[qx - kx]`` to the attention logits.
    """

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int], qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, W, C] -> [B, H, W, C]``; H, W must equal the ``input_size`` it was built for."""
        batch, height, width, _ = x.shape
        if 2 * height - 1 != self.rel_pos_h.shape[0] or 2 * width - 1 != self.rel_pos_w.shape[0]:
            raise ValueError(f"token grid {height}x{width} does not match the relative position tables")
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, height * width, -1).unbind(0)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        r_q = q.reshape(batch * self.num_heads, height, width, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, _rel_pos_table(height, self.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, _rel_pos_table(width, self.rel_pos_w))
        attn = attn.view(-1, height, width, height, width) + rel_h[..., :, None] + rel_w[..., None, :]
        attn = attn.view(-1, height * width, height * width).softmax(dim=-1)

        out = (attn @ v).view(batch, self.num_heads, height, width, -1)
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1))


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad ``x [B, H, W, C]`` at the bottom/right to multiples of ``window`` and split it
    into ``[B * nWindows, window, window, C]``; also returns the padded size ``(Hp, Wp)``."""
    batch, height, width, channels = x.shape
    pad_h = (-height) % window
    pad_w = (-width) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels), (hp, wp)


def window_unpartition(windows: Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nWindows, window, window, C] -> [B, H, W, C]``."""
    hp, wp = padded_hw
    height, width = hw
    batch = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(batch, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)
    return x[:, :height, :width, :].contiguous()


class _MlpBlock(nn.Module):
    """``lin2(GELU(lin1(x)))`` on the last dimension."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Block(nn.Module):
    """Pre-LN transformer block, ``[B, H, W, C] -> [B, H, W, C]``.

    With ``window_size > 0`` attention runs inside non-overlapping windows (the normalised
    tokens are zero-padded to whole windows; padded tokens take part as keys, as in SAM);
    with 0 it is global over the ``input_size`` grid.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        window_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, attn_size, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _MlpBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            windows, padded_hw = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(windows), self.window_size, padded_hw, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` conv: ``[B, 3, H, W] -> [B, H/p, W/p, C]`` (floor)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class SimpleFPN(nn.Module):
    """Multi-scale neck on a stride-s token map ``[B, C, h, w]``.

    Returns ``res2 [B, d0, 4h, 4w]`` (two 2x2 transposed convs), ``res3 [B, d1, 2h, 2w]`` (one),
    ``res4 [B, d2, h, w]`` (1x1 conv) and ``res5 [B, d3, floor(h/2), floor(w/2)]`` (2x2 stride-2
    conv); every branch uses single-group GroupNorms and ends with GELU.
    """

    def __init__(self, in_dim: int, out_dims: Sequence[int] = (128, 256, 512, 1024)) -> None:
        super().__init__()
        c4 = max(out_dims[0] * 2, in_dim // 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2),
            nn.GroupNorm(1, c4),
            nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2),
            nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1),
            nn.GroupNorm(1, out_dims[0]),
            nn.GELU(),
        )
        c8 = max(out_dims[1], in_dim // 2)
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2),
            nn.GroupNorm(1, c8),
            nn.Conv2d(c8, out_dims[1], 1),
            nn.GroupNorm(1, out_dims[1]),
            nn.GELU(),
        )
        self.down_16 = nn.Sequential(
            nn.Conv2d(in_dim, out_dims[2], 1),
            nn.GroupNorm(1, out_dims[2]),
            nn.GELU(),
        )
        c32 = max(out_dims[3], in_dim * 2)
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2),
            nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1),
            nn.GroupNorm(1, out_dims[3]),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {
            "res2": self.down_4(x),
            "res3": self.down_8(x),
            "res4": self.down_16(x),
            "res5": self.down_32(x),
        }


class SamViT(nn.Module):
    """SAM ViT encoder + :class:`SimpleFPN`: ``x [B, 3, H, W] -> {"res2".."res5"}``.

    The token grid ``H // patch_size x W // patch_size`` must equal
    ``img_size // patch_size`` on both sides (fixed absolute position embedding).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        neck_out_dims: Sequence[int] = (128, 256, 512, 1024),
        out_features: Sequence[str] = _OUT_NAMES,
    ) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.size_divisibility = img_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.patch_embed = _PatchEmbed(patch_size, in_chans, embed_dim)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                input_size=(grid, grid),
                window_size=0 if i in global_attn_indexes else window_size,
                mlp_ratio=mlp_ratio,
            )
            for i in range(depth)
        )
        self.neck = SimpleFPN(embed_dim, neck_out_dims)
        self._out_features = [name for name in _OUT_NAMES if name in out_features]
        all_channels = dict(zip(_OUT_NAMES, neck_out_dims))
        all_strides = dict(zip(_OUT_NAMES, (patch_size // 4, patch_size // 2, patch_size, patch_size * 2)))
        self.out_channels = {name: all_channels[name] for name in self._out_features}
        self.out_strides = {name: all_strides[name] for name in self._out_features}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x [B, 3, H, W]`` -> ``{"res2": [B, d0, 4h, 4w], ..., "res5": [B, d3, h/2, w/2]}``
        with ``h, w`` the token grid (``img_size // patch_size``)."""
        x = self.patch_embed(x)
        if x.shape[1:3] != self.pos_embed.shape[1:3]:
            raise ValueError(
                f"SAM ViT needs a {tuple(self.pos_embed.shape[1:3])} token grid, got {tuple(x.shape[1:3])}: "
                f"pad or resize the input to {self.size_divisibility}x{self.size_divisibility}"
            )
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        features = self.neck(x.permute(0, 3, 1, 2))
        return {name: features[name] for name in self._out_features}


def build_sam_vit(cfg: Mapping[str, Any]) -> SamViT:
    """Build the SAM ViT backbone (``MODEL.BACKBONE.VIT.SIZE`` = base/large/huge) as SEEM does:
    1024x1024 input, 16x16 patches, window 14, neck dims 128/256/512/1024."""
    vit_cfg = cfg["MODEL"]["BACKBONE"]["VIT"]
    size = vit_cfg["SIZE"]
    if size not in _SAM_SIZES:
        raise ValueError(f"unknown SAM ViT size {size!r}; expected one of {sorted(_SAM_SIZES)}")
    embed_dim, depth, num_heads, global_indexes = _SAM_SIZES[size]
    return SamViT(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        global_attn_indexes=global_indexes,
        out_features=vit_cfg.get("OUT_FEATURES", _OUT_NAMES),
    )
