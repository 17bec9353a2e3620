"""Visual prompts (clicks, strokes, masks) -> point features for the SEEM decoder.

A prompt for ``n`` objects is a pair of bool masks ``[n, Hp, Wp]`` (positive / negative) at the
padded image size. Every prompted pixel becomes a point with normalised coordinates
``(y / Hp, x / Wp)`` (integer pixel index over the padded size, no half-pixel offset) that is
read from a feature map with bilinear ``grid_sample(align_corners=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class SpatialPromptTokens:
    """Everything the decoder takes from a visual prompt; reusable on another image.

    Attributes:
        pos_embeds: ``[n, C]`` mean of ``mask_features`` at each object's positive points
            (``-1`` everywhere for an object without positive points).
        neg_embeds: ``[n, C]`` same for the negative points.
        level_tokens: per decoder feature level, ``[P_l, C]`` projected level features at the
            prompt points (positive points first, then negative), plus the learned
            positive/negative indicator embedding.
        level_owners: per level, ``[P_l]`` int64 object index of each token.
    """

    pos_embeds: Tensor
    neg_embeds: Tensor
    level_tokens: list[Tensor]
    level_owners: list[Tensor]

    @property
    def num_objects(self) -> int:
        return self.pos_embeds.shape[0]

    def to(self, device: torch.device | str) -> "SpatialPromptTokens":
        return SpatialPromptTokens(
            self.pos_embeds.to(device),
            self.neg_embeds.to(device),
            [t.to(device) for t in self.level_tokens],
            [o.to(device) for o in self.level_owners],
        )


def prompt_points(
    masks: Tensor, max_points: int, generator: torch.Generator, index: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Points of a multi-object prompt mask.

    All nonzero pixels are used, in row-major order per object. With more than ``max_points``
    pixels a random subset of ``max_points`` is kept (without replacement, order preserved),
    drawn from ``generator`` with every prompted object getting the same total probability.

    Args:
        masks: ``[n, Hp, Wp]`` bool.
        max_points: maximum number of points returned.
        generator: CPU generator for the subsampling draw (used only when subsampling).
        index: ``masks.nonzero()`` if already computed (a prompt is read at several levels).

    Returns:
        ``coords [P, 2]`` float ``(y / Hp, x / Wp)`` and ``owner [P]`` int64 object indices.
    """
    if index is None:
        index = masks.nonzero()  # [N, 3] (object, y, x)
    if len(index) > max_points:
        owner = index[:, 0].cpu()
        counts = torch.bincount(owner)
        num_present = int((counts > 0).sum())
        probs = 1.0 / (num_present * counts[owner].double())
        keep = torch.multinomial(probs, max_points, replacement=False, generator=generator).sort().values
        index = index[keep.to(index.device)]
    size = torch.tensor(masks.shape[1:], dtype=torch.float32, device=masks.device)
    coords = index[:, 1:].float() / size
    return coords, index[:, 0]


def sample_points(features: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly read ``features [1, C, h, w]`` at ``coords [P, 2]`` ``(y, x)`` in [0, 1] -> ``[P, C]``.

    Uses ``grid_sample(align_corners=True)`` at ``2 * coord - 1``, so coordinate 0 is the centre of
    the first feature pixel and 1 the centre of the last one.
    """
    grid = 2.0 * coords.flip(-1).to(features.dtype) - 1.0
    sampled = F.grid_sample(features, grid[None, :, None, :], align_corners=True)  # [1, C, P, 1]
    return sampled[0, :, :, 0].t()


def mean_per_object(values: Tensor, owner: Tensor, num_objects: int) -> Tensor:
    """Mean of ``values [P, C]`` per object index in ``owner [P]`` -> ``[n, C]``; ``-1`` where empty."""
    out = -torch.ones(num_objects, values.shape[1], dtype=values.dtype, device=values.device)
    for k in range(num_objects):
        selected = values[owner == k]
        if len(selected):
            out[k] = selected.mean(dim=0)
    return out
