"""All settings in one place: defaults, overridden by a TOML file, overridden by env vars.

Every layer (connector, analysis, storage, dashboard) reads its settings from here and from
nowhere else, so a deployment is described by one `emotivoice.toml` plus `EMOTIVOICE_*` vars.
Every field says what it means where it is defined. The analysis sections live in
emotivoice/config/analysis.py and are re-exported here: `from emotivoice.config import X` for all.
This package imports nothing from the project so that every layer may depend on it.

No default depends on where the code lives: the data dir is the user's (XDG), the config file is
looked for in the working directory and the user's config dir, and the shipped rules are package
data. Only emotion_data_dir keeps a checkout-relative fallback, for development (see there).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from emotivoice.config.analysis import (DiarizationConfig, EmotionConfig, RiskConfig, SarcasmConfig,
                                        SegmentationConfig, TranscriptionConfig)

__all__ = ["AnalyticsConfig", "ConnectorConfig", "DashboardConfig", "DiarizationConfig", "EmotionConfig",
           "LiveConfig", "OidcConfig", "RedactionConfig", "ReportsConfig", "RetentionConfig", "RiskConfig",
           "SarcasmConfig", "SegmentationConfig", "Settings", "StoreConfig", "TranscriptionConfig",
           "DEFAULT_DATA_DIR", "REPO_ROOT", "find_config_file", "load_settings", "shipped_rules", "to_env",
           "user_data_dir"]

# Where this code runs from: a checkout, or site-packages for a wheel. No data default derives from
# it; it serves the development fallback of emotion_data_dir and running this same code in a child
# process (storage/rules_file.py's cwd).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def user_data_dir(env: Mapping[str, str]) -> Path:
    """$XDG_DATA_HOME/emotivoice, else ~/.local/share/emotivoice: the default data dir, the same
    wherever the code is installed ($EMOTIVOICE_DATA_DIR and `data_dir` in the TOML override it)."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "emotivoice"


def find_config_file(env: Mapping[str, str]) -> Path:
    """$EMOTIVOICE_CONFIG, else ./emotivoice.toml when there is one, else the user's
    $XDG_CONFIG_HOME/emotivoice/emotivoice.toml (~/.config/...); a missing file means defaults."""
    if "EMOTIVOICE_CONFIG" in env:  # set but empty: no file, defaults and env only
        return Path(env["EMOTIVOICE_CONFIG"]).expanduser()
    here = Path("emotivoice.toml")
    if here.is_file():
        return here
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser() / "emotivoice" / "emotivoice.toml"


def shipped_rules() -> Path:
    """The shipped rules file (package data of emotivoice.analysis.insight, never written over),
    found through importlib.resources when first asked, so this package still imports nothing."""
    return Path(str(resources.files("emotivoice.analysis.insight").joinpath("default_rules.toml")))


DEFAULT_DATA_DIR = user_data_dir(os.environ)  # what load_settings() starts from, before env and TOML


@dataclass(frozen=True)
class DashboardConfig:
    """The supervisor dashboard (dashboard/): where it listens, who may sign in, how sessions last."""

    host: str = "127.0.0.1"  # behind a TLS proxy only when other machines need it (README, Security)
    port: int = 2024  # the seed's address; a busy port falls back to a free one
    users: str = ""  # "name:pbkdf2_sha256$...,..." beside <data_dir>/dashboard_users.json
    refresh_s: float = 1.5  # how often the live floor looks for new calls and alerts (alerts show within 2 s)
    min_password_length: int = 12  # new passwords shorter than this are refused (NIST SP 800-63B asks for 8+)
    login_free_failures: int = 5  # wrong passwords allowed per user and per client before back-off starts
    login_backoff_s: float = 2.0  # first back-off; it doubles with every further failure
    login_backoff_max_s: float = 900.0  # back-off never grows beyond this (a locked-out user waits 15 min)
    session_ttl_s: float = 8 * 3600.0  # a sign-in survives reloads for this long (one shift), or until log-out
    media_link_ttl_s: float = 300.0  # a signed audio playback link works for this long
    # comma-separated directories whose recordings the review page may play besides live.audio_dir and
    # inbox_dir (where batch-analysed recordings are kept); a stored source anywhere else never plays
    recording_dirs: str = ""


@dataclass(frozen=True)
class ConnectorConfig:
    """Where live call audio comes in. A port of 0 turns that listener off."""

    sip_host: str = "0.0.0.0"  # the SIP listener's address (all interfaces; connector.allow limits who is served)
    sip_port: int = 5060  # UDP and TCP
    sip_tls_port: int = 0  # TLS listener, needs tls_cert_file and tls_key_file
    tls_cert_file: str = ""  # PEM certificate chain of the SIP TLS listener
    tls_key_file: str = ""  # ...and its private key (keep it 0600)
    srtp: str = "optional"  # "off" | "optional" | "mandatory" (SRTP needs the built pjproject)
    rtp_port: int = 40000  # first RTP port; each stream takes the next pair
    allow: str = "127.0.0.1/32,::1/128"  # addresses or networks allowed to send calls; others get 403
    auth_user: str = ""  # SIP digest authentication of callers; empty: off (the allowlist still applies)
    auth_password: str = ""  # the digest password for auth_user
    auth_realm: str = "emotivoice"  # the realm the 401 challenge names
    max_calls: int = 64  # calls beyond this get 486 Busy Here (the pjsua2-python fallback caps at 4)
    invite_rate_per_s: float = 5.0  # new INVITEs per source address per second, on average; beyond: 503
    invite_burst: int = 20  # ...after a burst of this many (a token bucket per source address)
    # an answered call that has sent no audio after this many seconds is hung up ("no media"); 0: never
    no_media_timeout_s: float = 20.0
    # regex on a SIPREC participant's AOR or name marking the agent (e.g. "^sip:1[0-9]{3}@" for agent
    # extensions); the other participants are customers; empty: no roles
    siprec_agent_match: str = "(?i)agent"
    audiosocket_port: int = 0  # Asterisk AudioSocket (TCP); no authentication in the protocol: keep it private
    audiosocket_host: str = "127.0.0.1"  # the AudioSocket listener's address
    audiosocket_leg_roles: str = "customer,agent"  # roles of a call's AudioSocket connections, in connection order
    audiosocket_pair_wait_s: float = 1.0  # how long a call's first connection waits for the others to join
    websocket_port: int = 0  # Twilio Media Streams at /twilio, Genesys AudioHook at /audiohook
    websocket_host: str = "127.0.0.1"  # the WebSocket listener's address (behind a TLS proxy: README, Security)
    audiohook_api_key: str = ""  # AudioHook's X-API-KEY; empty: not checked
    # a call refused because recording cannot keep up (live.record_*) gets 503 with this Retry-After;
    # the WebSocket forks get HTTP 503 at the upgrade, AudioSocket has its connection closed
    overload_retry_after_s: int = 5
    # new SIP calls get 503 (that Retry-After) while pjmedia's media clock has skipped more than this
    # share of leg ticks in most (3+) of the last 5 seconds: the process is too CPU-bound for the clock
    # thread to get the GIL (skipped ticks are recorded as silence, connector/sipcall.py); 0: off
    clock_max_skipped_share: float = 0.05
    # how SIP legs' audio leaves pjmedia: "native" records each leg with pjmedia's own WAV writer (C,
    # no GIL on the media clock) and a tailer thread hands its new samples on in >= 200 ms reads;
    # "python" is a Python port the media clock calls every 20 ms per leg (connector/nativeleg.py)
    media_path: str = "native"
    # native legs: disk space reserved ahead of each leg's WAV (fallocate, size unchanged), so a disk
    # that fills mid-call still takes this many seconds of every running leg
    media_reserve_s: float = 30.0
    # native legs: each leg's jitter buffer plays out at this fixed delay (ms) and never discards, so
    # the kept WAV holds every packet in sequence and a sender up to this late shifts nothing
    # (pjmedia's adaptive buffer, 0 here, moved 11 of 80 legs' timelines by 0.1-0.7 s at 40 calls);
    # a call's last this-many ms are still in the buffer at its BYE. The python path keeps the
    # adaptive buffer, which sheds the backlog a starved clock leaves (connector/pjsetup.py)
    jitter_buffer_ms: int = 200


@dataclass(frozen=True)
class StoreConfig:
    """The store service (storage/server.py) that owns the DuckDB file and serves everyone else."""

    max_request_bytes: int = 64 * 1024 * 1024  # a request body beyond this is refused with 413
    max_connections: int = 32  # connections served at once; beyond, new ones wait in the listen queue
    request_timeout_s: float = 30.0  # a connection that sends nothing for this long is closed


@dataclass(frozen=True)
class LiveConfig:
    """Live analysis of calls as they happen."""

    # analysis inbox bound (20 ms frames, all legs together); beyond it frames are shed from live
    # analysis only: every frame is recorded first (analysis/live/recording.py)
    max_queued_frames: int = 3000
    # record first: each leg's audio is appended by a writer thread at least this often (what a kill -9 costs)
    record_flush_s: float = 0.25
    record_max_lag_s: float = 2.0  # audio waiting longer than this for the disk: new calls are refused (503)
    record_max_queued_mb: float = 16.0  # ...or more of it than this, all legs (about 17 min of one 8 kHz leg)
    # hard memory bound on audio waiting for the disk (a disk fault): beyond it, admitted calls' new
    # audio is recorded as silence of the same length and counted on the call
    record_limit_mb: float = 256.0
    max_gap_fill_s: float = 30.0  # a leg's seq gap up to this long is recorded as silence; longer: a restarted stream
    rolling_update_s: float = 2.5  # a long utterance gets an interim emotion this often
    endpoint_silence_s: float = 0.4  # silence that ends an utterance live (batch uses segmentation's)
    transcribe: bool = True  # transcripts follow emotions; they are the first work shed under load
    beam_size: int = 1  # live transcripts decode greedily; the final pass uses transcription.beam_size
    transcript_backlog_s: float = 30.0  # shed transcripts beyond this much queued speech (done at finalise)
    # speech joined into one live Whisper pass, embedded and Ray (Whisper always encodes 30 s windows)
    transcribe_batch_s: float = 20.0
    emotion_batch: int = 4  # finished utterances per live emotion pass, embedded and Ray
    redact_context: int = 3  # earlier transcribed utterances of the call a new one is redacted after (the question)
    pre_roll_s: float = 0.3  # audio kept before a detected speech onset (silero is late; as segmentation.speech_lead_s)
    settle_wait_s: float = 120.0  # how long a finished call's last utterances may take through the live stages
    restore_slice_s: float = 0.5  # a restarted Ray call actor replays its legs interleaved in slices this long
    finalize: str = "batch"  # "batch": re-analyse the recorded legs at hang-up and supersede live results
    keep_audio: bool = True  # keep each call's legs as a stereo WAV under audio_dir
    audio_dir: Path = DEFAULT_DATA_DIR / "calls"
    retention_days: int = 30  # kept audio older than this is deleted; 0 keeps it forever
    webhook_url: str = ""  # alerts are POSTed here as JSON (Slack, Teams, a CRM); empty: log only
    webhook_retries: int = 3
    webhook_timeout_s: float = 5.0


@dataclass(frozen=True)
class RedactionConfig:
    """What personal data is taken out of transcripts and audio before anything is stored
    (analysis/redaction/). The policy's name and a digest of these fields go on every call."""

    transcripts: bool = True  # redact utterance text and words, batch and live (alerts and webhooks see the result)
    audio: bool = True  # silence (or tone over) the redacted words' time spans in the kept recording
    live: bool = True  # also redact live utterances as their words arrive (off: only the final batch pass)
    # the Presidio entity types taken out (comma-separated), ours included (DATE_OF_BIRTH, SECURITY_ANSWER)
    entities: str = ("CREDIT_CARD,CARD_SECURITY_CODE,BANK_ACCOUNT,US_BANK_NUMBER,IBAN_CODE,US_SSN,US_ITIN,UK_NHS,"
                     "UK_NINO,PHONE_NUMBER,EMAIL_ADDRESS,PERSON,DATE_OF_BIRTH,SECURITY_ANSWER")
    replacement: str = "label"  # "label": [CREDIT_CARD]; "hash": [CREDIT_CARD:1f0c9a2b], HMAC-SHA256 keyed, stable
    hash_key_file: str = ""  # the HMAC key (32 random bytes, 0600); empty: <data_dir>/redaction.key, made on first use
    min_score: float = 0.4  # Presidio results below this are kept as said
    audio_margin_s: float = 0.15  # added before and after each redacted word (Whisper's word edges drift ~0.1 s)
    audio_fill: str = "silence"  # "silence" or "tone" (a 1 kHz beep at -20 dBFS, so a listener hears the cut)
    audio_all_channels: bool = True  # cut every channel over a span: echo on the other leg carries the digits too
    policy_name: str = "default"  # the name stored on every call with the digest of the fields above


@dataclass(frozen=True)
class AnalyticsConfig:
    """Conversation analytics over each scored call (analysis/insight/analytics.py): categories from
    rules, the post-call summary and the quarters."""

    rules_file: str = ""  # a rules TOML in analysis/insight/default_rules.toml's format; empty: that default set
    live_rules: bool = True  # evaluate the rules on live calls as utterances arrive (alert rules raise alerts)
    # where the admin rules editor (dashboard Rules page) saves while rules_file is empty or names the
    # shipped set; once saved it is the active set (follows data_dir)
    edited_rules_file: Path = DEFAULT_DATA_DIR / "rules.toml"

    def _own_file(self) -> Path | None:
        """rules_file, unless it is empty or the shipped set (which is never written over)."""
        if not self.rules_file:
            return None
        path = Path(self.rules_file).expanduser()
        try:
            if path.resolve() == shipped_rules().resolve():
                return None
        except OSError:
            pass
        return path

    def active_rules_file(self) -> str:
        """The rules every analysis uses: rules_file, else the editor's saved set, else "" (shipped)."""
        own = self._own_file()
        if own is not None:
            return str(own)
        return str(self.edited_rules_file) if self.edited_rules_file.is_file() else ""

    def editor_target(self) -> Path:
        """Where the rules editor saves: rules_file when it is the deployment's own, else edited_rules_file."""
        return self._own_file() or self.edited_rules_file
    # the QA scorecard filled in for every call (analysis/insight/default_scorecard.toml's format); empty: that one
    scorecard_file: str = ""


@dataclass(frozen=True)
class RetentionConfig:
    """How long each kind of call data is kept, per the policy named here (`emotivoice retention
    run`; `serve` and `watch` run it every `every_s`). 0 keeps that kind forever. Each run, and
    each call it touches, is recorded in the audit log under the policy's name."""

    policy_name: str = "default"  # the name audit rows and `retention show` give the policy
    audio_days: int = -1  # kept call audio (WAV, sidecar, unfinished legs); -1: live.retention_days (30)
    transcript_days: int = 0  # what was said (text, words, quoted phrases, summary); emotions and metrics stay
    metadata_days: int = 0  # the call itself, erased from every table and its audio with it
    every_s: float = 3600.0  # how often a running service applies the policy


@dataclass(frozen=True)
class OidcConfig:
    """Optional single sign-on through Streamlit's `st.login` (dashboard/sso.py). The provider's
    client id and secret live in `.streamlit/secrets.toml` under `[auth]` (or `[auth.<provider>]`),
    as Streamlit reads them; here is only how a signed-in person becomes a dashboard user."""

    enabled: bool = False  # show "Sign in with ..." beside the password form
    provider: str = ""  # the `[auth.<provider>]` section to use; empty: the plain `[auth]` one
    label: str = "single sign-on"  # the button says "Sign in with <label>"
    name_claim: str = "email"  # the claim that names the user (it must be a valid user name)
    role_claim: str = "groups"  # the claim (a string or a list) matched against role_map
    # "claim value=role[:team|team]" entries, first match wins: "ev-admins=admin,blue-leads=supervisor:blue,
    # qa=coach:blue|red,bi=analyst,agents=agent"; a person whose claim matches none is refused
    role_map: str = ""
    agent_id_claim: str = "employee_id"  # an agent's agent_id, as their calls carry it


@dataclass(frozen=True)
class ReportsConfig:
    """How the report pages score calls and agents: the weights of the churn score (storage/churn.py)
    and of the coaching ranking (storage/pages.py). The dashboard sends them with each read and the
    queries bind them as parameters (never into the SQL text). Defaults: the churn page of issue 16."""

    # churn score of a call, 0..1 with these four weights summing to 1:
    churn_w_peak_risk: float = 0.35  # the customer's peak escalation risk (0..1)
    churn_w_end_negative: float = 0.30  # the customer's negative share over their last three utterances
    churn_w_churn_phrase: float = 0.20  # any churn phrase said ("cancel my account")
    churn_w_repeat_calls: float = 0.15  # the customer's other calls in the period...
    churn_repeat_calls_full: int = 2  # ...at full weight from this many repeats on
    churn_at_risk: float = 0.3  # the churn page's default floor: a call at or above it is "at risk"
    # the churn reasons' "signal" rows: an escalated call (peak risk at least this; risk.alert_threshold)...
    churn_reason_peak_risk: float = 0.55
    churn_reason_end_negative: float = 0.5  # ...and a customer still negative at the end (at least this)
    # coaching opportunity of an agent: (escalation share * this + customer worsening * the next) * ln(1 + calls)
    coaching_w_escalation: float = 0.6
    coaching_w_worsening: float = 0.4  # mean rise of the customer's negative share from start to end (floor 0)


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Build it with `load_settings()`."""

    # everything the service keeps (0700): $EMOTIVOICE_DATA_DIR, else the user's (user_data_dir); the
    # next three and live.audio_dir, analytics.edited_rules_file follow it unless set on their own
    data_dir: Path = DEFAULT_DATA_DIR
    db_path: Path = DEFAULT_DATA_DIR / "emotivoice.duckdb"  # the DuckDB file, owned by the store service
    model_cache_dir: Path = DEFAULT_DATA_DIR / "models"  # Whisper base assembled from its wheels, trained heads
    inbox_dir: Path = DEFAULT_DATA_DIR / "inbox"  # the analysis service picks up recordings here
    # the labelled corpora for training and benchmarks (never committed); the default is a development
    # fallback, ../shared/data/emotion beside the checkout (where CI keeps it, tests/conftest.py):
    # set EMOTIVOICE_EMOTION_DATA_DIR anywhere else
    emotion_data_dir: Path = REPO_ROOT.parent / "shared" / "data" / "emotion"
    block_s: float = 600.0  # audio is decoded and analysed in blocks of this length
    # the sections, each documented in its class:
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    sarcasm: SarcasmConfig = field(default_factory=SarcasmConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    oidc: OidcConfig = field(default_factory=OidcConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)


def _coerce(value: str, like: Any) -> Any:
    """An env var's text as the type of the field's current value."""
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, Path):
        return Path(value).expanduser()
    if like is None:
        return value or None
    return value


def _apply(obj: Any, table: dict[str, Any], env_prefix: str, env: dict[str, str]) -> Any:
    """Overlay a TOML table and then env vars (PREFIX_FIELD) onto a frozen dataclass."""
    changes: dict[str, Any] = {}
    for f in fields(obj):
        current = getattr(obj, f.name)
        key = f"{env_prefix}_{f.name.upper()}"
        if is_dataclass(current):
            changes[f.name] = _apply(current, table.get(f.name, {}), key, env)
            continue
        if f.name in table:
            raw = table[f.name]
            current = Path(raw).expanduser() if isinstance(current, Path) else raw
        if key in env:
            current = _coerce(env[key], getattr(obj, f.name))
        changes[f.name] = current
    return replace(obj, **changes)


def to_env(obj: Any, prefix: str) -> dict[str, str]:
    """A config section as the EMOTIVOICE_* env vars that reproduce it (scalars only), for a child
    process that must run under exactly the parent's settings (the final batch pass's redaction)."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not is_dataclass(value):
            out[f"{prefix}_{f.name.upper()}"] = str(value)
    return out


def load_settings(config_file: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults < the TOML file (find_config_file: $EMOTIVOICE_CONFIG, ./emotivoice.toml, the user's)
    < EMOTIVOICE_* env vars.

    Nested fields use the section name: EMOTIVOICE_TRANSCRIPTION_MODEL=tiny.en.
    When data_dir moves, db_path, model_cache_dir, inbox_dir, live.audio_dir and analytics.edited_rules_file
    follow unless set on their own.
    """
    env = dict(os.environ if env is None else env)
    path = config_file or find_config_file(env)
    table: dict[str, Any] = {}
    if path.is_file():
        table = tomllib.loads(path.read_text())
    base = Settings()
    data_dir = Path(env.get("EMOTIVOICE_DATA_DIR", table.get("data_dir", user_data_dir(env)))).expanduser()
    base = replace(base, data_dir=data_dir, db_path=data_dir / "emotivoice.duckdb",
                   model_cache_dir=data_dir / "models", inbox_dir=data_dir / "inbox",
                   live=replace(base.live, audio_dir=data_dir / "calls"),
                   analytics=replace(base.analytics, edited_rules_file=data_dir / "rules.toml"))
    return _apply(base, table, "EMOTIVOICE", env)
