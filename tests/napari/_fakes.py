"""A fake segmenter with simple numpy logic for the napari plugin tests (tests only, never in the package)."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from skimage.draw import disk, line, polygon

from napari_seem.engine.prompts import POSITIVE, ObjectPrompt
from napari_seem.engine.result import Segmentation

RADIUS = 4


class FakeSegmenter:
    """Implements the engine's Segmenter API with numpy: a disk around each positive click, boxes and
    polygons filled, strokes drawn, masks kept, negative clicks carve disks; thresholding for the
    automatic modes. Records every call so tests can check what the widget sent."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.image: np.ndarray | None = None
        self.calls: list[tuple[str, dict]] = []
        self.vocabulary = ["cell", "nucleus"]

    def set_image(self, image, normalize="auto", channel=None) -> None:
        image = np.asarray(image)
        if image.ndim == 3:
            image = image.mean(-1)
        self.image = image
        self.calls.append(("set_image", {"shape": image.shape}))

    def set_vocabulary(self, names):
        self.vocabulary = list(names)

    def _mask(self, prompt: ObjectPrompt, shape) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        for (r, c), lbl in zip(prompt.points, prompt.point_labels):
            if lbl == POSITIVE:
                mask[disk((r, c), RADIUS, shape=shape)] = True
        for r0, c0, r1, c1 in prompt.boxes:
            mask[int(round(r0)):int(round(r1)) + 1, int(round(c0)):int(round(c1)) + 1] = True
        for poly in prompt.polygons:
            mask[polygon(poly[:, 0], poly[:, 1], shape=shape)] = True
        for stroke, lbl in zip(prompt.strokes, prompt.stroke_labels):
            pts = np.rint(stroke).astype(int)
            for (a, b), (c, d) in zip(pts[:-1], pts[1:]):
                rr, cc = line(a, b, c, d)
                ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
                mask[rr[ok], cc[ok]] = lbl == POSITIVE
        if prompt.mask is not None:
            mask |= prompt.mask
        for (r, c), lbl in zip(prompt.points, prompt.point_labels):
            if lbl != POSITIVE:
                mask[disk((r, c), RADIUS, shape=shape)] = False
        if prompt.negative_mask is not None:
            mask &= ~prompt.negative_mask
        return mask

    def _result(self, masks, names) -> Segmentation:
        masks = np.asarray(masks, dtype=bool).reshape(-1, *self.image.shape)
        n = len(masks)
        return Segmentation(masks=masks, scores=np.linspace(0.9, 0.8, n).astype(np.float32) if n else np.zeros(0, np.float32),
                            class_names=list(names), class_scores=np.full(n, 0.75, np.float32),
                            memory=masks.astype(np.float32))

    def predict(self, prompts=None, *, text=None, previous=None) -> Segmentation:
        time.sleep(self.delay)
        if isinstance(prompts, ObjectPrompt):
            prompts = [prompts]
        self.calls.append(("predict", {"prompts": prompts, "text": text, "previous": previous}))
        if not prompts:
            masks, n = ndimage.label(self.image > self.image.mean())
            return self._result([masks == i for i in range(1, n + 1)], [text] * n)
        return self._result([self._mask(p, self.image.shape) for p in prompts], [text or "cell"] * len(prompts))

    def segment_everything(self) -> Segmentation:
        time.sleep(self.delay)
        masks, n = ndimage.label(self.image > self.image.mean())
        return self._result([masks == i for i in range(1, n + 1)], ["cell"] * n)

    def propagate(self, frames, start, seeds, direction="forward", stop=None, hold_probability=None):
        self.calls.append(("propagate", {"n": len(frames), "start": start, "direction": direction,
                                         "hold_probability": hold_probability}))
        order = {"forward": range(start + 1, len(frames)), "backward": range(start - 1, -1, -1),
                 "both": [*range(start + 1, len(frames)), *range(start - 1, -1, -1)]}[direction]
        for index in order:
            time.sleep(self.delay)
            self.image = np.asarray(frames[index], dtype=float)
            shifted = np.roll(seeds.masks, index - start, axis=-1)  # objects move 1 px / frame along x
            yield index, Segmentation(masks=shifted, scores=seeds.scores, class_names=seeds.class_names,
                                      class_scores=seeds.class_scores, memory=None, object_ids=seeds.object_ids)

    def find_similar(self, reference_image, reference_mask, target_image) -> Segmentation:
        time.sleep(self.delay)
        self.set_image(target_image)
        area = reference_mask.sum()
        masks, n = ndimage.label(self.image > self.image.mean())
        keep = [masks == i for i in range(1, n + 1) if 0.5 * area <= (masks == i).sum() <= 2 * area]
        return self._result(keep, ["like reference"] * len(keep))


def blobs(shape=(64, 80), centers=((20, 20), (40, 55)), radius=6, leading=()) -> np.ndarray:
    """A float image with bright disks (cells) on a dark background."""
    image = np.zeros(shape[-2:], dtype=np.float32)
    for center in centers:
        image[disk(center, radius, shape=shape[-2:])] = 1.0
    return np.broadcast_to(image, (*leading, *shape[-2:])).copy()
