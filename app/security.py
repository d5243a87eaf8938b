"""Optional API keys. Each key owns a namespace: the conversations created with it.

Only hashes of the keys are kept. The presented key is hashed and compared with every configured hash
in constant time; its namespace is a second, different hash, so the value that names conversations in
the store is never the value that authenticates.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from app.exceptions import Unauthorized

DEFAULT_NAMESPACE = ""  # API keys off: one shared namespace


def _digest(key: str) -> bytes:
    return hashlib.sha256(b"lpgnet-api-key:" + key.encode()).digest()


def namespace_of(key: str) -> str:
    return hashlib.sha256(b"lpgnet-namespace:" + key.encode()).hexdigest()[:32]


class ApiKeys:
    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._digests = [_digest(k.get_secret_value()) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def namespace_for(self, key: str | None) -> str:
        """The namespace of the bearer key presented (None: none was); raises Unauthorized."""
        if not self.enabled:
            return DEFAULT_NAMESPACE
        if not key:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        presented = _digest(key)
        matched = False
        for digest in self._digests:  # no early exit: the time taken does not depend on which key
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise Unauthorized("the API key is not valid")
        return namespace_of(key)
