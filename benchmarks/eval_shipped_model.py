"""Quality of a model against issue 6's acceptance targets, on held-out synthetic data.

    python benchmarks/eval_shipped_model.py [--model seem_tiny_synthetic | FILE --config YAML] [--refiner auto|none|FILE...] [--images 4] [--sequences 1] [--raw-masks] [--seed 5000] [--shape 250x250] [--pad-mode zeros] [--min-padded-size 256]

Prints every metric beside its target and exits 1 when any target is missed. The shipped model
with its refiners meets them all on the evaluation set (``--images 60 --sequences 30 --seed 2000``;
see its model card); ``tests/train/test_shipped_quality.py`` asserts the same thresholds on a
small held-out set.
"""
from __future__ import annotations

import argparse
import sys

TARGETS = [  # (label, value getter, comparison, threshold)
    ("single click at centre, nuclei: mean IoU", lambda r: r.click_iou.get("nucleus", float("nan")), ">=", 0.85),
    ("single click at centre, cells: mean IoU", lambda r: r.click_iou.get("cell", float("nan")), ">=", 0.75),
    ("clicks to 85% IoU (NoC@85, max 20)", lambda r: r.noc85, "<=", 3.0),
    ("text 'nucleus': mean IoU over true nuclei", lambda r: r.text_nucleus_iou, ">=", 0.75),
    ("automatic mode: correct class names", lambda r: r.automatic_class_accuracy, ">=", 0.90),
    ("propagation, 20 frames: mean IoU", lambda r: r.propagation_iou, ">=", 0.80),
    ("propagation: identity kept", lambda r: r.propagation_identity, ">=", 1.0),
]


def model_refiner(model: str, choices: list[str]):
    """The outline refiners to run ``model`` with: ``auto`` (its own), ``none`` or files."""
    from napari_seem.engine.outline_refiner import load_refiner
    from napari_seem.weights import model_refiner as own_refiner

    if choices == ["none"]:
        return None
    return own_refiner(model) if choices == ["auto"] else [load_refiner(c) for c in choices]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="seem_tiny_synthetic")
    parser.add_argument("--config", default=None,
                        help="the model's config, for a weights file (a training run's config.yaml, a preset name)")
    parser.add_argument("--refiner", nargs="+", default=["auto"],
                        help="outline refiners: auto (the model's own: a shipped model's, or the refiner*.safetensors "
                             "beside a weights file), none, or files")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=1)
    parser.add_argument("--raw-masks", action="store_true",
                        help="SEEM's raw masks (Segmenter(connected_objects=False)) instead of the engine's default")
    parser.add_argument("--short-side", type=int, default=None,
                        help="model-side resolution of the short side (default: the image's own size)")
    parser.add_argument("--seed", type=int, default=None, help="first seed of the held-out set (default: EVAL_SEED)")
    parser.add_argument("--shape", default="256x256",
                        help="HxW of the images and time-lapses (the acceptance targets are set at 256x256)")
    parser.add_argument("--pad-mode", choices=("zeros", "replicate"), default=None,
                        help="pad images to the size divisibility so instead of as the model's config says")
    parser.add_argument("--zstacks", type=int, default=0, metavar="N",
                        help="also measure clicks and propagation on N synthetic z-stacks (a diagnostic, no target)")
    parser.add_argument("--min-padded-size", type=int, default=None,
                        help="pad images to at least this size instead of as the model's config says")
    args = parser.parse_args()

    from napari_seem.model import from_pretrained
    from napari_seem.train.evaluate import EVAL_SEED, evaluate

    model = from_pretrained(args.model, config=args.config)
    refiner = model_refiner(args.model, args.refiner)
    print(f"outline refiners: {'none' if not refiner else '; '.join(', '.join(r.classes) for r in refiner)}")
    if args.pad_mode is not None:
        model.pad_mode = args.pad_mode
    if args.min_padded_size is not None:
        model.min_padded_size = args.min_padded_size
    height, width = (int(v) for v in args.shape.lower().split("x"))
    report = evaluate(model, n_images=args.images, n_sequences=args.sequences,
                      seed=EVAL_SEED if args.seed is None else args.seed, corrected_propagation=True,
                      shape=(height, width), connected_objects=not args.raw_masks, short_side=args.short_side,
                      refiner=refiner)
    ok = True
    print(f"{'metric':46s} {'measured':>9s}  target")
    for label, get, op, threshold in TARGETS:
        value = float(get(report))
        passed = value >= threshold if op == ">=" else value <= threshold
        ok &= passed
        print(f"{label:46s} {value:9.3f}  {op} {threshold:<5g} {'ok' if passed else 'MISSED'}")
    print(f"diagnostic: propagation after correcting the first frame to 85% IoU: mean IoU "
          f"{report.propagation_corrected_iou:.3f}, identity kept {report.propagation_corrected_identity:.3f}")
    print(f"diagnostic: text 'cell': mean IoU over true cells {report.text_cell_iou:.3f}; referring-image search "
          "from the largest object of the previous image: "
          + ", ".join(f"{k} {v:.3f}" for k, v in report.referring_iou.items()))
    print("diagnostic: a box 3 px looser than each object: "
          + ", ".join(f"{k} {v:.3f}" for k, v in report.box_iou.items()))
    by_class = ", ".join(f"{k} {v:.2f}" for k, v in report.noc85_by_class.items())
    print(f"diagnostic: NoC@85 per class: {by_class}")
    print(f"objects evaluated: {report.counts}; automatic matched: {report.automatic_matched}")
    if args.zstacks:
        from napari_seem.train.evaluate import evaluate_zstacks

        z = evaluate_zstacks(model, n_stacks=args.zstacks, connected_objects=not args.raw_masks,
                             short_side=args.short_side, refiner=refiner)
        print("diagnostic: z-stacks, click on the middle slice: "
              + ", ".join(f"{k} {v:.3f}" for k, v in z.click_iou.items())
              + "; propagation through the stack: "
              + ", ".join(f"{k} {v:.3f} ({z.identity_kept[k][0]} of {z.identity_kept[k][1]} kept)"
                          for k, v in z.propagation_iou.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
