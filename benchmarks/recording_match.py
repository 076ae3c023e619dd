"""Does a kept leg hold what was sent, on the same timeline? (benchmarks/live.py, tests/test_record_first.py)

The recording of a live leg starts at the call's first frame and runs to its hang-up, so it is
offset from what the sender played and may carry silence after it. What must hold is the sent
audio itself, whole and without time lost or gained inside it: the lag of the sent audio's
first seconds in the recording and the lag of its last seconds must agree (`drift_s`), and
the recording must reach the end of the sent audio (`kept_s`). Lags come from 10 ms loudness
envelopes, so µ-law coding and the media path's small level changes do not matter, refined to
1/8 of a hop: pjmedia delays a leg by a whole number of samples (65 ms = 520 at 8 kHz, measured),
and a recording half a hop off the envelope's grid correlated 0.91 with the very audio that was
sent, for some stretches of speech (the demo agent's last seconds): live.py counted such legs as
lost audio at every load, the same calls each time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HOP_S = 0.01
PIECE_S = 3.0  # the head and tail pieces whose lags are compared
MAX_LAG_S = 2.0


@dataclass(frozen=True)
class LegMatch:
    sent_s: float
    recorded_s: float
    kept_s: float  # of the sent audio, how much the recording holds at the head piece's lag
    lag_s: float  # where the sent audio starts in the recording (negative: its start is missing)
    drift_s: float  # tail lag minus head lag: time lost (negative) or gained inside the sent audio
    corr_head: float
    corr_tail: float

    def matches(self, tolerance_s: float = 0.1) -> bool:
        return (abs(self.drift_s) <= tolerance_s and self.sent_s - self.kept_s <= tolerance_s
                and min(self.corr_head, self.corr_tail) >= 0.8)

    def report(self, tolerance_s: float = 0.1) -> dict:
        return {**{k: round(v, 3) for k, v in asdict(self).items()}, "match": self.matches(tolerance_s)}


SUB_HOPS = 8  # the recording's envelope is also taken this many sub-hop offsets in


def envelope(pcm: np.ndarray, rate: int, offset: int = 0) -> np.ndarray:
    """Log loudness per 10 ms hop of pcm[offset:]."""
    hop = int(rate * HOP_S)
    pcm = pcm[offset:]
    x = pcm[: len(pcm) // hop * hop].astype(np.float64).reshape(-1, hop)
    return np.log10(np.sqrt((x ** 2).mean(axis=1)) + 1.0)


def _best_lag(s: np.ndarray, start: int, n: int, got: np.ndarray, center: int, span: int) -> tuple[int, float]:
    """The lag (recording index minus sent index) at which sent envelope s[start:start+n] fits best."""
    piece = s[start:start + n]
    best, best_corr = center, -1.0
    for lag in range(center - span, center + span + 1):
        lo, hi = max(0, start + lag), min(len(got), start + lag + n)
        if hi - lo < n // 2:
            continue
        a, b = piece[lo - start - lag: hi - start - lag], got[lo:hi]
        if a.std() == 0 or b.std() == 0:
            continue
        corr = float(np.corrcoef(a, b)[0, 1])
        if corr > best_corr:
            best, best_corr = lag, corr
    return best, best_corr


def _refined_lag(s: np.ndarray, start: int, n: int, subs: list[np.ndarray],
                 lag: int) -> tuple[tuple[int, int], float]:
    """(lag in hops, sub-hop offset index) at which s[start:start+n] fits the recording best,
    searched one hop either side of `lag` at each of the recording's sub-hop envelopes."""
    best, best_corr = (lag, 0), -1.0
    for k, g in enumerate(subs):
        hop_lag, corr = _best_lag(s, start, n, g, lag, 1)
        if corr > best_corr:
            best, best_corr = (hop_lag, k), corr
    return best, best_corr


def match_leg(sent: np.ndarray, recorded: np.ndarray, rate: int = 8000) -> LegMatch:
    """How `recorded` (one kept leg, int16) holds `sent` (what the peer played, int16). The head
    and tail pieces start at the sent leg's first and end at its last sound (within 20 dB of its
    peak): a leg that opens or closes with silence has nothing to align there."""
    hop = int(rate * HOP_S)
    s = envelope(sent, rate)
    subs = [envelope(recorded, rate, k * hop // SUB_HOPS) for k in range(SUB_HOPS)]
    n = min(len(s), int(PIECE_S / HOP_S))
    span = int(MAX_LAG_S / HOP_S)
    loud = np.flatnonzero(s >= s.max() - 1.0)  # log10 amplitude: 1.0 is 20 dB
    first = min(int(loud[0]) if len(loud) else 0, len(s) - n)
    last = max(int(loud[-1]) + 1 if len(loud) else len(s), n)
    coarse_head, _ = _best_lag(s, first, n, subs[0], 0, span)
    (head_lag, head_sub), corr_head = _refined_lag(s, first, n, subs, coarse_head)
    coarse_tail, _ = _best_lag(s, last - n, n, subs[head_sub], head_lag, span)
    (tail_lag, tail_sub), corr_tail = _refined_lag(s, last - n, n, subs, coarse_tail)
    head_s = (head_lag * hop + head_sub * hop // SUB_HOPS) / rate
    tail_s = (tail_lag * hop + tail_sub * hop // SUB_HOPS) / rate
    g = subs[0]
    kept = min(len(g) - head_lag, len(s)) - max(0, -head_lag)
    return LegMatch(sent_s=len(sent) / rate, recorded_s=len(recorded) / rate, kept_s=max(0, kept) * HOP_S,
                    lag_s=head_s, drift_s=tail_s - head_s, corr_head=corr_head, corr_tail=corr_tail)
