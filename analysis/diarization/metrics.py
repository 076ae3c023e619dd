"""Diarization error rate (NIST md-eval definition) on a 10 ms grid, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

STEP_S = 0.01

Segment = tuple[float, float, Hashable]  # (start s, end s, speaker label)


def _activity(segments: Sequence[Segment], labels: list[Hashable], frames: int) -> np.ndarray:
    out = np.zeros((len(labels), frames), dtype=bool)
    for start, end, label in segments:
        out[labels.index(label), int(round(start / STEP_S)):int(round(end / STEP_S))] = True
    return out


def diarization_error_rate(reference: Sequence[Segment], hypothesis: Sequence[Segment],
                           collar: float = 0.25) -> dict[str, float]:
    """DER and its parts, in seconds of scored reference speech.

    Frames within `collar` seconds of any reference boundary are not scored (annotators cannot
    place boundaries more precisely). Hypothesis labels are mapped one-to-one onto reference
    labels to maximise overlap (Hungarian). Overlapped speech counts once per speaker, so per
    frame: missed = max(0, ref - hyp), false alarm = max(0, hyp - ref), confusion =
    min(ref, hyp) - correctly mapped speakers.
    """
    ref_labels = list(dict.fromkeys(label for _, _, label in reference))
    hyp_labels = list(dict.fromkeys(label for _, _, label in hypothesis))
    end = max([e for _, e, _ in [*reference, *hypothesis]], default=0.0)
    frames = int(round(end / STEP_S)) + 1
    ref, hyp = _activity(reference, ref_labels, frames), _activity(hypothesis, hyp_labels, frames)
    scored = np.ones(frames, dtype=bool)
    if collar > 0:
        for start, stop, _ in reference:
            for boundary in (start, stop):
                first = max(0, int(round((boundary - collar) / STEP_S)))
                scored[first:int(round((boundary + collar) / STEP_S))] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (ref, hyp) co-active frames
    correct = np.zeros(ref.shape[1], dtype=np.int64)
    if overlap.size:
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        correct = (ref[rows] & hyp[cols]).sum(axis=0)
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    missed = float(np.maximum(n_ref - n_hyp, 0).sum()) * STEP_S
    false_alarm = float(np.maximum(n_hyp - n_ref, 0).sum()) * STEP_S
    confusion = float((np.minimum(n_ref, n_hyp) - correct).sum()) * STEP_S
    total = float(n_ref.sum()) * STEP_S
    errors = missed + false_alarm + confusion
    der = errors / total if total > 0 else (float("inf") if errors else 0.0)  # no reference speech: 0 or inf
    return {"der": der, "missed": missed, "false_alarm": false_alarm, "confusion": confusion, "total": total}
