"""Reading a SIPREC INVITE (RFC 7866): its SDP streams and its rs-metadata (RFC 7865).

Pure functions over text, so they are tested without a SIP stack. sip.py hands in the INVITE as
received (pjsua2's `rdata.wholeMsg`) and gets back one `StreamLeg` per audio m-line, in m-line order
(which is pjsua's media index order), with the participant who sends it and an agent/customer role.

Everything read here is data from the caller: values are cut to MAX_TEXT printable characters,
and a stream's a=label names its leg only when it is a short plain token (else "audio<index>").

Role rule: a participant whose AOR or name matches `agent_match` (a case-insensitive regex,
ConnectorConfig.siprec_agent_match) is the agent; when exactly one participant matches, every other
participant is a customer. With no rule, or no match, roles are None.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

RS_METADATA = "application/rs-metadata+xml"
MAX_TEXT = 256  # characters kept of any name, address or id from the INVITE
MAX_PARTICIPANTS = 16
_LEG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")  # a label kept as the leg's name; others: audio<i>


def _text(value: str) -> str:
    """A value from the wire as printable text of bounded length (it is data, never a name)."""
    return "".join(c for c in value[: MAX_TEXT * 2] if c.isprintable())[:MAX_TEXT]


@dataclass(frozen=True)
class SipMessage:
    start_line: str
    headers: dict[str, list[str]]  # lower-case names (compact forms expanded) -> values in order
    body: str

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default


@dataclass(frozen=True)
class SdpStream:
    index: int  # m-line position from 0 (pjsua's media index)
    media: str  # "audio", "video"...
    port: int
    label: str | None
    direction: str  # "sendrecv" | "sendonly" | "recvonly" | "inactive"
    clock_rates: tuple[int, ...]  # of the offered payload types, in preference order


@dataclass(frozen=True)
class Participant:
    participant_id: str
    aor: str = ""
    name: str = ""
    sends: tuple[str, ...] = ()  # stream_ids

    @property
    def display(self) -> str:
        return self.name or self.aor or self.participant_id


@dataclass(frozen=True)
class RecordingMetadata:
    session_id: str = ""
    participants: tuple[Participant, ...] = ()
    stream_labels: dict[str, str] = field(default_factory=dict)  # stream_id -> SDP label

    def sender_of(self, label: str) -> Participant | None:
        for participant in self.participants:
            if any(self.stream_labels.get(sid, sid) == label for sid in participant.sends):
                return participant
        return None


@dataclass(frozen=True)
class StreamLeg:
    index: int  # media index in the call
    leg: str  # the stream's label, or "audio<index>" without one
    role: str | None
    name: str | None
    clock_rates: tuple[int, ...]


_COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
            "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via"}


def parse_sip(raw: str) -> SipMessage:
    """Split a SIP message into start line, headers (folded lines joined) and body."""
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers: dict[str, list[str]] = {}
    last = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last:
            headers[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = _COMPACT.get(name.strip().lower(), name.strip().lower())
        headers.setdefault(last, []).append(value.strip())
    return SipMessage(lines[0].strip(), headers, body)


def _param(header_value: str, name: str) -> str:
    match = re.search(rf'{name}\s*=\s*("([^"]*)"|[^;\s]+)', header_value, re.IGNORECASE)
    return (match.group(2) if match.group(2) is not None else match.group(1)) if match else ""


def body_parts(content_type: str, body: str) -> list[tuple[str, str]]:
    """(content type, text) of each part of a multipart body; a single part for any other body."""
    if not content_type.lower().startswith("multipart/"):
        return [(content_type.split(";")[0].strip().lower(), body)]
    boundary = _param(content_type, "boundary")
    if not boundary:
        return []
    parts = []
    for chunk in body.replace("\r\n", "\n").split(f"--{boundary}")[1:]:
        if chunk.startswith("--"):
            break
        part = parse_sip("\n" + chunk.lstrip("\n"))  # headers of the part, then its body
        ctype = part.header("content-type", "text/plain").split(";")[0].strip().lower()
        parts.append((ctype, part.body.rstrip("\n")))
    return parts


def _is_num(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts digits int() refuses, such as '²')."""
    return text.isascii() and text.isdigit()


def parse_sdp(sdp: str) -> list[SdpStream]:
    """The m-lines of an SDP with their label, direction and clock rates."""
    streams: list[SdpStream] = []
    session_dir = "sendrecv"
    current: dict | None = None

    def close() -> None:
        if current is not None:
            rates = tuple(current["rates"].get(pt, 8000 if _is_num(pt) and int(pt) < 96 and pt != "9" else 16000)
                          for pt in current["pts"])
            streams.append(SdpStream(len(streams), current["media"], current["port"], current["label"],
                                     current["dir"] or session_dir, rates))

    for line in sdp.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if line.startswith("m="):
            close()
            fields = line[2:].split()
            port = fields[1].split("/")[0] if len(fields) > 1 else ""
            current = {"media": fields[0] if fields else "", "port": int(port) if _is_num(port) else 0,
                       "pts": fields[3:], "label": None, "dir": "", "rates": {}}
        elif line.startswith("a="):
            attr, _, value = line[2:].partition(":")
            if attr in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if current is None:
                    session_dir = attr
                else:
                    current["dir"] = attr
            elif current is not None and attr == "label":
                current["label"] = value.strip()
            elif current is not None and attr == "rtpmap":
                pt, _, enc = value.partition(" ")
                pieces = enc.split("/")
                if len(pieces) > 1 and _is_num(pieces[1]):
                    # G.722's RTP clock says 8000 but it carries 16 kHz audio (RFC 3551)
                    current["rates"][pt] = 16000 if pieces[0].upper() == "G722" else int(pieces[1])
    close()
    return streams


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata(xml_text: str) -> RecordingMetadata:
    """Participants, who sends which stream, and stream labels, from RFC 7865 XML (lenient)."""
    try:
        root = ET.fromstring(xml_text.strip())
    except ET.ParseError:
        return RecordingMetadata()
    session_id = ""
    participants: dict[str, dict] = {}
    labels: dict[str, str] = {}
    for el in root.iter():
        tag = _local(el.tag)
        if tag == "session" and not session_id:
            session_id = el.get("session_id", "")
        elif tag == "participant":
            pid = el.get("participant_id") or el.get("id") or ""
            info = participants.setdefault(pid, {"aor": "", "name": "", "sends": []})
            for sub in el.iter():
                sub_tag = _local(sub.tag)
                if sub_tag in ("nameID", "nameId", "aor"):
                    info["aor"] = info["aor"] or sub.get("aor", "") or (sub.text or "").strip()
                elif sub_tag == "name" and sub.text:
                    info["name"] = info["name"] or sub.text.strip()
                elif sub_tag == "send" and sub.text:  # the pre-RFC drafts put <send> here
                    info["sends"].append(sub.text.strip())
        elif tag == "stream":
            sid = el.get("stream_id") or el.get("id") or ""
            for sub in el:
                if _local(sub.tag) == "label" and sub.text:
                    labels[sid] = sub.text.strip()
        elif tag == "participantstreamassoc":
            pid = el.get("participant_id", "")
            info = participants.setdefault(pid, {"aor": "", "name": "", "sends": []})
            info["sends"] += [(sub.text or "").strip() for sub in el if _local(sub.tag) == "send"]
    return RecordingMetadata(
        session_id,
        tuple(Participant(pid, i["aor"], i["name"], tuple(dict.fromkeys(i["sends"])))
              for pid, i in participants.items()),
        labels)


def assign_roles(participants: tuple[Participant, ...], agent_match: str) -> dict[str, str]:
    """participant_id -> "agent" | "customer" under the module's role rule."""
    if not agent_match:
        return {}
    pattern = re.compile(agent_match, re.IGNORECASE)
    agents = [p for p in participants if pattern.search(p.aor) or pattern.search(p.name)]
    roles = {p.participant_id: "agent" for p in agents}
    if len(agents) == 1:
        roles.update({p.participant_id: "customer" for p in participants if p not in agents})
    return roles


def _user(aor: str) -> str:
    match = re.match(r"(?:sips?|tel):([^@;>]+)", aor.strip("<>"))
    return match.group(1) if match else aor


@dataclass(frozen=True)
class InviteSummary:
    siprec: bool
    legs: tuple[StreamLeg, ...]  # audio streams only, in media order
    metadata: dict  # agent_id, customer_id, from, to, siprec_session_id... where known
    media_count: int  # all m-lines (audio or not), for answering with the right count


def summarize_invite(raw: str, agent_match: str = "") -> InviteSummary:
    """What the connector needs from an INVITE to announce the call and label its legs."""
    msg = parse_sip(raw)
    parts = body_parts(msg.header("content-type"), msg.body)
    sdp = next((text for ctype, text in parts if ctype == "application/sdp"), "")
    xml_text = next((text for ctype, text in parts if ctype == RS_METADATA), "")
    siprec = bool(xml_text) or "siprec" in msg.header("require").lower()
    streams = parse_sdp(sdp)
    meta = parse_metadata(xml_text) if xml_text else RecordingMetadata()
    roles = assign_roles(meta.participants, agent_match)
    legs = []
    for stream in streams:
        if stream.media != "audio":
            continue
        sender = meta.sender_of(stream.label) if stream.label else None
        leg = stream.label if stream.label and _LEG_NAME.match(stream.label) else f"audio{stream.index}"
        if any(existing.leg == leg for existing in legs):
            leg = f"{leg}.{stream.index}"
        legs.append(StreamLeg(stream.index, leg, roles.get(sender.participant_id) if sender else None,
                              _text(sender.display) if sender else None, stream.clock_rates))
    extra: dict = {"from": _text(msg.header("from")), "to": _text(msg.header("to"))}
    if siprec:
        extra["siprec_session_id"] = _text(meta.session_id)
        extra["participants"] = [_text(p.aor or p.name) for p in meta.participants[:MAX_PARTICIPANTS]]
        for participant in meta.participants:
            role = roles.get(participant.participant_id)
            if role and f"{role}_id" not in extra:
                extra[f"{role}_id"] = _text(_user(participant.aor) if participant.aor else participant.name)
    return InviteSummary(siprec, tuple(legs), extra, len(streams))
