"""app/client.py: LPGNetClient and AsyncLPGNetClient against the service on uvicorn (loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.client import AsyncLPGNetClient, LPGNetClient, LPGNetError
from tests.app_fixtures import TEST_KEY_A, wav_bytes
from tests.reliability_support import serve_in_thread


@pytest.fixture
def service_url(make_settings: Callable[..., Any]) -> Iterator[str]:
    from app.main import create_app

    with serve_in_thread(create_app(make_settings(api_keys=[TEST_KEY_A]))) as url:
        yield url


def test_sync_client_posts_streams_reads_and_deletes(service_url: str) -> None:
    with LPGNetClient(service_url, api_key=TEST_KEY_A, timeout=30) as client:
        assert client.ready()
        first = client.post_utterance("cl-1", transcript="Hello, who is this?", utterance_id="t0")
        assert first.utterance.index == 0 and not first.replayed
        assert first.emotion in first.probabilities
        assert client.post_utterance("cl-1", transcript="Hello, who is this?", utterance_id="t0").replayed
        spoken = client.post_utterance("cl-1", audio=wav_bytes(seed=3), transcript="It is me")
        assert spoken.utterance.modalities == ["text", "audio"]
        with client.stream("cl-1") as stream:
            stream.send(transcript="pipelined one")
            stream.send(audio=wav_bytes(seed=4), utterance_id="t3")
            answers = [stream.receive(), stream.receive()]
            with pytest.raises(LPGNetError) as conflict:
                stream.score(transcript="other words", utterance_id="t0")
            assert conflict.value.status == 409
            assert stream.score(transcript="still open").utterance.index == 4
        assert [a.utterance.index for a in answers] == [2, 3]
        conversation = client.conversation("cl-1")
        assert conversation.utterance_count == 5
        client.delete_conversation("cl-1")
        with pytest.raises(LPGNetError) as gone:
            client.conversation("cl-1")
        assert gone.value.status == 404
    with (
        LPGNetClient(service_url, api_key="not-the-right-key-000") as stranger,
        pytest.raises(LPGNetError) as denied,
    ):
        stranger.post_utterance("cl-1", transcript="let me in")
    assert denied.value.status == 401


def test_async_client_posts_and_streams(service_url: str) -> None:
    async def talk() -> list[int]:
        async with AsyncLPGNetClient(service_url, api_key=TEST_KEY_A, timeout=30) as client:
            assert await client.ready()
            indices = [(await client.post_utterance("cl-a", transcript="first")).utterance.index]
            async with await client.stream("cl-a") as stream:
                indices.append((await stream.score(transcript="second")).utterance.index)
                indices.append((await stream.score(audio=wav_bytes(seed=5))).utterance.index)
                with pytest.raises(LPGNetError) as bad:
                    await stream.score(transcript="   ")
                assert bad.value.status == 422
            assert (await client.conversation("cl-a")).utterance_count == 3
            return indices

    assert asyncio.run(talk()) == [0, 1, 2]
