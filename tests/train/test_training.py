from pathlib import Path

import numpy as np
import pytest
import torch

from napari_seem.model import build_seem, read_state_dict, save_safetensors
from napari_seem.train import (
    VOCABULARY,
    FolderDataset,
    TextBank,
    TrainConfig,
    synthetic_sample,
    train,
    training_step,
)
from napari_seem.train.__main__ import main
from napari_seem.train.objective import ObjectiveConfig


def test_synthetic_sample_is_deterministic_and_consistent():
    a, b = synthetic_sample(7, 96), synthetic_sample(7, 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.full, b.full)
    assert not np.array_equal(a.image, synthetic_sample(8, 96).image)
    assert a.rgb.shape == (3, 96, 96) and len(a) > 0
    assert np.all(a.full | ~a.visible)  # the visible part lies inside the whole object
    assert a.visible.sum(0).max() == 1  # visible parts do not overlap
    assert set(a.classes.tolist()) <= set(range(len(VOCABULARY)))


def test_synthetic_8bit_samples_are_used_as_they_are_even_when_dim():
    """The recipe's inputs stay those the shipped weights were trained on: the engine's gain for
    dim 8-bit images (normalize="auto") is for users' images, not for the generator's own."""
    from dataclasses import replace as replaced

    from napari_seem.synthetic import make_image
    from napari_seem.train.data import from_synthetic

    s = make_image((64, 64), seed=3)
    dim = replaced(s, image=(s.image // 4).astype(np.uint8))
    assert np.percentile(dim.image, 99.8) < 96
    sample = from_synthetic(dim)
    np.testing.assert_array_equal(sample.rgb[0].numpy(), dim.image.astype(np.float32))


def test_zoomed_synthetic_sample_has_larger_objects_at_the_same_size():
    plain = synthetic_sample(7, 96)
    zoomed = synthetic_sample(7, 96, zoom=(2.0, 2.0))
    assert zoomed.rgb.shape == (3, 96, 96) and len(zoomed) > 0
    assert zoomed.full.shape[1:] == (96, 96) and np.all(zoomed.full | ~zoomed.visible)
    # the same scene made at 48 px and upsampled 2x: each object covers ~4x the pixels it had there
    small = synthetic_sample(7, 48)
    big_cells = zoomed.full[zoomed.classes == VOCABULARY.index("cell")].sum((1, 2))
    small_cells = small.full[small.classes == VOCABULARY.index("cell")].sum((1, 2))
    assert len(big_cells) == len(small_cells)
    assert np.allclose(big_cells, 4 * small_cells, rtol=0.15)
    assert not np.array_equal(plain.rgb, zoomed.rgb)
    # a range draws the factor from the seed: reproducible
    assert np.array_equal(synthetic_sample(9, 96, zoom=(1.0, 2.0)).rgb, synthetic_sample(9, 96, zoom=(1.0, 2.0)).rgb)


def test_z_slice_samples_are_sections_of_a_z_stack_and_leave_other_samples_as_they_were():
    from napari_seem.synthetic import make_sequence
    from napari_seem.train.data import Z_SLICE_RANGE, Z_STACK_SLICES

    seeds = range(20, 40)
    plain = [synthetic_sample(s, 96) for s in seeds]
    mixed = [synthetic_sample(s, 96, z_slices=0.3) for s in seeds]
    sliced = [not np.array_equal(a.image, b.image) for a, b in zip(plain, mixed)]
    assert 2 <= sum(sliced) <= 12  # about 30 % are z-slices; the others are the 2D samples unchanged
    for a, b, is_slice in zip(plain, mixed, sliced):
        if not is_slice:
            assert np.array_equal(a.full, b.full) and torch.equal(a.rgb, b.rgb)
    z = synthetic_sample(5, 96, z_slices=1.0)
    assert np.array_equal(z.image, synthetic_sample(5, 96, z_slices=1.0).image)  # deterministic
    assert z.rgb.shape == (3, 96, 96) and np.all(z.full | ~z.visible) and z.visible.sum(0).max() <= 1
    # the image is one of the inner slices of a z-stack of the generator
    rng = np.random.default_rng(5)
    rng.random(), rng.random()
    stack_seed = int(rng.integers(1 << 20, 1 << 31))
    images = [synthetic_sample(5, 96, z_slices=1.0).image]
    stack = make_sequence(Z_STACK_SLICES, (96, 96), seed=stack_seed, axis="z", n_cells=(1, 2),
                          bit_depth=z.image.dtype.itemsize * 8,
                          channels="rgb" if z.image.ndim == 3 else "merged")
    assert any(np.array_equal(images[0], stack.image[k]) for k in range(*Z_SLICE_RANGE))


def test_text_bank_matches_the_engine_class_embeddings(tiny_yaml):
    model = build_seem(tiny_yaml)
    bank = TextBank(model.lang_encoder, ("nucleus", "cell"))
    ours = bank.class_embeddings(model.lang_encoder)
    ref = model.lang_encoder.class_embeddings(["nucleus", "cell", "background"])
    assert torch.allclose(ours, ref, atol=1e-5)
    ours.sum().backward()  # and it trains the text tower
    assert model.lang_encoder.lang_proj.grad is not None


def test_text_bank_samples_one_template_per_class_as_seem_training(tiny_yaml):
    """With a generator, one random template per class (SEEM's ``get_text_embeddings`` in
    training): the normalised embedding of that single prompt, drawn reproducibly."""
    from napari_seem.model.language.templates import PROMPT_TEMPLATES

    model = build_seem(tiny_yaml)
    bank = TextBank(model.lang_encoder, ("nucleus", "cell"))
    draw = bank.class_embeddings(model.lang_encoder, torch.Generator().manual_seed(0))
    again = bank.class_embeddings(model.lang_encoder, torch.Generator().manual_seed(0))
    assert draw.shape == (3, model.lang_encoder.lang_proj.shape[1]) and torch.equal(draw, again)
    assert torch.allclose(draw.norm(dim=-1), torch.ones(3), atol=1e-5)
    chosen = torch.randint(len(PROMPT_TEMPLATES), (3,), generator=torch.Generator().manual_seed(0))
    for k, name in enumerate(("nucleus", "cell", "background")):
        prompt = PROMPT_TEMPLATES[int(chosen[k])].format(name)
        tokens = model.lang_encoder.tokenize([prompt])
        _, end = model.lang_encoder.encode_tokens(tokens["input_ids"], tokens["attention_mask"])
        assert torch.allclose(draw[k], end[0] / end[0].norm(), atol=1e-5), prompt
    mean = bank.class_embeddings(model.lang_encoder)
    assert not torch.allclose(draw, mean, atol=1e-3)
    draws = [bank.class_embeddings(model.lang_encoder, torch.Generator().manual_seed(s)) for s in range(1, 4)]
    assert any(not torch.allclose(d, draw) for d in draws)


def test_training_step_trains_every_part(tiny_yaml):
    torch.manual_seed(0)
    model = build_seem(tiny_yaml).train()
    sample = synthetic_sample(3, 96)
    bank = TextBank(model.lang_encoder, VOCABULARY)
    cfg = ObjectiveConfig(propagation_share=0.0, max_rounds=2)
    losses = training_step(model, sample, bank, cfg, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert {"panoptic", "spatial", "grounding", "total"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    for prefix in ("backbone.", "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor.transformer",
                   "sem_seg_head.predictor.lang_encoder.lang_encoder."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix


@pytest.mark.parametrize("stride", [1, 2])
def test_an_image_without_objects_teaches_no_object(tiny_yaml, stride):
    """An empty crop of user data or a z-slice between cells: every object query learns "no
    object"; no prompt, no phrase."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_seem(tiny_yaml).train()
    full = synthetic_sample(3, 96)
    empty = replace(full, full=full.full[:0], visible=full.visible[:0], classes=full.classes[:0])
    bank = TextBank(model.lang_encoder, VOCABULARY)
    cfg = ObjectiveConfig(mask_loss_stride=stride)
    losses = training_step(model, empty, bank, cfg, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert set(losses) == {"panoptic", "total"} and torch.isfinite(losses["total"]) and losses["total"] > 0
    losses["total"].backward()
    head = [p.grad for n, p in model.named_parameters() if n.startswith("sem_seg_head.predictor.class_embed")]
    assert any(g is not None and g.abs().sum() > 0 for g in head)


def assert_training_is_deterministic_and_learns(tiny_yaml, tmp_path, **config) -> None:
    """Two 3-step runs from the same start give identical weights, different from the start."""
    def run(out):
        torch.manual_seed(0)
        model = build_seem(tiny_yaml)
        cfg = TrainConfig(steps=3, image_sizes=(64,), seed=5, warmup=1, **config)
        return train(model, cfg, out, log=lambda _: None).state_dict()

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    start = build_seem(tiny_yaml).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)


def test_training_is_deterministic_and_learns(tiny_yaml, tmp_path):
    assert_training_is_deterministic_and_learns(tiny_yaml, tmp_path, checkpoint_every=2)
    assert (tmp_path / "a" / "checkpoint.pt").is_file()


def test_training_runs_at_the_sizes_given_and_keeps_the_minimum_padded_size(tiny_yaml, tmp_path, monkeypatch):
    """``INPUT.MIN_PADDED_SIZE`` is an inference setting: training sees its images at their own
    (padded to 32) size, and the trained model keeps the setting for inference."""
    import napari_seem.train.loop as loop

    seen = []
    real_step = loop.training_step

    def recording_step(model, sample, *args, **kwargs):
        seen.append(model.padded_size(*sample.rgb.shape[-2:]))
        return real_step(model, sample, *args, **kwargs)

    monkeypatch.setattr(loop, "training_step", recording_step)
    model = build_seem(tiny_yaml)
    model.min_padded_size = 256
    train(model, TrainConfig(steps=2, image_sizes=(64,), seed=5, warmup=1), tmp_path, log=lambda _: None)
    assert seen == [(64, 64), (64, 64)]
    assert model.min_padded_size == 256 and model.padded_size(64, 64) == (256, 256)


def test_training_with_z_slices_is_deterministic_and_learns(tiny_yaml, tmp_path):
    assert_training_is_deterministic_and_learns(tiny_yaml, tmp_path, z_slices=1.0)


def test_point_sampled_losses_train_deterministically_without_full_masks(tiny_yaml, tmp_path, monkeypatch):
    """``mask_points``: SEEM's point-sampled mask losses; the points come from the step's seeded
    generator, so a run is reproducible, and no full-resolution mask loss is computed."""
    import napari_seem.train.losses as losses
    import napari_seem.train.objective as objective

    def refuse(*args, **kwargs):
        raise AssertionError("full-resolution mask loss computed with mask_points > 0")

    monkeypatch.setattr(losses, "full_mask_loss", refuse)
    monkeypatch.setattr(objective, "prepare_masks", refuse)
    monkeypatch.setattr(objective, "prepared_mask_loss", refuse)
    assert_training_is_deterministic_and_learns(
        tiny_yaml, tmp_path, checkpoint_every=5, objective=ObjectiveConfig(mask_points=256, propagation_share=0.0))


def test_fast_objective_options_train_deterministically(tiny_yaml, tmp_path):
    """Half-resolution mask losses and sampled templates: reproducible and learning."""
    assert_training_is_deterministic_and_learns(
        tiny_yaml, tmp_path, objective=ObjectiveConfig(mask_loss_stride=2, text_templates="sampled"))
    model = build_seem(tiny_yaml)
    bank = TextBank(model.lang_encoder, VOCABULARY)
    with pytest.raises(ValueError, match="text_templates"):
        training_step(model, synthetic_sample(3, 64), bank, ObjectiveConfig(text_templates="all"),
                      np.random.default_rng(0), torch.Generator().manual_seed(0))


def test_weight_average_is_the_result_and_survives_a_resume(tiny_yaml, tmp_path):
    """With ``ema``, the trained model ends with the running average of its weights (kept in the
    checkpoint, so a resumed run continues the same average)."""
    from napari_seem.train.loop import WeightAverage

    def run(out, steps):
        torch.manual_seed(0)
        model = build_seem(tiny_yaml)
        cfg = TrainConfig(steps=steps, image_sizes=(64,), seed=5, warmup=1, checkpoint_every=2, ema=0.5)
        return train(model, cfg, out, log=lambda _: None).state_dict()

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4)
    checkpoint = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    last = checkpoint["model"]
    assert set(checkpoint["ema"]) <= set(last)
    moved = [k for k in checkpoint["ema"] if not torch.equal(checkpoint["ema"][k], last[k])]
    assert moved  # the average differs from the last weights ...
    assert all(torch.equal(straight[k], checkpoint["ema"][k]) for k in checkpoint["ema"])  # ... and is the result
    assert all(torch.allclose(straight[k], resumed[k]) for k in straight)

    # the average itself: avg <- decay * avg + (1 - decay) * weights
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, 0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    average.update(model)
    torch.testing.assert_close(average.state["weight"], start + 1.0)


@pytest.fixture
def user_folder(tmp_path):
    from skimage.io import imsave

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        labels = np.zeros((80, 72), np.uint16)
        labels[10:30, 10:30] = 1
        labels[40:70, 35:60] = 2
        image = (rng.random((80, 72)) * 40 + (labels > 0) * 150).astype(np.uint8)
        imsave(tmp_path / "images" / f"img{i}.png", image, check_contrast=False)
        imsave(tmp_path / "labels" / f"img{i}_labels.png", labels, check_contrast=False)
    (tmp_path / "classes.csv").write_text("img0,2,cell\n")
    return tmp_path


def test_folder_dataset(user_folder):
    data = FolderDataset(user_folder, ["nucleus", "cell"], crop=64)
    assert len(data) == 2
    s = data.sample(0)
    assert s.rgb.shape == (3, 64, 64) and len(s) == 2
    assert np.array_equal(s.full, s.visible)
    assert np.array_equal(data.sample(0).full, s.full)


def test_cli_fine_tunes_a_checkpoint_on_user_data(tiny_yaml, user_folder, tmp_path):
    start = tmp_path / "start.safetensors"
    save_safetensors(build_seem(tiny_yaml), start)
    out = tmp_path / "run"
    main(["--fine-tune", str(start), "--config", str(tiny_yaml), "--data", str(user_folder),
          "--classes", "nucleus", "cell", "--steps", "2", "--crop", "64", "--out", str(out)])
    tuned = read_state_dict(out / "model.safetensors")
    before = read_state_dict(start)
    assert set(tuned) == set(before)
    assert tuned["backbone.patch_embed.proj.weight"].dtype == torch.float16
    assert not torch.allclose(tuned["backbone.patch_embed.proj.weight"].float(),
                              before["backbone.patch_embed.proj.weight"], atol=1e-4)
    assert (out / "config.yaml").is_file()
    # the run's folder is a model users load by its file alone: its config.yaml beside the weights
    # gives the architecture, the classes it was trained on and its resolution (the image's own)
    from napari_seem.engine import Segmenter

    seg = Segmenter.from_pretrained(out / "model.safetensors", device="cpu")
    assert seg.vocabulary[:2] == ["nucleus", "cell"] and seg.short_side is None
    assert list(seg.default_vocabulary.names[:2]) == ["nucleus", "cell"]
    assert Segmenter.from_pretrained(out / "model.safetensors", device="cpu", short_side=96).short_side == 96
    # fine-tuning the run again finds its config the same way (no --config), and keeps the section
    again = tmp_path / "again"
    main(["--fine-tune", str(out / "model.safetensors"), "--data", str(user_folder), "--classes", "nucleus", "cell",
          "debris", "--steps", "1", "--crop", "64", "--out", str(again)])
    import yaml

    assert yaml.safe_load((again / "config.yaml").read_text())["NAPARI_SEEM"] == {
        "VOCABULARY": ["nucleus", "cell", "debris"], "SHORT_SIDE": None}


def test_reproduce_runs_every_phase_in_order(tmp_path, monkeypatch):
    """``--reproduce`` chains the phases: each later phase fine-tunes the previous phase's export,
    and the outline refiners (nuclei, then cells) are trained last, on the last phase's model."""
    import napari_seem.train.__main__ as cli

    runs, refiners = [], []

    def fake_train(model, cfg, out_dir, data=None, resume=True):
        runs.append((Path(out_dir).name, cfg.steps, cfg.seed, cfg.image_sizes, cfg.threads, cfg.objective))
        return model

    def fake_refiner(args, out):
        refiners.append((Path(args.fine_tune), out.name, args.steps, args.seed, args.refiner_images,
                         args.refiner_sequences, args.refiner_classes, args.refiner_window, args.threads,
                         args.workers))

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "train_refiner_command", fake_refiner)
    main(["--reproduce", "--out", str(tmp_path)])
    phases = cli.recipe(str(tmp_path))
    assert [r[0] for r in runs] == [f"phase{i + 1}" for i in range(len(phases) - 2)]
    assert runs[0][1:5] == (3500, 0, (128, 160, 192), 2)
    assert all(r[4] == 2 for r in runs)  # the shipped weights depend on the thread count
    assert all(r[5].mask_loss_stride == 2 and r[5].text_templates == "sampled" for r in runs)
    assert [r[5].spatial_ignore_separate for r in runs] == [False, False, False, True, True, True]
    assert all(r[5].error_emphasis == 0 for r in runs)
    assert [(r[5].boundary_emphasis, r[5].boundary_width) for r in runs] == [(0, 2)] * 5 + [(4, 1)]
    for phase in phases[1:]:
        start = Path(phase[phase.index("--fine-tune") + 1])
        assert start.is_file() and start.parent.parent == tmp_path
    assert (tmp_path / f"phase{len(runs)}" / "model.safetensors").is_file()
    last = tmp_path / "phase6" / "model.safetensors"
    assert refiners == [
        (last, "refiner", cli.REFINER_STEPS, 9, cli.REFINER_IMAGES, cli.REFINER_SEQUENCES, ["nucleus"], 64, 2, 2),
        (last, "refiner", 1500, 9, 400, 80, ["cell"], 96, 2, 2),
    ]


def test_separate_objects_are_the_other_objects_that_do_not_touch():
    from napari_seem.train.data import Sample
    from napari_seem.train.objective import separate_objects

    full = np.zeros((3, 20, 20), bool)
    full[0, 2:6, 2:6] = True      # the prompted object
    full[1, 6:9, 2:6] = True      # touches it: still penalised
    full[2, 14:18, 14:18] = True  # separate look-alike: ignored
    sample = Sample(np.zeros((20, 20)), torch.zeros(3, 20, 20), full, full, np.zeros(3, np.int64))
    ignored = separate_objects(sample, np.array([0, 2]))
    assert np.array_equal(ignored[0], full[2])
    assert np.array_equal(ignored[1], full[0] | full[1])


def test_corrective_clicks_go_to_the_errors_the_engine_shows():
    from napari_seem.train.objective import corrective_click

    target = np.zeros((40, 40), bool)
    target[5:15, 5:15] = True
    prompt = np.zeros_like(target)
    prompt[9:12, 9:12] = True
    pred = target.copy()
    pred[5:15, 15:18] = True        # leak into the neighbour, connected to the object
    pred[25:38, 25:38] = True       # a separate look-alike, larger than the leak
    raw = corrective_click(pred, prompt, target, ObjectiveConfig())
    shown = corrective_click(pred, prompt, target, ObjectiveConfig(clicks_on_kept_regions=True))
    assert raw[1] == 0 and 25 <= raw[0][0] < 38 and 25 <= raw[0][1] < 38   # on the look-alike
    assert shown[1] == 0 and 5 <= shown[0][0] < 15 and 15 <= shown[0][1] < 18  # on the leak
    pred[5:15, 15:18] = False       # only the look-alike is wrong: the engine shows a perfect mask
    assert corrective_click(pred, prompt, target, ObjectiveConfig(clicks_on_kept_regions=True)) is None


def test_memory_dropout_trains_corrective_rounds_without_the_previous_mask(tiny_yaml):
    from napari_seem.train.objective import simulate_prompts

    torch.manual_seed(0)
    model = build_seem(tiny_yaml).eval()
    sample = synthetic_sample(3, 96)
    features = model.encode_image(sample.rgb)
    chosen = np.array([0, 1])

    def memories(dropout):
        cfg = ObjectiveConfig(propagation_share=0.0, max_rounds=3, memory_dropout=dropout)
        out = []
        for seed in range(6):
            with torch.no_grad():
                prompts = simulate_prompts(model, features, sample, chosen, cfg, np.random.default_rng(seed),
                                           torch.Generator().manual_seed(0))
            assert (prompts.prev is None) == (prompts.memory_mask is None)
            out.append(prompts.prev)
        return out

    kept, dropped = memories(0.0), memories(1.0)
    assert any(p is not None for p in kept)           # some steps ran corrective rounds with memory
    assert all(p is None for p in dropped)


def test_memory_mask_is_what_the_memory_shows(tiny_yaml):
    """``memory_mask``: the previous round's selected mask (its logits > 0 at the image's size),
    or in a propagation step the moved mask that is the memory; none without memory."""
    from napari_seem.train.losses import downsample_targets, upsample
    from napari_seem.train.objective import simulate_prompts

    torch.manual_seed(0)
    model = build_seem(tiny_yaml).eval()
    sample = synthetic_sample(3, 96)
    features = model.encode_image(sample.rgb)
    chosen = np.array([0, 1])
    seen = set()
    for share in (0.0, 1.0):
        cfg = ObjectiveConfig(propagation_share=share, max_rounds=2)
        for seed in range(5):
            with torch.no_grad():
                p = simulate_prompts(model, features, sample, chosen, cfg, np.random.default_rng(seed),
                                     torch.Generator().manual_seed(0))
            if p.prev is None:
                assert p.memory_mask is None
                seen.add("none")
                continue
            assert p.memory_mask.shape == (2, 96, 96) and p.memory_mask.dtype == bool
            if share:   # the moved mask, whose area fractions at the logits' grid are the memory
                fractions = downsample_targets(torch.from_numpy(p.memory_mask), (24, 24)).view(2, 24, 24)
                assert torch.equal(fractions > 0.5, p.prev[0] > 0)
                assert np.array_equal(p.pos[:, :96, :96].numpy(), p.memory_mask)   # and the prompt
                seen.add("propagation")
            else:
                assert np.array_equal((upsample(p.prev[0].float(), (96, 96)) > 0).numpy(), p.memory_mask)
                seen.add("rounds")
    assert seen == {"none", "propagation", "rounds"}


def test_error_emphasis_changes_only_the_spatial_loss_of_steps_with_memory(tiny_yaml):
    torch.manual_seed(0)
    model = build_seem(tiny_yaml).train()
    sample = synthetic_sample(3, 96)
    bank = TextBank(model.lang_encoder, VOCABULARY)

    def step(seed, **kw):
        cfg = ObjectiveConfig(max_rounds=2, **kw)
        with torch.no_grad():
            return training_step(model, sample, bank, cfg, np.random.default_rng(seed),
                                 torch.Generator().manual_seed(seed))

    changed = 0
    for seed in range(4):
        a, b = step(seed), step(seed, error_emphasis=4.0)
        assert torch.equal(a["panoptic"], b["panoptic"]) and torch.equal(a["grounding"], b["grounding"])
        changed += not torch.equal(a["spatial"], b["spatial"])
    assert changed > 0
    # propagation steps always have memory, so the emphasis always applies there
    a, b = step(0, propagation_share=1.0), step(0, propagation_share=1.0, error_emphasis=4.0)
    assert not torch.equal(a["spatial"], b["spatial"])


def test_boundary_emphasis_changes_the_bce_of_every_task(tiny_yaml):
    torch.manual_seed(0)
    model = build_seem(tiny_yaml).train()
    sample = synthetic_sample(3, 96)
    bank = TextBank(model.lang_encoder, VOCABULARY)

    def step(**kw):
        cfg = ObjectiveConfig(max_rounds=1, **kw)
        with torch.no_grad():
            return training_step(model, sample, bank, cfg, np.random.default_rng(0), torch.Generator().manual_seed(0))

    off, zero, on = step(), step(boundary_emphasis=0.0, boundary_width=3), step(boundary_emphasis=4.0)
    for task in ("panoptic", "spatial", "grounding"):
        assert torch.equal(off[task], zero[task])  # off: the width alone changes nothing
        assert not torch.equal(off[task], on[task]), task
