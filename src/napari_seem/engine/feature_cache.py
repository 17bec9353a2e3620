"""An LRU cache of encoded images, bounded by memory, keyed by image content and settings."""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Hashable

import numpy as np
import torch

from ..model.seem import ImageFeatures


def image_signature(image: np.ndarray, *extra: Hashable) -> str:
    """Content signature of an image array (+ settings): same pixels and settings, same key."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((arr.shape, arr.dtype.str, extra)).encode())
    digest.update(arr.view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Content hash of a model's weights (names, shapes and values) and of its input padding, when
    not the official one (stable across sessions)."""
    digest = hashlib.blake2b(digest_size=12)
    pad_mode, min_size = getattr(model, "pad_mode", "zeros"), getattr(model, "min_padded_size", 0)
    if pad_mode != "zeros" or min_size:
        digest.update(f"pad_mode={pad_mode},min_padded_size={min_size}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Least-recently-used store of :class:`ImageFeatures` within ``max_bytes``, optionally on disk.

    A frame seen before (same pixels, same preprocessing, same model) is never encoded twice
    while it fits in the budget. ``max_bytes=0`` disables the memory cache (the current image is
    still held by the segmenter). With ``disk_dir``, encoder outputs are also written there
    (``<key>.pt``, loaded with ``weights_only=True``), so re-opening a dataset in a later session
    does not re-encode it; the key must then identify the model by content (see
    :func:`model_fingerprint`). The disk store is not size-limited: delete the folder to free it.
    """

    def __init__(self, max_bytes: int = 2 * 1024**3, disk_dir: str | Path | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self._items: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._sizes: dict[str, int] = {}  # bytes of each item when it was stored
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> ImageFeatures | None:
        item = self._items.get(key)
        if item is None:
            item = self._read_disk(key)
            if item is None:
                self.misses += 1
                return None
            self._remember(key, item)
        else:
            self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, features: ImageFeatures) -> None:
        self._remember(key, features)
        self._write_disk(key, features)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.pt"

    def _write_disk(self, key: str, features: ImageFeatures) -> None:
        path = self._disk_path(key)
        if path is None or path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "mask_features": features.mask_features.detach().cpu(),
            "multi_scale_features": [m.detach().cpu() for m in features.multi_scale_features],
            "image_size": list(features.image_size),
            "padded_size": list(features.padded_size),
        }
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(payload, tmp)
        tmp.replace(path)  # never leave a half-written file under the real name

    def _read_disk(self, key: str) -> ImageFeatures | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            return ImageFeatures(
                mask_features=payload["mask_features"],
                multi_scale_features=list(payload["multi_scale_features"]),
                image_size=tuple(payload["image_size"]),
                padded_size=tuple(payload["padded_size"]),
            )
        except Exception:  # unreadable or foreign file: encode again (and overwrite it)
            path.unlink(missing_ok=True)
            return None

    def _remember(self, key: str, features: ImageFeatures) -> None:
        size = features.nbytes()
        if key in self._items:
            del self._items[key]
            self._bytes -= self._sizes.pop(key)
        if size > self.max_bytes:
            return
        self._items[key] = features
        self._sizes[key] = size
        self._bytes += size
        while self._bytes > self.max_bytes:
            old, _ = self._items.popitem(last=False)
            self._bytes -= self._sizes.pop(old)

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()
        self._bytes = 0
