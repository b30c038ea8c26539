"""A tiny SD 1.x pipeline folder and a captioned image folder, built once per test module."""

from __future__ import annotations

import numpy as np
import pytest

from nlg.testing import save_tiny_pipeline


def write_images(folder, count=4, *, captions="txt", size=(36, 40), seed=0):
    """``count`` random RGB images (``size`` = (width, height)) captioned by .txt files or a metadata.jsonl."""
    import json

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        if captions == "txt":
            (folder / f"img{i}.txt").write_text(f"a red thing number {i}\n")
        rows.append({"file_name": f"img{i}.png", "text": f"a red thing number {i}"})
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "sd15", "sd15")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images")
