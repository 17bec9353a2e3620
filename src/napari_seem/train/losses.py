"""SEEM's training objectives: sigmoid BCE + dice mask losses, Hungarian matching, class CE.

Mask losses are computed either on full masks at the image resolution (predicted logits, at a
quarter of the padded image, are upsampled bilinearly; optionally at half that resolution) or, as
in SEEM, at points sampled per mask with importance to the uncertain ones (``point_mask_loss``);
matching costs at the logits' resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def dice_loss(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean dice loss of ``[N, P]`` logits against ``[N, P]`` 0/1 targets (``1 - (2ab+1)/(a+b+1)``);
    pixels of weight 0 (``weights [N, P]``) do not count."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, targets = probs * weights, targets * weights
    num = 2 * (probs * targets).sum(-1) + 1
    den = probs.sum(-1) + targets.sum(-1) + 1
    return (1 - num / den).mean()


def bce_loss(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean sigmoid cross-entropy of ``[N, P]`` logits against ``[N, P]`` targets (a weighted
    mean per mask with ``weights [N, P]``)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is None:
        return loss.mean(-1).mean()
    return ((loss * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)).mean()


def mask_costs(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise BCE and dice costs ``[Q, T]`` of ``[Q, P]`` logits against ``[T, P]`` soft targets."""
    p = logits.shape[-1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (pos @ targets.t() + neg @ (1 - targets).t()) / p
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.t() + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None] + 1)
    return bce, dice


def hungarian(cost: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of a ``[Q, T]`` cost matrix: (query idx, target idx)."""
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    return rows, cols


def upsample(logits: Tensor, size: tuple[int, int], factor: int = 4) -> Tensor:
    """``[N, h, w]`` logits -> ``[N, factor*h, factor*w]`` (bilinear), cropped to ``size`` (drops
    padding). ``factor`` 4 gives the padded image's resolution."""
    full = (logits.shape[-2] * factor, logits.shape[-1] * factor)
    up = F.interpolate(logits[None], size=full, mode="bilinear", align_corners=False)[0]
    return up[:, : size[0], : size[1]]


def pool_targets(targets: Tensor, padded: tuple[int, int], stride: int,
                 weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """``[N, H, W]`` targets (and pixel weights) zero-padded to ``padded`` and area-averaged over
    ``stride x stride`` blocks: ``[N, ph/stride, pw/stride]`` soft targets (the weighted mean of
    the counted pixels where ``weights`` are given) and block weights (the mean pixel weight)."""
    pad = (0, padded[1] - targets.shape[-1], 0, padded[0] - targets.shape[-2])
    t = F.pad(targets.float(), pad)[None]
    if weights is None:
        return F.avg_pool2d(t, stride)[0], None
    w = F.pad(weights.float(), pad)[None]
    block = F.avg_pool2d(w, stride)
    return (F.avg_pool2d(t * w, stride) / block.clamp_min(1e-6))[0], block[0]


@dataclass(frozen=True)
class PreparedMasks:
    """Targets of ``N`` masks brought once to the resolution of the full-mask loss, for the losses
    of every decoder stage (SEEM supervises all of them against the same targets).

    ``targets``, ``weights`` (0 = ignored pixel) and ``bce_weights`` (``weights`` times the BCE
    ``emphasis``) are ``[N, P]`` float rows over the ``size`` grid, None where unweighted;
    ``stride`` is the grid's step in image pixels. Index with a row selection (the matched
    targets of a stage).
    """

    targets: Tensor
    weights: Tensor | None
    bce_weights: Tensor | None
    size: tuple[int, int]
    stride: int

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index) -> "PreparedMasks":
        def rows(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        return PreparedMasks(self.targets[index], rows(self.weights), rows(self.bce_weights), self.size, self.stride)


def prepare_masks(targets: Tensor, padded: tuple[int, int], weights: Tensor | None = None, stride: int = 1,
                  emphasis: Tensor | None = None) -> PreparedMasks:
    """``[N, H, W]`` bool targets (optional ``weights`` and ``emphasis`` ``[N, H, W]``, see
    :func:`full_mask_loss`) for the logits of a ``padded`` image, at ``stride`` 1, 2 or 4."""
    if stride not in (1, 2, 4):
        raise ValueError(f"mask loss stride must be 1, 2 or 4, not {stride}")
    if stride > 1:
        size = (-(-targets.shape[-2] // stride), -(-targets.shape[-1] // stride))
        if emphasis is not None:
            emphasis = pool_targets(emphasis, padded, stride)[0][:, :size[0], :size[1]]
        targets, weights = pool_targets(targets, padded, stride, weights)
        targets = targets[:, :size[0], :size[1]]
        weights = None if weights is None else weights[:, :size[0], :size[1]]
    size = (int(targets.shape[-2]), int(targets.shape[-1]))
    t = targets.flatten(1).float()
    wt = None if weights is None else weights.flatten(1).float()
    e = None if emphasis is None else emphasis.flatten(1).float()
    return PreparedMasks(t, wt, multiply_weights(wt, e), size, stride)


def prepared_mask_loss(logits: Tensor, prepared: PreparedMasks) -> tuple[Tensor, Tensor]:
    """BCE and dice of ``[N, h, w]`` quarter-resolution logits against :func:`prepare_masks`'s
    targets (the same ``N`` rows, in order)."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0
        return zero, zero
    up = upsample(logits, prepared.size, 4 // prepared.stride).flatten(1)
    t = prepared.targets.to(up.dtype)
    wt = None if prepared.weights is None else prepared.weights.to(up.dtype)
    wb = None if prepared.bce_weights is None else prepared.bce_weights.to(up.dtype)
    return bce_loss(up, t, wb), dice_loss(up, t, wt)


def full_mask_loss(logits: Tensor, targets: Tensor, weights: Tensor | None = None,
                   stride: int = 1, emphasis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """BCE and dice of ``[N, h, w]`` quarter-resolution logits against ``[N, H, W]`` bool masks
    (optional per-pixel ``weights [N, H, W]``, 0 = ignored; ``emphasis [N, H, W]`` multiplies
    them in the BCE only, whose per-mask mean is weighted).

    ``stride`` 1 compares every pixel (logits upsampled 4x); 2 compares at half the resolution:
    logits upsampled 2x against 2 x 2 area-averaged targets, soft at the outline
    (:func:`pool_targets`), at a quarter of the cost (4: at the logits' own resolution). Training
    prepares the targets once for all decoder stages (:func:`prepare_masks`,
    :func:`prepared_mask_loss`); this is both in one call.
    """
    if stride not in (1, 2, 4):
        raise ValueError(f"mask loss stride must be 1, 2 or 4, not {stride}")
    if logits.shape[0] == 0:
        zero = logits.sum() * 0
        return zero, zero
    h, w = logits.shape[-2:]
    return prepared_mask_loss(logits, prepare_masks(targets, (4 * h, 4 * w), weights, stride, emphasis))


def _grow(t: Tensor, width: int) -> Tensor:
    """``[N, H, W]`` maximum over each pixel's ``(2 width + 1)``-square neighbourhood inside the
    image (as ``max_pool2d`` with that padding, separably: several times faster on the CPU)."""
    out = t
    for dim in (-1, -2):
        n = out.shape[dim]
        pad = (width, width, 0, 0) if dim == -1 else (0, 0, width, width)
        x = F.pad(out, pad, value=float("-inf"))
        out = x.narrow(dim, 0, n)
        for shift in range(1, 2 * width + 1):
            out = torch.maximum(out, x.narrow(dim, shift, n))
    return out


def boundary_band(targets: Tensor, width: int) -> Tensor:
    """``[N, H, W]`` float: 1 on the pixels within ``width`` px (chessboard distance) of each
    mask's outline, inside or outside it, else 0."""
    t = targets.float()
    return _grow(t, width) + _grow(-t, width)


def multiply_weights(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Pixel weights ``a * b``, where either may be None (no weighting)."""
    if b is None:
        return a
    return b if a is None else a * b


#: SEEM's point sampling: the share of the points placed by uncertainty, and how many times
#: denser than uniform they lie in the least certain part of the image
IMPORTANCE_SAMPLE_RATIO = 0.75
OVERSAMPLE_RATIO = 3


def uncertain_points(logits: Tensor, n_points: int, size: tuple[int, int], generator: torch.Generator | None) -> Tensor:
    """``[N, n_points, 2]`` grid coordinates (x, y in ``[-1, 1]`` of the padded image) per mask.

    As SEEM's ``get_uncertain_point_coords_with_randomness``, a share ``IMPORTANCE_SAMPLE_RATIO``
    of the points falls where the prediction is least certain (logits closest to 0) and the rest
    is uniform in the unpadded image ``size``. SEEM keeps the least certain of
    ``OVERSAMPLE_RATIO`` times as many uniform candidates; here the logit cells themselves
    (``logits [N, h, w]``, a quarter of the padded image's resolution) are ranked by ``-|logit|``
    and ``OVERSAMPLE_RATIO`` points drawn uniformly in each of the least certain ones: the same
    idea at a fraction of the cost (no candidates to interpolate, a smaller ranking).
    """
    n, h, w = logits.shape
    device, dtype = logits.device, logits.dtype
    hv, wv = -(-size[0] // 4), -(-size[1] // 4)  # cells that cover the unpadded image
    extent = torch.tensor([size[1], size[0]], device=device, dtype=dtype)
    n_cells = min(int(IMPORTANCE_SAMPLE_RATIO * n_points) // OVERSAMPLE_RATIO, hv * wv)
    n_uncertain = n_cells * OVERSAMPLE_RATIO
    with torch.no_grad():
        uncertainty = -logits.detach()[:, :hv, :wv].abs().flatten(1)
        cells = uncertainty.topk(n_cells, dim=1, sorted=False).indices.repeat_interleave(OVERSAMPLE_RATIO, dim=1)
    corner = torch.stack([cells % wv, cells // wv], -1).to(dtype) * 4
    jitter = torch.rand(n, n_points, 2, generator=generator).to(device=device, dtype=dtype)
    uncertain = torch.minimum(corner + 4 * jitter[:, :n_uncertain], extent - 1e-3)
    uniform = jitter[:, n_uncertain:] * extent
    pixels = torch.cat([uncertain, uniform], dim=1)  # continuous (x, y) in image pixels
    padded = torch.tensor([4 * w, 4 * h], device=device, dtype=dtype)
    return 2 * pixels / padded - 1


def sample_points(maps: Tensor, coords: Tensor, mode: str = "bilinear") -> Tensor:
    """``[N, h, w]`` maps sampled at ``[N, P, 2]`` grid coordinates -> ``[N, P]``."""
    return F.grid_sample(maps[:, None], coords[:, None], mode=mode, padding_mode="border",
                         align_corners=False)[:, 0, 0]


def point_mask_loss(logits: Tensor, targets: Tensor, n_points: int, generator: torch.Generator | None = None,
                    weights: Tensor | None = None, emphasis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """BCE and dice as ``full_mask_loss``, at ``n_points`` points per mask (SEEM's point-sampled loss).

    Points are continuous positions in the unpadded image; the logits are sampled bilinearly (as
    ``upsample`` would give them there), the ``[N, H, W]`` bool targets bilinearly (soft at the
    outline, as in SEEM), the optional ``weights [N, H, W]`` at the nearest pixel.
    """
    if logits.shape[0] == 0:
        zero = logits.sum() * 0
        return zero, zero
    size = tuple(targets.shape[-2:])
    coords = uncertain_points(logits, n_points, size, generator)
    # the same points in the targets' own grid (the unpadded image)
    h, w = logits.shape[-2:]
    factor = torch.tensor([4 * w / size[1], 4 * h / size[0]], device=coords.device)
    target_coords = (coords + 1) * factor - 1
    p = sample_points(logits, coords)
    t = sample_points(targets.to(p.dtype), target_coords)
    wts = None if weights is None else sample_points(weights.to(p.dtype), target_coords, mode="nearest")
    e = None if emphasis is None else sample_points(emphasis.to(p.dtype), target_coords, mode="nearest")
    return bce_loss(p, t, multiply_weights(wts, e)), dice_loss(p, t, wts)


def downsample_targets(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """``[T, H, W]`` bool masks -> ``[T, h*w]`` area fractions at the logits' grid ``size``
    (the masks are zero-padded to ``4 * size`` first, as the image is)."""
    return pool_targets(masks, (4 * size[0], 4 * size[1]), 4)[0].flatten(1)


def match_queries(
    mask_logits: Tensor, class_logits: Tensor | None, small_targets: Tensor, target_classes: Tensor,
    class_weight: float, mask_weight: float, dice_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of ``Q`` queries to ``T`` targets (SEEM's matcher).

    Args:
        mask_logits: ``[Q, h, w]``.
        class_logits: ``[Q, K + 1]`` or None (no class cost).
        small_targets: ``[T, h*w]`` target area fractions.
        target_classes: ``[T]`` class ids.
    """
    with torch.no_grad():
        bce, dice = mask_costs(mask_logits.flatten(1).float(), small_targets)
        cost = mask_weight * bce + dice_weight * dice
        if class_logits is not None:
            cost = cost - class_weight * class_logits.float().softmax(-1)[:, target_classes]
    return hungarian(cost)


def class_loss(class_logits: Tensor, query_idx: np.ndarray, target_classes: Tensor, no_object_weight: float) -> Tensor:
    """Cross-entropy of ``[Q, K + 1]`` logits: matched queries -> their class, others -> "no object"
    (the last class, weighted ``no_object_weight``)."""
    k1 = class_logits.shape[-1]
    labels = torch.full((class_logits.shape[0],), k1 - 1, dtype=torch.long, device=class_logits.device)
    labels[torch.as_tensor(query_idx, dtype=torch.long)] = target_classes.to(labels.device)
    weight = torch.ones(k1, device=class_logits.device)
    weight[-1] = no_object_weight
    return F.cross_entropy(class_logits.float(), labels, weight=weight)
