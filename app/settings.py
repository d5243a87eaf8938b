"""Service configuration: one pydantic-settings class, every field overridable as LPGNET_<NAME>.

`create_app` takes a `Settings` explicitly, so tests build apps with whatever they need; the CLI builds
one from the environment. Ranges and cross-field rules are checked here, at start, not on a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_origin

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.checkpoint import DEFAULT_CHECKPOINT
from model.encoders.factory import EncoderBackend
from model.encoders.precision import Precision
from model.paths import cache_root

MIN_API_KEY_CHARS = 16


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix LPGNET_)."""

    # an empty variable (as compose passes an unset one) is the setting's default
    model_config = SettingsConfigDict(
        env_prefix="LPGNET_", extra="forbid", frozen=True, env_ignore_empty=True
    )

    # --- model -------------------------------------------------------------------------------------
    checkpoint: Path = Field(default=DEFAULT_CHECKPOINT, description="LPGNet checkpoint file to serve.")
    profile: str | None = Field(
        default=None, description="Encoder profile; default: the profile recorded in the checkpoint."
    )
    text_model: Path | None = Field(
        default=None, description="Local directory of the text encoder's weights."
    )
    audio_model: Path | None = Field(
        default=None, description="Local directory of the audio encoder's weights."
    )
    tiny_dir: Path | None = Field(
        default=None, description="Profile `tiny`: where its random encoders are written."
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description=(
            "Runtime of the LPGNet network. auto: onnxruntime on CPU (the checkpoint's graph, exported"
            " once into cache_dir and checked against PyTorch; PyTorch if that fails), PyTorch on CUDA."
        ),
    )
    onnx_model: Path | None = Field(
        default=None,
        description=(
            "A directory written by `lpgnet export` (network and encoder graphs), or a single LPGNet"
            " .onnx graph (encoders then run in PyTorch); backend=onnx without it: the checkpoint's .onnx."
        ),
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where exported graphs are kept; default $XDG_CACHE_HOME/lpgnet (~/.cache/lpgnet).",
    )
    onnx_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "onnxruntime intra-op threads per session (None: LPGNet 1 on CPU, like torch_threads;"
            " a bundle's encoder graphs half the CPUs)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where encoders and network run."
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "torch intra-op threads of every model job, fixed (None: on CPU see adaptive_threads, where"
            " concurrency comes from encoder_workers and the batchers running side by side; torch's"
            " default on CUDA)."
        ),
    )
    adaptive_threads: bool = Field(
        default=True,
        description=(
            "CPU, torch_threads unset: an encoder call that is the only work in flight runs on every"
            " CPU (jobs arriving meanwhile wait for it instead of oversubscribing the cores), any other"
            " on one thread. false: always one thread (where neighbours keep the cores busy, a"
            " multi-thread team waits at every barrier for its descheduled threads)."
        ),
    )
    encoder_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "CPU: audio clips are encoded one per forward, this many at once (None: one per CPU this"
            " process may use, a cgroup quota included); padded batches cost more per clip on CPU."
            " CUDA: one padded batch."
        ),
    )
    decode_workers: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Threads that decode and resample uploaded audio, off the event loop.",
    )
    encoder_backend: EncoderBackend = Field(
        default="auto",
        description=(
            "Runtime of the transformer encoders (text BERT/MiniLM, emotion2vec). auto: on CPU their"
            " onnxruntime graphs, exported once into cache_dir and checked against PyTorch fp32 at every"
            " start (an encoder whose graph fails stays in PyTorch); PyTorch on CUDA. onnx: graphs or a"
            " start-up error. torch: PyTorch. Feature extractors (prosody, eGeMAPS) are numpy."
        ),
    )
    encoder_precision: Precision = Field(
        default="auto",
        description=(
            "Encoder precision on CPU. auto: onnxruntime int8 where its probe parity holds, else fp32;"
            " PyTorch encoders bf16 autocast where the CPU has native bf16. int8 (onnxruntime only),"
            " fp32, or bf16 (PyTorch only). Accuracy bounds: tests/test_encoders_served.py and"
            " tests/test_precision.py."
        ),
    )
    context_window: int = Field(
        default=64, ge=1, le=4096, description="K: utterances of context the model sees."
    )

    # --- conversation store ------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None, description="redis:// URL; None keeps conversations in memory."
    )
    redis_prefix: str = Field(
        default="lpgnet:", min_length=1, max_length=64, description="Prefix of Redis keys."
    )
    redis_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Redis connect and command timeout: a hanging Redis answers 503 after this long.",
    )
    session_ttl_s: int = Field(default=3600, ge=1, description="A conversation idle this long is forgotten.")
    max_conversations: int = Field(
        default=10_000, ge=1, description="In-memory store: LRU bound on conversations."
    )
    # 2 GiB: with the ~0.8 GB of a ready service, under 3 GB in all (a 4 GB host or container). Fixed,
    # not a share of the machine's memory: in a container that reads as the host's, not the limit.
    max_store_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024**2,
        description=(
            "In-memory store: LRU bound on the bytes it holds (vectors, predictions, metadata, estimated"
            " on the high side); a write that crosses it evicts the least recently written other"
            " conversations. Start-up fails when one conversation at its bounds would not fit. Redis is"
            " bounded by its own maxmemory."
        ),
    )
    max_utterances_stored: int = Field(
        default=1000,
        ge=1,
        description="Per conversation: older utterances (and their predictions) are dropped.",
    )
    store_transcripts: bool = Field(default=False, description="Keep transcripts so GET returns them.")
    idempotency_wait_ms: int = Field(
        default=2000,
        ge=0,
        le=60_000,
        description="A retry waits this long for the first attempt's prediction.",
    )

    # --- HTTP --------------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer keys (comma-separated); empty: no authentication."
    )
    max_request_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    max_audio_seconds: float = Field(default=60.0, gt=0, le=3600, description="Longest audio accepted.")
    min_audio_seconds: float = Field(
        default=0.05, ge=0, le=10, description="Shortest audio accepted (shorter: 422, too little to score)."
    )
    max_audio_sample_rate: int = Field(
        default=96_000, ge=8_000, le=768_000, description="Highest sample rate accepted (higher: 422)."
    )
    min_audio_sample_rate: int = Field(
        default=8_000,
        ge=1,
        le=96_000,
        description="Lowest sample rate accepted (lower: 422; telephone audio is 8 kHz, below it the voice"
        " has lost most of what the encoders read).",
    )
    max_audio_channels: int = Field(default=8, ge=1, le=64, description="Most channels accepted (more: 422).")
    max_audio_samples: int = Field(
        default=48_000 * 2 * 60,
        ge=16_000,
        description=(
            "Largest decoded size accepted, in samples (frames x channels; 4 bytes each once decoded),"
            " checked from the header before decoding and counted while decoding (more: 413). The"
            " default is 60 s of 48 kHz stereo, 23 MB as float32."
        ),
    )
    batch_max_size: int = Field(
        default=16, ge=1, le=1024, description="Micro-batch bound per encoder and network."
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long a batch waits for company; 0: never delay a lone request.",
    )
    stream_queue: int = Field(
        default=4,
        ge=1,
        le=256,
        description=(
            "WebSocket stream: utterances read ahead of the one being scored; when full, the socket is"
            " not read (back-pressure), so a fast sender or a slow reader cannot grow memory."
        ),
    )
    demo: bool = Field(default=True, description="Serve the /demo page (every asset local); false: 404.")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "Serve /metrics (all of it, without a key) on this port of metrics_host, for a Prometheus"
            " scraper; the API port then answers /metrics only to a key, without conversation counts."
        ),
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of metrics_port.")
    idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "A connection is closed when no complete request head arrives this long after it opened or"
            " after its previous response (idle, keep-alive, or headers trickling in)."
        ),
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request body must arrive within this plus 1 s per body_min_rate bytes (else 408).",
    )
    body_min_rate: int = Field(
        default=1024, ge=1, description="Bytes per second a slow body must average beyond body_timeout_s."
    )
    shutdown_drain_s: float = Field(
        default=0.0,
        ge=0,
        le=600,
        description=(
            "On SIGTERM /ready turns 503 at once; the port keeps accepting this long (for load balancers"
            " to notice) before it closes."
        ),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description=(
            "Once the port has closed, requests in flight may finish for this long; any still running"
            " then get a 503 problem with Retry-After."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Bind address of `lpgnet serve`.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of `lpgnet serve`.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator(
        "profile",
        "text_model",
        "audio_model",
        "tiny_dir",
        "onnx_model",
        "cache_dir",
        "onnx_threads",
        "torch_threads",
        "encoder_workers",
        "redis_url",
        "metrics_port",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # an empty optional setting, passed in code too, is "not set", not Path("."); an empty
        # environment variable is ignored for every setting (`env_ignore_empty`)
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="before")
    @classmethod
    def _words_in_any_case(cls, values: object) -> object:
        # a setting whose values are words of a fixed set (a Literal) is read in any case
        # (`LPGNET_LOG_LEVEL=DEBUG`)
        if not isinstance(values, dict):
            return values
        words = {name for name, f in cls.model_fields.items() if get_origin(f.annotation) is Literal}
        return {k: v.strip().lower() if k in words and isinstance(v, str) else v for k, v in values.items()}

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(keys):
            if len(key.get_secret_value()) < MIN_API_KEY_CHARS:
                raise ValueError(f"API key #{i + 1} is shorter than {MIN_API_KEY_CHARS} characters")
        return keys

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"metrics_port ({self.metrics_port}) must differ from port ({self.port})")
        if self.max_utterances_stored < self.context_window:
            raise ValueError(
                f"max_utterances_stored ({self.max_utterances_stored}) must be >= context_window "
                f"({self.context_window}): the model's context is read from stored utterances"
            )
        if self.min_audio_sample_rate > self.max_audio_sample_rate:
            raise ValueError(
                f"min_audio_sample_rate ({self.min_audio_sample_rate}) must be <= max_audio_sample_rate"
                f" ({self.max_audio_sample_rate})"
            )
        if self.encoder_backend == "torch" and self.encoder_precision == "int8":
            raise ValueError("encoder_precision int8 is onnxruntime's: set encoder_backend auto or onnx")
        if self.encoder_backend == "onnx" and self.encoder_precision == "bf16":
            raise ValueError("encoder_precision bf16 is PyTorch's: set encoder_backend auto or torch")
        return self

    @property
    def vectors_kept(self) -> int:
        """Vectors kept per conversation: K plus as much again as headroom for concurrent appends.

        The window of index i is (i-K, i]; with up to K later utterances appended before i reads its
        window, those vectors are still there.
        """
        return 2 * self.context_window

    @property
    def graph_cache(self) -> Path:
        """cache_dir, or the user's cache directory (XDG) when it is unset."""
        return self.cache_dir if self.cache_dir is not None else cache_root()
