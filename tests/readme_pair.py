"""Reads a README and its translation into the parts that must stay identical between them.

Used by tests/unit/test_readme_zh_in_step.py. A translated README keeps, in the same order,
the same headings (each translated heading carries ``<a id="slug"></a>`` with the GitHub
anchor of its English counterpart, so links such as ``#a-clustered-broker-fail-over`` work
in both files and a missing section can be named), the same fenced and indented code blocks
(byte for byte), the same link and image targets, the same ``FLEET_*`` names and the same
commands in inline code. Prose, table cells and headings are free to be translated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r'<a\s+id="([^"]+)"\s*>\s*</a>')
INLINE_CODE = re.compile(r"(`+)([^`][\s\S]*?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"""<(?:img|a)\s[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""")
ENV_VAR = re.compile(r"\bFLEET_[A-Z0-9_]*[A-Z0-9]")
GLOSSARY_START, GLOSSARY_END = "<!-- glossary:start -->", "<!-- glossary:end -->"
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
# An inline code span that starts with one of these words is a command an operator types.
COMMAND_WORDS = (
    "fleet", "mosquitto_pub", "mosquitto_sub", "mosquitto_passwd", "mosquitto", "pip",
    "python", "python3", "bash", "docker", "playwright", "apt-get", "openssl", "pytest",
    "ulimit", "nats-server", "pybabel", ".venv/bin/",
)


@dataclass(frozen=True)
class Heading:
    """One ATX heading: its level, its text, its anchor and where it is."""

    level: int
    text: str
    anchor: str
    line: int


@dataclass(frozen=True)
class CodeBlock:
    """One fenced or indented code block, with the heading it sits under."""

    info: str
    body: str
    line: int
    section: str


@dataclass(frozen=True)
class Table:
    """One pipe table: its shape (rows below the header, columns) and where it is."""

    rows: int
    columns: int
    line: int
    section: str


@dataclass
class Doc:
    """The parts of one README that the translation must keep."""

    path: Path
    headings: list[Heading] = field(default_factory=list)
    blocks: list[CodeBlock] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: dict[str, int] = field(default_factory=dict)
    env_vars: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    code_spans: dict[str, int] = field(default_factory=dict)
    sections: dict[int, str] = field(default_factory=dict)

    def section_at(self, line: int) -> str:
        """The heading (as `## text`) that a line falls under."""
        name = "(before the first heading)"
        for heading in self.headings:
            if heading.line > line:
                break
            name = f"{'#' * heading.level} {heading.text}"
        return name

    def where(self, line: int) -> str:
        """`README.md line 12, section '## Quick start'`."""
        return f"{self.path.name} line {line}, section '{self.section_at(line)}'"


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation gone, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _heading(match: re.Match[str], line: int, seen: dict[str, int]) -> Heading:
    raw = match.group(2)
    explicit = EXPLICIT_ANCHOR.search(raw)
    text = EXPLICIT_ANCHOR.sub("", raw).strip()
    if explicit:
        anchor = explicit.group(1)
    else:
        anchor = github_slug(text)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        if count:
            anchor = f"{anchor}-{count}"
    return Heading(len(match.group(1)), text, anchor, line)


def _indented_block_starts(lines: list[str], index: int, in_list: bool) -> bool:
    """An indented code block: 4+ spaces after a blank line, not inside a list item."""
    return (
        lines[index].startswith("    ")
        and index > 0
        and not lines[index - 1].strip()
        and not in_list
    )


def _scan_prose(doc: Doc, paragraph: list[tuple[int, str]]) -> None:
    """Links, inline code, commands and FLEET_* names of one paragraph (lines joined, as
    Markdown joins them, so a code span broken over two lines is read whole)."""
    if not paragraph:
        return
    first = paragraph[0][0]
    joined = "\n".join(text.strip() for _, text in paragraph)

    def line_of(offset: int) -> int:
        return first + joined.count("\n", 0, offset)

    for match in list(LINK.finditer(joined)) + list(HTML_SRC.finditer(joined)):
        doc.links.setdefault(match.group(1), line_of(match.start()))
    for match in INLINE_CODE.finditer(joined):
        span = " ".join(match.group(2).split())
        doc.code_spans.setdefault(span, line_of(match.start()))
        if span.split(" ")[0] in COMMAND_WORDS or span.startswith(".venv/bin/"):
            doc.commands.setdefault(span, line_of(match.start()))
    for match in ENV_VAR.finditer(joined):
        doc.env_vars.setdefault(match.group(0), line_of(match.start()))


def parse(path: Path) -> Doc:
    """Split a Markdown file into headings, code blocks, links, env var names and commands."""
    doc = Doc(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    seen: dict[str, int] = {}
    index, in_list, in_glossary = 0, False, False
    paragraph: list[tuple[int, str]] = []
    while index < len(lines):
        text, number = lines[index], index + 1
        fence = FENCE.match(text)
        heading = HEADING.match(text)
        starts_table = text.startswith("|") and not in_glossary
        if (fence or heading or starts_table or not text.strip()
                or _indented_block_starts(lines, index, in_list)):
            _scan_prose(doc, paragraph)
            paragraph = []
        if fence:
            index = _read_fenced(doc, lines, index, fence)
            continue
        if _indented_block_starts(lines, index, in_list):
            index = _read_indented(doc, lines, index)
            continue
        if text.startswith("|") and not in_glossary:
            index = _read_table(doc, lines, index)
            continue
        if text.strip() == GLOSSARY_START:
            in_glossary = True
        elif text.strip() == GLOSSARY_END:
            in_glossary = False
        if heading:
            doc.headings.append(_heading(heading, number, seen))
            _scan_prose(doc, [(number, text)])
            in_list = False
        elif text.strip():
            paragraph.append((number, text))
            if LIST_ITEM.match(text):
                in_list = True
            elif not text.startswith(" "):
                in_list = False
        index += 1
    _scan_prose(doc, paragraph)
    return doc


def _read_fenced(doc: Doc, lines: list[str], start: int, fence: re.Match[str]) -> int:
    marker, body = fence.group(2), []
    index = start + 1
    while index < len(lines) and not lines[index].strip().startswith(marker):
        body.append(lines[index])
        index += 1
    for name in ENV_VAR.findall("\n".join(body)):
        doc.env_vars.setdefault(name, start + 1)
    doc.blocks.append(
        CodeBlock(fence.group(3).strip(), "\n".join(body), start + 1, doc.section_at(start + 1))
    )
    return index + 1


def _read_indented(doc: Doc, lines: list[str], start: int) -> int:
    body, index = [], start
    while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
        body.append(lines[index][4:])
        index += 1
    while body and not body[-1].strip():
        body.pop()
    for name in ENV_VAR.findall("\n".join(body)):
        doc.env_vars.setdefault(name, start + 1)
    doc.blocks.append(CodeBlock("(indented)", "\n".join(body), start + 1, doc.section_at(start + 1)))
    return index


def _read_table(doc: Doc, lines: list[str], start: int) -> int:
    """A pipe table: its rows are scanned as prose (links, code), its shape is kept."""
    index = start
    while index < len(lines) and lines[index].startswith("|"):
        _scan_prose(doc, [(index + 1, lines[index])])
        index += 1
    separator = lines[start + 1] if start + 1 < index else lines[start]
    columns = len([cell for cell in separator.strip().strip("|").split("|")])
    doc.tables.append(Table(index - start - 2, columns, start + 1, doc.section_at(start + 1)))
    return index
