"""Form bodies of the utterance route, read strictly and in memory, and a check that a WAV arrived whole.

Starlette's own form parser would spool a file part over 1 MiB to a temporary file (raw audio on disk)
and decode a field that is not UTF-8 as latin-1 (mojibake, accepted). Here the body, already capped by
`BodySizeLimitMiddleware`, stays in memory, and every text (names, values) must be UTF-8.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.exceptions import TruncatedAudio

# A WAV `data` size that means "length unknown" (streaming writers): 0, or 0xFFFFFFFF and its kin.
_UNKNOWN_WAV_SIZE = 0x7FFF_0000
_MAX_WAV_CHUNKS = 64  # chunks before `data` (fmt, fact, LIST, bext...): a real file has a handful


class InvalidForm(ValueError):
    """A form body that cannot be read; `field` names the part at fault ("body": the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class FormPart:
    name: str
    value: str | bytes  # bytes: a file part
    filename: str | None = None  # set (maybe "") for a file part


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidForm(what, "is not valid UTF-8") from None


async def read_multipart(content_type: str, body: AsyncIterator[bytes], *, max_parts: int) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order; raises `InvalidForm` for a malformed one."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidForm("body", "multipart/form-data needs a boundary parameter")
    parts: list[FormPart] = []
    headers: dict[bytes, bytes] = {}
    field, value, data = bytearray(), bytearray(), bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidForm("body", "every part needs a Content-Disposition name")
        name = _utf8(options[b"name"], "body")
        if len(parts) >= max_parts:
            raise InvalidForm("body", f"more than {max_parts} parts")
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", errors="replace")
            parts.append(FormPart(name, bytes(data), filename))
        else:
            parts.append(FormPart(name, _utf8(bytes(data), name)))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise InvalidForm("body", "the multipart body is malformed") from None
    return parts


def read_urlencoded(body: bytes, *, max_parts: int) -> list[FormPart]:
    """The fields of an application/x-www-form-urlencoded body; percent-escapes must be UTF-8."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_parts,
        )
    except UnicodeError:  # raw non-ASCII bytes, or escapes that are not UTF-8
        raise InvalidForm("body", "is not valid UTF-8 form data") from None
    except ValueError:  # more than max_parts fields
        raise InvalidForm("body", f"more than {max_parts} fields") from None
    return [FormPart(name, value) for name, value in pairs]


def check_wav_complete(data: bytes) -> None:
    """Raise `TruncatedAudio` when a RIFF/WAVE file holds fewer sample bytes than its header announces.

    The decoder reads a WAV cut short inside its samples as if it ended there; an upload cut in transit
    would then be scored on a fragment, silently. A `data` size meaning "unknown" (streaming writers
    put 0 or 0xFFFFFFFF there) is accepted; other containers, and a header too broken to walk, are
    left to the decoder.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    for _ in range(_MAX_WAV_CHUNKS):  # bounded: this runs on the event loop, the file is the client's
        if pos + 8 > len(data):
            return
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            available = len(data) - pos - 8
            if 0 < size < _UNKNOWN_WAV_SIZE and available < size:
                raise TruncatedAudio(size, available)
            return
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
