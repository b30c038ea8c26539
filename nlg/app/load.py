"""The web demo as a real server under a bounded burst: the harness of ``tests/app/test_app_load.py`` and ``python -m benchmarks.app_load``.

* :func:`serve` starts ``python -m nlg.app`` (digits model, one torch thread) on a free 127.0.0.1 port,
  waits until it answers and always kills it on exit;
* :func:`burst_plan` is a fixed mix of good and bad requests;
* :func:`run_burst` sends them through ``gradio_client``, ``concurrency`` at a time, and times each one;
* :func:`expected_pixels` draws a good request's images with :class:`nlg.digits.DigitsPipeline` and
  :class:`nlg.NoiseLevelGuidance` directly, as the backend does, for pixel-exact comparison;
* :func:`rss_kib` reads a process's resident set size from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np


__all__ = ["Server", "Request", "Outcome", "serve", "burst_plan", "run_burst", "expected_pixels", "gallery_pixels", "rss_kib", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def rss_kib(pid: int) -> int:
    """``VmRSS`` of process ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def serve(workdir: Path, *, timeout: float = 240.0) -> Iterator[Server]:
    """Run ``python -m nlg.app`` on 127.0.0.1 and a free port until the block ends; the process is always killed."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(workdir / "gradio"))
    log = workdir / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nlg.app", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )
    server = Server(url=f"http://127.0.0.1:{port}/", process=process, log=log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if not server.alive():
                raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(server.url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass(frozen=True)
class Request:
    """One Generate call: the page's 10 values and, for a bad one, the text its error must contain."""

    values: Tuple[Any, ...]
    error: Optional[str] = None

    @property
    def good(self) -> bool:
        return self.error is None

    def setting(self, name: str) -> Any:
        from .settings import FIELDS

        return self.values[FIELDS.index(name)]


def _values(**changes: Any) -> Tuple[Any, ...]:
    from .settings import FIELDS

    base = dict(condition="3", negative_prompt="", seed=0, num_seeds=1, guidance_scale=1.0, num_inference_steps=5,
                refining_steps=3, step_size=1.0, clip_threshold=0.5, noise_level=0.001)
    base.update(changes)
    return tuple(base[name] for name in FIELDS)


#: Bad requests and the error text each must produce.  Five reach the app's own validation, whose
#: messages name the setting; the other five are refused by gradio's components before the app sees
#: them: a non-number seed (the message names the input's position, 2, and type), an unknown digit,
#: and out-of-range slider values (the message gives the value and the bound, not the setting's name).
BAD_REQUESTS: List[Request] = [
    Request(_values(seed=-1), "seed must be a whole number between 0 and"),
    Request(_values(seed="abc"), "index 2 (a `number` component)"),
    Request(_values(seed=2**32 - 1, num_seeds=2), "seed + number of seeds"),
    Request(_values(refining_steps=2.5), "refining steps K must be a whole number"),
    Request(_values(num_inference_steps=4.5), "sampler steps must be a whole number"),
    Request(_values(num_seeds=1.5), "number of seeds must be a whole number"),
    Request(_values(condition="12"), "is not in the list of choices"),
    Request(_values(num_seeds=0), "Value 0 is less than minimum value 1"),
    Request(_values(step_size=0.0), "less than minimum value 0.01"),
    Request(_values(noise_level=1.0), "greater than maximum value 0.1"),
]


def burst_plan(requests: int = 30, *, bad_every: int = 3) -> List[Request]:
    """``requests`` calls, every ``bad_every``-th one bad (cycling through ``BAD_REQUESTS``), the rest good.

    Good requests vary the digit, seeds, number of seeds (1–2), sampler steps (4–6), K (0–4), clipping
    (on/off) and λ, so that no two are alike.
    """
    plan: List[Request] = []
    bad = 0
    for i in range(requests):
        if i % bad_every == bad_every - 1:
            plan.append(BAD_REQUESTS[bad % len(BAD_REQUESTS)])
            bad += 1
            continue
        plan.append(Request(_values(
            condition=str(i % 10), seed=1000 + 7 * i, num_seeds=1 + i % 2, num_inference_steps=4 + i % 3,
            refining_steps=i % 5, clip_threshold=0.5 if i % 4 else 0.0, noise_level=0.001 if i % 3 else 0.0,
        )))
    return plan


@dataclass
class Outcome:
    """What one request returned: ``outputs`` (the page's values) or ``error`` (the message), and the wall time."""

    request: Request
    seconds: float
    outputs: Optional[Tuple[Any, ...]] = None
    error: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def run_burst(url: str, plan: List[Request], *, concurrency: int, download_dir: Path) -> List[Outcome]:
    """Send ``plan`` to ``url``'s ``/generate``, ``concurrency`` requests in flight at a time (one client per thread)."""
    from gradio_client import Client

    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False, download_files=str(download_dir))
        return local.client

    def one(request: Request) -> Outcome:
        c = client()
        start = time.perf_counter()
        try:
            outputs = c.predict(*request.values, api_name="/generate")
        except Exception as error:  # gradio_client raises AppError (or others) carrying the server's message
            return Outcome(request, time.perf_counter() - start, error=f"{type(error).__name__}: {error}")
        return Outcome(request, time.perf_counter() - start, outputs=tuple(outputs))

    download_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, plan))


def expected_pixels(request: Request, pipe: Any) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The 8×8 uint8 images (dark ink on white) a good request must show, without and with NLG, per seed.

    Drawn here with the library alone: ``pipe([digit], guidance_scale, num_inference_steps,
    generator=[torch.Generator().manual_seed(seed)])`` and ``NoiseLevelGuidance(K, η, τ or None, λ)``
    around it; pixel = round(255 · (1 − (clamp(x, −1, 1) + 1) / 2)).
    """
    import torch

    from ..guidance import NoiseLevelGuidance

    get = request.setting
    digit, first, count = int(get("condition")), int(get("seed")), int(get("num_seeds"))
    tau = float(get("clip_threshold"))
    nlg = NoiseLevelGuidance(refining_steps=int(get("refining_steps")), step_size=float(get("step_size")),
                             clip_threshold=tau if tau > 0 else None, noise_level=float(get("noise_level")))
    options = dict(guidance_scale=float(get("guidance_scale")), num_inference_steps=int(get("num_inference_steps")), progress=False)

    def pixels(images: Any) -> np.ndarray:
        x = images[0, 0].detach().float().clamp(-1.0, 1.0)  # float32, as the pipeline returns it
        return torch.round(255.0 * (1.0 - (x + 1.0) / 2.0)).to(torch.uint8).numpy()

    plain, guided = [], []
    for seed in range(first, first + count):
        plain.append(pixels(pipe([digit], generator=[torch.Generator().manual_seed(seed)], **options).images))
        guided.append(pixels(nlg(pipe, [digit], generator=[torch.Generator().manual_seed(seed)], **options).images))
    return plain, guided


def gallery_pixels(gallery: List[Dict[str, Any]]) -> List[np.ndarray]:
    """The downloaded gallery images as greyscale uint8 arrays."""
    from PIL import Image

    return [np.asarray(Image.open(item["image"]).convert("L")) for item in gallery]
