"""The dashboard's languages: English (the msgids themselves) and Simplified Chinese.

Every `locales/<lang>/LC_MESSAGES/*.po` file is read at start-up with Babel and merged into one
catalog per language, so each part of the dashboard keeps its strings in a file of its own
(`core.po`, `forms.po`, `stats.po` …) and no compile step is needed. A msgid missing from a
catalog shows in English. `tests/unit/test_dashboard_catalogs.py` extracts every msgid of the
dashboard (babel.cfg) and fails on one without a Chinese translation.

The language of a request: the `fleet_lang` cookie (set by the switch in the nav), else the
best match of the browser's Accept-Language, else English.
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

from babel.core import negotiate_locale
from babel.messages.pofile import read_po
from starlette.requests import Request

LOCALES_DIR = Path(__file__).parent / "locales"
LANGUAGES = ("en", "zh_CN")  # the first is the default
LANGUAGE_NAMES = {"en": "English", "zh_CN": "简体中文"}
LANG_COOKIE = "fleet_lang"


def N_(message: str) -> str:
    """Mark a string in Python code for extraction; translate it where it is shown."""
    return message


class MergedTranslations(gettext.NullTranslations):
    """gettext translations from a plain msgid → msgstr mapping (several .po files merged)."""

    def __init__(self, catalog: dict[str, str], plurals: dict[tuple[str, int], str]) -> None:
        super().__init__()
        self.catalog, self.plurals = catalog, plurals

    def gettext(self, message: str) -> str:
        return self.catalog.get(message) or message

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        # Chinese has one plural form; English falls through to the msgids.
        found = self.plurals.get((msgid1, 0))
        return found if found else (msgid1 if n == 1 else msgid2)

    def pgettext(self, context: str, message: str) -> str:
        return self.gettext(message)

    def npgettext(self, context: str, msgid1: str, msgid2: str, n: int) -> str:
        return self.ngettext(msgid1, msgid2, n)


def po_files(lang: str) -> list[Path]:
    """The catalog files of `lang`, in name order (a msgid in two files: the later one wins)."""
    return sorted((LOCALES_DIR / lang / "LC_MESSAGES").glob("*.po"))


@functools.cache
def translations(lang: str) -> MergedTranslations:
    """The merged catalog of `lang` (read once per process)."""
    catalog: dict[str, str] = {}
    plurals: dict[tuple[str, int], str] = {}
    for path in po_files(lang):
        with path.open("rb") as handle:
            po = read_po(handle, locale=lang)
        for message in po:
            if not message.id or message.fuzzy:
                continue
            if isinstance(message.id, (tuple, list)):
                strings = message.string if isinstance(message.string, (tuple, list)) else (message.string,)
                for index, text in enumerate(strings):
                    if text:
                        plurals[(str(message.id[0]), index)] = str(text)
            elif message.string:
                catalog[str(message.id)] = str(message.string)
    return MergedTranslations(catalog, plurals)


def _from_header(header: str) -> str | None:
    """The best of LANGUAGES for an Accept-Language header (zh, zh-CN, zh-Hans → zh_CN)."""
    preferred: list[tuple[float, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag:
            preferred.append((-quality + position * 1e-6, tag.strip().replace("-", "_")))
    wanted = [tag for _q, tag in sorted(preferred)]
    aliases = {"zh": "zh_CN", "zh_Hans": "zh_CN", "zh_Hans_CN": "zh_CN", "zh_SG": "zh_CN"}
    wanted = [aliases.get(tag, tag) for tag in wanted]
    return negotiate_locale(wanted, list(LANGUAGES), sep="_")


def language_of(request: Request) -> str:
    """The language to answer `request` in (see the module docstring)."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return _from_header(request.headers.get("accept-language", "")) or LANGUAGES[0]


def html_lang(lang: str) -> str:
    """The value of <html lang=…> for a language code (a BCP 47 tag)."""
    return {"zh_CN": "zh-CN"}.get(lang, "en")


def translate(lang: str, message: str) -> str:
    """`message` (an msgid marked with N_) in `lang`."""
    return translations(lang).gettext(message)
