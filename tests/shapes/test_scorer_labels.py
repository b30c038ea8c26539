"""nlg.shapes.labels: contact sheets, the labels file, and the scorer's agreement with human verdicts."""

import json
import math

import numpy as np
import pytest

from nlg.shapes.data import ShapeObject, render
from nlg.shapes.labels import agreement, contact_sheet, read_labels, sample_labelling_set, score_labels, write_labelling_set


def test_agreement_matches_a_hand_computed_example():
    human = [True, True, False, False, True, False, True, True]
    scorer = [True, False, False, True, True, False, True, False]
    tasks = ["colors", "colors", "colors", "colors", "position", "position", "position", "position"]
    table = agreement(human, scorer, tasks)
    assert list(table) == ["colors", "position", "overall"]
    # overall: a = 3 (both correct: 0, 4, 6), b = 1 (scorer only: 3), c = 2 (human only: 1, 7), d = 2 (2, 5)
    overall = table["overall"]
    assert (overall["both_correct"], overall["scorer_only"], overall["human_only"], overall["both_incorrect"]) == (3, 1, 2, 2)
    # p_o = 5/8; p_e = ((3+1)(3+2) + (2+2)(1+2)) / 64 = 32/64; kappa = (5/8 - 1/2) / (1/2) = 1/4
    assert math.isclose(overall["accuracy"], 0.625) and math.isclose(overall["kappa"], 0.25)
    # colors: a = 1, b = 1, c = 1, d = 1 -> p_o = 1/2, p_e = (2·2 + 2·2)/16 = 1/2, kappa = 0
    assert table["colors"]["n"] == 4 and math.isclose(table["colors"]["accuracy"], 0.5)
    assert math.isclose(table["colors"]["kappa"], 0.0)
    # position: a = 2, b = 0, c = 1, d = 1 -> p_o = 3/4, p_e = (2·3 + 2·1)/16 = 1/2, kappa = 1/2
    assert math.isclose(table["position"]["accuracy"], 0.75) and math.isclose(table["position"]["kappa"], 0.5)
    one_verdict = agreement([True, True], [True, True], ["colors", "colors"])["colors"]
    assert one_verdict["accuracy"] == 1.0 and math.isnan(one_verdict["kappa"])
    with pytest.raises(ValueError, match="one length"):
        agreement([True], [True, False], ["colors"])


def test_contact_sheet_shows_each_image_upscaled_nearest(tmp_path):
    from PIL import Image

    images = [render([ShapeObject("circle", "red", 4, 4, 12)]), render([ShapeObject("square", "blue", 10, 2, 9)]),
              render([ShapeObject("triangle", "green", 0, 20, 12)])]
    path = contact_sheet(images, ["a photo of a red circle", "a photo of a blue square", "a photo of a green triangle"],
                         tmp_path / "sheet.png", columns=2, scale=4)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    for image in images:  # each image appears upscaled 4× somewhere on the sheet
        big = np.kron(image, np.ones((4, 4, 1), dtype=np.uint8))
        h, w = sheet.shape[0] - 127, sheet.shape[1] - 127
        corners = ((sheet[:h, :w] == big[0, 0]) & (sheet[127:, 127:] == big[-1, -1])).all(axis=-1)
        hits = [(y, x) for y, x in zip(*np.nonzero(corners)) if np.array_equal(sheet[y : y + 128, x : x + 128], big)]
        assert len(hits) == 1
    with pytest.raises(ValueError, match="one length"):
        contact_sheet(images, ["a photo of a circle"], tmp_path / "bad.png")


def test_labelling_set_round_trip_and_agreement(tmp_path):
    good = render([ShapeObject("circle", "red", 8, 8, 14)])
    wrong_colour = render([ShapeObject("square", "blue", 8, 8, 12)])
    images = [good, wrong_colour, good]
    prompts = ["a photo of a red circle", "a photo of a red square", "a photo of a circle"]
    labels = write_labelling_set(images, prompts, tmp_path, per_sheet=2)
    assert sorted(p.name for p in tmp_path.glob("contact_sheet_*.png")) == ["contact_sheet_00.png", "contact_sheet_01.png"]
    assert read_labels(labels) == []  # nothing labelled yet
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    rows[0].update(verdict="correct")
    rows[1].update(verdict="incorrect", reason="wrong colour")
    rows[2].update(verdict="incorrect", reason="missing object")  # a human who disagrees with the scorer
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_labels(labels)
    assert [r["scorer_verdict"] for r in result["rows"]] == ["correct", "incorrect", "correct"]
    assert result["rows"][1]["scorer_reason"] == "wrong colour"
    table = result["agreement"]
    assert table["colors"]["accuracy"] == 1.0 and table["single_object"]["human_only"] == 0
    assert table["single_object"]["scorer_only"] == 1 and math.isclose(table["overall"]["accuracy"], 2 / 3)

    # a second run into the labelled folder is refused by name and loses nothing
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="out_dir"):
        write_labelling_set(images[::-1], prompts[::-1], tmp_path, per_sheet=2)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_labels_by_eye_are_never_overwritten_but_an_unlabelled_set_is(tmp_path):
    image, prompt = render([ShapeObject("circle", "red", 8, 8, 14)]), "a photo of a red circle"
    write_labelling_set([image], [prompt], tmp_path)
    write_labelling_set([image, image], [prompt, prompt], tmp_path)  # nothing labelled yet: rewritten
    labels = tmp_path / "labels.jsonl"
    assert len(labels.read_text().splitlines()) == 2

    def sample_must_not_run(*args, **kwargs):
        raise AssertionError("sampled before refusing")

    plan = [{"prompt": prompt, "seed": 1, "guidance_scale": 1.0}]
    row = json.loads(labels.read_text().splitlines()[0])
    for half_done in ({"note": "unclear: a rounded square?"}, {"verdict": "correct"}):
        labels.write_text(json.dumps({**row, **half_done}) + "\n")
        with pytest.raises(ValueError, match="out_dir"):
            write_labelling_set([image], [prompt], tmp_path)
        with pytest.raises(ValueError, match="out_dir"):
            sample_labelling_set(sample_must_not_run, plan, tmp_path, num_inference_steps=2)
    for damaged in ("{not json", "[1, 2]"):
        labels.write_text(damaged + "\n")
        with pytest.raises(ValueError, match="out_dir: .*labels.jsonl line 1"):
            write_labelling_set([image], [prompt], tmp_path)
        assert labels.read_text() == damaged + "\n"


def test_read_labels_refuses_bad_rows(tmp_path):
    path = tmp_path / "labels.jsonl"
    for row, match in [({"prompt": "a photo of a circle", "verdict": "correct"}, "image"),
                       ({"image": "a.png", "prompt": "a photo of a circle", "verdict": "fine"}, "verdict"),
                       ({"image": "a.png", "prompt": "a photo of a circle", "verdict": "incorrect", "reason": "ugly"}, "reason"),
                       ({"image": "a.png", "prompt": "a photo of a circle", "verdict": "correct", "reason": "empty"}, "reason")]:
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=match):
            read_labels(path)
    path.write_text('["a.png", "correct"]\n')
    with pytest.raises(ValueError, match="labels: .*labels.jsonl line 1 is not a JSON object"):
        read_labels(path)


def test_labelling_plan_spreads_tasks_scales_and_seeds():
    from nlg.shapes.data import TASKS
    from nlg.shapes.geneval import load_prompts
    from nlg.shapes.labels import labelling_plan

    plan = labelling_plan(10, [1.0, 3.0, 5.0, 8.0], 7_000_000)
    assert len(plan) == 60 and [row["seed"] for row in plan] == list(range(7_000_000, 7_000_060))
    for task in TASKS:
        rows = [row for row in plan if row["task"] == task]
        assert len(rows) == 10
        allowed = {r["prompt"] for r in load_prompts(tasks=[task])}
        assert {row["prompt"] for row in rows} <= allowed  # the task's own mini-GenEval prompts
        assert len({row["prompt"] for row in rows}) == min(10, len(allowed))  # cycled, none skipped
        scales = [row["guidance_scale"] for row in rows]
        assert sorted(scales) == scales and all(2 <= scales.count(s) <= 3 for s in (1.0, 3.0, 5.0, 8.0))
    with pytest.raises(ValueError, match="per_task"):
        labelling_plan(0, [1.0], 0)


def test_sample_command_generates_each_image_from_its_own_seed_and_scale(tmp_path):
    import torch
    from PIL import Image

    from nlg.shapes import load_pipeline
    from nlg.shapes.labels import main
    from nlg.testing import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipe")
    out = tmp_path / "set"
    assert main(["sample", "--out", str(out), "--per-task", "2", "--guidance-scales", "1", "4", "--seed", "500",
                 "--pipeline", str(folder), "--steps", "2", "--per-sheet", "5"]) == 0
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len(list(out.glob("contact_sheet_*.png"))) == 3
    assert [r["guidance_scale"] for r in rows[:2]] == [1.0, 4.0] and [r["seed"] for r in rows] == list(range(500, 512))
    pipe = load_pipeline(folder)
    for row in (rows[0], rows[7]):  # each image is the pipeline's own output for its prompt, seed and scale
        direct = pipe(row["prompt"], num_inference_steps=2, guidance_scale=row["guidance_scale"], output_type="np",
                      generator=torch.Generator().manual_seed(row["seed"])).images[0]
        expected = np.clip(np.round(direct * 255.0), 0, 255).astype(np.uint8)
        saved = np.asarray(Image.open(out / row["image"]).convert("RGB"))
        assert np.abs(saved.astype(int) - expected.astype(int)).max() <= 1  # batched vs single: float noise only


@pytest.mark.parametrize("per_task", [1, 4, 5, 7, 13, 40])
def test_labelling_plan_gives_each_condition_a_consecutive_block_per_task(per_task):
    from nlg.shapes.data import TASKS
    from nlg.shapes.labels import labelling_plan

    scales, budgets = [1.0, 3.0, 5.0], [4, 10]
    plan = labelling_plan(per_task, scales, 123, nlg_budgets=budgets)
    assert len(plan) == 6 * per_task and [row["seed"] for row in plan] == list(range(123, 123 + 6 * per_task))
    # the conditions, written out from for_budget's rule K steps of size 20/K (the paper's path length K·η = 20)
    expected = [(s, 0, None) for s in scales] + [(1.0, k, 20.0 / k) for k in budgets]
    for task in TASKS:
        rows = [row for row in plan if row["task"] == task]
        keys = [(row["guidance_scale"], row.get("refining_steps", 0), row.get("step_size")) for row in rows]
        order = [expected.index(key) for key in keys]  # every row is one of the conditions ...
        assert order == sorted(order)  # ... in consecutive blocks, in the given order
        counts = [order.count(c) for c in range(len(expected))]
        assert sum(counts) == per_task and max(counts) - min(counts) <= 1  # as even as per_task allows
        assert all(c in (per_task // 5, -(-per_task // 5)) for c in counts)
        names = {row["condition"] for row in rows if row.get("refining_steps") == 4}
        assert names <= {"CFG 1 + NLG K=4 η=5"}
    with pytest.raises(ValueError, match="nlg_budgets"):
        labelling_plan(5, [1.0], 0, nlg_budgets=[0])


def test_an_nlg_image_is_generate_on_its_own_seed_and_config(tmp_path):
    from PIL import Image

    from nlg import NoiseLevelGuidance
    from nlg.shapes import load_pipeline
    from nlg.shapes.labels import main
    from nlg.shapes.sampling import SamplingConfig, generate
    from nlg.testing import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipe")
    out = tmp_path / "set"
    assert main(["sample", "--out", str(out), "--per-task", "2", "--guidance-scales", "1", "--nlg-budgets", "2",
                 "--seed", "900", "--pipeline", str(folder), "--steps", "2", "--per-sheet", "12"]) == 0
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r.get("refining_steps", 0) for r in rows] == [0, 2] * 6 and [r["seed"] for r in rows] == list(range(900, 912))
    assert all(r["step_size"] == 10.0 and r["guidance_scale"] == 1.0 for r in rows[1::2])
    pipe = load_pipeline(folder)
    nlg = NoiseLevelGuidance.for_budget(2)
    config = SamplingConfig(1.0, nlg.refining_steps, nlg.step_size)
    for row in rows[1::4]:  # alone, not in the batch of its condition: the image depends on its own seed only
        expected = generate(pipe, [row["prompt"]], [row["seed"]], config, num_inference_steps=2)[0]
        plain = generate(pipe, [row["prompt"]], [row["seed"]], SamplingConfig(1.0), num_inference_steps=2)[0]
        saved = np.asarray(Image.open(out / row["image"]).convert("RGB"))
        assert np.abs(saved.astype(int) - expected.astype(int)).max() <= 1  # batched vs single: float noise only
        assert np.abs(saved.astype(int) - plain.astype(int)).max() > 1  # and NLG did act


def test_agreement_command_writes_the_tables_per_task_and_condition(tmp_path, capsys):
    from nlg.shapes.labels import main

    red_circle = render([ShapeObject("circle", "red", 8, 8, 14)])
    blue_square = render([ShapeObject("square", "blue", 8, 8, 12)])
    # (image, prompt, condition, human verdict): the scorer is right on a render, wrong only where the human errs
    cases = [(red_circle, "a photo of a red circle", "CFG 1", "correct"),
             (blue_square, "a photo of a red square", "CFG 1", "correct"),  # human-only correct
             (red_circle, "a photo of a circle", "CFG 1 + NLG K=4 η=5", "correct"),
             (blue_square, "a photo of a square", "CFG 1 + NLG K=4 η=5", "incorrect")]  # scorer-only correct
    labels = write_labelling_set([c[0] for c in cases], [c[1] for c in cases], tmp_path,
                                 extra=[{"condition": c[2]} for c in cases])
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    for row, case in zip(rows, cases):
        row.update(verdict=case[3], reason="" if case[3] == "correct" else "missing object")
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "agreement.md"
    assert main(["agreement", str(labels), "--out", str(out)]) == 0
    text = out.read_text()
    assert capsys.readouterr().out == text
    assert f"python -m nlg.shapes.labels agreement {labels} --out {out}" in text
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| ")]
    cells = {row[0]: row[1:] for row in split}
    # n, accuracy, kappa, both correct, scorer only, human only, both incorrect
    assert cells["colors"][:2] == ["2", "0.500"] and cells["colors"][3:] == ["1", "0", "1", "0"]
    assert cells["single_object"][:2] == ["2", "0.500"] and cells["single_object"][3:] == ["1", "1", "0", "0"]
    assert cells["CFG 1"][:2] == ["2", "0.500"] and cells["CFG 1"][5] == "1"
    assert cells["CFG 1 + NLG K=4 η=5"][:2] == ["2", "0.500"] and cells["CFG 1 + NLG K=4 η=5"][4] == "1"
    assert cells["overall"][:2] == ["4", "0.500"]
    assert "## Disagreements (2)" in text and "images/0001.png" in text and "images/0003.png" in text
