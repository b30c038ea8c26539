"""The COCO experiment scripts end to end on nlg's own shapes model (issue 11, part 3): offline, CPU.

``generate_images.py`` runs on the shipped shapes pipeline from a COCO-format captions JSON of
mini-GenEval prompts; ``calculate_metrics.py`` scores it with the shapes scorer's features
(``--feature_extractor shapes``, torchmetrics' custom-feature route) and the mini-GenEval accuracy.
The figures are checked against direct computations: GenEval with the scorer applied to each saved
image, FID with the Fréchet distance of the two feature sets computed here with SciPy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.linalg import sqrtm

from nlg.eval.datasets import write_geneval_captions
from nlg.shapes.features import ShapesFeatures
from nlg.shapes import render, scene_from_seed
from nlg.shapes.geneval import load_prompts, score_image, task_accuracies
from tests.helpers.experiments import load_script
from tests.helpers.reference_fixture import reference_caption_ids

ROOT = Path(__file__).resolve().parents[2]
gen = load_script(ROOT / "core_experiments" / "generate_images.py")
metrics_script = load_script(ROOT / "core_experiments" / "calculate_metrics.py")
pytestmark = pytest.mark.slow  # one module-wide run of both scripts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    prompts = []
    for task in ("single_object", "colors", "counting", "two_object", "position", "color_attr"):
        prompts += load_prompts(tasks=[task])[:2]
    captions = write_geneval_captions(root / "captions.json", prompts, images_per_prompt=1)
    flags = ["--output_dir", str(root / "out"), "--prompts_path", str(captions), "--stable_diffusion_path", "shapes",
             "--total_images", "8", "--batch_size", "8", "--inference_steps", "20", "--scheduler", "ddim",
             "--guidance_level", "3.0", "--refining_steps", "20", "--clip_grads", "--clip_threshold", "0.5",
             "--normalize_latents", "--add_noise", "--noise_level", "0.001"]
    assert gen.main(flags) == 0
    (folder,) = [p for p in (root / "out").iterdir() if p.is_dir()]
    real = root / "real"
    real.mkdir()
    for seed in range(12):
        Image.fromarray(render(scene_from_seed(10_000 + seed).objects)).save(real / f"scene_{seed:03d}.png")
    out = root / "metrics.json"
    assert metrics_script.main([
        "--real_image_dir", str(real), "--fake_image_dir", str(folder), "--prompts_path", str(captions),
        "--feature_extractor", "shapes", "--clip_model", "none", "--geneval", "--real_image_glob", "*.png",
        "--is_splits", "2", "--num_workers", "0", "--output_json", str(out),
    ]) == 0
    return dict(root=root, captions=captions, folder=folder, real=real, figures=json.loads(out.read_text()))


def test_generation_makes_the_reference_selection_of_shapes_prompts(run):
    ids = sorted(int(p.stem) for p in run["folder"].glob("*.png"))
    assert ids == sorted(reference_caption_ids(run["captions"], 8))
    for caption_id in ids:
        with Image.open(run["folder"] / f"{caption_id}.png") as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_geneval_accuracy_is_the_scorer_applied_to_every_saved_image(run):
    annotations = {a["id"]: a["geneval"] for a in json.loads(run["captions"].read_text())["annotations"]}
    tags, correct, off = [], [], []
    for path in sorted(run["folder"].glob("*.png")):
        metadata = annotations[int(path.stem)]
        result = score_image(np.asarray(Image.open(path).convert("RGB")), metadata)
        tags.append(metadata["tag"])
        correct.append(result["correct"])
        off.append(result["off_palette"])
    expected = task_accuracies(tags, correct)
    got = run["figures"]["geneval"]
    assert {k: got[k] for k in expected} == expected
    assert got["images"] == 8 and got["off_palette"] == pytest.approx(sum(off) / 8)


def test_fid_is_the_frechet_distance_of_the_shapes_features(run):
    features = ShapesFeatures()

    def stats(paths):
        images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
                              for p in paths])
        x = features(images)[0].numpy()
        return x.mean(0), np.cov(x, rowvar=False)

    fake = sorted(run["folder"].glob("*.png"))
    from nlg.eval.datasets import real_images

    reals = real_images(run["real"], len(fake), num_captions=12, pattern="*.png")
    (m1, c1), (m2, c2) = stats(fake), stats(reals)
    expected = float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2))))
    assert run["figures"]["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert run["figures"]["num_fake"] == 8 and run["figures"]["num_real"] == 8
    assert run["figures"]["clip_score"] is None  # no CLIP model: not computed, written as null
