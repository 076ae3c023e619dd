"""EmotiVoice: per-speaker emotion analytics for contact-center calls."""

__version__ = "0.1.0"
