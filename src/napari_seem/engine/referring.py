"""Referring-image search: an object marked on one image finds the same kind of object elsewhere.

SEEM turns a visual prompt into tokens sampled from the image features at the marked pixels
(``SeemDecoder.encode_prompt``); decoded on the REFERENCE image, they give the example object's
text-space embedding. Two ways to compare objects with it (``similarity``):

* ``"class"`` (default): the kind of an object is what the model names it. The example is
  decoded as a mask prompt (as ``predict`` decodes it), and its class distribution over the
  segmenter's vocabulary (and "no object") is compared with that of every object query of
  automatic mode on the TARGET image (cosine similarity). The queries at least
  ``min_similarity`` alike take part in the panoptic merge and the region rules, as the queries
  of one class do in text search, and each object found is outlined again from a click (as in
  text search). Objects that the model names alike score near 1, whatever the model.
* ``"embedding"``: the reference tokens prompt the decoder on the target (the official v1 code
  cannot run this path; see the reference data README), which yields the best-matching region.
  Other instances are the object queries of that pass whose embedding is close (cosine >=
  ``min_similarity``) to the example's own; overlapping candidates are resolved greedily by
  similarity. This compares more finely than the vocabulary, but how close "alike" is depends on
  the model: the shipped synthetic model's embeddings of two nuclei are often far apart.
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


#: what ``find_similar`` compares
SIMILARITIES = ("class", "embedding")


def _alike_by_class(segmenter: "Segmenter", ref_embedding: torch.Tensor, min_similarity: float,
                    max_objects: int) -> Segmentation:
    """Automatic mode on the current image, of the object queries whose class distribution is
    like the example's (``ref_embedding``: ``[1, D]``); outlined again by a click, as text search."""
    reference = segmenter._class_probabilities(ref_embedding)[0]
    found = segmenter._panoptic(segmenter._vocabulary, None, None, like=(reference, float(min_similarity)))
    if len(found) and segmenter.refine_text and segmenter.connected_objects:
        from .refine import refine_by_clicks

        found = refine_by_clicks(segmenter, segmenter._state(), found)
    found = segmenter._split_cells_at_nuclei(found)
    if not len(found):
        return found
    order = np.argsort(-found.scores, kind="stable")[:max_objects]
    return found.select([int(i) for i in order])


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


def find_similar(
    segmenter: "Segmenter",
    reference_image: np.ndarray,
    reference_mask: np.ndarray,
    target_image: np.ndarray | None = None,
    *,
    min_similarity: float = 0.8,
    similarity: str = "class",
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
        min_similarity: cosine similarity an object must reach.
        similarity: ``"class"`` or ``"embedding"``, what is compared (see the module docstring).
        max_objects: at most this many objects are returned (the most similar ones).
        max_overlap: ``"embedding"`` only: a candidate overlapping already kept objects by more
            than this fraction of its own area is dropped.

    Returns:
        objects sorted by similarity, ``scores`` the similarities; with ``"embedding"``, the first
        object is the region the reference tokens select directly.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if not np.isfinite(min_similarity):
        raise ValueError(f"min_similarity must be a number, got {min_similarity!r}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1, got {max_objects!r}")
    if target_image is not None:
        segmenter.set_image(target_image, normalize=normalize, channel=channel)
    target = segmenter._state()
    reference = segmenter._encode(reference_image, normalize, channel)
    pos, neg = segmenter._padded_masks(reference, [ObjectPrompt(mask=np.asarray(reference_mask, bool))])
    predictor = segmenter.model.predictor
    with segmenter._lock, inference_context(segmenter.device, segmenter.precision):
        ref_prepared = segmenter.model.prepare_decoder(reference.features)
        if similarity == "class":  # the example as a mask prompt, as predict() decodes it
            ref_out = predictor(ref_prepared, pos_masks=pos, neg_masks=neg, generator=segmenter._generator())
        else:
            tokens = predictor.encode_prompt(ref_prepared, pos_masks=pos, neg_masks=neg, generator=segmenter._generator())
            ref_out = predictor(ref_prepared, prompt_tokens=tokens, generator=segmenter._generator())
        ref_embedding = ref_out.selected_captions()[0].float()  # [1, D]
    if similarity == "class":
        return _alike_by_class(segmenter, ref_embedding, min_similarity, max_objects)
    with segmenter._lock, inference_context(segmenter.device, segmenter.precision):
        out = predictor(segmenter.model.prepare_decoder(target.features), prompt_tokens=tokens,
                        class_embeddings=segmenter._class_embeddings(), generator=segmenter._generator())
        candidates = torch.cat([out.selected_masks[0], out.masks[0]]).float()
        embeddings = torch.cat([out.selected_captions()[0], out.captions[0]]).float()
        similarity = (_normalized(embeddings) @ _normalized(ref_embedding).t())[:, 0]
    order = [0] + [int(i) for i in torch.argsort(similarity[1:], descending=True) + 1]
    kept: list[int] = []
    taken = None
    for i in order:
        if len(kept) >= max_objects:
            break
        if i != 0 and float(similarity[i]) < min_similarity:
            continue
        grid = segmenter._to_model_grid(target, candidates[i:i + 1])[0] > 0  # one candidate at a time: bounded memory
        taken = torch.zeros_like(grid) if taken is None else taken
        area = int(grid.sum())
        if area == 0 or int((grid & taken).sum()) > max_overlap * area:
            continue
        kept.append(i)
        taken |= grid
    if not kept:
        return Segmentation.empty(target.prepared.original_shape)
    names, class_scores = segmenter._name(embeddings[kept])
    result = segmenter._result(target, candidates[kept], names, class_scores)
    result.scores = similarity[kept].clamp(0, 1).cpu().numpy().astype(np.float32)
    return result
