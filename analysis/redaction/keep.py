"""The recordings the product keeps, redacted before the call is stored (issue 15).

What EmotiVoice keeps, and the review page plays, is the live service's audio dir (each live call's
WAV, re-analysed by the final batch pass) and the recordings inbox (the analysis service's). When
`redaction.audio` is on, a recording analysed there has the redacted words' time spans silenced
(or toned) before its call is stored, so the unredacted audio does not stay on disk:

- a WAV that `audio.redact_wav` can rewrite (16/32-bit PCM, float, G.711) is rewritten in place,
  atomically (a crash leaves the old file or the redacted one);
- anything else (mp3, opus, 24-bit WAV) is decoded once to a 16-bit WAV at its own rate under
  `<dir>/redacted/` (the inbox watcher does not look into subfolders), that copy is redacted, and
  the original is removed; the call's `source` then names the copy, which is what plays.

A recording outside those dirs is the user's own file (`emotivoice analyze ~/calls/x.mp3`): it is
left as it is, and the call says so.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from emotivoice.analysis.redaction.audio import WavError, read_layout, redact_wav
from emotivoice.storage.files import UnsafePath, inside, make_private, open_private, private_dir

if TYPE_CHECKING:
    from emotivoice.analysis.results import CallResult
    from emotivoice.config import Settings

log = logging.getLogger("emotivoice.redaction")

REDACTED_DIR = "redacted"  # where a compressed recording's redacted WAV goes, inside its kept dir


def kept_dirs(settings: Settings) -> list[Path]:
    """The folders whose recordings the product keeps (and the review page plays)."""
    return [Path(settings.live.audio_dir), Path(settings.inbox_dir)]


def kept_dir_of(path: Path, settings: Settings) -> Path | None:
    """The kept dir `path` lies in (symlinks followed), or None for a file of the user's own."""
    for base in kept_dirs(settings):
        try:
            inside(base, path)
        except UnsafePath:
            continue
        return base
    return None


def redact_kept_audio(path: Path | str, result: CallResult, settings: Settings) -> Path:
    """Cut the call's redacted spans out of its kept recording; returns where the recording now is
    (and sets `result.source` to it). What was done is recorded in `result.metrics["redaction"]`
    ("audio": "silence" / "tone" / "off" / "not kept"; "audio_cut_s")."""
    path = Path(path)
    cfg = settings.redaction
    summary = result.metrics.setdefault("redaction", {})
    if not cfg.audio:
        summary["audio"] = "off"
        return path
    base = kept_dir_of(path, settings)
    if base is None:
        summary["audio"] = "not kept"  # the user's own file: never rewritten by us
        return path
    spans = result.redaction.spans if result.redaction else []
    try:
        read_layout(path)
        target = path
    except WavError:
        target = _as_wav(path, base)
    cut = redact_wav(target, spans, fill=cfg.audio_fill, all_channels=cfg.audio_all_channels) if spans else 0.0
    make_private(target)
    if target != path:
        path.unlink(missing_ok=True)  # only once the redacted copy is whole
        result.source = str(target)
    summary["audio"] = cfg.audio_fill
    summary["audio_cut_s"] = round(cut, 3)
    log.info("kept recording redacted", extra={"call_id": result.call_id, "seconds_cut": round(cut, 3),
                                               "spans": len(spans), "fill": cfg.audio_fill})
    return target


def _as_wav(path: Path, base: Path) -> Path:
    """A 16-bit PCM WAV of `path` (its own rate and channels) under `<base>/redacted/`, named like
    the call id (letters, digits, '-'), never by anything else in the name."""
    folder = private_dir(inside(base, REDACTED_DIR))
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    target = inside(folder, f"{re.sub(r'[^A-Za-z0-9_-]+', '-', path.stem)[:48]}-{digest}.wav")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open_private(tmp, "wb"):  # made 0600 before ffmpeg writes the audio into it
            pass
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-map", "0:a:0",
                        "-c:a", "pcm_s16le", "-f", "wav", str(tmp)], check=True, capture_output=True)
        tmp.replace(target)
    except subprocess.CalledProcessError as exc:
        raise WavError(f"{path.name}: could not be rewritten as WAV for redaction "
                       f"({exc.stderr.decode(errors='replace').strip()[:200]})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
