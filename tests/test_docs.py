"""The docs' pointers land: every `docs/NAME.md, "Title"` in the docs, the README, the code and the
benches names a file that exists and a section of it, a heading or a bold title, that begins with
Title. Sections move between files (a reference and its record); a pointer left behind is caught
here rather than by a reader."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
POINTER = re.compile(r'docs/([\w-]+\.md)`?,\s+"([^"]+)"')


def _flat(text: str) -> str:
    return " ".join(text.split())


def _unquoted(text: str) -> str:
    """A title holding quotes ("never seen") is pointed to with single quotes or none."""
    return re.sub("[\"']", "", text)


def _pointers():
    """(where, file, title) for each pointer; in Python, only a pointer within one line (a wrapped
    comment or string would carry its markers into the title)."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in POINTER.finditer(_flat(path.read_text())):
            yield path.name, m.group(1), m.group(2)
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "bench").glob("*.py")]):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in POINTER.finditer(line):
                yield f"{path.relative_to(ROOT)}:{n}", m.group(1), m.group(2)


def test_every_pointer_to_a_section_of_the_docs_lands_on_one():
    found, missing = 0, []
    for where, name, title in _pointers():
        target = ROOT / "docs" / name
        text = _unquoted(_flat(target.read_text())) if target.is_file() else ""
        title = _unquoted(_flat(title)).rstrip(".,;:")
        if not re.search(r"(\*\*|#+ )" + re.escape(title), text):
            missing.append(f'{where}: docs/{name}, "{title}"')
        found += 1
    assert found > 40  # the pattern still finds the docs' pointers
    assert not missing, "pointers to no section:\n" + "\n".join(missing)
