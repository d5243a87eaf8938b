"""Settings: LPGNET_ environment, defaults that are safe, validation at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from model.checkpoint import DEFAULT_CHECKPOINT
from tests.app_fixtures import TEST_KEY_A, TEST_KEY_B


def test_defaults_serve_the_committed_weights_locally(clean_env: None) -> None:
    s = Settings()
    assert s.checkpoint == DEFAULT_CHECKPOINT
    assert s.profile is None  # the checkpoint's own profile ("offline-tuned" for the default weights)
    assert s.host == "127.0.0.1"  # not every interface unless asked
    assert s.redis_url is None and s.api_keys == [] and s.store_transcripts is False
    assert s.context_window == 64 and s.backend == "auto" and s.device == "auto"
    # the fast path on CPU: no batch wait for a lone request, bf16 encoders where the CPU has it
    assert s.batch_max_wait_ms == 0 and s.encoder_precision == "auto" and s.encoder_workers is None
    # abuse bounds on by default: idle and slow-body timeouts, decoded audio size, a shutdown grace
    assert s.idle_timeout_s == 5 and s.body_timeout_s == 10 and s.body_min_rate == 1024
    assert s.max_audio_samples == 48_000 * 2 * 60 and s.max_audio_sample_rate == 96_000
    assert s.max_audio_channels == 8 and s.min_audio_seconds == 0.05
    assert s.shutdown_grace_s == 10 and s.shutdown_drain_s == 0 and s.metrics_port is None
    assert s.decode_workers == 2 and s.redis_timeout_s == 2.0
    assert s.max_store_bytes == 2 * 1024**3 and s.max_conversations == 10_000  # the in-memory bounds


def test_metrics_port_must_differ_from_the_api_port(clean_env: None) -> None:
    with pytest.raises(ValidationError, match="metrics_port"):
        Settings(port=9000, metrics_port=9000)


def test_graph_cache_follows_xdg_unless_set(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LPGNET_CACHE_DIR")  # clean_env points it at the session's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().graph_cache == tmp_path / "xdg" / "lpgnet"
    assert Settings(cache_dir=tmp_path / "mine").graph_cache == tmp_path / "mine"


def test_environment_variables_use_the_lpgnet_prefix(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LPGNET_CONTEXT_WINDOW", "8")
    monkeypatch.setenv("LPGNET_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LPGNET_STORE_TRANSCRIPTS", "true")
    monkeypatch.setenv("LPGNET_CHECKPOINT", "/weights/x.pt")
    monkeypatch.setenv("LPGNET_API_KEYS", f" {TEST_KEY_A} ,{TEST_KEY_B},")
    monkeypatch.setenv("LPGNET_DECODE_WORKERS", "4")
    monkeypatch.setenv("LPGNET_REDIS_TIMEOUT_S", "0.5")
    monkeypatch.setenv("LPGNET_MAX_STORE_BYTES", "536870912")
    s = Settings()
    assert s.context_window == 8 and s.redis_url == "redis://redis:6379/0" and s.store_transcripts
    assert s.decode_workers == 4 and s.redis_timeout_s == 0.5 and s.max_store_bytes == 512 * 1024**2
    assert s.checkpoint == Path("/weights/x.pt")
    assert [k.get_secret_value() for k in s.api_keys] == [TEST_KEY_A, TEST_KEY_B]
    assert TEST_KEY_A not in repr(s)  # keys are secrets


@pytest.mark.parametrize(
    "values",
    [
        {"api_keys": "short"},
        {"context_window": 0},
        {"context_window": 64, "max_utterances_stored": 10},
        {"redis_url": "http://localhost:6379"},
        {"backend": "tensorrt"},
        {"encoder_precision": "int4"},
        {"encoder_workers": 0},
        {"decode_workers": 0},
        {"redis_timeout_s": 0},
        {"device": "tpu"},
        {"max_request_bytes": 10},
        {"max_store_bytes": 1000},
        {"batch_max_wait_ms": -1},
        {"port": 70000},
        {"min_audio_sample_rate": 48_000, "max_audio_sample_rate": 16_000},
        {"no_such_setting": 1},
    ],
)
def test_invalid_values_are_refused_at_start(clean_env: None, values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_vectors_are_kept_for_twice_the_window(clean_env: None) -> None:
    assert Settings(context_window=16).vectors_kept == 32


def test_empty_variables_mean_unset(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"LPGNET_{name.upper()}", raising=False)
    defaults = Settings()
    for name in Settings.model_fields:  # every setting, with or without a default of None
        monkeypatch.setenv(f"LPGNET_{name.upper()}", "")
    s = Settings()
    assert s.model_dump() == defaults.model_dump()
    assert s.profile is None and s.text_model is None and s.redis_url is None and s.api_keys == []
    assert s.port == 8000 and s.context_window == defaults.context_window  # not a parse error


def test_word_valued_settings_are_read_in_any_case(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPGNET_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LPGNET_ENCODER_PRECISION", " Int8 ")
    monkeypatch.setenv("LPGNET_DEVICE", "CPU")
    s = Settings()
    assert (s.log_level, s.encoder_precision, s.device) == ("debug", "int8", "cpu")
    monkeypatch.setenv("LPGNET_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError):
        Settings()


def test_the_redis_timeout_reaches_the_redis_client(clean_env: None) -> None:
    from app.store import RedisStore, build_store

    store = build_store(Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.5))
    assert isinstance(store, RedisStore)
    kwargs = store._redis.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.5
