"""``python -m nlg.shapes.demo``: the grid is written and every arm comes back with its per-task accuracies."""

import pytest

from nlg.shapes.data import TASKS
from nlg.shapes.demo import run_demo


def test_demo_writes_a_grid_and_returns_every_arm(tmp_path, capsys):
    accuracy = run_demo(images_per_prompt=1, prompts_per_task=1, refining_steps=2, num_inference_steps=4,
                        out=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert set(accuracy) == {"CFG 1", "CFG 1 + NLG K=2", "CFG 2", "CFG 2 + NLG K=2"}
    for arm in accuracy.values():
        assert set(arm) == set(TASKS) | {"overall"}
        # one image per task: every task accuracy is 0 or 1, and overall is GenEval's mean over the six tasks
        assert all(arm[t] in (0.0, 1.0) for t in TASKS)
        assert arm["overall"] == pytest.approx(sum(arm[t] for t in TASKS) / len(TASKS))
    assert "overall" in capsys.readouterr().out
