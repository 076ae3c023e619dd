"""The live analysis on Ray (`emotivoice serve --ray auto|ADDRESS`); the embedded engine stays the default.

    connector media threads ──LiveSink──> RaySink (the serving process)
        │  records each leg first (analysis/live/recorder.py), then ships >= 200 ms chunks
        ▼
    CallActor, one per call (Ray actor, started ahead as a standby, a standby again after its call):
        endpointing of its legs, its utterances, insight/risk
        │  each finished utterance ──> EmotionWorker pool ──> TranscriptWorker pool (batched)
        ▼  long-polled changes: only the utterances that changed (storage/incremental.py)
    RayEngine collector (the serving process, which owns DuckDB): many calls' deltas per transaction
        ▼  at hang-up
    finaliser: the kept WAV through the batch pass, as the embedded engine (analysis/live/finalize.py)

A call actor that dies is restarted by Ray and rebuilds its call from the recording; chunks it
had not taken are retried by Ray and trimmed to what it has not yet heard.
"""
