"""Configuration: one typed object read once from ``MISE_*`` (and ``TWILIO_AUTH_TOKEN``) at start-up.

A wrong value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.pipeline import AnalysisOptions


class ConfigError(ValueError):
    pass


# Chosen by bench/ingest.py (see README "Density"): 50 calls share one Ray host process.
DEFAULT_CALLS_PER_ACTOR = 50
CLIP_MAX_S = 60.0  # the transcriber gets at most this much of a turn (its end)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".mise-data")
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> tenant; never logged
    twilio_auth_token: str | None = None
    public_url: str | None = None  # e.g. https://mise.example.com, as Twilio calls it (behind proxies)
    ray_address: str | None = None
    ray_namespace: str = "mise"  # one directory per namespace: several deployments can share a cluster
    calls_per_actor: int = DEFAULT_CALLS_PER_ACTOR
    spare_hosts: int = 1
    push_interval_ms: int = 50
    local_channels: bool = True  # pushes and hub publishes over a local socket on one node (actors/channel.py)
    ring_seconds: float = 60.0
    start_timeout_s: float = 10.0
    hold_ms: int = AnalysisOptions.hold_ms
    silence_ms: int = AnalysisOptions.silence_ms
    measure_max_delay_s: float = 3.0  # a turn waiting longer to be measured goes out without features
    sse_heartbeat_s: float = 15.0
    event_flush_ms: int = 100  # the most often this process hands events to the event hub (one call each)
    analyse: bool = True  # off: audio is received and stored, no turns or features (an ingest-only server)
    emotion: bool = True  # score every turn with the emotion model (in the call hosts, numpy: models/live.py)
    emotion_weights: str | None = None  # weights from `mise train`; default: the packaged ones
    emotion_per_speaker: bool = AnalysisOptions.speaker_baseline  # scores relative to each speaker's own voice
    alert_on: float = AnalysisOptions.alert_on
    alert_off: float = AnalysisOptions.alert_off
    sse_queue: int = 2000  # events buffered per SSE client; a client further behind is dropped
    max_message_bytes: int = 128 * 1024
    opensearch_url: str | None = None  # the search index: OpenSearch when set, else SQLite FTS5 under data_dir
    opensearch_prefix: str = "mise"  # names of its indices, templates and aliases
    max_body_bytes: int = 64 * 1024  # any HTTP request's body
    max_import_bytes: int = 256 << 20  # a recording uploaded to POST /v1/calls/import
    rate_search: str = "20:40"  # per key: requests a second, and the burst saved up ("0": no limit)
    rate_webhooks: str = "50:200"
    rate_streams: str = "20:100"  # new streams a second per key
    metrics_key: str | None = None  # /metrics answers this key only; unset: any API key
    metrics_port: int | None = None  # set: /metrics is served on this port only (no key), bound to metrics_host
    metrics_host: str = "127.0.0.1"
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none by default
    asr: bool = True  # words for every turn by the built-in transcriber (or the service at asr_url)
    asr_url: str | None = None  # an OpenAI-style transcription endpoint instead of the built-in Whisper
    asr_model: str | None = None  # the model name sent to asr_url
    asr_api_key: str | None = None  # the bearer key sent to asr_url; never logged
    asr_workers: int = max(1, (os.cpu_count() or 2) // 2)  # ASR worker processes in the cluster
    asr_max_lag_s: float = 30.0  # a turn that waited longer for a worker is skipped (overload)
    asr_queue_s: float = 600.0  # seconds of turn audio queued per API process at most; more is skipped
    redact: bool = True  # card numbers, security codes and national IDs out of text before it is kept
    transcript_precedence: str = "external"  # whose words win on a turn: posted ("external") or built in ("asr")
    record_audio: bool = True  # keep both tracks of every call (api/recorder.py)
    tenant_record_audio: dict[str, bool] = field(default_factory=dict)  # per tenant, over record_audio
    audio_bucket: str | None = None  # recordings in this S3(-compatible) bucket instead of MISE_DATA_DIR/recordings
    audio_s3_endpoint: str | None = None  # an S3-compatible service's URL (default: AWS)
    audio_prefix: str = "recordings/"  # object names start with it
    retention_days: float | None = None  # calls older than this are erased everywhere; None: kept
    tenant_retention_days: dict[str, float] = field(default_factory=dict)  # per tenant, over retention_days
    retention_sweep_s: float = 3600.0  # how often aged calls are looked for

    def records(self, tenant: str) -> bool:
        return self.tenant_record_audio.get(tenant, self.record_audio)

    def retention_for(self, tenant: str) -> float | None:
        return self.tenant_retention_days.get(tenant, self.retention_days)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        keys = _parse_keys(env.get("MISE_API_KEYS", ""), "MISE_API_KEYS")
        key_file = env.get("MISE_API_KEYS_FILE")
        if key_file:
            try:
                text = Path(key_file).read_text()
            except OSError as exc:
                raise ConfigError(f"MISE_API_KEYS_FILE: cannot read {key_file}: {exc}") from None
            keys.update(_parse_keys(text, "MISE_API_KEYS_FILE"))
        return cls(
            host=env.get("MISE_HOST", cls.host),
            port=_int(env, "MISE_PORT", cls.port, 0, 65535),
            data_dir=Path(env.get("MISE_DATA_DIR", str(cls.data_dir))),
            api_keys=keys,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            public_url=(env.get("MISE_PUBLIC_URL") or "").rstrip("/") or None,
            ray_address=env.get("MISE_RAY_ADDRESS") or None,
            ray_namespace=env.get("MISE_RAY_NAMESPACE") or cls.ray_namespace,
            calls_per_actor=_int(env, "MISE_CALLS_PER_ACTOR", DEFAULT_CALLS_PER_ACTOR, 1, 10_000),
            spare_hosts=_int(env, "MISE_SPARE_HOSTS", cls.spare_hosts, 0, 100),
            push_interval_ms=_int(env, "MISE_PUSH_INTERVAL_MS", cls.push_interval_ms, 5, 1000),
            local_channels=_bool(env, "MISE_LOCAL_CHANNELS", cls.local_channels),
            ring_seconds=_float(env, "MISE_RING_SECONDS", cls.ring_seconds, 1.0, 3600.0),
            start_timeout_s=_float(env, "MISE_START_TIMEOUT_S", cls.start_timeout_s, 0.1, 600.0),
            hold_ms=_int(env, "MISE_HOLD_MS", cls.hold_ms, 100, 5000),
            silence_ms=_int(env, "MISE_SILENCE_MS", cls.silence_ms, 500, 600_000),
            measure_max_delay_s=_float(env, "MISE_MEASURE_MAX_DELAY_S", cls.measure_max_delay_s, 0.0, 600.0),
            sse_heartbeat_s=_float(env, "MISE_SSE_HEARTBEAT_S", cls.sse_heartbeat_s, 0.1, 3600.0),
            event_flush_ms=_int(env, "MISE_EVENT_FLUSH_MS", cls.event_flush_ms, 0, 1000),
            analyse=_bool(env, "MISE_ANALYSIS", cls.analyse),
            emotion=_bool(env, "MISE_EMOTION", cls.emotion),
            emotion_weights=env.get("MISE_EMOTION_WEIGHTS") or None,
            emotion_per_speaker=_bool(env, "MISE_EMOTION_PER_SPEAKER", cls.emotion_per_speaker),
            alert_on=_float(env, "MISE_FRUSTRATION_ALERT", cls.alert_on, 0.0, 1.0),
            alert_off=_float(env, "MISE_FRUSTRATION_CLEAR", cls.alert_off, 0.0, 1.0),
            sse_queue=_int(env, "MISE_SSE_QUEUE", cls.sse_queue, 1, 1_000_000),
            max_message_bytes=_int(env, "MISE_MAX_MESSAGE_BYTES", cls.max_message_bytes, 1024, 16 << 20),
            opensearch_url=_url(env, "MISE_OPENSEARCH_URL"),
            opensearch_prefix=_prefix(env, "MISE_OPENSEARCH_PREFIX", cls.opensearch_prefix),
            max_body_bytes=_int(env, "MISE_MAX_BODY_BYTES", cls.max_body_bytes, 1024, 1 << 30),
            max_import_bytes=_int(env, "MISE_MAX_IMPORT_BYTES", cls.max_import_bytes, 1024, 1 << 34),
            rate_search=_rate(env, "MISE_RATE_SEARCH", cls.rate_search),
            rate_webhooks=_rate(env, "MISE_RATE_WEBHOOKS", cls.rate_webhooks),
            rate_streams=_rate(env, "MISE_RATE_STREAMS", cls.rate_streams),
            metrics_key=env.get("MISE_METRICS_KEY") or None,
            metrics_port=_int(env, "MISE_METRICS_PORT", 0, 0, 65535) or None,
            metrics_host=env.get("MISE_METRICS_HOST") or cls.metrics_host,
            cors_origins=tuple(o.strip().rstrip("/") for o in env.get("MISE_CORS_ORIGINS", "").split(",") if o.strip()),
            asr=_bool(env, "MISE_ASR", cls.asr),
            asr_url=_url(env, "MISE_ASR_URL"),
            asr_model=env.get("MISE_ASR_MODEL") or None,
            asr_api_key=env.get("MISE_ASR_API_KEY") or None,
            asr_workers=_int(env, "MISE_ASR_WORKERS", cls.asr_workers, 1, 1000),
            asr_max_lag_s=_float(env, "MISE_ASR_MAX_LAG_S", cls.asr_max_lag_s, 0.1, 86_400.0),
            asr_queue_s=_float(env, "MISE_ASR_QUEUE_S", cls.asr_queue_s, 1.0, 86_400.0),
            redact=_bool(env, "MISE_REDACT", cls.redact),
            transcript_precedence=_choice(
                env, "MISE_TRANSCRIPT_PRECEDENCE", cls.transcript_precedence, ("external", "asr")
            ),
            record_audio=_bool(env, "MISE_RECORD_AUDIO", cls.record_audio),
            tenant_record_audio={
                t: v == "True"
                for t, v in _per_tenant(
                    env, "MISE_TENANT_RECORD_AUDIO", lambda v: str(_bool({"v": v}, "v", True))
                ).items()
            },
            audio_bucket=(env.get("MISE_AUDIO_BUCKET") or "").strip() or None,
            audio_s3_endpoint=_url(env, "MISE_AUDIO_S3_ENDPOINT"),
            audio_prefix=env.get("MISE_AUDIO_PREFIX", cls.audio_prefix),
            retention_days=_float(env, "MISE_RETENTION_DAYS", 0.0, 0.0, 36_500.0) or None,
            tenant_retention_days={
                t: float(v) for t, v in _per_tenant(env, "MISE_TENANT_RETENTION_DAYS", _days).items()
            },
            retention_sweep_s=_float(env, "MISE_RETENTION_SWEEP_S", cls.retention_sweep_s, 1.0, 86_400.0),
        )

    def analysis(self) -> AnalysisOptions:
        return AnalysisOptions(
            hold_ms=self.hold_ms,
            silence_ms=self.silence_ms,
            alert_on=self.alert_on,
            alert_off=min(self.alert_off, self.alert_on),
            speaker_baseline=self.emotion_per_speaker,
            clip_max_s=min(self.ring_seconds, CLIP_MAX_S) if self.asr else 0.0,
        )


def _parse_keys(text: str, name: str) -> dict[str, str]:
    """``key:tenant`` pairs separated by commas or newlines; ``#`` starts a comment line."""
    keys: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        key, sep, tenant = item.partition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ConfigError(f"{name}: each entry must be 'key:tenant' (entry {len(keys) + 1} is not)")
        if len(key.strip()) < 8:
            raise ConfigError(f"{name}: key for tenant {tenant.strip()!r} is shorter than 8 characters")
        keys[key.strip()] = tenant.strip()
    return keys


def _per_tenant(env: Mapping[str, str], name: str, check: Callable[[str], str]) -> dict[str, str]:
    """``tenant:value`` pairs separated by commas, each value checked by ``check`` (raises ConfigError)."""
    out: dict[str, str] = {}
    for item in (env.get(name) or "").split(","):
        if not item.strip():
            continue
        tenant, sep, value = item.strip().rpartition(":")
        if not sep or not tenant.strip():
            raise ConfigError(f"{name}: each entry must be 'tenant:value' ({item.strip()!r} is not)")
        try:
            out[tenant.strip()] = check(value.strip())
        except ConfigError as exc:
            raise ConfigError(f"{name}: tenant {tenant.strip()!r}: {exc}".replace(" v=", " ")) from None
    return out


def _days(value: str) -> str:
    try:
        days = float(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a number of days") from None
    if not 0 < days <= 36_500:
        raise ConfigError(f"{value!r} days is outside (0, 36500]")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is outside [{lo}, {hi}]")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is outside [{lo}, {hi}]")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not one of 1/0, true/false, yes/no, on/off")


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} must start with http:// or https://")
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.replace("-", "").replace("_", "").isalnum() or not raw.islower() or raw[0] in "-_":
        raise ConfigError(f"{name}={raw!r}: use lower-case letters, digits, - and _ (an index name prefix)")
    return raw


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """``RATE`` or ``RATE:BURST`` (per second, non-negative numbers; ``0`` turns the limit off)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    rate, _, burst = raw.partition(":")
    try:
        ok = float(rate) >= 0 and (not burst or float(burst) >= 1)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name}={raw!r}: give requests per second, optionally ':burst' (e.g. 20 or 20:40)")
    return raw
