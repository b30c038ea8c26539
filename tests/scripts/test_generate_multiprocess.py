"""Two processes (``accelerate launch --multi_gpu`` on the CPU) resuming a folder whose image check is slow.

Each image check sleeps, so one process checking the whole folder would keep the other waiting at the start
barrier for longer than the process-group timeout given here (``--process_group_timeout``), and the run would
abort.  The run must instead finish, with each process having checked exactly its own share of the images.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers.experiments import cpu_launch, load_script
from nlg.testing import save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "core_experiments" / "generate_images.py"
TOTAL, DELAY, TIMEOUT = 6, 4.0, 20.0  # one process checking all: 24 s > 20 s; each checking its half: 12 s
FLAGS = ["--total_images", str(TOTAL), "--inference_steps", "1", "--refining_steps", "1", "--height", "16",
         "--width", "16", "--batch_size", "2", "--scheduler", "euler"]

WRAPPER = '''"""generate_images.py with a slow image check that logs which process checked which image."""
import os, runpy, sys, time
from pathlib import Path

import nlg.eval.runfolder as runfolder

log, delay, script = sys.argv[1], float(sys.argv[2]), sys.argv[3]
del sys.argv[1:4]
sys.argv[0] = script
real = runfolder.whole_png


def slow_whole_png(path):
    with open(log, "a") as handle:
        handle.write(f"{os.environ.get('RANK', '0')} {Path(path).stem}\\n")
    time.sleep(delay)
    return real(path)


runfolder.whole_png = slow_whole_png
runpy.run_path(script, run_name="__main__")
'''


@pytest.mark.slow
def test_a_slow_rescan_is_shared_and_keeps_no_process_waiting_past_the_timeout(tmp_path: Path) -> None:
    model = save_tiny_pipeline(tmp_path / "sd21", "sd21")
    captions = tmp_path / "captions.json"
    annotations = [{"id": 300 + 11 * i, "image_id": i, "caption": f"scene number {i}"} for i in range(TOTAL + 1)]
    captions.write_text(json.dumps({"annotations": annotations}), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--output_dir", str(out), "--prompts_path", str(captions), "--stable_diffusion_path", str(model),
            "--local_files_only", *FLAGS]
    assert load_script(SCRIPT).main(args) == 0  # a finished run: the resume checks every image and makes none
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    images = sorted(int(p.stem) for p in folder.glob("*.png"))
    assert len(images) == TOTAL

    wrapper, log = tmp_path / "slow_check.py", tmp_path / "checked.log"
    wrapper.write_text(WRAPPER, encoding="utf-8")
    launch, env = cpu_launch(wrapper, 2)
    env["PYTHONPATH"] = str(ROOT)
    command = launch + [str(log), str(DELAY), str(SCRIPT), *args, "--process_group_timeout", str(TIMEOUT)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    checked: Dict[int, List[int]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        rank, stem = line.split()
        checked.setdefault(int(rank), []).append(int(stem))
    assert sorted(checked) == [0, 1], "both processes check images"
    assert not set(checked[0]) & set(checked[1]), "no image is checked twice"
    assert sorted(checked[0] + checked[1]) == images, "every image is checked once"
    assert max(len(v) for v in checked.values()) * DELAY < TIMEOUT < TOTAL * DELAY  # what the timing claims
    assert done.stdout.count(f"{TOTAL}/{TOTAL} images") == 2  # each process reports the whole folder, none waits
