"""What a segmentation call returns: masks at the original resolution, scores, class names."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segmentation:
    """Objects found in one image (or frame).

    Attributes:
        masks: ``[N, H, W]`` bool, one mask per object, at the ORIGINAL image resolution.
        scores: ``[N]`` float32 mask confidence in 0..1 (mean foreground probability in the mask).
        class_names: ``N`` semantic class names from the vocabulary.
        class_scores: ``[N]`` float32 probability of that class.
        memory: ``[N, h, w]`` float32 mask logits at the decoder's resolution (stride 4 of the
            padded model input). Pass the whole result as ``previous=`` to refine it: these
            logits are SEEM's memory prompt. ``None`` for results that cannot serve as memory.
        object_ids: ``[N]`` int64 ids (1..N unless the caller assigned ids, e.g. in propagation).
    """

    masks: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    class_scores: np.ndarray
    memory: np.ndarray | None = None
    object_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.object_ids is None:
            self.object_ids = np.arange(1, n + 1, dtype=np.int64)
        self.object_ids = np.asarray(self.object_ids, dtype=np.int64)
        if not (len(self.scores) == len(self.class_names) == len(self.class_scores) == len(self.object_ids) == n):
            raise ValueError("masks, scores, class_names, class_scores and object_ids must have one entry per object")

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.masks.shape[-2:])  # type: ignore[return-value]

    def to_labels(self, dtype=np.int32) -> np.ndarray:
        """Instance label image ``[H, W]``: pixel = object id, 0 = background.

        Where objects overlap, the one with the higher score wins.
        """
        labels = np.zeros(self.shape, dtype=dtype)
        for idx in np.argsort(self.scores, kind="stable"):  # low scores first, high scores paint over
            labels[self.masks[idx]] = self.object_ids[idx]
        return labels

    def table(self) -> dict[str, np.ndarray]:
        """Per-object columns (``id``, ``class_name``, ``class_score``, ``score``, ``area``)."""
        return {
            "id": self.object_ids.copy(),
            "class_name": np.asarray(self.class_names, dtype=object),
            "class_score": np.asarray(self.class_scores, dtype=np.float32),
            "score": np.asarray(self.scores, dtype=np.float32),
            "area": self.masks.reshape(len(self), int(np.prod(self.shape))).sum(1).astype(np.int64),
        }

    def select(self, index) -> "Segmentation":
        """A new result with only the objects at ``index`` (int, slice, list or bool mask)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Segmentation(
            masks=self.masks[idx],
            scores=self.scores[idx],
            class_names=[self.class_names[i] for i in idx],
            class_scores=self.class_scores[idx],
            memory=None if self.memory is None else self.memory[idx],
            object_ids=self.object_ids[idx],
        )

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "Segmentation":
        return cls(
            masks=np.zeros((0, *shape), dtype=bool),
            scores=np.zeros(0, dtype=np.float32),
            class_names=[],
            class_scores=np.zeros(0, dtype=np.float32),
            memory=None,
            object_ids=np.zeros(0, dtype=np.int64),
        )
