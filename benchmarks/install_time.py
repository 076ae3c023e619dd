"""Install time of `python3 launch.py install` into a new venv from a fresh clone.

Two runs side by side: with pip's download cache emptied and an empty pjsua2 wheel cache (as on a
fresh machine: every wheel comes from the package index and pjproject is built from source),
and then again with everything in place (the second-run skip). apt packages are already present
on a machine that has run it once; the script says so.

    python benchmarks/install_time.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, PIP_NO_CACHE_DIR="1", EMOTIVOICE_VENV=str(Path(tmp) / "venv"),
                   EMOTIVOICE_DATA_DIR=str(Path(tmp) / "data"), EMOTIVOICE_WHEEL_CACHE=str(Path(tmp) / "wheels"))
        cold = timed([sys.executable, "launch.py", "install"], env, clone)
        warm = timed([sys.executable, "launch.py", "install"], env, clone)
        venv_mb = sum(f.stat().st_size for f in (Path(tmp) / "venv").rglob("*") if f.is_file()) / 2**20
    write_result("install_time", {
        "fresh_install_s": cold, "second_run_s": warm, "venv_mb": round(venv_mb),
        "apt": "ffmpeg " + ("was already installed" if shutil.which("ffmpeg") else "missing"),
        "note": "pip cache disabled and pjsua2 wheel cache empty: every wheel fetched from the index, "
                "pjproject built from source, as on a fresh machine"})


if __name__ == "__main__":
    main()
