"""``core_experiments/generate_images.py`` on a tiny SD-2.1-shaped pipeline saved to disk (CPU, offline)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from nlg import NoiseLevelGuidance
from nlg.eval.runs import Manifest, image_generator
from tests.helpers.experiments import cpu_launch, load_script, single_thread
from tests.helpers.tiny import save_tiny_pipeline, tiny_sd_pipeline

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():  # tiny models on a shared 2-core machine: no oversubscription
        yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    model = save_tiny_pipeline(root / "sd21", "sd21")
    captions = root / "captions.json"
    annotations = [{"id": 1000 + 7 * i, "image_id": 50 + i, "caption": c} for i, c in enumerate(CAPTIONS)]
    captions.write_text(json.dumps({"annotations": annotations}, ensure_ascii=False), encoding="utf-8")
    return {"root": root, "model": model, "captions": captions}


def base_args(assets: Dict[str, Path], out: Path) -> List[str]:
    return ["--output_dir", str(out), "--prompts_path", str(assets["captions"]),
            "--stable_diffusion_path", str(assets["model"]), "--local_files_only"]


def run_folder(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def images(folder: Path) -> Dict[int, np.ndarray]:
    return {int(p.stem): np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in folder.glob("*.png")}


def assert_same_images(a: Dict[int, np.ndarray], b: Dict[int, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 1, f"image {key} differs by more than 1/255"


def expected_ids(count: int, seed: int) -> List[int]:
    """The first ``count`` ids of the seeded shuffle, computed here with torch.randperm directly."""
    order = torch.randperm(len(CAPTIONS), generator=torch.Generator().manual_seed(seed)).tolist()
    return [1000 + 7 * i for i in order[:count]]


@pytest.fixture(scope="module")
def reference(assets) -> Path:
    """An uninterrupted single-process run with batch size 3."""
    out = assets["root"] / "reference"
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "3"]) == 0
    return run_folder(out)


def test_documented_command_runs_as_written(assets):
    out = assets["root"] / "documented"
    documented = ("--refining_steps 20 --total_images 4 --clip_grads --normalize_latents --guidance_level 0.0 "
                  "--clip_threshold 0.5 --add_noise --noise_level 0.001").split()
    assert gen.main(base_args(assets, out) + documented + ["--height", "16", "--width", "16"]) == 0
    folder = run_folder(out)
    assert folder.name.startswith("images-guidance_0.0-inf_steps_20-ref_steps_20-")
    ids = expected_ids(4, seed=0)
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
    # The recorded step norms are those of NLG with the documented options and the image's own generator.
    pipe = tiny_sd_pipeline("v_prediction")
    nlg = NoiseLevelGuidance(refining_steps=20, step_size=1.0, clip_threshold=0.5, noise_level=0.001,
                             normalize_latents=True)
    first = ids[0]
    expected = nlg.refine(pipe, by_id[first], generator=image_generator(0, first), height=16, width=16).step_norms
    np.testing.assert_allclose(records[first]["step_norms"], expected[:, 0].numpy(), rtol=1e-4, atol=1e-6)


def test_images_do_not_depend_on_batch_size(assets, reference):
    out = assets["root"] / "batch1"
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "1"]) == 0
    assert sorted(images(reference)) == sorted(expected_ids(6, seed=7))
    assert_same_images(images(run_folder(out)), images(reference))


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
    assert gen.main(base_args(assets, out) + COMMON + ["--batch_size", "2"]) == 0
    assert sorted(int(p.stem) for p in folder.glob("*.png")) == sorted(expected_ids(6, seed=7))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(expected_ids(6, seed=7))  # each id exactly once
    assert_same_images(images(folder), images(reference))


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
