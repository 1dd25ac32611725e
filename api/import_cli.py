"""``mise import``: bring existing recordings in, each as a finished call of a tenant, through a running server.

Sources:
- a folder: every audio file in it is one call (one channel: the caller; two: caller then agent, as
  Twilio's dual-channel recordings), except pairs named ``NAME.inbound.EXT`` + ``NAME.outbound.EXT``,
  which are one call's two mono tracks;
- a manifest (``.csv`` with a header, or ``.jsonl``): per call ``file`` (one file) or ``inbound`` and
  ``outbound`` (two mono tracks), and optionally ``call_sid``, ``from``, ``to``, ``direction``,
  ``started_at`` (ISO 8601 UTC). Relative paths are read from the manifest's folder.

Each call is uploaded to ``POST /v1/calls/import`` (the server analyses it on its Ray cluster), up to
``--parallel`` at a time, with a progress line. It is resumable: every call done is written to a journal
(``--journal``, by default next to the source), and a call the server already has answers 409, so a run
killed halfway and started again finishes without duplicates. A call whose upload fails is reported
with its reason and left for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".opus"}
QUERY_KEYS = ("call_sid", "from", "to", "direction", "started_at")


@dataclass
class Job:
    key: str  # what the journal remembers it by: its source paths and call_sid
    files: list[Path]  # one file, or the inbound and outbound tracks
    meta: dict[str, str] = field(default_factory=dict)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="index existing recordings as finished calls (through a running server)")
    p.add_argument("source", help="a folder of recordings, or a manifest (.csv or .jsonl)")
    p.add_argument("--url", default=os.environ.get("MISE_URL", "http://127.0.0.1:8000"), help="the Mise server")
    p.add_argument("--api-key", default=os.environ.get("MISE_API_KEY"), help="the tenant's key (MISE_API_KEY)")
    p.add_argument("--parallel", type=int, default=max(1, os.cpu_count() or 1), help="uploads at a time")
    p.add_argument("--journal", help="where finished calls are noted (default: .mise-import.jsonl by the source)")
    p.add_argument("--swap", action="store_true", help="two-channel files hold the agent first")


def jobs_of(source: Path) -> list[Job]:
    if source.is_dir():
        return _folder(source)
    if source.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(source.read_text())))
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [orjson.loads(line) for line in source.read_bytes().splitlines() if line.strip()]
    else:
        raise ValueError(f"{source}: give a folder, a .csv or a .jsonl manifest")
    out = []
    for n, row in enumerate(rows, 1):
        row = {k.strip().lower(): str(v).strip() for k, v in row.items() if v not in (None, "")}
        names = [row["file"]] if "file" in row else [row[k] for k in ("inbound", "outbound") if k in row]
        if not names or ("file" not in row and "inbound" not in row):
            raise ValueError(f"{source}: row {n} needs 'file', or 'inbound' (and 'outbound')")
        files = [p if p.is_absolute() else source.parent / p for p in map(Path, names)]
        meta = {k: row[k] for k in QUERY_KEYS if k in row}
        out.append(Job(f"{'+'.join(map(str, files))}#{meta.get('call_sid', n)}", files, meta))
    return out


def _folder(folder: Path) -> list[Job]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO)
    pairs: dict[str, dict[str, Path]] = {}
    singles = []
    for p in files:
        stem, _, role = p.stem.rpartition(".")
        if role in ("inbound", "outbound") and stem:
            pairs.setdefault(stem, {})[role] = p
        else:
            singles.append(p)
    jobs = [Job(str(p), [p]) for p in singles]
    for stem, pair in sorted(pairs.items()):
        if "inbound" not in pair:
            raise ValueError(f"{folder}: {stem}.outbound has no {stem}.inbound")
        tracks = [pair["inbound"]] + ([pair["outbound"]] if "outbound" in pair else [])
        jobs.append(Job("+".join(map(str, tracks)), tracks))
    return jobs


def upload_body(job: Job) -> bytes:
    """One file as it is; two mono tracks as one two-channel 8 kHz mu-law WAV (what the server keeps)."""
    if len(job.files) == 1:
        return job.files[0].read_bytes()
    from api.simulate import read_ulaw_track, ulaw_wav

    caller, agent = (read_ulaw_track(p) for p in job.files)
    n = max(len(caller), len(agent))
    return ulaw_wav([caller.ljust(n, b"\xff"), agent.ljust(n, b"\xff")])


class Progress:
    def __init__(self, total: int, done: int) -> None:
        self.total, self.done, self.new, self.already, self.failed = total, done, 0, 0, 0
        self.audio_ms = 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def line(self, final: bool = False) -> None:
        elapsed = max(1e-6, time.monotonic() - self.t0)
        rate = self.audio_ms / 60_000 / (elapsed / 60)
        left = self.total - self.done
        eta = f" · ETA {left * elapsed / self.new / 60:.1f} min" if self.new and left else ""
        text = (
            f"[{self.done}/{self.total}] {self.new} imported, {self.already} already there, {self.failed} failed"
            f" · {rate:.2f} call-min per wall-min{eta}"
        )
        if self.tty and not final:
            print("\r" + text, end="", file=sys.stderr, flush=True)
        elif final or self.done % 10 == 0:
            print(("\r" if self.tty else "") + text, file=sys.stderr, flush=True)


async def run_import(args: argparse.Namespace) -> int:
    import httpx

    source = Path(args.source)
    if not source.exists():
        print(f"mise import: no such file or folder: {source}", file=sys.stderr)
        return 2
    if not args.api_key:
        print("mise import: give the tenant's key (--api-key or MISE_API_KEY)", file=sys.stderr)
        return 2
    try:
        jobs = jobs_of(source)
    except (OSError, ValueError, KeyError) as exc:
        print(f"mise import: {exc}", file=sys.stderr)
        return 2
    journal = (
        Path(args.journal)
        if args.journal
        else (source if source.is_dir() else source.parent)
        / (".mise-import-" + hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8] + ".jsonl")
    )
    finished = set()
    if journal.exists():
        finished = {orjson.loads(line)["key"] for line in journal.read_bytes().splitlines() if line.strip()}
    todo = [j for j in jobs if j.key not in finished]
    progress = Progress(len(jobs), len(jobs) - len(todo))
    print(f"mise import: {len(jobs)} calls, {len(jobs) - len(todo)} done before (journal {journal})", file=sys.stderr)
    failures: list[str] = []
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in todo:
        queue.put_nowait(job)

    async def worker(client: httpx.AsyncClient, out: Any) -> None:
        while not queue.empty():
            job = queue.get_nowait()
            try:
                body = await asyncio.to_thread(upload_body, job)
                params = dict(job.meta) | ({"swap": "1"} if args.swap else {})
                r = await client.post("/v1/calls/import", params=params, content=body)
            except (OSError, ValueError, httpx.HTTPError) as exc:
                progress.failed += 1
                failures.append(f"{job.key}: {type(exc).__name__}: {exc}")
                continue
            if r.status_code == 201:
                progress.new += 1
                progress.audio_ms += int(r.json()["duration_ms"])
            elif r.status_code == 409 and r.json().get("error") == "already imported":
                progress.already += 1
            elif r.status_code == 409 and "being imported now" in r.text:  # a run killed meanwhile left it going
                await asyncio.sleep(2.0)
                queue.put_nowait(job)
                continue
            else:
                progress.failed += 1
                failures.append(f"{job.key}: HTTP {r.status_code}: {r.text[:200]}")
                continue
            call_sid = r.json().get("call_sid")
            out.write(orjson.dumps({"key": job.key, "call_sid": call_sid}) + b"\n")
            out.flush()
            progress.done += 1
            progress.line()

    headers = {"Authorization": f"Bearer {args.api_key}"}
    async with httpx.AsyncClient(base_url=args.url.rstrip("/"), headers=headers, timeout=600) as client:
        with open(journal, "ab") as out:
            await asyncio.gather(*(worker(client, out) for _ in range(max(1, args.parallel))))
    progress.line(final=True)
    for failure in failures:
        print(f"mise import: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0
