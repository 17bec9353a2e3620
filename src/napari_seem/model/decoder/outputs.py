"""Outputs of the SEEM decoder, with a mapping to the official output names."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import torch
from torch import Tensor


@dataclass
class DecoderPredictions:
    """Predictions of one decoder stage (official output names in brackets).

    ``h, w`` is the ``mask_features`` resolution (padded image / 4), ``Q`` the number of object
    queries, ``S = QUERY_NUMBER * n`` the spatial queries of ``n`` prompted objects
    (object-major), ``D`` the joint vision-language dimension.

    Attributes:
        masks: ``[B, Q, h, w]`` object-query mask logits (``pred_masks``); None when the
            object queries were not run.
        captions: ``[B, Q, D]`` object-query embeddings in the text space (``pred_captions``).
        class_logits: ``[B, Q, K]`` ``exp(logit_scale) * cos(captions, class_embeddings)``
            (``pred_logits``); None without ``class_embeddings``.
        grounding_masks: ``[B, Q, h, w]`` grounding-query mask logits (``pred_gmasks``).
        grounding_captions: ``[B, Q, D]`` grounding-query text-space embeddings (``pred_gtexts``).
        spatial_masks: ``[B, S, h, w]`` spatial-query mask logits (``pred_smasks``).
        spatial_mask_embeds: ``[B, S, mask_dim]`` spatial-query mask embeddings (``pred_smaskembs``).
        spatial_captions: ``[B, S, D]`` spatial-query text-space embeddings (``pred_stexts``).
    """

    masks: Tensor | None = None
    captions: Tensor | None = None
    class_logits: Tensor | None = None
    grounding_masks: Tensor | None = None
    grounding_captions: Tensor | None = None
    spatial_masks: Tensor | None = None
    spatial_mask_embeds: Tensor | None = None
    spatial_captions: Tensor | None = None


_OFFICIAL_NAMES = {
    "masks": "pred_masks",
    "captions": "pred_captions",
    "class_logits": "pred_logits",
    "grounding_masks": "pred_gmasks",
    "grounding_captions": "pred_gtexts",
    "spatial_masks": "pred_smasks",
    "spatial_mask_embeds": "pred_smaskembs",
    "spatial_captions": "pred_stexts",
    "pos_embeds": "pred_pspatials",
    "neg_embeds": "pred_nspatials",
    "selected_masks": "prev_mask",
}


@dataclass
class DecoderOutput(DecoderPredictions):
    """Final predictions, the earlier stages and the visual-prompt results.

    Attributes:
        aux: predictions before decoder layer 0, 1, ... (all stages but the final one).
        pos_embeds: ``[B, n, C]`` mean mask feature at each object's positive points
            (``pred_pspatials``), visual prompts only.
        neg_embeds: ``[B, n, C]`` same for negative points (``pred_nspatials``).
        selected_index: ``[B, n]`` which of each object's ``QUERY_NUMBER`` spatial queries was
            selected: the one whose mask embedding has the largest dot product with ``pos_embeds``.
        selected_masks: ``[B, n, h, w]`` mask logits of the selected queries (``prev_mask``);
            pass them back as ``prev_mask`` in the next interactive round.
    """

    aux: list[DecoderPredictions] = field(default_factory=list)
    pos_embeds: Tensor | None = None
    neg_embeds: Tensor | None = None
    selected_index: Tensor | None = None
    selected_masks: Tensor | None = None

    def selected_captions(self) -> Tensor | None:
        """``[B, n, D]`` text-space embeddings of each object's selected spatial query
        (``selected_index`` counts within an object's own ``QUERY_NUMBER`` queries)."""
        if self.spatial_captions is None or self.selected_index is None:
            return None
        b, n = self.selected_index.shape
        captions = self.spatial_captions.view(b, n, self.spatial_captions.shape[1] // n, -1)
        index = self.selected_index[:, :, None, None].expand(-1, -1, 1, captions.shape[-1])
        return torch.gather(captions, 2, index)[:, :, 0]

    def as_official(self) -> dict[str, Any]:
        """The outputs under the official names (``pred_*``, ``prev_mask``, ``aux_outputs``)."""

        def named(pred: DecoderPredictions, names: Mapping[str, str]) -> dict[str, Tensor]:
            out = {}
            for f in fields(DecoderPredictions):
                value = getattr(pred, f.name)
                if value is not None:
                    out[names[f.name]] = value
            return out

        out = named(self, _OFFICIAL_NAMES)
        for name in ("pos_embeds", "neg_embeds", "selected_masks"):
            value = getattr(self, name)
            if value is not None:
                out[_OFFICIAL_NAMES[name]] = value
        out["aux_outputs"] = [named(a, _OFFICIAL_NAMES) for a in self.aux]
        return out
