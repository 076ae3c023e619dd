"""benchmarks/recording_match.py, the check behind "every kept leg holds what sipp sent within
0.1 s" (issue 12): it must pass a recording that is the sent audio at any delay, and fail one
that lost or gained time inside it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.recording_match import match_leg
from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from tests.conftest import DEMO

RATE = 8000
DELAY = 520  # what pjmedia's native path delays a SIPREC leg by here: 65 ms, half a 10 ms hop off the grid


@pytest.fixture(scope="module")
def agent() -> np.ndarray:
    """The demo agent's first 45 s, as benchmarks/live.py sends it to call 0."""
    return to_8k_pcm16(load_audio(DEMO, 2)[0])[: 45 * RATE]


def kept(sent: np.ndarray, delay: int = DELAY) -> np.ndarray:
    return np.concatenate([np.zeros(delay), sent, np.zeros(2 * RATE)]).astype(np.int16)


@pytest.mark.parametrize("delay", [0, 160, DELAY, DELAY + 3, 1000])
def test_the_sent_audio_at_any_delay_matches_with_its_delay(agent, delay):
    """Found in live.py's 12-call runs: legs lagging by 65 ms were counted as damaged (tail
    correlation 0.91, the same calls every run) while they held every sample that was sent."""
    result = match_leg(agent, kept(agent, delay), RATE)
    assert result.matches(0.1) and min(result.corr_head, result.corr_tail) > 0.99, result
    assert result.lag_s == pytest.approx(delay / RATE, abs=0.0013) and abs(result.drift_s) < 0.002, result


@pytest.mark.parametrize("change_s", [-0.2, 0.2])
def test_time_lost_or_gained_inside_the_sent_audio_is_measured(agent, change_s):
    at = 20 * RATE
    n = int(abs(change_s) * RATE)
    damaged = (np.concatenate([agent[:at], agent[at + n:]]) if change_s < 0
               else np.concatenate([agent[:at], np.zeros(n, np.int16), agent[at:]]))
    result = match_leg(agent, kept(damaged), RATE)
    assert not result.matches(0.1) and result.drift_s == pytest.approx(change_s, abs=0.0013), result
