"""``Segmenter``: SEEM on numpy images — set an image once, then prompt it many times.

>>> seg = Segmenter.from_pretrained("seem_focalt_v1", device="auto")
>>> seg.set_image(image)                                   # [H, W], [H, W, 3] or [H, W, 4]
>>> r = seg.predict(ObjectPrompt(points=[(40, 52)]))        # one object from a click
>>> r = seg.predict(ObjectPrompt(points=[(40, 52), (70, 60)], point_labels=[1, 0]), previous=r)
>>> nuclei = seg.predict(text="nucleus")                   # every object of that class
>>> everything = seg.segment_everything()

Coordinates are (row, col) pixels of the image given to :meth:`set_image`; every mask comes back
at that image's resolution. The image is encoded once (and cached by content); prompts only run
the decoder. Random draws of SEEM (which object queries seed a prompt, which memory slots serve
which object, the subsample of a large prompt) come from a generator seeded per call, so the same
call gives the same result, independent of the global RNG.
"""
from __future__ import annotations

import numbers
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

from ..model import SEEM, from_pretrained
from ..model.postprocess import panoptic_inference
from ..model.seem import ImageFeatures
from . import boxes as box_rule
from .clicked_cell import is_lone_click, missed_nucleus, nucleus_basins
from .connected import (
    CELL,
    CELL_GROWTH_HALF_ANGLE,
    NECK_MIN_AREA,
    NECK_RATIO,
    NUCLEUS,
    centre_pixel,
    cut_at_foreign_nuclei,
    cut_beyond_negative_clicks,
    grow_toward_positive_clicks,
    cut_at_negatives,
    grow_at_marks,
    keep_prompted_regions_all,
    merge_duplicate_labels,
    split_between_nuclei,
    split_label_regions,
    split_touching_cells,
)
from .device import inference_context, release_memory, resolve_device
from .feature_cache import FeatureCache, image_signature, model_fingerprint
from .image import DEFAULT_MAX_SIDE, DEFAULT_SHORT_SIDE, MAX_SCALE, Normalize, PreparedImage, logits_to_original, prepare_image
from .outline_refiner import MIN_AGREEMENT, OutlineRefiner, load_refiner, refine_outlines
from .prompts import ObjectPrompt, rasterize, stack_prompts
from .result import Segmentation
from .vocabulary import Vocabulary, default_cache_dir

PromptsArg = ObjectPrompt | Sequence[ObjectPrompt] | None

#: image-sized prompts (and full-size masks) decoded in one pass at most, in pixels: 16 objects on
#: a 1024 x 1024 image, 4 on a 2048 x 2048 one (see ``Segmenter._object_chunks``). Focal-T, 64
#: clicks on a 1024 x 1024 image, 2 threads: 4.7 s and 1.26 GB above the encoded image in one
#: pass; 3.4 s and 0.28 GB in chunks of 16
PROMPT_PIXELS = 1 << 24

#: class name -> the overlap (IoU) with the engine's mask a clicked object's refined outline needs
#: to replace it (else ``MIN_AGREEMENT``). A cell clicked near its edge often comes out of SEEM as
#: (part of) its neighbour, while its refiner, trained on such masks, draws the clicked cell: the
#: refiner's outline is taken whatever its overlap (measured in the model card, *Refiner of cells*)
CLICKED_AGREEMENT: dict[str, float] = {CELL: 0.0}


@dataclass
class _ImageState:
    prepared: PreparedImage
    features: ImageFeatures
    key: str
    #: the image as an outline refiner reads it (``[3, H, W]`` on 0..1), made at its first use
    refiner_rgb: np.ndarray | None = None


class Segmenter:
    """Numpy-in, numpy-out SEEM predictor with a feature cache.

    Args:
        model: a :class:`~napari_seem.model.SEEM` with weights loaded.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        precision: ``"auto"`` (fp32 on CPU, bf16/fp16 autocast on GPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        vocabulary: class names used to name masks (default: the 133 COCO panoptic classes).
        short_side, max_side: model-side resolution (see :mod:`napari_seem.engine.image`);
            ``short_side=None`` keeps the image's own size (padded only).
        scale: resize every image by this factor instead (model pixels per image pixel, > 0 and
            at most :data:`MAX_SCALE`; ``short_side`` and ``max_side`` are then not used): < 1
            for objects larger than those the model was trained on, > 1 for smaller ones.
        cache_bytes: memory budget of the per-image feature cache (LRU).
        seed: seed of the per-call random generator (SEEM's random draws).
        text_cache_dir: where vocabulary text embeddings are kept between sessions
            (``"default"``: ``~/.cache/napari-seem``; None: memory only).
        templates: encode class names in SEEM's 81 prompt templates (its evaluation setting) or
            as bare names. ``"auto"``: templates on a GPU, or on a CPU for vocabularies of at most
            25 names; the 133 COCO names as bare names on a CPU (templates there take minutes the
            first time).
        feature_dir: folder where encoded images are also kept on disk, keyed by image content,
            preprocessing and model weights, so re-opening a dataset does not re-encode it.
        connected_objects: one object, one connected region (see :mod:`napari_seem.engine.connected`):
            a prompted object keeps only the regions of its mask that its positive prompt touches
            (a click marks one object, not every look-alike in the image), and a negative prompt
            cuts off the part of the mask it falls in; automatic mode and text search give one
            object per separate region of a "thing" segment, and join the touching segments of
            two queries on one object. ``False`` returns SEEM's raw masks.
        refine_text: with ``connected_objects``, every object text search finds is decoded
            again from a click at its centre, and that outline replaces the found one where the
            two agree (see :mod:`napari_seem.engine.refine`).
        cells_hold_one_nucleus: with ``connected_objects`` and ``cell`` and ``nucleus`` in the
            vocabulary, a prompted object named ``cell`` is cut between its own nucleus and the
            other nuclei its mask covers (found by text search, once per image): a cell's mask
            that leaks into its neighbours loses them (see
            :func:`napari_seem.engine.connected.cut_at_foreign_nuclei`); a cell clicked once (no
            previous result) whose mask leaves out the nucleus the click belongs to and covers
            another is decoded again with a second click on that nucleus
            (:mod:`napari_seem.engine.clicked_cell`); and a cell found by
            text search (or referring-image search) that covers several nuclei is split into one
            cell per nucleus (:func:`napari_seem.engine.connected.split_between_nuclei`).
        fit_boxes: with ``connected_objects``, a box marks the object that fills it: an object
            whose only positive prompt is one box is decoded from candidate clicks in the box
            instead of the rectangle, and the one that fits the box is kept; with clicks or a
            previous result, SEEM reads those without the box; the mask is clipped to the box
            (see :mod:`napari_seem.engine.boxes`).
        shape_priors: with ``connected_objects``, a prompted object named ``nucleus`` is cut
            along the line through each negative click, square to the direction from its first
            positive click, and grown on the side of each new positive click outside its previous
            mask: a nucleus is convex; one named ``cell`` grows so within 30 degrees of the
            click's direction: a cell is star-shaped around where it was clicked
            (:func:`napari_seem.engine.connected.cut_beyond_negative_clicks`,
            :func:`napari_seem.engine.connected.grow_toward_positive_clicks`); a cell's mask
            that spreads over a touching neighbour through a neck is split there, keeping the
            clicked part (:func:`napari_seem.engine.connected.split_touching_cells`); and a nucleus
            keeps its size through propagation: one that has crept into the cytoplasm around
            it is decoded again from a click at its centre
            (:func:`napari_seem.engine.propagate.reanchor_nuclei`).
        refiner: an :class:`~napari_seem.engine.outline_refiner.OutlineRefiner` trained for this
            model, or several (one per class): with ``connected_objects``, every clicked object
            of a refiner's classes is drawn again, at full resolution, from the image, the
            engine's mask, SEEM's probability and the clicks (after the rules above; a clicked
            cell's outline is the refiner's, see :data:`CLICKED_AGREEMENT`). ``from_pretrained``
            gives a shipped model its own refiners (``seem_tiny_synthetic``: nuclei and cells);
            None: no refiner. The attribute ``refiners`` holds them (a tuple).
    """

    def __init__(
        self,
        model: SEEM,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        vocabulary: Vocabulary | Sequence[str] | None = None,
        short_side: int | None = DEFAULT_SHORT_SIDE,
        max_side: int = DEFAULT_MAX_SIDE,
        scale: float | None = None,
        cache_bytes: int = 1 << 30,
        seed: int = 0,
        text_cache_dir: str | Path | None = "default",
        templates: bool | str = "auto",
        feature_dir: str | Path | None = None,
        connected_objects: bool = True,
        refine_text: bool = True,
        cells_hold_one_nucleus: bool = True,
        fit_boxes: bool = True,
        shape_priors: bool = True,
        refiner: OutlineRefiner | Sequence[OutlineRefiner] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        if max_side > 1024 and getattr(model.backbone, "size_divisibility", 0) == 1024:
            max_side = 1024  # the SAM ViT backbone takes at most 1024 x 1024
        self.short_side = short_side
        self.max_side = max_side
        self.scale = scale
        self.seed = int(seed)
        self.connected_objects = bool(connected_objects)
        self.refine_text = bool(refine_text)
        self.cells_hold_one_nucleus = bool(cells_hold_one_nucleus)
        self.fit_boxes = bool(fit_boxes)
        self.shape_priors = bool(shape_priors)
        self.refiner = refiner
        self._nuclei: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None  # (image and settings, nuclei)
        self._basins: tuple[tuple, np.ndarray] | None = None  # (image and settings, nucleus basins)
        self.text_cache_dir = default_cache_dir() if text_cache_dir == "default" else text_cache_dir
        if templates not in (True, False, "auto"):
            raise ValueError(f"templates must be True, False or 'auto', got {templates!r}")
        self.templates = templates
        self.cache = FeatureCache(cache_bytes, disk_dir=feature_dir)
        self._model_key = model_fingerprint(model) if feature_dir is not None else str(id(model))
        self._vocabulary = Vocabulary.coco()
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        #: the vocabulary this segmenter was made with (a shipped model's own class names, else COCO's)
        self.default_vocabulary: Vocabulary = self._vocabulary
        self._image: _ImageState | None = None
        self._lock = threading.RLock()
        self.model_name = "custom"

    @property
    def refiner(self) -> tuple[OutlineRefiner, ...] | None:
        """The outline refiners (``refiners``), None when there is none; set it to one refiner,
        several or None."""
        return self.refiners or None

    @refiner.setter
    def refiner(self, value: OutlineRefiner | Sequence[OutlineRefiner] | None) -> None:
        refiners = () if value is None else (value,) if hasattr(value, "classes") else tuple(value)
        for r in refiners:
            if not isinstance(r, torch.nn.Module) or not hasattr(r, "classes"):
                raise TypeError(f"refiner must be an OutlineRefiner, several or None, got {type(r).__name__}")
        drawn = [c for r in refiners for c in r.classes]
        if len(drawn) != len(set(drawn)):
            raise ValueError(f"two outline refiners draw the same class: {drawn}")
        self.refiners: tuple[OutlineRefiner, ...] = tuple(r.to(self.device).eval() for r in refiners)

    def refiner_for(self, class_name: str) -> OutlineRefiner | None:
        """The outline refiner that draws objects named ``class_name``, or None."""
        return next((r for r in self.refiners if class_name in r.classes), None)

    @property
    def scale(self) -> float | None:
        """Model pixels per image pixel for every image, or None (``short_side`` decides)."""
        return self._scale

    @scale.setter
    def scale(self, value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not 0 < value <= MAX_SCALE):
            raise ValueError(f"scale must be a factor > 0 and <= {MAX_SCALE} (model pixels per image pixel), "
                             f"got {value!r}")
        self._scale = None if value is None else float(value)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "auto",
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        device: str | torch.device = "auto",
        **kwargs: Any,
    ) -> "Segmenter":
        """Load a model by name or file (see :func:`napari_seem.model.from_pretrained`).

        ``"auto"`` (default) takes the official Focal-T v1 checkpoint when it is on this machine,
        else the shipped synthetic-microscopy model. A shipped model starts with the vocabulary it
        was trained on (e.g. nucleus, cell, vesicle) unless ``vocabulary=`` is given, and with its
        outline refiners unless ``refiner=`` is given (a file, an ``OutlineRefiner``, a list of
        those, or None); the weights file of a training run takes the ``refiner*.safetensors``
        beside it.
        """
        from ..model.pretrained import AUTO, default_model_name

        name = default_model_name() if str(name_or_path) == AUTO else name_or_path
        model = from_pretrained(name, config=config, device="cpu")
        from ..model.config import run_settings
        from ..weights import SHIPPED_VOCABULARIES, model_refiner

        # a model trained by napari_seem.train says how it runs (its classes, its resolution)
        for key, value in run_settings(model.cfg).items():
            kwargs.setdefault(key, value)
        if str(name) in SHIPPED_VOCABULARIES:
            # trained on 128-256 px synthetic images: use images at their own size, and its classes
            kwargs.setdefault("vocabulary", list(SHIPPED_VOCABULARIES[str(name)]))
            kwargs.setdefault("short_side", None)
            if str(name_or_path) == AUTO:
                warnings.warn(
                    f"no official SEEM checkpoint on this machine: using the shipped preview model {name!r}, "
                    "trained on synthetic images only and short of some of the project's quality targets "
                    "(see napari_seem/weights/MODEL_CARD.md); install seem_focalt_v1 for real work",
                    stacklevel=2,
                )
        if "refiner" not in kwargs:  # a shipped model's own, or a training run's (--refiner)
            kwargs["refiner"] = model_refiner(name)
        refiner = kwargs.get("refiner")
        if isinstance(refiner, (str, Path)):
            kwargs["refiner"] = load_refiner(refiner)
        elif isinstance(refiner, (list, tuple)):
            kwargs["refiner"] = [load_refiner(r) if isinstance(r, (str, Path)) else r for r in refiner]
        segmenter = cls(model, device=device, **kwargs)
        segmenter.model_name = str(name)
        return segmenter

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocabulary(self) -> list[str]:
        """Class names used for the semantic label of every mask."""
        return list(self._vocabulary.names)

    def set_vocabulary(self, names: Vocabulary | Sequence[str], things: Sequence[str | int] | None = None) -> None:
        """Replace the class names (e.g. ``["nucleus", "cell", "mitochondrion"]``)."""
        self._vocabulary = names if isinstance(names, Vocabulary) else Vocabulary(names, things=things)

    def _class_embeddings(self, vocabulary: Vocabulary | None = None) -> torch.Tensor:
        vocab = vocabulary or self._vocabulary
        templates = self.templates
        if templates == "auto":
            templates = self.device.type != "cpu" or len(vocab) <= 25
        return vocab.text_embeddings(self.model.lang_encoder, self.text_cache_dir, templates)

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray, *, normalize: Normalize = "auto", channel: int | None = None) -> None:
        """Encode ``image`` (or take its features from the cache); later calls prompt it.

        Args:
            image: ``[H, W]`` grayscale, ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA; uint8, uint16 or
                float (see :mod:`napari_seem.engine.image` for the intensity handling).
            normalize: ``"auto"``, ``"percentile"``, ``"none"`` or a ``(low, high)`` range.
            channel: for ``[H, W, C]`` multichannel images, the channel to use.
        """
        with self._lock:
            self._image = self._encode(image, normalize, channel, replaces_current=True)

    def _encode(self, image: np.ndarray, normalize: Normalize, channel: int | None,
                replaces_current: bool = False) -> _ImageState:
        prepared = prepare_image(image, normalize=normalize, channel=channel,
                                 short_side=self.short_side, max_side=self.max_side, scale=self.scale)
        key = image_signature(np.asarray(image), str(normalize), channel, self.short_side, self.max_side, self.scale,
                              self._model_key)
        features = self.cache.get(key)
        with inference_context(self.device, self.precision):
            if features is None:
                if replaces_current:
                    # the image is valid (prepare_image checked it): the current image's features
                    # are not needed while encoding its successor (the cache keeps them if its
                    # budget allows); releasing them first lowers the peak
                    self._image = None
                features = self.model.encode_image(prepared.rgb.to(self.device))
                release_memory()  # the encoder's freed intermediates, before the decoder's data grows
            elif features.mask_features.device.type != self.device.type:  # read back from disk
                features = features.to(self.device)
            # the decoder's per-image work (key/value projections, resized mask features): done
            # once per image (kept with the features) so that every prompt only runs the query side
            self.model.prepare_decoder(features)
        self.cache.put(key, features)  # after preparing: the cache's budget counts the decoder data too
        release_memory()
        return _ImageState(prepared, features, key)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the current image, or None."""
        return None if self._image is None else self._image.prepared.original_shape

    def _state(self) -> _ImageState:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._image

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        prompts: PromptsArg = None,
        *,
        text: str | None = None,
        previous: Segmentation | None = None,
        all_instances: bool = True,
        draws: Mapping[str, torch.Tensor] | None = None,
    ) -> Segmentation:
        """Segment the current image from visual prompts, text, memory, or a combination.

        Args:
            prompts: one :class:`ObjectPrompt` per object (clicks, boxes, strokes, polygons, masks).
                Several objects are segmented together in one decoder pass (SEEM multi-object).
            text: a referring phrase. Alone, it finds every object of that class when
                ``all_instances`` (default; the phrase is scored against the vocabulary plus the
                phrase itself), or the single best-matching region (SEEM grounding) otherwise.
                With visual prompts, the text guides those objects (SEEM's joint prompt).
            previous: the result of an earlier call on the same image: its masks are SEEM's memory
                prompt, so added clicks refine them instead of starting over. Must have one object
                per prompt.
            draws: recorded random draws (``query_sample_idx``, ``memory_idx_per_layer``) to
                reproduce a reference run; normally left out.

        Returns:
            a :class:`Segmentation` at the image's original resolution.

        Raises:
            ValueError: nothing to segment with, empty prompts, points outside the image, a
                previous result that does not fit, text longer than the model's context.
            RuntimeError: no image set.
        """
        state = self._state()
        prompt_list = self._prompt_list(prompts)
        if text is not None:
            text = self._check_text(text)
        if not prompt_list:
            if previous is not None:
                raise ValueError("previous= needs prompts: add clicks or strokes to refine the previous result")
            if text is None:
                raise ValueError("nothing to segment: give prompts (points, boxes, strokes, masks) and/or text")
            return self._text_search(text) if all_instances else self._grounding(text)
        with self._lock:
            return self._visual(state, prompt_list, text, previous, draws)

    @staticmethod
    def _prompt_list(prompts: PromptsArg) -> list[ObjectPrompt]:
        if prompts is None:
            return []
        if isinstance(prompts, ObjectPrompt):
            return [prompts]
        out = list(prompts)
        if not all(isinstance(p, ObjectPrompt) for p in out):
            raise ValueError("prompts must be ObjectPrompt objects (one per object)")
        return out

    def _check_text(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text prompt is empty")
        text = text.strip()
        tokenizer = self.model.lang_encoder.tokenizer
        n_tokens = tokenizer.num_tokens(text) + 2
        context = self.model.lang_encoder.context_length
        if n_tokens > context:
            raise ValueError(f"text prompt is too long: {n_tokens} tokens, the model reads at most {context}")
        return text

    def _padded_masks(self, state: _ImageState, prompts: list[ObjectPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
        prep = state.prepared
        pos, neg = stack_prompts(prompts, prep.original_shape, prep.model_shape)
        hp, wp = state.features.padded_size
        pad = ((0, 0), (0, hp - pos.shape[1]), (0, wp - pos.shape[2]))
        return (torch.from_numpy(np.pad(pos, pad)).to(self.device),
                torch.from_numpy(np.pad(neg, pad)).to(self.device))

    def _memory(self, state: _ImageState, previous: Segmentation | None, n: int) -> torch.Tensor | None:
        if previous is None:
            return None
        self._check_previous(state, previous, n)
        return torch.from_numpy(np.ascontiguousarray(previous.memory, dtype=np.float32))[None].to(self.device)

    @staticmethod
    def _check_previous(state: _ImageState, previous: Segmentation, n: int) -> None:
        """``previous`` can be the memory of ``n`` prompted objects on this image, else ValueError."""
        if previous.memory is None:
            raise ValueError("previous result carries no memory (mask logits); use a result of predict()")
        if len(previous) != n:
            raise ValueError(f"previous result has {len(previous)} objects but {n} prompts were given")
        expected = tuple(s // 4 for s in state.features.padded_size)
        if tuple(previous.memory.shape[-2:]) != expected:
            raise ValueError(
                f"previous result belongs to an image of another size (memory {tuple(previous.memory.shape[-2:])}, "
                f"expected {expected})"
            )

    def _visual(self, state, prompts, text, previous, draws) -> Segmentation:
        if previous is not None:
            self._check_previous(state, previous, len(prompts))  # the whole result, before any grouping
        boxes = [box_rule.single_box(p) if self.fit_boxes and self.connected_objects else None for p in prompts]
        chunks = self._object_chunks(state, prompts, boxes, draws)
        if len(chunks) == 1:
            return self._visual_chunk(state, prompts, boxes, text, previous, draws)
        parts = [self._visual_chunk(state, [prompts[k] for k in chunk], [boxes[k] for k in chunk], text,
                                    None if previous is None else previous.select(chunk), draws)
                 for chunk in chunks]
        ids = np.arange(1, len(prompts) + 1) if previous is None else previous.object_ids
        return Segmentation.concatenate(parts, object_ids=ids)

    @staticmethod
    def _object_chunks(state: _ImageState, prompts: list[ObjectPrompt], boxes: list, draws) -> list[list[int]]:
        """The objects in groups decoded one after the other, each with at most
        :data:`PROMPT_PIXELS` image-sized prompt and mask pixels (a lone box counts as its five
        candidate clicks), so that many objects on a large image do not hold gigabytes at once.
        Recorded draws (a reference run) need one pass."""
        hp, wp = state.features.padded_size
        per_chunk = max(1, PROMPT_PIXELS // (hp * wp))
        sizes = [box_rule.N_CANDIDATES if b is not None and p.positive_marks() is None else 1
                 for p, b in zip(prompts, boxes)]
        if draws or sum(sizes) <= per_chunk:
            return [list(range(len(prompts)))]
        chunks: list[list[int]] = [[]]
        used = 0
        for k, size in enumerate(sizes):
            if chunks[-1] and used + size > per_chunk:
                chunks.append([])
                used = 0
            chunks[-1].append(k)
            used += size
        return chunks

    def _visual_chunk(self, state, prompts, boxes, text, previous, draws) -> Segmentation:
        if not any(b is not None for b in boxes):
            result = self._decode(state, prompts, text, previous, draws)
        else:
            decoded, owners = self._box_prompts(state, prompts, boxes)
            ids = None
            if previous is not None:  # each candidate refines its object's previous mask
                ids = previous.object_ids
                previous = previous.select(owners)
            result = self._fit_to_boxes(state, self._decode(state, decoded, text, previous, draws), prompts,
                                        boxes, owners, ids)
        if previous is None and not draws:
            result = self._cells_at_their_nuclei(state, prompts, text, result)
        return result

    def _cells_at_their_nuclei(self, state: _ImageState, prompts: list[ObjectPrompt], text: str | None,
                               result: Segmentation) -> Segmentation:
        """A cell clicked once in its cytoplasm whose mask leaves out the nucleus the click belongs
        to, and covers another, is decoded again from the click and a second click at that
        nucleus's centre (``cells_hold_one_nucleus``; see :mod:`napari_seem.engine.clicked_cell`)."""
        if not self._cells_hold_nuclei() or CELL not in result.class_names:
            return result
        again: dict[int, ObjectPrompt] = {}
        for k, prompt in enumerate(prompts):
            if result.class_names[k] != CELL or not is_lone_click(prompt):
                continue
            nuclei, areas = self._nucleus_labels(state)
            nucleus = missed_nucleus(result.mask(k), prompt.points[0], nuclei, areas,
                                     lambda: self._nucleus_basins(state))
            if nucleus:
                again[k] = ObjectPrompt(points=[prompt.points[0], centre_pixel(nuclei == nucleus)])
        if not again:
            return result
        redone = self._decode(state, list(again.values()), text, None, None)
        order = list(again)
        parts = [redone.select([order.index(k)]) if k in again else result.select([k]) for k in range(len(result))]
        return Segmentation.concatenate(parts, object_ids=result.object_ids)

    @staticmethod
    def _box_prompts(state: _ImageState, prompts: list[ObjectPrompt], boxes: list
                     ) -> tuple[list[ObjectPrompt], list[int]]:
        """The prompts SEEM reads for boxed objects: candidate clicks for a box that is the
        object's only positive prompt, else its clicks and strokes without the box; and the
        object each decoded prompt belongs to."""
        decoded: list[ObjectPrompt] = []
        owners: list[int] = []
        for k, (prompt, box) in enumerate(zip(prompts, boxes)):
            if box is None:
                parts = [prompt]
            elif prompt.positive_marks() is None:
                parts = box_rule.candidate_prompts(prompt, box, state.prepared.original_shape)
            else:
                parts = [box_rule.without_box(prompt)]
            decoded.extend(parts)
            owners.extend([k] * len(parts))
        return decoded, owners

    def _fit_to_boxes(self, state: _ImageState, result: Segmentation, prompts: list[ObjectPrompt],
                      boxes: list, owners: list[int], object_ids: np.ndarray | None) -> Segmentation:
        """One object per prompt again: the chosen candidate of each boxed object, every boxed
        object's mask clipped to its box (see :mod:`napari_seem.engine.boxes`)."""
        owners_arr = np.asarray(owners)
        chosen = []
        for k, box in enumerate(boxes):
            rows = np.flatnonzero(owners_arr == k)
            if box is not None and len(rows) > 1:
                rows = rows[[box_rule.choose_candidate(result.masks[rows], box)]]
            chosen.append(int(rows[0]))
        out = result.select(chosen)
        masks = out.masks.copy()
        for k, box in enumerate(boxes):
            if box is None:
                continue
            marks = prompts[k].positive_marks()
            keep = None if marks is None else rasterize(marks, state.prepared.original_shape, state.prepared.original_shape)[0]
            clipped = box_rule.clip_to_box(masks[k], box, keep=keep)
            if clipped.sum() == masks[k].sum():  # nothing outside the box: the score stands
                continue
            masks[k] = clipped
            if clipped.any():
                prob = self.mask_probabilities(out, k)
                out.scores[k] = float(prob[masks[k]].mean())
        return Segmentation(masks, out.scores, out.class_names, out.class_scores, memory=out.memory,
                            object_ids=object_ids)

    def _decode(self, state, prompts, text, previous, draws) -> Segmentation:
        pos, neg = self._padded_masks(state, prompts)
        n = pos.shape[0]
        memory = self._memory(state, previous, n)
        for k in range(n):
            if not pos[k].any() and memory is None:
                raise ValueError(f"object {k} has only negative prompts: add a positive click, stroke or mask")
        kwargs: dict[str, Any] = {}
        if text is not None:
            kwargs["grounding_tokens"] = self.model.lang_encoder.encode_text([text]).real_tokens
        if draws:
            kwargs.update({k: v for k, v in draws.items() if v is not None and v.numel()})
        with inference_context(self.device, self.precision):
            # no class_embeddings: the object queries do not influence prompted objects, and the
            # fast path then skips them; the prompted objects are named from their own embeddings
            out = self.model.predictor(
                self.model.prepare_decoder(state.features), pos_masks=pos, neg_masks=neg,
                prev_mask=memory, generator=self._generator(), **kwargs,
            )
            logits = out.selected_masks[0].float()
            captions = out.selected_captions()[0].float()
        names, class_scores = self._name(captions)
        previous_ids = None if previous is None else previous.object_ids
        regions = negatives = marks = None
        if self.connected_objects:  # the prompts SEEM read, at model resolution
            h, w = state.prepared.model_shape
            regions = pos[:, :h, :w].cpu().numpy()
            negatives = neg[:, :h, :w].cpu().numpy()
            marks = self._positive_marks(state, prompts)
        return self._result(state, logits, names, class_scores, object_ids=previous_ids, prompt_regions=regions,
                            negative_regions=negatives, positive_marks=marks,
                            clicks=[(p.points[p.point_labels == 1], p.points[p.point_labels == 0]) for p in prompts],
                            previous=previous)

    @staticmethod
    def _positive_marks(state: _ImageState, prompts: list[ObjectPrompt]) -> np.ndarray:
        """``[N, h, w]`` bool: each object's positive clicks and strokes alone, at model resolution."""
        prep = state.prepared
        out = np.zeros((len(prompts), *prep.model_shape), dtype=bool)
        for k, prompt in enumerate(prompts):
            marks = prompt.positive_marks()
            if marks is not None:
                out[k] = rasterize(marks, prep.original_shape, prep.model_shape)[0]
        return out

    def mask_probabilities(self, result: Segmentation, index: int) -> np.ndarray:
        """``[H, W]`` float32 mask probability of object ``index`` of a result on this segmenter's
        current image (from its ``memory``: the mask logits SEEM returned)."""
        if result.memory_of(index) is None:
            raise ValueError("the result carries no memory (mask logits)")
        state = self._state()
        logits = torch.from_numpy(np.ascontiguousarray(result.memory_of(index)[None], dtype=np.float32))
        full = logits_to_original(self._to_model_grid(state, logits.to(self.device)), state.prepared.original_shape)
        return full[0].sigmoid().cpu().numpy()

    def _name(self, captions: torch.Tensor, vocabulary: Vocabulary | None = None) -> tuple[list[str], np.ndarray]:
        """Class name and probability for ``[N, D]`` text-space embeddings (background excluded)."""
        vocab = vocabulary or self._vocabulary
        if captions.shape[0] == 0:
            return [], np.zeros(0, np.float32)
        with torch.inference_mode():
            logits = self.model.lang_encoder.compute_similarity(captions, self._class_embeddings(vocab))
            probs = logits.float().softmax(-1)[:, :-1]
        score, idx = probs.max(-1)
        return [vocab.names[i] for i in idx.tolist()], score.cpu().numpy().astype(np.float32)

    def _to_model_grid(self, state: _ImageState, logits: torch.Tensor) -> torch.Tensor:
        """``[N, h/4, w/4]`` decoder logits -> ``[N, h, w]`` at model resolution (un-padded)."""
        up = F.interpolate(logits[None].float(), size=state.features.padded_size, mode="bilinear", align_corners=False)[0]
        h, w = state.prepared.model_shape
        return up[:, :h, :w]

    def _result(self, state, logits: torch.Tensor, names, class_scores, object_ids=None,
                prompt_regions: np.ndarray | None = None, negative_regions: np.ndarray | None = None,
                positive_marks: np.ndarray | None = None, clicks: list | None = None,
                previous: Segmentation | None = None) -> Segmentation:
        """Masks at the original resolution; with ``prompt_regions`` (the objects' positive
        prompts, ``[N, h, w]`` at model resolution), only the mask regions they touch are kept,
        the part of a mask that one of its ``negative_regions`` falls in is cut off, a mask
        grows at its ``positive_marks`` (clicks, strokes) that fell outside it, a cell is cut
        between its own nucleus and the others it covers (``cells_hold_one_nucleus``), and a
        nucleus grows on the side of each positive click outside its mask in ``previous`` (else
        outside its mask before the growth at marks) and is cut along the line through each of
        its negative ``clicks`` (``(positive, negative)`` points per object; ``shape_priors``; a cell
        grows so in a narrower sector, and is split at a neck toward a touching neighbour)."""
        model_grid = self._to_model_grid(state, logits)
        full = logits_to_original(model_grid, state.prepared.original_shape)
        masks = (full > 0).cpu().numpy()
        probs = full.sigmoid()
        if prompt_regions is not None:
            masks = keep_prompted_regions_all(masks, prompt_regions)
            nuclei = None
            if self._cells_hold_nuclei() and CELL in names:
                nuclei, areas = self._nucleus_labels(state)
            for k in range(len(masks)):
                negative = None if negative_regions is None else negative_regions[k]
                cut = negative is not None and negative.any()
                grow = positive_marks is not None and positive_marks[k].any()
                cell = nuclei is not None and names[k] == CELL
                convex = (self.shape_priors and clicks is not None and names[k] == NUCLEUS
                          and (len(clicks[k][1]) > 0 or len(clicks[k][0]) > 1))
                star = self.shape_priors and clicks is not None and names[k] == CELL and len(clicks[k][0]) > 1
                necked = self.shape_priors and names[k] == CELL
                if not (cut or grow or cell or convex or star or necked):
                    continue
                # once per object, for the rules that read it (the shape rules do not)
                prob = probs[k].cpu().numpy() if (cut or grow or cell) else None
                if cut:
                    masks[k] = cut_at_negatives(masks[k], prob, prompt_regions[k], negative)
                before_growth = masks[k]
                if grow:
                    masks[k] = grow_at_marks(masks[k], prob, positive_marks[k], negative)
                if cell:
                    masks[k] = cut_at_foreign_nuclei(masks[k], prob, prompt_regions[k], nuclei, nucleus_areas=areas)
                if necked and masks[k].any():
                    positive = clicks[k][0] if clicks is not None else np.zeros((0, 2))
                    masks[k] = split_touching_cells(masks[k], positive, prompt_regions[k],
                                                    min_area=NECK_MIN_AREA * self._pixel_area(state),
                                                    max_neck=NECK_RATIO)
                if star and masks[k].any():
                    positive = clicks[k][0]
                    before = before_growth if previous is None else previous.mask(k)
                    masks[k] = grow_toward_positive_clicks(masks[k], before, positive[0], positive[1:],
                                                           half_angle=CELL_GROWTH_HALF_ANGLE)
                if convex and masks[k].any():
                    positive, negative_clicks = clicks[k]
                    anchor = positive[0] if len(positive) else np.argwhere(masks[k]).mean(0)
                    if len(positive) > 1:
                        before = before_growth if previous is None else previous.mask(k)
                        masks[k] = grow_toward_positive_clicks(masks[k], before, anchor, positive[1:])
                    masks[k] = cut_beyond_negative_clicks(masks[k], anchor, negative_clicks, keep=positive)
        if self.refiners and prompt_regions is not None and clicks is not None:
            drawn = [k for k in range(len(masks)) if self.refiner_for(names[k]) is not None]
            prob_np = np.zeros(masks.shape, np.float32)  # once for all refined objects
            prob_np[drawn] = probs[drawn].cpu().numpy()
            for name in sorted({names[k] for k in drawn}):
                indices = [k for k in drawn if names[k] == name]
                masks = refine_outlines(self.refiner_for(name), self._refiner_image(state), masks, prob_np, clicks,
                                        indices, min_agreement=CLICKED_AGREEMENT.get(name, MIN_AGREEMENT))
        inside = torch.from_numpy(masks).to(full.device).float()
        scores = ((probs * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)).cpu().numpy()
        return Segmentation(
            masks=masks,
            scores=scores.astype(np.float32),
            class_names=list(names),
            class_scores=np.asarray(class_scores, np.float32),
            memory=logits.detach().float().cpu().numpy(),
            object_ids=object_ids,
        )

    def refiner_image(self) -> np.ndarray:
        """``[3, H, W]`` float32 on 0..1: the current image as the engine prepared it for the model,
        at the image's own resolution (what an :class:`OutlineRefiner` reads)."""
        return self._refiner_image(self._state())

    @staticmethod
    def _refiner_image(state: _ImageState) -> np.ndarray:
        """Made once per image: every click on a nucleus reads it."""
        if state.refiner_rgb is None:
            rgb = state.prepared.rgb.float()
            if tuple(rgb.shape[-2:]) != tuple(state.prepared.original_shape):
                rgb = F.interpolate(rgb[None], size=state.prepared.original_shape, mode="bilinear",
                                    align_corners=False)[0]
            state.refiner_rgb = (rgb / 255.0).cpu().numpy()
        return state.refiner_rgb

    @staticmethod
    def _pixel_area(state: _ImageState) -> float:
        """Pixels of the original image per pixel at model resolution."""
        (h, w), (mh, mw) = state.prepared.original_shape, state.prepared.model_shape
        return (h / mh) * (w / mw)

    def _cells_hold_nuclei(self) -> bool:
        """Whether the rules that give each cell one nucleus apply (``cells_hold_one_nucleus``,
        ``connected_objects``, ``nucleus`` in the vocabulary)."""
        return self.cells_hold_one_nucleus and self.connected_objects and NUCLEUS in self._vocabulary.names

    def _nucleus_labels(self, state: _ImageState) -> tuple[np.ndarray, np.ndarray]:
        """``[H, W]`` label image of the nuclei text search finds on the image, and each label's
        pixel count (once per image)."""
        key = self._nuclei_key(state)
        if self._nuclei is None or self._nuclei[0] != key:
            labels = self._text_search(NUCLEUS).to_labels()
            self._nuclei = (key, (labels, np.bincount(labels.ravel())))
        return self._nuclei[1]

    def _nuclei_key(self, state: _ImageState) -> tuple:
        """What the nuclei of an image depend on: the image, and text search's vocabulary and setting."""
        return (state.key, tuple(self._vocabulary.names), self.refine_text)

    def _nucleus_basins(self, state: _ImageState) -> np.ndarray:
        """``[H, W]`` each nucleus's intensity basin on the image (once per image, see
        :func:`napari_seem.engine.clicked_cell.nucleus_basins`)."""
        key = self._nuclei_key(state)
        if self._basins is None or self._basins[0] != key:
            nuclei, _ = self._nucleus_labels(state)
            self._basins = (key, nucleus_basins(self._refiner_image(state).mean(0), nuclei))
        return self._basins[1]

    # ------------------------------------------------------------------ text
    def _grounding(self, text: str) -> Segmentation:
        """SEEM grounding: the single region that best matches ``text``."""
        state = self._state()
        lang = self.model.lang_encoder
        with self._lock, inference_context(self.device, self.precision):
            emb = lang.encode_text([text])
            out = self.model.predictor(self.model.prepare_decoder(state.features), grounding_tokens=emb.real_tokens)
            sim = lang.grounding_similarity(out.grounding_captions[0], emb.class_emb)[:, 0]
            best = int(sim.argmax())
            logits = out.grounding_masks[0, best:best + 1].float()
            prob = float(sim.softmax(0)[best])
        return self._result(state, logits, [text], [prob])

    def _text_search(self, text: str) -> Segmentation:
        """Every object SEEM names ``text`` when the phrase joins the vocabulary: the panoptic merge
        of just the queries that name it (objects of other classes do not take its pixels)."""
        vocab = self._vocabulary if text in self._vocabulary.names else self._vocabulary.extended([text])
        found = self._panoptic(vocab, None, None, only=vocab.names.index(text))
        keep = [i for i, name in enumerate(found.class_names) if name == text]
        if not keep:
            return self._grounding(text)
        found = found.select(keep) if len(keep) < len(found) else found
        if self.refine_text and self.connected_objects:
            from .refine import refine_by_clicks

            found = refine_by_clicks(self, self._state(), found)
        return self._split_cells_at_nuclei(found) if text == CELL else found

    def _split_cells_at_nuclei(self, found: Segmentation) -> Segmentation:
        """``found`` (a label-image result on the current image) with each object named ``cell``
        that covers several nuclei split into one cell per nucleus
        (:func:`~napari_seem.engine.connected.split_between_nuclei`; the nuclei are those of text
        search); the pieces share the object's class, score and memory. Only with
        ``cells_hold_one_nucleus`` and ``connected_objects`` and ``nucleus`` in the vocabulary."""
        if not (self._cells_hold_nuclei() and CELL in found.class_names):
            return found
        positions = found.positions()
        if positions is None:
            return found
        from .refine import _window_logits

        state = self._state()
        nuclei, areas = self._nucleus_labels(state)
        if not nuclei.any():
            return found
        out = np.zeros_like(positions)
        source: list[int] = []
        for k in range(len(found)):
            box = found.box(k)
            if box is None:
                continue
            window = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
            mask = positions[window] == k + 1
            covered = nuclei[window][mask]
            if found.class_names[k] != CELL or len(np.unique(covered[covered > 0])) < 2:
                out[window][mask] = len(source) + 1
                source.append(k)
                continue
            memory = found.memory_of(k)
            if memory is None:
                prob = mask.astype(np.float32)
            else:  # the object's probability in its window only, not over the whole image
                logits = torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32))
                prob = expit(_window_logits(self, state, logits, window))
            pieces = split_between_nuclei(mask, prob, nuclei[window], areas)
            for piece in range(1, int(pieces.max()) + 1):
                region = pieces == piece
                if region.any():
                    out[window][region] = len(source) + 1
                    source.append(k)
        if len(source) == len(found):
            return found
        idx = np.asarray(source, dtype=np.int64)
        rows, index = found.memory_rows()
        return Segmentation.from_labels(
            out, scores=found.scores[idx], class_names=[found.class_names[k] for k in source],
            class_scores=found.class_scores[idx], memory=rows,
            memory_index=None if rows is None else index[idx], object_ids=np.arange(1, len(source) + 1))

    # ------------------------------------------------------------------ automatic
    def segment_everything(self, *, vocabulary: Vocabulary | Sequence[str] | None = None,
                           score_threshold: float | None = None, overlap_threshold: float | None = None) -> Segmentation:
        """Automatic mode: SEEM's panoptic inference into non-overlapping named objects.

        Args:
            vocabulary: names to classify against (default: the segmenter's vocabulary).
            score_threshold: minimum class probability of an object (default: the model config's
                ``OBJECT_MASK_THRESHOLD``).
            overlap_threshold: minimum share of its own mask an object must keep (default: config).
        """
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) or vocabulary is None else Vocabulary(vocabulary)
        return self._panoptic(vocab or self._vocabulary, score_threshold, overlap_threshold)

    def _class_probabilities(self, captions: torch.Tensor, vocabulary: Vocabulary | None = None) -> torch.Tensor:
        """``[N, K+1]`` class probabilities (the last column: no object) of ``[N, D]`` text-space
        embeddings, as the object queries' class logits are computed."""
        with torch.inference_mode():
            logits = self.model.lang_encoder.compute_similarity(captions, self._class_embeddings(vocabulary or self._vocabulary))
        return logits.float().softmax(-1)

    def _panoptic(self, vocab: Vocabulary, score_threshold: float | None, overlap_threshold: float | None,
                  only: int | None = None, like: tuple[torch.Tensor, float] | None = None) -> Segmentation:
        """SEEM's panoptic inference with the region rules; with ``only`` (a class index), just the
        queries that name that class take part, so objects of other classes claim none of its
        pixels (text search: a nucleus lies inside its cell). With ``like = (probabilities,
        threshold)`` (a ``[K+1]`` class distribution), just the queries whose class distribution
        has a cosine similarity of at least ``threshold`` with it take part, and each object's
        score is that similarity (referring-image search)."""
        state = self._state()
        model = self.model
        with self._lock, inference_context(self.device, self.precision):
            out = model.predictor(model.prepare_decoder(state.features),
                                  class_embeddings=self._class_embeddings(vocab))
            cls_logits = out.class_logits[0].float()
            if only is not None:  # the other queries say "no object" (the last class) for sure
                cls_logits = cls_logits.clone()
                cls_logits[cls_logits.argmax(-1) != only, -1] = 1e4
            similarity = None
            if like is not None:
                reference, threshold = like
                similarity = F.cosine_similarity(cls_logits.softmax(-1), reference.to(cls_logits)[None], dim=-1)
                cls_logits = cls_logits.clone()
                cls_logits[similarity < threshold, -1] = 1e4
            mask_logits = out.masks[0]
            panoptic = panoptic_inference(
                cls_logits, mask_logits, vocab.thing_ids,
                model.object_mask_threshold if score_threshold is None else score_threshold,
                model.overlap_threshold if overlap_threshold is None else overlap_threshold,
                upsample=lambda logits: self._to_model_grid(state, logits),
            )
            if panoptic.segments:
                keep_queries = self._segment_queries(state, cls_logits, mask_logits, panoptic)
        if not panoptic.segments:
            return Segmentation.empty(state.prepared.original_shape)
        seg = panoptic.segmentation[None].float()
        ids = F.interpolate(seg[None], size=state.prepared.original_shape, mode="nearest")[0, 0].long().cpu().numpy()
        segments = panoptic.segments
        lookup = np.zeros(max(s["id"] for s in segments) + 1, dtype=np.int32)  # segment id -> position + 1
        for k, s in enumerate(segments):
            lookup[s["id"]] = k + 1
        positions = lookup[ids]  # one label image for every object, however many there are
        source = np.arange(len(segments))
        if self.connected_objects:
            cell = 16.0 / float(np.prod(state.prepared.scale))  # a 4 x 4 decoder cell, in original pixels
            things = np.array([s["isthing"] for s in segments])
            areas = np.bincount(positions.ravel(), minlength=len(segments) + 1)[1:]
            # a segment smaller than one cell of the mask grid (a vesicle, or a crumb) stays as it
            # is: joined to a neighbour of its class, a crumb would only add to that object's error
            groups = merge_duplicate_labels(positions, (out.masks[0, keep_queries] > 0).cpu().numpy(),
                                            np.array([s["category_id"] for s in segments]), things & (areas >= cell))
            if len(groups) < len(segments):  # a merged object keeps its largest segment's query
                source = np.array([g[int(np.argmax(areas[g]))] for g in groups])
                regroup = np.zeros(len(segments) + 1, dtype=np.int32)
                for j, g in enumerate(groups):
                    regroup[np.asarray(g) + 1] = j + 1
                positions = regroup[positions]
            positions, pieces = split_label_regions(positions, things[source], min_area=cell)
            source = source[pieces]
        class_scores = np.asarray([segments[k]["score"] for k in source], np.float32)
        if similarity is None:
            scores = class_scores.copy()
        else:
            query_similarity = similarity[keep_queries].clamp(0, 1).cpu().numpy()
            scores = query_similarity[source].astype(np.float32)
        return Segmentation.from_labels(
            positions,
            scores=scores,
            class_names=[vocab.names[segments[k]["category_id"]] for k in source],
            class_scores=class_scores,
            memory=out.masks[0, keep_queries].float().cpu().numpy(),  # each query's once, shared by its pieces
            memory_index=source,
            object_ids=np.arange(1, len(source) + 1),
        )

    def _segment_queries(self, state: _ImageState, cls_logits: torch.Tensor, mask_logits: torch.Tensor,
                         panoptic, chunk: int = 16) -> list[int]:
        """For each panoptic segment, the object query whose mask covers it best (its memory).

        Queries are brought to full resolution ``chunk`` at a time (bounded memory).
        """
        regions = [panoptic.segmentation == s["id"] for s in panoptic.segments]
        cover = torch.zeros(len(regions), mask_logits.shape[0])
        for start in range(0, mask_logits.shape[0], chunk):
            probs = self._to_model_grid(state, mask_logits[start:start + chunk].float()).sigmoid()
            for k, region in enumerate(regions):
                inside = probs[:, region] if region.any() else probs.flatten(1)
                cover[k, start:start + chunk] = inside.mean(1).cpu()
        class_probs = cls_logits.softmax(-1).cpu()
        return [int((cover[k] * class_probs[:, s["category_id"]]).argmax()) for k, s in enumerate(panoptic.segments)]

    # ------------------------------------------------------------------ delegated workflows
    def propagate(self, frames, start: int, seeds: Segmentation, **kwargs: Any) -> Iterator[tuple[int, Segmentation]]:
        """Carry objects through a stack or time-lapse; see :func:`napari_seem.engine.propagate.propagate`."""
        from .propagate import propagate

        return propagate(self, frames, start, seeds, **kwargs)

    def segment_tiled(self, image: np.ndarray, **kwargs: Any) -> Segmentation:
        """Automatic mode or text search on a large field, tile by tile, each tile at about its own
        scale; see :func:`napari_seem.engine.tiles.segment_tiled`. The current image stays current."""
        from .tiles import segment_tiled

        return segment_tiled(self, image, **kwargs)

    def find_similar(self, reference_image: np.ndarray, reference_mask: np.ndarray,
                     target_image: np.ndarray | None = None, **kwargs: Any) -> Segmentation:
        """Referring-image search; see :func:`napari_seem.engine.referring.find_similar`."""
        from .referring import find_similar

        return find_similar(self, reference_image, reference_mask, target_image, **kwargs)
