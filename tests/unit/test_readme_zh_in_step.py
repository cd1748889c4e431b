"""README.zh-CN.md stays in step with README.md.

Each check fails with what is missing, in which file, where, and how to fix it, so whoever
adds a section to README.md can see exactly what the Chinese file still lacks. The rules
(see docs/i18n.md): the same headings in the same order, each Chinese heading carrying
``<a id="…"></a>`` with the anchor of its English counterpart; the same code blocks byte for
byte; the same link and image targets; the same ``FLEET_*`` names; the same commands and
inline code; each file linking to the other at the top; the glossary being docs/i18n.md's.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.readme_pair import CodeBlock, Doc, parse

ROOT = Path(__file__).resolve().parents[2]
EN_PATH, ZH_PATH = ROOT / "README.md", ROOT / "README.zh-CN.md"
I18N_PATH = ROOT / "docs" / "i18n.md"
GLOSSARY_START, GLOSSARY_END = "<!-- glossary:start -->", "<!-- glossary:end -->"
FIX = "Fix: translate what README.md added (or remove what it dropped), keeping it verbatim."


@pytest.fixture(scope="module")
def en() -> Doc:
    return parse(EN_PATH)


@pytest.fixture(scope="module")
def zh() -> Doc:
    assert ZH_PATH.exists(), "README.zh-CN.md is missing: translate README.md into it (docs/i18n.md)"
    return parse(ZH_PATH)


def _fail(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"README.zh-CN.md is out of step with README.md ({what}):\n- "
                    + "\n- ".join(problems) + f"\n{FIX} See docs/i18n.md.", pytrace=False)


def test_each_readme_links_to_the_other(en: Doc, zh: Doc) -> None:
    problems = []
    if "README.zh-CN.md" not in en.links:
        problems.append("README.md has no link to README.zh-CN.md near the top: add "
                        "'中文说明: [README.zh-CN.md](README.zh-CN.md)' under its title")
    if "README.md" not in zh.links:
        problems.append("README.zh-CN.md has no link to README.md near the top: add "
                        "'English: [README.md](README.md)' under its title")
    _fail(problems, "language links")


def test_every_chinese_heading_names_its_english_anchor(zh: Doc) -> None:
    lines = ZH_PATH.read_text(encoding="utf-8").splitlines()
    problems = [f"README.zh-CN.md line {h.line} '{'#' * h.level} {h.text}' has no "
                f"<a id=\"…\"></a>: end it with the anchor of its README.md heading, e.g. "
                f"'## 快速开始 <a id=\"quick-start\"></a>'"
                for h in zh.headings if '<a id="' not in lines[h.line - 1]]
    _fail(problems, "heading anchors")


def test_same_headings_in_the_same_order(en: Doc, zh: Doc) -> None:
    en_keys = [(h.level, h.anchor) for h in en.headings]
    zh_keys = [(h.level, h.anchor) for h in zh.headings]
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=en_keys, b=zh_keys, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            after = (f"after its heading with <a id=\"{zh.headings[b1 - 1].anchor}\"> (line "
                     f"{zh.headings[b1 - 1].line})" if b1 else "at its top")
            for h in en.headings[a1:a2]:
                problems.append(
                    f"README.md line {h.line} has section '{'#' * h.level} {h.text}', missing "
                    f"from README.zh-CN.md: add '{'#' * h.level} <中文标题> <a id=\"{h.anchor}\">"
                    f"</a>' and its translation {after}")
                after = f"right after the section <a id=\"{h.anchor}\"> you add"
        if op in ("insert", "replace"):
            for h in zh.headings[b1:b2]:
                problems.append(
                    f"README.zh-CN.md line {h.line} has '{'#' * h.level} {h.text}' "
                    f"(<a id=\"{h.anchor}\">, level {h.level}) with no heading of that anchor and "
                    f"level at that place in README.md: fix its anchor/level, or remove it")
    en_levels, zh_levels = Counter(k[0] for k in en_keys), Counter(k[0] for k in zh_keys)
    if en_levels != zh_levels and not problems:
        problems.append(f"heading counts per level differ: README.md {dict(en_levels)}, "
                        f"README.zh-CN.md {dict(zh_levels)}")
    _fail(problems, "headings")


def test_same_code_blocks_in_the_same_order(en: Doc, zh: Doc) -> None:
    en_keys = [(b.info, b.body) for b in en.blocks]
    zh_keys = [(b.info, b.body) for b in zh.blocks]
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=en_keys, b=zh_keys, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            for offset, block in enumerate(en.blocks[a1:a2]):
                first = block.body.splitlines()[0] if block.body else "(empty)"
                counterpart = zh.blocks[b1 + offset] if op == "replace" and b1 + offset < b2 else None
                problems.append(
                    f"code block at README.md line {block.line} (section '{block.section}', "
                    f"starting '{first[:70]}') is missing or changed in README.zh-CN.md"
                    f"{_first_difference(block, counterpart)}: copy it there byte for byte "
                    f"(code blocks are never translated)")
        if op in ("insert", "replace"):
            for block in zh.blocks[b1:b2]:
                problems.append(
                    f"code block at README.zh-CN.md line {block.line} (section '{block.section}') "
                    f"matches none at that place in README.md: make it identical to README.md's")
    _fail(problems, "code blocks")


def test_same_tables_in_the_same_order(en: Doc, zh: Doc) -> None:
    en_keys = [(t.rows, t.columns) for t in en.tables]
    zh_keys = [(t.rows, t.columns) for t in zh.tables]
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=en_keys, b=zh_keys, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            problems += [f"table at README.md line {t.line} (section '{t.section}', {t.rows} rows "
                         f"× {t.columns} columns) has no table of that shape at that place in "
                         f"README.zh-CN.md: translate it row for row, cell for cell"
                         for t in en.tables[a1:a2]]
        if op in ("insert", "replace"):
            problems += [f"table at README.zh-CN.md line {t.line} (section '{t.section}', "
                         f"{t.rows} rows × {t.columns} columns) matches no table of README.md at "
                         f"that place: give it README.md's rows and columns"
                         for t in zh.tables[b1:b2]]
    _fail(problems, "tables")


def _first_difference(block: CodeBlock, other: CodeBlock | None) -> str:
    """Where a changed block first differs: ' (README.zh-CN.md line 12 has …, not …)'."""
    if other is None:
        return ""
    if other.info != block.info:
        return (f" (README.zh-CN.md line {other.line} opens it as '{other.info}', "
                f"not '{block.info}')")
    ours, theirs = block.body.splitlines(), other.body.splitlines()
    for index, (line, their_line) in enumerate(zip(ours, theirs)):
        if line != their_line:
            return (f" (README.zh-CN.md line {other.line + 1 + index} has '{their_line[:60]}' "
                    f"where README.md has '{line[:60]}')")
    return f" (README.zh-CN.md line {other.line}: {len(theirs)} lines instead of {len(ours)})"


def _compare_sets(en: Doc, zh: Doc, attribute: str, label: str) -> list[str]:
    ours, theirs = getattr(en, attribute), getattr(zh, attribute)
    problems = [f"{label} '{item}' ({en.where(line)}) is missing from README.zh-CN.md: "
                f"keep it unchanged in that section's translation"
                for item, line in ours.items() if item not in theirs]
    problems += [f"{label} '{item}' ({zh.where(line)}) is not in README.md: remove it from "
                 f"README.zh-CN.md, or add it to README.md"
                 for item, line in theirs.items() if item not in ours]
    return problems


def _as_english(target: str) -> str:
    """A Chinese screenshot `shot.zh-CN.png` stands for README.md's `shot.png`."""
    return re.sub(r"\.zh-CN(\.[A-Za-z0-9]+)$", r"\1", target)


def test_same_links_and_images(en: Doc, zh: Doc) -> None:
    ours = {target: line for target, line in en.links.items() if target != "README.zh-CN.md"}
    theirs = {_as_english(target): line for target, line in zh.links.items()
              if target != "README.md"}
    pair = Doc(en.path, headings=en.headings, links=ours), Doc(zh.path, headings=zh.headings,
                                                               links=theirs)
    _fail(_compare_sets(*pair, "links", "link/image target"), "links and images")


def test_relative_links_reach_a_file(en: Doc, zh: Doc) -> None:
    problems = [f"link/image target '{target}' ({doc.where(line)}) is no file of the repository: "
                f"fix the path, or add the file"
                for doc in (en, zh) for target, line in doc.links.items()
                if not re.match(r"^(#|[a-z]+:)", target)
                and not (ROOT / target.split("#")[0]).exists()]
    _fail(problems, "relative links")


def test_in_page_links_reach_a_heading(zh: Doc) -> None:
    anchors = {h.anchor for h in zh.headings}
    problems = [f"link '{target}' ({zh.where(line)}) reaches no heading: a heading needs "
                f"<a id=\"{target[1:]}\"></a>"
                for target, line in zh.links.items()
                if target.startswith("#") and target[1:] not in anchors]
    _fail(problems, "in-page links")


def test_same_env_var_names(en: Doc, zh: Doc) -> None:
    _fail(_compare_sets(en, zh, "env_vars", "setting"), "FLEET_* names")


def test_same_commands(en: Doc, zh: Doc) -> None:
    _fail(_compare_sets(en, zh, "commands", "command"), "commands in inline code")


def test_every_inline_code_of_the_english_is_kept(en: Doc, zh: Doc) -> None:
    problems = [f"inline code `{span}` ({en.where(line)}) is missing from README.zh-CN.md: "
                f"identifiers stay in English inside backticks"
                for span, line in en.code_spans.items() if span not in zh.code_spans]
    _fail(problems, "inline code")


def _glossary(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    start, end = text.find(GLOSSARY_START), text.find(GLOSSARY_END)
    if start < 0 or end < start:
        pytest.fail(f"{path.name} has no glossary between '{GLOSSARY_START}' and "
                    f"'{GLOSSARY_END}': put the terminology table (docs/i18n.md) there",
                    pytrace=False)
    return [line.strip() for line in text[start:end].splitlines()[1:] if line.strip()]


def test_the_glossary_is_the_one_in_docs_i18n() -> None:
    ours, shared = _glossary(ZH_PATH), _glossary(I18N_PATH)
    problems = [f"glossary row '{row}' of docs/i18n.md is missing from README.zh-CN.md"
                for row in shared if row not in ours]
    problems += [f"glossary row '{row}' of README.zh-CN.md is not in docs/i18n.md"
                 for row in ours if row not in shared]
    if not problems and ours != shared:
        problems.append("the glossary rows are in another order than in docs/i18n.md")
    if problems:
        pytest.fail("the terminology differs between README.zh-CN.md and docs/i18n.md:\n- "
                    + "\n- ".join(problems) + "\nFix: change both tables together (the dashboard's "
                    "catalogs use the same words).", pytrace=False)
