"""The distribution users install: ``noise-level-guidance`` (import name ``nlg``), built as ``make dist`` builds it.

The wheel is installed into a clean virtual environment and used from a temporary folder, so the package files
can only come from the wheel: the environment reaches the test venv's third-party packages (torch, diffusers,
…) through a plain path entry, which neither imports this checkout nor runs the venv's editable-install hook.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME = PYPROJECT["project"]["name"]
#: ``make dist``'s build command (Makefile), run here on a copy of the sources.
BUILD = ["-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir"]


def test_distribution_name_is_not_the_taken_nlg_and_the_makefile_builds_it():
    assert NAME == "noise-level-guidance"  # `nlg` on PyPI is an unrelated natural-language-generation project
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dist:", makefile, re.M)
    assert "-m build --no-isolation --sdist --wheel --outdir dist" in makefile and "twine check --strict dist/*" in makefile
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {NAME}" in readme and len(readme.splitlines()) <= 200


def tracked_model_files(package: str) -> list:
    """Every file of an embedded model in the source tree, as a path inside the wheel."""
    base = ROOT / "nlg" / package
    files = [p for p in (base / "weights").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    if package == "shapes":
        files.append(base / "evaluation_metadata.jsonl")
    return sorted(p.relative_to(ROOT).as_posix() for p in files)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """sdist and wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    work = tmp_path_factory.mktemp("dist")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "nlg", src / "nlg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = work / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, *BUILD, str(out), str(src)], check=True, cwd=work, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, out.iterdir())], check=True,
                   capture_output=True)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1
    return wheels[0], sdists[0]


@pytest.mark.slow
def test_wheel_carries_both_embedded_models(dist):
    wheel, _ = dist
    assert wheel.name.startswith("noise_level_guidance-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("digits", "shapes"):
        expected = tracked_model_files(package)
        assert expected and set(expected) <= names, sorted(set(expected) - names)
    for needed in ("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "model_index.json", "unet/config.json"):
        assert f"nlg/shapes/weights/shapes_ldm/{needed}" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert f"Name: {NAME}" in text and "Requires-Dist: diffusers" in text


@pytest.mark.slow
def test_wheel_installed_alone_loads_the_shapes_pipeline_and_the_digits_model(dist, tmp_path):
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # torch, diffusers, …: the test venv's packages, as a plain path entry after the new venv's own site-packages
    (site / "third_party.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_NO_INDEX="1")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True, env=env, capture_output=True)
    script = """
import json, hashlib, torch
import nlg, nlg.shapes
from nlg.digits import DigitsPipeline
pipe = nlg.shapes.load_pipeline()
digits = DigitsPipeline.from_pretrained()
out = nlg.NoiseLevelGuidance(refining_steps=1)(digits, [3], num_inference_steps=2, generator=torch.Generator().manual_seed(0), progress=False)
ids = pipe.tokenizer("a red circle").input_ids
print(json.dumps(dict(nlg=nlg.__file__, pipe=type(pipe).__name__, tokens=len(ids), unet=pipe.unet.config.sample_size,
                      digits=list(out.images.shape), finite=bool(torch.isfinite(out.images).all()))))
"""
    run = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["nlg"]).resolve().is_relative_to(site.resolve())  # the wheel's files, not this checkout
    assert report["pipe"] == "StableDiffusionPipeline" and report["tokens"] > 2
    assert report["digits"] == [1, 1, 8, 8] and report["finite"]
