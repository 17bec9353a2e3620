"""Train an :class:`~napari_seem.engine.outline_refiner.OutlineRefiner` on one model's own masks.

1. **Samples** (:func:`refiner_samples`): synthetic training images (seeds >= 2^20, as SEEM's
   training); on each, every object of the refiner's classes is clicked once (at its centre or, one
   time in two, at a random interior point) and then corrected up to ``rounds`` times with the
   usual corrective click at the largest error of the engine's mask (the NoC protocol), the engine
   running the model as a user runs it (without a refiner). Each round gives one window: the
   refiner's input as the engine will build it, and the object's true mask.
   Propagation windows (:func:`_sequence_samples`): on synthetic time-lapses, the objects seen on
   the first frame are clicked at their centre and propagated forward by the engine; on every later
   frame each one gives the window a propagation's redraw builds (its propagated mask, a click at
   the mask's deepest pixel; ``napari_seem.engine.propagate.redraw_outlines``) and its true mask
   on that frame: masks that lag behind a moving nucleus, creep into its cytoplasm or follow it out
   of the image, which single images never show.
2. **Training** (:func:`train_refiner`): BCE + dice against the true mask, AdamW, cosine decay,
   random flips and quarter turns.

A refiner's window is its own (``window``: 64 px for the shipped nuclei's, 96 px for the shipped
cells', which are 40-60 px across): the windows are made at that size and the refiner keeps it.

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

from ..engine.connected import deepest_pixel
from ..engine.outline_refiner import CHANNELS, WINDOW, OutlineRefiner, crop, refiner_input, window_for
from ..engine.prompts import ObjectPrompt
from ..engine.propagate import HOLD_PROBABILITY
from ..synthetic import make_sequence, object_centre
from .clicks import next_click, random_click
from .data import VOCABULARY, synthetic_sample
from .loop import Progress, sample_seed

#: the shipped refiner's recipe: images and time-lapses whose objects give the windows, steps, peak
#: learning rate
REFINER_IMAGES, REFINER_SEQUENCES, REFINER_STEPS, REFINER_LR = 800, 160, 3000, 2e-3
#: the shipped refiner of cells: images, time-lapses, steps, window (cells are 40-60 px across)
CELL_REFINER_IMAGES, CELL_REFINER_SEQUENCES, CELL_REFINER_STEPS, CELL_REFINER_WINDOW = 400, 80, 1500, 96
#: frames of a training time-lapse (as the acceptance's time-lapses)
SEQUENCE_FRAMES = 20

#: objects smaller than this (visible pixels) are not sampled, as in the evaluation
MIN_AREA = 60


def _image_samples(segmenter, seed: int, size: int, classes: tuple[str, ...], rounds: int, window: int = WINDOW):
    """``(inputs [K, 7, W, W] float16, targets [K, W, W] bool)`` for one synthetic image (``W``:
    ``window``)."""
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
            origin = window_for(mask, window)
            if origin is not None:
                pts = np.asarray(points, np.float64)
                lab = np.asarray(labels)
                inputs.append(refiner_input(rgb01, mask, segmenter.mask_probabilities(result, 0),
                                            pts[lab == 1], pts[lab == 0], origin, window).astype(np.float16))
                targets.append(crop(full, origin, window=window))
            click = next_click(mask, full) if round_ < rounds else None
            if click is None:
                break
            points.append(click[0])
            labels.append(click[1])
            result = segmenter.predict(ObjectPrompt(points=points, point_labels=labels), previous=result)
    if not inputs:
        return _no_windows(window)
    return np.stack(inputs), np.stack(targets)


def _sequence_samples(segmenter, seed: int, size: int, classes: tuple[str, ...], window: int = WINDOW):
    """``(inputs [K, 7, W, W] float16, targets [K, W, W] bool)`` for one synthetic time-lapse: the
    windows of a propagation's redraw (see the module docstring). A frame's object gives a window
    only while it is named as one of ``classes`` and its mask's deepest pixel (the click) lies on
    the object: a mask that slid onto a neighbour is lost, not one to redraw."""
    sequence = make_sequence(SEQUENCE_FRAMES, (size, size), seed=seed, axis="t")
    maps = {"nucleus": sequence.nuclei, "cell": sequence.cells, "vesicle": sequence.vesicles}
    ids = [t["id"] for t in sequence.tracks
           if t["class"] in classes and t["first"] == 0 and (maps[t["class"]][0] == t["id"]).sum() >= MIN_AREA]
    if not ids:
        return _no_windows(window)
    kind = {t["id"]: t["class"] for t in sequence.tracks}
    segmenter.set_image(sequence.image[0])
    seeds = segmenter.predict([ObjectPrompt(points=[object_centre(maps[kind[i]][0], i)]) for i in ids])
    seeds.object_ids = np.asarray(ids)
    inputs, targets = [], []
    for frame, result in segmenter.propagate(sequence.image, 0, seeds, hold_probability=HOLD_PROBABILITY):
        if frame == 0:
            continue
        rgb01 = segmenter.refiner_image()
        for k, oid in enumerate(result.object_ids):
            mask = result.masks[k]
            origin = window_for(mask, window)
            if origin is None or result.class_names[k] not in classes:
                continue
            truth = maps[kind[int(oid)]][frame] == oid
            click = deepest_pixel(mask)
            if not truth[click]:
                continue
            inputs.append(refiner_input(rgb01, mask, segmenter.mask_probabilities(result, k),
                                        np.array([click], np.float64), np.zeros((0, 2)), origin,
                                        window).astype(np.float16))
            targets.append(crop(truth, origin, window=window))
    if not inputs:
        return _no_windows(window)
    return np.stack(inputs), np.stack(targets)


def _no_windows(window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, len(CHANNELS), window, window), np.float16), np.zeros((0, window, window), bool)


def _image_plan(n_images: int, seed: int, sizes: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """``("image", image seed, size)`` of each image, in order."""
    plan = []
    for i in range(n_images):
        image_seed = sample_seed(seed, i)
        plan.append(("image", image_seed, sizes[image_seed % len(sizes)]))
    return plan


def _sequence_plan(n_sequences: int, seed: int, sizes: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """``("sequence", time-lapse seed, size)`` of each time-lapse, in order: a stream of seeds apart
    from the images', all >= 2^20 (training seeds)."""
    plan = []
    for i in range(n_sequences):
        sequence_seed = int(np.random.SeedSequence([seed, i, 1]).generate_state(1)[0]) | (1 << 20)
        plan.append(("sequence", sequence_seed, sizes[sequence_seed % len(sizes)]))
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
    classes, rounds, window, plan = job
    return _collect(_WORKER["segmenter"], plan, classes, rounds, window)


def _collect(segmenter, plan, classes, rounds, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for kind, item_seed, size in plan:
        if kind == "image":
            x, y = _image_samples(segmenter, item_seed, size, classes, rounds, window)
        else:
            x, y = _sequence_samples(segmenter, item_seed, size, classes, window)
        if len(x):
            xs.append(x)
            ys.append(y)
    if not xs:
        return _no_windows(window)
    return np.concatenate(xs), np.concatenate(ys)


def refiner_samples(checkpoint: str, config: str | None, n_images: int, seed: int, *,
                    vocabulary: tuple[str, ...] = VOCABULARY, classes: tuple[str, ...] = ("nucleus",),
                    rounds: int = 3, sizes: tuple[int, ...] = (192, 224, 256), sequences: int = 0,
                    workers: int = 2, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Windows from ``n_images`` synthetic images and then ``sequences`` synthetic time-lapses
    (propagation windows), ``(inputs [K, 7, W, W] float16, targets [K, W, W] bool)`` (``W``:
    ``window``, the refiner's).

    ``checkpoint`` and ``config`` name the model the refiner is for (as ``--fine-tune`` and
    ``--config``); the engine runs it without a refiner, with one thread, in ``workers``
    processes (each image's or time-lapse's windows depend only on its seed and the model, so not
    on ``workers``), with a progress bar.
    """
    images = _image_plan(n_images, seed, sizes)
    # jobs of four images, and of one time-lapse each (a time-lapse takes about twice as long)
    jobs = ([(classes, rounds, window, images[i:i + 4]) for i in range(0, len(images), 4)]
            + [(classes, rounds, window, [item]) for item in _sequence_plan(sequences, seed, sizes)])
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
        raise ValueError(f"no object of {classes} in {n_images} images and {sequences} time-lapses")
    return inputs, np.concatenate([y for _, y in parts])


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def train_refiner(inputs: np.ndarray, targets: np.ndarray, *, steps: int = REFINER_STEPS, seed: int = 0,
                  batch: int = 16, lr: float = REFINER_LR, width: int = 16, classes: tuple[str, ...] = ("nucleus",),
                  threads: int = 2, log: Callable[[str], None] = print) -> OutlineRefiner:
    """Train a refiner on the windows of :func:`refiner_samples` (CPU, deterministic from ``seed``
    and ``threads``); its window is the windows' side."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(inputs, targets, steps, seed, batch, lr, width, classes, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train(inputs, targets, steps, seed, batch, lr, width, classes, log) -> OutlineRefiner:
    torch.manual_seed(seed)
    refiner = OutlineRefiner(width, classes, window=inputs.shape[-1])
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
