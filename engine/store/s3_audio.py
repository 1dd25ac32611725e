"""Recordings in S3 or any S3-compatible object storage (boto3): for clusters, where API processes on
several machines must read each other's closed recordings.

One object per closed track file, under ``prefix`` + the recording key. Reads are ranged GETs, so a
player seeking in a long call fetches only what it plays. Credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role); ``endpoint`` points
it at an S3-compatible service instead of AWS. The bucket must exist.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from engine.store.audio import SUFFIX


class S3Audio:
    name = "s3"
    local_root: Path | None = None

    def __init__(self, bucket: str, *, prefix: str = "recordings/", endpoint: str | None = None) -> None:
        import boto3  # only with object storage configured
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._local = threading.local()  # boto3 clients are not meant to be shared across threads
        config = Config(retries={"max_attempts": 5, "mode": "standard"})
        self._make: Any = lambda: boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        self._client().head_bucket(Bucket=bucket)  # fail at start-up, not at the first call's end

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
        return client

    def put(self, key: str, path: Path) -> None:
        self._client().upload_file(str(path), self.bucket, self.prefix + key)
        path.unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self._client().head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read(self, key: str, start: int, end: int) -> bytes:
        from botocore.exceptions import ClientError

        if end <= start:
            return b""
        try:
            answer = self._client().get_object(
                Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{end - 1}"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "InvalidRange", "416"):
                return b""
            raise
        data: bytes = answer["Body"].read()
        return data

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        paginator = self._client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            names = [item["Key"] for item in page.get("Contents", [])]
            out += [name[len(self.prefix) :] for name in names if name.endswith(SUFFIX)]
        return sorted(out)

    def delete(self, prefix: str) -> int:
        keys = self.keys(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[i : i + 1000]]
            self._client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)
