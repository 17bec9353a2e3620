"""Speed of a training step of the shipped tiny SEEM under the objective's speed options.

Runs the same training steps (same images, same simulated prompts, same starting weights) with
the mask losses on full masks at the image resolution, at half of it (``mask_loss_stride=2``),
with one sampled prompt template per class instead of all 81 (``text_templates=sampled``, as
SEEM trains), with both (the shipped weights' recipe), and at SEEM's 4,096 sampled points
(``mask_points=4096``), alternating the variants so all see the same machine load, and prints
the median process CPU time per step (forward, backward, optimiser) and each variant's speed-up
over full masks, per image size.

Usage::

    PYTHONPATH=src python benchmarks/bench_training.py                 # 192 and 256 px, 12 steps
    PYTHONPATH=src python benchmarks/bench_training.py --sizes 256 --steps 30
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_seem.model import build_seem, load_into, read_state_dict
from napari_seem.train.data import VOCABULARY, synthetic_sample
from napari_seem.train.loop import TrainConfig, make_optimizer, sample_seed
from napari_seem.train.objective import ObjectiveConfig, TextBank, training_step
from napari_seem.weights import shipped_model_path

RECIPE = {"max_prompted_objects": 8, "max_rounds": 3, "spatial_ignore_separate": True}
VARIANTS = {
    "full masks": {},
    "half res": {"mask_loss_stride": 2},
    "1 template": {"text_templates": "sampled"},
    "half+1 tmpl": {"mask_loss_stride": 2, "text_templates": "sampled"},
    "4096 points": {"mask_points": 4096},
}


def _trainer(options: dict):
    """A fresh copy of the shipped model with its optimiser, and a function running one step."""
    weights, config = shipped_model_path("seem_tiny_synthetic")
    model = build_seem(config)
    load_into(model, {k: v.float() for k, v in read_state_dict(weights).items()}, strict=True)
    model.train()
    bank = TextBank(model.lang_encoder, VOCABULARY)
    optimizer = make_optimizer(model, TrainConfig())
    objective = ObjectiveConfig(**RECIPE, **options)

    def step(seed: int, size: int) -> float:
        sample = synthetic_sample(seed, size)
        start = time.process_time()
        losses = training_step(model, sample, bank, objective, np.random.default_rng(seed + 1),
                               torch.Generator().manual_seed(seed))
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.process_time() - start

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 256])
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant and size (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steppers = {name: _trainer(options) for name, options in VARIANTS.items()}
    print(f"training step of seem_tiny_synthetic, process CPU time, {args.threads} thread(s), "
          f"median of {args.steps} steps")
    print(f"{'size':>6} " + " ".join(f"{name:>20}" for name in VARIANTS))
    for size in args.sizes:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for i in range(args.steps + 2):
            seed = sample_seed(size, i)
            for name, step in steppers.items():
                elapsed = step(seed, size)
                if i >= 2:
                    times[name].append(elapsed)
        medians = [statistics.median(times[name]) for name in VARIANTS]
        print(f"{size:>6} " + " ".join(f"{m:>10.3f} s ({medians[0] / m:.2f}x)" for m in medians))


if __name__ == "__main__":
    main()
