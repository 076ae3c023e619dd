"""The per-utterance stages, written once: emotion, transcript and insight.

Why a package of its own: the batch pipeline (analysis/pipeline.py), the embedded live engine
(analysis/live/engine.py and its chain, analysis/live/steps.py) and the Ray call actor
(analysis/live/cluster/) used to build utterances, attach transcripts and score risk each in their
own copy; a change to one drifted from the others. Each stage here is the only place its work is
written. The callers decide only where the input comes from (a file's segments, the live inbox,
a Ray pool) and how the work is scheduled (inline, a worker thread, an actor).

Model objects (the emotion encoder and head, Whisper) are constructor arguments with the usual
loaders as defaults, so tests pass small stubs or failing ones.

    emotion.EmotionStage      clips -> probabilities -> recalibration -> tiers -> Utterance
    transcript.TranscriptStage clips -> Whisper words, language, speaking rate; <= N s passes, shedding
    insight.InsightStage      utterances in order -> sentiment, sarcasm, risk, alerts (batch and live)
"""
