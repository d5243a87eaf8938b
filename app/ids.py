"""The one rule for ids a client chooses: conversation ids, utterance ids and X-Request-ID.

1 to 128 characters of A-Z a-z 0-9 . _ : - (safe in a URL path, a log line and a Redis key: no braces,
so never a cluster hash tag, and no '#', which the Redis store uses for its own tokens). Conversation
and utterance ids also need one character that is not a dot: "." and ".." are path segments that
clients and proxies normalise away, so a conversation named so could never be reached again. A request
id is never a path segment, so any string of the characters will do.
"""

from __future__ import annotations

import re

ID_MAX_CHARS = 128
_CHARS = "A-Za-z0-9._:-"  # a regex character class's body
ID_PATTERN = f"^[{_CHARS}]*[A-Za-z0-9_:-][{_CHARS}]*$"  # with min/max length ID_MAX_CHARS
ID_DESCRIPTION = f"1 to {ID_MAX_CHARS} characters of A-Z a-z 0-9 . _ : -, not only dots"
REQUEST_ID = re.compile(f"^[{_CHARS}]{{1,{ID_MAX_CHARS}}}$")

__all__ = ["ID_DESCRIPTION", "ID_MAX_CHARS", "ID_PATTERN", "REQUEST_ID"]
