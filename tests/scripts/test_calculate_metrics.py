"""``core_experiments/calculate_metrics.py`` on random-weight networks with the real architectures (CPU, offline).

The script's figures are checked against a straightforward one-image-at-a-time computation, done the
way the public reference scripts do it: torchvision transforms, and torchmetrics' own
``FrechetInceptionDistance`` / ``InceptionScore`` fed one image per update, with FID's real images the
subset ``tests/helpers/reference_fixture.py`` states the reference picks (Python ``random`` after the captions).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.inception import InceptionScore

from nlg.testing import save_random_inception_weights, save_tiny_clip
from tests.helpers.experiments import cpu_launch, load_script
from tests.helpers.reference_fixture import reference_fid_real_files

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "core_experiments" / "calculate_metrics.py"
CAPTIONS = {
    101: "a cat on a sofa",
    102: "ein Hund läuft über die Straße 🐕",
    103: "東京の夜景",
    104: "a caption far too long for CLIP " + "and it goes on " * 30,
    105: "a bowl of fruit",
    106: "a corrupt file",
    107: "an image that was never generated",
}
CORRUPT = 106
LOADED_SCORES = {101: 50.0, 102: 1.0, 103: 40.0, 104: -0.5, 105: 30.0}  # another run's list: bottom 2 = 104, 102


metrics_script = load_script(SCRIPT)


def _pattern(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A smooth random colour field plus fine noise, uint8 (H, W, 3)."""
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    image = 0.8 * smooth + 0.2 * torch.rand(3, height, width, generator=generator)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("metrics")
    g = torch.Generator().manual_seed(0)
    fake, real = root / "fake", root / "real"
    fake.mkdir()
    real.mkdir()
    for caption_id in range(101, 106):
        Image.fromarray(_pattern(g, 32, 32).numpy()).save(fake / f"{caption_id}.png")
    (fake / f"{CORRUPT}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (fake / "manifest.jsonl").write_text("{}\n")  # other files in the folder are ignored
    sizes = [(40, 60), (64, 48), (33, 33), (50, 80), (70, 70), (45, 30), (60, 40), (52, 52), (36, 64), (64, 36), (48, 48)]
    for i, (h, w) in enumerate(sizes):  # 10 *.jpg for 6 fakes: which 6 the FID uses matters
        array = _pattern(g, h, w).numpy()
        if i == 2:
            Image.fromarray(array[..., 0]).save(real / f"COCO_{i:03d}.jpg")  # greyscale, as some COCO images are
        elif i == 4:
            Image.fromarray(array).convert("RGBA").save(real / f"COCO_{i:03d}.png")
        else:
            Image.fromarray(array).save(real / f"COCO_{i:03d}.jpg", quality=95)
    captions = root / "captions.json"
    annotations = [{"id": i, "image_id": 9000 + i, "caption": c} for i, c in CAPTIONS.items()]
    captions.write_text(json.dumps({"annotations": annotations}, ensure_ascii=False), encoding="utf-8")
    loaded = root / "other_run_scores.csv"
    with open(loaded, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image_id", "caption", "clip_score"])
        for caption_id, score in LOADED_SCORES.items():
            writer.writerow([caption_id, 9000 + caption_id, CAPTIONS[caption_id], score])
    inception = save_random_inception_weights(root / "inception.pt", generator=torch.Generator().manual_seed(1))
    clip = save_tiny_clip(root / "clip", generator=torch.Generator().manual_seed(2))
    return dict(root=root, fake=fake, real=real, captions=captions, loaded=loaded, inception=inception, clip=clip)


def base_args(assets: Dict[str, Path], out: Path) -> List[str]:
    return ["--real_image_dir", str(assets["real"]), "--fake_image_dir", str(assets["fake"]),
            "--prompts_path", str(assets["captions"]), "--inception_weights", str(assets["inception"]),
            "--clip_model", str(assets["clip"]), "--local_files_only", "--is_splits", "2", "--bottom_k", "2",
            "--batch_size", "4", "--num_workers", "1", "--output_json", str(out / "metrics.json")]


def full_args(assets: Dict[str, Path], out: Path) -> List[str]:
    return base_args(assets, out) + ["--skip_bad_images", "--clip_scores_save_path", str(out / "scores.csv"),
                                     "--clip_scores_load_path", str(assets["loaded"])]


@pytest.fixture(scope="module")
def full_run(assets) -> Path:
    out = assets["root"] / "run1"
    out.mkdir()
    assert metrics_script.main(full_args(assets, out)) == 0
    return out


def _tensor(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def straightforward(assets) -> Dict[str, Any]:
    """The reference way: every image opened, transformed and fed on its own."""
    to_299 = T.Compose([T.Resize((299, 299)), T.ToTensor(), T.Lambda(lambda x: (x * 255).byte())])
    to_224 = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Lambda(lambda x: (x * 255).byte())])
    fake_ids = [i for i in range(101, 106)]
    fakes = [Image.open(assets["fake"] / f"{i}.png").convert("RGB") for i in fake_ids]
    subset = reference_fid_real_files(assets["captions"], assets["real"], 6)  # as many as the 6 <id>.png files
    reals = [Image.open(assets["real"] / name).convert("RGB") for name in subset]
    others = sorted(p.name for p in assets["real"].glob("*.jpg") if p.name not in subset)

    torch.manual_seed(0)  # the reference seeds torch once, then builds FID's and IS's InceptionV3 ...
    fid = FrechetInceptionDistance(feature_extractor_weights_path=str(assets["inception"]))
    logits = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased"],
                                feature_extractor_weights_path=str(assets["inception"]))
    inception_score = InceptionScore(feature=logits, splits=2)
    for image in fakes:
        fid.update(to_299(image)[None], real=False)
        inception_score.update(to_299(image)[None])
    for image in reals:
        fid.update(to_299(image)[None], real=True)
    is_mean, is_std = inception_score.compute()  # ... and draws the split permutation with no reseeding
    other_fid = FrechetInceptionDistance(feature_extractor_weights_path=str(assets["inception"]))
    for image in fakes:
        other_fid.update(to_299(image)[None], real=False)
    for image in reals[: 6 - len(others[:3])] + [Image.open(assets["real"] / n).convert("RGB") for n in others[:3]]:
        other_fid.update(to_299(image)[None], real=True)

    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(assets["clip"], local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(assets["clip"], local_files_only=True)
    scores = {}
    with torch.no_grad():
        for caption_id, image in zip(fake_ids, fakes):
            pixels = processor(images=[to_224(image)], return_tensors="pt")["pixel_values"]
            text = processor(text=[CAPTIONS[caption_id]], return_tensors="pt", padding=True)
            image_features = _tensor(model.get_image_features(pixel_values=pixels))
            text_features = _tensor(model.get_text_features(input_ids=text["input_ids"][:, :77],
                                                            attention_mask=text["attention_mask"][:, :77]))
            scores[caption_id] = 100 * torch.cosine_similarity(image_features, text_features).item()
    lowest = sorted(scores.values())[:2]
    return {
        "fid": float(fid.compute()),
        "inception_score": float(is_mean),
        "inception_score_std": float(is_std),
        "clip_score": max(sum(scores.values()) / len(scores), 0.0),
        "clip_score_bottom_k": max(sum(lowest) / 2, 0.0),
        "clip_score_bottom_k_loaded": max((scores[104] + scores[102]) / 2, 0.0),
        "scores": scores,
        "fid_other_subset": float(other_fid.compute()),
    }


@pytest.mark.slow
def test_figures_match_one_image_at_a_time_computation(full_run, straightforward):
    figures = json.loads((full_run / "metrics.json").read_text(encoding="utf-8"))
    for key in ("fid", "inception_score", "inception_score_std", "clip_score", "clip_score_bottom_k",
                "clip_score_bottom_k_loaded"):
        assert figures[key] == pytest.approx(straightforward[key], rel=1e-4, abs=1e-4), key
    # Identical predictions give IS = 1 up to float32 rounding (~1e-6); 1e-4 above that means the IS
    # comparison above compared real class distributions.
    assert figures["inception_score"] > 1 + 1e-4, "the random Inception should give a non-trivial Inception Score"
    # Another real subset (3 of the 6 swapped) gives another FID: the subset check above has teeth.
    assert abs(straightforward["fid_other_subset"] - figures["fid"]) > 1e-2 * abs(figures["fid"])
    assert figures["num_fake"] == 5 and figures["num_real"] == 6 and figures["bottom_k"] == 2
    assert figures["skipped_images"] == [str(Path(full_run.parent / "fake" / f"{CORRUPT}.png"))]


@pytest.mark.slow
def test_a_skipped_image_among_the_loaded_bottom_k_is_named_not_fatal(assets, full_run, straightforward, tmp_path):
    loaded = tmp_path / "with_corrupt.csv"
    with open(loaded, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image_id", "caption", "clip_score"])
        for caption_id, score in {**LOADED_SCORES, CORRUPT: -9.0}.items():  # bottom 2 = 106 (unreadable), 104
            writer.writerow([caption_id, 9000 + caption_id, CAPTIONS[caption_id], score])
    args = base_args(assets, tmp_path) + ["--skip_bad_images", "--clip_scores_load_path", str(loaded)]
    assert metrics_script.main(args) == 0
    figures = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert figures["clip_score_bottom_k_loaded_unscored_ids"] == [CORRUPT]
    assert figures["clip_score_bottom_k_loaded"] == pytest.approx(max(straightforward["scores"][104], 0.0), abs=1e-4)
    assert figures["fid"] == pytest.approx(straightforward["fid"], rel=1e-4)


@pytest.mark.slow
def test_per_image_scores_are_saved_with_their_captions(full_run, straightforward):
    with open(full_run / "scores.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in rows] == [101, 102, 103, 104, 105]
    for row in rows:
        assert row["caption"] == CAPTIONS[int(row["id"])]
        assert int(row["image_id"]) == 9000 + int(row["id"])
        assert float(row["clip_score"]) == pytest.approx(straightforward["scores"][int(row["id"])], rel=1e-4, abs=1e-4)


@pytest.mark.slow
def test_two_processes_give_the_single_process_figures(assets, full_run):
    out = assets["root"] / "two_procs"
    out.mkdir()
    launch, env = cpu_launch(SCRIPT, 2)
    args = full_args(assets, out)
    args[args.index("--batch_size") + 1] = "1"  # several batches per process, 3 and 2 of them: gathers must stay paired
    cmd = launch + args
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((full_run / "metrics.json").read_text(encoding="utf-8"))
    two = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert two["settings"]["num_processes"] == 2
    for key in ("fid", "inception_score", "inception_score_std", "clip_score", "clip_score_bottom_k",
                "clip_score_bottom_k_loaded", "num_fake", "num_real"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-4), key
    assert two["skipped_images"] == one["skipped_images"]
    assert (out / "scores.csv").read_text(encoding="utf-8").count("\n") == 6


def test_unreadable_image_stops_by_default_and_writes_nothing(assets, tmp_path):
    with pytest.raises(ValueError, match=f"unreadable image .*{CORRUPT}.png"):
        metrics_script.main(base_args(assets, tmp_path) + ["--clip_scores_save_path", str(tmp_path / "s.csv")])
    assert list(tmp_path.iterdir()) == []


def _bad_case(assets: Dict[str, Path], tmp: Path, case: str) -> List[str]:
    args = base_args(assets, tmp)
    def replace(flag: str, value: str) -> List[str]:
        i = args.index(flag)
        return args[:i + 1] + [value] + args[i + 2:]
    if case == "empty_real":
        (tmp / "empty").mkdir()
        return replace("--real_image_dir", str(tmp / "empty"))
    if case == "too_few_real":
        (tmp / "few").mkdir()
        Image.new("RGB", (8, 8)).save(tmp / "few" / "a.jpg")
        return replace("--real_image_dir", str(tmp / "few"))
    if case == "no_fake_dir":
        return replace("--fake_image_dir", str(tmp / "missing"))
    if case == "captions_without_ids":
        (tmp / "c.json").write_text(json.dumps({"annotations": [{"id": 1, "caption": "x"}]}))
        return replace("--prompts_path", str(tmp / "c.json"))
    if case == "captions_malformed":
        (tmp / "c.json").write_text('{"annotations": ')
        return replace("--prompts_path", str(tmp / "c.json"))
    if case == "load_path_ids_missing":
        (tmp / "l.csv").write_text("id,clip_score\n107,1.0\n101,2.0\n")
        return args + ["--clip_scores_load_path", str(tmp / "l.csv")]
    if case == "load_path_columns":
        (tmp / "l.csv").write_text("name,score\n101,1.0\n")
        return args + ["--clip_scores_load_path", str(tmp / "l.csv")]
    if case == "save_path_folder":
        return args + ["--clip_scores_save_path", str(tmp / "nowhere" / "s.csv")]
    if case == "inception_weights":
        return replace("--inception_weights", str(tmp / "missing.pt"))
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, message",
    [("empty_real", "real_image_dir.*no images"), ("too_few_real", "real_image_dir.*need as many"),
     ("no_fake_dir", "fake_image_dir"), ("captions_without_ids", "prompts_path.*no caption"),
     ("captions_malformed", "prompts_path.*JSON"), ("load_path_ids_missing", "clip_scores_load_path.*107"),
     ("load_path_columns", "clip_scores_load_path.*columns"), ("save_path_folder", "clip_scores_save_path"),
     ("inception_weights", "inception_weights")],
)
def test_bad_input_is_refused_and_nothing_written(assets, tmp_path, case, message):
    args = _bad_case(assets, tmp_path, case)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=message):
        metrics_script.main(args)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
