"""Prometheus metrics of one API process (each process is its own scrape target)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from engine import costs

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StageCosts(Collector):
    """``mise_stage_cpu_seconds_total{stage}``: this process's CPU time per stage (``engine.costs``)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "mise_stage_cpu_seconds", "CPU time of this process by stage (events, storage, index)", labels=["stage"]
        )
        for stage, seconds in sorted(costs.spent().items()):
            family.add_metric([stage], seconds)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._flushes: list[Callable[[], None]] = []
        r = self.registry
        self.frames_received = Counter(
            "mise_frames_received_total", "Media frames accepted from Twilio", ["track"], registry=r
        )
        self.messages_received = Counter(
            "mise_messages_received_total", "WebSocket messages received, any event", registry=r
        )
        self.frames_rejected = Counter(
            "mise_frames_rejected_total", "Messages refused, by reason", ["reason"], registry=r
        )
        self.requests_refused = Counter(
            "mise_requests_refused_total",
            "HTTP requests refused before their route ran (size, rate), by reason",
            ["reason"],
            registry=r,
        )
        self.connections_rejected = Counter(
            "mise_connections_rejected_total",
            "Streams refused before any work, by reason",
            ["reason"],
            registry=r,
        )
        self.streams = Counter(
            "mise_streams_total", "Streams that reached start, by how they ended", ["end_reason"], registry=r
        )
        self.live_calls = Gauge("mise_live_calls", "Calls streaming into this process now", registry=r)
        self.pushes = Counter(
            "mise_actor_pushes_total", "Batched pushes carrying audio to call hosts (Ray calls or local)", registry=r
        )
        self.pushes_local = Counter(
            "mise_actor_pushes_local_total", "Of those pushes, the ones over a host's node-local socket", registry=r
        )
        self.push_channels_lost = Counter(
            "mise_push_channels_lost_total",
            "Node-local push sockets found closed (a host died, or the socket failed): pushes go through Ray",
            registry=r,
        )
        self.frames_pushed = Counter("mise_frames_pushed_total", "Media frames carried by those pushes", registry=r)
        self.push_errors = Counter("mise_actor_push_errors_total", "Pushes to call hosts that failed", registry=r)
        self.frames_dropped = Counter(
            "mise_frames_dropped_total",
            "Media frames accepted but not analysed: a host that did not keep up, or a dead host's call not moved",
            registry=r,
        )
        self.failovers = Counter(
            "mise_failovers_total", "Live calls moved to another host after theirs died", registry=r
        )
        self.webhooks = Counter("mise_webhooks_total", "Status callbacks, by outcome", ["outcome"], registry=r)
        self.events = Counter(
            "mise_events_total", "Call events received from call hosts, by type", ["type"], registry=r
        )
        self.event_errors = Counter("mise_event_errors_total", "Batches of turns that could not be stored", registry=r)
        self.sse_subscribers = Gauge("mise_sse_subscribers", "SSE clients connected to this process", registry=r)
        self.sse_connections = Counter("mise_sse_connections_total", "SSE streams opened", registry=r)
        self.sse_events = Counter("mise_sse_events_total", "Events written to SSE clients (live part)", registry=r)
        self.sse_dropped = Counter(
            "mise_sse_dropped_total", "SSE clients dropped for falling too far behind", registry=r
        )
        self.sse_feed_gaps = Counter(
            "mise_sse_feed_gaps_total", "Times this process fell behind the event hub's log", registry=r
        )
        self.turns_unmeasured = Counter(
            "mise_turns_unmeasured_total",
            "Turns sent without features, by reason (overload: the host's measuring thread fell behind)",
            ["reason"],
            registry=r,
        )
        self.index_spooled = Counter(
            "mise_index_spooled_total", "Index operations written to this process's spool", registry=r
        )
        self.index_indexed = Counter("mise_index_indexed_total", "Index operations the search index took", registry=r)
        self.index_retries = Counter(
            "mise_index_retries_total", "Index batches retried (backend unavailable or failing)", registry=r
        )
        self.index_failed = Counter(
            "mise_index_failed_total", "Index operations the search index refused for good", registry=r
        )
        self.index_lag = Gauge(
            "mise_index_lag_seconds", "Age of the oldest spooled operation not yet indexed", registry=r
        )
        self.transcripts = Counter(
            "mise_transcripts_total",
            "Turns given words or a reason for none, by outcome (done, skipped; kept_other_source: words from"
            " the source that does not win were left out; turn_unknown: no such stored turn)",
            ["outcome"],
            registry=r,
        )
        self.asr_queued = Gauge("mise_asr_queued_turns", "Finished turns waiting for the transcriber", registry=r)
        self.asr_queued_s = Gauge(
            "mise_asr_queued_seconds", "Seconds of turn audio waiting for the transcriber", registry=r
        )
        self.asr_audio_s = Counter(
            "mise_asr_audio_seconds_total", "Seconds of turn audio sent to the ASR workers", registry=r
        )
        self.asr_lag = Histogram(
            "mise_asr_lag_seconds",
            "From a turn's turn.ended reaching this process to its words stored and sent (built-in ASR)",
            buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.recorded_bytes = Counter(
            "mise_recorded_bytes_total",
            "Bytes of call audio written to recordings (mu-law, silence included)",
            registry=r,
        )
        self.audio_requests = Counter(
            "mise_audio_requests_total", "Recording playback requests, by outcome", ["outcome"], registry=r
        )
        self.imports = Counter(
            "mise_imports_total",
            "Recorded calls uploaded to POST /v1/calls/import, by HTTP status",
            ["status"],
            registry=r,
        )
        self.erasures = Counter(
            "mise_erasures_total",
            "Calls erased everywhere, by reason (request: DELETE /v1/calls/{sid}; retention: past their age)",
            ["reason"],
            registry=r,
        )
        self.searches = Counter("mise_searches_total", "Search requests, by outcome", ["outcome"], registry=r)
        self.call_setup = Histogram(
            "mise_call_setup_seconds",
            "From a stream's start message to its call being open in its host actor",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        r.register(_StageCosts())

    def count_push(self, frames: int, local: bool) -> None:
        self.pushes.inc()
        self.frames_pushed.inc(frames)
        if local:
            self.pushes_local.inc()

    def on_scrape(self, flush: Callable[[], None]) -> None:
        """``flush`` adds counts kept elsewhere (plain integers on a hot path) to the counters before each
        scrape. Runs on the event loop, as the code that counts: nothing is counted twice or lost."""
        self._flushes.append(flush)

    def render(self) -> bytes:
        for flush in self._flushes:
            flush()
        return generate_latest(self.registry)


async def serve_alone(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """``GET /metrics`` on a listener of its own (``MISE_METRICS_PORT``), without a key: for a scraper on a
    private address, while the API's port refuses /metrics. Anything else gets 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = head.partition(b" ")
            found = method == b"GET" and rest.split(b" ", 1)[0].split(b"?", 1)[0] == b"/metrics"
            body, status, kind = (metrics.render(), b"200 OK", METRICS_TYPE) if found else (b"", b"404 Not Found", "")
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind.encode() + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port, limit=16384)
