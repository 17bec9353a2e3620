"""Turning SEEM decoder outputs into semantic, panoptic and instance results (official rules).

All functions take raw logits; masks are ``[Q, H, W]`` at the resolution the caller chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def sem_seg_postprocess(result: Tensor, image_size: tuple[int, int], height: int, width: int) -> Tensor:
    """Crop ``[C, Hp, Wp]`` to the un-padded ``image_size`` and resize to ``(height, width)``.

    Bicubic with antialiasing, as the official post-processing does.
    """
    cropped = result[:, : image_size[0], : image_size[1]].unsqueeze(0)
    if cropped.shape[-2:] == (height, width):
        return cropped[0]
    return F.interpolate(cropped, size=(height, width), mode="bicubic", align_corners=False, antialias=True)[0]


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Per-class soft semantic map ``[K, H, W]`` from class logits ``[Q, K+1]`` and mask logits ``[Q, H, W]``."""
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


@dataclass
class PanopticResult:
    """``segmentation [H, W] int32`` (0 = void) and one ``(id, isthing, category_id, score)`` per segment."""

    segmentation: Tensor
    segments: list[dict]


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    thing_classes: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    upsample: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 16,
) -> PanopticResult:
    """Official panoptic merge.

    Args:
        mask_cls: ``[Q, K+1]`` class logits; the last column is "no object".
        mask_pred: ``[Q, h, w]`` mask logits.
        thing_classes: class indices that are countable objects; other classes are "stuff" and
            segments of one stuff class merge.
        object_mask_threshold: minimum class probability to keep a query.
        overlap_threshold: minimum fraction of a query's own mask it must win in the arg-max.
        upsample: maps ``[n, h, w]`` logits to ``[n, H, W]`` at the output resolution (None: the
            masks are used as they are). The kept queries are brought to that resolution
            ``chunk`` at a time, so memory stays bounded whatever the number of queries; the
            result is the same as upsampling them all first.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    kept_logits = mask_pred[keep]
    if upsample is None:
        upsample = _identity
    height, width = upsample(mask_pred[:1]).shape[-2:] if len(mask_pred) else mask_pred.shape[-2:]
    segmentation = torch.zeros((height, width), dtype=torch.int32, device=mask_pred.device)
    segments: list[dict] = []
    if cur_scores.shape[0] == 0:
        return PanopticResult(segmentation, segments)

    # arg-max of score * probability over the kept queries (first maximum wins, as argmax) and
    # each query's own mask (probability >= 0.5), one chunk of queries at a time
    best = torch.full((height, width), -1.0, device=mask_pred.device)
    winner = torch.zeros((height, width), dtype=torch.long, device=mask_pred.device)
    own = torch.empty((len(cur_scores), height, width), dtype=torch.bool, device=mask_pred.device)
    for start in range(0, len(cur_scores), chunk):
        probs = upsample(kept_logits[start:start + chunk]).sigmoid()
        own[start:start + chunk] = probs >= 0.5
        weighted = cur_scores[start:start + chunk].view(-1, 1, 1) * probs
        value, index = weighted.max(0)
        better = value > best
        best = torch.where(better, value, best)
        winner = torch.where(better, index + start, winner)

    things = set(int(t) for t in thing_classes)
    stuff_ids: dict[int, int] = {}
    next_id = 0
    for k in range(cur_classes.shape[0]):
        cls = int(cur_classes[k])
        isthing = cls in things
        won = winner == k
        mask_area = int(won.sum())
        original_area = int(own[k].sum())
        mask = won & own[k]
        if mask_area == 0 or original_area == 0 or int(mask.sum()) == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not isthing and cls in stuff_ids:
            segmentation[mask] = stuff_ids[cls]
            continue
        next_id += 1
        if not isthing:
            stuff_ids[cls] = next_id
        segmentation[mask] = next_id
        segments.append({"id": next_id, "isthing": isthing, "category_id": cls, "score": float(cur_scores[k])})
    return PanopticResult(segmentation, segments)


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class InstanceResult:
    """``masks [N, H, W] bool``, ``scores [N]``, ``classes [N] int64``, ``query_index [N] int64``."""

    masks: Tensor
    scores: Tensor
    classes: Tensor
    query_index: Tensor


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    top_k: int,
    thing_classes: Sequence[int] | None = None,
) -> InstanceResult:
    """Official instance rule: the ``top_k`` (query, class) pairs by class probability.

    ``thing_classes`` (when given) keeps only countable classes, as the official code does when
    panoptic inference is on. Score = class probability x mean mask probability inside the mask.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    k = min(top_k, scores.numel())
    top_scores, top_idx = scores.flatten().topk(k, sorted=False)
    classes = top_idx % num_classes
    query_index = top_idx // num_classes
    if thing_classes is not None:
        things = torch.tensor(sorted(int(t) for t in thing_classes), dtype=classes.dtype, device=classes.device)
        keep = torch.isin(classes, things)
        top_scores, classes, query_index = top_scores[keep], classes[keep], query_index[keep]
    logits = mask_pred[query_index]
    masks = logits > 0
    binary = masks.flatten(1).float()
    mask_scores = (logits.sigmoid().flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)
    return InstanceResult(masks, top_scores * mask_scores, classes, query_index)
