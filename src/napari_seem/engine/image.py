"""From a scientist's image to the RGB tensor SEEM expects, and back to the original grid.

What is done to an image, in order (:func:`prepare_image`):

1. **Shape**: ``[H, W]`` (grayscale), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA: alpha dropped).
   A multichannel image ``[H, W, C]`` with another C must be reduced by the caller (pick a
   channel, or pass ``channel=``).
2. **Validation**: empty images, NaN/inf pixels and non-numeric dtypes raise ``ValueError``.
3. **Intensity** (``normalize``):
   - ``"auto"`` (default): ``uint8`` images are used as they are (natural-image statistics,
     as SEEM was trained), unless they are dim: one where no more than 0.01 % of the pixels reach
     :data:`DIM_TOP` is multiplied so that its bright end (99.8th percentile) lands at
     :data:`BRIGHT_END`, but never so far that its top (99.99th percentile) passes 255 (a dim
     field with a few small objects, whose 99.8th percentile is background); zero stays zero, so
     the background keeps its level relative to the signal. An under-exposed 8-bit fluorescence
     image is otherwise far from any training image (the shipped model: single click 0.80 / 0.80
     on nuclei / cells at normal exposure, 0.64 / 0.64 at a quarter of it, 0.80 / 0.80 with this
     gain). A bright field with only a few objects is not dim: its objects reach the top. Any other dtype (``uint16``,
     ``float``, ...) is rescaled so that the 1st..99.8th percentile maps to 0..255 (clipped).
     Microscopy intensities vary over orders of magnitude; a robust percentile stretch puts them
     where the model's pixel statistics are.
   - ``"percentile"``: that stretch for every dtype; ``(low, high)``: fixed intensity range;
     ``"none"``: values used as they are (must already be on a 0..255 scale).
   A constant image maps to 0.
4. **Channels**: grayscale is repeated into R, G and B.
5. **Resolution**: the image is resized (bilinear, antialiased) so that its shorter side is
   ``short_side`` pixels (default 512, as the official SEEM demo) while the longer side stays
   within ``max_side`` (default 1024). Smaller images are upsampled to ``short_side`` too, so
   small objects cover enough feature-map pixels (SEEM's masks are read at stride 4).
   Memory and time scale with the model-side size only, so a 4k x 4k image costs the same as a
   512 x 512 one. ``scale`` instead resizes every image by one factor (model pixels per image
   pixel), whatever its size: the way to bring objects to the size a model was trained on (the
   shipped model: nuclei about 10-34 px across, cells 28-56 px). Masks are returned at the
   original size (:func:`logits_to_original`).

Coordinates: everything here is (row, col) = (y, x), as napari.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

Normalize = Union[str, tuple[float, float]]

DEFAULT_SHORT_SIDE = 512
DEFAULT_MAX_SIDE = 1024
PERCENTILES = (1.0, 99.8)
#: the largest ``scale`` (model pixels per image pixel) a segmenter accepts
MAX_SCALE = 8.0
#: ``"auto"``: a ``uint8`` image whose 99.99th percentile is below this level counts as dim (the
#: shipped model's training images: 157 and above) ...
DIM_TOP = 128.0
#: ... and is multiplied so that its 99.8th percentile lands here (8-bit fluorescence is usually
#: exposed to 40-85 % of the range; the training images: 95-221, median 164)
BRIGHT_END = 160.0


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the model and the geometry to map results back.

    Attributes:
        rgb: ``[3, h, w]`` float32 tensor on the 0..255 scale at model resolution.
        original_shape: ``(H, W)`` of the caller's image.
        model_shape: ``(h, w)`` at model resolution.
    """

    rgb: torch.Tensor
    original_shape: tuple[int, int]
    model_shape: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Model pixels per original pixel along (rows, cols)."""
        return (self.model_shape[0] / self.original_shape[0], self.model_shape[1] / self.original_shape[1])


def model_shape_for(shape: Sequence[int], short_side: int = DEFAULT_SHORT_SIDE, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """Model-resolution ``(h, w)`` for an image of ``shape = (H, W)``."""
    height, width = int(shape[0]), int(shape[1])
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_side:
        scale = max_side / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def to_rgb_255(image: np.ndarray, normalize: Normalize = "auto", channel: int | None = None) -> np.ndarray:
    """Validate ``image`` and return ``[H, W, 3]`` float32 on the 0..255 scale (steps 1-4 above)."""
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"image must be numeric, got dtype {arr.dtype}")
    if channel is not None:
        if arr.ndim != 3:
            raise ValueError(f"channel={channel} needs an [H, W, C] image, got shape {arr.shape}")
        if not -arr.shape[-1] <= channel < arr.shape[-1]:
            raise ValueError(f"channel {channel} out of range for an image with {arr.shape[-1]} channels")
        arr = arr[..., channel]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(
            f"expected a 2D image [H, W], RGB [H, W, 3] or RGBA [H, W, 4], got shape {arr.shape}; "
            "for a stack or time-lapse, pass one frame; for other channel counts, pass channel="
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"image has {bad} NaN or infinite pixel values; replace them (e.g. np.nan_to_num) first")
    out = _rescale(arr, normalize)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def _rescale(arr: np.ndarray, normalize: Normalize) -> np.ndarray:
    if isinstance(normalize, tuple):
        low, high = float(normalize[0]), float(normalize[1])
    elif normalize == "auto" and arr.dtype == np.uint8:
        return _brighten_if_dim(arr)
    elif normalize == "none":
        return arr.astype(np.float32, copy=False)
    elif normalize in ("auto", "percentile"):
        low, high = (float(v) for v in np.percentile(arr, PERCENTILES))
    else:
        raise ValueError(f"normalize must be 'auto', 'percentile', 'none' or (low, high), got {normalize!r}")
    if high <= low:
        high = float(arr.max())
        low = float(arr.min())
    if high <= low:
        return np.zeros(arr.shape, dtype=np.float32)
    scaled = (arr.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0.0, 255.0)


def _brighten_if_dim(arr: np.ndarray) -> np.ndarray:
    """A ``uint8`` image as float32 0..255, multiplied up when it is dim (see the module
    docstring; an all-dark image, top < 1, is left as it is)."""
    out = arr.astype(np.float32)
    bright_end, top = (float(v) for v in np.percentile(arr, (PERCENTILES[1], 99.99)))
    if 1.0 <= top < DIM_TOP:
        gain = 255.0 / top if bright_end < 1.0 else min(BRIGHT_END / bright_end, 255.0 / top)
        out *= np.float32(gain)
        np.clip(out, 0.0, 255.0, out=out)
    return out


def prepare_image(
    image: np.ndarray,
    normalize: Normalize = "auto",
    channel: int | None = None,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    max_side: int = DEFAULT_MAX_SIDE,
    scale: float | None = None,
) -> PreparedImage:
    """Validate, normalise and resize ``image`` for SEEM (see the module docstring).

    ``short_side=None`` keeps the image's own size (the model pads it; no resizing); ``scale``
    (when given, ``short_side`` and ``max_side`` are not used) resizes by that factor.
    """
    rgb = to_rgb_255(image, normalize=normalize, channel=channel)
    original = (int(rgb.shape[0]), int(rgb.shape[1]))
    if scale is not None:
        target = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
    else:
        target = original if short_side is None else model_shape_for(original, short_side, max_side)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    if target != original:
        tensor = F.interpolate(tensor[None], size=target, mode="bilinear", align_corners=False, antialias=True)[0]
        tensor = tensor.clamp_(0.0, 255.0)
    return PreparedImage(rgb=tensor, original_shape=original, model_shape=target)


def logits_to_original(logits: torch.Tensor, original_shape: tuple[int, int]) -> torch.Tensor:
    """Resize ``[N, h, w]`` mask logits at model resolution to ``[N, H, W]`` (bilinear)."""
    if tuple(logits.shape[-2:]) == tuple(original_shape):
        return logits
    return F.interpolate(logits[None].float(), size=original_shape, mode="bilinear", align_corners=False)[0]
