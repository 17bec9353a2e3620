"""``python -m napari_seem.train``: train the shipped tiny SEEM, or fine-tune a checkpoint on user data.

Examples::

    python -m napari_seem.train --reproduce --out runs/tiny          # reproduce seem_tiny_synthetic
    python -m napari_seem.train --refiner --fine-tune runs/mine/model.safetensors --out runs/mine
        # an outline refiner for a fine-tuned model, trained on its own masks of nuclei
    python -m napari_seem.train --refiner --refiner-classes cell --refiner-window 96 \\
        --fine-tune runs/mine/model.safetensors --out runs/mine     # ... and one for its cells
    python -m napari_seem.train --fine-tune seem_tiny_synthetic --data my_folder --steps 500 \\
        --classes nucleus --out runs/mine
    python -m napari_seem.train --fine-tune seem_tiny_synthetic --data my_folder --steps 500 \\
        --classes nucleus --objective mask_loss_stride=2 text_templates=sampled --out runs/fast
        # 1.3-1.5x faster steps: half-resolution mask losses, one prompt template per class
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import fields
from pathlib import Path

import yaml

from ..model import load_config
from ..model.config import RUN_SECTION
from ..engine.outline_refiner import WINDOW, check_window, refiner_file, save_refiner
from .checkpoints import load_checkpoint
from .data import VOCABULARY, FolderDataset
from .loop import TrainConfig, export, new_model, train
from .objective import ObjectiveConfig
from .refiner import (
    CELL_REFINER_IMAGES,
    CELL_REFINER_SEQUENCES,
    CELL_REFINER_STEPS,
    CELL_REFINER_WINDOW,
    REFINER_IMAGES,
    REFINER_LR,
    REFINER_SEQUENCES,
    REFINER_STEPS,
    refiner_samples,
    train_refiner,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "weights" / "seem_tiny_synthetic.yaml"


def objective_config(overrides: list[str]) -> ObjectiveConfig:
    """``ObjectiveConfig`` with ``FIELD=VALUE`` overrides (values parsed as YAML scalars)."""
    cfg = ObjectiveConfig()
    known = {f.name: f for f in fields(ObjectiveConfig)}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"--objective {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(known)}")
        parsed = yaml.safe_load(value)
        current = getattr(cfg, name)
        setattr(cfg, name, tuple(parsed) if isinstance(current, tuple) else type(current)(parsed))
    return cfg


def write_run_settings(config_path: Path, classes: list[str]) -> None:
    """Record in the run's ``config.yaml`` how its model runs (``from_pretrained`` and the
    ``Segmenter`` read it): its class names, and the image's own size as model-side resolution
    (training never resizes an image)."""
    loaded = yaml.safe_load(config_path.read_text()) or {}
    section = {RUN_SECTION: {"VOCABULARY": list(classes), "SHORT_SIDE": None}}
    if RUN_SECTION in loaded:
        loaded.update(section)
        config_path.write_text(yaml.safe_dump(loaded, sort_keys=False))
    else:  # keep the copied file's comments
        with config_path.open("a") as handle:
            if not config_path.read_text().endswith("\n"):
                handle.write("\n")
            handle.write("# how napari-seem runs this model (written by python -m napari_seem.train)\n")
            handle.write(yaml.safe_dump(section, sort_keys=False))


def recipe(out: str) -> list[list[str]]:
    """The phases that produce ``seem_tiny_synthetic`` (see its model card), as argument lists."""
    out_dir, config = Path(out), str(DEFAULT_CONFIG)
    fast = ["mask_loss_stride=2", "text_templates=sampled"]  # 1.3-1.5x faster steps, see the model card
    later = ["max_prompted_objects=8", "max_rounds=3"]
    phases = [
        ["--out", str(out_dir / "phase1"), "--steps", "3500", "--seed", "0", "--objective", *fast],
        ["--fine-tune", str(out_dir / "phase1" / "model.safetensors"), "--config", config, "--steps", "1900",
         "--lr", "3e-4", "--seed", "1", "--image-sizes", "160", "192", "224", "256", "--objective", *fast,
         "--out", str(out_dir / "phase2")],
        ["--fine-tune", str(out_dir / "phase2" / "model.safetensors"), "--config", config, "--steps", "4500",
         "--lr", "3e-4", "--seed", "2", "--image-sizes", "192", "224", "256",
         "--objective", *later, *fast, "--out", str(out_dir / "phase3")],
        ["--fine-tune", str(out_dir / "phase3" / "model.safetensors"), "--config", config, "--steps", "3000",
         "--lr", "1e-4", "--seed", "6", "--image-sizes", "192", "224", "256", "--ema", "0.998",
         "--objective", *later, "spatial_ignore_separate=true", *fast, "--out", str(out_dir / "phase4")],
        ["--fine-tune", str(out_dir / "phase4" / "model.safetensors"), "--config", config, "--steps", "3000",
         "--lr", "1e-4", "--seed", "7", "--image-sizes", "192", "224", "256", "--ema", "0.998",
         "--objective", *later, "spatial_ignore_separate=true", *fast, "--out", str(out_dir / "phase5")],
        ["--fine-tune", str(out_dir / "phase5" / "model.safetensors"), "--config", config, "--steps", "2000",
         "--lr", "1e-4", "--seed", "8", "--image-sizes", "192", "224", "256", "--ema", "0.998",
         "--objective", *later, "spatial_ignore_separate=true", *fast, "boundary_emphasis=4", "boundary_width=1",
         "--out", str(out_dir / "phase6")],
        # the outline refiner, on phase 6's own masks of nuclei
        ["--refiner", "--fine-tune", str(out_dir / "phase6" / "model.safetensors"), "--config", config,
         "--steps", str(REFINER_STEPS), "--refiner-images", str(REFINER_IMAGES),
         "--refiner-sequences", str(REFINER_SEQUENCES), "--seed", "9",
         "--out", str(out_dir / "refiner")],
        # the outline refiner of cells, on phase 6's own masks of cells, in a larger window
        ["--refiner", "--refiner-classes", "cell", "--refiner-window", str(CELL_REFINER_WINDOW),
         "--fine-tune", str(out_dir / "phase6" / "model.safetensors"), "--config", config,
         "--steps", str(CELL_REFINER_STEPS), "--refiner-images", str(CELL_REFINER_IMAGES),
         "--refiner-sequences", str(CELL_REFINER_SEQUENCES), "--seed", "9",
         "--out", str(out_dir / "refiner")],
    ]
    # Two threads: the shipped weights were made so (the result depends on the thread count)
    return [phase + ["--threads", "2"] for phase in phases]


def train_refiner_command(args: argparse.Namespace, out: Path) -> Path:
    """``--refiner``: windows from the model's own masks, then the refiner; writes
    ``out/refiner.safetensors`` (a refiner of nuclei) or ``out/refiner_<classes>.safetensors``."""
    if args.data:
        raise SystemExit("--refiner trains on synthetic images only (the windows need the model's masks of objects "
                         "with exact outlines); leave out --data")
    unknown = [c for c in args.refiner_classes if c not in VOCABULARY]
    if unknown:
        raise SystemExit(f"--refiner-classes {' '.join(unknown)}: the synthetic images hold only "
                         f"{', '.join(VOCABULARY)}")
    try:  # before the windows are made, which takes minutes
        check_window(args.refiner_window)
    except ValueError as error:
        raise SystemExit(f"--refiner-window {args.refiner_window}: {error}") from error
    checkpoint = args.fine_tune or "seem_tiny_synthetic"
    print(f"outline refiner for {checkpoint}: windows from {args.refiner_images} synthetic images "
          f"and {args.refiner_sequences} time-lapses, {args.refiner_window} px windows")
    inputs, targets = refiner_samples(checkpoint, args.config, args.refiner_images, args.seed,
                                      vocabulary=tuple(args.classes), classes=tuple(args.refiner_classes),
                                      sequences=args.refiner_sequences, workers=args.workers,
                                      window=args.refiner_window)
    print(f"{len(inputs)} windows")
    refiner = train_refiner(inputs, targets, steps=args.steps or REFINER_STEPS, seed=args.seed,
                            lr=args.lr or REFINER_LR, classes=tuple(args.refiner_classes), threads=args.threads)
    path = save_refiner(refiner, out / refiner_file(refiner.classes))
    print(f"refiner: {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m napari_seem.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/seem_tiny_synthetic", help="output folder (checkpoints, weights, config)")
    p.add_argument("--config", default=None, help="model config (preset name or YAML); default: the tiny config")
    p.add_argument("--fine-tune", dest="fine_tune", default=None, metavar="CHECKPOINT",
                   help="start from these weights: a shipped model name, an official preset or a checkpoint file")
    p.add_argument("--data", default=None, metavar="FOLDER", help="user data: FOLDER/images + FOLDER/labels")
    p.add_argument("--classes", nargs="+", default=list(VOCABULARY), help="class names (vocabulary)")
    p.add_argument("--class-name", default=None, help="class of every object of --data without classes.csv")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {TrainConfig.steps}; with --refiner {REFINER_STEPS})")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 4e-4, fine-tuning 1e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--device", default=TrainConfig.device,
                   help="cpu (default, deterministic), cuda, mps or auto (CUDA, then MPS, then CPU)")
    p.add_argument("--image-sizes", type=int, nargs="+", default=list(TrainConfig.image_sizes),
                   help="synthetic image sizes in pixels (one drawn per step)")
    p.add_argument("--zoom", type=float, nargs=2, default=list(TrainConfig.zoom), metavar=("MIN", "MAX"),
                   help="upsample each synthetic image by a factor drawn from [MIN, MAX] (objects that many "
                        "times larger; default 1 1)")
    p.add_argument("--z-slices", type=float, default=TrainConfig.z_slices, metavar="FRACTION",
                   help="share of the synthetic samples that are one slice of a z-stack (default 0)")
    p.add_argument("--crop", type=int, default=256, help="crop size of user images")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) "
                        "and export it instead of the last weights")
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint.pt in --out")
    p.add_argument("--objective", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="task mix / loss weight overrides, e.g. max_prompted_objects=8 spatial_mask_weight=10; "
                        "mask_loss_stride=2 text_templates=sampled for 1.3-1.5x faster steps "
                        "(fields of napari_seem.train.ObjectiveConfig)")
    p.add_argument("--refiner", action="store_true",
                   help="train an outline refiner for the model of --fine-tune (default: seem_tiny_synthetic) "
                        "on that model's own masks of synthetic images, into --out/refiner.safetensors "
                        "(of nuclei; of other classes --out/refiner_<classes>.safetensors)")
    p.add_argument("--refiner-images", type=int, default=REFINER_IMAGES,
                   help=f"with --refiner: synthetic images whose objects give the training windows "
                        f"(default {REFINER_IMAGES})")
    p.add_argument("--refiner-sequences", type=int, default=REFINER_SEQUENCES,
                   help=f"with --refiner: synthetic time-lapses whose propagated objects give training windows "
                        f"too (default {REFINER_SEQUENCES})")
    p.add_argument("--refiner-classes", nargs="+", default=["nucleus"],
                   help="with --refiner: the classes it refines (default: nucleus)")
    p.add_argument("--refiner-window", type=int, default=WINDOW,
                   help=f"with --refiner: side of the window it reads and draws, in pixels, a multiple of 8 "
                        f"(default {WINDOW}; the shipped refiner of cells: {CELL_REFINER_WINDOW})")
    p.add_argument("--workers", type=int, default=2,
                   help="with --refiner: processes that make the training windows (one thread each)")
    p.add_argument("--reproduce", action="store_true",
                   help="run every phase that produced the shipped seem_tiny_synthetic weights, in --out/phaseN, "
                        "then its outline refiners (nuclei, cells), in --out/refiner "
                        "(the last phase's model.safetensors equals the shipped file on the same processor; "
                        "see the model card)")
    args = p.parse_args(argv)
    if args.reproduce:
        for phase in recipe(args.out):
            main(phase)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.refiner:
        train_refiner_command(args, out)
        return
    if args.fine_tune:
        model, config = load_checkpoint(args.fine_tune, args.config)
        lr = args.lr or 1e-4
    else:
        config = args.config or str(DEFAULT_CONFIG)
        model = new_model(config, args.seed)
        lr = args.lr or TrainConfig.lr
    cfg = TrainConfig(steps=args.steps or TrainConfig.steps, lr=lr, seed=args.seed, threads=args.threads,
                      device=args.device,
                      checkpoint_every=args.checkpoint_every, ema=args.ema, vocabulary=tuple(args.classes),
                      image_sizes=tuple(args.image_sizes), zoom=tuple(args.zoom), z_slices=args.z_slices,
                      warmup=min(TrainConfig.warmup, max(1, (args.steps or TrainConfig.steps) // 10)),
                      objective=objective_config(args.objective))
    data = FolderDataset(args.data, args.classes, args.class_name, crop=args.crop) if args.data else None
    train(model, cfg, out, data=data, resume=not args.no_resume)
    weights = export(model, out / "model.safetensors")
    config_out = out / "config.yaml"
    if isinstance(config, (str, Path)) and Path(config).is_file():
        shutil.copyfile(config, config_out)
    else:
        config_out.write_text(yaml.safe_dump(load_config(config)))
    write_run_settings(config_out, args.classes)
    print(f"weights: {weights}\nconfig: {config_out}")


if __name__ == "__main__":
    main()
