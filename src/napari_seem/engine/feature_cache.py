"""An LRU cache of encoded images, bounded by memory, keyed by image content and settings."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Hashable

import numpy as np

from ..model.seem import ImageFeatures


def image_signature(image: np.ndarray, *extra: Hashable) -> str:
    """Content signature of an image array (+ settings): same pixels and settings, same key."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((arr.shape, arr.dtype.str, extra)).encode())
    digest.update(arr.view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


class FeatureCache:
    """Least-recently-used store of :class:`ImageFeatures` within ``max_bytes``.

    A frame seen before (same pixels, same preprocessing, same model) is never encoded twice
    while it fits in the budget. ``max_bytes=0`` disables caching (the current image is still
    held by the segmenter).
    """

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, ImageFeatures] = OrderedDict()
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
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, features: ImageFeatures) -> None:
        size = features.nbytes()
        if key in self._items:
            self._bytes -= self._items.pop(key).nbytes()
        if size > self.max_bytes:
            return
        self._items[key] = features
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
