"""``napari-seem segment``: the batch CLI over :func:`napari_seem.batch.segment_batch`.

Exit codes: 0 all items done (or skipped), 1 some items failed, 2 bad arguments / outputs exist.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..engine.image import DEFAULT_MAX_SIDE, MAX_SCALE
from ..engine.propagate import DIRECTIONS
from ..engine.tiles import DEFAULT_OVERLAP
from .spec import LABEL_FORMATS, ModelSpec, PromptSpec, RunOptions, vocabulary_arg

#: the model without --model or a session: the official Focal-T v1 checkpoint when it is on this
#: machine, else the shipped synthetic-microscopy model (see napari_seem.model.default_model_name)
DEFAULT_MODEL = "auto"


def _normalize(value: str) -> str | tuple[float, float]:
    if value in ("auto", "percentile", "none"):
        return value
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use auto, percentile, none or LOW,HIGH", param_hint="--normalize")
    if not high > low:
        raise click.BadParameter(f"{value!r}: HIGH must be greater than LOW", param_hint="--normalize")
    return low, high


def _point(value: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: a point is ROW,COL (pixels of the start frame)", param_hint="--seed-point")
    return row, col


def _mask(path: str, label: int | None, what: str, option: str) -> np.ndarray:
    from .io import read_image

    labels = np.asarray(read_image(path))
    if labels.ndim != 2:
        raise click.BadParameter(f"{path}: a mask must be a 2D label image, got shape {labels.shape}", param_hint=option)
    if label is not None:
        if not (labels == label).any():
            raise click.BadParameter(f"{path}: label {label} does not occur in the {what}", param_hint=option)
        return labels == label
    ids = np.unique(labels[labels != 0])
    if len(ids) > 1:
        raise click.BadParameter(f"{path} holds {len(ids)} objects; choose the example with --exemplar-label",
                                 param_hint=option)
    return labels != 0


def max_step_arg(value: str) -> float | str | None:
    """``--max-step``: a distance in pixels (>= 0), ``auto`` or ``off`` (None)."""
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return None if text == "off" else "auto"
    try:
        step = float(text)
    except ValueError:
        step = -1.0
    if not step >= 0:
        raise click.BadParameter(f"expected a distance in pixels >= 0, auto or off, got {value!r}", param_hint="--max-step")
    return step


def _model_name(name: str) -> str:
    """``auto`` resolved here, on the client, so that batch.json names the model that ran."""
    from ..model import default_model_name, shipped_models

    if name != DEFAULT_MODEL:
        return name
    resolved = default_model_name()
    if resolved in shipped_models():
        click.echo(f"no official SEEM checkpoint on this machine: using the shipped preview model {resolved!r} "
                   "(synthetic microscopy only; see napari_seem/weights/MODEL_CARD.md)", err=True)
    return resolved


def _pixels_or_word(value: str, words: dict[str, int | str | None], option: str) -> int | str | None:
    """A size option: pixels (>= 32) or one of ``words`` (given as the value it stands for)."""
    text = str(value).strip().lower()
    if text in words:
        return words[text]
    if not text.isdigit() or int(text) < 32:
        raise click.BadParameter(f"expected pixels >= 32, {' or '.join(words)}, got {value!r}", param_hint=option)
    return int(text)


def short_side_arg(value: str) -> int | str | None:
    """``--short-side``: pixels (>= 32), ``auto`` (the model's own) or ``native`` (None: the image's size)."""
    return _pixels_or_word(value, {"auto": "auto", "native": None}, "--short-side")


def tile_arg(value: str) -> int | str | None:
    """``--tile``: pixels (>= 32), ``auto`` (the model's working size) or ``off`` (None)."""
    return _pixels_or_word(value, {"auto": "auto", "off": None}, "--tile")


def build_prompt(text, vocabulary, exemplar_image, exemplar_mask, exemplar_label, min_similarity, seed_labels,
                 seed_points, start_frame, direction, stop_iou, min_score, session, channel,
                 max_step="auto", similarity="class") -> tuple[PromptSpec, str | None]:
    """The :class:`PromptSpec` from the CLI options (exactly one prompt kind), and a session's model."""
    kinds = {"--text": text is not None, "--exemplar-image": exemplar_image is not None,
             "--seed-labels/--seed-point": seed_labels is not None or bool(seed_points),
             "--session": session is not None}
    chosen = [k for k, on in kinds.items() if on]
    if len(chosen) > 1:
        raise click.UsageError(f"give one prompt, not {' and '.join(chosen)}")
    names = vocabulary_arg(vocabulary)
    if vocabulary is not None and not names:
        raise click.BadParameter("the vocabulary is empty", param_hint="--vocabulary")
    if not chosen and names is None:
        raise click.UsageError("no prompt: give --text, --vocabulary, --exemplar-image/--exemplar-mask, "
                               "--seed-labels or --seed-point (propagation), or --session")
    if session is not None:
        from .session import prompt_from_session

        return prompt_from_session(session)
    if text is not None:
        return PromptSpec("text", text=text, vocabulary=names), None
    if exemplar_image is not None:
        if exemplar_mask is None:
            raise click.UsageError("--exemplar-image needs --exemplar-mask (a label image marking the example)")
        from .io import read_image

        image = read_image(exemplar_image, channel=channel)
        mask = _mask(exemplar_mask, exemplar_label, "exemplar mask", "--exemplar-mask")
        return PromptSpec("exemplar", exemplar_image=image, exemplar_mask=mask, min_similarity=min_similarity,
                          similarity=similarity, vocabulary=names), None
    if exemplar_mask is not None:
        raise click.UsageError("--exemplar-mask needs --exemplar-image")
    if seed_labels is not None or seed_points:
        if seed_labels is not None and seed_points:
            raise click.UsageError("give seeds as --seed-labels or as --seed-point, not both")
        from .io import read_image

        labels = None if seed_labels is None else np.asarray(read_image(seed_labels))
        points = None if not seed_points else np.asarray([_point(p) for p in seed_points])
        return PromptSpec("propagate", seed_labels=labels, seed_points=points, start_frame=start_frame,
                          direction=direction, stop_iou=stop_iou, min_score=min_score, max_step=max_step,
                          vocabulary=names), None
    return PromptSpec("vocabulary", vocabulary=names), None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder (created).")
@click.option("--text", help="Text prompt: every object of this class (e.g. 'nucleus').")
@click.option("--vocabulary", help="Class names, comma-separated or a text file (one per line). Alone: automatic "
              "segmentation with these classes; with another prompt: the names objects get.")
@click.option("--exemplar-image", type=click.Path(exists=True, dir_okay=True), help="Reference image with an example object.")
@click.option("--exemplar-mask", type=click.Path(exists=True, dir_okay=True), help="Label image marking the example on the reference image.")
@click.option("--exemplar-label", type=int, help="Label id of the example in --exemplar-mask (default: all non-zero).")
@click.option("--min-similarity", type=click.FloatRange(0, 1), default=0.8, help="Exemplar search threshold (cosine).")
@click.option("--similarity", type=click.Choice(["class", "embedding"]), default="class", show_default=True,
              help="Exemplar search: compare what the model names the objects (class) or their raw embeddings.")
@click.option("--seed-labels", type=click.Path(exists=True, dir_okay=True), help="Propagation: label image of the start frame (one object per id).")
@click.option("--seed-point", "seed_points", multiple=True, metavar="ROW,COL", help="Propagation: a click on the start frame, one object each (repeatable).")
@click.option("--start-frame", type=click.IntRange(min=0), default=0, help="Propagation: frame the seeds are on.")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="forward", help="Propagation direction.")
@click.option("--stop-iou", type=click.FloatRange(0, 1), default=0.1, help="Propagation: stop an object below this IoU with its last mask.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.3, help="Propagation: stop an object below this mask score.")
@click.option("--max-step", default="auto", metavar="PIXELS|auto|off",
              help="Propagation: cut off mask parts farther than this from the object's last mask "
                   "(auto: 30 % of its radius).")
@click.option("--session", type=click.Path(exists=True, file_okay=False), help="Re-run the text / vocabulary prompt of a saved napari-seem session (.seem folder).")
@click.option("--model", default=None, help="Preset name (seem_focalt_v1, ...), shipped model (seem_tiny_synthetic) or checkpoint file "
                   "[default: the session's model, else seem_focalt_v1 when it is on this machine, else the "
                   "shipped seem_tiny_synthetic].")
@click.option("--config", default=None, help="Preset name or official SEEM YAML for a checkpoint file (default: guessed).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto")
@click.option("--short-side", default="auto", metavar="PIXELS|auto|native",
              help="Model-side short image side: pixels, the model's own (auto: 512 for the official "
                   "checkpoints, the image's size for the shipped model) or the image's own size (native).")
@click.option("--scale", type=click.FloatRange(min=0, max=MAX_SCALE, min_open=True), default=None, metavar="FACTOR",
              help="Resize every image by this factor instead of --short-side: below 1 for objects larger than those "
                   "the model knows (the shipped model: nuclei about 10-34 px across), above 1 for smaller ones.")
@click.option("--tile", default="off", metavar="PIXELS|auto|off",
              help="Text / vocabulary prompts tile by tile, each tile at about its own scale (large fields with small "
                   "objects): tile side, auto (the model's working size: 512, 256 for the shipped model) or off.")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True,
              help="Pixels shared by neighbouring tiles (at least the largest object's diameter).")
@click.option("--max-side", type=click.IntRange(min=32), default=DEFAULT_MAX_SIDE, help="Model-side long image side limit.")
@click.option("--seed", type=int, default=0, help="Seed of SEEM's random draws (same seed, same labels).")
@click.option("--axes", help="Axis letters of every input (t, z, c, y, x), e.g. tyx or tcyx [default: from metadata].")
@click.option("--channel", type=int, help="Channel to segment for multichannel inputs.")
@click.option("--normalize", default="auto", help="Intensity: auto, percentile, none or LOW,HIGH.")
@click.option("--recursive", is_flag=True, help="Look for images in sub-folders too.")
@click.option("--format", "label_format", type=click.Choice(LABEL_FORMATS), default="tif", help="Label image format.")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=16, help="Frames per task for stacks (per-frame prompts).")
@click.option("--scheduler", help="Address of a running dask scheduler (default: a local cluster).")
@click.option("--workers", type=click.IntRange(min=1), help="Local cluster worker processes [default: one per core / GPU, memory permitting].")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads per worker [default: cores / workers].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--resume", is_flag=True, help="Skip items whose outputs are complete.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segment(inputs, output, text, vocabulary, exemplar_image, exemplar_mask, exemplar_label, min_similarity,
            similarity, seed_labels, seed_points, start_frame, direction, stop_iou, min_score, max_step, session, model, config, device,
            precision, short_side, scale, tile, tile_overlap, max_side, seed, axes, channel, normalize, recursive, label_format, chunk_frames,
            scheduler, workers, threads, overwrite, resume, quiet) -> None:
    """Segment images, z-stacks and time-lapses in INPUTS (files or folders) with one prompt.

    Writes <name>_labels.tif (or .zarr) and <name>_objects.csv per input, objects.csv for all,
    and batch.json (settings and summary) to the output folder.
    """
    from .io import InputError
    from .run import OutputExistsError, segment_batch

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    if scheduler is not None and (workers is not None or threads is not None):
        raise click.UsageError("--workers/--threads size a local cluster; with --scheduler the cluster is yours")
    try:
        prompt, session_model = build_prompt(text, vocabulary, exemplar_image, exemplar_mask, exemplar_label,
                                             min_similarity, seed_labels, seed_points, start_frame, direction,
                                             stop_iou, min_score, session, channel, max_step_arg(max_step),
                                             similarity)
        if session is not None and scale is None and short_side == "auto":
            from .session import session_scale

            scale = session_scale(session)  # the scale the session's objects were made at
        spec = ModelSpec(_model_name(model or session_model or DEFAULT_MODEL), config=config, device=device, precision=precision,
                         short_side=short_side_arg(short_side), max_side=max_side, scale=scale, seed=seed)
        if scale is not None and short_side != "auto":
            raise click.UsageError("--scale and --short-side exclude each other")
        if tile_arg(tile) is not None and prompt.kind not in ("text", "vocabulary"):
            raise click.UsageError("--tile applies to --text and --vocabulary prompts")
        if isinstance(tile_arg(tile), int) and tile_overlap > tile_arg(tile) // 2:
            raise click.UsageError(f"--tile-overlap {tile_overlap} is more than half the tile ({tile_arg(tile) // 2} px)")
        options = RunOptions(normalize=_normalize(normalize), channel=channel, label_format=label_format,
                             chunk_frames=chunk_frames, torch_threads=threads, tile=tile_arg(tile),
                             tile_overlap=tile_overlap)
        summary = segment_batch(list(inputs), prompt, spec, output, scheduler=scheduler, n_workers=workers,
                                threads_per_worker=threads, overwrite=overwrite, resume=resume, recursive=recursive,
                                axes=axes, options=options, progress=not quiet)
    except (InputError, OutputExistsError, ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(str(summary))
    if not summary.ok:
        raise SystemExit(1)
