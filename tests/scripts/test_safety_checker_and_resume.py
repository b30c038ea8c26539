"""``generate_images.py`` with a safety checker, ``--disable_safety_checker`` and ``--previous_model_id``, and what
``calculate_metrics.py`` reports about blacked-out images and half-finished folders (tiny SD 1.5-shaped pipeline, CPU).

The fake safety checker flags the images of chosen pipeline calls and blacks them out as diffusers' checker does;
which images were flagged is read back from the saved pixels (all zero), independently of the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Set

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.experiments import base_args, load_script, run_folder
from nlg.testing import save_tiny_pipeline

pytestmark = pytest.mark.slow  # each test runs a script on a pipeline loaded from disk

ROOT = Path(__file__).resolve().parents[2]
gen = load_script(ROOT / "core_experiments" / "generate_images.py")
metrics_script = load_script(ROOT / "core_experiments" / "calculate_metrics.py")
SMALL = ["--inference_steps", "2", "--refining_steps", "1", "--height", "16", "--width", "16", "--batch_size", "1",
         "--scheduler", "euler", "--total_images", "5"]


class FlaggingChecker(torch.nn.Module):
    """Flags every image of the pipeline calls numbered in ``flag_calls`` (0-based) and blacks it out, as
    diffusers' ``StableDiffusionSafetyChecker`` does (zeros; the pipeline then skips denormalising it)."""

    def __init__(self, flag_calls: Set[int]) -> None:
        super().__init__()
        self.flag_calls, self.calls, self.flagged = set(flag_calls), 0, 0
        self.register_buffer("anchor", torch.zeros(1))  # gives the pipeline a dtype and a device to read

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, images, clip_input):  # noqa: ANN001
        flag = self.calls in self.flag_calls
        self.calls += 1
        flags = [flag] * len(images)
        for i in range(len(images)):
            if flag:
                images[i] = torch.zeros_like(images[i]) if torch.is_tensor(images) else np.zeros_like(images[i])
                self.flagged += 1
        return images, flags


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("safety")
    model = save_tiny_pipeline(root / "sd15", "sd15")
    captions = root / "captions.json"
    annotations = [{"id": 40 + i, "image_id": 900 + i, "caption": f"a picture of object {i}"} for i in range(6)]
    captions.write_text(json.dumps({"annotations": annotations}), encoding="utf-8")
    return {"root": root, "model": model, "captions": captions}


def pixels(folder: Path) -> Dict[int, np.ndarray]:
    return {int(p.stem): np.asarray(Image.open(p).convert("RGB")) for p in folder.glob("*.png")}


def manifest(folder: Path) -> Dict[int, dict]:
    lines = (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


@pytest.fixture
def with_checker(monkeypatch):
    """Every pipeline loaded by the script gets a fresh :class:`FlaggingChecker` (flagging calls 1 and 3)."""
    import diffusers
    from transformers import CLIPImageProcessor

    checkers: List[FlaggingChecker] = []
    load = diffusers.DiffusionPipeline.from_pretrained

    def load_with_checker(*args, **kwargs):
        pipe = load(*args, **kwargs)
        checkers.append(FlaggingChecker({1, 3}))
        pipe.safety_checker = checkers[-1]
        pipe.feature_extractor = CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
        return pipe

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", load_with_checker)
    return checkers


def test_blacked_out_images_are_recorded_counted_and_the_flag_turns_the_checker_off(assets, tmp_path, with_checker, capsys):
    on, off = tmp_path / "on", tmp_path / "off"
    assert gen.main(base_args(assets, on) + SMALL) == 0
    out = capsys.readouterr()
    (checker,) = with_checker
    images = pixels(run_folder(on))
    black = {i for i, image in images.items() if not image.any()}
    assert checker.calls == 5 and checker.flagged == 2 and len(black) == 2
    records = manifest(run_folder(on))
    assert {i for i, r in records.items() if r["blacked_out"]} == black
    assert "5/5 images" in out.out and "2 blacked out by the safety checker" in out.out
    assert "--disable_safety_checker" in out.err

    assert gen.main(base_args(assets, off) + SMALL + ["--disable_safety_checker"]) == 0
    out = capsys.readouterr()
    assert with_checker[1].calls == 0  # removed before sampling: never asked
    plain = pixels(run_folder(off))
    assert all(image.any() for image in plain.values())
    assert not any(r["blacked_out"] for r in manifest(run_folder(off)).values())
    assert "0 blacked out" in out.out
    assert json.loads((run_folder(off) / "run_config.json").read_text())["safety_checker"] is False
    for i in set(images) - black:  # the checker changed nothing else
        assert np.array_equal(images[i], plain[i])


def test_a_folder_of_a_removed_model_id_resumes_with_previous_model_id(assets, tmp_path):
    small = ["--inference_steps", "1", "--height", "16", "--width", "16", "--total_images", "2"]
    assert gen.main(base_args(assets, tmp_path) + small) == 0
    folder = run_folder(tmp_path)
    config_path = folder / "run_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["stable_diffusion_path"] = "fake-org/removed-model"  # as if recorded under a Hub id that no longer exists
    config_path.write_text(json.dumps(config), encoding="utf-8")
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.png")}

    with pytest.raises(ValueError, match="--previous_model_id fake-org/removed-model"):
        gen.main(base_args(assets, tmp_path) + small)
    assert gen.main(base_args(assets, tmp_path) + small + ["--previous_model_id", "fake-org/removed-model"]) == 0
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.png")} == kept  # resumed, not redone
    recorded = json.loads(config_path.read_text(encoding="utf-8"))
    assert recorded["stable_diffusion_path"] == str(assets["model"].resolve())
    assert recorded["changes"] == [{"setting": "stable_diffusion_path", "from": "fake-org/removed-model",
                                    "to": str(assets["model"].resolve())}]
    assert gen.main(base_args(assets, tmp_path) + small + ["--total_images", "3"]) == 0  # plain command from now on
    assert len(list(folder.glob("*.png"))) == 3


def _metrics_folder(root: Path, ids: List[int], black: Set[int], total_images: int) -> Path:
    """A generated folder written by hand: random 16-px images (black where listed) and their manifest."""
    g = np.random.default_rng(0)
    root.mkdir()
    lines = []
    for i in ids:
        image = np.zeros((16, 16, 3), np.uint8) if i in black else g.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"{i}.png")
        lines.append(json.dumps({"id": i, "caption": "c", "blacked_out": i in black, "total_images": total_images}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("total_images, warned", [(5, True), (3, False)])
def test_metrics_report_blacked_out_images_and_warn_on_a_half_finished_folder(assets, tmp_path, capsys, total_images, warned):
    fake = _metrics_folder(tmp_path / "fake", [40, 41, 42], black={41}, total_images=total_images)
    real = tmp_path / "real"
    real.mkdir()
    g = np.random.default_rng(1)
    for k in range(6):
        Image.fromarray(g.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(real / f"r{k}.png")
    out_json = tmp_path / "m.json"
    assert metrics_script.main(["--real_image_dir", str(real), "--fake_image_dir", str(fake), "--prompts_path",
                                str(assets["captions"]), "--feature_extractor", "shapes", "--clip_model", "none",
                                "--real_image_glob", "*.png", "--num_workers", "0", "--is_splits", "1",
                                "--output_json", str(out_json)]) == 0
    figures = json.loads(out_json.read_text(encoding="utf-8"))
    err = capsys.readouterr().err
    assert figures["blacked_out_images"] == 1 and figures["requested_images"] == total_images
    half = [w for w in figures["warnings"] if "half-finished" in w]
    assert bool(half) == warned and (f"warning: {half[0]}" in err if warned else "half-finished" not in err)
    if warned:
        assert "holds 3 of the 5 images" in half[0]
