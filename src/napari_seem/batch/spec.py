"""What a batch run applies to every item: the model to build on each worker, the prompt, the options.

These are small picklable values: the client builds them once, dask ships them to the workers, and
:class:`ModelSpec` is the key of each worker's model cache (one model per worker process).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..engine.image import DEFAULT_MAX_SIDE, MAX_SCALE
from ..engine.propagate import DIRECTIONS
from ..engine.tiles import DEFAULT_OVERLAP

PROMPT_KINDS = ("text", "vocabulary", "exemplar", "propagate")
LABEL_FORMATS = ("tif", "zarr")
#: ``ModelSpec.short_side`` for "the model's own model-side resolution"
AUTO_SHORT_SIDE = "auto"


@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds its :class:`~napari_seem.engine.Segmenter`.

    Attributes:
        name_or_path: a preset name (``"seem_focalt_v1"``), a shipped model (``"seem_tiny_synthetic"``),
            ``"auto"`` (see :func:`~napari_seem.model.default_model_name`) or a checkpoint file.
        config: preset name or official SEEM YAML path for a checkpoint file (None: guessed).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (each worker of a multi-GPU machine takes
            ``cuda:<worker index mod GPU count>``), ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        short_side, max_side: model-side resolution (see :mod:`napari_seem.engine.image`);
            ``short_side="auto"``: the model's own (512 px for the official checkpoints, the image's
            own size for a shipped model trained on small images, see
            :meth:`~napari_seem.engine.Segmenter.from_pretrained`), None: the image's own size.
        scale: resize every image by this factor instead (model pixels per image pixel; see
            :class:`~napari_seem.engine.Segmenter`); None: ``short_side`` decides.
        seed: seed of SEEM's per-call random draws (same seed -> same labels).
    """

    name_or_path: str
    config: str | None = None
    device: str = "auto"
    precision: str = "auto"
    short_side: int | str | None = AUTO_SHORT_SIDE
    max_side: int = DEFAULT_MAX_SIDE
    scale: float | None = None
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, device: bool = True) -> None:
        """Fail early (on the client, not in every worker) for a model that cannot be found.

        ``device=False`` skips the device check (a remote cluster's workers may have GPUs the
        client lacks).

        Raises:
            ValueError: neither a preset nor an existing checkpoint file; a config that is neither
                a preset nor an existing YAML file; an unknown precision or device.
        """
        from ..engine.device import autocast_dtype, resolve_device
        from ..model.config import PRESETS
        from ..model.pretrained import AUTO, available_models

        names = available_models()
        if self.name_or_path not in (AUTO, *names) and not Path(self.name_or_path).expanduser().is_file():
            raise ValueError(f"model {self.name_or_path!r} is neither a preset or shipped model ({', '.join(names)}), "
                             f"nor {AUTO!r}, nor an existing checkpoint file")
        if self.config is not None and self.config not in PRESETS and not Path(self.config).expanduser().is_file():
            raise ValueError(f"config {self.config!r} is neither a preset nor an existing YAML file")
        autocast_dtype(resolve_device(self.device) if device else resolve_device("cpu"), self.precision)
        if self.short_side != AUTO_SHORT_SIDE and self.short_side is not None and (
                isinstance(self.short_side, str) or self.short_side < 32) or self.max_side < 32:
            raise ValueError(f"short side must be 'auto', None or >= 32 pixels and max side >= 32 pixels, "
                             f"got {self.short_side!r} / {self.max_side}")
        if self.scale is not None and not 0 < self.scale <= MAX_SCALE:
            raise ValueError(f"scale must be a factor > 0 and <= {MAX_SCALE:g}, got {self.scale!r}")

    def resolution(self) -> dict[str, Any]:
        """The :meth:`Segmenter.from_pretrained` keywords of the model-side resolution."""
        sides: dict[str, Any] = {"max_side": self.max_side}
        if self.short_side != AUTO_SHORT_SIDE:
            sides["short_side"] = self.short_side
        if self.scale is not None:
            sides["scale"] = self.scale
        return sides


@dataclass(frozen=True, eq=False)
class PromptSpec:
    """The prompt applied to every image / frame (or, for ``propagate``, to every stack).

    Attributes:
        kind: ``"text"`` (every object of a class), ``"vocabulary"`` (automatic segmentation
            named with ``vocabulary``), ``"exemplar"`` (objects like the one marked on a reference
            image) or ``"propagate"`` (objects seeded on ``start_frame`` carried through the stack).
        text: the phrase, for ``"text"``.
        vocabulary: class names used to name objects (and to classify, for ``"vocabulary"``);
            None keeps the model's own (the shipped model's classes, COCO's 133 for the official
            checkpoints).
        exemplar_image, exemplar_mask: reference image and ``[H, W]`` bool mask, for ``"exemplar"``.
        min_similarity: cosine similarity an exemplar match must reach.
        similarity: what an exemplar search compares, ``"class"`` or ``"embedding"`` (see
            :func:`napari_seem.engine.referring.find_similar`).
        seed_labels: ``[H, W]`` label image on ``start_frame`` (each id one object), for ``"propagate"``.
        seed_points: ``[N, 2]`` (row, col) clicks on ``start_frame``, one object each (alternative to
            ``seed_labels``).
        start_frame, direction: where propagation starts and which way it goes.
        stop_iou, min_score: propagation's stop rule (see :func:`napari_seem.engine.propagate`).
        max_step: propagation's motion limit in pixels per frame, ``"auto"`` or None (off).
    """

    kind: str
    text: str | None = None
    vocabulary: tuple[str, ...] | None = None
    exemplar_image: np.ndarray | None = None
    exemplar_mask: np.ndarray | None = None
    min_similarity: float = 0.8
    similarity: str = "class"
    seed_labels: np.ndarray | None = None
    seed_points: np.ndarray | None = None
    start_frame: int = 0
    direction: str = "forward"
    stop_iou: float = 0.1
    min_score: float = 0.3
    max_step: float | str | None = "auto"

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}, got {self.kind!r}")
        if self.kind == "text" and not (self.text and self.text.strip()):
            raise ValueError("a text prompt needs a non-empty phrase")
        if self.vocabulary is not None:
            names = tuple(str(n).strip() for n in self.vocabulary if str(n).strip())
            if not names:
                raise ValueError("the vocabulary is empty")
            object.__setattr__(self, "vocabulary", names)
        if self.kind == "vocabulary" and self.vocabulary is None:
            raise ValueError("a vocabulary prompt needs class names")
        if self.kind == "exemplar":
            self._check_exemplar()
        if self.kind == "propagate":
            self._check_propagate()

    def _check_exemplar(self) -> None:
        if self.exemplar_image is None or self.exemplar_mask is None:
            raise ValueError("an exemplar prompt needs a reference image and a mask of the example object")
        mask = np.asarray(self.exemplar_mask)
        if mask.shape != np.shape(self.exemplar_image)[:2]:
            raise ValueError(f"exemplar mask shape {mask.shape} differs from the exemplar image "
                             f"{np.shape(self.exemplar_image)[:2]}")
        if not mask.any():
            raise ValueError("the exemplar mask is empty")

    def _check_propagate(self) -> None:
        if (self.seed_labels is None) == (self.seed_points is None):
            raise ValueError("propagation needs exactly one of seed labels (a mask on the start frame) or seed points")
        if self.seed_labels is not None:
            labels = np.asarray(self.seed_labels)
            if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
                raise ValueError(f"seed labels must be a 2D integer label image, got {labels.dtype} {labels.shape}")
            if not labels.any():
                raise ValueError("the seed label image has no object (all zero)")
        else:
            points = np.asarray(self.seed_points, dtype=np.float64)
            if points.ndim != 2 or points.shape[1] != 2 or not len(points):
                raise ValueError(f"seed points must be [N, 2] (row, col), got shape {points.shape}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.start_frame < 0:
            raise ValueError(f"start frame must be >= 0, got {self.start_frame}")

    @property
    def per_frame(self) -> bool:
        """True when frames are independent (text, vocabulary, exemplar): stacks can be chunked."""
        return self.kind != "propagate"

    def describe(self) -> dict[str, Any]:
        """JSON summary (arrays by shape and checksum) recorded in the run manifest."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "propagate":
            out["max_step"] = "off" if self.max_step is None else self.max_step
        if self.kind == "exemplar":
            out["similarity"] = self.similarity
        for key in ("text", "vocabulary", "min_similarity", "start_frame", "direction", "stop_iou", "min_score"):
            value = getattr(self, key)
            if value is not None and (key in ("text", "vocabulary") or self.kind in ("exemplar", "propagate")):
                out[key] = list(value) if isinstance(value, tuple) else value
        for key in ("exemplar_image", "exemplar_mask", "seed_labels", "seed_points"):
            value = getattr(self, key)
            if value is not None:
                arr = np.ascontiguousarray(value)
                out[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sum": float(arr.astype(np.float64).sum())}
        return out


@dataclass(frozen=True)
class RunOptions:
    """Per-item handling shared by all tasks.

    Attributes:
        normalize: intensity handling per frame (``"auto"``, ``"percentile"``, ``"none"`` or ``(low, high)``).
        channel: channel index for multichannel images (None: RGB/RGBA or single channel).
        label_format: ``"tif"`` or ``"zarr"``.
        chunk_frames: frames per task when a stack is split (per-frame prompts only).
        torch_threads: intra-op threads of each worker's torch (None: leave torch's setting).
        tile: text and vocabulary prompts tile by tile (:func:`napari_seem.engine.segment_tiled`):
            the tile side in pixels, ``"auto"`` (the model's working size) or None (the whole
            frame at once).
        tile_overlap: pixels shared by neighbouring tiles.
    """

    normalize: str | tuple[float, float] = "auto"
    channel: int | None = None
    label_format: str = "tif"
    chunk_frames: int = 16
    torch_threads: int | None = None
    tile: int | str | None = None
    tile_overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(f"label format must be one of {LABEL_FORMATS}, got {self.label_format!r}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk size must be >= 1 frame, got {self.chunk_frames}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch threads must be >= 1, got {self.torch_threads}")
        if self.tile is not None and self.tile != "auto" and (not isinstance(self.tile, int) or self.tile < 32):
            raise ValueError(f"tile must be pixels >= 32, 'auto' or None, got {self.tile!r}")
        if self.tile_overlap < 0:
            raise ValueError(f"tile overlap must be >= 0 pixels, got {self.tile_overlap}")


@dataclass(frozen=True, eq=False)
class Job:
    """Everything a task needs besides its item: shipped to every worker once."""

    model: ModelSpec
    prompt: PromptSpec
    options: RunOptions = field(default_factory=RunOptions)


def vocabulary_arg(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Class names from a list, a comma-separated string or a text file (one name per line)."""
    if names is None:
        return None
    if isinstance(names, str):
        path = Path(names).expanduser()
        if path.is_file():
            lines = path.read_text().splitlines()
        else:
            lines = names.split(",")
        names = [n.strip() for n in lines]
    return tuple(n for n in names if n)
