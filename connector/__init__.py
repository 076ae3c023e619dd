"""Live call audio in: the SIP (SIPREC) connector and media-fork receivers land here.

Its output is the boundary message of the live path: 20 ms frames keyed by call and leg, fed
to analysis.segmentation.StreamingSegmenter per leg. Until it lands, recorded calls enter
through `emotivoice analyze`.
"""
