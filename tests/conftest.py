"""Shared fixtures: real audio from ../shared, a real Whisper model, real DuckDB files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotivoice.analysis.emotion.corpus import read_manifest
from emotivoice.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo" / "demo_call.opus"
DEMO_TRUTH = json.loads((ROOT / "assets" / "demo" / "demo_call.json").read_text())


@pytest.fixture(scope="session")
def settings():
    return load_settings(env={})


@pytest.fixture(scope="session")
def emotion_data() -> Path:
    data = load_settings().emotion_data_dir  # ../shared/data/emotion, or $EMOTIVOICE_EMOTION_DATA_DIR
    if not (data / "manifest.csv").is_file():
        pytest.skip(f"labelled speech not found at {data} (CI has it at ../shared)")
    return data


@pytest.fixture(scope="session")
def manifest(emotion_data):
    return read_manifest(emotion_data / "manifest.csv")


def small_manifest(manifest, path: Path, actors: int) -> Path:
    """A manifest of the first `actors` CREMA-D actors, one non-intensity clip per emotion each:
    enough for `train emotion` to run end to end in a test."""
    import csv

    chosen = sorted({c.speaker for c in manifest if c.corpus == "cremad"})[:actors]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "corpus", "speaker", "emotion"])
        for actor in chosen:
            mine = [c for c in manifest if c.speaker == actor and "_IEO_" not in c.path.name]
            for emotion in sorted({c.emotion for c in mine}):
                clip = next(c for c in mine if c.emotion == emotion)
                w.writerow([clip.path, clip.corpus, clip.speaker, clip.emotion])
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real `emotivoice` command in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "emotivoice.app", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def demo_analysis(tmp_path_factory):
    """The bundled demo call analysed once through the CLI into a fresh DuckDB file."""
    out = tmp_path_factory.mktemp("demo")
    db, js = out / "calls.duckdb", out / "calls.json"
    proc = run_cli("analyze", str(DEMO), "--db", str(db), "--json", str(js), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return db, json.loads(js.read_text())


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c in " '" else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[-1]) / max(len(ref), 1)
