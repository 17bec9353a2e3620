"""A learned full-resolution outline for small objects: SEEM's masks come from stride-4 logits.

SEEM decodes every mask at a quarter of the image's resolution and upsamples the logits, so the
outline of a small object (a nucleus 10-20 px across) is placed to a pixel or two at best; at
that size one pixel all around costs 15-20 % IoU. :class:`OutlineRefiner` is a small U-Net (in the
manner of FocalClick's refiner) that reads a window of the image around an object at full
resolution together with what the engine knows of the object (its mask, SEEM's probability, the
positive and negative clicks) and draws the object's outline again in that window.

A refiner is trained for one model on the engine's own masks (``python -m napari_seem.train
--refiner``, see ``napari_seem/train/refiner.py``); the shipped synthetic model ships two: one for
its nuclei (a 64 px window) and one for its cells (96 px: cells are 40-60 px across). The official
checkpoints have none.

Shapes: the window is ``S x S`` pixels (``S = refiner.window``, :data:`WINDOW` by default); the
network's input is ``[B, 7, S, S]`` (image RGB on 0..1, mask, probability, positive clicks,
negative clicks), its output ``[B, 1, S, S]`` logits.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

#: side of the square window a refiner reads and draws, in image pixels, unless it says otherwise
WINDOW = 64
#: an object is refined only if its mask fits in the window with this margin on every side
MARGIN = 6
#: the refined outline replaces the engine's mask only where the two overlap at least this much
#: (IoU): the refiner redraws an outline, it does not swap the object (e.g. for a cell that the
#: model named ``nucleus``, whose mask it would shrink toward the nucleus inside)
MIN_AGREEMENT = 0.5
#: radius of the discs that mark the clicks in the input, in pixels
CLICK_RADIUS = 2.0
#: file name of a refiner of nuclei beside a training run's ``model.safetensors`` (``--refiner``
#: writes it; a refiner of other classes: :func:`refiner_file`)
REFINER_FILE = "refiner.safetensors"
#: the input channels, in order
CHANNELS = ("red", "green", "blue", "mask", "probability", "positive", "negative")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class OutlineRefiner(nn.Module):
    """U-Net with three 2x poolings: ``[B, 7, S, S]`` -> ``[B, 1, S, S]`` logits (``S`` a multiple of 8).

    Args:
        width: channels of the first level (doubled at the next two, kept at the last).
        classes: class names of the objects it was trained to refine.
        window: side of the square window it reads and draws, in image pixels (a multiple of 8).
    """

    def __init__(self, width: int = 16, classes: Sequence[str] = ("nucleus",), window: int = WINDOW) -> None:
        super().__init__()
        check_window(window)
        widths = (width, 2 * width, 4 * width, 4 * width)
        self.width = int(width)
        self.classes = tuple(classes)
        self.window = int(window)
        self.encoder = nn.ModuleList([_block(len(CHANNELS), widths[0])]
                                     + [_block(widths[i], widths[i + 1]) for i in range(3)])
        self.decoder = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in (2, 1, 0)])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def click_map(points: np.ndarray, shape: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``[H, W]`` float32: discs of radius :data:`CLICK_RADIUS` at ``points`` (``[N, 2]`` row, col,
    in the coordinates of the image whose pixel ``origin`` is this map's pixel (0, 0))."""
    out = np.zeros(shape, np.float32)
    if len(points) == 0:
        return out
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    for r, c in np.asarray(points, np.float64) - np.asarray(origin, np.float64):
        out[(rows - r) ** 2 + (cols - c) ** 2 <= CLICK_RADIUS ** 2] = 1.0
    return out


def check_window(window) -> None:
    """Raise ValueError unless ``window`` is a refiner's window: a multiple of 8 pixels (the
    U-Net's three poolings) larger than twice :data:`MARGIN`."""
    if int(window) != window or window % 8 or window <= 2 * MARGIN:
        raise ValueError(f"window must be a multiple of 8 larger than {2 * MARGIN} pixels, got {window!r}")


def window_for(mask: np.ndarray, window: int = WINDOW) -> tuple[int, int] | None:
    """Top-left ``(row, col)`` of the ``window``-sized window centred on ``mask``'s bounding
    box, or None when the mask is empty or does not fit in it with :data:`MARGIN` to spare. The
    window may reach past the image's edge (:func:`crop` pads)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if rows.size == 0:
        return None
    if rows[-1] - rows[0] + 1 > window - 2 * MARGIN or cols[-1] - cols[0] + 1 > window - 2 * MARGIN:
        return None
    return (int((rows[0] + rows[-1] + 1) // 2 - window // 2), int((cols[0] + cols[-1] + 1) // 2 - window // 2))


def crop(array: np.ndarray, origin: tuple[int, int], mode: str = "constant", window: int = WINDOW) -> np.ndarray:
    """The ``window x window`` window at ``origin`` of the last two axes of ``array``, padded
    past the image's edge (``mode`` as :func:`numpy.pad`: ``"edge"`` for the image)."""
    h, w = array.shape[-2:]
    r0, c0 = origin
    pad = ((max(0, -r0), max(0, r0 + window - h)), (max(0, -c0), max(0, c0 + window - w)))
    lead = [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, lead + list(pad), mode=mode) if any(sum(p) for p in pad) else array
    r, c = r0 + pad[0][0], c0 + pad[1][0]
    return padded[..., r:r + window, c:c + window]


def refiner_input(rgb01: np.ndarray, mask: np.ndarray, probability: np.ndarray, positive: np.ndarray,
                  negative: np.ndarray, origin: tuple[int, int], window: int = WINDOW) -> np.ndarray:
    """``[7, window, window]`` float32 input for one object.

    Args:
        rgb01: ``[3, H, W]`` image on 0..1 (the engine's prepared image / 255).
        mask: ``[H, W]`` bool, the object's mask as the engine made it.
        probability: ``[H, W]`` SEEM's mask probability.
        positive, negative: ``[N, 2]`` clicks (row, col).
        origin: the window's top-left pixel (:func:`window_for`).
        window: the window's side (the refiner's ``window``).
    """
    shape = (window, window)
    return np.concatenate([
        crop(rgb01, origin, "edge", window).astype(np.float32),
        crop(mask, origin, window=window)[None].astype(np.float32),
        crop(probability, origin, window=window)[None].astype(np.float32),
        click_map(positive, shape, origin)[None],
        click_map(negative, shape, origin)[None],
    ])


def keep_clicked(refined: np.ndarray, positive: np.ndarray, origin: tuple[int, int], fallback: np.ndarray) -> np.ndarray:
    """The regions of ``refined`` (a window) that hold a positive click; the one overlapping
    ``fallback`` most when no click falls in it."""
    labels, n = ndimage.label(refined)
    if n <= 1:
        return refined
    keep = set()
    for r, c in np.rint(np.asarray(positive, np.float64) - np.asarray(origin)).astype(int):
        if 0 <= r < refined.shape[0] and 0 <= c < refined.shape[1] and labels[r, c]:
            keep.add(int(labels[r, c]))
    if not keep:
        overlap = np.bincount(labels[fallback], minlength=n + 1)
        overlap[0] = 0
        keep.add(int(overlap.argmax()))
    return np.isin(labels, sorted(keep))


@torch.inference_mode()
def refine_outlines(refiner: OutlineRefiner, rgb01: np.ndarray, masks: np.ndarray, probabilities: np.ndarray,
                    clicks: Sequence[tuple[np.ndarray, np.ndarray]], indices: Sequence[int],
                    inside_share: float | None = None, min_agreement: float = MIN_AGREEMENT) -> np.ndarray:
    """``masks`` (``[N, H, W]`` bool, a copy) with the objects ``indices`` drawn again by ``refiner``.

    An object is left as it is when its mask is empty or too large for the refiner's window, when
    it has no positive click (the refiner was trained on clicked objects), or when the refined
    mask overlaps the engine's by less than ``min_agreement`` (IoU; :data:`MIN_AGREEMENT`) and,
    with ``inside_share``, lies less than that share inside the engine's mask (a caller that knows
    the object is a nucleus takes a leak cut back: see ``propagate.redraw_outlines``); with
    ``min_agreement=0`` every non-empty outline is taken. Only the regions that hold a positive
    click are kept. ``probabilities`` is ``[N, H, W]``; ``clicks`` is ``(positive, negative)``
    ``[K, 2]`` points per object.
    """
    out = masks.copy()
    size = refiner.window
    batch, where = [], []
    for k in indices:
        positive, negative = clicks[k]
        origin = window_for(masks[k], size) if len(positive) else None
        if origin is None:
            continue
        batch.append(refiner_input(rgb01, masks[k], probabilities[k], positive, negative, origin, size))
        where.append((k, origin))
    if not batch:
        return out
    device = next(refiner.parameters()).device
    logits = refiner(torch.from_numpy(np.stack(batch)).to(device)).float().cpu().numpy()[:, 0]
    h, w = masks.shape[-2:]
    for (k, (r0, c0)), window_logits in zip(where, logits):
        positive = clicks[k][0]
        drawn = keep_clicked(window_logits > 0, positive, (r0, c0), crop(masks[k], (r0, c0), window=size))
        inside = (slice(max(0, r0), min(h, r0 + size)), slice(max(0, c0), min(w, c0 + size)))
        refined = drawn[inside[0].start - r0:inside[0].stop - r0, inside[1].start - c0:inside[1].stop - c0]
        engine = masks[k][inside]  # all of the engine's mask: it fits in the window
        union, common = (refined | engine).sum(), (refined & engine).sum()
        if union and refined.any() and (common / union >= min_agreement
                                        or (inside_share is not None and common and common >= inside_share * refined.sum())):
            out[k] = False
            out[k][inside] = refined
    return out


def refiner_file(classes: Sequence[str]) -> str:
    """File name of a refiner of ``classes`` in a training run's folder: :data:`REFINER_FILE` for
    nuclei (``("nucleus",)``), else e.g. ``refiner_cell.safetensors``."""
    if tuple(classes) == ("nucleus",):
        return REFINER_FILE
    return f"refiner_{'_'.join(classes)}.safetensors"


def refiner_files(folder: str | Path) -> list[Path]:
    """The refiners' files (:func:`refiner_file`) in a training run's ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).glob("refiner*.safetensors") if p.is_file())


def save_refiner(refiner: OutlineRefiner, path: str | Path) -> Path:
    """Write ``refiner``'s weights (fp16) and settings (in the file's metadata) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in refiner.state_dict().items()}
    save_file(state, str(path), metadata={"width": str(refiner.width), "classes": ",".join(refiner.classes),
                                          "window": str(refiner.window)})
    return path


def load_refiner(path: str | Path) -> OutlineRefiner:
    """An :class:`OutlineRefiner` (fp32, eval mode) from a file written by :func:`save_refiner`.

    Raises:
        ValueError: the file is not a refiner's (missing settings or tensors, wrong shapes).
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta: Mapping[str, str] = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    if "width" not in meta or "classes" not in meta:
        raise ValueError(f"{path} has no outline-refiner settings (width, classes) in its metadata")
    try:  # files written before refiners had a window of their own: the 64 px window
        refiner = OutlineRefiner(int(meta["width"]), [c for c in meta["classes"].split(",") if c],
                                 window=int(meta.get("window", WINDOW)))
    except ValueError as error:
        raise ValueError(f"{path} has invalid outline-refiner settings: {error}") from error
    try:
        refiner.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"{path} does not hold an outline refiner of width {meta['width']}: {error}") from error
    return refiner.eval()
