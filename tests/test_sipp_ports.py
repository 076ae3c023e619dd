"""The sipp driver's bookkeeping (connector/sipp.py): media ports (sipp binds four from -mp, so a
block is handed out only when all four are free: at 40 benchmark calls one sipp died binding the
third) and the INVITE answers it read off sipp's message log."""

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


def _received(status: str, call_id: str, cseq: str) -> str:
    return (f"\n----------------------------------------------- 2026-12-06 21:00:00.000000\n"
            f"UDP message received [400] bytes :\n\nSIP/2.0 {status}\nVia: SIP/2.0/UDP 127.0.0.1:5061\n"
            f"Call-ID: {call_id}\nCSeq: {cseq}\nContent-Length: 0\n")


def test_a_retransmitted_200_is_one_answer_and_each_transaction_keeps_its_own():
    """CI: the service retransmitted its 200 before a loaded host let it see the ACK, and the call
    was counted answered twice ([200, 200])."""
    log = (_received("100 Trying", "a@x", "1 INVITE") + _received("200 OK", "a@x", "1 INVITE")
           + _received("200 OK", "a@x", "1 INVITE") + _received("200 OK", "a@x", "2 BYE")
           + _received("401 Unauthorized", "b@x", "1 INVITE") + _received("200 OK", "b@x", "2 INVITE")
           + _received("503 Service Unavailable", "c@x", "1 INVITE"))
    assert sipp._invite_finals(log) == [200, 401, 200, 503]
