"""The dashboard's form conversion (controller/dashboard/forms.py) and its streaming multipart
reader (controller/dashboard/multipart_stream.py), in-process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from controller.dashboard import forms
from controller.dashboard.multipart_stream import FieldPart, FilePart, MultipartError, StreamingForm

EN = forms.translator("en")
ZH = forms.translator("zh_CN")


def test_a_login_form_becomes_the_apis_task() -> None:
    task = forms.login_task({"account": "alice", "method": "qr", "wait": "60", "form_id": "x"}, "reference", EN)
    assert (task.type, task.account, task.device_id) == ("login", "alice", None)
    assert task.params == {"platform": "reference", "method": "qr", "wait": 60.0}


def test_each_bad_field_gets_its_own_message_in_the_users_language() -> None:
    with pytest.raises(forms.FormInvalid) as caught:
        forms.login_task({"account": "", "method": "sms", "wait": "-5", "device_id": "bad id!"}, None, ZH)
    errors = caught.value.errors
    assert errors["account"] == "请选择执行任务的账号。"
    assert errors["phone"] == "短信方式需要填写接收验证码的手机号。"
    assert errors["wait"] == "必须大于 0。"
    assert errors["device_id"].startswith("设备 ID")
    assert errors["platform"] == "此项必填。"  # no account to take it from, none typed


def test_chat_and_upload_fields() -> None:
    with pytest.raises(forms.FormInvalid) as caught:
        forms.chat_task({"account": "alice", "to": "", "message": "x" * 10_001}, "reference", EN)
    assert caught.value.errors == {"to": "This field is required.",
                                   "message": "Too long: at most 10000 characters."}
    params = forms.upload_fields({"account": "alice", "title": " Launch ", "tags": "a, b，c,,",
                                  "publish_at": "2030-01-02T03:04"}, "reference", EN)
    assert params["title"] == "Launch" and params["tags"] == ["a", "b", "c"]
    assert params["publish_at"] == "2030-01-02T03:04:00+00:00"  # a datetime-local field is UTC
    with pytest.raises(forms.FormInvalid) as caught:
        forms.upload_fields({"account": "alice", "title": "", "publish_at": "tomorrow"}, "reference", EN)
    assert set(caught.value.errors) == {"title", "publish_at"}


def test_a_broadcast_form_explains_bad_json_and_bad_params() -> None:
    with pytest.raises(forms.FormInvalid) as caught:
        forms.broadcast({"type": "echo", "params": '{"message": '}, EN)
    assert caught.value.errors["params"].startswith("Not valid JSON (line 1")
    with pytest.raises(forms.FormInvalid) as caught:
        forms.broadcast({"type": "sleep", "params": '{"seconds": "long"}'}, EN)
    assert caught.value.errors == {"params": "Must be a number."}
    with pytest.raises(forms.FormInvalid) as caught:
        forms.broadcast({"type": "cancel"}, EN)  # control types are not offered
    assert "type" in caught.value.errors
    made = forms.broadcast({"type": "echo", "params": '{"message": "hi"}', "group": "g1", "include_offline": "on"}, EN)
    assert (made.type, made.group, made.include_offline, made.params) == ("echo", "g1", True, {"message": "hi"})


def _body(fields: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[str, bytes]:
    files = files or [("last", ("l.txt", b"-", "text/plain"))]  # without a file httpx sends a urlencoded body
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.headers["content-type"], request.read()


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def _read(content_type: str, body: bytes, size: int, **limits: int) -> list[tuple[str, str, object]]:
    seen: list[tuple[str, str, object]] = []
    async for part in StreamingForm(content_type, _pieces(body, size), **limits):
        if isinstance(part, FieldPart):
            seen.append(("field", part.name, part.value))
        else:
            assert isinstance(part, FilePart)
            data = b"".join([chunk async for chunk in part.chunks()])
            seen.append(("file", f"{part.name}:{part.filename}:{part.content_type}", data))
    return seen


@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
def test_the_multipart_reader_gives_fields_then_streams_files(size: int) -> None:
    video, cover = os.urandom(100_000), os.urandom(3_000)
    content_type, body = _body({"csrf_token": "abc", "title": "标题"},
                               [("cover", ("c.png", cover, "image/png")), ("video", ("v.mp4", video, "video/mp4"))])
    seen = asyncio.run(_read(content_type, body, size))
    assert seen == [("field", "csrf_token", "abc"), ("field", "title", "标题"),
                    ("file", "cover:c.png:image/png", cover), ("file", "video:v.mp4:video/mp4", video)]


def test_the_multipart_reader_refuses_what_would_fill_memory_or_is_broken() -> None:
    content_type, body = _body({"a": "x" * 100}, [])
    with pytest.raises(MultipartError, match="longer than 50 bytes"):
        asyncio.run(_read(content_type, body, 10, max_field_bytes=50))
    content_type, body = _body({f"f{i}": "1" for i in range(5)}, [])
    with pytest.raises(MultipartError, match="too many fields"):
        asyncio.run(_read(content_type, body, 1000, max_fields=3))
    with pytest.raises(MultipartError, match="boundary"):
        StreamingForm("multipart/form-data", _pieces(b"", 1))
    content_type, body = _body({"a": "1"}, [("video", ("v.mp4", b"x" * 1000, "video/mp4"))])
    with pytest.raises(MultipartError):
        asyncio.run(_read(content_type, body[: len(body) // 2], 100))  # the client went away mid-file
