"""Assemble conversations from single-speaker clips, with the ground truth kept.

Used for the bundled demo call, for tests and for benchmarks: each turn is a clip placed on
its speaker's channel, so who spoke when (and what, and with which emotion) is known exactly.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotivoice.analysis.audio import SAMPLE_RATE, load_audio


@dataclass(frozen=True)
class Turn:
    leg: int  # 0 = left channel, 1 = right
    clip: Path
    emotion: str = ""
    text: str = ""
    gap_s: float = 0.6  # silence before this turn; negative overlaps the previous turn


@dataclass(frozen=True)
class PlacedTurn:
    leg: int
    start: float
    end: float
    emotion: str
    text: str


def assemble(turns: list[Turn], lead_s: float = 0.5, tail_s: float = 0.5) -> tuple[np.ndarray, list[PlacedTurn]]:
    """Place turns one after another on their legs; returns (2, samples) audio and where each went."""
    clips = [load_audio(t.clip, channels=1)[0] for t in turns]
    placed, cursor = [], lead_s
    for turn, clip in zip(turns, clips):
        start = max(0.0, cursor + (turn.gap_s if placed else 0.0))
        placed.append(PlacedTurn(turn.leg, start, start + len(clip) / SAMPLE_RATE, turn.emotion, turn.text))
        cursor = placed[-1].end
    audio = np.zeros((2, int((cursor + tail_s) * SAMPLE_RATE)), dtype=np.float32)
    for p, clip in zip(placed, clips):
        i = int(p.start * SAMPLE_RATE)
        audio[p.leg, i:i + len(clip)] += clip
    return audio, placed


def write_audio(audio: np.ndarray, path: Path, codec_args: list[str] | None = None) -> Path:
    """Write (channels, samples) float32 at 16 kHz with FFmpeg; the extension picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = audio.shape[0]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", str(channels),
           "-i", "-", *(codec_args or []), str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(audio.T, dtype=np.float32).tobytes(), check=True)
    return path
