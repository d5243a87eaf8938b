"""Bad input from software nobody here wrote, against the routes of tests/test_routes_conversations.py
(POST /conversations/{id}/utterances; GET and DELETE /conversations/{id} for ids): every case gets a
clear 4xx problem+json answer and leaves the conversation exactly as it was; the odd-but-valid cases
(silence, other rates, widths and channel counts, an over-long transcript) are accepted and scored.

Each refused request of those routes is written once, here; the route file keeps the ones that assert
something more (the 409 naming its id, a 415 detail without a path, a 413 before the body is read).

One app serves the whole module; each case gets its own conversation, seeded with one utterance, and
is checked by GET afterwards.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app_fixtures import wait_ready, wav_bytes
from tests.reliability_support import assert_problem, audio_file, tone

MAX_REQUEST_BYTES = 256 * 1024
MAX_AUDIO_SECONDS = 2.0
SECRET = "zz-private-words-zz"  # in bad payloads: must never come back in an error body

URL = "/conversations/{cid}/utterances"


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Any]) -> Iterator[TestClient]:
    settings = make_settings(max_request_bytes=MAX_REQUEST_BYTES, max_audio_seconds=MAX_AUDIO_SECONDS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture
def seeded(client: TestClient, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """A conversation of one utterance, named after the test case; its GET body."""
    cid = "case-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[-100:]
    r = client.post(URL.format(cid=cid), json={"transcript": "hello there", "utterance_id": "seed"})
    assert r.status_code == 200, r.text
    return cid, client.get(f"/conversations/{cid}").json()


def assert_unchanged(client: TestClient, cid: str, before: dict[str, Any]) -> None:
    after = client.get(f"/conversations/{cid}")
    assert after.status_code == 200
    assert after.json() == before


def wav_with_header(
    *,
    sample_rate: int = 16_000,
    channels: int = 1,
    bits: int = 16,
    fmt_tag: int = 1,
    data: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file written by hand, so that sizes can lie."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, sample_rate, sample_rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + body


def multipart(
    client: TestClient,
    cid: str,
    *,
    audio: bytes | None = None,
    filename: str = "clip.wav",
    mime: str = "audio/wav",
    **fields: Any,
) -> Any:
    files = {"audio": (filename, audio, mime)} if audio is not None else None
    return client.post(URL.format(cid=cid), data=fields, files=files)


def as_json(client: TestClient, cid: str, audio: bytes | None = None, **fields: Any) -> Any:
    body = dict(fields)
    if audio is not None:
        body["audio_base64"] = base64.b64encode(audio).decode()
    return client.post(URL.format(cid=cid), json=body)


def raw(client: TestClient, cid: str, content: bytes, content_type: str | None) -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(URL.format(cid=cid), content=content, headers=headers)


def float_wav_with(value: float) -> bytes:
    samples = tone(0.2, 16_000)
    samples[123, 0] = value
    return audio_file(samples, 16_000, subtype="FLOAT")


# ---- refused: POST /conversations/{id}/utterances --------------------------------------------------------

_VALID = wav_bytes(seconds=1.0, seed=1)
# what a browser sends for a form whose file input was left empty
BROWSER_FORM = (
    b'--b\r\nContent-Disposition: form-data; name="audio"; filename=""\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n\r\n"
    b'--b\r\nContent-Disposition: form-data; name="transcript"\r\n\r\nhi\r\n--b--\r\n'
)
_FULL_SCALE_PCM = wav_with_header(data=np.full(800, 0x7FFF, "<i2").tobytes())  # the loudest 16-bit PCM: valid

Post = Callable[[TestClient, str], Any]

# (case id, request), under the answer each must get: (status, problem type slug)
REFUSED: dict[tuple[int, str], list[tuple[str, Post]]] = {
    # degenerate audio: outside the documented bounds (min_audio_seconds, min/max_audio_sample_rate,
    # max_audio_channels, max_audio_samples)
    (422, "audio-too-short"): [
        (
            "wav-header-claiming-4-gb-with-a-2-byte-body",
            lambda c, cid: multipart(c, cid, audio=wav_with_header(data=b"\x01\x00", data_size=0xFFFFFFFE)),
        ),
        ("one-sample", lambda c, cid: multipart(c, cid, audio=audio_file(np.full(1, 0.1), 16_000))),
        ("ten-milliseconds", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.01, 16_000), 16_000))),
        (  # under min_audio_seconds, before the resampler would leave nothing
            "one-frame-at-48-khz-is-nothing-at-16",
            lambda c, cid: multipart(c, cid, audio=wav_with_header(sample_rate=48_000, data=b"\x10\x00")),
        ),
    ],
    (422, "audio-out-of-bounds"): [
        (
            "8-channels-at-192-khz-float",
            lambda c, cid: multipart(
                c, cid, audio=audio_file(tone(0.02, 192_000, 8), 192_000, subtype="FLOAT")
            ),
        ),
        ("9-channels", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.1, 16_000, 9), 16_000))),
        ("4-khz", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 4_000), 4_000))),
    ],
    (422, "invalid-audio"): [
        ("wav-of-zero-frames", lambda c, cid: multipart(c, cid, audio=wav_with_header(data=b""))),
        ("float-wav-nan", lambda c, cid: multipart(c, cid, audio=float_wav_with(np.nan))),
        ("float-wav-inf", lambda c, cid: multipart(c, cid, audio=float_wav_with(np.inf))),
        ("float-wav-minus-inf", lambda c, cid: as_json(c, cid, audio=float_wav_with(-np.inf))),
    ],
    # audio that cannot be read
    (415, "undecodable-audio"): [
        ("undecodable-bytes-as-wav", lambda c, cid: multipart(c, cid, audio=b"RIFF" + os.urandom(600))),
        ("text-as-wav-json", lambda c, cid: as_json(c, cid, audio=SECRET.encode() * 20)),
        ("wav-cut-in-header", lambda c, cid: multipart(c, cid, audio=_VALID[:30])),
        (
            "mp4-container",
            lambda c, cid: multipart(
                c,
                cid,
                audio=b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41" + os.urandom(400),
                filename="clip.m4a",
                mime="audio/mp4",
            ),
        ),
        (
            "webm-container",
            lambda c, cid: multipart(
                c,
                cid,
                audio=b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm" + os.urandom(400),
                filename="clip.webm",
                mime="audio/webm",
            ),
        ),
        (
            "wav-with-an-unknown-codec",
            lambda c, cid: multipart(c, cid, audio=wav_with_header(fmt_tag=0x1234, data=os.urandom(800))),
        ),
    ],
    (422, "truncated-audio"): [
        ("wav-cut-in-samples", lambda c, cid: multipart(c, cid, audio=_VALID[: 44 + 3000])),
        ("wav-cut-in-samples-json", lambda c, cid: as_json(c, cid, audio=_VALID[:-1], transcript="hi")),
    ],
    # limits
    (413, "audio-too-long"): [
        ("audio-over-the-duration-limit", lambda c, cid: multipart(c, cid, audio=wav_bytes(seconds=3.0))),
        (
            "audio-over-the-duration-limit-by-header",
            lambda c, cid: multipart(
                c, cid, audio=wav_with_header(sample_rate=8_000, data=bytes(2 * 8_000 * 3))
            ),
        ),
    ],
    (413, "request-too-large"): [
        ("body-over-the-size-limit", lambda c, cid: multipart(c, cid, audio=os.urandom(MAX_REQUEST_BYTES))),
        (
            "json-body-over-the-size-limit",
            lambda c, cid: as_json(c, cid, transcript="x", audio=bytes(MAX_REQUEST_BYTES)),
        ),
        (
            "chunked-body-over-the-size-limit",
            lambda c, cid: c.post(
                URL.format(cid=cid),
                content=iter([b"{" + b" " * 65_536] * 5),
                headers={"content-type": "application/json"},
            ),
        ),
    ],
    # content types
    (415, "unsupported-media-type"): [
        ("text-plain", lambda c, cid: raw(c, cid, b"transcript=hello", "text/plain")),
        ("no-content-type", lambda c, cid: raw(c, cid, b'{"transcript": "hello"}', None)),
        ("audio-wav-body", lambda c, cid: raw(c, cid, _VALID, "audio/wav")),
        ("xml", lambda c, cid: raw(c, cid, b"<transcript>hi</transcript>", "application/xml")),
    ],
    (422, "validation-error"): [
        # empty audio
        ("zero-length-audio-multipart", lambda c, cid: multipart(c, cid, audio=b"")),
        (
            "zero-length-audio-multipart-with-transcript",
            lambda c, cid: multipart(c, cid, audio=b"", transcript=SECRET),
        ),
        ("zero-length-audio-json", lambda c, cid: as_json(c, cid, audio=b"")),
        (
            "zero-length-audio-json-with-transcript",
            lambda c, cid: as_json(c, cid, audio=b"", transcript=SECRET),
        ),
        # transcripts and other text
        ("transcript-with-nul", lambda c, cid: as_json(c, cid, transcript=f"{SECRET}\x00after")),
        ("transcript-with-escape", lambda c, cid: as_json(c, cid, transcript=f"\x1b[31m{SECRET}")),
        ("transcript-with-c1-control", lambda c, cid: multipart(c, cid, transcript=f"{SECRET}\x85")),
        ("speaker-with-control", lambda c, cid: as_json(c, cid, transcript="hi", speaker="agent\x07")),
        (
            "transcript-not-utf8-json",
            lambda c, cid: raw(
                c, cid, b'{"transcript": "caf\xe9 ' + SECRET.encode() + b'"}', "application/json"
            ),
        ),
        (
            "transcript-lone-surrogate-json",
            lambda c, cid: raw(c, cid, b'{"transcript": "a \\ud800 b"}', "application/json"),
        ),
        (
            "transcript-not-utf8-multipart",
            lambda c, cid: c.post(
                URL.format(cid=cid), files={"transcript": (None, b"caf\xe9 " + SECRET.encode())}
            ),
        ),
        (
            "transcript-not-utf8-urlencoded",
            lambda c, cid: raw(c, cid, b"transcript=caf%E9", "application/x-www-form-urlencoded"),
        ),
        (
            "transcript-raw-bytes-urlencoded",
            lambda c, cid: raw(c, cid, b"transcript=caf\xc3\xa9", "application/x-www-form-urlencoded"),
        ),
        ("transcript-over-the-api-limit", lambda c, cid: as_json(c, cid, transcript="a" * 20_001)),
        # no modality
        ("empty-json-object", lambda c, cid: as_json(c, cid)),
        ("blank-transcript-only", lambda c, cid: as_json(c, cid, transcript=" \n\t ")),
        ("speaker-only-json", lambda c, cid: as_json(c, cid, speaker="caller")),
        ("speaker-only-multipart", lambda c, cid: multipart(c, cid, speaker="caller")),
        (
            "empty-multipart",
            lambda c, cid: c.post(
                URL.format(cid=cid),
                content=b"--b--\r\n",
                headers={"content-type": "multipart/form-data; boundary=b"},
            ),
        ),
        ("audio-null-only", lambda c, cid: raw(c, cid, b'{"audio_base64": null}', "application/json")),
        # shape of the body
        ("unknown-json-field", lambda c, cid: as_json(c, cid, transcript="hi", emotion="angry")),
        ("unknown-multipart-field", lambda c, cid: multipart(c, cid, transcript="hi", emotion="angry")),
        ("json-array", lambda c, cid: raw(c, cid, b'[{"transcript": "hi"}]', "application/json")),
        ("json-not-json", lambda c, cid: raw(c, cid, b"{not json", "application/json")),
        ("json-truncated", lambda c, cid: raw(c, cid, b'{"transcript": "hi', "application/json")),
        ("transcript-as-number", lambda c, cid: raw(c, cid, b'{"transcript": 12}', "application/json")),
        ("multipart-without-boundary", lambda c, cid: raw(c, cid, b"--x\r\n", "multipart/form-data")),
        (
            "multipart-garbage",
            lambda c, cid: raw(c, cid, os.urandom(300), "multipart/form-data; boundary=xyz"),
        ),
        (
            "multipart-two-audio-parts",
            lambda c, cid: c.post(
                URL.format(cid=cid),
                files=[("audio", ("a.wav", _VALID, "audio/wav")), ("audio", ("b.wav", _VALID, "audio/wav"))],
            ),
        ),
        (
            "multipart-audio-as-a-field",
            lambda c, cid: c.post(
                URL.format(cid=cid),
                files={"audio": (None, base64.b64encode(_VALID)), "transcript": (None, b"hi")},
            ),
        ),
        (
            "multipart-part-without-a-name",
            lambda c, cid: raw(
                c,
                cid,
                b"--b\r\nContent-Disposition: form-data\r\n\r\nhello\r\n--b--\r\n",
                "multipart/form-data; boundary=b",
            ),
        ),
        (
            "multipart-too-many-parts",
            lambda c, cid: c.post(URL.format(cid=cid), files=[(f"f{i}", (None, b"x")) for i in range(20)]),
        ),
        # base64
        ("base64-with-bad-characters", lambda c, cid: as_json(c, cid, audio_base64="UklGR!!!" + SECRET)),
        ("base64-with-bad-padding", lambda c, cid: as_json(c, cid, audio_base64="UklGRg=")),
        (
            "base64-with-line-breaks",
            lambda c, cid: as_json(c, cid, audio_base64=base64.encodebytes(_VALID).decode()),
        ),
        ("base64-as-number", lambda c, cid: raw(c, cid, b'{"audio_base64": 1234}', "application/json")),
        # ids
        ("utterance-id-with-space", lambda c, cid: as_json(c, cid, transcript="hi", utterance_id="a b")),
        ("utterance-id-with-newline", lambda c, cid: as_json(c, cid, transcript="hi", utterance_id="seed\n")),
        ("utterance-id-too-long", lambda c, cid: as_json(c, cid, transcript="hi", utterance_id="u" * 129)),
        ("utterance-id-empty", lambda c, cid: as_json(c, cid, transcript="hi", utterance_id="")),
    ],
    # the same utterance_id as the seed, other content
    (409, "utterance-conflict"): [
        (
            "utterance-id-reused-with-other-content",
            lambda c, cid: as_json(c, cid, transcript="something else", utterance_id="seed"),
        ),
    ],
}


@pytest.mark.parametrize(
    ("post", "status", "slug"),
    [pytest.param(post, *answer, id=case) for answer, cases in REFUSED.items() for case, post in cases],
)
def test_bad_request_is_a_4xx_problem_and_changes_nothing(
    client: TestClient, seeded: tuple[str, dict[str, Any]], post: Post, status: int, slug: str
) -> None:
    cid, before = seeded
    r = post(client, cid)
    body = assert_problem(r, status, slug=slug)
    assert SECRET not in r.text  # the payload is never echoed
    assert body["instance"] == URL.format(cid=cid)
    if status == 422 and slug == "validation-error":
        assert body["errors"] and all(e["loc"][0] == "body" for e in body["errors"])
        assert not any("input" in e for e in body["errors"])  # pydantic's echo of the payload is cut
    assert_unchanged(client, cid, before)


# ---- invalid ids: POST /conversations/{id}/utterances, GET and DELETE /conversations/{id} ----------------


@pytest.mark.parametrize(
    "cid",
    [
        *("a" * 129, "has space", "semi;colon", "dollar$", "é", "brace{x}", "star*", "a%0A", "a%00b", "%20"),
        "a%20b",
        *("...", "%2e%2e", "%2E", ".%2e."),  # only dots (raw "." and "..": test_reliability_abuse)
    ],
)
def test_invalid_conversation_id_is_422_on_every_route(
    client: TestClient, seeded: tuple[str, dict[str, Any]], cid: str
) -> None:
    seeded_cid, before = seeded
    for r in (
        client.post(URL.format(cid=cid), json={"transcript": "hi"}),
        client.get(f"/conversations/{cid}"),
        client.delete(f"/conversations/{cid}"),
    ):
        body = assert_problem(r, 422, slug="validation-error")
        assert body["errors"][0]["loc"][:2] == ["path", "conversation_id"]
    assert_unchanged(client, seeded_cid, before)
    assert client.get("/metrics").status_code == 200  # nothing stuck


# ---- odd but valid, accepted and scored: POST /conversations/{id}/utterances -----------------------------

# (case id, request), under the modalities the answer must name
ACCEPTED: dict[tuple[str, ...], list[tuple[str, Post]]] = {
    ("audio",): [
        ("silent-audio", lambda c, cid: multipart(c, cid, audio=audio_file(np.zeros(16_000), 16_000))),
        (
            "silent-float-audio",
            lambda c, cid: as_json(c, cid, audio=audio_file(np.zeros(8_000), 16_000, subtype="FLOAT")),
        ),
        ("8-khz", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 8_000), 8_000))),
        ("44.1-khz", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 44_100), 44_100))),
        ("48-khz", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 48_000), 48_000))),
        (
            "8-bit-pcm",
            lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 16_000), 16_000, subtype="PCM_U8")),
        ),
        (
            "24-bit-pcm",
            lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 16_000), 16_000, subtype="PCM_24")),
        ),
        (
            "32-bit-pcm",
            lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 16_000), 16_000, subtype="PCM_32")),
        ),
        ("stereo", lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.5, 16_000, 2), 16_000))),
        (
            "6-channels-48-khz",
            lambda c, cid: multipart(c, cid, audio=audio_file(tone(0.25, 48_000, 6), 48_000)),
        ),
        (
            "flac",
            lambda c, cid: multipart(
                c,
                cid,
                audio=audio_file(tone(0.5, 22_050), 22_050, fmt="FLAC"),
                filename="a.flac",
                mime="audio/flac",
            ),
        ),
        ("full-scale-pcm", lambda c, cid: multipart(c, cid, audio=_FULL_SCALE_PCM)),
        (
            "wav-of-unknown-length-from-a-stream-writer",
            lambda c, cid: multipart(
                c, cid, audio=wav_with_header(data=np.zeros(1600, "<i2").tobytes(), data_size=0xFFFFFFFF)
            ),
        ),
        (
            "mislabelled-mime-type",
            lambda c, cid: multipart(c, cid, audio=_VALID, filename="x.mp3", mime="application/octet-stream"),
        ),
    ],
    ("text", "audio"): [
        ("audio-and-transcript", lambda c, cid: multipart(c, cid, audio=_VALID, transcript="hi")),
    ],
    ("text",): [
        ("tabs-newlines-and-unicode", lambda c, cid: as_json(c, cid, transcript="Ça va?\n\tnon 😠 — 不好")),
        (
            "urlencoded-utf8",
            lambda c, cid: raw(
                c, cid, b"transcript=%C3%87a+va%3F&speaker=caller", "application/x-www-form-urlencoded"
            ),
        ),
        (
            "browser-form-without-a-file",
            lambda c, cid: raw(c, cid, BROWSER_FORM, "multipart/form-data; boundary=b"),
        ),
    ],
}


@pytest.mark.parametrize(
    ("post", "modalities"),
    [
        pytest.param(post, list(modalities), id=case)
        for modalities, cases in ACCEPTED.items()
        for case, post in cases
    ],
)
def test_odd_but_valid_input_is_accepted_and_scored(
    client: TestClient, seeded: tuple[str, dict[str, Any]], post: Post, modalities: list[str]
) -> None:
    cid, before = seeded
    r = post(client, cid)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["index"] == 1 and answer["modalities"] == modalities
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-6
    after = client.get(f"/conversations/{cid}").json()
    assert after["utterance_count"] == 2
    assert after["utterances"][0] == before["utterances"][0]
    assert after["utterances"][1]["prediction"]["probabilities"] == answer["probabilities"]


def test_transcript_over_the_encoders_max_length_is_truncated_and_flagged(
    client: TestClient, seeded: tuple[str, dict[str, Any]]
) -> None:
    from model.encoders.tiny import TINY_TEXT_MAX_LENGTH

    cid, _ = seeded
    long_text = "word " * (TINY_TEXT_MAX_LENGTH * 4)
    r = as_json(client, cid, transcript=long_text)
    assert r.status_code == 200, r.text
    assert r.json()["transcript_truncated"] is True
    stored = client.get(f"/conversations/{cid}").json()["utterances"][1]
    assert stored["transcript_truncated"] is True and stored["transcript"] is None
    # only the first max-length tokens count: words after them change nothing
    more = as_json(client, cid + "-twin", transcript=long_text + " and then many angry words").json()
    alone = as_json(client, cid + "-alone", transcript=long_text).json()
    assert more["transcript_truncated"] is True
    assert more["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
