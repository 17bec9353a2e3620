"""Train an :class:`~napari_seem.engine.outline_refiner.OutlineRefiner` on one model's own masks.

1. **Samples** (:func:`refiner_samples`): synthetic training images (seeds >= 2^20, as SEEM's
   training); on each, every object of the refiner's classes is clicked once (at its centre or, one
   time in two, at a random interior point) and then corrected up to ``rounds`` times with the
   usual corrective click at the largest error of the engine's mask (the NoC protocol), the engine
   running the model as a user runs it (without a refiner). Each round gives one window: the
   refiner's input as the engine will build it, and the object's true mask.
2. **Training** (:func:`train_refiner`): BCE + dice against the true mask, AdamW, cosine decay,
   random flips and quarter turns.

Everything follows from the seed; on the same processor and thread count the weights are the
same byte for byte.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.outline_refiner import CHANNELS, WINDOW, OutlineRefiner, crop, refiner_input, window_for
from ..engine.prompts import ObjectPrompt
from ..synthetic import object_centre
from .clicks import next_click, random_click
from .data import VOCABULARY, synthetic_sample
from .loop import Progress, sample_seed

#: the shipped refiner's recipe: images whose objects give the windows, steps, peak learning rate
REFINER_IMAGES, REFINER_STEPS, REFINER_LR = 800, 3000, 2e-3

#: objects smaller than this (visible pixels) are not sampled, as in the evaluation
MIN_AREA = 60


def _image_samples(segmenter, seed: int, size: int, classes: tuple[str, ...], rounds: int):
    """``(inputs [K, 7, W, W] float16, targets [K, W, W] bool)`` for one synthetic image."""
    rng = np.random.default_rng(seed)
    sample = synthetic_sample(seed, size)
    segmenter.set_image(sample.image)
    rgb01 = segmenter.refiner_image()
    inputs, targets = [], []
    wanted = [VOCABULARY.index(c) for c in classes]
    for k in range(len(sample)):
        if sample.classes[k] not in wanted or sample.visible[k].sum() < MIN_AREA:
            continue
        full, visible = sample.full[k], sample.visible[k]
        first = object_centre(visible.astype(np.int32), 1) if rng.random() < 0.5 else random_click(visible, rng)
        points, labels = [first], [1]
        result = segmenter.predict(ObjectPrompt(points=[first]))
        for round_ in range(rounds + 1):
            mask = result.masks[0]
            origin = window_for(mask)
            if origin is not None:
                pts = np.asarray(points, np.float64)
                lab = np.asarray(labels)
                inputs.append(refiner_input(rgb01, mask, segmenter.mask_probabilities(result, 0),
                                            pts[lab == 1], pts[lab == 0], origin).astype(np.float16))
                targets.append(crop(full, origin))
            click = next_click(mask, full) if round_ < rounds else None
            if click is None:
                break
            points.append(click[0])
            labels.append(click[1])
            result = segmenter.predict(ObjectPrompt(points=points, point_labels=labels), previous=result)
    if not inputs:
        return _no_windows()
    return np.stack(inputs), np.stack(targets)


def _no_windows() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, len(CHANNELS), WINDOW, WINDOW), np.float16), np.zeros((0, WINDOW, WINDOW), bool)


def _image_plan(n_images: int, seed: int, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(image seed, size)`` of each image, in order."""
    plan = []
    for i in range(n_images):
        image_seed = sample_seed(seed, i)
        plan.append((image_seed, sizes[image_seed % len(sizes)]))
    return plan


#: the model a worker process of :func:`refiner_samples` runs (loaded once per process)
_WORKER: dict = {}


def _start_worker(checkpoint: str, config: str | None, vocabulary: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    _WORKER["segmenter"] = _segmenter(checkpoint, config, vocabulary)


def _segmenter(checkpoint: str, config: str | None, vocabulary: tuple[str, ...]):
    from .checkpoints import load_checkpoint
    from .evaluate import make_segmenter

    model, _ = load_checkpoint(checkpoint, config)
    return make_segmenter(model, vocabulary=list(vocabulary))


def _worker_samples(job) -> tuple[np.ndarray, np.ndarray]:
    classes, rounds, plan = job
    return _collect(_WORKER["segmenter"], plan, classes, rounds)


def _collect(segmenter, plan, classes, rounds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for image_seed, size in plan:
        x, y = _image_samples(segmenter, image_seed, size, classes, rounds)
        if len(x):
            xs.append(x)
            ys.append(y)
    if not xs:
        return _no_windows()
    return np.concatenate(xs), np.concatenate(ys)


def refiner_samples(checkpoint: str, config: str | None, n_images: int, seed: int, *,
                    vocabulary: tuple[str, ...] = VOCABULARY, classes: tuple[str, ...] = ("nucleus",),
                    rounds: int = 3, sizes: tuple[int, ...] = (192, 224, 256),
                    workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Windows from ``n_images`` synthetic images, ``(inputs [K, 7, W, W] float16, targets [K, W, W] bool)``.

    ``checkpoint`` and ``config`` name the model the refiner is for (as ``--fine-tune`` and
    ``--config``); the engine runs it without a refiner, with one thread, in ``workers``
    processes (each image's windows depend only on its seed and the model, so not on
    ``workers``), with a progress bar.
    """
    plan = _image_plan(n_images, seed, sizes)
    jobs = [(classes, rounds, plan[i:i + 4]) for i in range(0, len(plan), 4)]
    bar = Progress(len(jobs))
    parts = []
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _WORKER["segmenter"] = _segmenter(checkpoint, config, vocabulary)
            for job in jobs:
                parts.append(_worker_samples(job))
                bar.update(f"{sum(len(x) for x, _ in parts)} windows")
        finally:
            _WORKER.clear()
            torch.set_num_threads(threads)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_start_worker, initargs=(checkpoint, config, vocabulary)) as pool:
            for part in pool.imap(_worker_samples, jobs):
                parts.append(part)
                bar.update(f"{sum(len(x) for x, _ in parts)} windows")
    bar.close()
    inputs = np.concatenate([x for x, _ in parts])
    if not len(inputs):
        raise ValueError(f"no object of {classes} in {n_images} images")
    return inputs, np.concatenate([y for _, y in parts])


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def train_refiner(inputs: np.ndarray, targets: np.ndarray, *, steps: int = REFINER_STEPS, seed: int = 0,
                  batch: int = 16, lr: float = REFINER_LR, width: int = 16, classes: tuple[str, ...] = ("nucleus",),
                  threads: int = 2, log: Callable[[str], None] = print) -> OutlineRefiner:
    """Train a refiner on the windows of :func:`refiner_samples` (CPU, deterministic from ``seed``
    and ``threads``)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(inputs, targets, steps, seed, batch, lr, width, classes, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train(inputs, targets, steps, seed, batch, lr, width, classes, log) -> OutlineRefiner:
    torch.manual_seed(seed)
    refiner = OutlineRefiner(width, classes)
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=lr, weight_decay=1e-4)
    x_all = torch.from_numpy(inputs)
    y_all = torch.from_numpy(targets)
    warmup = min(100, max(1, steps // 10))
    generator = torch.Generator().manual_seed(seed)
    bar = Progress(steps)
    start = time.time()
    refiner.train()
    for step in range(steps):
        progress = (step - warmup) / max(1, steps - warmup)
        factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        index = torch.randint(len(x_all), (batch,), generator=generator)
        x = x_all[index].float()
        y = y_all[index].float()[:, None]
        turns = int(torch.randint(4, (), generator=generator))
        x, y = torch.rot90(x, turns, (2, 3)), torch.rot90(y, turns, (2, 3))
        if bool(torch.randint(2, (), generator=generator)):
            x, y = x.flip(3), y.flip(3)
        logits = refiner(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + _dice_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(f"loss {loss.item():.3f}")
    bar.close()
    log(f"trained the outline refiner: {steps} steps in {(time.time() - start) / 60:.1f} min")
    return refiner.eval()
