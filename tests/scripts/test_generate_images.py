"""``core_experiments/generate_images.py`` on a tiny SD-2.1-shaped pipeline saved to disk (CPU, offline).

Caption ids, folder names and saved pixels are checked against ``tests/helpers/reference_fixture.py``, an
independent statement of the reference scripts' behaviour; NLG step norms against a plain loop over the
UNet written here; the sampler's batch (CFG on/off) with a forward hook on the UNet.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from PIL import Image

import nlg.eval.generation_run as generation_run
from nlg.eval import Manifest, image_generator, run_folder_name
from nlg.testing import save_tiny_pipeline
from tests.helpers.experiments import base_args, cpu_launch, load_script, run_folder
from tests.helpers.reference_fixture import reference_caption_ids, reference_folder_name, reference_pixels

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "core_experiments" / "generate_images.py"
CAPTIONS = [
    "a cat sitting on a red sofa",
    "ein Hund läuft über die Straße 🐕",
    "東京の夜景、ネオンの光",
    "a very long caption " + "with many words " * 40,  # far beyond 77 tokens: truncated like the pipeline does
    "a bowl of fruit",
    "two boats on a lake at dawn",
    "Ελληνικά γράμματα on a sign",
    "a small house",
]
# Every run here shares these flags, so the images of all runs can be compared with each other.
COMMON = ["--total_images", "6", "--refining_steps", "3", "--inference_steps", "12", "--scheduler", "euler_a",
          "--add_noise", "--noise_level", "0.01", "--clip_grads", "--clip_threshold", "0.5", "--normalize_latents",
          "--height", "16", "--width", "16", "--seed", "7"]


gen = load_script(SCRIPT)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    model = save_tiny_pipeline(root / "sd21", "sd21")
    captions = root / "captions.json"
    annotations = [{"id": 1000 + 7 * i, "image_id": 50 + i, "caption": c} for i, c in enumerate(CAPTIONS)]
    captions.write_text(json.dumps({"annotations": annotations}, ensure_ascii=False), encoding="utf-8")
    return {"root": root, "model": model, "captions": captions}


def images(folder: Path) -> Dict[int, np.ndarray]:
    return {int(p.stem): np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in folder.glob("*.png")}


def assert_same_images(a: Dict[int, np.ndarray], b: Dict[int, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 1, f"image {key} differs by more than 1/255"


def expected_ids(count: int, seed: int) -> List[int]:
    """The first ``count`` ids of Python's ``random.shuffle`` of the annotations after ``random.seed(seed)``.

    For seed 0 this is the reference fixture; other seeds state the same rule for ``--seed``."""
    import random

    order = list(range(len(CAPTIONS)))
    random.Random(seed).shuffle(order)
    return [1000 + 7 * i for i in order[:count]]


@pytest.fixture(scope="module")
def reference(assets) -> Path:
    """An uninterrupted single-process run with batch size 3."""
    out = assets["root"] / "reference"
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "3"]) == 0
    return run_folder(out)


def load_plain(assets: Dict[str, Path], scheduler: str = "DPMSolverMultistepScheduler"):
    """The saved pipeline loaded with diffusers directly (not through the script)."""
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(assets["model"], local_files_only=True)
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_loop_step_norms(pipe, caption: str, generator: torch.Generator, *, steps: int, step_size: float,
                          clip_threshold, noise_level: float, normalize: bool, alpha_bar: float,
                          fixed_z: Optional[torch.Tensor] = None) -> List[float]:
    """NLG's published update written out on the UNet, for one image of 16×16 pixels (8×8 latents).

    n ~ N(0, I) is the image's first draw (as diffusers' ``randn_tensor`` with one generator per image);
    each step: v for [n, n] with (negative, positive) prompt at t = 999, ε = √ᾱ v + √(1−ᾱ) n,
    d = ε_c − ε_u, record ‖d‖, clip to τ, n ← n − η d + √λ z (z from the same generator, or ``fixed_z`` at
    every step), rescale to √D.
    """
    shape = (4, 8, 8)
    n = torch.randn((1, *shape), generator=generator)
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(caption, "cpu", 1, True)
        embeds = torch.cat([negative, positive])
        norms = []
        for _ in range(steps):
            x = torch.cat([n, n])
            v = pipe.unet(x, torch.tensor(999), encoder_hidden_states=embeds).sample
            eps = math.sqrt(alpha_bar) * v + math.sqrt(1 - alpha_bar) * x
            d = eps[1:] - eps[:1]
            norm = float(d.norm())
            norms.append(norm)
            if clip_threshold is not None and norm > clip_threshold:
                d = d * (clip_threshold / norm)
            n = n - step_size * d
            if noise_level:
                z = torch.randn(shape, generator=generator) if fixed_z is None else fixed_z
                n = n + math.sqrt(noise_level) * z
            if normalize:
                n = n / n.norm() * math.sqrt(n.numel())
    return norms


def test_reference_flags_give_the_reference_caption_ids_and_folder(assets):
    out = assets["root"] / "documented"
    documented = ("--refining_steps 20 --total_images 4 --clip_grads --normalize_latents --guidance_level 0.0 "
                  "--clip_threshold 0.5 --add_noise --noise_level 0.001").split()
    assert gen.main(base_args(assets, out) + documented + ["--height", "16", "--width", "16"]) == 0
    folder = run_folder(out)
    assert folder.name == reference_folder_name(documented)
    assert "-step_size_1-" in folder.name  # the reference's int default, not 1.0
    ids = reference_caption_ids(assets["captions"], 4)
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == sorted(ids)
    for p in folder.glob("*.png"):
        with Image.open(p) as im:
            assert im.size == (16, 16)
    records = Manifest(folder / "manifest.jsonl").records()
    assert sorted(records) == sorted(ids)
    by_id = {1000 + 7 * i: c for i, c in enumerate(CAPTIONS)}
    for caption_id, record in records.items():
        assert record["caption"] == by_id[caption_id]  # Unicode and over-long captions kept whole
        assert record["flags"]["clip_grads"] and record["flags"]["noise_level"] == 0.001
        assert len(record["step_norms"]) == 20
    # The recorded step norms are those of a plain loop over the UNet with the documented options.
    pipe = load_plain(assets)
    alpha_bar = float(pipe.scheduler.alphas_cumprod[999])
    for caption_id in ids[:2]:
        expected = plain_loop_step_norms(pipe, by_id[caption_id], image_generator(0, caption_id), steps=20,
                                         step_size=1.0, clip_threshold=0.5, noise_level=0.001, normalize=True,
                                         alpha_bar=alpha_bar)
        np.testing.assert_allclose(records[caption_id]["step_norms"], expected, rtol=1e-4, atol=1e-6)


def test_reference_noise_bug_repeats_one_numpy_draw_per_batch_position(assets):
    out = assets["root"] / "noise_bug"
    flags = ("--refining_steps 4 --total_images 5 --batch_size 2 --normalize_latents --guidance_level 0.0 "
             "--add_noise --noise_level 0.05 --height 16 --width 16 --reference_noise_bug").split()
    assert gen.main(base_args(assets, out) + flags) == 0
    records = Manifest(run_folder(out) / "manifest.jsonl").records()
    ids = reference_caption_ids(assets["captions"], 5)  # the reference's order: batches [0, 1], [2, 3], [4]
    table = torch.from_numpy(np.random.RandomState(0).randn(2, 4, 8, 8)).float()  # the reference's one draw
    pipe = load_plain(assets)
    alpha_bar = float(pipe.scheduler.alphas_cumprod[999])
    by_id = {1000 + 7 * i: c for i, c in enumerate(CAPTIONS)}
    for position, caption_id in enumerate(ids):
        expected = plain_loop_step_norms(pipe, by_id[caption_id], image_generator(0, caption_id), steps=4,
                                         step_size=1.0, clip_threshold=None, noise_level=0.05, normalize=True,
                                         alpha_bar=alpha_bar, fixed_z=table[position % 2])
        np.testing.assert_allclose(records[caption_id]["step_norms"], expected, rtol=1e-4, atol=1e-6)
    fresh = plain_loop_step_norms(pipe, by_id[ids[0]], image_generator(0, ids[0]), steps=4, step_size=1.0,
                                  clip_threshold=None, noise_level=0.05, normalize=True, alpha_bar=alpha_bar)
    assert not np.allclose(records[ids[0]]["step_norms"], fresh, rtol=1e-4)  # the flag changes the run
    with pytest.raises(ValueError, match="--add_noise"):
        gen.main(base_args(assets, assets["root"] / "noise_bug2") + ["--reference_noise_bug"])


@pytest.mark.parametrize(
    "argv",
    [[], ["--step_size", "1"], ["--step_size", "1.0"], ["--step_size", "0.5", "--guidance_level", "0"],
     ["--refining_steps", "20", "--clip_grads", "--clip_threshold", "0.5", "--normalize_latents", "--add_noise",
      "--noise_level", "0.001", "--guidance_formula", "--boundary_control", "--inference_steps", "50"]],
)
def test_folder_name_equals_the_reference_for_the_same_flags(argv):
    required = ["--output_dir", "o", "--prompts_path", "p"]
    assert run_folder_name(gen.build_parser().parse_args(required + argv)) == reference_folder_name(argv)


def test_saved_pixels_are_the_pipelines_float_images_truncated(assets):
    out = assets["root"] / "pixels"
    flags = ["--refining_steps", "0", "--total_images", "2", "--inference_steps", "3", "--scheduler", "euler",
             "--height", "16", "--width", "16", "--batch_size", "1"]
    assert gen.main(base_args(assets, out) + flags) == 0
    folder = run_folder(out)
    pipe = load_plain(assets, "EulerDiscreteScheduler")
    by_id = {1000 + 7 * i: c for i, c in enumerate(CAPTIONS)}
    rounded_differs = False
    for caption_id in reference_caption_ids(assets["captions"], 2):
        with torch.no_grad():
            floats = pipe(by_id[caption_id], generator=image_generator(0, caption_id), num_inference_steps=3,
                          height=16, width=16, output_type="np").images
        saved = np.asarray(Image.open(folder / f"{caption_id}.png"))
        np.testing.assert_array_equal(saved, reference_pixels(floats)[0])
        rounded_differs |= bool((np.round(floats[0] * 255).astype(np.uint8) != saved).any())
    assert rounded_differs, "rounding and truncation should differ somewhere, or this test shows nothing"


@pytest.mark.parametrize("guidance_level, sampler_batch", [("0.0", 1), ("1.0", 1), ("7.5", 2)])
def test_unet_batch_is_b_without_cfg_and_2b_with_it(assets, tmp_path, monkeypatch, guidance_level, sampler_batch):
    """B = 3 images: NLG's direction always evaluates [n, n] (2B); the sampler does so only with CFG (scale > 1)."""
    batches: List[int] = []
    load = generation_run.load_pipeline

    def load_with_counter(*args, **kwargs):
        pipe = load(*args, **kwargs)
        pipe.unet.register_forward_pre_hook(lambda module, a, kw: batches.append(int(a[0].shape[0])), with_kwargs=True)
        return pipe

    monkeypatch.setattr(generation_run, "load_pipeline", load_with_counter)
    flags = ["--refining_steps", "1", "--total_images", "3", "--batch_size", "3", "--inference_steps", "2",
             "--height", "16", "--width", "16", "--guidance_level", guidance_level]
    assert gen.main(base_args(assets, tmp_path) + flags) == 0
    assert batches == [6, 3 * sampler_batch, 3 * sampler_batch]


def test_reference_sigma_bug_flag_reproduces_the_references_conversion(assets, tmp_path):
    """The first --batch_size reference captions are converted with σ of t = 0 (ᾱ = ᾱ₀); later ones with the
    σ of the sampler's first timestep after ``set_timesteps`` (this saved config has "leading" spacing, so
    that is not t = 999 here)."""
    flags = ["--refining_steps", "2", "--total_images", "3", "--batch_size", "2", "--inference_steps", "2",
             "--height", "16", "--width", "16", "--reference_sigma_bug"]
    assert gen.main(base_args(assets, tmp_path) + flags) == 0
    records = Manifest(run_folder(tmp_path) / "manifest.jsonl").records()
    ids = reference_caption_ids(assets["captions"], 3)
    pipe = load_plain(assets)
    alphas = pipe.scheduler.alphas_cumprod
    pipe.scheduler.set_timesteps(2)
    sigma_later = float(pipe.scheduler.sigmas[0])
    by_id = {1000 + 7 * i: c for i, c in enumerate(CAPTIONS)}
    plain = dict(steps=2, step_size=1.0, clip_threshold=None, noise_level=0.0, normalize=False)
    for caption_id, alpha_bar in zip(ids, [float(alphas[0]), float(alphas[0]), 1 / (1 + sigma_later**2)]):
        expected = plain_loop_step_norms(pipe, by_id[caption_id], image_generator(0, caption_id), alpha_bar=alpha_bar, **plain)
        np.testing.assert_allclose(records[caption_id]["step_norms"], expected, rtol=1e-4, atol=1e-6)
    correct = plain_loop_step_norms(pipe, by_id[ids[0]], image_generator(0, ids[0]), alpha_bar=float(alphas[999]), **plain)
    assert abs(records[ids[0]]["step_norms"][0] - correct[0]) > 0.5 * correct[0], "the bug must change the first batch"


def test_images_do_not_depend_on_batch_size(assets, reference):
    out = assets["root"] / "batch1"
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "1"]) == 0
    assert sorted(images(reference)) == sorted(expected_ids(6, seed=7))
    assert_same_images(images(run_folder(out)), images(reference))


@pytest.mark.slow
def test_kill_mid_run_then_resume(assets, reference):
    out = assets["root"] / "killed"
    cmd = [sys.executable, str(SCRIPT)] + base_args(assets, out) + COMMON + ["--batch_size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and any(out.iterdir()):
                manifest = run_folder(out) / "manifest.jsonl"
                if manifest.exists() and len(Manifest(manifest).records()) >= 2:
                    break  # the first batch is done; the second one is under way
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    folder = run_folder(out)
    partial = sorted(folder.glob("*.png"))
    assert 2 <= len(partial) < 6
    for p in partial:  # whatever is there is a whole image
        with Image.open(p) as im:
            im.load()
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in partial}
    # A restart script that always passes --overwrite: same settings, so it resumes and deletes nothing.
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "2", "--overwrite"]) == 0
    for name, (inode, mtime, data) in kept.items():
        p = folder / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (inode, mtime, data), f"{name} was rewritten"
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == sorted(expected_ids(6, seed=7))
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == [".run.lock"], f"temporary files left behind: {leftovers}"  # the (empty) lock file stays
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(expected_ids(6, seed=7))  # each id exactly once
    assert_same_images(images(folder), images(reference))


@pytest.mark.slow
def test_two_processes_cover_every_id_once(assets, reference):
    out = assets["root"] / "two_procs"
    launch, env = cpu_launch(SCRIPT, 2)
    cmd = launch + base_args(assets, out) + COMMON + ["--batch_size", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = run_folder(out)
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    by_process = {}
    for record in lines:
        by_process.setdefault(record["process_index"], []).append(record["id"])
    assert sorted(by_process) == [0, 1], "both processes must have generated images"
    assert not set(by_process[0]) & set(by_process[1])
    assert sorted(by_process[0] + by_process[1]) == sorted(expected_ids(6, seed=7))
    assert_same_images(images(folder), images(reference))


def _tree(path: Path) -> Dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "content, message",
    [(None, "prompts_path"), ("{not json", "prompts_path"), ('{"images": []}', "annotations"),
     ('{"annotations": [{"id": 1}]}', "caption"), ('{"annotations": [{"id": 1, "caption": "a"}, {"id": 1, "caption": "b"}]}', "more than once")],
)
def test_bad_captions_file_is_refused_and_nothing_written(assets, tmp_path, content, message):
    path = tmp_path / "captions.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--output_dir", str(out), "--prompts_path", str(path), "--stable_diffusion_path", str(assets["model"])]
    with pytest.raises(ValueError, match=message):
        gen.main(args)
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [("--total_images", "9", "total_images"), ("--batch_size", "0", "batch_size"),
                                                   ("--height", "20", "height"), ("--step_size", "-1", "step_size")])
def test_bad_options_are_refused_and_nothing_written(assets, tmp_path, flag, value, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        gen.main(base_args(assets, out) + [flag, value])
    assert not out.exists()


def test_folder_of_another_run_is_refused_unless_overwrite(assets, tmp_path):
    out = tmp_path / "out"
    small = ["--total_images", "1", "--inference_steps", "1", "--height", "16", "--width", "16"]
    assert gen.main(base_args(assets, out) + small) == 0
    before = _tree(out)
    with pytest.raises(ValueError, match="different settings.*seed"):
        gen.main(base_args(assets, out) + small + ["--seed", "1"])
    assert _tree(out) == before
    folder = run_folder(out)
    (folder / "run_config.json").unlink()  # images of unknown provenance
    with pytest.raises(ValueError, match="unknown settings"):
        gen.main(base_args(assets, out) + small)
    assert gen.main(base_args(assets, out) + small + ["--seed", "1", "--overwrite"]) == 0
    assert json.loads((folder / "run_config.json").read_text())["seed"] == 1
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == expected_ids(1, seed=1)


def test_overwrite_with_the_same_settings_resumes_and_keeps_every_image(assets, tmp_path):
    small = ["--inference_steps", "1", "--height", "16", "--width", "16", "--refining_steps", "1"]
    assert gen.main(base_args(assets, tmp_path) + small + ["--total_images", "2"]) == 0
    folder = run_folder(tmp_path)
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.png")}
    assert len(first) == 2
    for _ in range(2):  # --total_images is not a setting: a larger run continues the same folder
        assert gen.main(base_args(assets, tmp_path) + small + ["--total_images", "3", "--overwrite"]) == 0
    for name, (inode, mtime, data) in first.items():
        p = folder / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (inode, mtime, data), f"{name} was rewritten"
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == sorted(expected_ids(3, seed=0))
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(expected_ids(3, seed=0))  # each id once: nothing redone
    # Other settings: --overwrite replaces the run, and only then.
    assert gen.main(base_args(assets, tmp_path) + small + ["--total_images", "1", "--seed", "3", "--overwrite"]) == 0
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == expected_ids(1, seed=3)
    assert len((folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_overwrite_refuses_to_delete_a_live_runs_images(assets, tmp_path):
    import fcntl

    small = ["--total_images", "1", "--inference_steps", "1", "--height", "16", "--width", "16"]
    assert gen.main(base_args(assets, tmp_path) + small) == 0
    folder = run_folder(tmp_path)
    before = _tree(tmp_path)
    live = os.open(folder / ".run.lock", os.O_RDWR)  # another process of a live run holds the folder
    fcntl.flock(live, fcntl.LOCK_SH)
    try:
        with pytest.raises(ValueError, match="live run is writing"):
            gen.main(base_args(assets, tmp_path) + small + ["--seed", "5", "--overwrite"])
        assert _tree(tmp_path) == before
    finally:
        os.close(live)
    assert gen.main(base_args(assets, tmp_path) + small + ["--seed", "5", "--overwrite"]) == 0  # once it is gone
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == expected_ids(1, seed=5)


def test_the_same_local_model_spelled_differently_is_the_same_run(assets, tmp_path, monkeypatch):
    small = ["--total_images", "1", "--inference_steps", "1", "--height", "16", "--width", "16"]
    assert gen.main(base_args(assets, tmp_path) + small) == 0
    images = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in run_folder(tmp_path).glob("*.png")}
    args = base_args(assets, tmp_path)
    i = args.index("--stable_diffusion_path") + 1
    model = Path(args[i])
    monkeypatch.chdir(model.parent)
    args[i] = f"./{model.name}/"  # relative, with a trailing slash
    assert gen.main(args + small + ["--total_images", "2", "--overwrite"]) == 0  # resumes: nothing deleted
    for name, kept in images.items():
        p = run_folder(tmp_path) / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == kept, f"{name} was rewritten"


def test_manifest_ignores_and_repairs_a_torn_last_line(tmp_path):
    manifest = Manifest(tmp_path / "m.jsonl")
    manifest.append([{"id": 1, "caption": "ü"}, {"id": 2, "caption": "b"}])
    with open(manifest.path, "ab") as handle:
        handle.write(b'{"id": 3, "capt')  # a write cut short by kill -9
    assert sorted(manifest.records()) == [1, 2]
    manifest.repair()
    manifest.append([{"id": 4, "caption": "d"}])
    assert sorted(manifest.records()) == [1, 2, 4]
    assert manifest.records()[1]["caption"] == "ü"
