"""The web demo in a real browser: ``python -m nlg.app`` on a free loopback port, driven by Playwright.

Playwright drives Debian's ``chromium`` (``executable_path``; browser downloads are impossible here).
The test is skipped only where no Chromium is installed; ``make test`` installs it where apt exists.
Every request the page makes to anything but the app is blocked and recorded: the app must work
offline and must not phone home.

Set ``NLG_APP_SCREENSHOT=docs/app.png`` to also write the screenshot there (it always goes to the
test's tmp dir, printed with ``-s``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest
from PIL import Image

from nlg.app.backends import DIGIT_SCALE
from nlg.app.load import free_port

CHROMIUM = os.environ.get("NLG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (Debian: `apt-get install chromium`; `make test` does this where apt is available)",
    ),
]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTUP_SECONDS = 240
RUN_MS = 180_000


def serve(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    """``python -m nlg.app [extra]`` on a free loopback port: yields its URL once it answers, then stops it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("app") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "nlg.app", "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"the app exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url} within {STARTUP_SECONDS} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1.0)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The digits model, as ``make app`` serves it."""
    yield from serve(tmp_path_factory)


@pytest.fixture(scope="module")
def shapes_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shapes text-to-image model, as ``make app MODEL=shapes`` serves it."""
    yield from serve(tmp_path_factory, "--model", "shapes", "--threads", "1")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object, app_url: str) -> Iterator[object]:
    """A fresh page on the app; requests that leave the app are aborted and listed in ``page.external``."""
    yield from open_page(browser, app_url)


def open_page(browser: object, app_url: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.external = []

    def only_the_app(route: object) -> None:
        target = route.request.url
        if target.startswith(app_url) or target.startswith(("data:", "blob:")):
            route.continue_()
        else:
            page.external.append(target)
            route.abort()

    page.route("**/*", only_the_app)
    page.goto(app_url)
    page.get_by_role("button", name="Generate").wait_for(timeout=60_000)
    yield page
    context.close()


def set_slider(page: object, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def run(page: object, refining_steps: int) -> None:
    """Set K, click Generate and wait for this run's status line."""
    set_slider(page, "refining-steps", refining_steps)
    page.get_by_role("button", name="Generate").click()
    page.locator("#status").get_by_text(f"K = {refining_steps} refining steps").wait_for(timeout=RUN_MS)


def column_pngs(page: object, elem_id: str, count: int) -> List[bytes]:
    """The PNG files behind one gallery's thumbnails, downloaded from the app."""
    from playwright.sync_api import expect

    images = page.locator(f"#{elem_id} img")
    expect(images).to_have_count(count)
    files = []
    for index in range(count):
        response = page.request.get(images.nth(index).get_attribute("src"))
        assert response.ok, response.status
        files.append(response.body())
    return files


def decoded(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE), "not a PNG file"
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (8 * DIGIT_SCALE, 8 * DIGIT_SCALE)
    return np.asarray(image)


def test_generate_digit_with_and_without_nlg(page: object, tmp_path: Path) -> None:
    """Pick a digit and K, Generate: real PNGs; columns differ for K = 20 and are identical for K = 0."""
    seeds = 4
    page.get_by_role("radio", name="7").check()
    set_slider(page, "num-seeds", seeds)
    run(page, refining_steps=20)
    plain = [decoded(png) for png in column_pngs(page, "gallery-plain", seeds)]
    guided = [decoded(png) for png in column_pngs(page, "gallery-nlg", seeds)]
    assert all(not np.array_equal(a, b) for a, b in zip(plain, guided))
    assert "digit 7" in page.locator("#status").inner_text()
    page.locator("#norm-plot img").wait_for()
    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot: {screenshot}")
    if os.environ.get("NLG_APP_SCREENSHOT"):
        copy = Path(os.environ["NLG_APP_SCREENSHOT"])
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, copy)
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)

    run(page, refining_steps=0)
    plain_again = [decoded(png) for png in column_pngs(page, "gallery-plain", seeds)]
    guided_now = [decoded(png) for png in column_pngs(page, "gallery-nlg", seeds)]
    assert all(np.array_equal(a, b) for a, b in zip(plain_again, guided_now))
    assert all(np.array_equal(a, b) for a, b in zip(plain, plain_again))  # the plain column ignores NLG's settings
    assert page.external == []


def test_bad_seed_answered_with_a_message(page: object) -> None:
    seed = page.locator("#seed input")
    seed.fill("-3")
    seed.press("Tab")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed must be a whole number between 0").first.wait_for(timeout=RUN_MS)
    assert "Traceback" not in page.content()
    assert page.locator("#gallery-nlg img").count() == 0


def test_concurrent_requests_are_queued(browser: object, app_url: str, page: object) -> None:
    """Two pages press Generate at once: both runs finish, with the same images for the same settings."""
    other = browser.new_page()
    try:
        other.goto(app_url)
        for tab in (page, other):
            set_slider(tab, "num-seeds", 2)
            set_slider(tab, "refining-steps", 3)
        page.get_by_role("button", name="Generate").click()
        other.get_by_role("button", name="Generate").click()
        for tab in (page, other):
            tab.locator("#status").get_by_text("K = 3 refining steps").wait_for(timeout=RUN_MS)
        first, second = (column_pngs(tab, "gallery-nlg", 2) for tab in (page, other))
        assert [decoded(png).tobytes() for png in first] == [decoded(png).tobytes() for png in second]
    finally:
        other.close()


def test_shapes_prompt_with_and_without_nlg(browser: object, shapes_url: str) -> None:
    """``make app MODEL=shapes``: a free-text prompt gives the pipeline's own images, plain and refined."""
    import torch

    from nlg import NoiseLevelGuidance
    from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, load_pipeline

    prompt, seeds = "a photo of a blue square", 2
    for page in open_page(browser, shapes_url):
        assert page.locator("#prompt textarea").input_value().startswith("a photo of")  # the shapes default
        page.locator("#prompt textarea").fill(prompt)
        set_slider(page, "num-seeds", seeds)
        run(page, refining_steps=3)
        plain = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in column_pngs(page, "gallery-plain", seeds)]
        guided = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in column_pngs(page, "gallery-nlg", seeds)]
        assert "Traceback" not in page.content() and page.external == []
    # The first seed, recomputed with the library in this process (the page's first seed is 0).
    pipe = load_pipeline()
    kwargs = dict(num_inference_steps=DEFAULT_INFERENCE_STEPS, guidance_scale=DEFAULT_GUIDANCE_SCALE, output_type="np")
    expected_plain = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    expected_nlg = NoiseLevelGuidance(refining_steps=3)(pipe, prompt, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    for shown, expected in ((plain[0], expected_plain), (guided[0], expected_nlg)):
        assert shown.shape == expected.shape  # 32×32×3: the pipeline's own size
        assert np.abs(shown.astype(float) - expected * 255).max() <= 1.0  # PIL rounding of the same floats
    assert not np.array_equal(plain[0], guided[0])
