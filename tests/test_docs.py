"""The documentation: the strict Sphinx build, API coverage of the public names, and the docstring examples.

The build is the one ``make docs`` runs (every warning is an error, nitpicky cross-references), into a
temporary folder.  Coverage reads the inventory the build wrote (``objects.inv``), so it does not depend
on how the API pages are written.  The docstring examples are checked by ``doctest``: their outputs
were computed by hand (see each docstring).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nlg
import nlg.finetune
import nlg.training

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TOOLS = ("sphinx", "myst_parser", "myst_nb", "furo")

# The five functions whose docstrings carry runnable examples (issue 13), by home module.
DOCTESTED = {
    "nlg.core.refine": ["refine_noise"],
    "nlg.core.directions": ["cfg_direction", "to_epsilon"],
    "nlg.training.offset": ["offset_noise"],
    "nlg.core.noise_levels": ["noise_level_at"],
    "nlg.utils.tables": ["markdown_table"],
}


def _missing_build_tools() -> list:
    return [name for name in BUILD_TOOLS if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    missing = _missing_build_tools()
    if missing:
        pytest.skip(
            f"the docs build needs {', '.join(missing)} (requirements.txt, '# Docs'); "
            "install them with: .venv/bin/pip install -r requirements.txt"
        )
    out = tmp_path_factory.mktemp("docs")
    html, doctrees = out / "html", out / "doctrees"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-a", "-n", "-W", "--keep-going", "-q",
         "-d", str(doctrees), str(DOCS), str(html)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"the strict docs build failed:\n{proc.stderr[-6000:]}"
    return html


def _python_inventory(html: Path) -> set:
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    # Sphinx ≥ 8.2 returns an _Inventory object, older versions a dict {type: {name: entry}}.
    data = getattr(inventory, "data", inventory)
    return {name for kind, entries in data.items() if kind.startswith("py:") for name in entries}


@pytest.mark.docs
def test_docs_build_strictly_and_link_the_images(built_site):
    index = (built_site / "index.html").read_text(encoding="utf-8")
    assert "Noise-Level Diffusion Guidance: Well Begun is Half Done" in index
    # The figures the guides show are copied into the site, not left pointing outside it.
    images = {p.name for p in (built_site / "_images").iterdir()}
    for figure in ("digits_demo.png", "digits_frontier.png", "app.png", "brightness_hist.png"):
        assert figure in images
    # Every committed benchmark table is on the benchmarks page (included from its file).
    page = (built_site / "benchmarks.html").read_text(encoding="utf-8")
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        script = re.search(r"python -m benchmarks\.(\w+)", result.read_text(encoding="utf-8"))
        if script:
            assert f"benchmarks.{script.group(1)}" in page, result.name


@pytest.mark.parametrize(
    "package", [nlg, nlg.training, nlg.finetune], ids=["nlg", "nlg.training", "nlg.finetune"]
)
@pytest.mark.docs
def test_every_public_name_has_an_api_entry(built_site, package):
    documented = _python_inventory(built_site)
    assert package.__all__, "the package must declare its public names"
    missing = [name for name in package.__all__ if f"{package.__name__}.{name}" not in documented]
    assert not missing, f"public names without an API entry: {missing}"


@pytest.mark.parametrize("module_name", sorted(DOCTESTED))
def test_docstring_examples(module_name):
    torch.set_num_threads(1)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = {}
    for test in finder.find(module):
        runner.run(test)
        examples[test.name.rsplit(".", 1)[-1]] = len(test.examples)
    for function in DOCTESTED[module_name]:
        assert examples.get(function, 0) > 0, f"{module_name}.{function} has no docstring example"
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name}"


def test_readme_is_a_landing_page_naming_make_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make docs" in readme
    assert "Mannering, Harvey and Huang, Zhiwu and Prugel-Bennett, Adam" in readme


def test_the_paper_is_credited_to_its_authors_everywhere():
    wrong = "Ali" + " et al"  # spelled in two pieces so that this file does not match itself
    places = [ROOT / "README.md", DOCS, ROOT / "notebooks", ROOT / "nlg", ROOT / "core_experiments", ROOT / "benchmarks"]
    suffixes = {".md", ".rst", ".py", ".ipynb", ".txt", ".html", ".json"}
    offenders = []
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix not in suffixes or "_build" in path.parts:
                continue
            if wrong in path.read_text(encoding="utf-8", errors="replace"):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"wrong authors ({wrong}.) in: {offenders}"
