"""Labelled emotional speech in the shared manifest format, and speaker-independent splits."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path


# Speaker ids that name the same person twice in the shared manifest. TESS's file OA_bite_neutral
# belongs to its older talker (OAF); left apart, she would sit in two splits.
SPEAKER_ALIASES = {"tess-OA": "tess-OAF"}


@dataclass(frozen=True)
class Clip:
    path: Path  # absolute
    corpus: str
    speaker: str
    emotion: str
    intensity: str = ""
    text: str = ""


def read_manifest(manifest: Path | str, corpora: set[str] | None = None) -> list[Clip]:
    """Rows of a manifest (path relative to its folder; columns path, corpus, speaker, emotion)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest (the labelled data lives in ../shared/data/emotion)")
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "corpus", "speaker", "emotion"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest}: missing columns {sorted(missing)}")
        return [Clip(manifest.parent / r["path"], r["corpus"], SPEAKER_ALIASES.get(r["speaker"], r["speaker"]),
                     r["emotion"],
                     r.get("intensity", "") or "", r.get("text", "") or "")
                for r in reader if corpora is None or r["corpus"] in corpora]


def speaker_split(speakers: list[str]) -> dict[str, str]:
    """speaker -> 'train' | 'val' | 'test', fixed by sorted order so every run agrees.

    Every fifth speaker is test (about 20%), every tenth of the rest is validation (for the
    regulariser and the temperature); no speaker is ever in two parts.
    """
    split = {}
    for i, speaker in enumerate(sorted(set(speakers))):
        split[speaker] = "test" if i % 5 == 0 else "val" if i % 10 == 3 else "train"
    return split


def fraction_of(clips: list[Clip], fraction: float) -> list[Clip]:
    """A fixed share of the clips, picked by a hash of each file name (not its folder), so every
    run, machine and checkout picks the same ones and every speaker, emotion and level keeps its
    share; 1.0 keeps all. For experiments that cannot wait for the whole corpus to be encoded."""
    if fraction >= 1.0:
        return clips
    keep = int(round(fraction * 10_000))
    return [c for c in clips
            if int.from_bytes(hashlib.sha1(c.path.name.encode()).digest()[:4], "little") % 10_000 < keep]
