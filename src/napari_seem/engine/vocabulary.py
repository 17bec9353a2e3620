"""Class-name vocabularies: names, which are countable "things", and cached text embeddings.

A vocabulary is what SEEM compares object embeddings against to name each mask. The default is
the 133 COCO panoptic classes SEEM was trained with (80 things, then 53 "stuff" classes);
microscopists replace or extend it (``["nucleus", "cell", "mitochondrion"]``). Embeddings are
computed once per (model, vocabulary) with the 81 prompt templates SEEM uses and then cached.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

#: The COCO panoptic class names, in SEEM's order (ids 0..132); the first 80 are things.
COCO_PANOPTIC_CLASSES: tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush', 'banner', 'blanket',
    'bridge', 'cardboard', 'counter', 'curtain', 'door-stuff', 'floor-wood', 'flower', 'fruit',
    'gravel', 'house', 'light', 'mirror-stuff', 'net', 'pillow', 'platform', 'playingfield',
    'railroad', 'river', 'road', 'roof', 'sand', 'sea', 'shelf', 'snow', 'stairs', 'tent',
    'towel', 'wall-brick', 'wall-stone', 'wall-tile', 'wall-wood', 'water-other',
    'window-blind', 'window-other', 'tree-merged', 'fence-merged', 'ceiling-merged',
    'sky-other-merged', 'cabinet-merged', 'table-merged', 'floor-other-merged',
    'pavement-merged', 'mountain-merged', 'grass-merged', 'dirt-merged', 'paper-merged',
    'food-other-merged', 'building-other-merged', 'rock-merged', 'wall-other-merged',
    'rug-merged',
)
COCO_NUM_THINGS = 80


def display_name(name: str) -> str:
    """Name shown to users: COCO's ``-merged``/``-other``/``-stuff`` suffixes removed."""
    for suffix in ("-other-merged", "-merged", "-other", "-stuff"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class Vocabulary:
    """An ordered list of class names and which of them are countable objects ("things").

    Args:
        names: class names; duplicates and empty names raise ``ValueError``.
        things: names (or indices) that are countable objects. Default: all of them, except for
            the COCO vocabulary where the official split is used. Stuff classes (background-like
            regions) merge into one segment in automatic mode.
    """

    def __init__(self, names: Iterable[str], things: Iterable[str | int] | None = None) -> None:
        cleaned = [str(n).strip() for n in names]
        if not cleaned:
            raise ValueError("a vocabulary needs at least one class name")
        if any(not n for n in cleaned):
            raise ValueError("class names must not be empty")
        dupes = sorted({n for n in cleaned if cleaned.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate class names in vocabulary: {dupes}")
        self.names: tuple[str, ...] = tuple(cleaned)
        if things is None:
            self.thing_ids = tuple(range(len(cleaned)))
        else:
            ids = []
            for t in things:
                idx = t if isinstance(t, int) else self.names.index(t)
                if not 0 <= idx < len(cleaned):
                    raise ValueError(f"thing index {idx} out of range")
                ids.append(idx)
            self.thing_ids = tuple(sorted(set(ids)))
        self._cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def coco(cls) -> "Vocabulary":
        return cls(COCO_PANOPTIC_CLASSES, things=range(COCO_NUM_THINGS))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.names, self.thing_ids) == (other.names, other.thing_ids)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} classes: {', '.join(self.names[:5])}{', ...' if len(self) > 5 else ''})"

    def display_names(self) -> list[str]:
        return [display_name(n) for n in self.names]

    def extended(self, names: Sequence[str]) -> "Vocabulary":
        """A new vocabulary with ``names`` appended (new names are things)."""
        added = [n for n in names if n not in self.names]
        return Vocabulary([*self.names, *added], things=[*self.thing_ids, *range(len(self), len(self) + len(added))])

    def text_embeddings(self, lang_encoder: torch.nn.Module) -> torch.Tensor:
        """``[K + 1, D]`` normalised class embeddings (K names + "background" last), cached per encoder."""
        key = (id(lang_encoder), lang_encoder.lang_proj.device, lang_encoder.lang_proj.dtype, lang_encoder.lang_proj._version)
        if key not in self._cache:
            with torch.inference_mode():
                self._cache = {key: lang_encoder.class_embeddings([*self.names, "background"])}
        return self._cache[key]
