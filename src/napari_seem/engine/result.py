"""What a segmentation call returns: masks at the original resolution, scores, class names."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


class Segmentation:
    """Objects found in one image (or frame).

    Two storages behind one interface. Prompted objects (clicks, boxes, masks) may overlap and are
    held as a dense ``[N, H, W]`` stack. Automatic mode and text search give objects that never
    overlap, held as ONE label image however many objects there are (:meth:`from_labels`): a
    2048 x 2048 field with thousands of nuclei then costs megabytes, not gigabytes.
    :meth:`mask`, :meth:`to_labels`, :meth:`table` and :meth:`select` work on either without
    making the dense stack; :attr:`masks` makes it (once) when asked for.

    Attributes:
        masks: ``[N, H, W]`` bool, one mask per object, at the ORIGINAL image resolution (for a
            label-image result, a read-only stack built on first access).
        scores: ``[N]`` float32 mask confidence in 0..1 (mean foreground probability in the mask).
        class_names: ``N`` semantic class names from the vocabulary.
        class_scores: ``[N]`` float32 probability of that class.
        memory: ``[N, h, w]`` float32 mask logits at the decoder's resolution (stride 4 of the
            padded model input). Pass the whole result as ``previous=`` to refine it: these
            logits are SEEM's memory prompt. ``None`` for results that cannot serve as memory.
        object_ids: ``[N]`` int64 ids (1..N unless the caller assigned ids, e.g. in propagation).
    """

    def __init__(
        self,
        masks: np.ndarray | None,
        scores: np.ndarray,
        class_names: Sequence[str],
        class_scores: np.ndarray,
        memory: np.ndarray | None = None,
        object_ids: np.ndarray | None = None,
        *,
        labels: np.ndarray | None = None,
        memory_index: np.ndarray | None = None,
    ) -> None:
        if (masks is None) == (labels is None):
            raise ValueError("give either masks [N, H, W] or a label image [H, W]")
        if masks is not None and np.ndim(masks) != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {np.shape(masks)}")
        if labels is not None and np.ndim(labels) != 2:
            raise ValueError(f"labels must be [H, W], got shape {np.shape(labels)}")
        self._masks = masks
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int32)
        self._boxes: list | None = None
        self.scores = scores
        self.class_names = list(class_names)
        self.class_scores = class_scores
        n = len(masks) if masks is not None else len(self.class_names)
        self._memory = memory
        self._memory_index = None if memory_index is None else np.asarray(memory_index, dtype=np.int64)
        if self._memory_index is not None and (memory is None or len(self._memory_index) != n):
            raise ValueError("memory_index needs the memory rows and one entry per object")
        self.object_ids = np.arange(1, n + 1, dtype=np.int64) if object_ids is None else np.asarray(object_ids, dtype=np.int64)
        if not (len(self.scores) == len(self.class_names) == len(self.class_scores) == len(self.object_ids) == n):
            raise ValueError("masks, scores, class_names, class_scores and object_ids must have one entry per object")
        if self._labels is not None and n and int(self._labels.max()) > n:
            raise ValueError(f"label image names object {int(self._labels.max())} but only {n} objects are given")

    @classmethod
    def from_labels(cls, labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], class_scores: np.ndarray,
                    memory: np.ndarray | None = None, object_ids: np.ndarray | None = None,
                    memory_index: np.ndarray | None = None) -> "Segmentation":
        """Non-overlapping objects from a label image.

        Args:
            labels: ``[H, W]`` int, ``k + 1`` where object ``k`` (its POSITION in this result,
                not its id) lies, 0 elsewhere.
            memory: ``[N, h, w]`` mask logits, or with ``memory_index`` ``[R, h, w]`` rows that
                several objects share (the pieces of one query's mask): object ``k``'s memory is
                ``memory[memory_index[k]]``.
        """
        return cls(None, scores, class_names, class_scores, memory, object_ids, labels=labels,
                   memory_index=memory_index)

    def __len__(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        storage = "label image" if self._labels is not None else "mask stack"
        return f"Segmentation({len(self)} objects, {self.shape[0]} x {self.shape[1]}, {storage})"

    @property
    def shape(self) -> tuple[int, int]:
        source = self._labels if self._labels is not None else self._masks
        return tuple(source.shape[-2:])  # type: ignore[return-value, union-attr]

    @property
    def compact(self) -> bool:
        """True when the objects are held as one label image (see the class docstring)."""
        return self._labels is not None

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            stack = np.zeros((len(self), *self.shape), dtype=bool)
            for k in range(len(self)):
                box = self.box(k)
                if box is not None:
                    stack[k][box] = self._labels[box] == k + 1  # type: ignore[index]
            stack.flags.writeable = False  # a view of the label image, not a second source of truth
            self._masks = stack
        return self._masks

    @property
    def memory(self) -> np.ndarray | None:
        if self._memory is not None and self._memory_index is not None:
            self._memory = self._memory[self._memory_index]
            self._memory_index = None
        return self._memory

    def memory_rows(self) -> tuple[np.ndarray | None, np.ndarray]:
        """``(rows [R, h, w], index [N])``: the memory as held, object ``k``'s being
        ``rows[index[k]]`` (pieces of one query's mask share its row); ``(None, ...)`` without memory."""
        index = np.arange(len(self)) if self._memory_index is None else self._memory_index
        return self._memory, index

    def memory_of(self, index: int) -> np.ndarray | None:
        """``[h, w]`` memory logits of object ``index`` (without building every object's)."""
        if self._memory is None:
            return None
        row = index if self._memory_index is None else int(self._memory_index[index])
        return self._memory[row]

    def box(self, k: int) -> tuple[slice, slice] | None:
        """Bounding box ``(rows, cols)`` slices of object ``k`` (None when it has no pixel)."""
        if self._labels is None:
            mask = self._masks[k]  # type: ignore[index]
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            return (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if rows.size else None
        if self._boxes is None:
            self._boxes = ndimage.find_objects(self._labels, max_label=len(self))
        return self._boxes[k]

    def mask(self, index: int) -> np.ndarray:
        """``[H, W]`` bool mask of object ``index`` (a position, not an id)."""
        if self._labels is None:
            return self._masks[index]  # type: ignore[index]
        index = range(len(self))[index]  # negative positions, bounds
        out = np.zeros(self.shape, dtype=bool)
        box = self.box(index)
        if box is not None:
            out[box] = self._labels[box] == index + 1
        return out

    def positions(self) -> np.ndarray | None:
        """``[H, W]`` int32: ``k + 1`` where object ``k`` lies (None for an overlapping mask stack)."""
        return self._labels

    def to_labels(self, dtype=np.int32) -> np.ndarray:
        """Instance label image ``[H, W]``: pixel = object id, 0 = background.

        Where objects overlap, the one with the higher score wins.
        """
        if self._labels is not None:
            lookup = np.concatenate([[0], self.object_ids]).astype(dtype)
            return lookup[self._labels]
        labels = np.zeros(self.shape, dtype=dtype)
        for idx in np.argsort(self.scores, kind="stable"):  # low scores first, high scores paint over
            labels[self._masks[idx]] = self.object_ids[idx]  # type: ignore[index]
        return labels

    def areas(self) -> np.ndarray:
        """``[N]`` int64 pixel count of each object."""
        if self._labels is not None:
            return np.bincount(self._labels.ravel(), minlength=len(self) + 1)[1:len(self) + 1].astype(np.int64)
        return self._masks.reshape(len(self), int(np.prod(self.shape))).sum(1).astype(np.int64)  # type: ignore[union-attr]

    def table(self) -> dict[str, np.ndarray]:
        """Per-object columns (``id``, ``class_name``, ``class_score``, ``score``, ``area``)."""
        return {
            "id": self.object_ids.copy(),
            "class_name": np.asarray(self.class_names, dtype=object),
            "class_score": np.asarray(self.class_scores, dtype=np.float32),
            "score": np.asarray(self.scores, dtype=np.float32),
            "area": self.areas(),
        }

    def select(self, index) -> "Segmentation":
        """A new result with only the objects at ``index`` (int, slice, list or bool mask)."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        common = dict(scores=self.scores[idx], class_names=[self.class_names[i] for i in idx],
                      class_scores=self.class_scores[idx], object_ids=self.object_ids[idx])
        if self._labels is None:
            return Segmentation(self._masks[idx], memory=self._memory_rows(idx), **common)  # type: ignore[index]
        if len(np.unique(idx)) < len(idx):  # an object twice: overlapping copies need a mask stack
            masks = np.stack([self.mask(i) for i in idx])
            return Segmentation(masks, memory=self._memory_rows(idx), **common)
        lookup = np.zeros(len(self) + 1, dtype=np.int32)
        lookup[idx + 1] = np.arange(1, len(idx) + 1)
        rows, index = self.memory_rows()  # the rows stay shared
        return Segmentation.from_labels(lookup[self._labels], memory=rows,
                                        memory_index=None if rows is None else index[idx], **common)

    @classmethod
    def concatenate(cls, parts: Sequence["Segmentation"], object_ids: np.ndarray | None = None) -> "Segmentation":
        """One mask-stack result of the objects of ``parts`` in order (e.g. the chunks of one call),
        ids ``object_ids`` (default 1..N); memory kept where every part has it."""
        masks = np.concatenate([p.masks for p in parts])
        memories = [p.memory for p in parts]
        memory = None if any(m is None for m in memories) else np.concatenate(memories)
        return cls(masks, np.concatenate([p.scores for p in parts]), [n for p in parts for n in p.class_names],
                   np.concatenate([p.class_scores for p in parts]), memory=memory, object_ids=object_ids)

    def _memory_rows(self, idx: np.ndarray) -> np.ndarray | None:
        if self._memory is None:
            return None
        return self._memory[idx if self._memory_index is None else self._memory_index[idx]]

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


def positions_of(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``[H, W]`` int32: ``k + 1`` where the label image ``labels`` holds ``ids[k]``, 0 elsewhere
    (the label image of :meth:`Segmentation.from_labels` for objects with those ids)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros(np.shape(labels), dtype=np.int32)
    if not len(ids):
        return out
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    values = np.asarray(labels).astype(np.int64, copy=False)
    at = np.searchsorted(ordered, values).clip(max=len(ids) - 1)
    hit = ordered[at] == values
    out[hit] = order[at[hit]] + 1
    return out
