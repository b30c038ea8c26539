"""nlg.shapes training: a complete diffusers folder, SD's schedule, metadata with hashes, bit-exact resume."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

import nlg.shapes.train as shapes_train
from nlg.shapes import load_pipeline
from nlg.shapes.model import unet_levels
from nlg.shapes.train import DEFAULT_FOLDER, DEFAULT_TRAINING, ShapesTraining, train

TINY = dataclasses.replace(DEFAULT_TRAINING, scenes=48, vae_steps=4, vae_batch_size=4, steps=4, batch_size=4)


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_training_writes_a_stable_diffusion_folder_and_resumes_bit_exactly(tmp_path, monkeypatch):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    whole = train(tmp_path / "whole", settings=TINY, checkpoint_every=2, progress=False)
    original = shapes_train._diffusion_loss

    def killed_at_step_3(*args):
        loss_fn = original(*args)

        def wrapped(step, generator):
            if step == 3:
                raise Interrupt  # as kill -9 right after the step-2 checkpoint
            return loss_fn(step, generator)

        return wrapped

    monkeypatch.setattr(shapes_train, "_diffusion_loss", killed_at_step_3)
    with pytest.raises(Interrupt):
        train(tmp_path / "resumed", settings=TINY, checkpoint_every=2, progress=False)
    monkeypatch.setattr(shapes_train, "_diffusion_loss", original)
    assert (tmp_path / "resumed.partial" / "unet.pt").is_file() and not (tmp_path / "resumed").exists()
    with pytest.raises(ValueError, match="other settings"):
        train(tmp_path / "resumed", settings=dataclasses.replace(TINY, lr=1e-4), progress=False)
    resumed = train(tmp_path / "resumed", settings=TINY, checkpoint_every=2, progress=False)
    assert not (tmp_path / "resumed.partial").exists()
    assert resumed["sha256"] == whole["sha256"] and len(whole["sha256"]) == 3

    folder = tmp_path / "whole"
    meta = json.loads((tmp_path / "whole.json").read_text())
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    expected = dict(dataclasses.asdict(TINY), unet_channels=list(TINY.unet_channels), task_weights=list(TINY.task_weights))
    assert meta["settings"] == expected and meta["threads"] == 1 and meta["wall_seconds"] > 0
    assert meta["size_bytes"] <= 30e6

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    assert type(pipe) is StableDiffusionPipeline and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert json.loads((folder / "model_index.json").read_text())["requires_safety_checker"] is False
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert torch.allclose(pipe.scheduler.alphas_cumprod.double(), alpha_bar, rtol=1e-5)
    assert abs(float(alpha_bar[999]) - 0.0047) < 1e-4
    assert pipe.scheduler.config.prediction_type == TINY.prediction_type == "v_prediction"
    pipe.scheduler.set_timesteps(20)
    assert int(pipe.scheduler.timesteps[0]) == 999  # trailing spacing: sampling starts where NLG refines
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    assert pipe.vae.config.scaling_factor == pytest.approx(meta["latent_scaling_factor"])


def test_the_tokenizer_keeps_every_template_word_whole_and_no_caption_is_truncated():
    from nlg.shapes.data import scene_from_seed
    from nlg.shapes.tokenizer import WORDS, build_tokenizer

    tokenizer = build_tokenizer()
    for word in WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    for seed in range(1_000_000, 1_002_000):
        caption = scene_from_seed(seed).caption
        ids = tokenizer(caption).input_ids  # no truncation asked for: the full length
        assert len(ids) == len(caption.split()) + 2 <= tokenizer.model_max_length, caption


def test_whitening_folded_into_the_vae_keeps_its_decoding_and_whitens_the_latents():
    from nlg.shapes.data import render_dataset
    from nlg.shapes.model import build_vae, whiten_vae

    vae = build_vae(seed=3)
    images, _, _ = render_dataset(range(2000, 2064))
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
        decoded = vae.decode(mean).sample
        pixels = mean.permute(0, 2, 3, 1).reshape(-1, mean.shape[1]).double()
        whiten = whiten_vae(vae, mean, floor=0.0).double()
        # the encoder now gives W (z − μ), for μ and Σ of these pixels computed here by hand
        mu = pixels.mean(0)
        centred = pixels - mu
        sigma = centred.T @ centred / (len(pixels) - 1)
        after = vae.encode(images).latent_dist.mean
        flat = after.permute(0, 2, 3, 1).reshape(-1, mean.shape[1]).double()
        torch.testing.assert_close(flat, centred @ whiten.T, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(whiten @ sigma @ whiten.T, torch.eye(mean.shape[1], dtype=torch.float64),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(vae.decode(after).sample, decoded, rtol=1e-4, atol=1e-4)  # same images


@pytest.mark.slow
def test_each_training_option_changes_the_model_and_is_recorded(tmp_path):
    plain = dataclasses.replace(TINY, whiten_latents=False, latent_rgb_weight=0.0, ema_decay=None)
    base = train(tmp_path / "base", settings=plain, progress=False)
    vae, unet = "vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"
    for key, value, part in (("whiten_latents", True, vae), ("latent_rgb_weight", 1.0, vae),
                             ("ema_decay", 0.5, unet), ("min_snr_gamma", 5.0, unet), ("prediction_type", "epsilon", unet)):
        meta = train(tmp_path / key, settings=dataclasses.replace(plain, **{key: value}), progress=False)
        assert meta["settings"][key] == value
        assert meta["sha256"][part] != base["sha256"][part], key
    scheduler = json.loads((tmp_path / "prediction_type" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "epsilon"  # the pipeline samples with the target it was trained on


@pytest.mark.slow
def test_unet_levels_option_builds_and_records_that_architecture(tmp_path):
    settings = dataclasses.replace(TINY, unet_channels=(32, 64, 64), top_level_attention=False)
    train(tmp_path / "deep", settings=settings, progress=False)
    meta = json.loads((tmp_path / "deep.json").read_text())
    config = json.loads((tmp_path / "deep" / "unet" / "config.json").read_text())
    # three levels, the top one (16x16) without attention as in SDXL, the others with cross-attention
    assert config["block_out_channels"] == [32, 64, 64]
    assert config["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert config["up_block_types"] == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert meta["settings"]["unet_channels"] == [32, 64, 64] and meta["settings"]["top_level_attention"] is False
    assert meta["configs"]["unet"]["down_block_types"] == config["down_block_types"]
    pipe = load_pipeline(tmp_path / "deep")  # an unmodified pipeline samples from it; 16 -> 8 -> 4 latents
    image = pipe("a photo of a circle", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()


@pytest.mark.slow
def test_task_weights_text_layers_and_mirror_pairs_build_and_record_that_recipe(tmp_path):
    weights = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # position captions only
    settings = dataclasses.replace(TINY, task_weights=weights, text_layers=3, mirror_pairs=0.5, coloured_position=1.0)
    seen = []
    real = shapes_train.render_dataset
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shapes_train, "render_dataset", lambda seeds, w, c: seen.append(real(seeds, w, c)[2]) or real(seeds, w, c))
        meta = train(tmp_path / "pos", settings=settings, progress=False)
    assert {scene.task for scene in seen[0]} == {"position"}
    assert all(scene.objects[0].colour in scene.caption.split() for scene in seen[0])  # every caption names its colours
    assert meta["settings"]["task_weights"] == list(weights) and meta["settings"]["text_layers"] == 3 and meta["settings"]["mirror_pairs"] == 0.5
    assert meta["settings"]["coloured_position"] == 1.0
    config = json.loads((tmp_path / "pos" / "text_encoder" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 == meta["configs"]["text_encoder"]["num_hidden_layers"]
    pipe = load_pipeline(tmp_path / "pos")
    assert pipe.text_encoder.config.num_hidden_layers == 3
    assert sum(isinstance(m, torch.nn.MultiheadAttention) or type(m).__name__.endswith("EncoderLayer") for m in pipe.text_encoder.modules()) == 3


@pytest.mark.slow
def test_a_frozen_text_encoder_keeps_its_seeded_initialisation_and_the_unet_still_learns(tmp_path):
    from nlg.shapes.model import build_text_encoder

    settings = dataclasses.replace(TINY, train_text_encoder=False, ema_decay=None, relation_loss_weight=0.0)
    meta = train(tmp_path / "frozen", settings=settings, progress=False)
    train(tmp_path / "joint", settings=dataclasses.replace(TINY, ema_decay=None), progress=False)
    trained = load_pipeline(tmp_path / "joint")
    frozen = load_pipeline(tmp_path / "frozen")
    initial = build_text_encoder(seed=settings.seed + 1).state_dict()
    assert meta["settings"]["train_text_encoder"] is False
    assert all(torch.equal(frozen.text_encoder.state_dict()[k], v) for k, v in initial.items())
    assert not all(torch.equal(trained.text_encoder.state_dict()[k], v) for k, v in initial.items())  # the default trains it
    fresh = shapes_train.build_unet(seed=settings.seed + 2, **unet_levels(settings.unet_channels, settings.top_level_attention)).state_dict()
    assert not all(torch.equal(frozen.unet.state_dict()[k], v) for k, v in fresh.items())  # the UNet did train


def test_relation_labels_mark_every_token_from_the_relation_word_on():
    from nlg.shapes.data import RELATIONS
    from nlg.shapes.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    relation_ids = [tokenizer.convert_tokens_to_ids(r.split()[0] + "</w>") for r in RELATIONS]
    captions = ["a photo of a circle right of a square", "a photo of a red square below a blue triangle",
                "a photo of a triangle left of a circle", "a photo of two circles", ""]
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    labels = shapes_train.relation_labels(ids, relation_ids)
    for row, caption in zip(labels.tolist(), captions):
        relation = next((r for r in RELATIONS if f" {r} " in caption), None)
        # every template word is one token, after <|startoftext|>: the relation's first word is token 1 + its word index
        start = 1 + caption.split().index(relation.split()[0]) if relation else len(row)
        expected = [-100] * start + [RELATIONS.index(relation) if relation else -100] * (len(row) - start)
        assert row == expected, caption
    two = tokenizer(["a circle left of a square above a triangle"], return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="ids"):
        shapes_train.relation_labels(two, relation_ids)


@pytest.mark.slow
def test_the_relation_loss_keeps_left_and_right_apart_and_its_head_is_not_shipped(tmp_path):
    from benchmarks.shapes_relation_probe import encoder_sensitivity
    from nlg.shapes.model import build_text_encoder

    position = dataclasses.replace(TINY, task_weights=(0.0, 0.0, 0.0, 0.0, 1.0, 0.0), ema_decay=None, steps=30)
    meta = train(tmp_path / "relation", settings=dataclasses.replace(position, relation_loss_weight=1.0), progress=False)
    plain_meta = train(tmp_path / "plain", settings=dataclasses.replace(position, relation_loss_weight=0.0), progress=False)
    assert meta["settings"]["relation_loss_weight"] == 1.0 and "relation_loss_weight" not in plain_meta["settings"]
    with_loss, without = load_pipeline(tmp_path / "relation"), load_pipeline(tmp_path / "plain")
    assert set(with_loss.text_encoder.state_dict()) == set(build_text_encoder(seed=0).state_dict())  # no head
    apart = encoder_sensitivity(with_loss, "circle", "square")["right of"]["end"]
    assert apart > 2 * encoder_sensitivity(without, "circle", "square")["right of"]["end"]  # measured 0.26 against 0.06


def test_the_relation_loss_needs_position_captions_and_a_trained_encoder_and_is_left_out_of_old_records():
    for bad in ({"task_weights": (1.0, 1.0, 1.0, 1.0, 0.0, 1.0)}, {"train_text_encoder": False}):
        with pytest.raises(ValueError, match="relation_loss_weight"):
            ShapesTraining(relation_loss_weight=0.1, **bad)
    # a checkpoint written before the field existed holds no such key (it trained without the loss), and must still resume
    assert "relation_loss_weight" not in ShapesTraining(relation_loss_weight=0.0).to_dict()
    assert DEFAULT_TRAINING.to_dict()["relation_loss_weight"] == 0.1


def test_task_weights_and_text_layers_on_the_command_line(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(shapes_train, "train", lambda out, **kw: calls.append(kw["settings"]))
    shapes_train.main(["--quick", "--out", str(tmp_path / "q"), "--task-weights", "1", "0", "0", "0", "3", "0",
                       "--text-layers", "4"])
    assert calls[0].task_weights == (1.0, 0.0, 0.0, 0.0, 3.0, 0.0) and calls[0].text_layers == 4
    assert calls[0].train_text_encoder is True
    shapes_train.main(["--quick", "--out", str(tmp_path / "q"), "--frozen-text-encoder"])
    assert calls[1].train_text_encoder is False and calls[1].steps == shapes_train.QUICK_TRAINING.steps
    shapes_train.main(["--quick", "--out", str(tmp_path / "q"), "--relation-loss", "0.3"])
    assert calls[2].relation_loss_weight == 0.3 and calls[0].relation_loss_weight == 0.1  # the default
    # the default loss is switched off where it has nothing to act on; asked for there, it is refused by name
    assert calls[1].relation_loss_weight == 0.0
    shapes_train.main(["--quick", "--out", str(tmp_path / "q"), "--task-weights", "1", "1", "1", "1", "0", "1"])
    assert calls[3].relation_loss_weight == 0.0
    no_position = ["--task-weights", "1", "1", "1", "1", "0", "1"]
    shapes_train.main(["--quick", "--out", str(tmp_path / "q"), *no_position, "--relation-loss", "0"])
    assert calls[4].relation_loss_weight == 0.0
    for asked in (["--frozen-text-encoder"], no_position):
        with pytest.raises(SystemExit):
            shapes_train.main(["--quick", "--out", str(tmp_path / "q"), *asked, "--relation-loss", "0.1"])
        assert "relation_loss_weight" in capsys.readouterr().err and len(calls) == 5
    with pytest.raises(SystemExit):
        shapes_train.main(["--quick", "--task-weights", "1", "0", "0", "0", "0", "-1"])


def test_mirror_pairs_need_position_captions():
    with pytest.raises(ValueError, match="mirror_pairs"):
        ShapesTraining(mirror_pairs=0.5, task_weights=(1.0, 1.0, 1.0, 1.0, 0.0, 1.0))


def test_mirror_twins_share_their_timestep_and_noise_and_differ_only_in_the_word(monkeypatch):
    from types import SimpleNamespace

    settings = dataclasses.replace(TINY, batch_size=10, mirror_pairs=0.8, caption_dropout=0.5)
    latents = torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(6)[:, None].repeat(1, 5)
    twins = (torch.tensor([1, 4]), -latents[[1, 4]], 100 + torch.tensor([1, 4])[:, None].repeat(1, 5))
    seen = {}
    real = shapes_train.training_batch

    def spy(x, scheduler, **kw):
        seen["x"], out = x, real(x, scheduler, **kw)
        seen["noisy"], seen["t"] = out[0], out[1]
        return out

    monkeypatch.setattr(shapes_train, "training_batch", spy)
    unet = lambda noisy, t, encoder_hidden_states: SimpleNamespace(sample=torch.zeros_like(noisy))  # noqa: E731
    encoder = lambda tokens: (seen.setdefault("tokens", tokens).float()[..., None],)  # noqa: E731
    loss_fn = shapes_train._diffusion_loss(unet, encoder, latents, ids, torch.full((5,), -1), settings, twins)
    loss_fn(0, torch.Generator().manual_seed(3))
    pairs, single = 4, 2  # round(0.8 * 10 / 2) pairs fill 8 of the 10 samples
    x, t, noisy, tokens = seen["x"], seen["t"], seen["noisy"], seen["tokens"]
    alpha = shapes_train.training_scheduler(settings.prediction_type).alphas_cumprod[t].view(-1, 1, 1, 1)
    noise = (noisy - alpha.sqrt() * x) / (1 - alpha).sqrt()
    for i in range(pairs):
        a, b = single + i, single + pairs + i
        assert t[a] == t[b] and torch.allclose(noise[a], noise[b], atol=1e-5)  # the same draw
        assert torch.equal(x[b], -x[a]) and int(tokens[b, 0]) == 100 + int(tokens[a, 0])  # the twin and its caption
        assert (tokens[a] >= 0).all() and (tokens[b] >= 0).all()  # twins are never dropped to the empty prompt
    assert not torch.allclose(noise[0], noise[1])  # unpaired samples draw their own noise


def test_default_unet_levels_are_the_shipped_architecture():
    shipped = json.loads((DEFAULT_FOLDER / "unet" / "config.json").read_text())
    levels = unet_levels(DEFAULT_TRAINING.unet_channels, DEFAULT_TRAINING.top_level_attention)
    assert {k: list(v) for k, v in levels.items()} == {k: shipped[k] for k in levels}


@pytest.mark.parametrize("key, bad", [("latent_rgb_weight", -1.0), ("ema_decay", 1.0), ("steps", 0), ("scenes", 2.5),
                                      ("caption_dropout", 1.0), ("min_snr_gamma", 0.0), ("seed", -1),
                                      ("prediction_type", "sample"), ("unet_channels", (64, 100)),
                                      ("unet_channels", ()), ("unet_channels", (32,) * 5), ("top_level_attention", 1),
                                      ("task_weights", (1.0, 0.0)), ("task_weights", (0.0,) * 6), ("text_layers", 0),
                                      ("mirror_pairs", 1.5), ("mirror_pairs", -0.1), ("coloured_position", 2.0), ("train_text_encoder", 0),
                                      ("relation_loss_weight", -1.0), ("relation_loss_weight", "1")])
def test_bad_settings_name_the_field(key, bad):
    with pytest.raises((TypeError, ValueError), match=key):
        ShapesTraining(**{key: bad})


def test_the_default_settings_are_the_shipped_models():
    # `python -m nlg.shapes.train --threads 1` is the command that reproduces the shipped weights
    record = json.loads(DEFAULT_FOLDER.with_suffix(".json").read_text())
    assert record["settings"] == DEFAULT_TRAINING.to_dict() and record["threads"] == 1
    assert record["sha256"] == shapes_train.safetensors_sha256(DEFAULT_FOLDER)
