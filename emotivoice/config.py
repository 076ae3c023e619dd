"""All settings in one place: defaults, overridden by a TOML file, overridden by env vars.

Every layer (connector, analysis, storage, dashboard) reads its settings from here and from
nowhere else, so a deployment is described by one `emotivoice.toml` plus `EMOTIVOICE_*` vars.
This module imports nothing from the project so that every layer may depend on it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
SHIPPED_RULES = REPO_ROOT / "analysis" / "insight" / "default_rules.toml"  # never written over


@dataclass(frozen=True)
class SegmentationConfig:
    """How a channel's audio is cut into utterances (the seed's rules)."""

    use_silero: bool = True  # silero VAD; the energy rule is the fallback
    energy_threshold_dbfs: float = -40.0  # energy rule: frames below this are silence
    min_silence_s: float = 0.5  # a pause longer than this ends an utterance
    min_speech_s: float = 0.25  # shorter speech islands are dropped as clicks
    min_utterance_s: float = 1.0  # shorter utterances are merged into a close neighbour
    merge_gap_s: float = 1.0  # ...but only across a pause no longer than this
    target_utterance_s: float = 10.0  # merging stops at about this length
    max_utterance_s: float = 15.0  # longer speech is split into target-length pieces
    speech_pad_s: float = 0.1  # padding kept around each speech region
    # silero (run at the leg's own rate; analysis.vad.WindowedStream gives a live leg the same
    # numbers chunk for chunk): a 32 ms chunk at or above vad_threshold
    # starts speech, which ends after min_silence_s (live: live.endpoint_silence_s) below
    # vad_neg_threshold; chosen on telephone calls of dev actors (benchmarks/telephone_asr.py --tune-vad)
    vad_threshold: float = 0.5
    vad_neg_threshold: float = 0.35
    vad_window_s: float = 2.0  # silero judges each stretch this long with a fresh state (it forgets a shout)...
    vad_warmup_s: float = 1.0  # ...after hearing this much audio before it (at most vad_window_s)


@dataclass(frozen=True)
class TranscriptionConfig:
    """faster-whisper settings. `model` is 'base' (multilingual, default) or 'tiny.en'."""

    model: str = "base"
    language: str | None = None  # None: detect per channel
    beam_size: int = 5
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: let CTranslate2 decide
    # >1: a leg's utterances, in stretches under 30 s cut at utterance edges, decoded together by
    # faster-whisper's batched pipeline (2-minute stereo 8 kHz call, 2 cores, warm: transcription
    # 12.2 s as one joined pass, 7.5 s at 4, 8.3 s at 8, same words within 2 of 214; on the 24
    # telephone_asr calls it also hallucinates less in noise)
    batch_size: int = 4
    target_dbfs: float = -20.0  # each utterance's active speech is levelled to this before Whisper
    retry_empty: bool = True  # an utterance the joined pass leaves wordless is transcribed alone
    # hallucination guards (dropped words are counted on the call, metrics.asr):
    max_no_speech_prob: float = 0.6  # a segment above this with avg_logprob below -1 is silence
    max_compression_ratio: float = 2.4  # an utterance's words more repetitive than this (gzip ratio) loop
    word_slack_s: float = 0.3  # a word further than this outside every speech region is dropped
    boilerplate_quiet_db: float = 15.0  # "thank you very much" this far below the utterance's speech
    # an utterance whose only word Whisper gives less than this: every hallucinated word in the noisy dev
    # calls was one ("The", "I'll") at p 0.01-0.04, alone in a noise burst VAD took for speech
    min_lone_word_probability: float = 0.1


@dataclass(frozen=True)
class EmotionConfig:
    """Which emotion backend runs, and the tier thresholds applied to its probabilities."""

    backend: str = "whisper-head"  # "whisper-head" (offline default) or "hubert"
    head_path: str = ""  # empty: the committed head under analysis/emotion/heads/
    hubert_model: str = ""  # hub id or local directory, for backend "hubert"
    high_intensity: float = 0.7  # at or above: the strong granular label (anger -> rage)
    low_intensity: float = 0.3  # below: the mild granular label (anger -> resentment)
    granular_floor: float = 0.1  # emotions below this probability get no granular label
    complex_min_second: float = 0.2  # the runner-up must reach this to fuse a complex emotion
    # the deployment's corrections fitted by `emotivoice recalibrate` (analysis/emotion/recalibration.py):
    # named profiles in one owner-only JSON file (empty: DATA_DIR/calibration.json), chosen per call by
    # team, then language, as "team=profile, team2=profile2"; a call matching neither uses "default"
    calibration_file: str = ""
    calibration_by_team: str = ""
    calibration_by_language: str = ""
    # the prior holds temperature 1 and zero biases with the weight of this many corrections, and
    # fewer corrections than min are not fitted at all (benchmarks/recalibration.py)
    recalibration_prior_weight: float = 10.0
    recalibration_min_corrections: int = 20


@dataclass(frozen=True)
class DiarizationConfig:
    """Speaker separation for mono recordings (channel-per-leg audio skips it)."""

    num_speakers: int = 2  # a call's two parties; 0 estimates between min_speakers and max_speakers
    min_speakers: int = 1
    max_speakers: int = 4


@dataclass(frozen=True)
class SarcasmConfig:
    """When positive words said in a negative way count as sarcasm."""

    positive_text: float = 0.3  # VADER compound at or above which the words count as positive
    threshold: float = 0.3  # confidence at or above which the utterance is flagged (F1-best on dev actors)
    ambiguous_band: float = 0.1  # confidences within this of the threshold are marked ambiguous
    prosody_weight: float = 0.15  # how much contempt-like prosody (flat, low, slow) adds


@dataclass(frozen=True)
class RiskConfig:
    """Weights of each factor (per unit of its 0..1 value) and the alert rule."""

    w_negative_emotion: float = 2.2
    w_rising: float = 1.2  # negative emotion rising over the speaker's last utterances
    w_sarcasm: float = 1.0
    w_negative_words: float = 1.2
    w_interrupting: float = 0.6
    w_loud: float = 0.8  # louder than this speaker's baseline
    w_escalation_phrase: float = 2.0
    bias: float = -2.2  # evidence of a calm utterance sits near sigmoid(bias) ~ 0.1
    smoothing: float = 0.7  # weight of the newest utterance's evidence in the score
    alert_threshold: float = 0.55  # chosen on benchmarks/escalation.py's dev calls
    rearm_below: float = 0.4  # hysteresis: the next alert needs the score to fall below this first
    trend_window: int = 3


@dataclass(frozen=True)
class DashboardConfig:
    host: str = "127.0.0.1"
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

    sip_host: str = "0.0.0.0"
    sip_port: int = 5060  # UDP and TCP
    sip_tls_port: int = 0  # TLS listener, needs tls_cert_file and tls_key_file
    tls_cert_file: str = ""
    tls_key_file: str = ""
    srtp: str = "optional"  # "off" | "optional" | "mandatory" (SRTP needs the built pjproject)
    rtp_port: int = 40000  # first RTP port; each stream takes the next pair
    allow: str = "127.0.0.1/32,::1/128"  # addresses or networks allowed to send calls; others get 403
    auth_user: str = ""  # SIP digest authentication of callers; empty: off (the allowlist still applies)
    auth_password: str = ""
    auth_realm: str = "emotivoice"
    max_calls: int = 64  # calls beyond this get 486 Busy Here (the pjsua2-python fallback caps at 4)
    invite_rate_per_s: float = 5.0  # new INVITEs per source address per second, on average; beyond: 503
    invite_burst: int = 20  # ...after a burst of this many (a token bucket per source address)
    # an answered call that has sent no audio after this many seconds is hung up ("no media"); 0: never
    no_media_timeout_s: float = 20.0
    # regex on a SIPREC participant's AOR or name marking the agent (e.g. "^sip:1[0-9]{3}@" for agent
    # extensions); the other participants are customers; empty: no roles
    siprec_agent_match: str = "(?i)agent"
    audiosocket_port: int = 0  # Asterisk AudioSocket (TCP); no authentication in the protocol: keep it private
    audiosocket_host: str = "127.0.0.1"
    audiosocket_leg_roles: str = "customer,agent"  # roles of a call's AudioSocket connections, in connection order
    audiosocket_pair_wait_s: float = 1.0  # how long a call's first connection waits for the others to join
    websocket_port: int = 0  # Twilio Media Streams at /twilio, Genesys AudioHook at /audiohook
    websocket_host: str = "127.0.0.1"
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
    pre_roll_s: float = 0.2  # audio kept before a detected speech onset (silero reacts a little late)
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
    entities: str = ("CREDIT_CARD,CARD_SECURITY_CODE,BANK_ACCOUNT,US_BANK_NUMBER,IBAN_CODE,US_SSN,US_ITIN,UK_NHS,"
                     "UK_NINO,PHONE_NUMBER,EMAIL_ADDRESS,PERSON,DATE_OF_BIRTH,SECURITY_ANSWER")
    replacement: str = "label"  # "label": [CREDIT_CARD]; "hash": [CREDIT_CARD:1f0c9a2b], HMAC-SHA256 keyed, stable
    hash_key_file: str = ""  # the HMAC key (32 random bytes, 0600); empty: <data_dir>/redaction.key, made on first use
    min_score: float = 0.4  # Presidio results below this are kept as said
    audio_margin_s: float = 0.15  # added before and after each redacted word (Whisper's word edges drift ~0.1 s)
    audio_fill: str = "silence"  # "silence" or "tone" (a 1 kHz beep at -20 dBFS, so a listener hears the cut)
    audio_all_channels: bool = True  # cut every channel over a span: echo on the other leg carries the digits too
    policy_name: str = "default"


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
            if path.resolve() == SHIPPED_RULES.resolve():
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

    policy_name: str = "default"
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
class Settings:
    """The whole configuration. Build it with `load_settings()`."""

    data_dir: Path = DEFAULT_DATA_DIR
    db_path: Path = DEFAULT_DATA_DIR / "emotivoice.duckdb"
    model_cache_dir: Path = DEFAULT_DATA_DIR / "models"
    inbox_dir: Path = DEFAULT_DATA_DIR / "inbox"  # the analysis service picks up recordings here
    emotion_data_dir: Path = REPO_ROOT.parent / "shared" / "data" / "emotion"
    block_s: float = 600.0  # audio is decoded and analysed in blocks of this length
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


def _coerce(value: str, like: Any) -> Any:
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
    """Defaults < `emotivoice.toml` (or $EMOTIVOICE_CONFIG) < EMOTIVOICE_* env vars.

    Nested fields use the section name: EMOTIVOICE_TRANSCRIPTION_MODEL=tiny.en.
    When data_dir moves, db_path, model_cache_dir, inbox_dir, live.audio_dir and analytics.edited_rules_file
    follow unless set on their own.
    """
    env = dict(os.environ if env is None else env)
    path = config_file or Path(env.get("EMOTIVOICE_CONFIG", REPO_ROOT / "emotivoice.toml"))
    table: dict[str, Any] = {}
    if path.is_file():
        table = tomllib.loads(path.read_text())
    base = Settings()
    data_dir = Path(env.get("EMOTIVOICE_DATA_DIR", table.get("data_dir", base.data_dir))).expanduser()
    base = replace(base, data_dir=data_dir, db_path=data_dir / "emotivoice.duckdb",
                   model_cache_dir=data_dir / "models", inbox_dir=data_dir / "inbox",
                   live=replace(base.live, audio_dir=data_dir / "calls"),
                   analytics=replace(base.analytics, edited_rules_file=data_dir / "rules.toml"))
    return _apply(base, table, "EMOTIVOICE", env)
