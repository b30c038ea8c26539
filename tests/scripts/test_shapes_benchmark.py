"""``python -m benchmarks.shapes_geneval`` (quick mode, bootstrap intervals), the shapes demo, and batch-independence of images."""

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from nlg.shapes import load_pipeline
from nlg.shapes.geneval import load_prompts, score_image, task_accuracies
from nlg.shapes.sampling import SamplingConfig, generate, image_seed

ROOT = Path(__file__).resolve().parents[2]


def _benchmark_module():
    return importlib.import_module("benchmarks.shapes_geneval")


def test_bootstrap_interval_is_exact_for_constant_differences_and_brackets_the_mean():
    bench = _benchmark_module()
    tags = ["colors"] * 5 + ["counting"] * 3
    a = np.array([0.0, 0.5, 1.0, 0.25, 0.75, 0.0, 0.5, 1.0])
    same = bench.bootstrap_difference(a, a, tags, seed=0)
    assert all(v == (0.0, 0.0, 0.0) for v in same.values())
    shifted = bench.bootstrap_difference(a, a + 0.25, tags, seed=0)
    assert all(np.allclose(v, 0.25) for v in shifted.values())
    b = np.array([1.0, 0.5, 1.0, 0.75, 0.75, 0.5, 0.5, 0.0])
    diff = bench.bootstrap_difference(a, b, tags, seed=0)
    colors_mean = float(np.mean(b[:5] - a[:5]))
    counting_mean = float(np.mean(b[5:] - a[5:]))
    assert diff["colors"][0] == pytest.approx(colors_mean) and diff["counting"][0] == pytest.approx(counting_mean)
    assert diff["overall"][0] == pytest.approx((colors_mean + counting_mean) / 2)
    for mean, low, high in diff.values():
        assert low <= mean <= high
    # the interval of a task lies within the range of its per-image differences
    assert min(b[:5] - a[:5]) <= diff["colors"][1] and diff["colors"][2] <= max(b[:5] - a[:5])


@pytest.mark.slow
def test_quick_benchmark_writes_consistent_csv_markdown_and_plot(tmp_path):
    bench = _benchmark_module()
    bench.main(["--quick", "--out-dir", str(tmp_path), "--cache", str(tmp_path / "cache")])
    rows = list(csv.DictReader((tmp_path / "shapes_geneval.csv").open()))
    assert (tmp_path / "shapes_geneval.png").stat().st_size > 0
    markdown = (tmp_path / "shapes_geneval.md").read_text()
    assert "sha256" in markdown and "| CFG 1 |" in markdown
    configs = {r["config"] for r in rows}
    assert {"CFG 1", "CFG 4", "CFG 1 + NLG K=2 η=10"} <= configs
    # recompute every accuracy from the cached images with the scorer
    prompts = [p for t in ("single_object", "two_object", "counting", "colors", "position", "color_attr")
               for p in [q for q in load_prompts() if q["tag"] == t][:2]]
    cached_files = sorted((tmp_path / "cache").glob("*.json"))
    assert len(cached_files) == len(configs)
    for cached in cached_files:
        record = json.loads(cached.read_text())
        images = np.load(cached.with_name(cached.stem + "_images.npy"))
        correct = [score_image(im, p)["correct"] for im, p in zip(images, prompts)]
        accuracy = task_accuracies([p["tag"] for p in prompts], correct)
        mine = {r["task"]: float(r["accuracy"]) for r in rows if r["config"] == record["name"]}
        assert mine == pytest.approx({k: round(v, 4) for k, v in accuracy.items()})
    nlg_overall = next(r for r in rows if r["config"].startswith("CFG 1 + NLG") and r["task"] == "overall")
    plain_overall = next(r for r in rows if r["config"] == "CFG 1" and r["task"] == "overall")
    assert float(nlg_overall["diff_vs_plain"]) == pytest.approx(
        float(nlg_overall["accuracy"]) - float(plain_overall["accuracy"]), abs=1e-3)
    assert float(nlg_overall["ci_low"]) <= float(nlg_overall["diff_vs_plain"]) <= float(nlg_overall["ci_high"])


def test_images_do_not_depend_on_the_batch_size():
    pipe = load_pipeline()
    texts = ["a photo of a red circle", "a photo of two squares", "a photo of a triangle above a circle"]
    seeds = [image_seed(3, i, 0) for i in range(3)]
    for config in (SamplingConfig(3.0), SamplingConfig(3.0, 2, 1.0)):
        together = generate(pipe, texts, seeds, config, num_inference_steps=4, batch_size=3)
        alone = generate(pipe, texts, seeds, config, num_inference_steps=4, batch_size=1)
        assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # float reductions may differ by one level


def test_demo_writes_a_grid_and_returns_every_arm(tmp_path, capsys):
    from nlg.shapes.demo import run_demo

    accuracy = run_demo(images_per_prompt=1, prompts_per_task=1, refining_steps=2, num_inference_steps=4,
                        out=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert set(accuracy) == {"CFG 1", "CFG 1 + NLG K=2", "CFG 3", "CFG 3 + NLG K=2"}
    assert set(accuracy["CFG 1"]) == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"}
    assert "overall" in capsys.readouterr().out


def test_bootstrap_resamples_seeds_within_each_prompt():
    bench = _benchmark_module()
    tags = ["colors"] * 8
    prompts = [0, 0, 0, 0, 1, 1, 1, 1]
    a = np.zeros(8)
    b = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # prompt 0 always gains, prompt 1 never
    within = bench.bootstrap_difference(a, b, tags, seed=0, prompts=prompts)
    assert within["colors"] == pytest.approx((0.5, 0.5, 0.5))  # every resample keeps 4 images of each prompt
    pooled = bench.bootstrap_difference(a, b, tags, seed=0)
    assert pooled["colors"][1] < 0.5 < pooled["colors"][2]  # pooling over the task mixes the prompts
