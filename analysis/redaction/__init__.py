"""PII redaction of transcripts and audio, as a stage (issue 15).

- `stage.Redactor` / `stage.redact_call`: text and words of utterances, the time spans to cut,
  counts per entity and the policy recorded on the call;
- `audio.redact_wav`: those spans silenced (or toned) in a kept WAV, atomically, owner-only;
- `engine`: Presidio on spaCy's en_core_web_sm, offline; `recognizers`, `spoken`: what callers
  say that Presidio's defaults miss.

Importing this package loads nothing heavy; Presidio and spaCy load on the first redaction.
"""
