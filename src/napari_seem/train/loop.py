"""The training loop: schedule, optimiser, progress bar, checkpoints, export.

Deterministic from ``seed``: the initial weights, every sample (``seed``, step) and every random
draw of the decoder come from seeded generators (single-process CPU training). The bytes of the
result also depend on the thread count and the processor (the order and kernels of
floating-point sums).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine.device import resolve_device
from ..model import SEEM, build_seem, save_safetensors
from .data import VOCABULARY, FolderDataset, Sample, synthetic_sample
from .objective import ObjectiveConfig, TextBank, training_step


@dataclass
class TrainConfig:
    """Schedule of one run (the model architecture comes from the model config)."""

    steps: int = 2800
    #: synthetic image sizes (one drawn per step)
    image_sizes: tuple[int, ...] = (128, 160, 192)
    #: range of the synthetic images' upsampling factor (objects this many times larger, see
    #: :func:`~napari_seem.train.data.synthetic_sample`); ``(1, 1)``: the generator's own scale
    zoom: tuple[float, float] = (1.0, 1.0)
    #: share of the synthetic samples that are one slice of a z-stack (0: single 2D images only)
    z_slices: float = 0.0
    lr: float = 4e-4
    text_lr_scale: float = 0.5
    weight_decay: float = 0.05
    warmup: int = 200
    final_lr_scale: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    #: torch CPU threads; 1 is fastest on a small machine shared with other processes
    threads: int = 1
    #: "cpu" (deterministic; how the shipped weights were made), "cuda", "mps" or "auto"
    device: str = "cpu"
    checkpoint_every: int = 250
    #: decay of an exponential moving average of the weights (0: off); with it, the averaged
    #: weights are the result (they smooth out the noise of batch-1 steps)
    ema: float = 0.0
    vocabulary: tuple[str, ...] = VOCABULARY
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_scale``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.final_lr_scale + (1 - cfg.final_lr_scale) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def init_from_scratch(model: SEEM) -> None:
    """Adjustments for training from random weights.

    * CLIP's initial temperature (``logit_scale = log(1 / 0.07)``);
    * the projections of the prompt-point features (``mask_sptial_embed``) start as the identity:
      with the default small random init, the spatial tokens carry almost no image content and
      the visual prompts are ignored for a long time.
    """
    with torch.no_grad():
        model.lang_encoder.logit_scale.fill_(math.log(1 / 0.07))
        for weight in model.predictor.mask_sptial_embed:
            weight.copy_(torch.eye(weight.shape[0]) + 0.02 * torch.randn_like(weight))


_EMBEDDINGS = ("query_feat", "query_embed", "level_embed", "spatial_embed", "spatial_featured", "pn_indicator")


def make_optimizer(model: SEEM, cfg: TrainConfig) -> torch.optim.Optimizer:
    text, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if ".lang_encoder." in name and not name.endswith("logit_scale"):
            text.append(p)
        elif p.ndim <= 1 or "norm" in name or any(e in name for e in _EMBEDDINGS):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": text, "weight_decay": cfg.weight_decay, "lr_scale": cfg.text_lr_scale},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


class Progress:
    """tqdm when installed, else a plain one-line progress report on stderr."""

    def __init__(self, total: int, initial: int = 0) -> None:
        self.total, self.n, self.start = total, initial, time.time()
        self.start_n = initial
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=2.0)
        except ImportError:
            self.bar = None

    def update(self, info: str) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
            return
        if self.n % 10 == 0 or self.n == self.total:
            rate = (self.n - self.start_n) / max(1e-9, time.time() - self.start)
            eta = (self.total - self.n) / max(rate, 1e-9)
            sys.stderr.write(f"\rstep {self.n}/{self.total} [{rate:.2f} step/s, eta {eta / 60:.0f} min] {info}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        current = model.state_dict()
        for k, avg in self.state.items():
            avg.lerp_(current[k].detach(), 1.0 - self.decay)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.state, strict=False)


def sample_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def train(
    model: SEEM,
    cfg: TrainConfig,
    out_dir: str | Path,
    data: FolderDataset | None = None,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> SEEM:
    """Train ``model`` in place for ``cfg.steps`` steps; checkpoints and the final weights go to ``out_dir``.

    ``data`` is a user folder (fine-tuning); None trains on synthetic images. With ``resume``, a
    ``checkpoint.pt`` in ``out_dir`` is continued from its step. With ``cfg.ema``, the model ends
    with the averaged weights.
    """
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(resolve_device(cfg.device))
    model.train()
    text_bank = TextBank(model.lang_encoder, tuple(cfg.vocabulary))
    optimizer = make_optimizer(model, cfg)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    start = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=True, map_location=next(model.parameters()).device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None and "ema" in state:
            average.state = state["ema"]
        start = int(state["step"])
        log(f"resumed from {ckpt_path} at step {start}")
    # the model learns at the sizes it is given: the config's minimum padded size (an inference
    # setting, see SEEM.padded_size) would pad the recipe's 128-192 px images to 256 px
    min_padded_size, model.min_padded_size = model.min_padded_size, 0
    try:
        progress = Progress(cfg.steps, start)
        running: dict[str, float] = {}
        for step in range(start, cfg.steps):
            seed = sample_seed(cfg.seed, step)
            sample: Sample = data.sample(seed) if data is not None else synthetic_sample(
                seed, cfg.image_sizes[seed % len(cfg.image_sizes)], zoom=cfg.zoom, z_slices=cfg.z_slices)
            rng = np.random.default_rng(seed + 1)
            generator = torch.Generator().manual_seed(seed % (1 << 62))
            factor = lr_factor(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor * group["lr_scale"]
            losses = training_step(model, sample, text_bank, cfg.objective, rng, generator)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if average is not None:
                average.update(model)
            for k, v in losses.items():
                value = float(v.detach())
                running[k] = 0.98 * running.get(k, value) + 0.02 * value
            progress.update(" ".join(f"{k}={v:.3f}" for k, v in running.items()))
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                              "config": asdict(cfg)}
                if average is not None:
                    checkpoint["ema"] = average.state
                torch.save(checkpoint, ckpt_path)
                log(f"step {step + 1}: " + " ".join(f"{k}={v:.4f}" for k, v in running.items()))
        progress.close()
        if average is not None:
            average.copy_to(model)
    finally:
        model.min_padded_size = min_padded_size
    model.eval()
    return model


def export(model: SEEM, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the weights as safetensors (fp16 by default: half the size; inference runs in fp32)."""
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    return save_safetensors(state, path)


def new_model(config, seed: int) -> SEEM:
    """Random SEEM from a config, initialised deterministically from ``seed``."""
    torch.manual_seed(seed)
    model = build_seem(config)
    init_from_scratch(model)
    return model
