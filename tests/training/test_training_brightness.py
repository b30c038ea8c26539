"""Brightness metrics against straightforward computations, the shifted data's law, and the
experiment's --quick mode end to end."""

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nlg.training.brightness import brightness_report, mean_brightness, rbf_mmd2, shift_brightness

ROOT = Path(__file__).resolve().parents[2]


def test_rbf_mmd2_matches_a_double_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 1, 2, 3, generator=g), torch.randn(9, 1, 2, 3, generator=g) + 0.5
    xs, ys = x.flatten(1).double().numpy(), y.flatten(1).double().numpy()
    dists = [np.linalg.norm(ys[i] - ys[j]) for i in range(9) for j in range(i + 1, 9)]
    h = float(np.median(dists))
    k = lambda a, b: math.exp(-np.sum((a - b) ** 2) / (2 * h * h))  # noqa: E731
    xx = sum(k(xs[i], xs[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(ys[i], ys[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(xs[i], ys[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert rbf_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    assert rbf_mmd2(x, y, bandwidth=0.7) != pytest.approx(rbf_mmd2(x, y))


def test_rbf_mmd2_separates_distributions():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 1, 4, 4, generator=g), torch.randn(400, 1, 4, 4, generator=g)
    same, shifted = rbf_mmd2(a, b), rbf_mmd2(a + 0.5, b)
    assert abs(same) < 0.01 and shifted > 10 * abs(same)


def test_brightness_report_matches_direct_formulas():
    g = torch.Generator().manual_seed(2)
    gen, ref = torch.rand(500, 1, 8, 8, generator=g) * 2 - 1.2, torch.rand(500, 1, 8, 8, generator=g) * 2 - 1
    report = brightness_report(gen, ref)
    bg, br = gen.double().mean(dim=(1, 2, 3)).numpy(), ref.double().mean(dim=(1, 2, 3)).numpy()
    # W1 of two equal-size empirical distributions = mean gap between sorted values
    assert report["w1_brightness"] == pytest.approx(np.abs(np.sort(bg) - np.sort(br)).mean(), rel=1e-9)
    lo, hi = np.sort(br)[int(0.05 * 499)], np.sort(br)[int(round(0.95 * 499))]
    assert abs(report["share_below_p5"] - (bg < lo).mean()) <= 2 / 500
    assert abs(report["share_above_p95"] - (bg > hi).mean()) <= 2 / 500
    assert report["brightness_mean"] == pytest.approx(bg.mean()) and report["brightness_std"] == pytest.approx(bg.std())


def test_shift_brightness_law():
    images = torch.zeros(20000, 1, 2, 2)
    shifted, b = shift_brightness(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mean_brightness(shifted), b)  # zero images: no clamping, b is the mean
    extreme = b.abs() >= 0.5
    assert extreme.float().mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / 20000) + 0.005)
    assert (b[extreme].abs() <= 1.0).all() and (b[~extreme].abs() <= 0.2).all()
    assert (b[extreme] < 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    clipped, _ = shift_brightness(torch.ones(50, 1, 2, 2), generator=torch.Generator().manual_seed(4))
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(extreme_share=-0.1), "extreme_share"), (dict(extreme_share=1.5), "extreme_share"),
     (dict(extreme_range=(0.9, 0.5)), "extreme_range"), (dict(mild_range=-0.1), "mild_range")],
)
def test_shift_brightness_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        shift_brightness(torch.zeros(2, 1, 2, 2), **kwargs)


def _w1_between_cdfs(a: np.ndarray, b: np.ndarray) -> float:
    """W1 of two 1-D empirical distributions: ∫|F_a − F_b|, exact for step CDFs."""
    xs = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), xs[:-1], side="right") / len(a)
    fb = np.searchsorted(np.sort(b), xs[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(xs)))


@pytest.mark.slow
def test_experiment_quick_mode_writes_its_outputs(tmp_path):
    spec = importlib.util.spec_from_file_location("brightness_experiment", ROOT / "core_experiments" / "brightness_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = module.main(["--quick", "--output_dir", str(tmp_path)])
    with (tmp_path / "brightness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["real (train split)", *module.ARMS]
    assert [r["method"] for r in records] == [r["method"] for r in rows]
    # Each row's figures are those of a set of samples the run produced (the arms' cached samples, and the
    # real row's 40 training images), recomputed here: W1 as the area between the two empirical CDFs,
    # shares against the held-out reference's 5th/95th percentiles.  Different arms give different
    # figures, so a row written with another arm's samples fails.
    reference, _ = module.shifted_data("test", 1, 1000)
    train, _ = module.shifted_data("train", 1, 0)
    candidates = [torch.load(p)["samples"] for p in sorted((tmp_path / "cache").glob("*.pt"))]
    candidates.append(train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:40]])
    b_ref = reference.double().flatten(1).mean(1).numpy()
    p5, p95 = np.percentile(b_ref, [5, 95])
    direct = []
    for samples in candidates:
        b = samples.double().flatten(1).mean(1).numpy()
        direct.append((_w1_between_cdfs(b, b_ref), float((b < p5).mean()), float((b > p95).mean())))
    assert len(candidates) == len(rows)
    for row in rows:
        figures = (float(row["w1_brightness"]), float(row["share_below_p5"]), float(row["share_above_p95"]))
        # The CSV keeps 5 decimals: agreement to half a unit of the last one.
        assert any(figures == pytest.approx(d, abs=5.001e-6) for d in direct), (row["method"], figures, direct)
        assert math.isfinite(float(row["mmd2_rbf"])) and int(row["n"]) == 40
    for png in ("brightness_hist.png", "brightness_grid.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "run.json").is_file()
