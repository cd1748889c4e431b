"""The reference platform's scan link names the login task's account, so the phone-approval
page offers that account instead of a fixed one."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from device.platforms.reference.adapter import scan_link


def test_the_scan_link_names_the_account_quoted() -> None:
    link = scan_link("http://127.0.0.1:8090/", "tok-1", "zoe k&co")
    assert link.startswith("http://127.0.0.1:8090/_phone/scan?")
    assert parse_qs(urlsplit(link).query) == {"token": ["tok-1"], "account": ["zoe k&co"]}


def test_without_an_account_the_link_names_none() -> None:
    assert parse_qs(urlsplit(scan_link("http://h:1", "tok-2", None)).query) == {"token": ["tok-2"]}
