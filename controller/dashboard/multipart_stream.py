"""Reading a `multipart/form-data` request part by part as it arrives, so that a file part can be
streamed straight into the file store (Starlette's `request.form()` first copies every file to
a temporary file). Parsing is python-multipart's; this module only turns its callbacks into a
pull interface:

    form = StreamingForm(request.headers["content-type"], request.stream())
    async for part in form:
        if isinstance(part, FieldPart): ...part.name, part.value
        else: await store(part.chunks())   # or part.drain(); consume it before the next part

Text fields are capped (`max_field_bytes`, `max_fields`) so a hostile form cannot fill memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import python_multipart
from python_multipart.multipart import parse_options_header

from schemas.errors import ControllerError


class MultipartError(ControllerError):
    """The request body is not a readable multipart form; the message says why."""


@dataclass
class FieldPart:
    name: str
    value: str


@dataclass
class FilePart:
    name: str
    filename: str
    content_type: str
    _form: StreamingForm = field(repr=False)

    def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive (each chunk at most what one read of the request gave)."""
        return self._form._file_chunks()

    async def drain(self) -> None:
        """Skip the rest of the file."""
        async for _chunk in self.chunks():
            pass


_BEGIN, _DATA, _END, _DONE = "begin", "data", "end", "done"


class StreamingForm:
    """The parts of a multipart body, one at a time (see the module docstring)."""

    def __init__(self, content_type: str, stream: AsyncIterator[bytes], max_fields: int = 50,
                 max_field_bytes: int = 64 * 1024) -> None:
        _kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise MultipartError("the form was not sent as multipart/form-data with a boundary")
        self._stream = stream.__aiter__()
        self._events: deque[tuple[str, object]] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._fields_left = max_fields
        self._max_field_bytes = max_field_bytes
        self._finished = False
        self._complete = False  # the closing boundary was read
        self._parser = python_multipart.MultipartParser(boundary, {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._add_header_bytes(data[start:end], True),
            "on_header_value": lambda data, start, end: self._add_header_bytes(data[start:end], False),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self._events.append((_BEGIN, list(self._headers))),
            "on_part_data": lambda data, start, end: self._events.append((_DATA, bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append((_END, None)),
            "on_end": self._end,
        })

    def _end(self) -> None:
        self._complete = True
        self._events.append((_DONE, None))

    def _add_header_bytes(self, data: bytes, name: bool) -> None:
        if len(self._header_name) + len(self._header_value) + len(data) > 8192:
            raise MultipartError("a part of the form has a header longer than 8 KB")
        if name:
            self._header_name += data
        else:
            self._header_value += data

    def _header_end(self) -> None:
        self._headers.append((self._header_name.lower(), self._header_value))
        self._header_name = self._header_value = b""

    async def _next_event(self) -> tuple[str, object]:
        while not self._events:
            if self._finished:
                return _DONE, None
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                self._finished = True
                try:
                    self._parser.finalize()
                except python_multipart.exceptions.FormParserError:
                    self._complete = False
                if not self._complete:  # a file cut short must not be stored as if whole
                    raise MultipartError("the form ended in the middle of a part; send it again")
                continue
            try:
                self._parser.write(chunk)
            except python_multipart.exceptions.FormParserError:
                raise MultipartError("the form's body is not valid multipart/form-data") from None
        return self._events.popleft()

    async def _file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            kind, value = await self._next_event()
            if kind == _DATA:
                assert isinstance(value, bytes)
                if value:
                    yield value
            elif kind in (_END, _DONE):
                return

    async def _field_value(self, name: str) -> str:
        value = bytearray()
        async for chunk in self._file_chunks():
            value += chunk
            if len(value) > self._max_field_bytes:
                raise MultipartError(f"the form field {name!r} is longer than {self._max_field_bytes} bytes")
        return value.decode("utf-8", errors="replace")

    def __aiter__(self) -> StreamingForm:
        return self

    async def __anext__(self) -> FieldPart | FilePart:
        while True:
            kind, value = await self._next_event()
            if kind == _DONE:
                raise StopAsyncIteration
            if kind == _BEGIN:
                break
        assert isinstance(value, list)
        headers = dict(value)
        _disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", errors="replace")
            content_type = headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            return FilePart(name, filename, content_type, self)
        self._fields_left -= 1
        if self._fields_left < 0:
            raise MultipartError("the form has too many fields")
        return FieldPart(name, await self._field_value(name))


async def drain(form: StreamingForm) -> None:
    """Read the rest of the request without parsing it, so the client is answered after it sent
    everything (a browser shows a reset connection instead of an answer that came too early)."""
    async for _chunk in form._stream:
        pass
