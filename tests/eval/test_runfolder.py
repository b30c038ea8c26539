"""The run folder's parts on their own: caption loading without ``fcntl``, locks held per instance, a filesystem
without ``flock``, the process-group timeout, and resuming a folder recorded under an old model id."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlg.eval import FolderLocks, LockUnavailableError, RunFolder, process_state
from nlg.eval.captions import Caption

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"stable_diffusion_path": "fake-org/new-model", "seed": 3, "steps": 4}


@pytest.mark.slow  # a fresh interpreter imports torch
def test_captions_load_where_there_is_no_fcntl(tmp_path: Path) -> None:
    """With ``fcntl`` unimportable (as on Windows), the captions module, the run folder and the loop still import,
    and the captions read back as written."""
    annotations = [{"id": 7, "image_id": 1, "caption": "a cat"}, {"id": 3, "caption": "ein Hund 🐕"}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"annotations": annotations}, ensure_ascii=False), encoding="utf-8")
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import nlg.eval.runfolder, nlg.eval.generation, nlg.eval.runs\n"
            "from nlg.eval.captions import load_captions, shuffled\n"
            "caps = load_captions(sys.argv[1])\n"
            "print([(c.id, c.image_id, c.caption) for c in caps])\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-2000:]
    expected = [(a["id"], a.get("image_id"), a["caption"]) for a in annotations]
    assert done.stdout.strip() == repr(expected)


def test_locks_belong_to_each_instance_not_to_the_module(tmp_path: Path) -> None:
    """Two run folders on one path in one process exclude each other as two processes would; closing one frees
    its claims (with module-global lock tables the second object would have shared the first one's locks)."""
    a, b = RunFolder(tmp_path, SETTINGS), RunFolder(tmp_path, SETTINGS)
    a.prepare()
    caps = [Caption(1, "x"), Caption(2, "y")]
    assert [c.id for c in a.claim(caps[:1])] == [1]
    assert [c.id for c in b.claim(caps)] == [2]  # 1 is held by a
    a.close()
    assert [c.id for c in b.claim(caps[:1])] == [1]
    b.close()
    assert not list(tmp_path.glob(".*.claim"))  # closing released (and removed) every claim


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_flock_is_a_one_line_error_naming_it(tmp_path: Path, monkeypatch, code: int) -> None:
    import fcntl

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    folder = RunFolder(tmp_path / "run", SETTINGS)
    with pytest.raises(LockUnavailableError) as info:
        folder.prepare()
    message = str(info.value)
    assert "\n" not in message
    assert "does not support file locks" in message and os.strerror(code) in message and str(tmp_path / "run") in message
    assert isinstance(info.value, ValueError)  # run_cli prints it as one line, exit code 2


def test_the_lock_fallback_error_reaches_the_command_line_as_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import fcntl

    from nlg.eval import run_cli

    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, "No locks available")))
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: RunFolder(tmp_path, SETTINGS).prepare() and 0)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: output_dir: the filesystem of") and "No locks available" in err[0]


def test_claims_still_work_with_real_flock_after_the_fallback_test(tmp_path: Path) -> None:
    locks = FolderLocks(tmp_path)
    other = FolderLocks(tmp_path)
    locks.hold()
    assert locks.claim(5) and not other.claim(5)
    locks.release(5)
    assert other.claim(5)
    other.close()
    locks.close()


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "7200", True])
def test_process_group_timeout_must_be_a_positive_number(timeout) -> None:
    with pytest.raises(ValueError, match="timeout"):
        process_state(timeout)


def test_a_folder_recorded_under_an_old_model_id_is_resumed_only_when_asked(tmp_path: Path) -> None:
    old = dict(SETTINGS, stable_diffusion_path="fake-org/old-model")
    with RunFolder(tmp_path, old) as first:
        first.prepare()
        first.image_path(4).write_bytes(b"kept")
    kept = (tmp_path / "4.png").stat().st_mtime_ns
    hint = "resume with --previous_model_id {old}"
    with pytest.raises(ValueError, match="--previous_model_id fake-org/old-model"):
        RunFolder(tmp_path, SETTINGS, hints={"stable_diffusion_path": hint}).check()
    # another setting changed as well: the old id does not excuse it
    with pytest.raises(ValueError, match="seed"):
        RunFolder(tmp_path, dict(SETTINGS, seed=4), accept_previous={"stable_diffusion_path": "fake-org/old-model"}).check()
    with RunFolder(tmp_path, SETTINGS, accept_previous={"stable_diffusion_path": "fake-org/old-model"}) as resumed:
        resumed.check()
        assert resumed.prepare() is False  # resumed, nothing replaced
    assert (tmp_path / "4.png").read_bytes() == b"kept" and (tmp_path / "4.png").stat().st_mtime_ns == kept
    config = json.loads((tmp_path / "run_config.json").read_text(encoding="utf-8"))
    assert config["stable_diffusion_path"] == "fake-org/new-model"
    assert config["changes"] == [{"setting": "stable_diffusion_path", "from": "fake-org/old-model", "to": "fake-org/new-model"}]
    with RunFolder(tmp_path, SETTINGS) as again:  # from now on the plain command resumes it
        again.check()
        again.prepare()
    assert json.loads((tmp_path / "run_config.json").read_text(encoding="utf-8"))["changes"] == config["changes"]


def test_without_fcntl_sharing_a_folder_is_refused_by_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: the import fails
    with pytest.raises(LockUnavailableError, match="no fcntl module"):
        RunFolder(tmp_path, SETTINGS).prepare()
