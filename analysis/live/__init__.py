"""The live path: call audio arriving frame by frame, analysed per leg as it is spoken.

connector/ (SIPREC, plain SIP, media-fork sockets) -> messages.py (the boundary, keyed by call
and leg) -> inbox.FrameInbox (bounded, never blocks a media thread) -> engine (VAD endpointing,
emotion first, transcript after) -> storage through the store service.
"""
