"""Referring-image search: an object marked on one image finds the same kind of object elsewhere.

SEEM turns a visual prompt into tokens sampled from the image features at the marked pixels
(``SeemDecoder.encode_prompt``). Here those tokens, taken from the REFERENCE image, prompt the
decoder on the TARGET image (the official v1 code cannot run this path; see the reference
data README), which yields the best-matching region. Other instances of the same kind are the
object queries of that pass whose text-space embedding is close (cosine >= ``min_similarity``)
to the reference object's own embedding; overlapping candidates are resolved greedily by
similarity.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .device import inference_context
from .prompts import ObjectPrompt
from .result import Segmentation

if TYPE_CHECKING:
    from .segmenter import Segmenter


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


def find_similar(
    segmenter: "Segmenter",
    reference_image: np.ndarray,
    reference_mask: np.ndarray,
    target_image: np.ndarray | None = None,
    *,
    min_similarity: float = 0.8,
    max_objects: int = 50,
    max_overlap: float = 0.5,
    normalize="auto",
    channel: int | None = None,
) -> Segmentation:
    """Objects on ``target_image`` (default: the current image) like the one marked on the reference.

    Args:
        reference_image: the image the example object is on (any form ``set_image`` takes).
        reference_mask: ``[H, W]`` bool mask of the example object on ``reference_image``.
        target_image: where to search; None searches the segmenter's current image.
        min_similarity: cosine similarity (text-space embeddings) an object must reach.
        max_objects: at most this many objects are returned.
        max_overlap: a candidate overlapping already kept objects by more than this fraction of
            its own area is dropped.

    Returns:
        objects sorted by similarity; ``scores`` are the similarities, the first object is the
        region the reference tokens select directly.
    """
    if target_image is not None:
        segmenter.set_image(target_image, normalize=normalize, channel=channel)
    target = segmenter._state()
    reference = segmenter._encode(reference_image, normalize, channel)
    pos, neg = segmenter._padded_masks(reference, [ObjectPrompt(mask=np.asarray(reference_mask, bool))])
    predictor = segmenter.model.predictor
    with segmenter._lock, inference_context(segmenter.device, segmenter.precision):
        ref_prepared = segmenter.model.prepare_decoder(reference.features)
        tokens = predictor.encode_prompt(ref_prepared, pos_masks=pos, neg_masks=neg, generator=segmenter._generator())
        ref_out = predictor(ref_prepared, prompt_tokens=tokens, generator=segmenter._generator())
        ref_embedding = ref_out.selected_captions()[0].float()  # [1, D]
        out = predictor(segmenter.model.prepare_decoder(target.features), prompt_tokens=tokens,
                        class_embeddings=segmenter._class_embeddings(), generator=segmenter._generator())
        candidates = torch.cat([out.selected_masks[0], out.masks[0]]).float()
        embeddings = torch.cat([out.selected_captions()[0], out.captions[0]]).float()
        similarity = (_normalized(embeddings) @ _normalized(ref_embedding).t())[:, 0]
    order = [0] + [int(i) for i in torch.argsort(similarity[1:], descending=True) + 1]
    grid = segmenter._to_model_grid(target, candidates) > 0
    kept: list[int] = []
    taken = torch.zeros_like(grid[0])
    for i in order:
        if len(kept) >= max_objects:
            break
        if i != 0 and float(similarity[i]) < min_similarity:
            continue
        area = int(grid[i].sum())
        if area == 0 or int((grid[i] & taken).sum()) > max_overlap * area:
            continue
        kept.append(i)
        taken |= grid[i]
    if not kept:
        return Segmentation.empty(target.prepared.original_shape)
    names, class_scores = segmenter._name(embeddings[kept])
    result = segmenter._result(target, candidates[kept], names, class_scores)
    result.scores = similarity[kept].clamp(0, 1).cpu().numpy().astype(np.float32)
    return result
