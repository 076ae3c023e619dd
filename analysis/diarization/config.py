"""The diarization settings are the settings tree's `diarization` section (emotivoice/config/analysis.py,
issue 11: one section, every knob documented there). This name is kept only for callers not yet moved
to `from emotivoice.config import DiarizationConfig`; it defines nothing of its own."""

from emotivoice.config import DiarizationConfig

__all__ = ["DiarizationConfig"]
