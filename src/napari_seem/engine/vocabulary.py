"""Class-name vocabularies: names, which are countable "things", and cached text embeddings.

A vocabulary is what SEEM compares object embeddings against to name each mask. The default is
the 133 COCO panoptic classes SEEM was trained with (80 things, then 53 "stuff" classes);
microscopists replace or extend it (``["nucleus", "cell", "mitochondrion"]``). Embeddings are
computed once per (model, vocabulary) with the 81 prompt templates SEEM uses and then cached.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
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
BACKGROUND = "background"


def display_name(name: str) -> str:
    """Name shown to users: COCO's ``-merged``/``-other``/``-stuff`` suffixes removed."""
    for suffix in ("-other-merged", "-merged", "-other", "-stuff"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class Vocabulary:
    """An ordered list of class names and which of them are countable objects ("things").

    Args:
        names: class names; duplicates and empty names raise ``ValueError``. ``"background"`` is
            SEEM's no-object class, always appended last; a name "background" in ``names`` is
            dropped.
        things: names (or indices) that are countable objects. Default: all of them, except for
            the COCO vocabulary where the official split is used. Stuff classes (background-like
            regions) merge into one segment in automatic mode.
    """

    def __init__(self, names: Iterable[str], things: Iterable[str | int] | None = None) -> None:
        cleaned = [str(n).strip() for n in names]
        cleaned = [n for n in cleaned if n.lower() != BACKGROUND]  # always added last, as SEEM's no-object class
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

    def text_embeddings(self, lang_encoder: torch.nn.Module, cache_dir: str | Path | None = None,
                        templates: bool = True) -> torch.Tensor:
        """``[K + 1, D]`` normalised class embeddings (K names + "background" last).

        With ``templates`` (SEEM's evaluation setting) each name is encoded in 81 prompt templates
        and averaged: for the 133 COCO classes that is ~5 minutes on a 2-core CPU with a
        full-size model, so embeddings are cached in memory per encoder and, with ``cache_dir``,
        on disk keyed by the encoder's weights and the names. ``templates=False`` encodes the bare
        names (one prompt per class, seconds).
        """
        return class_embeddings_cached(lang_encoder, (*self.names, BACKGROUND), cache_dir, templates)


_MEMORY: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def default_cache_dir() -> Path:
    """``$NAPARI_SEEM_CACHE_DIR`` or ``~/.cache/napari-seem``."""
    return Path(os.environ.get("NAPARI_SEEM_CACHE_DIR", Path.home() / ".cache" / "napari-seem")).expanduser()


def _fingerprint(lang_encoder: torch.nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(lang_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def class_embeddings_cached(lang_encoder: torch.nn.Module, names: tuple[str, ...],
                            cache_dir: str | Path | None = None, templates: bool = True) -> torch.Tensor:
    """``lang_encoder.class_embeddings(names, templates)``, computed once per (weights, names, templates)."""
    entry = _MEMORY.setdefault(lang_encoder, {})
    versions = tuple(p._version for p in lang_encoder.parameters())
    if entry.get("versions") != versions:  # weights changed (loaded / trained): start over
        entry.clear()
        entry["versions"] = versions
    key_names = (templates, names)
    if key_names in entry:
        return entry[key_names]
    device = next(lang_encoder.parameters()).device
    path = None
    if cache_dir is not None:
        if "fingerprint" not in entry:
            entry["fingerprint"] = _fingerprint(lang_encoder)
        key = hashlib.blake2b((str(templates) + "\n" + "\n".join(names)).encode(), digest_size=12).hexdigest()
        path = Path(cache_dir) / "text-embeddings" / f"{entry['fingerprint']}-{key}.pt"
        if path.is_file():
            try:
                entry[key_names] = torch.load(path, map_location=device, weights_only=True)
                return entry[key_names]
            except Exception:  # a broken cache file is recomputed
                pass
    with torch.inference_mode():
        embeddings = lang_encoder.class_embeddings(list(names), templates=templates)
    entry[key_names] = embeddings
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(embeddings.cpu().clone(), path)
    return embeddings
