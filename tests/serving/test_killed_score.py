"""`kill -9` at any moment of `bookpulse score` leaves the month's path whole (the previous
output or the new one, never nothing, never half), and the next run cleans up and gives the
same files. The kill points vary with the machine's speed; what is checked holds at any."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bookpulse.adapters.publish import Manifest, file_entries
from serving_keys import MONTH


def _whole(out: Path) -> dict:
    """The month at `out` is complete: every file is there as its manifest recorded it."""
    assert out.is_dir(), "the month's path is missing"
    files = Manifest.read(out).files
    assert file_entries(out) == files
    return files


def test_a_killed_score_leaves_a_whole_month_and_the_next_run_cleans_up(
    served_home: Path, trainable_book: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(served_home, home, ignore=shutil.ignore_patterns("bentoml", "*.log"))
    out = home / "scores" / MONTH
    before = _whole(out)
    env = dict(os.environ, BOOKPULSE_HOME=str(home))
    for name in ("MLFLOW_TRACKING_URI", "BOOKPULSE_ONLINE_STORE", "BOOKPULSE_SPECS_ROOT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "bookpulse.cli", "score", "--book", str(trainable_book)]
    cmd += ["--as-of", MONTH, "--threads", "1"]
    log = (tmp_path / "score.log").open("w")
    for when in (0.5, 3.0, 6.0, "publishing"):
        left = set(out.parent.glob(f".{MONTH}.tmp-*"))  # an earlier kill's, if any
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if when == "publishing":  # the moment the new month is being written beside the old
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if set(out.parent.glob(f".{MONTH}.tmp-*")) - left:
                    break
                time.sleep(0.005)
        else:
            time.sleep(when)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert _whole(out) == before  # a re-run of the same month writes the same files
    done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, (tmp_path / "score.log").read_text()[-2000:]
    assert _whole(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [MONTH], "debris left beside it"
    online = sorted(p.name for p in (home / "online").iterdir())
    assert online == ["features.sqlite"], online
