"""Fuzzing: schemathesis against the OpenAPI schema of a real server on loopback (no 5xx, every response
as documented), and hypothesis against the audio path (any bytes, any WAV header: never a 5xx).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from tests.app_fixtures import TEST_KEY_A
from tests.reliability_support import assert_problem, serve_in_thread

EXAMPLES = int(os.environ.get("LPGNET_FUZZ_EXAMPLES", "60"))  # per operation; raise it for a deeper run


@pytest.fixture(scope="module", params=["open", "api-keys"])
def access(request: pytest.FixtureRequest) -> str:
    """The service without keys (its OpenAPI says so), and with them (its OpenAPI requires a bearer)."""
    return str(request.param)


@pytest.fixture(scope="module")
def auth_headers(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_KEY_A}"} if access == "api-keys" else {}


@pytest.fixture(scope="module")
def server_url(make_settings: Callable[..., Any], access: str) -> Iterator[str]:
    app_settings = make_settings(
        max_request_bytes=256 * 1024,
        max_audio_seconds=2.0,
        api_keys=TEST_KEY_A if access == "api-keys" else "",
    )
    with serve_in_thread(create_app(app_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(server_url: str) -> Any:
    return schemathesis.openapi.from_url(server_url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")

# Refusals of schema-valid requests that the schema cannot express: what the audio *holds* (a real,
# finite, complete, short enough recording) is beyond JSON Schema.
AUDIO_CONTENT_PROBLEMS = {"undecodable-audio", "invalid-audio", "truncated-audio", "audio-too-long"}


def schema_valid_data_is_accepted(ctx: Any, response: Any, case: Any) -> None:
    """schemathesis' positive_data_acceptance, less the refusals above (each a problem+json)."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return
    if response.status_code in (404, 409):  # no such conversation yet; an utterance_id reused
        return
    problem_type = response.json().get("type", "") if response.status_code < 500 else ""
    assert problem_type.rsplit("/", 1)[-1] in AUDIO_CONTENT_PROBLEMS, (
        f"schema-valid request refused with {response.status_code}: {response.text}"
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples on every run: a CI failure reproduces
)
def test_api_answers_every_generated_request_as_documented(case: Any, auth_headers: dict[str, str]) -> None:
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    response = case.call_and_validate(
        headers=auth_headers,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[schema_valid_data_is_accepted],
    )
    assert response.status_code < 500, response.text
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code >= 400:
        assert content_type.startswith("application/problem+json"), (response.status_code, content_type)


# ---- the audio path ------------------------------------------------------------------------------------


def _wav(
    sample_rate: int, channels: int, bits: int, fmt_tag: int, data: bytes, data_size: int | None
) -> bytes:
    block = max(1, channels * bits // 8) & 0xFFFF
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, sample_rate, (sample_rate * block) & 0xFFFFFFFF, block, bits
    )
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + body


wav_files = st.builds(
    _wav,
    sample_rate=st.one_of(
        st.sampled_from([1, 8_000, 16_000, 44_100, 48_000, 96_000, 384_000]), st.integers(0, 2**32 - 1)
    ),
    channels=st.one_of(st.integers(0, 8), st.sampled_from([255, 1024, 65_535])),
    bits=st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64]),
    fmt_tag=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0]),
    data=st.binary(max_size=4_000),
    data_size=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
)


@given(
    audio=st.one_of(wav_files, st.binary(max_size=2_000)),
    transcript=st.one_of(st.none(), st.text(max_size=50)),
)
@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_any_audio_bytes_get_an_answer_or_a_4xx_never_a_5xx(
    server_url: str, auth_headers: dict[str, str], audio: bytes, transcript: str | None
) -> None:
    data = {} if transcript is None else {"transcript": transcript}
    r = httpx.post(
        server_url + "/conversations/fuzz/utterances",
        data=data,
        files={"audio": ("clip.wav", audio, "audio/wav")},
        headers=auth_headers,
        timeout=30,
    )
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, r.text
        assert_problem(r, r.status_code)
