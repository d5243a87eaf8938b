"""Security: hashed constant-time API keys, one id space per key (no key can reach or detect another's
conversation), body limits before the body is read, no raw audio on disk or in Redis, no transcript or
audio in the logs, a non-root container.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

import app.security
from app.exceptions import Unauthorized
from app.main import create_app
from app.security import ApiKeys
from model.paths import REPO_ROOT
from tests.app_fixtures import TEST_KEY_A, TEST_KEY_B
from tests.reliability_support import asgi_client, assert_problem, audio_file

URL = "/conversations/{cid}/utterances"
A = {"Authorization": f"Bearer {TEST_KEY_A}"}
B = {"Authorization": f"Bearer {TEST_KEY_B}"}
MARKER = "zz-confidential-words-zz"


def recognisable_audio(seconds: float = 1.0, seed: int = 7) -> bytes:
    """Noise no other test sends: any 64-byte slice of its samples identifies it."""
    rng = np.random.default_rng(seed)
    return audio_file(0.3 * rng.uniform(-1, 1, int(16_000 * seconds)), 16_000)


def sample_slices(audio: bytes) -> list[bytes]:
    data = audio[44:]
    return [data[i : i + 64] for i in range(0, len(data) - 64, max(1, len(data) // 16))]


# ---- API keys ---------------------------------------------------------------------------------------


def test_api_keys_are_kept_only_as_hashes() -> None:
    keys = ApiKeys([SecretStr(TEST_KEY_A), SecretStr(TEST_KEY_B)])
    kept = repr(vars(keys)).encode() + b"".join(getattr(keys, "_digests", []))
    for key in (TEST_KEY_A, TEST_KEY_B):
        assert key not in repr(vars(keys)) and key.encode() not in kept
    assert keys.namespace_for(TEST_KEY_A) != keys.namespace_for(TEST_KEY_B)
    # the namespace (which names stored data) is not the digest that authenticates
    assert all(keys.namespace_for(TEST_KEY_A).encode() not in d.hex().encode() for d in keys._digests)


def test_every_key_is_compared_in_constant_time_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ApiKeys([SecretStr(k) for k in (TEST_KEY_A, TEST_KEY_B, "key-c-0123456789abcdef")])
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(app.security.hmac, "compare_digest", counting_compare)
    for presented in (TEST_KEY_A, TEST_KEY_B, "key-c-0123456789abcdef", "wrong", "x" * 10_000):
        calls.clear()
        with contextlib.suppress(Unauthorized):
            keys.namespace_for(presented)
        # no early exit and no length leak: three comparisons of equal-length digests, every time
        assert calls == [(32, 32)] * 3


# ---- one id space per key: GET, DELETE /conversations/{id} and POST .../utterances -----------------------


@pytest.fixture
def keyed_client(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient], store_settings: dict[str, Any]
) -> TestClient:
    return start_client(make_settings(api_keys=f"{TEST_KEY_A},{TEST_KEY_B}", **store_settings))


def comparable(problem: dict[str, Any], cid: str) -> dict[str, Any]:
    """A problem body without what names the request: what is left must not depend on existence."""
    return {k: str(v).replace(cid, "<id>") for k, v in problem.items() if k not in ("instance", "request_id")}


def test_key_b_can_neither_reach_nor_detect_key_a_conversations(keyed_client: TestClient) -> None:
    client = keyed_client
    body = {"transcript": f"my account number is {MARKER}", "utterance_id": "u1"}
    a_answer = client.post(URL.format(cid="call-1"), json=body, headers=A).json()
    a_before = client.get("/conversations/call-1", headers=A).json()

    # read and delete: the same 404 as for a conversation that never existed
    for method in ("GET", "DELETE"):
        theirs = assert_problem(client.request(method, "/conversations/call-1", headers=B), 404)
        nobodys = assert_problem(client.request(method, "/conversations/never-was", headers=B), 404)
        assert comparable(theirs, "call-1") == comparable(nobodys, "never-was")
    # post: B's own call-1, not A's; A's answer is not replayed to B, nor is its utterance_id a conflict
    r = client.post(URL.format(cid="call-1"), json=body, headers=B)
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert r.json()["index"] == 0
    r = client.post(URL.format(cid="call-1"), json={**body, "transcript": "something else"}, headers=B)
    assert_problem(r, 409)  # B's own u1, not A's
    b_view = client.get("/conversations/call-1", headers=B).json()
    assert b_view["utterance_count"] == 1 and MARKER not in str(b_view)
    assert client.delete("/conversations/call-1", headers=B).status_code == 204
    # A's conversation never moved
    assert client.get("/conversations/call-1", headers=A).json() == a_before
    retry = client.post(URL.format(cid="call-1"), json=body, headers=A)
    assert retry.json() == a_answer and retry.headers["idempotent-replayed"] == "true"
    # without a key, or with a wrong one, nobody gets anything but 401
    for headers in ({}, {"Authorization": "Bearer not-a-key-at-all-0000"}):
        assert_problem(client.get("/conversations/call-1", headers=headers), 401)


def test_redis_keys_name_no_api_key_and_differ_per_key(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    redis_url: str,
    redis_prefix: str,
) -> None:
    import redis

    client = start_client(
        make_settings(api_keys=f"{TEST_KEY_A},{TEST_KEY_B}", redis_url=redis_url, redis_prefix=redis_prefix)
    )
    for headers in (A, B):
        assert (
            client.post(URL.format(cid="same-id"), json={"transcript": "hi"}, headers=headers).status_code
            == 200
        )
    with redis.Redis.from_url(redis_url) as raw:
        names = [k.decode() for k in raw.scan_iter(match=f"{redis_prefix}*")]
    conversations = {n.rsplit(":", 1)[0] for n in names if ":c:" in n}
    assert len(conversations) == 2  # one per key, under the same id
    assert not any(TEST_KEY_A in n or TEST_KEY_B in n for n in names)


def test_openapi_states_the_bearer_key_only_when_keys_are_configured(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    route = "/conversations/{conversation_id}/utterances"
    open_spec = start_client(make_settings()).get("/openapi.json").json()
    assert "security" not in open_spec["paths"][route]["post"]
    keyed_spec = start_client(make_settings(api_keys=TEST_KEY_A)).get("/openapi.json").json()
    assert keyed_spec["paths"][route]["post"]["security"] == [{"HTTPBearer": []}]


# ---- request size, before the body is read: POST /conversations/{id}/utterances --------------------------


@pytest.mark.asyncio
async def test_an_oversized_body_is_refused_before_it_is_read(make_settings: Callable[..., Any]) -> None:
    limit = 64 * 1024
    app = create_app(make_settings(max_request_bytes=limit))
    async with asgi_client(app):  # the lifespan runs: the route would read a body it was given

        async def call(headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int]:
            pulled = 0

            async def receive() -> dict[str, Any]:
                nonlocal pulled
                pulled += 1
                return {"type": "http.request", "body": b"x" * 4096, "more_body": pulled < chunks}

            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/conversations/c/utterances",
                "raw_path": b"/conversations/c/utterances",
                "query_string": b"",
                "root_path": "",
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
                "state": {},
            }
            await app(scope, receive, send)
            return sent[0]["status"], pulled

        # a declared length over the limit: refused without reading one byte
        assert await call([(b"content-length", str(50 * 2**20).encode())], chunks=12_800) == (413, 0)
        # no declared length (chunked): reading stops at the limit, not at the end of 50 MiB
        status, pulled = await call([], chunks=12_800)
        assert status == 413 and pulled <= limit // 4096 + 1


# ---- raw audio never written to disk or to Redis -------------------------------------------------------

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_watch: list[list[str]] = []  # while a list is in here, files opened for writing are recorded in it


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _watch:
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITING)
        if writes:
            _watch[-1].append(str(path))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one does nothing unless _watch is set


@pytest.fixture
def files_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Paths this process opens for writing while the test runs; cwd and TMPDIR are empty tmp dirs."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    opened: list[str] = []
    _watch.append(opened)
    try:
        yield opened
    finally:
        _watch.remove(opened)
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


def test_uploaded_audio_is_never_written_to_disk(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient], files_written: list[str]
) -> None:
    """Over 1 MiB, Starlette's form parser would spool the file part to a temporary file."""
    client = start_client(make_settings(max_request_bytes=4 * 2**20))
    audio = recognisable_audio(seconds=40.0)  # 1.25 MiB
    assert len(audio) > 2**20
    files_written.clear()  # start-up may open files (encoder directories); the requests may not
    r = client.post(
        URL.format(cid="c"), data={"transcript": "hi"}, files={"audio": ("a.wav", audio, "audio/wav")}
    )
    assert r.status_code == 200, r.text
    r = client.post(URL.format(cid="c"), json={"audio_base64": base64.b64encode(audio).decode()})
    assert r.status_code == 200, r.text
    assert files_written == []


@pytest.mark.parametrize("store_transcripts", [False, True])
def test_redis_holds_no_raw_audio_and_no_transcript_unless_asked(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    redis_url: str,
    redis_prefix: str,
    store_transcripts: bool,
) -> None:
    import redis

    client = start_client(
        make_settings(redis_url=redis_url, redis_prefix=redis_prefix, store_transcripts=store_transcripts)
    )
    audio = recognisable_audio()
    for i, send in enumerate(("multipart", "json")):
        if send == "multipart":
            r = client.post(
                URL.format(cid="c"),
                data={"transcript": MARKER, "utterance_id": f"u{i}"},
                files={"audio": ("a.wav", audio, "audio/wav")},
            )
        else:
            r = client.post(
                URL.format(cid="c"),
                json={
                    "transcript": MARKER,
                    "utterance_id": f"u{i}",
                    "audio_base64": base64.b64encode(audio).decode(),
                },
            )
        assert r.status_code == 200, r.text
    stored: list[bytes] = []
    with redis.Redis.from_url(redis_url) as raw:
        for key in raw.scan_iter(match=f"{redis_prefix}*"):
            stored.append(key)
            kind = raw.type(key)
            if kind == b"hash":
                for field, value in raw.hgetall(key).items():
                    stored += [field, value]
            elif kind == b"zset":
                stored += [m for m, _ in raw.zrange(key, 0, -1, withscores=True)]
            elif kind == b"string":
                stored.append(raw.get(key) or b"")
            else:
                pytest.fail(f"unexpected key type {kind!r} at {key!r}")
    blob = b"\x00".join(stored)
    assert not any(piece in blob for piece in sample_slices(audio))
    assert base64.b64encode(audio)[100:164] not in blob
    assert audio[:44] not in blob  # not even the header
    assert len(blob) < 10_000  # two utterances: vectors, metadata, predictions; a second of audio is 32 KB
    assert (MARKER.encode() in blob) is store_transcripts


# ---- nothing said in the logs ----------------------------------------------------------------------------


def test_no_transcript_or_audio_reaches_the_logs_at_debug_level(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("app", "model", "python_multipart", "multipart", "starlette", "fastapi", "httpx", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = start_client(make_settings(api_keys=TEST_KEY_A))
    audio = recognisable_audio()
    b64 = base64.b64encode(audio).decode()
    requests: list[Callable[[], httpx.Response]] = [
        lambda: client.post(
            URL.format(cid="c"),
            headers=A,
            data={"transcript": MARKER, "speaker": MARKER},
            files={"audio": ("a.wav", audio, "audio/wav")},
        ),
        lambda: client.post(URL.format(cid="c"), headers=A, json={"transcript": MARKER, "audio_base64": b64}),
        # refused ones: validation, undecodable audio, conflicts, bad keys
        lambda: client.post(URL.format(cid="c"), headers=A, json={"transcript": MARKER + "\x00"}),
        lambda: client.post(URL.format(cid="c"), headers=A, json={"transcript": MARKER, "mood": MARKER}),
        lambda: client.post(
            URL.format(cid="c"), headers=A, files={"audio": ("a.wav", MARKER.encode() * 9, "x/y")}
        ),
        lambda: client.post(URL.format(cid="c"), headers=A, json={"audio_base64": b64[:-3] + "!!!"}),
        lambda: client.post(URL.format(cid="c"), headers={"Authorization": f"Bearer {MARKER}"}, json={}),
        lambda: client.post(URL.format(cid="c"), headers=A, json={"transcript": MARKER, "utterance_id": "u"}),
        lambda: client.post(
            URL.format(cid="c"), headers=A, json={"transcript": "other", "utterance_id": "u"}
        ),
        lambda: client.get("/conversations/c", headers=A),
    ]
    statuses = [request().status_code for request in requests]
    assert statuses == [200, 200, 422, 422, 415, 422, 401, 200, 409, 200]
    # and a crash inside the model, logged with its traceback
    engine = client.app.state.services.engine  # type: ignore[attr-defined]

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the network failed")

    monkeypatch.setattr(engine.workers, "network", crash)  # what serves LPGNet, PyTorch or onnxruntime
    assert client.post(URL.format(cid="c"), headers=A, json={"transcript": MARKER}).status_code == 500

    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # debug logging did run
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in caplog.records])
    for secret in (MARKER, b64[200:264], TEST_KEY_A):
        assert secret not in logged, f"{secret[:20]!r}... was logged"
    assert not any(piece.decode("latin-1") in logged for piece in sample_slices(audio))


# ---- the container -------------------------------------------------------------------------------------


def test_container_runs_as_a_non_root_user() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM\s", dockerfile, flags=re.M)
    final = stages[-1]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert users, "the final stage sets no USER: the container would run as root"
    user = users[-1]
    assert user not in ("root", "0") and not user.startswith(("0:", "root:"))
    # the user exists with a non-zero uid, and nothing after USER switches back
    assert re.search(rf"useradd\b[^\n]*--uid\s+([1-9]\d*)[^\n]*\b{re.escape(user)}\b", final)
    after = final[final.rindex("USER") :]  # steps after it run as that user (a build-time export)
    assert not re.search(r"\b(sudo|su)\b", after)
    assert "CMD" in final[final.rindex("USER") :]


@pytest.mark.slow
def test_the_dockerfile_build_time_warm_up_runs(tmp_path: Path) -> None:
    """The image starts the service once at build time, as its user, so the default checkpoint's LPGNet
    graph and numba's kernels are in the image (no Docker engine here: the same command runs against
    this checkout, with a fresh home directory and numba cache)."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    after_user = dockerfile[dockerfile.rindex("\nUSER ") :]  # the step runs as the service's user
    match = re.search(r"^RUN (python -m app\.prewarm)$", after_user, flags=re.M)
    assert match, "no build-time warm-up step in the Dockerfile"
    numba_dir = re.search(r"^ENV NUMBA_CACHE_DIR=/home/lpgnet/(\S+)$", after_user, flags=re.M)
    assert numba_dir, "numba's cache must be in the service user's home (site-packages is not writable)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LPGNET_", "XDG_", "NUMBA_"))}
    done = subprocess.run(
        [sys.executable, *match.group(1).split()[1:]],
        cwd=REPO_ROOT,
        env={**env, "HOME": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / numba_dir.group(1))},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / ".cache" / "lpgnet").glob("*.onnx")), "no LPGNet graph exported"
    assert list((tmp_path / numba_dir.group(1)).rglob("*.nbi")), "no numba kernel cached"


# ---- an asyncio variant of the isolation check under concurrency ---------------------------------------


@pytest.mark.asyncio
async def test_two_keys_posting_to_the_same_id_at_once_never_mix(make_settings: Callable[..., Any]) -> None:
    app_ = create_app(make_settings(api_keys=f"{TEST_KEY_A},{TEST_KEY_B}", batch_max_wait_ms=2))
    async with asgi_client(app_) as client:
        posts = [
            client.post(
                URL.format(cid="shared"),
                json={"transcript": f"{who} {i}", "utterance_id": f"{who}{i}"},
                headers=headers,
            )
            for i in range(10)
            for who, headers in (("a", A), ("b", B))
        ]
        assert {r.status_code for r in await asyncio.gather(*posts)} == {200}
        for who, headers in (("a", A), ("b", B)):
            conversation = (await client.get("/conversations/shared", headers=headers)).json()
            ids = [u["utterance_id"] for u in conversation["utterances"]]
            assert conversation["utterance_count"] == 10 and sorted(ids) == sorted(
                f"{who}{i}" for i in range(10)
            )
