"""The sipp driver's media ports (connector/sipp.py): sipp binds four from -mp, so a block is
handed out only when all four are free (at 40 benchmark calls one sipp died binding the third)."""

from __future__ import annotations

import socket

from emotivoice.connector import sipp


def test_a_block_whose_video_port_is_taken_is_skipped_and_blocks_are_not_handed_out_twice(monkeypatch):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    blocked = port - 2  # the taken port is this block's third, where sipp binds video RTP
    monkeypatch.setattr(sipp, "MEDIA_PORTS", range(blocked, blocked + 400, 4))
    monkeypatch.setattr(sipp, "_media_next", [0])
    try:
        bases = [sipp._free_media_ports() for _ in range(20)]
    finally:
        taken.close()
    assert blocked not in bases and len(set(bases)) == 20
    assert all(base + k != port for base in bases for k in range(4))
