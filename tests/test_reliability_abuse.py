"""Abuse of a real server process (`app.server.run`, as `lpgnet serve` runs it): decompression bombs,
degenerate audio, ids made only of dots, connections that idle or trickle, and what /metrics and
/model show with API keys set.

One server for the whole module (its start is most of the cost), with API keys, second-scale
timeouts and a separate metrics port.
"""

from __future__ import annotations

import io
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.metrics import CONVERSATION_GAUGES
from tests.app_fixtures import TEST_KEY_A, TEST_KEY_B
from tests.reliability_support import (
    ServerProcess,
    assert_problem,
    audio_file,
    free_port,
    server_env,
    tone,
)

URL = "/conversations/{cid}/utterances"
A = {"Authorization": f"Bearer {TEST_KEY_A}"}
B = {"Authorization": f"Bearer {TEST_KEY_B}"}
IDLE_S = 1.0
BODY_S = 1.0


@pytest.fixture(scope="module")
def server(make_settings: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = make_settings(
        api_keys=[TEST_KEY_A, TEST_KEY_B],
        idle_timeout_s=IDLE_S,
        body_timeout_s=BODY_S,
        metrics_port=free_port(),
    )
    process = ServerProcess(server_env(settings), tmp_path_factory.mktemp("abuse") / "server.log")
    try:
        process.wait_ready()
        process.metrics_port = settings.metrics_port  # type: ignore[attr-defined]
        yield process
    finally:
        process.close()


def post_audio(url: str, cid: str, audio: bytes, *, headers: dict[str, str] = A) -> httpx.Response:
    files = {"audio": ("clip", audio, "application/octet-stream")}
    return httpx.post(url + URL.format(cid=cid), files=files, headers=headers, timeout=60)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the most resident memory the process has ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def flac_of_silence(sample_rate: int, channels: int, seconds: float) -> bytes:
    """A real FLAC of digital silence, written block by block: tiny encoded, huge decoded."""
    buf = io.BytesIO()
    block = np.zeros((65_536, channels), np.int16)
    left = int(sample_rate * seconds)
    with sf.SoundFile(
        buf, "w", samplerate=sample_rate, channels=channels, format="FLAC", subtype="PCM_16"
    ) as f:
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bombs() -> list[bytes]:
    # the issue's: 8 channels at 655,350 Hz (FLAC's highest rate) for 59 s: 330 KB that decode to
    # 309 M samples (1.2 GB as float32); and one within the rate bound: 8 x 96 kHz x 59 s (45 M samples)
    return [flac_of_silence(655_350, 8, 59), flac_of_silence(96_000, 8, 59)]


# ---- decompression bombs: POST /conversations/{id}/utterances --------------------------------------------


def test_a_burst_of_decompression_bombs_is_refused_before_decoding_and_spares_memory_and_neighbours(
    server: Any, bombs: list[bytes]
) -> None:
    assert len(bombs[0]) < 400_000  # small enough for any body limit

    def neighbour_latencies(n: int) -> list[float]:
        took = []
        with httpx.Client(base_url=server.url, headers=B, timeout=60) as client:
            for i in range(n):
                started = time.perf_counter()
                r = client.post(URL.format(cid="neighbour"), json={"transcript": f"just a line {i}"})
                took.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
        return took

    baseline = statistics.median(neighbour_latencies(8))
    peak_before = peak_rss_bytes(server.proc.pid)
    with ThreadPoolExecutor(6) as pool:
        burst = [pool.submit(post_audio, server.url, f"bomb-{i}", bombs[i % 2]) for i in range(6)]
        during = neighbour_latencies(8)
        answers = [f.result() for f in burst]
    for r in answers[0::2]:  # the rate is read from the header: refused without decoding a sample
        body = assert_problem(r, 422, slug="audio-out-of-bounds")
        assert "655350 Hz" in body["detail"]
    for r in answers[1::2]:  # rate x channels x frames from the header: over max_audio_samples
        body = assert_problem(r, 413, slug="audio-too-large")
        assert "96000 Hz x 8 channels x 5664000 frames" in body["detail"]
    growth = peak_rss_bytes(server.proc.pid) - peak_before
    print(
        f"\npeak RSS growth {growth / 2**20:.1f} MiB; neighbour median {baseline * 1000:.1f} ms before, "
        f"{statistics.median(during) * 1000:.1f} ms (max {max(during) * 1000:.1f} ms) during the burst"
    )
    assert growth < 64 * 2**20  # decoding one bomb would add 1.2 GB
    # the neighbour is not slowed (a decoding bomb slowed it 200x); loose for a shared 2-core machine
    assert statistics.median(during) < max(5 * baseline, 0.25), (baseline, during)
    for i in range(6):  # nothing stored for any of them
        assert_problem(httpx.get(server.url + f"/conversations/bomb-{i}", headers=A), 404)


# ---- degenerate audio: POST /conversations/{id}/utterances -----------------------------------------------


def wav_header_claiming(data_size: int, body: bytes) -> bytes:
    import struct

    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    chunks = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size) + body
    )
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + chunks


DEGENERATE = [
    (
        "wav-claiming-4-gb-with-a-2-byte-body",
        wav_header_claiming(0xFFFFFFFE, b"\x01\x00"),
        422,
        "audio-too-short",
    ),
    ("one-sample", audio_file(np.full(1, 0.1), 16_000), 422, "audio-too-short"),
    ("ten-milliseconds", audio_file(tone(0.01, 16_000), 16_000), 422, "audio-too-short"),
    (
        "8-channels-at-192-khz-float",
        audio_file(tone(0.2, 192_000, 8), 192_000, subtype="FLOAT"),
        422,
        "audio-out-of-bounds",
    ),
    ("9-channels", audio_file(tone(0.2, 16_000, 9), 16_000), 422, "audio-out-of-bounds"),
]


@pytest.mark.parametrize(
    ("audio", "status", "slug"), [c[1:] for c in DEGENERATE], ids=[c[0] for c in DEGENERATE]
)
def test_degenerate_audio_is_refused_with_its_bound_and_stores_nothing(
    server: Any, audio: bytes, status: int, slug: str
) -> None:
    assert_problem(post_audio(server.url, "degenerate", audio), status, slug=slug)
    assert_problem(httpx.get(server.url + "/conversations/degenerate", headers=A), 404)


def test_audio_at_the_bounds_is_scored(server: Any) -> None:
    for audio in (audio_file(tone(0.05, 16_000), 16_000), audio_file(tone(0.2, 96_000, 8), 96_000)):
        r = post_audio(server.url, "bounds", audio)
        assert r.status_code == 200, r.text


# ---- ids made only of dots: POST /conversations/{id}/utterances, raw on the wire -------------------------


def raw_request(port: int, head: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send bytes as they are (no client normalising the path) and read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65_536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("cid", ["..", "%2e%2e", "%2E%2E", ".", "...", "%2e"])
def test_a_conversation_id_made_only_of_dots_is_refused(server: Any, cid: str) -> None:
    body = b'{"transcript": "hi"}'
    answer = raw_request(
        server.port,
        f"POST /conversations/{cid}/utterances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 422 "), answer
    assert b"application/problem+json" in answer and b"conversation_id" in answer


# ---- idle connections and slow bodies -----------------------------------------------------------------


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed it: EOF, or a reset where our unread bytes were still in its buffer (a timeout
    waiting for either raises)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_connections_that_send_nothing_or_trickle_headers_are_closed_after_the_idle_timeout(
    server: Any,
) -> None:
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)]
    trickling = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stop = threading.Event()

    def trickle() -> None:  # a slowloris: a header byte every 0.2 s, never the end of the head
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                trickling.sendall(bytes([byte]))
        except OSError:
            return

    started = time.monotonic()
    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        for sock in [*silent, trickling]:
            assert closed_by_server(sock)
        elapsed = time.monotonic() - started
        assert IDLE_S * 0.8 < elapsed < IDLE_S + 3, elapsed
    finally:
        stop.set()
        thread.join()
        for sock in [*silent, trickling]:
            sock.close()
    # a keep-alive connection is closed the same way once its response is sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"ok"' not in first:  # the whole response: {"status":"ok"}
            first += sock.recv(65_536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        assert closed_by_server(sock)
    assert httpx.get(server.url + "/health").status_code == 200  # the server serves on


def test_a_body_trickled_in_gets_a_408_problem(server: Any) -> None:
    head = (
        f"POST /conversations/slow/utterances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_KEY_A}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        try:
            for _ in range(200):  # 1 byte per 0.1 s: 20 s for the whole body
                sock.sendall(b" ")
                time.sleep(0.1)
        except OSError:  # the server answered and closed while we were still sending
            pass
        while chunk := sock.recv(65_536):
            answer += chunk
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"application/problem+json" in answer and b"request-timeout" in answer
    assert elapsed < BODY_S + 4, elapsed
    assert_problem(httpx.get(server.url + "/conversations/slow", headers=A), 404)


# ---- GET /metrics and /model with API keys ---------------------------------------------------------------


def test_metrics_and_model_need_a_key_and_no_key_sees_conversation_counts(server: Any) -> None:
    for path in ("/metrics", "/model"):
        assert_problem(httpx.get(server.url + path), 401)
        assert_problem(
            httpx.get(server.url + path, headers={"Authorization": "Bearer wrong-key-0123456789"}), 401
        )
    assert httpx.get(server.url + "/model", headers=A).json()["labels"]
    assert (
        httpx.post(server.url + URL.format(cid="counted"), json={"transcript": "hi"}, headers=A).status_code
        == 200
    )
    for headers in (A, B):
        text = httpx.get(server.url + "/metrics", headers=headers).text
        assert "lpgnet_requests_total" in text  # service metrics, by route template only
        assert not [gauge for gauge in CONVERSATION_GAUGES if gauge in text]  # counts, evictions, bytes
        assert "counted" not in text
    # the scraper's own port: everything, no key, nothing of the API
    port = server.metrics_port
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "lpgnet_active_conversations" in scraped and "lpgnet_requests_total" in scraped
    active = [line for line in scraped.splitlines() if line.startswith("lpgnet_active_conversations ")]
    assert active and float(active[0].split()[1]) >= 1
    elsewhere = httpx.get(f"http://127.0.0.1:{port}/conversations/counted")
    assert elsewhere.status_code == 404 and elsewhere.headers["content-type"] == "application/problem+json"
