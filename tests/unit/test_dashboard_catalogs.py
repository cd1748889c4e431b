"""Every message of the web dashboard has a Simplified Chinese translation.

The msgids are extracted from the dashboard's Python and templates with Babel and the same
method map as babel.cfg (what `pybabel extract -F babel.cfg` finds), and looked up in the merged
zh_CN catalog (every locales/zh_CN/LC_MESSAGES/*.po), so a string added to a page without a
translation fails here."""

from __future__ import annotations

import configparser
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

from controller.dashboard import i18n
from controller.dashboard.render import environment

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "controller" / "dashboard"


def _method_map() -> tuple[list[tuple[str, str]], dict[str, dict[str, str]]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "babel.cfg")
    methods, options = [], {}
    for section in config.sections():
        method, _, pattern = section.partition(":")
        methods.append((pattern.strip(), method.strip()))
        options[pattern.strip()] = dict(config.items(section))
    return methods, options


def extracted() -> dict[str, list[str]]:
    """msgid → where it occurs."""
    methods, options = _method_map()
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(DASHBOARD), methods, options, keywords=DEFAULT_KEYWORDS
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def test_extraction_finds_the_dashboard_strings() -> None:
    found = extracted()
    # From a template, a Python module (N_) and a {% trans %}-free _() call in the layout:
    assert {"Devices", "Sign out", "The sign-in form was stale; please try again.", "timed_out"} <= found.keys()
    assert len(found) > 80


def test_every_msgid_has_a_chinese_translation() -> None:
    catalog = i18n.translations("zh_CN").catalog
    missing = {msgid: where for msgid, where in extracted().items() if not catalog.get(msgid)}
    assert not missing, "add these to a controller/dashboard/locales/zh_CN/LC_MESSAGES/*.po file:\n" + "\n".join(
        f"  {msgid!r} ({', '.join(where)})" for msgid, where in sorted(missing.items())
    )


def test_placeholders_survive_translation() -> None:
    """A translation keeps every %(name)s of its msgid (else rendering it raises)."""
    import re

    catalog = i18n.translations("zh_CN").catalog
    for msgid, text in catalog.items():
        assert set(re.findall(r"%\((\w+)\)s", msgid)) == set(re.findall(r"%\((\w+)\)s", text)), msgid


def test_catalogs_of_one_language_are_merged(tmp_path: Path, monkeypatch: object) -> None:
    """Each part of the dashboard may keep its own .po file: all are read, in name order."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    messages = tmp_path / "zh_CN" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
    (messages / "a.po").write_text(header + 'msgid "One"\nmsgstr "一"\n\nmsgid "Both"\nmsgstr "甲"\n', encoding="utf-8")
    (messages / "b.po").write_text(header + 'msgid "Two"\nmsgstr "二"\n\nmsgid "Both"\nmsgstr "乙"\n', encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        merged = i18n.translations("zh_CN")
        assert (merged.gettext("One"), merged.gettext("Two"), merged.gettext("Both")) == ("一", "二", "乙")
        assert merged.gettext("Untranslated") == "Untranslated"
    finally:
        i18n.translations.cache_clear()


def test_templates_render_translated() -> None:
    template = environment("zh_CN").from_string('{{ _("Devices") }} {{ _("%(count)s tasks", count=3) }}')
    assert template.render() == "设备 共 3 个任务"
    assert environment("en").from_string('{{ _("Devices") }}').render() == "Devices"


def test_accept_language_picks_the_language() -> None:
    from starlette.requests import Request

    def request(header: str, cookie: str = "") -> Request:
        headers = [(b"accept-language", header.encode())] + ([(b"cookie", cookie.encode())] if cookie else [])
        return Request({"type": "http", "headers": headers})

    assert i18n.language_of(request("zh-CN,zh;q=0.9,en;q=0.8")) == "zh_CN"
    assert i18n.language_of(request("zh")) == "zh_CN"
    assert i18n.language_of(request("en-US,en;q=0.9,zh;q=0.5")) == "en"
    assert i18n.language_of(request("fr-FR")) == "en"
    assert i18n.language_of(request("zh-CN", "fleet_lang=en")) == "en"
    assert i18n.language_of(request("", "fleet_lang=zh_CN")) == "zh_CN"
