"""Audio I/O through the FFmpeg binaries: anything FFmpeg reads comes out as 16 kHz float32.

Decoding streams through a pipe in fixed-size blocks, so a 3-hour recording never has to
sit in memory whole. Every failure becomes an `AudioError` with a one-line reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(Exception):
    """A recording that cannot be analysed; the message is meant for the user as is."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    channels: int
    sample_rate: int
    duration_s: float | None
    codec: str


def _require(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise AudioError(f"{binary} is not installed (run `python3 launch.py` to install it)")
    return found


def probe(path: Path | str) -> AudioInfo:
    """Check that `path` holds a decodable audio stream and describe it."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not a recording")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    cmd = [_require("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
           "-show_format", "-select_streams", "a", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["unknown decoder error"])[-1]
        raise AudioError(f"{path}: corrupt or unreadable audio ({reason})")
    meta = json.loads(proc.stdout or "{}")
    streams = meta.get("streams") or []
    if not streams:
        raise AudioError(f"{path}: no audio stream in this file")
    stream = streams[0]
    duration = stream.get("duration") or meta.get("format", {}).get("duration")
    return AudioInfo(
        path=path,
        channels=int(stream.get("channels") or 1),
        sample_rate=int(stream.get("sample_rate") or 0),
        duration_s=float(duration) if duration not in (None, "N/A") else None,
        codec=str(stream.get("codec_name", "unknown")),
    )


def iter_blocks(path: Path | str, channels: int, block_s: float = 600.0) -> Iterator[np.ndarray]:
    """Yield (samples, channels) float32 blocks of at most `block_s` seconds at 16 kHz.

    Raises AudioError if FFmpeg fails before producing any audio; a stream that breaks off
    midway (a truncated file) ends early instead, keeping what decoded.
    """
    cmd = [_require("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(SAMPLE_RATE), "-"]
    frame_bytes = 4 * channels
    block_bytes = int(block_s * SAMPLE_RATE) * frame_bytes
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    produced = 0
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(block_bytes)
            usable = len(buf) - len(buf) % frame_bytes
            if usable:
                produced += usable
                yield np.frombuffer(buf[:usable], dtype=np.float32).reshape(-1, channels)
            if len(buf) < block_bytes:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.wait()
    if produced == 0:
        reason = (stderr.strip().splitlines() or ["no samples decoded"])[-1]
        raise AudioError(f"{path}: no audio could be decoded ({reason})")


def load_audio(path: Path | str, channels: int | None = None) -> np.ndarray:
    """Decode a whole (short) file to a (channels, samples) float32 array at 16 kHz."""
    if channels is None:
        channels = probe(path).channels
    blocks = list(iter_blocks(path, channels, block_s=3600.0))
    return np.concatenate(blocks, axis=0).T.copy()


def to_8k_pcm16(samples: np.ndarray) -> np.ndarray:
    """16 kHz float audio as a telephone leg carries it: 8 kHz signed 16-bit (low-passed, clipped)."""
    from scipy.signal import resample_poly

    narrow = resample_poly(np.asarray(samples, dtype=np.float64), 1, 2) * 32767
    return np.clip(narrow, -32768, 32767).astype(np.int16)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of a clip in dB relative to full scale (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-6))


def normalize(samples: np.ndarray, target_dbfs: float = -20.0, peak_limit: float = 0.95) -> np.ndarray:
    """RMS-normalise to `target_dbfs`, then scale down if the peak would clip.

    Quiet telephone legs and hot recordings then reach the models at one level; the raw
    loudness is measured before this and kept, since raised voice is itself a signal.
    """
    if samples.size == 0:
        return samples.astype(np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms < 1e-5:
        return samples.astype(np.float32)
    gain = 10 ** (target_dbfs / 20.0) / rms
    peak = float(np.max(np.abs(samples))) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return (samples * gain).astype(np.float32)


def level_speech(samples: np.ndarray, target_dbfs: float = -20.0, peak_limit: float = 0.95,
                 max_gain_db: float = 40.0) -> np.ndarray:
    """Level one utterance for the recogniser: its active speech to `target_dbfs`, peaks soft-limited.

    The RMS is taken over the clip's active 20 ms frames (within 30 dB of its loudest), so the
    pauses inside a whispered turn do not make it look quieter still, and a shouted one with long
    silences is not over-driven. The gain is then capped so the 99.9th-percentile sample reaches at
    most `peak_limit` (a single click does not squash the whole clip), and what still exceeds
    half the limit is bent under it with a tanh knee: no new flat tops, and a clip that was already
    clipped on the line stays as it was instead of being clipped again harder.
    """
    x = np.asarray(samples, dtype=np.float32)
    frames = x[: len(x) // 320 * 320].reshape(-1, 320).astype(np.float64)
    power = np.mean(frames**2, axis=1) if len(frames) else np.mean(x.astype(np.float64) ** 2, keepdims=True)
    if x.size == 0 or float(power.max(initial=0.0)) < 1e-10:
        return x.copy()
    active = float(np.mean(power[power >= power.max() * 1e-3]))
    gain = min(10 ** (target_dbfs / 20.0) / np.sqrt(active), 10 ** (max_gain_db / 20.0))
    high = float(np.percentile(np.abs(x), 99.9)) * gain
    if high > peak_limit:
        gain *= peak_limit / high
    y = x.astype(np.float64) * gain
    knee = peak_limit / 2
    over = np.abs(y) > knee
    y[over] = np.sign(y[over]) * (knee + (peak_limit - knee) * np.tanh((np.abs(y[over]) - knee) / (peak_limit - knee)))
    return y.astype(np.float32)
