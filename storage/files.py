"""Files the service writes: owner-only, inside its data dir, never named by the network.

Everything EmotiVoice keeps (the database, recordings, sidecars, user and token files) is private
to the account that runs it: directories 0700, files 0600, whatever the umask. Names that reach
the disk are made here (`new_call_id`) or checked here (`inside`); an identifier that arrives from
a caller (a SIP Call-ID, a Twilio stream SID, a custom parameter) is data kept in the call's
metadata and never becomes part of a path.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
PRIVATE_UMASK = 0o077
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # what our own ids look like


class UnsafePath(ValueError):
    """A path that would leave the directory it must stay in, or a name that is not ours."""


def private_umask() -> None:
    """Make every file this process creates owner-only, DuckDB's own files and WAL included."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700 and tighten it if it already existed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def make_private(path: Path) -> None:
    """chmod 0600 a file we created, if it exists (DuckDB's file and WAL, a finished WAV)."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def inside(base: Path, path: Path | str) -> Path:
    """`path` resolved (symlinks followed), refused unless it lies inside `base`."""
    root = Path(base).resolve()
    resolved = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePath(f"refused a path outside {root}")
    return resolved


def open_private(path: Path, mode: str = "wb"):
    """Open for writing as 0600 without following a symlink planted at the final component."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, mode)


@contextmanager
def replacing_private(path: Path):
    """A 0600 file to write that appears at `path` whole, or not at all: written under a hidden
    temporary name beside it and renamed over `path` once closed (removed if writing fails). A
    reader never sees it half-written (a 45 s call's WAV was once read, and deleted, 2 s in)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open_private(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_private(path: Path, data: bytes | str) -> None:
    """Write a whole file atomically (temp file then rename) as 0600."""
    with replacing_private(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def new_call_id(prefix: str = "call") -> str:
    """An id of our own for a live call: sortable by start, unguessable, safe as a file name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(6)}"


def check_call_id(call_id: str) -> str:
    """`call_id` if it is one of our own (letters, digits, '-', '_'), else UnsafePath."""
    if not isinstance(call_id, str) or not CALL_ID.match(call_id):
        raise UnsafePath("not a call id this service made")
    return call_id


def remove_kept(root: Path, path: Path) -> bool:
    """Delete `path` if it is a regular file inside `root`, with no symlink at it or its folder
    (one planted there is never followed); True if it was deleted. UnsafePath outside `root`.
    Retention (analysis/live/recorder.py) and erasure (`emotivoice delete`) both delete this way."""
    path = Path(path)
    if path.is_symlink() or path.parent.is_symlink() or not path.is_file():
        return False
    inside(root, path)
    path.unlink(missing_ok=True)
    return True


def call_audio(audio_dir: Path, roots: list[Path], call_id: str, source: str | None) -> tuple[list[Path], list[str]]:
    """The kept audio of a call, to erase it: the live service's WAV, sidecar and unfinished legs
    (`audio_dir/*/<call_id>.*`, only for an id of ours), and the stored `source` with its sidecar
    JSON when it lies inside one of `roots`. Returns (files found, sources left outside every root)."""
    found: list[Path] = []
    if isinstance(call_id, str) and CALL_ID.match(call_id) and Path(audio_dir).is_dir():
        found += sorted(Path(audio_dir).glob(f"*/{call_id}.*"))  # no glob characters in our ids
    outside: list[str] = []
    if isinstance(source, str) and source and "\x00" not in source:
        for root in roots:
            try:
                inside(root, source)
            except (UnsafePath, OSError, RuntimeError):
                continue
            found += [Path(source), Path(source).with_suffix(".json")]
            break
        else:
            outside.append(source)
    return list(dict.fromkeys(found)), outside


def remove_call_audio(audio_dir: Path, roots: list[Path], call_id: str, source: str | None) -> tuple[int, list[str]]:
    """Delete a call's kept audio (call_audio) with remove_kept under whichever root holds each
    file; (files removed, sources left outside every root). Erasure and retention both use it."""
    files, outside = call_audio(audio_dir, roots, call_id, source)
    removed = 0
    for path in files:
        for root in roots:
            try:
                removed += remove_kept(root, path)
                break
            except (UnsafePath, OSError):
                continue
    return removed, outside

