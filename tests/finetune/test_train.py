"""``python -m nlg.finetune`` end to end on a tiny SD pipeline: ``--quick`` saves a LoRA that ``load_lora_weights``
loads (giving the trained UNet's output), resume after a kill is bit-exact, and bad input fails before training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from nlg.finetune import FinetuneConfig, finetune, load_images, prepare, read_image_folder
from nlg.finetune.cli import main

from .conftest import write_images


def _unet_output(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=g)
    hidden = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 700]), encoder_hidden_states=hidden).sample


@pytest.mark.slow
def test_quick_run_saves_a_lora_that_load_lora_weights_loads(tiny_model, images, tmp_path):
    out = tmp_path / "lora"
    config = FinetuneConfig(model=str(tiny_model), data_dir=images, output_dir=out, steps=4, lr=3e-2, rank=4, alpha=8.0,
                            checkpoint_every=2, batch_size=2, offset_noise=0.1, timestep_type="sigmoid")
    prepared = prepare(config)
    meta = finetune(config, prepared=prepared, progress=False, command="python -m nlg.finetune --test")
    assert sorted(p.name for p in out.iterdir()) == ["pytorch_lora_weights.safetensors", "training_args.json"]
    saved = json.loads((out / "training_args.json").read_text())
    assert saved == meta and saved["command"] == "python -m nlg.finetune --test"
    assert saved["settings"]["alpha"] == 8.0 and saved["settings"]["offset_noise"] == 0.1
    assert set(saved["settings"]) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    keys = load_file(out / "pytorch_lora_weights.safetensors").keys()
    assert keys and all(k.startswith("unet.") for k in keys)
    assert {k.split(".lora")[0].rsplit(".", 1)[-1] for k in keys} == {"to_q", "to_k", "to_v", "0"}  # to_out.0

    trained_unet = _unet_output(prepared.pipe.unet)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    before = _unet_output(pipe.unet)
    pipe.load_lora_weights(out)
    after = _unet_output(pipe.unet)
    assert (after - before).abs().max() > 1e-4  # the LoRA changes the UNet ...
    torch.testing.assert_close(after, trained_unet, rtol=1e-4, atol=1e-5)  # ... into the trained one (α/r kept)


@pytest.mark.slow
def test_text_encoder_lora_trains_and_loads_or_is_refused_by_name(tiny_model, images, tmp_path):
    """With a peft that transformers accepts, the text-encoder LoRA round-trips through load_lora_weights;
    with an older one (transformers 5 wants peft >= 0.22) it is refused before anything is written."""
    from importlib.metadata import version

    from packaging.version import Version
    from transformers.integrations.peft import MIN_PEFT_VERSION

    out = tmp_path / "te"
    config = FinetuneConfig(model=str(tiny_model), data_dir=images, output_dir=out, steps=2, lr=3e-2, checkpoint_every=2,
                            train_text_encoder=True)
    if Version(version("peft")) < Version(MIN_PEFT_VERSION):
        with pytest.raises(ValueError, match=f"train_text_encoder needs peft >= {MIN_PEFT_VERSION}"):
            prepare(config)
        assert not out.exists()
        return
    prepared = prepare(config)
    finetune(config, prepared=prepared, progress=False)
    ids = torch.arange(10)[None]
    trained = prepared.pipe.text_encoder(ids)[0].detach()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    before = pipe.text_encoder(ids)[0].detach()
    pipe.load_lora_weights(out)
    after = pipe.text_encoder(ids)[0].detach()
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, trained, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_command_line_quick_run(tiny_model, images, tmp_path, capsys):
    out = tmp_path / "cli"
    meta = main(["--model", str(tiny_model), "--data_dir", str(images), "--output_dir", str(out), "--quick",
                 "--no_progress", "--pyramid_noise", "2", "--save_every", "2"])
    assert meta["settings"]["steps"] == 6 and meta["settings"]["pyramid_noise"] == 2
    assert (out / "pytorch_lora_weights.safetensors").is_file() and not (out / "checkpoint.pt").exists()
    assert sorted(p.name for p in out.glob("step-*")) == ["step-2", "step-4"]
    assert "load_lora_weights" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_a_kill_is_bit_exact(tiny_model, images, tmp_path):
    def config(out):
        return FinetuneConfig(model=str(tiny_model), data_dir=images, output_dir=out, steps=6, lr=1e-2, checkpoint_every=2,
                              batch_size=2, gradient_accumulation_steps=2, caption_dropout=0.5, probabilistic_offset="balanced",
                              seed=4)

    finetune(config(tmp_path / "straight"), progress=False)
    straight = load_file(tmp_path / "straight" / "pytorch_lora_weights.safetensors")

    def killed_at_step_3(info):
        if info["step"] == 3:
            raise KeyboardInterrupt  # as kill -9 after step 3: the last checkpoint holds step 2

    killed = config(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        finetune(killed, progress=False, callback=killed_at_step_3)
    assert (killed.output_dir / "checkpoint.pt").is_file()
    assert not (killed.output_dir / "pytorch_lora_weights.safetensors").exists()
    meta = finetune(killed, progress=False)  # a fresh pipeline, as a new process: resumes automatically
    assert meta["resumed_from"] == 2
    resumed = load_file(killed.output_dir / "pytorch_lora_weights.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert any(not torch.equal(straight[k], torch.zeros_like(straight[k])) for k in straight if "lora_B" in k or "lora.up" in k)


def test_metadata_jsonl_and_txt_captions_are_read(tmp_path):
    jsonl = read_image_folder(write_images(tmp_path / "a", 3, captions="jsonl"))
    txt = read_image_folder(write_images(tmp_path / "b", 3, captions="txt"))
    assert [(p.name, c) for p, c in jsonl] == [(p.name, c) for p, c in txt] == [
        (f"img{i}.png", f"a red thing number {i}") for i in range(3)]


def test_images_are_resized_on_the_shorter_side_and_centre_cropped(tmp_path):
    from PIL import Image

    wide = np.zeros((32, 64, 3), dtype=np.uint8)  # height 32 = resolution: no resize, crop columns 16 … 47
    wide[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
    Image.fromarray(wide).save(tmp_path / "wide.png")
    tensor = load_images([tmp_path / "wide.png"], 32)[0]
    assert tensor.shape == (3, 32, 32)
    expected = torch.from_numpy(wide[:, 16:48].astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    assert torch.equal(tensor, expected)


def _sdxl_folder(tmp_path):
    folder = tmp_path / "xl"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return folder


def _flux_folder(tmp_path):
    folder = tmp_path / "flux"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    return folder


BAD = [
    ("empty folder", lambda t, m, d: ["--data_dir", str((t / "empty").mkdir() or t / "empty")], "holds no images"),
    ("missing folder", lambda t, m, d: ["--data_dir", str(t / "nope")], "is not a folder"),
    ("image without caption", lambda t, m, d: ["--data_dir", str(_uncaptioned(t))], "without a caption: img1.png"),
    ("unknown option", lambda t, m, d: ["--offset_nosie", "0.1"], "unrecognized arguments: --offset_nosie"),
    ("negative lr", lambda t, m, d: ["--lr", "-1"], "lr must be"),
    ("zero rank", lambda t, m, d: ["--rank", "0"], "rank must be >= 1"),
    ("non-number", lambda t, m, d: ["--steps", "ten"], "argument --steps: invalid int value"),
    ("caption dropout 1", lambda t, m, d: ["--caption_dropout", "1"], "caption_dropout must be in"),
    ("unknown timestep type", lambda t, m, d: ["--timestep_type", "cosine"], "argument --timestep_type: invalid choice"),
    ("offset and probabilistic", lambda t, m, d: ["--offset_noise", "0.1", "--probabilistic_offset", "balanced"],
     "either offset_noise"),
    ("shift with weighted", lambda t, m, d: ["--timestep_type", "weighted", "--timestep_shift", "2"], "timestep_shift"),
    ("fp16", lambda t, m, d: ["--mixed_precision", "fp16"], "argument --mixed_precision: invalid choice"),
    ("zero SNR on epsilon", lambda t, m, d: ["--zero_terminal_snr"], "zero_terminal_snr needs v-prediction"),
    ("resolution", lambda t, m, d: ["--resolution", "33"], "resolution must be a multiple"),
    ("sdxl", lambda t, m, d: ["--model", str(_sdxl_folder(t))], "SDXL is not supported"),
    ("not SD", lambda t, m, d: ["--model", str(_flux_folder(t))], "FluxPipeline, not a Stable Diffusion"),
    ("not a pipeline", lambda t, m, d: ["--model", str(d)], "no model_index.json"),
    ("absent Hub id offline", lambda t, m, d: ["--model", "nlg-tests/no-such-pipeline", "--local_files_only"],
     "cannot read a diffusers pipeline"),
]


def _uncaptioned(tmp_path):
    folder = write_images(tmp_path / "uncaptioned", 3)
    (folder / "img1.txt").unlink()
    return folder


@pytest.mark.parametrize("make, message", [(m, msg) for _, m, msg in BAD], ids=[name for name, _, _ in BAD])
def test_bad_input_fails_with_one_line_before_training(tiny_model, images, tmp_path, capsys, make, message):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model), "--data_dir", str(images), "--output_dir", str(out), "--quick",
            *make(tmp_path, tiny_model, images)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0], error
    assert not out.exists()  # nothing written: no checkpoint, no LoRA


@pytest.mark.slow
def test_zero_terminal_snr_on_a_v_prediction_model_saves_the_scheduler_to_sample_with(tmp_path, images):
    from diffusers import DDIMScheduler

    from nlg.testing import save_tiny_pipeline

    model = save_tiny_pipeline(tmp_path / "sd21", "sd21")
    out = tmp_path / "zsnr"
    meta = main(["--model", str(model), "--data_dir", str(images), "--output_dir", str(out), "--quick", "--no_progress",
                 "--zero_terminal_snr", "--min_snr_gamma", "5"])
    assert meta["prediction_type"] == "v_prediction"
    pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True)
    pipe.load_lora_weights(out)
    pipe.scheduler = DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    assert pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.timestep_spacing == "trailing"
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0  # sqrt(abar_T) = 0: the chain ends in pure noise
    image = pipe("a red thing", num_inference_steps=2, guidance_scale=3.0, guidance_rescale=0.7, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
