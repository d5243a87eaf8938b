"""Domain exceptions of the service. No HTTP here: `app.errors` maps each type to a status code.

Messages are written for the caller and must never carry internals (paths, library messages).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""


class ConversationNotFound(ServiceError):
    """The conversation does not exist, expired, or belongs to another API key."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id!r} was not found")


class UtteranceConflict(ServiceError):
    """A client utterance_id was reused with different content."""

    def __init__(self, utterance_id: str) -> None:
        super().__init__(f"utterance_id {utterance_id!r} was already used with different content")


class UtteranceInProgress(ServiceError):
    """A retry arrived while the first attempt of the same utterance has no answer yet."""

    def __init__(self, utterance_id: str) -> None:
        super().__init__(f"utterance_id {utterance_id!r} is still being processed; retry shortly")


class ContextUnavailable(ServiceError):
    """The utterance's context left the store before it was scored (extreme concurrency)."""

    def __init__(self) -> None:
        super().__init__("the utterance's context was evicted before it could be scored; retry")


class UnsupportedModality(ServiceError):
    """The request carries only modalities the served model does not use."""


class TruncatedAudio(ServiceError):
    """A WAV upload holds fewer sample bytes than its header announces (cut in transit)."""

    def __init__(self, announced: int, received: int) -> None:
        super().__init__(
            f"the WAV file is truncated: its header announces {announced} bytes of samples, "
            f"{received} arrived"
        )


class UnsupportedMediaType(ServiceError):
    """The request body is neither JSON nor a form."""


class RequestTooLarge(ServiceError):
    """The request body exceeds `max_request_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")


class Unauthorized(ServiceError):
    """Missing or unknown API key."""


class ServiceNotReady(ServiceError):
    """The engine is not loaded and warmed up yet."""


class StoreUnavailable(ServiceError):
    """The conversation store cannot be reached."""


class ShuttingDown(ServiceError):
    """The process is stopping: not ready any more, or a request outlived the shutdown grace period."""


class RequestTimeout(ServiceError):
    """The request body arrived too slowly (`body_timeout_s`, `body_min_rate`)."""

    def __init__(self, timeout_s: float, min_rate: int) -> None:
        super().__init__(
            f"the request body did not arrive in time ({timeout_s:g} s, plus 1 s per {min_rate} bytes)"
        )
