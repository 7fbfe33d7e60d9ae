"""Changing the roster file in place: new entries are added to the text, so the other
entries, their layout and the file's comments stay as the coach wrote them.

Only when the text cannot be extended safely (e.g. ``runners: []`` written inline) is the
file rewritten from the validated model, which drops comments; the caller says so.
Every edit is checked with the real loader before it replaces the file, and the file
keeps its permissions (a roster may hold notification URLs with tokens).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from team.roster import Roster, RosterError

_TOP_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")
_ITEM = re.compile(r"^(\s*)-\s")


def flow_entry(item: Mapping[str, Any]) -> str:
    """One roster entry on one line, like ``{id: ana, name: Ana, team: harriers}``."""
    text = yaml.safe_dump(dict(item), default_flow_style=True, sort_keys=False, width=10_000)
    return text.strip()


def append_entry(text: str, section: str, item: Mapping[str, Any]) -> str | None:
    """``text`` with ``item`` appended to the top-level list ``section``; None if the
    section is written in a form a line cannot be appended to."""
    lines = text.splitlines()
    entry = flow_entry(item)
    start = next((i for i, line in enumerate(lines)
                  if re.match(rf"^{re.escape(section)}\s*:", line)), None)
    if start is None:
        body = text if not text or text.endswith("\n") else text + "\n"
        return f"{body}{section}:\n  - {entry}\n"
    rest = lines[start].split(":", 1)[1].split("#", 1)[0].strip()
    if rest:  # ``runners: []`` or an inline list: leave it to a rewrite
        return None
    end = next((i for i in range(start + 1, len(lines)) if _TOP_KEY.match(lines[i])),
               len(lines))
    found = (_ITEM.match(lines[i]) for i in range(start + 1, end))
    first = next((m for m in found if m is not None), None)
    indent = first.group(1) if first is not None else "  "
    # after the section's last non-blank line, so a comment heading the next key stays put
    last = max([start, *(i for i in range(start + 1, end)
                         if lines[i].strip() and not lines[i].lstrip().startswith("#"))])
    lines.insert(last + 1, f"{indent}- {entry}")
    return "\n".join(lines) + "\n"


def parse(text: str, path: Path) -> Roster:
    try:
        data = yaml.safe_load(text) or {}
        return Roster.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise RosterError(f"{path}: {exc}") from None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, keeping the file's permissions."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def added(path: Path, section: str, item: Mapping[str, Any]) -> tuple[str, Roster, bool]:
    """The file's new text with ``item`` added to ``section``, the roster it loads as, and
    whether the text was kept (False: rewritten from the model, comments dropped).

    Raises :class:`RosterError` when the result is not a valid roster.
    """
    old_text = path.read_text(encoding="utf-8") if path.exists() else ""
    old = parse(old_text, path)
    data = old.model_dump(mode="json")
    data[section].append(dict(item))
    try:
        wanted = Roster.model_validate(data)
    except ValueError as exc:
        raise RosterError(f"not added: {exc}") from None
    return _kept_or_rewritten(append_entry(old_text, section, item), wanted, path)


def _kept_or_rewritten(new_text: str | None, wanted: Roster, path: Path
                       ) -> tuple[str, Roster, bool]:
    """The edited text if it loads as ``wanted``, else ``wanted`` written out afresh."""
    if new_text is not None:
        try:
            if parse(new_text, path) == wanted:
                return new_text, wanted, True
        except RosterError:
            pass  # the text edit went wrong: rewrite instead
    dumped = yaml.safe_dump(wanted.model_dump(mode="json", exclude_defaults=True),
                            sort_keys=False)
    return dumped, wanted, False


def remove_entry(text: str, section: str, entry_id: str) -> str | None:
    """``text`` without the entry ``entry_id`` of the top-level list ``section``; None if
    it cannot be found as one list item."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(rf"^{re.escape(section)}\s*:\s*(#.*)?$", line)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if _TOP_KEY.match(lines[i])),
               len(lines))
    marks = [(i, m.group(1)) for i in range(start + 1, end) if (m := _ITEM.match(lines[i]))]
    # the section's own items, not those of a list inside an entry (a runner's shoes)
    items = [i for i, indent in marks if indent == marks[0][1]] if marks else []
    own = re.compile(rf"^\s*-\s*(\{{\s*)?id\s*:\s*['\"]?{re.escape(entry_id)}['\"]?\s*[,}}]?")
    for n, first in enumerate(items):
        if own.match(lines[first]):
            last = items[n + 1] if n + 1 < len(items) else end
            while last > first + 1 and not lines[last - 1].strip():
                last -= 1  # blank lines before the next key stay
            return "\n".join(lines[:first] + lines[last:]) + "\n"
    return None


def removed(path: Path, section: str, entry_id: str) -> tuple[str, Roster, bool]:
    """Like :func:`added`, for taking the entry ``entry_id`` out of ``section``."""
    old_text = path.read_text(encoding="utf-8")
    data = parse(old_text, path).model_dump(mode="json")
    data[section] = [e for e in data[section] if e["id"] != entry_id]
    try:
        wanted = Roster.model_validate(data)
    except ValueError as exc:
        raise RosterError(f"not removed: {exc}") from None
    return _kept_or_rewritten(remove_entry(old_text, section, entry_id), wanted, path)
