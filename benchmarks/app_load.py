"""Load figures for the web demo (issue 14): ``python -m nlg.app`` (digits model, one torch thread) under bursts.

Starts the server on a free 127.0.0.1 port, warms it up with one good and one bad request, then sends
``--bursts`` bursts of ``--requests`` requests through ``gradio_client``, ``--concurrency`` in flight at a
time, every third one bad (the fixed mix of :func:`nlg.app.load.burst_plan`).  Per burst it records the
requests, failures (a good request that errored, or a bad one that was accepted), p50/p95/max latency
per request (wall time from submit to answer, so it includes waiting in the app's one-at-a-time queue),
throughput, and the server's VmRSS before and after.  Writes ``benchmarks/results/app_load.{json,md}``::

    .venv/bin/python -m benchmarks.app_load                       # 6 bursts of 30 requests, 6 at a time
    .venv/bin/python -m benchmarks.app_load --quick               # 1 burst of 12 (smoke run, not written)

Latency depends on the machine and on what else runs on it; the results record the CPU count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from nlg.app.load import burst_plan, rss_kib, run_burst, serve
from nlg.utils.io import atomic_write_json

from .common import RESULTS, command, markdown_table, write_markdown

os.environ.setdefault("OMP_NUM_THREADS", "1")


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summarise(outcomes: List[Any], seconds: float, before: int, after: int, concurrency: int) -> Dict[str, Any]:
    failures = [o for o in outcomes if (o.request.good and o.error is not None) or (not o.request.good and o.error is None)]
    wrong_message = [o for o in outcomes if not o.request.good and o.error is not None and o.request.error not in o.error]

    def latency(select: List[Any]) -> Dict[str, float]:
        times = [o.seconds for o in select]
        return {"p50_s": round(statistics.median(times), 3), "p95_s": round(percentile(times, 95), 3), "max_s": round(max(times), 3)}

    good = [o for o in outcomes if o.request.good]
    bad = [o for o in outcomes if not o.request.good]
    return {
        "requests": len(outcomes),
        "good": len(good),
        "bad": len(bad),
        "concurrency": concurrency,
        "failures": len(failures) + len(wrong_message),
        "latency_all": latency(outcomes),
        "latency_good": latency(good),
        "latency_bad": latency(bad),
        "wall_s": round(seconds, 2),
        "requests_per_s": round(len(outcomes) / seconds, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
    }


def callback_memory(plan: List[Any], rounds: int) -> List[Dict[str, Any]]:
    """The app's Generate callback alone, in this process (no gradio server): VmRSS around each round of ``plan``.

    Separates memory the nlg side keeps per request from what the server layer keeps."""
    import gc

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import torch

    from nlg.app.backends import DigitsBackend
    from nlg.app.callbacks import generate

    torch.set_num_threads(1)
    backend = DigitsBackend()

    def one(request: Any) -> None:
        try:
            generate(backend, *request.values)
        except Exception:  # the bad requests: gr.Error
            pass

    for request in plan[:3]:
        one(request)
    rows = []
    for index in range(rounds):
        gc.collect()
        before = rss_kib(os.getpid())
        for request in plan:
            one(request)
        gc.collect()
        rows.append({"round": index + 1, "requests": len(plan), "rss_before_mib": round(before / 1024, 1),
                     "rss_after_mib": round(rss_kib(os.getpid()) / 1024, 1)})
        print(json.dumps(rows[-1]))
    return rows


def report_lines(result: Dict[str, Any]) -> List[str]:
    """The Markdown report of a run's ``result`` (the content of ``app_load.json``), one item per paragraph or table."""
    bursts_table = markdown_table(
        ["burst", "requests (good/bad)", "concurrency", "failures", "p50 s", "p95 s", "max s", "req/s", "VmRSS MiB before → after"],
        [[b["burst"], f"{b['requests']} ({b['good']}/{b['bad']})", b["concurrency"], b["failures"], b["latency_all"]["p50_s"],
          b["latency_all"]["p95_s"], b["latency_all"]["max_s"], b["requests_per_s"], f"{b['rss_before_mib']} → {b['rss_after_mib']}"]
         for b in result["bursts"]],
    )
    memory_table = markdown_table(
        ["round", "requests", "VmRSS MiB before → after"],
        [[r["round"], r["requests"], f"{r['rss_before_mib']} → {r['rss_after_mib']}"] for r in result["callback_in_process"]],
    )
    return [
        "# Web demo under load",
        "",
        f"`{result['command']}` against `{result['server']}`, {result['machine']['cpus']} CPUs "
        f"(1-min load average {result['machine']['load_avg_1m_at_end']} at the end). {result['request_mix']}.",
        "Latency is per request from submit to answer, so it includes waiting in the app's one-at-a-time queue.",
        "",
        bursts_table,
        "",
        f"Server still up after the bursts: {result['server_alive_after']}.",
        "",
        "The app's Generate callback alone, called in the benchmark's own process with the same requests "
        "(no gradio server), VmRSS per round:",
        "",
        memory_table,
    ]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="one burst of 12 requests; results are not written")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.bursts = 12, 1
    for flag in ("requests", "concurrency", "bursts"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")

    plan = burst_plan(args.requests)
    bursts: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "app") as server:
        downloads = Path(tmp) / "downloads"
        run_burst(server.url, [plan[0], plan[2]], concurrency=1, download_dir=downloads)  # warm-up
        for index in range(args.bursts):
            before = rss_kib(server.pid)
            start = time.perf_counter()
            outcomes = run_burst(server.url, plan, concurrency=args.concurrency, download_dir=downloads)
            seconds = time.perf_counter() - start
            after = rss_kib(server.pid)
            figures = summarise(outcomes, seconds, before, after, args.concurrency)
            figures["burst"] = index + 1
            bursts.append(figures)
            print(json.dumps(figures))
        alive = server.alive()
    in_process = callback_memory(plan, rounds=args.bursts)

    result = {
        "command": command("app_load", argv),
        "server": "python -m nlg.app --host 127.0.0.1 --threads 1 (digits model)",
        "request_mix": "Every 3rd request is bad (10 kinds); the good ones ask for 1-2 seeds, 4-6 sampler steps, K 0-4",
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "python": platform.python_version()},
        "server_alive_after": alive,
        "bursts": bursts,
        "callback_in_process": in_process,
    }
    if args.quick:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "app_load.json", result, sort_keys=False)
    text = write_markdown(RESULTS / "app_load.md", report_lines(result)).read_text()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
