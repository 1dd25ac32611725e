"""The Starlette app: routes, and the resources that live as long as the process (store, Ray, pump)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from actors import runtime, tuning
from actors.pump import AudioPump
from api.audio import CallAudio, mutes_of
from api.auth import KeyRing, TwilioSignature, key_from_request
from api.calls import Calls
from api.erasure import Erasure
from api.events import EventRouter
from api.external import ExternalTranscripts
from api.guard import Guard, Rate, RateLimits
from api.importer import Importer
from api.indexing import Indexer, IndexingStore, open_index
from api.ingest import Ingest
from api.leases import Leases
from api.metrics import METRICS_TYPE, Metrics
from api.recorder import Recorder
from api.search import Search
from api.settings import ConfigError, Settings
from api.sse import EventFeed, EventStreams
from api.transcripts import Transcriber
from api.webhooks import Webhooks
from api.words import TurnWords
from engine.store.audio import AudioStore, FolderAudio
from engine.store.sqlite import SqliteStore
from models import load_emotion_model
from models.scoring import EmotionScoring

log = logging.getLogger("mise.app")


@dataclass
class _Parts:
    ingest: Ingest
    webhooks: Webhooks
    calls: Calls
    directory: ActorHandle[Any]
    pump: AudioPump
    feed: EventFeed
    streams: EventStreams
    search: Search
    transcripts: ExternalTranscripts
    audio: CallAudio
    erasure: Erasure
    importer: Importer


def _emotion_model(weights: str | None) -> EmotionScoring:
    try:
        return load_emotion_model(weights)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"MISE_EMOTION_WEIGHTS: cannot use {weights}: {exc}") from None


def create_app(settings: Settings) -> Starlette:
    if not settings.api_keys:
        raise ConfigError("no API keys: set MISE_API_KEYS='key:tenant' or MISE_API_KEYS_FILE")
    keys = KeyRing(settings.api_keys)
    # The emotion model (numpy, no torch) travels to every call host and import task with their options: each
    # scores its own turns. Read here, so a bad weights file stops the server before it starts.
    emotion = _emotion_model(settings.emotion_weights) if settings.emotion and settings.analyse else None
    signature = TwilioSignature(settings.twilio_auth_token, settings.public_url) if settings.twilio_auth_token else None
    metrics = Metrics()
    limits = RateLimits(
        {
            "search": Rate.parse(settings.rate_search),
            "webhooks": Rate.parse(settings.rate_webhooks),
            "streams": Rate.parse(settings.rate_streams),
        }
    )
    parts: _Parts | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal parts
        started = time.monotonic()
        steps: list[str] = []

        def step(name: str) -> None:
            steps.append(f"{name} {time.monotonic() - started:.1f} s")

        index = open_index(
            data_dir=settings.data_dir, opensearch_url=settings.opensearch_url, prefix=settings.opensearch_prefix
        )
        calls_store = SqliteStore(settings.data_dir / "mise.db")
        indexer = Indexer(index=index, root=settings.data_dir / "spool", metrics=metrics, store=calls_store)
        indexer.start()
        store = IndexingStore(calls_store, indexer.spool, metrics)
        embedded = settings.ray_address is None
        runtime.connect(settings.ray_address, namespace=settings.ray_namespace)
        step("ray")
        hub = runtime.hub(namespace=settings.ray_namespace)
        directory = runtime.directory(
            namespace=settings.ray_namespace,
            calls_per_host=settings.calls_per_actor,
            spare_hosts=settings.spare_hosts,
            host_options={
                "ring_seconds": settings.ring_seconds,
                "analysis": settings.analysis(),
                "analyse": settings.analyse,
                "measure_max_delay_s": settings.measure_max_delay_s,
                "emotion": emotion,
                "channel": settings.local_channels,
            },
        )
        await directory.ready.remote()
        step("call hosts")
        feed = EventFeed(hub=hub, namespace=settings.ray_namespace, metrics=metrics, channels=settings.local_channels)
        await feed.start()
        step("event hub")
        events = EventRouter(
            store=store, metrics=metrics, publish=feed.publish, hub_interval_s=settings.event_flush_ms / 1000
        )
        words = TurnWords(store=store, events=events, metrics=metrics, precedence=settings.transcript_precedence)
        posted = ExternalTranscripts(keys=keys, store=store, words=words, redact=settings.redact)
        events.turns_stored = posted.turns_stored
        transcriber = None
        if settings.asr and settings.analyse:
            workers = runtime.asr_workers(
                namespace=settings.ray_namespace,
                count=settings.asr_workers,
                url=settings.asr_url,
                model=settings.asr_model,
                api_key=settings.asr_api_key,
            )
            transcriber = Transcriber(
                workers=workers,
                words=words,
                metrics=metrics,
                max_queue_s=settings.asr_queue_s,
                max_lag_s=settings.asr_max_lag_s,
                redact=settings.redact,
            )
            transcriber.start()
            events.on_clip = transcriber.add
        recorder = Recorder(
            root=settings.data_dir / "recordings",
            store=open_audio_store(settings),
            metrics=metrics,
            enabled=settings.records,
            is_live=lambda tenant, call_sid: bool((store.get(tenant, call_sid) or {}).get("live")),
        )
        words.on_stored = lambda tenant, call_sid, turns: _mute_redactions(recorder, tenant, call_sid, turns)
        pump = AudioPump(
            interval_s=settings.push_interval_ms / 1000,
            on_push=metrics.count_push,
            on_error=metrics.push_errors.inc,
            on_events=events.dispatch,
            on_channel_lost=metrics.push_channels_lost.inc,
            channels_on=runtime.node_id() if settings.local_channels else None,
        )
        pump.start()
        app.state.close_streams = feed.close_all  # called when a stop begins (api/cli.py)
        leases = Leases(store=store, directory=directory, metrics=metrics)
        await leases.start()  # calls a dead predecessor left live end before this process serves
        recorder.start()  # after them: its first sweep uploads what their recordings left (object storage)
        step("leases")
        erasure = Erasure(
            keys=keys,
            store=store,
            indexer=indexer,
            recorder=recorder,
            hub=lambda: feed.hub,
            metrics=metrics,
            retention_days=settings.retention_days,
            tenant_retention_days=settings.tenant_retention_days,
            sweep_s=settings.retention_sweep_s,
        )
        importer = Importer(
            keys=keys,
            store=store,
            events=events,
            recorder=recorder,
            transcriber=transcriber,
            erasure=erasure,
            leases=leases,
            metrics=metrics,
            options=settings.analysis(),
            emotion=emotion,
        )
        parts = _Parts(
            ingest=Ingest(
                keys=keys,
                signature=signature,
                metrics=metrics,
                directory=directory,
                pump=pump,
                store=store,
                events=events,
                leases=leases,
                limits=limits,
                start_timeout_s=settings.start_timeout_s,
                max_message_bytes=settings.max_message_bytes,
                recorder=recorder,
            ),
            webhooks=Webhooks(
                keys=keys, signature=signature, metrics=metrics, store=store, publish=events.publish, leases=leases
            ),
            calls=Calls(keys=keys, store=store, directory=directory),
            directory=directory,
            pump=pump,
            feed=feed,
            streams=EventStreams(
                keys=keys,
                store=store,
                feed=feed,
                metrics=metrics,
                heartbeat_s=settings.sse_heartbeat_s,
                queue_size=settings.sse_queue,
            ),
            search=Search(keys=keys, index=index, metrics=metrics),
            transcripts=posted,
            audio=CallAudio(keys=keys, store=store, recorder=recorder, metrics=metrics, redact=settings.redact),
            erasure=erasure,
            importer=importer,
        )
        parts.erasure.start()
        log.info(
            "mise ready: %s Ray, %d calls per host actor, data in %s, search index: %s (%s)",
            "embedded" if embedded else f"cluster at {settings.ray_address}",
            settings.calls_per_actor,
            settings.data_dir,
            index.name,
            ", ".join(steps),
        )
        tuning.settle_heap()  # everything built so far lives as long as the process
        try:
            yield
        finally:
            await parts.erasure.stop()
            await leases.stop()
            await feed.stop()
            await pump.stop()
            events.flush()  # the last push replies' events, waiting for their interval
            await recorder.stop()
            if transcriber is not None:
                await transcriber.stop()
            if embedded:
                await directory.shutdown.remote()
                ray.shutdown()
            await indexer.stop()
            await index.close()
            store.close()

    def _parts() -> _Parts:
        assert parts is not None, "the app is not started"
        return parts

    async def stream(ws: WebSocket) -> None:
        await _parts().ingest(ws)

    async def webhook(request: Request) -> Response:
        return await _parts().webhooks(request)

    async def list_calls(request: Request) -> Response:
        return await _parts().calls.list(request)

    async def get_call(request: Request) -> Response:
        if request.method == "DELETE":
            return await _parts().erasure.delete(request)
        return await _parts().calls.get(request)

    async def get_audio(request: Request) -> Response:
        return await _parts().audio(request)

    async def import_call(request: Request) -> Response:
        return await _parts().importer(request)

    async def get_turns(request: Request) -> Response:
        return await _parts().calls.turns(request)

    async def post_transcripts(request: Request) -> Response:
        return await _parts().transcripts(request)

    async def search(request: Request) -> Response:
        return await _parts().search(request)

    async def events(request: Request) -> Response:
        return await _parts().streams(request)

    async def healthz(request: Request) -> Response:
        live = await _parts().directory.live_calls.remote()
        return JSONResponse({"status": "ok", "live_calls_cluster": live})

    metrics_keys = KeyRing({settings.metrics_key: "metrics"}) if settings.metrics_key else keys

    async def prometheus(request: Request) -> Response:
        # Operator data across every tenant: to the metrics key (or an API key), or only on its own listener.
        if settings.metrics_port is not None:
            return JSONResponse({"error": f"metrics are served on port {settings.metrics_port}"}, status_code=404)
        if metrics_keys.tenant_for(key_from_request(request)) is None:
            return JSONResponse({"error": "a valid key is required for /metrics"}, status_code=401)
        return Response(metrics.render(), media_type=METRICS_TYPE)

    routes = [
        WebSocketRoute("/v1/stream/twilio", stream),
        Route("/v1/webhook/twilio", webhook, methods=["POST"]),
        Route("/v1/calls", list_calls),
        Route("/v1/calls/import", import_call, methods=["POST"]),
        Route("/v1/calls/{call_sid}", get_call, methods=["GET", "DELETE"]),
        Route("/v1/calls/{call_sid}/audio", get_audio),
        Route("/v1/calls/{call_sid}/turns", get_turns),
        Route("/v1/calls/{call_sid}/events", events),
        Route("/v1/calls/{call_sid}/transcripts", post_transcripts, methods=["POST"]),
        Route("/v1/search", search, methods=["GET", "POST"]),
        Route("/v1/events", events),
        Route("/healthz", healthz),
        Route("/metrics", prometheus),
        # The dashboard: static files, no build step, nothing from a CDN.
        Mount("/", StaticFiles(directory=Path(__file__).parent / "static", html=True), name="dashboard"),
    ]
    middleware = [
        Middleware(
            Guard,
            keys=keys,
            limits=limits,
            metrics=metrics,
            max_body=settings.max_body_bytes,
            max_import=settings.max_import_bytes,
        )
    ]
    if settings.cors_origins:  # off by default: no browser origin but the dashboard's own may call the API
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Range"],
            ),
        )
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.metrics = metrics  # api/cli.py serves them on their own port when MISE_METRICS_PORT is set
    return app


def open_audio_store(settings: Settings) -> AudioStore:
    """Where closed recordings go: S3(-compatible) object storage when a bucket is set, else the data folder."""
    if settings.audio_bucket:
        from engine.store.s3_audio import S3Audio

        return S3Audio(settings.audio_bucket, prefix=settings.audio_prefix, endpoint=settings.audio_s3_endpoint)
    return FolderAudio(settings.data_dir / "recordings")


async def _mute_redactions(recorder: Recorder, tenant: str, call_sid: str, turns: list[dict[str, Any]]) -> None:
    """The redacted spans of turns whose words were just stored, muted in their stream's recording."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for turn in turns:
        if turn.get("redactions"):
            by_stream.setdefault(str(turn.get("stream_sid") or ""), []).append(turn)
    for stream_sid, stream_turns in by_stream.items():
        spans = mutes_of(stream_turns, stream_sid, pending_too=False)
        await recorder.mute(tenant, call_sid, stream_sid, spans)
