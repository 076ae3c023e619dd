"""SIP legs recorded by pjmedia itself, so Python is off the media clock (connector.media_path = "native").

With a Python port per leg (connector/sipcall.py LegPort) pjmedia's clock thread needs the GIL
every 20 ms for every leg; a CPU-bound process starves it, it skips ticks and the jitter buffers
lose audio (at 24 SIPREC calls 1 of 48 kept legs held what was sent). Here each leg's stream is
connected in the conference bridge to a pjmedia WAV writer of its own (C: the clock thread never
enters Python), writing `<audio_dir>/.partial/<call_id>.<n>.wav` (0600, created by us first;
pjmedia's fopen("wb") keeps the mode) beside the recording front's raw leg. One thread for all
legs ("sip-leg-tailer") reads what each file has grown by, in reads of at least 0.2 s, takes it
to the leg's rate (analysis/live/nativewav.py), and pushes it to the sink as 20 ms frames
numbered in order, so the recording front, gap counting, the kept WAV, redaction and admission
control see what a Python port would have handed them. A call's CallEnded follows its legs' last
samples, read once the bridge has let go of their writers and they have closed their files.

pjsua2's AudioMediaRecorder would do the writing, but pjsua caps recorders at 32 a process (16
SIPREC calls); the writers are made through pjmedia's C API instead (ctypes; the calls pjsua's
recorder makes), removed from the bridge first and destroyed only once the bridge reports the
removal done (connector/portyard.py), so the clock never writes to a freed port.

A disk that fills mid-call would cost pjmedia's writes (it drops a buffer it cannot write): each
leg keeps `connector.media_reserve_s` of disk reserved ahead of its end (fallocate with
FALLOC_FL_KEEP_SIZE, so the file's size, by which it is read, still says what was written), which
a full disk cannot take. After a kill -9 the file's header still says 0 bytes of data; crash
recovery reads it by size (CallRecorder.take_native_tails).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotivoice.analysis.live.messages import CallEnded, Frame
from emotivoice.analysis.live.nativewav import Decimator, wav_layout
from emotivoice.analysis.live.recorder import create_native_leg

log = logging.getLogger("emotivoice.connector.sip")

FRAME_S = 0.02
TAIL_S = 0.2  # the tailer looks at every leg this often...
MIN_READ_S = 0.2  # ...and hands a leg on once this much is new (at its end, whatever is left)
CLOSE_WAIT_S = 5.0  # a hung-up leg whose writer was never released is read as it stands after this
FALLOC_FL_KEEP_SIZE = 1


def _fn(lib: ctypes.CDLL, name: str, restype, *argtypes):
    func = lib[name]
    func.restype, func.argtypes = restype, list(argtypes)
    return func


class WavPorts:
    """The pjsua/pjmedia C calls a native leg needs. OSError/AttributeError if the library lacks them."""

    def __init__(self, library_path: str):
        lib = ctypes.CDLL(library_path)
        vp, u = ctypes.c_void_p, ctypes.c_uint
        self.pool_create = _fn(lib, "pjsua_pool_create", vp, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t)
        self.pool_release = _fn(lib, "pj_pool_release", None, vp)
        self.writer_create = _fn(lib, "pjmedia_wav_writer_port_create", ctypes.c_int, vp, ctypes.c_char_p,
                                 u, u, u, u, u, ctypes.c_ssize_t, ctypes.POINTER(vp))
        self.add = _fn(lib, "pjsua_conf_add_port", ctypes.c_int, vp, vp, ctypes.POINTER(ctypes.c_int))
        self.connect = _fn(lib, "pjsua_conf_connect", ctypes.c_int, ctypes.c_int, ctypes.c_int)
        self.remove = _fn(lib, "pjsua_conf_remove_port", ctypes.c_int, ctypes.c_int)
        self.port_destroy = _fn(lib, "pjmedia_port_destroy", ctypes.c_int, vp)
        libc = ctypes.CDLL(None, use_errno=True)
        self.fallocate = _fn(libc, "fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                             ctypes.c_int64)

    def reserve(self, fd: int, offset: int, length: int) -> int:
        """Reserve disk blocks past `offset` without changing the size; 0 or the errno."""
        return 0 if self.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) == 0 else ctypes.get_errno()


@dataclass
class NativeLeg:
    """One leg's writer in the bridge and how far the tailer has read its file."""

    call_id: str
    leg: str
    rate: int  # the leg's own rate, what its frames carry
    path: Path
    slot: int
    port: int  # pjmedia_port*
    pool: int  # pj_pool_t*
    opened_at: float
    discard: bool = False  # remove the file at release (a call never announced)
    released: bool = False  # the writer is destroyed: its file is complete
    ended_at: float | None = None
    done: bool = False
    fd: int | None = None  # the tailer's: reading
    wfd: int | None = None  # the tailer's: reserving space ahead
    reserved_to: int = 0
    data_start: int | None = None
    offset: int = 0
    min_read: int = 0
    decimator: Decimator | None = None
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    seq: int = 0


def open_leg(ports: WavPorts, audio_dir: Path, call_id: str, index: int, leg: str, rate: int, source_slot: int,
             bridge_rate: int, reserve_bytes: int) -> NativeLeg:
    """Create leg `index`'s writer, reserve its disk, put it in the bridge and connect the stream
    to it (event thread). OSError (disk, pjmedia) or UnsafePath; nothing is left behind."""
    path = create_native_leg(audio_dir, call_id, index)
    pool = ports.pool_create(b"native-leg", 1024, 1024)
    port = ctypes.c_void_p()
    status = ports.writer_create(pool, os.fsencode(path), bridge_rate, 1, bridge_rate // 50, 16, 0, 0,
                                 ctypes.byref(port))
    if status != 0:
        ports.pool_release(pool)
        path.unlink(missing_ok=True)
        raise OSError(f"pjmedia could not open the leg's WAV writer (status {status})")
    if reserve_bytes > 0:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            ports.reserve(fd, 0, reserve_bytes)  # best effort: the tailer keeps it topped up
        finally:
            os.close(fd)
    slot = ctypes.c_int(-1)
    status = ports.add(pool, port, ctypes.byref(slot))
    if status != 0:
        ports.port_destroy(port)
        ports.pool_release(pool)
        path.unlink(missing_ok=True)
        raise OSError(f"the leg's WAV writer could not join the bridge (status {status})")
    native = NativeLeg(call_id, leg, rate, path, slot.value, port.value, pool, time.monotonic(),
                       reserved_to=max(0, reserve_bytes))
    if ports.connect(source_slot, slot.value) != 0:
        log.error("native leg not connected to its stream", extra={"call_id": call_id, "leg": leg})
    return native


def release_leg(ports: WavPorts, native: NativeLeg) -> None:
    """The bridge has let go of the writer (event thread): destroy it, which writes what it holds
    and the header's sizes, and free its pool. Once `released` the tailer reads the file to its end."""
    ports.port_destroy(native.port)
    ports.pool_release(native.pool)
    native.port = native.pool = 0
    native.released = True
    if native.discard:
        native.path.unlink(missing_ok=True)


@dataclass
class _Tailed:
    legs: list[NativeLeg]
    reason: str | None = None  # set when the call has ended
    ended_at: float | None = None


class LegTailer:
    """The one thread that hands every native leg's new audio to the sink (see the module docstring)."""

    def __init__(self, sink, ports: WavPorts, reserve_bytes: int):
        self.sink, self.ports, self.reserve_bytes = sink, ports, reserve_bytes
        self._lock = threading.Lock()
        self._calls: dict[str, _Tailed] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters: collections.Counter[str] = collections.Counter()

    def start(self) -> LegTailer:
        self._thread = threading.Thread(target=self._run, name="sip-leg-tailer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)
            self._thread = None
        for tailed in list(self._calls.values()):
            for native in tailed.legs:
                self._close(native)

    def add(self, call_id: str, legs: list[NativeLeg]) -> None:
        """Tail the call's legs (once it is announced: CallStarted is with the sink)."""
        with self._lock:
            self._calls[call_id] = _Tailed(legs)

    def end(self, call_id: str, reason: str) -> None:
        """The call is over (event thread): once its legs are read to their end, CallEnded goes on."""
        now = time.monotonic()
        with self._lock:
            tailed = self._calls.get(call_id)
            if tailed is None or tailed.reason is not None:
                return
            tailed.reason, tailed.ended_at = reason, now
            for native in tailed.legs:
                native.ended_at = now

    def busy(self) -> int:
        """Calls still being read (an ended one until its CallEnded is out)."""
        with self._lock:
            return len(self._calls)

    def stats(self) -> dict:
        return {"tailed_calls": self.busy(), **{f"tail_{k}": v for k, v in self.counters.items()}}

    # ---- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                calls = list(self._calls.items())
            for call_id, tailed in calls:
                try:
                    self._pass(call_id, tailed)
                except Exception:  # one call's trouble must not stop every leg's audio
                    self.counters["errors"] += 1
                    log.exception("native leg tailing failed", extra={"call_id": call_id})
            self.counters["passes"] += 1
            self._stop.wait(max(0.0, TAIL_S - (time.monotonic() - started)))

    def _pass(self, call_id: str, tailed: _Tailed) -> None:
        now = time.monotonic()
        for native in tailed.legs:
            if native.done:
                continue
            final = native.released or (tailed.ended_at is not None and now - tailed.ended_at > CLOSE_WAIT_S)
            try:
                self._read(native, final)
            except OSError as exc:
                self.counters["read_errors"] += 1
                log.error("native leg unreadable", extra={"call_id": call_id, "leg": native.leg, "error": str(exc)})
                final = final or tailed.ended_at is not None
            if final:
                native.done = True
                self._close(native)
        if tailed.reason is None or not all(n.done for n in tailed.legs):
            return
        missing = {n.leg: max(0, int((n.ended_at - n.opened_at) / FRAME_S) - n.seq) for n in tailed.legs}
        with self._lock:
            self._calls.pop(call_id, None)
        if not self._kept_by_sink(call_id):  # nobody's recording will remove it
            for native in tailed.legs:
                native.path.unlink(missing_ok=True)
        self.sink.end(CallEnded(call_id, tailed.reason, missing))

    def _kept_by_sink(self, call_id: str) -> bool:
        recording = getattr(self.sink, "recording", None)
        if not callable(recording):
            return False
        recorder = recording(call_id)[0]
        return recorder is not None and not recorder.error

    def _read(self, native: NativeLeg, final: bool) -> None:
        if native.fd is None:
            native.fd = os.open(native.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        size = os.fstat(native.fd).st_size
        if native.data_start is None:
            layout = wav_layout(os.pread(native.fd, min(size, 4096), 0))
            if layout is None:
                return  # the header is still in the writer's buffers
            native.data_start, bridge_rate = layout
            native.offset = native.data_start
            native.decimator = Decimator(bridge_rate, native.rate)
            native.min_read = int(MIN_READ_S * bridge_rate) * 2
        new = (size - native.offset) // 2 * 2
        if new > 0 and (final or new >= native.min_read):
            data = os.pread(native.fd, new, native.offset)
            native.offset += len(data)
            self._hand_on(native, native.decimator.feed(np.frombuffer(data, dtype="<i2")), final)
        elif final:
            self._hand_on(native, np.zeros(0, np.int16), final)
        if not final:
            self._reserve(native, size)

    def _hand_on(self, native: NativeLeg, pcm: np.ndarray, final: bool) -> None:
        """Push whole 20 ms frames (and, at the end, the last piece), numbered in order."""
        buf = np.concatenate([native.pending, pcm]) if native.pending.size else pcm
        step = native.rate // 50
        whole = len(buf) if final else len(buf) // step * step
        data = buf[:whole].tobytes()
        native.pending = buf[whole:]
        size = 2 * step
        for at in range(0, len(data), size):
            self.sink.push(Frame(native.call_id, native.leg, native.seq, data[at:at + size]))
            native.seq += 1
        self.counters["frames"] += (len(data) + size - 1) // size

    def _reserve(self, native: NativeLeg, size: int) -> None:
        """Keep `reserve_bytes` of disk reserved past the leg's end (half of it used: top it up)."""
        if self.reserve_bytes <= 0 or native.reserved_to - size > self.reserve_bytes // 2:
            return
        if native.wfd is None:
            native.wfd = os.open(native.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        err = self.ports.reserve(native.wfd, size, self.reserve_bytes)
        if err == 0:
            native.reserved_to = size + self.reserve_bytes
            return
        self.counters["reserve_failed"] += 1
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):  # this filesystem cannot: do without
            native.reserved_to = 1 << 62
        if self.counters["reserve_failed"] in (1, 100) or self.counters["reserve_failed"] % 10000 == 0:
            log.warning("native leg: disk space not reserved ahead", extra={
                "call_id": native.call_id, "leg": native.leg, "error": os.strerror(err),
                "failures": self.counters["reserve_failed"]})

    @staticmethod
    def _close(native: NativeLeg) -> None:
        for name in ("fd", "wfd"):
            fd = getattr(native, name)
            if fd is not None:
                os.close(fd)
                setattr(native, name, None)
