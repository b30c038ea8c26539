"""nlg.shapes training: a complete diffusers folder, SD's schedule, metadata with hashes, bit-exact resume."""

import hashlib
import json

import pytest
import torch

from nlg.shapes.train import DEFAULT_TRAINING, train

TINY = dict(DEFAULT_TRAINING, scenes=48, vae_steps=4, vae_batch_size=4, steps=4, batch_size=4)


class Interrupt(Exception):
    pass


def _stop_at(prefix):
    def log(line):
        if line.startswith(prefix):
            raise Interrupt(line)

    return log


def test_training_writes_a_stable_diffusion_folder_and_resumes_bit_exactly(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    whole = train(tmp_path / "whole", settings=TINY, checkpoint_every=2, progress=False, log=lambda _: None)
    with pytest.raises(Interrupt):  # killed right after the first UNet checkpoint
        train(tmp_path / "resumed", settings=TINY, checkpoint_every=2, progress=False, log=_stop_at("UNet step 2/"))
    assert (tmp_path / "resumed.partial" / "checkpoint.pt").is_file() and not (tmp_path / "resumed").exists()
    with pytest.raises(ValueError, match="other settings"):
        train(tmp_path / "resumed", settings=dict(TINY, lr=1e-4), progress=False, log=lambda _: None)
    resumed = train(tmp_path / "resumed", settings=TINY, checkpoint_every=2, progress=False, log=lambda _: None)
    assert not (tmp_path / "resumed.partial").exists()
    assert resumed["sha256"] == whole["sha256"] and len(whole["sha256"]) == 3

    folder = tmp_path / "whole"
    meta = json.loads((tmp_path / "whole.json").read_text())
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert meta["settings"] == TINY and meta["threads"] == 1 and meta["wall_seconds"] > 0
    assert meta["size_bytes"] <= 30e6

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    assert type(pipe) is StableDiffusionPipeline and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert json.loads((folder / "model_index.json").read_text())["requires_safety_checker"] is False
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert torch.allclose(pipe.scheduler.alphas_cumprod.double(), alpha_bar, rtol=1e-5)
    assert abs(float(alpha_bar[999]) - 0.0047) < 1e-4
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    assert pipe.vae.config.scaling_factor == pytest.approx(meta["latent_scaling_factor"])


def test_init_from_keeps_the_vae_and_fine_tunes_unet_and_text_encoder(tmp_path):
    first = train(tmp_path / "first", settings=TINY, progress=False, log=lambda _: None)
    settings = dict(TINY, init_from=str(tmp_path / "first"), steps=2, seed=1, min_snr_gamma=5.0)
    second = train(tmp_path / "second", settings=settings, progress=False, log=lambda _: None)
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert second["sha256"][vae] == first["sha256"][vae] and second["init_from_sha256"] == first["sha256"]
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert second["sha256"][part] != first["sha256"][part]
    assert second["latent_scaling_factor"] == first["latent_scaling_factor"]
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        train(tmp_path / "third", settings=dict(TINY, init_from=str(tmp_path)), progress=False, log=lambda _: None)


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


def test_each_training_option_changes_the_model_and_is_recorded(tmp_path):
    plain = dict(TINY, whiten_latents=False, latent_rgb_weight=None, pyramid_discount=None, low_snr_weight_cap=None)
    base = train(tmp_path / "base", settings=plain, progress=False, log=lambda _: None)
    vae, unet = "vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"
    for key, value, part in (("whiten_latents", True, vae), ("latent_rgb_weight", 1.0, vae),
                             ("pyramid_discount", 0.5, unet), ("low_snr_weight_cap", 20.0, unet)):
        meta = train(tmp_path / key, settings=dict(plain, **{key: value}), progress=False, log=lambda _: None)
        assert meta["settings"][key] == value
        assert meta["sha256"][part] != base["sha256"][part], key
    for key, bad in (("latent_rgb_weight", -1.0), ("pyramid_discount", "0.5"), ("low_snr_weight_cap", 0)):
        with pytest.raises(ValueError, match=key):
            train(tmp_path / "bad", settings=dict(TINY, **{key: bad}), progress=False, log=lambda _: None)
