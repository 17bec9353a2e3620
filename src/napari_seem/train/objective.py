"""One SEEM training step on one image: panoptic, interactive and grounding tasks in one decoder pass.

As in SEEM's ``forward_seg``, the object queries, the grounding queries (a class-name phrase) and
the spatial queries (visual prompts of a few objects, with the previous round's masks as memory)
run together in a single decoder pass; every decoder stage is supervised (deep supervision).

Interactive rounds are simulated like SEEM's ``prepare_next_spaital_mask``: 0..``max_rounds``
rounds run without gradients, each adding a corrective click at the largest error region and
passing the selected masks on as memory; the last round is trained. A share of the steps
simulates propagation instead: the prompt and the memory are the object's mask moved and
deformed (the previous frame's result).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..engine.connected import keep_prompted_regions
from ..engine.prompts import ObjectPrompt, stack_prompts
from ..model.language.encoder import clean_class_name
from ..model.language.templates import PROMPT_TEMPLATES
from .clicks import (
    ClickState,
    centre_click,
    next_click,
    perturbed_mask,
    random_click,
    random_stroke,
)
from .data import Sample
from .losses import (
    boundary_band,
    class_loss,
    downsample_targets,
    match_queries,
    multiply_weights,
    point_mask_loss,
    prepare_masks,
    prepared_mask_loss,
    upsample,
)


@dataclass
class ObjectiveConfig:
    """Task mix and loss weights (the official SEEM weights where they apply)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    spatial_mask_weight: float = 5.0
    spatial_dice_weight: float = 5.0
    spatial_select_weight: float = 1.0
    spatial_class_weight: float = 1.0
    grounding_mask_weight: float = 2.0
    grounding_dice_weight: float = 2.0
    grounding_class_weight: float = 0.5
    max_prompted_objects: int = 5
    max_rounds: int = 2
    propagation_share: float = 0.3
    stroke_share: float = 0.25
    centre_click_share: float = 0.5
    min_prompt_area: int = 12
    #: sampling weight of each class for visual prompts (vocabulary order)
    prompt_class_weights: tuple[float, ...] = (1.0, 1.0, 0.15)
    #: the visual-prompt mask loss ignores the pixels of other objects that do not touch the
    #: prompted one (the engine keeps only the mask regions connected to the prompt, see
    #: ``napari_seem.engine.connected``), so capacity goes to the prompted object's outline
    spatial_ignore_separate: bool = False
    #: simulated corrective clicks go to the largest error of the mask the engine shows (its
    #: regions connected to the positive prompt), as a user's would; otherwise to the largest
    #: error of SEEM's raw mask, which may be a separate look-alike that the engine already drops
    #: (and that ``spatial_ignore_separate`` leaves out of the loss: a negative click there
    #: teaches the model that negative clicks change nothing)
    clicks_on_kept_regions: bool = False
    #: share of the trained corrective rounds that get no memory (previous mask): the clicks alone
    #: must then carry the correction, so the model cannot get by on copying its last mask
    memory_dropout: float = 0.0
    #: mask losses at this many points per mask, sampled with importance to the uncertain ones
    #: as in SEEM (``point_mask_loss``; a 1.4-1.6x faster step at 256 px); 0: on full masks
    #: (see ``mask_loss_stride``), as in the shipped model's recipe: the whole recipe with 4096
    #: points gave better propagation but worse cells and corrections (see its model card)
    mask_points: int = 0
    #: full-mask losses at 1/stride of the image resolution: 1 every pixel, 2 half (logits
    #: upsampled 2x against 2 x 2 area-averaged targets; a 1.36x faster step at 256 px, see
    #: ``benchmarks/bench_training.py``)
    mask_loss_stride: int = 1
    #: the vocabulary's class embeddings in training: "mean" of every prompt template (as at
    #: inference) or "sampled", one random template per class and step, as SEEM's training does
    #: (``get_text_embeddings`` outside evaluation; a 1.1-1.2x faster step)
    text_templates: str = "mean"
    #: the visual-prompt BCE counts the pixels that the memory (the previous round's mask, or the
    #: previous frame's in propagation) gets wrong ``1 + error_emphasis`` times: a corrective
    #: round is judged on what it corrects, not on the part of the mask it can copy (dice and
    #: rounds without memory are unchanged; 0 = off)
    error_emphasis: float = 0.0
    #: every mask BCE (panoptic, grounding, visual prompts) counts the pixels within
    #: ``boundary_width`` px of the true outline ``1 + boundary_emphasis`` times: small nuclei need
    #: their outline right to a pixel for 85 % IoU (dice unchanged; 0 = off)
    boundary_emphasis: float = 0.0
    boundary_width: int = 2


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _normalize(x: Tensor) -> Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


class TextBank:
    """The vocabulary's template prompts, tokenised once, encoded with gradients at every step.

    ``class_embeddings`` equals ``LanguageEncoder.class_embeddings(names + ["background"])`` (what
    the engine uses at inference) but keeps the graph, so the text tower trains with the rest.
    """

    def __init__(self, lang_encoder: torch.nn.Module, names: tuple[str, ...]) -> None:
        self.names = (*names, "background")
        prompts = [t.format(clean_class_name(n)) for n in self.names for t in PROMPT_TEMPLATES]
        tokens = lang_encoder.tokenize(prompts)
        length = int(tokens["attention_mask"].sum(1).max())
        self.input_ids = tokens["input_ids"][:, :length]
        self.attention_mask = tokens["attention_mask"][:, :length]

    def class_embeddings(self, lang_encoder: torch.nn.Module, generator: torch.Generator | None = None) -> Tensor:
        """``[K + 1, D]`` normalised class embeddings (background last): the mean over every
        template, or with ``generator`` of one template per class drawn from it (SEEM's training)."""
        device = _device(lang_encoder)
        n_templates = len(PROMPT_TEMPLATES)
        if generator is not None:
            rows = torch.arange(len(self.names)) * n_templates + torch.randint(
                n_templates, (len(self.names),), generator=generator)
            _, end = lang_encoder.encode_tokens(self.input_ids[rows].to(device), self.attention_mask[rows].to(device))
            return _normalize(end)
        _, end = lang_encoder.encode_tokens(self.input_ids.to(device), self.attention_mask.to(device))
        mean = _normalize(end).view(len(self.names), n_templates, -1).mean(1)
        return mean / mean.norm(dim=-1, keepdim=True)


def _first_prompt(sample: Sample, index: int, cfg: ObjectiveConfig, rng: np.random.Generator) -> ClickState:
    state = ClickState()
    visible = sample.visible[index]
    if rng.random() < cfg.stroke_share:
        stroke = random_stroke(visible, rng)
        if stroke is not None:
            state.strokes.append(stroke)
            return state
    point = centre_click(visible) if rng.random() < cfg.centre_click_share else random_click(visible, rng)
    state.add_click(point, 1)
    return state


def choose_objects(sample: Sample, cfg: ObjectiveConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices of the objects that get a visual prompt this step (may be empty)."""
    area = sample.visible.reshape(len(sample), -1).sum(1) if len(sample) else np.zeros(0)
    weights = np.array([cfg.prompt_class_weights[c] if c < len(cfg.prompt_class_weights) else 1.0
                        for c in sample.classes]) * (area >= cfg.min_prompt_area)
    if weights.sum() == 0:
        return np.zeros(0, np.int64)
    n = min(int(rng.integers(1, cfg.max_prompted_objects + 1)), int((weights > 0).sum()))
    return rng.choice(len(sample), size=n, replace=False, p=weights / weights.sum())


def corrective_click(pred: np.ndarray, prompt: np.ndarray, target: np.ndarray,
                     cfg: ObjectiveConfig) -> tuple[tuple[int, int], int] | None:
    """The next simulated click ``((row, col), label)`` for a predicted mask ``[H, W]`` given its
    positive prompt ``[H, W]`` and the true mask (see ``ObjectiveConfig.clicks_on_kept_regions``)."""
    shown = keep_prompted_regions(pred, prompt) if cfg.clicks_on_kept_regions else pred
    return next_click(shown, target)


@dataclass
class SimulatedPrompts:
    """The visual prompts of the trained round: ``pos, neg [n, Hp, Wp]`` (padded image), the
    memory ``prev [1, n, Hp/4, Wp/4]`` logits (None: no memory) and, where there is memory, the
    mask it stands for ``memory_mask [n, H, W]`` bool (the image's size)."""

    pos: Tensor
    neg: Tensor
    prev: Tensor | None
    memory_mask: np.ndarray | None = None


def simulate_prompts(
    model, features, sample: Sample, chosen: np.ndarray, cfg: ObjectiveConfig,
    rng: np.random.Generator, generator: torch.Generator,
) -> SimulatedPrompts:
    """Visual prompts and memory of the trained round (see :class:`SimulatedPrompts`)."""
    shape = tuple(sample.rgb.shape[-2:])
    hp, wp = features.padded_size

    device = _device(model)

    def pad(masks: np.ndarray) -> Tensor:
        return torch.from_numpy(np.pad(masks, ((0, 0), (0, hp - shape[0]), (0, wp - shape[1])))).to(device)

    if rng.random() < cfg.propagation_share:
        moved = np.stack([perturbed_mask(sample.full[i], rng) for i in chosen])
        pos, neg = stack_prompts([ObjectPrompt(mask=m) for m in moved], shape, shape)
        amplitude = float(rng.uniform(2.0, 10.0))
        prev = amplitude * (2 * downsample_targets(torch.from_numpy(moved).to(device), (hp // 4, wp // 4)) - 1)
        return SimulatedPrompts(pad(pos), pad(neg), prev.view(1, len(chosen), hp // 4, wp // 4), moved)

    states = [_first_prompt(sample, i, cfg, rng) for i in chosen]
    prev = pred = None
    rounds = int(rng.integers(0, cfg.max_rounds + 1))
    with torch.no_grad():
        mask_features = features.mask_features.detach()
        levels = [m.detach() for m in features.multi_scale_features]
        for _ in range(rounds):
            pos, neg = stack_prompts([s.prompt() for s in states], shape, shape)
            out = model.predictor(levels, mask_features, pos_masks=pad(pos), neg_masks=pad(neg), prev_mask=prev,
                                  generator=generator, object_queries=False, return_aux=False)
            prev = out.selected_masks.detach()
            pred = (upsample(prev[0].float(), shape) > 0).cpu().numpy()
            for k, i in enumerate(chosen):
                click = corrective_click(pred[k], pos[k], sample.full[i], cfg)
                if click is not None:
                    states[k].add_click(*click)
    if prev is not None and cfg.memory_dropout > 0 and rng.random() < cfg.memory_dropout:
        prev = pred = None
    pos, neg = stack_prompts([s.prompt() for s in states], shape, shape)
    return SimulatedPrompts(pad(pos), pad(neg), prev, pred)


def _stages(out) -> list:
    return [*out.aux, out]


def _boundary_emphasis(targets: Tensor, cfg: ObjectiveConfig) -> Tensor | None:
    """``[N, H, W]`` BCE pixel factors for ``cfg.boundary_emphasis`` (None when it is off)."""
    if cfg.boundary_emphasis <= 0 or targets.shape[0] == 0:
        return None
    return 1 + cfg.boundary_emphasis * boundary_band(targets, cfg.boundary_width)


class StageTargets:
    """One task's mask targets for the mask losses of every decoder stage: prepared once at the
    loss's resolution (:func:`~napari_seem.train.losses.prepare_masks`), or kept at full
    resolution for SEEM's point-sampled losses (``cfg.mask_points``, new points every stage)."""

    def __init__(self, targets: Tensor, cfg: ObjectiveConfig, small_size: tuple[int, int],
                 weights: Tensor | None = None, emphasis: Tensor | None = None) -> None:
        self.points = cfg.mask_points
        if self.points > 0:
            self.full = (targets, weights, emphasis)
        else:
            padded = (4 * small_size[0], 4 * small_size[1])
            self.prepared = prepare_masks(targets, padded, weights, cfg.mask_loss_stride, emphasis)

    def loss(self, logits: Tensor, generator: torch.Generator | None, rows=None) -> tuple[Tensor, Tensor]:
        """BCE and dice of ``[n, h, w]`` logits against the targets' ``rows`` (all when None)."""
        if self.points > 0:
            targets, weights, emphasis = (x if x is None or rows is None else x[rows] for x in self.full)
            return point_mask_loss(logits, targets, self.points, generator, weights, emphasis)
        return prepared_mask_loss(logits, self.prepared if rows is None else self.prepared[rows])


def panoptic_losses(out, sample: Sample, cfg: ObjectiveConfig, small_size: tuple[int, int],
                    generator: torch.Generator | None = None) -> Tensor:
    """Object queries vs. the visible instances: matched class CE + BCE + dice, every stage."""
    device = out.masks.device
    targets = torch.from_numpy(sample.visible).to(device)
    classes = torch.from_numpy(sample.classes).to(device)
    if not len(sample):  # an image without objects (an empty crop, a z-slice between cells): all "no object"
        none = np.zeros(0, np.int64)
        return sum(cfg.class_weight * class_loss(stage.class_logits[0], none, classes, cfg.no_object_weight)
                   for stage in _stages(out))
    small = downsample_targets(targets, small_size)
    stage_targets = StageTargets(targets, cfg, small_size, emphasis=_boundary_emphasis(targets, cfg))
    total = 0.0
    for stage in _stages(out):
        masks, logits = stage.masks[0], stage.class_logits[0]
        q, t = match_queries(masks, logits, small, classes, cfg.class_weight, cfg.mask_weight, cfg.dice_weight)
        bce, dice = stage_targets.loss(masks[q], generator, t)
        total = total + cfg.class_weight * class_loss(logits, q, classes[t], cfg.no_object_weight)
        total = total + cfg.mask_weight * bce + cfg.dice_weight * dice
    return total


def separate_objects(sample: Sample, chosen: np.ndarray, margin: int = 2) -> np.ndarray:
    """``[n, H, W]`` bool: for each chosen object, the pixels of the other objects that do not
    touch it (none of their pixels within ``margin`` px of it)."""
    out = np.zeros((len(chosen), *sample.full.shape[1:]), dtype=bool)
    structure = np.ones((2 * margin + 1, 2 * margin + 1), dtype=bool)
    for k, i in enumerate(chosen):
        near = ndimage.binary_dilation(sample.full[i], structure)
        for j in range(len(sample)):
            if j != i and not (sample.full[j] & near).any():
                out[k] |= sample.full[j]
        out[k] &= ~near
    return out


def spatial_losses(model, out, sample: Sample, chosen: np.ndarray, cfg: ObjectiveConfig,
                   class_emb: Tensor, small_size: tuple[int, int], generator: torch.Generator | None = None,
                   memory_mask: np.ndarray | None = None) -> Tensor:
    """Per prompted object, the best of its spatial queries learns the mask; the prompt embedding
    learns to select that query (SEEM's ``loss_spatial_ce``); its caption learns the class.
    ``memory_mask [n, H, W]``: what the memory showed (see ``ObjectiveConfig.error_emphasis``)."""
    n, per = len(chosen), model.predictor.queries_per_object
    device = out.masks.device
    targets = torch.from_numpy(sample.full[chosen]).to(device)
    classes = torch.from_numpy(sample.classes[chosen]).to(device)
    small = downsample_targets(targets, small_size)
    weights = None
    if cfg.spatial_ignore_separate:
        weights = torch.from_numpy(~separate_objects(sample, chosen)).to(device=device, dtype=torch.float32)
    emphasis = None
    if cfg.error_emphasis > 0 and memory_mask is not None:
        wrong = torch.from_numpy(memory_mask != sample.full[chosen]).to(device=device, dtype=torch.float32)
        emphasis = 1 + cfg.error_emphasis * wrong
    emphasis = multiply_weights(emphasis, _boundary_emphasis(targets, cfg))
    stage_targets = StageTargets(targets, cfg, small_size, weights, emphasis)
    pos_embeds = out.pos_embeds[0]  # [n, C]
    total = 0.0
    for stage in _stages(out):
        masks = stage.spatial_masks[0].view(n, per, -1)
        embeds = stage.spatial_mask_embeds[0].view(n, per, -1)
        best = []
        for k in range(n):
            query, _ = match_queries(masks[k].view(per, *small_size), None, small[k:k + 1],
                                     classes[k:k + 1], 0.0, cfg.spatial_mask_weight, cfg.spatial_dice_weight)
            best.append(int(query[0]))
        best_t = torch.tensor(best, device=device)
        chosen_masks = masks[torch.arange(n, device=device), best_t].view(n, *small_size)
        bce, dice = stage_targets.loss(chosen_masks, generator)
        select = F.cross_entropy(torch.einsum("nqc,nc->nq", embeds, pos_embeds), best_t)
        total = total + cfg.spatial_mask_weight * bce + cfg.spatial_dice_weight * dice
        total = total + cfg.spatial_select_weight * select
        if stage is out:
            captions = stage.spatial_captions[0].view(n, per, -1)[torch.arange(n, device=device), best_t]
            logits = model.lang_encoder.compute_similarity(captions, class_emb)
            total = total + cfg.spatial_class_weight * F.cross_entropy(logits, classes)
    return total


def grounding_losses(model, out, targets: np.ndarray, phrase_emb: Tensor, cfg: ObjectiveConfig,
                     small_size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """Grounding queries vs. every instance of the phrase's class: Hungarian-matched BCE + dice,
    and the phrase similarity pulls the matched queries up among all grounding queries."""
    device = out.masks.device
    masks_t = torch.from_numpy(targets).to(device)
    small = downsample_targets(masks_t, small_size)
    stage_targets = StageTargets(masks_t, cfg, small_size, emphasis=_boundary_emphasis(masks_t, cfg))
    total = 0.0
    dummy = torch.zeros(len(targets), dtype=torch.long, device=device)
    for stage in _stages(out):
        masks = stage.grounding_masks[0]
        sim = model.lang_encoder.grounding_similarity(stage.grounding_captions[0], phrase_emb)[:, 0]
        logits = torch.stack([torch.zeros_like(sim), sim], -1)  # only the matching score is a cost
        q, t = match_queries(masks, logits, small, dummy + 1, cfg.grounding_class_weight,
                             cfg.grounding_mask_weight, cfg.grounding_dice_weight)
        bce, dice = stage_targets.loss(masks[q], generator, t)
        ce = -sim.log_softmax(0)[torch.as_tensor(q)].mean()
        total = total + cfg.grounding_mask_weight * bce + cfg.grounding_dice_weight * dice
        total = total + cfg.grounding_class_weight * ce
    return total


def training_step(
    model, sample: Sample, text_bank: TextBank, cfg: ObjectiveConfig,
    rng: np.random.Generator, generator: torch.Generator,
) -> dict[str, Tensor]:
    """Losses of one image (call ``backward`` on ``["total"]``)."""
    features = model.encode_image(sample.rgb.to(_device(model)))
    hp, wp = features.padded_size
    small_size = (hp // 4, wp // 4)
    lang = model.lang_encoder
    if cfg.text_templates not in ("mean", "sampled"):
        raise ValueError(f"text_templates must be 'mean' or 'sampled', not {cfg.text_templates!r}")
    class_emb = text_bank.class_embeddings(lang, generator if cfg.text_templates == "sampled" else None)
    chosen = choose_objects(sample, cfg, rng)
    kwargs = {}
    if len(chosen):
        prompts = simulate_prompts(model, features, sample, chosen, cfg, rng, generator)
        kwargs.update(pos_masks=prompts.pos, neg_masks=prompts.neg, prev_mask=prompts.prev)
    present = sorted(set(sample.classes.tolist()))
    phrase_class = int(rng.choice(present)) if present else None
    if phrase_class is not None:
        phrase = lang.encode_text([text_bank.names[phrase_class]])
        kwargs["grounding_tokens"] = phrase.real_tokens
    out = model.predictor(features.multi_scale_features, features.mask_features,
                          class_embeddings=class_emb, generator=generator, **kwargs)
    losses = {"panoptic": panoptic_losses(out, sample, cfg, small_size, generator)}
    if len(chosen):
        losses["spatial"] = spatial_losses(model, out, sample, chosen, cfg, class_emb, small_size, generator,
                                           prompts.memory_mask)
    if phrase_class is not None:
        targets = sample.full[sample.classes == phrase_class]
        losses["grounding"] = grounding_losses(model, out, targets, phrase.class_emb, cfg, small_size, generator)
    losses["total"] = sum(losses.values())
    return losses
