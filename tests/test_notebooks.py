"""The notebooks in ``notebooks/``: committed without outputs, parameterised, and executed end to end.

Each notebook is executed once per module with papermill: the two Stable Diffusion notebooks against
tiny random-weight SD-1.5- and SD-2.1-shaped pipelines saved to a temporary folder (CPU, float32, a
32×32 image, few steps), the digits and shapes notebooks with their own defaults on the shipped models.  The last cell of every notebook
writes what it produced to ``record_dir``; the tests recompute those values with the library in this
process and compare, so a notebook that runs but shows something else fails.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from nlg.adapters.hub import SD15, SD21

from tests.helpers.experiments import single_thread  # recompute on one thread, as the notebook kernels ran

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
SD_NOTEBOOKS = {"sd15": "stable_diffusion_v1_5", "sd21": "stable_diffusion_v2_1"}
DIGITS_NOTEBOOK = "digits_cpu"
SHAPES_NOTEBOOK = "shapes_cpu"
REQUIRED_PARAMETERS = {"install", "model_id", "device", "dtype", "num_inference_steps", "height", "width"}
COLAB_DEFAULTS = {"stable_diffusion_v1_5": SD15, "stable_diffusion_v2_1": SD21}  # today's Hub ids (nlg.adapters.hub)
# What the SD notebooks run with in the tests: the tiny pipelines' 16×16 latents are 32×32 images.
SD_TEST_PARAMETERS = dict(device="cpu", dtype="float32", num_inference_steps=3, height=32, width=32, refining_steps=4)


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    tagged = [cell for cell in code_cells(nb) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged 'parameters'"
    return tagged[0]


def parameter_defaults(nb: nbformat.NotebookNode) -> dict:
    """The parameters cell's assignments, evaluated as literals."""
    tree = ast.parse(parameters_cell(nb).source)
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, "the parameters cell holds only assignments"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def execute(name: str, out_dir: Path, parameters: dict) -> Path:
    """Run a notebook with papermill in a fresh kernel; returns the folder its last cell wrote to."""
    import papermill

    record_dir = out_dir / name
    with pytest.MonkeyPatch.context() as patch:
        # The kernel inherits these: one thread is much faster for tiny models on a shared CPU.
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("MKL_NUM_THREADS", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / f"{name}.ipynb"),
            str(out_dir / f"{name}.executed.ipynb"),
            # the install cell is skipped where nlg is importable; were it not, pip would install this checkout, offline
            parameters={**parameters, "install": str(ROOT), "record_dir": str(record_dir)},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(out_dir),
            execution_timeout=600,
        )
    return record_dir


# -- static checks: every committed notebook --------------------------------------------------------


def test_the_four_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted([*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])


@pytest.mark.parametrize("name", [*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])
def test_committed_notebook_is_stripped_of_outputs(name):
    nb = load(name)
    nbformat.validate(nb)
    for index, cell in enumerate(code_cells(nb)):
        assert cell.outputs == [], f"{name}.ipynb code cell {index} has outputs; strip them before committing"
        assert cell.execution_count is None, f"{name}.ipynb code cell {index} has an execution count"
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata


@pytest.mark.parametrize("name", [*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])
def test_parameters_cell_holds_the_required_parameters(name):
    defaults = parameter_defaults(load(name))
    assert REQUIRED_PARAMETERS <= set(defaults)
    assert defaults["record_dir"] is None  # nothing is written unless asked (e.g. on Colab)
    if name in COLAB_DEFAULTS:
        assert defaults["model_id"] == COLAB_DEFAULTS[name]
        assert (defaults["device"], defaults["dtype"]) == ("cuda", "float16")
    else:
        native = 32 if name == SHAPES_NOTEBOOK else 8  # the embedded models' only / native sizes
        assert (defaults["device"], defaults["dtype"], defaults["height"], defaults["width"]) == ("cpu", "float32", native, native)


def distribution_name() -> str:
    """The name pip installs nlg by, from pyproject.toml."""
    import re

    return re.search(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.parametrize("name", [*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])
def test_install_cell_installs_the_install_parameter_unless_nlg_is_importable(name):
    """The cell after the parameters pip-installs ``install``, whose default is the published distribution."""
    nb = load(name)
    cells = code_cells(nb)
    install = cells[cells.index(parameters_cell(nb)) + 1].source
    assert 'find_spec("nlg") is None' in install and '"pip", "install", "--quiet", install]' in install
    extras = "[digits]" if name == DIGITS_NOTEBOOK else ""
    assert distribution_name() != "nlg"  # taken on PyPI by an unrelated project
    assert parameter_defaults(nb)["install"] == distribution_name() + extras


@pytest.mark.parametrize("name", [*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])
def test_no_placeholder_repository_or_badge(name):
    text = (NOTEBOOK_DIR / f"{name}.ipynb").read_text()
    for fragment in ("nlg-project", "github.com/", "colab-badge", "colab.research.google.com"):
        assert fragment not in text, f"{name}.ipynb still points at {fragment!r}"


@pytest.mark.parametrize("name", [*SD_NOTEBOOKS.values(), DIGITS_NOTEBOOK, SHAPES_NOTEBOOK])
def test_notebooks_call_the_library_instead_of_copying_the_algorithm(name):
    sources = [cell.source for cell in code_cells(load(name))]
    assert sum("NoiseLevelGuidance(" in source for source in sources) == 1
    for fragment in ("unet(", "refine_noise", "cfg_direction", "to_epsilon", "scheduler.step", "def direction"):
        assert not any(fragment in source for source in sources), f"{name} re-implements part of NLG: {fragment!r}"
    if name == SHAPES_NOTEBOOK:
        return  # a short CPU tour: its one formula is checked below, the derivation is the SD notebooks' job
    markdown = squeeze(" ".join(cell.source for cell in load(name).cells if cell.cell_type == "markdown"))
    for formula in (r"\varepsilon_\theta(n, T", r"\min(1, \tau", r"\sqrt{\lambda}\, z", r"\sqrt{D} / \lVert n \rVert_2"):
        assert squeeze(formula) in markdown, f"{name} does not explain {formula!r}"


def squeeze(latex: str) -> str:
    """LaTeX without spaces and braces, so that ``\\sqrt{D}`` and ``\\sqrt D`` compare equal."""
    return latex.replace(" ", "").replace("{", "").replace("}", "")


def test_sd21_notebook_explains_the_v_prediction_conversion():
    markdown = " ".join(cell.source for cell in load("stable_diffusion_v2_1").cells if cell.cell_type == "markdown")
    assert r"\varepsilon = \alpha_t\, v + \sigma_t\, x_t" in markdown


# -- the Stable Diffusion notebooks, executed on tiny pipelines --------------------------------------


@pytest.fixture(scope="module")
def sd_runs(tmp_path_factory):
    """Execute both SD notebooks once; returns {kind: (pipeline folder, record folder)}."""
    from nlg.testing import save_tiny_pipeline

    root = tmp_path_factory.mktemp("sd_notebooks")
    runs = {}
    for kind, name in SD_NOTEBOOKS.items():
        model_dir = save_tiny_pipeline(root / f"tiny_{kind}", kind)
        runs[kind] = (model_dir, execute(name, root, dict(SD_TEST_PARAMETERS, model_id=str(model_dir))))
    return runs


def sd_alpha_bar_T():
    """ᾱ_999 of SD's scaled_linear schedule from its definition, not from a scheduler."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
    return float(np.prod(1.0 - betas))


@pytest.mark.notebook
@pytest.mark.parametrize("kind", list(SD_NOTEBOOKS))
def test_sd_notebook_records_shapes_and_invariants(sd_runs, kind):
    _, record_dir = sd_runs[kind]
    record = json.loads((record_dir / "record.json").read_text())
    prompts, seeds, k = record["prompts"], record["seeds"], SD_TEST_PARAMETERS["refining_steps"]
    assert len(prompts) >= 3 and len(seeds) >= 2
    assert record["prediction_type"] == {"sd15": "epsilon", "sd21": "v_prediction"}[kind]
    assert record["alphas_cumprod_T"] == pytest.approx(sd_alpha_bar_T(), rel=1e-5)
    assert record["nlg_config"]["refining_steps"] == k
    assert record["settings"]["height"] == 32 and record["settings"]["num_inference_steps"] == 3
    assert record["images_shape"] == record["baseline_shape"] == [len(prompts), len(seeds), 32, 32, 3]
    norms = np.array(record["step_norms"])
    assert norms.shape == (len(prompts), k, len(seeds)) and np.isfinite(norms).all() and (norms > 0).all()
    np.testing.assert_allclose(record["latent_norm_over_sqrt_d"], 1.0, rtol=1e-5)  # renormalised to √D
    assert record["max_abs_difference"] > 1e-3  # NLG changed the images

    images = np.load(record_dir / "images.npz")
    assert images["guided"].shape == images["baseline"].shape == tuple(record["images_shape"])
    assert 0.0 <= images["baseline"].min() and images["guided"].max() <= 1.0
    assert np.abs(images["guided"] - images["baseline"]).max() == pytest.approx(record["max_abs_difference"])
    for prompt, b, g in zip(prompts, images["baseline"], images["guided"]):
        assert record["mean_brightness"][prompt]["plain"] == pytest.approx(b.mean(axis=(1, 2, 3)).tolist(), abs=1e-3)
        assert record["mean_brightness"][prompt]["nlg"] == pytest.approx(g.mean(axis=(1, 2, 3)).tolist(), abs=1e-3)

    import matplotlib.image

    grid = matplotlib.image.imread(record_dir / "side_by_side.png")
    assert grid.shape[0] > 200 and grid.shape[1] > grid.shape[0]  # rows = prompts, 2 × seeds columns
    assert grid[..., :3].std() > 0.05  # not blank
    assert matplotlib.image.imread(record_dir / "step_norms.png")[..., :3].std() > 0.01


@pytest.mark.notebook
@pytest.mark.parametrize("kind", list(SD_NOTEBOOKS))
def test_sd_notebook_shows_what_the_library_computes(sd_runs, kind):
    """Plain and NLG images, refined latents and step norms equal a fresh computation with the same seeds."""
    from diffusers import StableDiffusionPipeline

    from nlg import NoiseLevelGuidance

    model_dir, record_dir = sd_runs[kind]
    record = json.loads((record_dir / "record.json").read_text())
    saved = np.load(record_dir / "images.npz")
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    nlg = NoiseLevelGuidance(refining_steps=SD_TEST_PARAMETERS["refining_steps"])
    settings = dict(record["settings"], output_type="np")
    with single_thread():
        for p, prompt in enumerate(record["prompts"]):
            plain = pipe(prompt, generator=[torch.Generator().manual_seed(s) for s in record["seeds"]], **settings).images
            out, refinement = nlg(
                pipe, prompt, generator=[torch.Generator().manual_seed(s) for s in record["seeds"]],
                return_refinement=True, **settings,
            )
            np.testing.assert_allclose(saved["baseline"][p], plain, atol=1e-4)
            np.testing.assert_allclose(saved["guided"][p], out.images, atol=1e-4)
            np.testing.assert_allclose(saved["refined_latents"][p], refinement.latents.numpy(), atol=1e-4)
            np.testing.assert_allclose(record["step_norms"][p], refinement.step_norms.numpy(), rtol=1e-4)


# -- the digits notebook, as is ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits_notebook")
    record_dir = execute(DIGITS_NOTEBOOK, root, {})
    return json.loads((record_dir / "record.json").read_text()), np.load(record_dir / "images.npz"), record_dir


@pytest.mark.notebook
def test_digits_notebook_records_refinement_and_sweep(digits_run):
    record, saved, record_dir = digits_run
    defaults = parameter_defaults(load(DIGITS_NOTEBOOK))
    n = 10 * defaults["samples_per_class"]
    k = defaults["refining_steps"]
    assert record["labels"] == [d for d in range(10) for _ in range(defaults["samples_per_class"])]
    assert record["step_norms_shape"] == [k, n] and saved["step_norms"].shape == (k, n)
    assert (saved["step_norms"] > 0).all()
    np.testing.assert_allclose(record["latent_norms"], 8.0, rtol=1e-5)  # √D with D = 64
    np.testing.assert_allclose(np.linalg.norm(saved["refined"].reshape(n, -1), axis=1), 8.0, rtol=1e-5)
    moved = np.linalg.norm((saved["refined"] - saved["initial"]).reshape(n, -1), axis=1)
    assert record["mean_distance_moved"] == pytest.approx(moved.mean(), rel=1e-5) and moved.min() > 0

    configs = record["configs"]
    scales = defaults["guidance_scales"]
    assert [(c["guidance_scale"], c["refining_steps"]) for c in configs] == [(s, kk) for s in scales for kk in (0, k)]
    assert record["images_shape"] == [len(configs), n, 1, 8, 8] and saved["images"].shape == tuple(record["images_shape"])
    for i in range(0, len(configs), 2):  # same seeds, NLG on vs off: different images
        assert np.abs(saved["images"][i] - saved["images"][i + 1]).max() > 1e-3
    for name in ("grid.png", "frontier.png", "step_norms.png"):
        assert (record_dir / name).stat().st_size > 5000


@pytest.mark.notebook
def test_digits_notebook_metrics_are_those_of_its_images(digits_run):
    """The table's numbers: the evaluator applied afresh to the images the notebook saved."""
    from nlg.digits import DigitsEvaluator

    record, saved, _ = digits_run
    evaluator = DigitsEvaluator()
    labels = torch.tensor(record["labels"])
    for row, images in zip(record["configs"], saved["images"]):
        metrics = evaluator.evaluate(torch.from_numpy(images), labels)
        assert row["num_samples"] == len(labels)
        for key in ("accuracy", "mean_p_class", "fd_overall", "fd_per_class", "diversity"):
            assert row[key] == pytest.approx(getattr(metrics, key), rel=1e-6, abs=1e-9), key


@pytest.mark.notebook
def test_digits_notebook_images_match_the_library_sample_by_sample(digits_run):
    """One digit's samples, recomputed alone from their per-sample seeds, equal the notebook's batch."""
    from nlg import NoiseLevelGuidance
    from nlg.digits import DigitsPipeline, per_sample_generators

    record, saved, _ = digits_run
    defaults = parameter_defaults(load(DIGITS_NOTEBOOK))
    per_class, digit = defaults["samples_per_class"], 7
    rows = slice(digit * per_class, (digit + 1) * per_class)
    pipe = DigitsPipeline.from_pretrained(defaults["model_id"])
    nlg = NoiseLevelGuidance(refining_steps=defaults["refining_steps"])

    def generators():
        return per_sample_generators(record["seed"], per_class, start=digit * per_class)

    with single_thread():
        refinement = nlg.refine(pipe, [digit] * per_class, generator=generators())
        np.testing.assert_allclose(saved["refined"][rows], refinement.latents.numpy(), atol=1e-5)
        np.testing.assert_allclose(saved["step_norms"][:, rows], refinement.step_norms.numpy(), rtol=1e-4)
        for i, row in enumerate(record["configs"]):
            kwargs = dict(guidance_scale=row["guidance_scale"], num_inference_steps=defaults["num_inference_steps"],
                          generator=generators(), progress=False)
            if row["refining_steps"] == 0:
                images = pipe([digit] * per_class, **kwargs).images
            else:
                images = nlg(pipe, [digit] * per_class, **kwargs).images
            np.testing.assert_allclose(saved["images"][i][rows], images.numpy(), atol=1e-4)


# -- the shapes notebook, as is ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_notebook")
    record_dir = execute(SHAPES_NOTEBOOK, root, {})
    return json.loads((record_dir / "record.json").read_text()), np.load(record_dir / "images.npz")


@pytest.mark.notebook
def test_shapes_notebook_images_are_the_pipelines_and_nlgs_for_each_seed(shapes_run):
    """Two of the notebook's images, recomputed alone from their seeds through the public path, equal its batch."""
    from nlg import NoiseLevelGuidance
    from nlg.shapes import DEFAULT_GUIDANCE_SCALE, load_pipeline

    record, saved = shapes_run
    defaults = parameter_defaults(load(SHAPES_NOTEBOOK))
    assert record["guidance_scale"] == DEFAULT_GUIDANCE_SCALE and record["num_inference_steps"] == defaults["num_inference_steps"]
    n = len(record["texts"])
    assert saved["plain"].shape == saved["nlg"].shape == (n, defaults["height"], defaults["width"], 3)
    assert record["step_norms_shape"] == [defaults["refining_steps"], n]
    pipe = load_pipeline()
    kwargs = dict(num_inference_steps=defaults["num_inference_steps"], guidance_scale=DEFAULT_GUIDANCE_SCALE,
                  height=defaults["height"], width=defaults["width"], output_type="np")
    with single_thread():
        for index in (0, n - 1):
            text, seed = record["texts"][index], record["seeds"][index]
            plain = pipe([text], generator=[torch.Generator().manual_seed(seed)], **kwargs).images[0]
            guided = NoiseLevelGuidance(refining_steps=defaults["refining_steps"])(
                pipe, [text], generator=[torch.Generator().manual_seed(seed)], **kwargs).images[0]
            np.testing.assert_allclose(saved["plain"][index], plain, atol=1e-4)
            np.testing.assert_allclose(saved["nlg"][index], guided, atol=1e-4)
            assert np.abs(plain - guided).max() > 1e-3  # NLG moved the noise: a different image from the same seed


def test_shapes_notebook_states_the_refinement_step():
    markdown = squeeze(" ".join(cell.source for cell in load(SHAPES_NOTEBOOK).cells if cell.cell_type == "markdown"))
    assert squeeze(r"n \leftarrow \mathrm{normalise}(n - \eta\,\mathrm{clip}(") in markdown


@pytest.mark.notebook
def test_shapes_notebook_scores_are_the_scorers(shapes_run):
    from nlg.shapes.geneval import load_prompts, score_image

    record, saved = shapes_run
    by_prompt = {p["prompt"]: p for p in load_prompts()}
    for arm, images in (("plain", saved["plain"]), ("NLG", saved["nlg"])):
        expected = [bool(score_image(im, by_prompt[t])["correct"]) for im, t in zip(images, record["texts"])]
        assert record["correct"][arm] == expected


# -- nlg.eval.plotting, the notebooks' figure helpers ----------------------------------------------------------


def test_side_by_side_pairs_each_seed_plain_then_guided():
    import matplotlib

    matplotlib.use("Agg")
    from nlg.eval.plotting import side_by_side

    rng = np.random.default_rng(0)
    baseline = rng.random((2, 3, 4, 4, 3))
    guided = rng.random((2, 3, 4, 4, 3))
    fig = side_by_side(baseline, guided, ["a", "b"], [5, 6, 7], names=("plain", "NLG"))
    axes = np.array(fig.axes).reshape(2, 6)
    assert [ax.get_title() for ax in axes[0]] == [f"seed {s} · {n}" for s in (5, 6, 7) for n in ("plain", "NLG")]
    np.testing.assert_allclose(axes[1][3].images[0].get_array(), guided[1][1])  # row 1, seed 6, NLG
    np.testing.assert_allclose(axes[1][2].images[0].get_array(), baseline[1][1])
    with pytest.raises(ValueError, match="one image per seed"):
        side_by_side(baseline[:, :2], guided, ["a", "b"], [5, 6, 7])


def test_plot_step_norms_draws_the_mean_over_images_per_label():
    import matplotlib

    matplotlib.use("Agg")
    from nlg.eval.plotting import plot_step_norms

    norms = [torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.5, 0.1]]), torch.tensor([[4.0], [5.0], [6.0]])]
    fig = plot_step_norms(norms, ["x", "y"], clip_threshold=0.5)
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), [2.0, 2.0, 0.3])
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines[1].get_ydata(), [4.0, 5.0, 6.0])
    assert lines[2].get_ydata()[0] == 0.5  # the clip threshold
    with pytest.raises(ValueError, match="one label per"):
        plot_step_norms(norms, ["x"])
