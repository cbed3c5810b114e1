"""What the README and docs/ say that code can check.

* The first ```python block under "## Python API" runs (offline, in seconds).
* The first ```text block under "## Command line" lists exactly the options the live ``softhebb``
  parser knows, subcommand by subcommand.
* Every relative link of README.md and docs/**/*.md points to a file of the repository (and, for a
  link into a Markdown file with a #fragment, to one of its headings).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(`{3,}|~{3,})")


def section(text: str, heading: str) -> str:
    """The lines from the ``heading`` line (a level-2 heading) to the next level-2 heading."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        pytest.fail(f"README.md has no {heading!r} heading")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1:end])


def first_block(text: str, language: str) -> str:
    """The body of the first fenced block opened with ``language``."""
    match = re.search(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S)
    if match is None:
        pytest.fail(f"no ```{language} block found")
    return match.group(1)


def test_python_api_example_runs(tmp_path, monkeypatch):
    code = first_block(section(README.read_text(), "## Python API"), "python")
    monkeypatch.chdir(tmp_path)  # anything the example writes stays out of the working tree
    exec(compile(code, f"{README}:python-api", "exec"), {"__name__": "readme_example"})


def readme_cli_options() -> dict[str, set[str]]:
    """``{subcommand: {--option, ...}}`` from the Command line block (option lines start with ``--``)."""
    block = first_block(section(README.read_text(), "## Command line"), "text")
    options: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        header = re.match(r"softhebb ([a-z-]+)", line)
        if header:
            current = header.group(1)
            options.setdefault(current, set())
            continue
        option = re.match(r"\s+(--[a-z-]+)", line)
        if option:
            assert current is not None, f"option line before any 'softhebb <command>' line: {line!r}"
            options[current].add(option.group(1))
    return options


def parser_options() -> dict[str, set[str]]:
    """``{subcommand: {--option, ...}}`` of the live parser, without -h/--help."""
    from experiments.cli import parser

    subparsers = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for action in sub._actions for s in action.option_strings
                   if s.startswith("--") and s != "--help"}
            for name, sub in subparsers.choices.items()}


def test_command_line_block_lists_every_option():
    documented, live = readme_cli_options(), parser_options()
    assert set(documented) == set(live), "subcommands differ"
    for name in live:
        assert documented[name] == live[name], (
            f"softhebb {name}: missing from README {sorted(live[name] - documented[name])}, "
            f"unknown to the parser {sorted(documented[name] - live[name])}")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, fenced = set(), {}, False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.extend(LINK.findall(re.sub(r"`[^`]*`", "", line)))
    return out


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    problems = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in resolved.parents and resolved != ROOT:
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)
