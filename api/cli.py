"""The ``mise`` command line: serve, twiml, simulate, analyze, search, import, reindex, train, recalibrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import quoteattr

from api import import_cli, reindex, search_cli
from api.settings import ConfigError, Settings
from engine.pipeline import AnalysisOptions

log = logging.getLogger("mise")

DEMO_PARAMETERS = {"demo": "true", "customer": "Contoso Internet"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mise", description="Listen to live phone calls and index how they sound.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (settings from MISE_* environment variables)")
    serve.add_argument("--host", help="bind address (MISE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MISE_PORT, default 8000)")
    serve.add_argument("--demo", action="store_true", help="stream the bundled sample call through the real endpoint")
    serve.add_argument("--demo-speed", type=float, default=1.0, help="demo call pace, N x real time")

    twiml = sub.add_parser("twiml", help="print the TwiML that forks a call's audio to Mise")
    twiml.add_argument(
        "--url", required=True, help="public WebSocket URL, e.g. wss://mise.example.com/v1/stream/twilio"
    )
    twiml.add_argument("--api-key", default=os.environ.get("MISE_API_KEY", "YOUR_API_KEY"))
    twiml.add_argument("--track", default="both_tracks", choices=["both_tracks", "inbound_track", "outbound_track"])

    sim = sub.add_parser("simulate", help="play a .jsonl capture or WAV tracks to a server as Twilio would")
    sim.add_argument("capture", nargs="?", help="a Twilio .jsonl capture (one message per line)")
    sim.add_argument("--inbound", help="caller track (WAV, any format soundfile reads)")
    sim.add_argument("--outbound", help="agent track (WAV)")
    sim.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream/twilio")
    sim.add_argument("--api-key", default=os.environ.get("MISE_API_KEY"), help="sent as the api_key custom parameter")
    sim.add_argument("--speed", type=float, default=1.0, help="N x real time (0: as fast as possible)")
    sim.add_argument("--calls", type=int, default=1, help="concurrent copies, each with fresh SIDs")
    sim.add_argument("--stagger", type=float, default=0.0, help="seconds between starting copies")
    sim.add_argument("--skip-silence", action="store_true", help="leave out digitally silent frames, as Twilio may")

    ana = sub.add_parser("analyze", help="analyse recorded tracks offline with the live engine")
    ana.add_argument("--inbound", required=True, help="caller track (any format soundfile reads)")
    ana.add_argument("--outbound", help="agent track (same clock as the caller track)")
    ana.add_argument("--json", action="store_true", help='print {"turns": [...], "summary": {...}} as JSON')
    ana.add_argument("--hold-ms", type=int, default=AnalysisOptions.hold_ms, help="pause bridged inside a turn")
    ana.add_argument("--silence-ms", type=int, default=AnalysisOptions.silence_ms, help="dead air that is a silence")
    ana.add_argument("--transcribe", action="store_true", help="add each turn's words (built-in Whisper tiny.en)")
    ana.add_argument("--no-redact", action="store_true", help="with --transcribe: keep card numbers and IDs as said")
    ana.add_argument("--no-emotion", action="store_true", help="leave out the emotion model's scores (no torch)")
    ana.add_argument("--emotion-weights", help="weights from `mise train` (default: the packaged ones)")

    search_cli.add_parser(sub)
    reindex.add_parser(sub)
    import_cli.add_parser(sub)

    sub.add_parser(
        "train",
        help="(re)train the emotion model on a manifest of labelled clips "
        "(same code as python -m models.training.train)",
        add_help=False,
    )

    sub.add_parser(
        "recalibrate",
        help="refit the emotion model's calibration on your labelled turns "
        "(same code as python -m models.training.recalibrate)",
        add_help=False,
    )

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # everything after `train` is models.training.train's own command line
        from models.training import train

        return train.main(argv[1:])
    if argv[:1] == ["recalibrate"]:
        from models.training import recalibrate

        return recalibrate.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "search":
        return search_cli.run(args)
    if args.command == "import":
        return asyncio.run(import_cli.run_import(args))
    if args.command == "reindex":
        try:
            return reindex.run(args)
        except ConfigError as exc:
            print(f"mise: configuration error: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("opensearch").setLevel(logging.WARNING)  # it logs every request at INFO
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "twiml":
            print(render_twiml(args.url, args.api_key, args.track))
            return 0
        return asyncio.run(_simulate(args))
    except ConfigError as exc:
        print(f"mise: configuration error: {exc}", file=sys.stderr)
        return 2


def _analyze(args: argparse.Namespace) -> int:
    import orjson
    import soundfile

    from api.analyze import analyze_tracks, load_tracks, render_table

    for path in (args.inbound, args.outbound):
        if path and not Path(path).is_file():
            print(f"mise analyze: no such file: {path}", file=sys.stderr)
            return 2
    try:
        caller, agent = load_tracks(args.inbound, args.outbound)
    except (OSError, ValueError, soundfile.LibsndfileError) as exc:
        print(f"mise analyze: cannot read the audio: {exc}", file=sys.stderr)
        return 2
    options = AnalysisOptions(hold_ms=args.hold_ms, silence_ms=args.silence_ms)
    emotion = None
    if not args.no_emotion:
        from models import load_emotion_model

        emotion = load_emotion_model(args.emotion_weights)
    result = analyze_tracks(caller, agent, call_sid=Path(args.inbound).stem, options=options, emotion=emotion)
    if args.transcribe:
        from api.analyze import transcribe_turns
        from models.whisper import Whisper

        transcribe_turns(
            result, caller, agent, Whisper(threads=os.cpu_count() or 1).transcribe, redact=not args.no_redact
        )
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_table(result))
    return 0


def render_twiml(url: str, api_key: str, track: str) -> str:
    base = url.split("/v1/stream/twilio")[0].replace("wss://", "https://").replace("ws://", "http://")
    callback = f"{base}/v1/webhook/twilio?api_key={api_key}"
    return "\n".join(
        [
            "<!-- Forks both legs of the call to Mise; the TwiML after <Start> keeps running. -->",
            f"<!-- Set the number's (or REST call's) StatusCallback to {callback}",
            "     with StatusCallbackEvent 'initiated ringing answered completed'. -->",
            "<Response>",
            "  <Start>",
            f"    <Stream url={quoteattr(url)} track={quoteattr(track)}>",
            f'      <Parameter name="api_key" value={quoteattr(api_key)}/>',
            "    </Stream>",
            "  </Start>",
            "  <!-- ... your call flow: <Dial>, <Connect><Stream> to a voice agent, ... -->",
            "</Response>",
        ]
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    import uvloop

    from api import logs
    from api.app import create_app
    from api.metrics import serve_alone
    from api.wsprotocol import LosslessWebSocketProtocol

    settings = Settings.from_env()
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if not settings.api_keys:
        key = _local_key(settings.data_dir)
        overrides["api_keys"] = {key: "default"}
        log.info(
            "no MISE_API_KEYS set: using the local key in %s (tenant 'default')",
            settings.data_dir / "api_key",
        )
    settings = Settings(**{**settings.__dict__, **overrides})
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=LosslessWebSocketProtocol,
        ws_max_size=1 << 20,  # a Twilio message is ~300 bytes; bigger frames close the socket (1009)
        # No permessage-deflate: base64 mu-law barely compresses, inflating every 20 ms message costs CPU,
        # and frames without it are parsed by api/wsprotocol.py's own parser.
        ws_per_message_deflate=False,
        log_level="info",
        timeout_graceful_shutdown=15,  # a stop never hangs on a connection that will not close
    )
    server = uvicorn.Server(config)
    config.load()  # configures uvicorn's loggers now, so the filter lands on their handlers
    logs.install()

    async def end_streams_on_stop() -> None:
        """uvicorn waits for open responses before it stops; SSE streams never end by themselves."""
        while not server.should_exit:
            await asyncio.sleep(0.1)
        close = getattr(app.state, "close_streams", None)
        if close is not None:
            close()

    async def run() -> None:
        watcher = asyncio.create_task(end_streams_on_stop())
        demo = asyncio.create_task(_play_demo(server, settings, args.demo_speed)) if args.demo else None
        alone = None
        if settings.metrics_port is not None:
            alone = await serve_alone(app.state.metrics, settings.metrics_host, settings.metrics_port)
            log.info(
                "metrics on http://%s:%d/metrics (not on the API port)", settings.metrics_host, settings.metrics_port
            )
        await server.serve()
        watcher.cancel()
        if demo is not None:
            demo.cancel()
        if alone is not None:
            alone.close()

    # uvloop (uvicorn[standard] brings it): the same asyncio API, a fraction of the CPU per socket read.
    # Thousands of 20 ms media messages a second make the event loop's own overhead a large part of
    # this process's cost (bench/ingest.py).
    uvloop.run(run())
    return 0


def _local_key(data_dir: Path) -> str:
    """A per-install key, created once (mode 600), so a fresh `mise serve` is never open to anyone."""
    path = data_dir / "api_key"
    if not path.exists() or not path.read_text().strip():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


async def _play_demo(server: object, settings: Settings, speed: float) -> None:
    from api.simulate import messages_from_tracks, play, read_ulaw_track

    while not getattr(server, "started", False):
        await asyncio.sleep(0.05)
    demo = resources.files("api") / "demo"
    with (
        resources.as_file(demo / "inbound.wav") as inbound,
        resources.as_file(demo / "outbound.wav") as outbound,
    ):
        messages = messages_from_tracks(
            read_ulaw_track(inbound), read_ulaw_track(outbound), custom_parameters=DEMO_PARAMETERS
        )
    key = next(iter(settings.api_keys))
    messages[1]["start"]["customParameters"]["api_key"] = key
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"ws://{host}:{settings.port}/v1/stream/twilio"
    base = f"http://{host}:{settings.port}"
    log.info("demo: streaming a sample call in real time to %s; watch %s/v1/calls?api_key=...", url, base)
    result = await play(url, messages, speed=speed)
    log.info("demo: call %s streamed (%d frames, %.1f s)", result.call_sid, result.media_sent, result.seconds)


async def _simulate(args: argparse.Namespace) -> int:
    from api.simulate import load_jsonl, messages_from_tracks, play, read_ulaw_track, with_fresh_sids

    if args.capture:
        source = load_jsonl(args.capture)
    elif args.inbound:
        outbound = read_ulaw_track(args.outbound) if args.outbound else None
        source = messages_from_tracks(read_ulaw_track(args.inbound), outbound)
    else:
        raise ConfigError("give a .jsonl capture or --inbound WAV")

    async def one(i: int) -> None:
        await asyncio.sleep(i * args.stagger)
        result = await play(
            args.url,
            with_fresh_sids(source, api_key=args.api_key),
            speed=args.speed,
            skip_silence=args.skip_silence,
        )
        print(
            f"call {result.call_sid}: {result.media_sent} media frames sent, {result.skipped} silent skipped,"
            f" {result.seconds:.1f} s, server closed with {result.close_code}"
        )

    await asyncio.gather(*(one(i) for i in range(args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
