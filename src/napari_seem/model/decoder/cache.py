"""Per-image decoder data that does not depend on the prompt (the fast decoding path).

:meth:`SeemDecoder.prepare_features` computes it once per image; every later decode on that
image (each click, stroke, text query) reuses it instead of the raw pixel-decoder features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DecoderCache:
    """Prompt-independent decoder inputs of ``B`` images.

    ``C`` is the decoder width, ``h`` the number of heads, ``(h_l, w_l)`` the size of feature
    level ``l`` (strides 32, 16, 8) and ``(H4, W4)`` the ``mask_features`` size.

    Attributes:
        mask_features: ``[B, mask_dim, H4, W4]`` pixel embeddings the output masks are read from.
        levels: per level, ``[B, C, h_l, w_l]`` input-projected features plus level embedding
            (the visual-prompt tokens are sampled from them).
        level_mask_features: per level, ``mask_features`` bilinearly resized to ``(h_l, w_l)``;
            the attention masks of the next layer are computed at this resolution.
        keys, values: per decoder layer ``i`` (level ``i % 3``), its cross-attention key and
            value projections of the level features, ``[B, h, h_l * w_l, C / h]``.
    """

    mask_features: Tensor
    levels: list[Tensor]
    level_mask_features: list[Tensor]
    keys: list[Tensor]
    values: list[Tensor]

    @property
    def batch_size(self) -> int:
        return self.mask_features.shape[0]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """``(h_l, w_l)`` of each feature level."""
        return [tuple(x.shape[-2:]) for x in self.levels]

    def tensors(self) -> list[Tensor]:
        return [self.mask_features, *self.levels, *self.level_mask_features, *self.keys, *self.values]

    def nbytes(self) -> int:
        """Memory held by the prepared tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def to(self, device: torch.device | str) -> "DecoderCache":
        return DecoderCache(
            self.mask_features.to(device),
            [t.to(device) for t in self.levels],
            [t.to(device) for t in self.level_mask_features],
            [t.to(device) for t in self.keys],
            [t.to(device) for t in self.values],
        )
