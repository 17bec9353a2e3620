"""Training samples: synthetic microscopy (deterministic from a seed) or a folder of user annotations.

A :class:`Sample` is one image with its objects. Every object has two masks:

* ``full``: the whole object (a cell including its nucleus), the target of a visual prompt;
* ``visible``: the top-most, non-overlapping part (a nucleated cell shows as its cytoplasm),
  the target of the object queries (panoptic segmentation, as in SEEM's COCO panoptic training).

Class ids index :data:`VOCABULARY` (``0 = nucleus``); ``len(VOCABULARY)`` is "no object".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.image import prepare_image
from ..synthetic import make_image, make_sequence

#: class names of the shipped model, in class-id order (the engine appends "background")
VOCABULARY: tuple[str, ...] = ("nucleus", "cell", "vesicle")

#: synthetic seeds used for training are at least this; evaluation uses smaller ones
TRAIN_SEED_OFFSET = 1 << 20

_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy")


@dataclass
class Sample:
    """One training image.

    Attributes:
        image: ``[H, W]`` or ``[H, W, 3]`` raw image (uint8, uint16 or float), as a user gives it.
        rgb: ``[3, H, W]`` float 0..255, prepared exactly as the engine prepares it (no resizing).
        full: ``[N, H, W]`` bool whole-object masks.
        visible: ``[N, H, W]`` bool non-overlapping visible parts.
        classes: ``[N]`` int64 class ids (index into the vocabulary).
    """

    image: np.ndarray
    rgb: torch.Tensor
    full: np.ndarray
    visible: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


def _finish(image: np.ndarray, full: np.ndarray, visible: np.ndarray, classes: np.ndarray, min_area: int,
            normalize: str = "auto") -> Sample:
    keep = visible.reshape(len(visible), -1).sum(1) >= min_area if len(visible) else np.zeros(0, bool)
    rgb = prepare_image(image, normalize=normalize, short_side=None).rgb
    h, w = rgb.shape[-2:]
    return Sample(image, rgb, full[keep].reshape(-1, h, w), visible[keep].reshape(-1, h, w),
                  classes[keep].astype(np.int64))


#: slices of the synthetic z-stacks that ``z_slices`` draws from (the outer ones are left out: the
#: generator's stacks start and end out of focus)
Z_STACK_SLICES, Z_SLICE_RANGE = 9, (2, 7)


def synthetic_sample(seed: int, size: int = 160, min_area: int = 3, zoom: tuple[float, float] = (1.0, 1.0),
                     z_slices: float = 0.0) -> Sample:
    """A random synthetic image of ``size x size`` pixels; everything follows from ``seed``.

    Object sizes are those of ``make_image`` at any image size, so the cell count scales with
    the area (2..7 cells at 160 px, like 4..12 at 256 px). Mostly merged grey images, some RGB
    composites; 8- or 16-bit. With a ``zoom`` range other than ``(1, 1)``, a factor ``z`` is drawn
    from it and the image is made at ``size / z`` pixels, then upsampled to ``size`` as the engine
    upsamples an image for a larger model-side resolution (objects ``z`` times larger, blurred by
    the interpolation like the engine's input). With ``z_slices`` > 0, that share of the samples
    is one slice of a synthetic z-stack instead (objects at several depths, blurred by the light of
    the slices above and below; its ground truth is each object's section in that slice).
    """
    rng = np.random.default_rng(seed)
    channels = "rgb" if rng.random() < 0.15 else "merged"
    bit_depth = 16 if rng.random() < 0.4 else 8
    image_seed = int(rng.integers(TRAIN_SEED_OFFSET, 1 << 31))
    z = float(rng.uniform(*zoom)) if zoom[0] != zoom[1] else float(zoom[0])
    made = max(32, round(size / z))
    scale = (made / 256) ** 2
    n_cells = (max(1, round(4 * scale)), max(2, round(12 * scale)))
    if z_slices > 0 and rng.random() < z_slices:  # drawn only then: samples without z-slices stay as they were
        k = int(rng.integers(*Z_SLICE_RANGE))
        stack = make_sequence(Z_STACK_SLICES, (made, made), seed=image_seed, axis="z", n_cells=n_cells,
                              bit_depth=bit_depth, channels=channels)
        s = SimpleNamespace(image=stack.image[k], instances=stack.instances[k], nuclei=stack.nuclei[k],
                            cells=stack.cells[k], vesicles=stack.vesicles[k], objects=stack.objects[k])
    else:
        s = make_image((made, made), seed=image_seed, n_cells=n_cells, bit_depth=bit_depth, channels=channels)
    sample = from_synthetic(s, min_area)
    return sample if made == size else upsampled(sample, size, min_area)


def upsampled(sample: Sample, size: int, min_area: int = 3) -> Sample:
    """``sample`` resized to ``size x size``: the image as :func:`prepare_image` resizes it, the
    masks by bilinear interpolation thresholded at one half."""
    normalize = "none" if sample.image.dtype == np.uint8 else "auto"  # as from_synthetic
    rgb = prepare_image(sample.image, normalize=normalize, short_side=size, max_side=max(size, 1024)).rgb
    h, w = rgb.shape[-2:]

    def resize(masks: np.ndarray) -> np.ndarray:
        if not len(masks):
            return np.zeros((0, h, w), bool)
        t = torch.from_numpy(masks.astype(np.float32))[None]
        return (F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0] > 0.5).numpy()

    full, visible = resize(sample.full), resize(sample.visible)
    keep = visible.reshape(len(visible), -1).sum(1) >= min_area if len(visible) else np.zeros(0, bool)
    return Sample(sample.image, rgb, full[keep], visible[keep], sample.classes[keep])


def from_synthetic(s, min_area: int = 3) -> Sample:
    """A :class:`Sample` from a ``SyntheticImage`` (or one frame of a sequence with the same fields)."""
    maps = {"nucleus": s.nuclei, "cell": s.cells, "vesicle": s.vesicles}
    ids = [o["id"] for o in s.objects]
    full = np.stack([maps[o["class"]] == o["id"] for o in s.objects]) if ids else np.zeros((0, *s.instances.shape), bool)
    visible = np.stack([s.instances == i for i in ids]) if ids else full.copy()
    classes = np.array([VOCABULARY.index(o["class"]) for o in s.objects], np.int64)
    # 8-bit synthetic images as they are: the generator's own exposures are the training
    # distribution, and the recipe's inputs must stay those the shipped weights were trained on
    # (the engine's "auto" gain for dim images must not reach them); user images (FolderDataset)
    # get the engine's "auto", as at inference
    normalize = "none" if s.image.dtype == np.uint8 else "auto"
    return _finish(s.image, full, visible, classes, min_area, normalize)


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path)
    from skimage.io import imread

    return np.asarray(imread(str(path)))


def _label_for(image_path: Path, label_dir: Path) -> Path | None:
    stem = image_path.stem
    for candidate in sorted(label_dir.iterdir()):
        if candidate.suffix.lower() in _IMAGE_SUFFIXES and candidate.stem in (stem, f"{stem}_labels", f"{stem}_label", f"{stem}_masks"):
            return candidate
    return None


class FolderDataset:
    """User annotations: ``FOLDER/images/*`` with instance label images ``FOLDER/labels/*``.

    A label image has the image's name (or ``<name>_labels``) and holds one integer id per object
    (0 = background). All objects get the class ``class_name``; with a ``FOLDER/classes.csv`` of
    ``<image stem>,<label id>,<class name>`` rows, each object gets its own class (names must be
    in the vocabulary). Images larger than ``crop`` are randomly cropped to it.
    """

    def __init__(self, folder: str | Path, vocabulary: Sequence[str], class_name: str | None = None,
                 crop: int = 256, min_area: int = 3) -> None:
        folder = Path(folder)
        image_dir, label_dir = folder / "images", folder / "labels"
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise FileNotFoundError(f"{folder} must contain 'images/' and 'labels/' folders")
        self.vocabulary = list(vocabulary)
        self.default_class = self.vocabulary.index(class_name or self.vocabulary[0])
        self.crop, self.min_area = crop, min_area
        self.pairs: list[tuple[Path, Path]] = []
        for path in sorted(image_dir.iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                label = _label_for(path, label_dir)
                if label is not None:
                    self.pairs.append((path, label))
        if not self.pairs:
            raise FileNotFoundError(f"no image with a matching label image in {folder}")
        self.classes: dict[tuple[str, int], int] = {}
        table = folder / "classes.csv"
        if table.is_file():
            for line in table.read_text().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[1].isdigit():
                    self.classes[(parts[0], int(parts[1]))] = self.vocabulary.index(parts[2])

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, seed: int) -> Sample:
        """A random image of the folder, randomly cropped and flipped; deterministic from ``seed``."""
        rng = np.random.default_rng(seed)
        image_path, label_path = self.pairs[int(rng.integers(len(self.pairs)))]
        image, labels = _read_image(image_path), _read_image(label_path).astype(np.int64)
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise ValueError(f"{label_path} must be a 2D label image of the size of {image_path}")
        h, w = labels.shape
        r0 = int(rng.integers(0, max(1, h - self.crop + 1)))
        c0 = int(rng.integers(0, max(1, w - self.crop + 1)))
        image, labels = image[r0:r0 + self.crop, c0:c0 + self.crop], labels[r0:r0 + self.crop, c0:c0 + self.crop]
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        image, labels = np.ascontiguousarray(image), np.ascontiguousarray(labels)
        ids = [i for i in np.unique(labels) if i != 0]
        masks = np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool)
        classes = np.array([self.classes.get((image_path.stem, int(i)), self.default_class) for i in ids], np.int64)
        return _finish(image, masks, masks.copy(), classes, self.min_area)
