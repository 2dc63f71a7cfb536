"""One writer per run folder: a live lock refuses, a dead holder's lock is taken over, and two
runs started together on one folder never mix (one refuses, the other's files are whole)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from robust_vae.evaluation.run_store import RunLockedError, run_lock

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae"]
ARGS = ["attack", "--model", "vae", "--dataset", "mnist", "--attack", "thesis-fast", "--batch-size", "64"]
HOLD = "import sys, time; from pathlib import Path; from robust_vae.evaluation.run_store import run_lock\n" \
       "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)\n"


def _holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_live_lock_refuses_and_dead_lock_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        with pytest.raises(RunLockedError, match=rf"being written by another run \(pid {proc.pid} on "):
            with run_lock(folder):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    messages: list[str] = []
    with run_lock(folder, log=messages.append):
        assert (folder / ".lock").read_text().startswith(f'{{"pid": {os.getpid()}')
    assert len(messages) == 1 and f"pid {proc.pid}" in messages[0] and "no longer running" in messages[0]
    assert (folder / ".lock").read_bytes() == b""  # released cleanly: the next writer says nothing
    with run_lock(folder, log=messages.append):
        pass
    assert len(messages) == 1


def test_cli_refuses_a_folder_another_process_writes(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        result = subprocess.run([*COMMAND, *ARGS, "--per-pair", "1", "--out", str(folder)],
                                capture_output=True, text=True, timeout=300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "being written by another run" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


@pytest.mark.parametrize("trial", range(2))
def test_two_runs_started_together_never_mix(tmp_path: Path, trial: int) -> None:
    """Two different configurations on one folder at the same moment: exactly one finishes, the
    other refuses in one line (locked, or a different configuration), and the folder holds the
    winner's run alone."""
    folder = tmp_path / "run"
    settings = (["--per-pair", "2", "--set", "steps=20"], ["--per-pair", "2", "--set", "steps=40"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([*COMMAND, *ARGS, *extra, "--out", str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for extra in settings]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], (codes, [o[1][-500:] for o in outputs])
    loser = codes.index(2)
    assert ("being written by another run" in outputs[loser][1]
            or "different configuration" in outputs[loser][1]), outputs[loser][1]
    winner_steps = 20 if codes.index(0) == 0 else 40
    assert json.loads((folder / "config.json").read_text())["hyperparameters"]["steps"] == winner_steps
    assert json.loads((folder / "run.json").read_text())["hyperparameters"]["steps"] == winner_steps
    assert not list(folder.glob("progress/*.partial.npz")) and not list(folder.glob("progress/.*"))
