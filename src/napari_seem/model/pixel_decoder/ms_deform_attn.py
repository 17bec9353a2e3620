"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch (``F.grid_sample``, no compiled op)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinearly sampled values over levels and points.

    Args:
        value: ``[N, S, M, D]`` per-head values of all levels flattened (``S = sum(H_l * W_l)``,
            each level row-major).
        spatial_shapes: ``[(H_l, W_l)]`` for the ``L`` levels, in the order of ``value``.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)`` in ``[0, 1]``; ``(0, 0)`` is
            the top-left corner of the map (pixel centres at ``(i + 0.5) / size``). Samples outside the
            map read zeros.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]`` (heads concatenated).
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        grid = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        sampled.append(
            F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # [N*M, D, Lq, P]
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [N*M, D, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (stacked * weights).sum(-1).view(n, m * d, lq)
    # contiguous: the following output projection then runs the same GEMM as the reference (bitwise parity)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention.

    Each query predicts, per head, level and point, a sampling offset (in pixels of that level) around
    its reference point and a softmax attention weight (normalised over levels x points).

    Args:
        d_model: channels of queries and values.
        n_levels: number of feature levels.
        n_heads: attention heads (``d_model`` must be divisible by it).
        n_points: sampling points per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a ring of directions, uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Attend from queries to the multi-scale input.

        Args:
            query: ``[N, Lq, C]``.
            reference_points: ``[N, Lq, L, 2]`` normalised ``(x, y)`` in ``[0, 1]`` per level.
            input_flatten: ``[N, S, C]`` all levels flattened, ``S = sum(H_l * W_l)``.
            spatial_shapes: ``[(H_l, W_l)]`` of the levels in ``input_flatten``.

        Returns:
            ``[N, Lq, C]``.
        """
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        if sum(h * w for h, w in spatial_shapes) != s:
            raise ValueError("spatial_shapes do not match the length of input_flatten")
        value = self.value_proj(input_flatten).view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: normalise by (W_l, H_l)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        out = ms_deform_attn_core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
