"""Every relative link in README.md and docs/ points to a file or folder of the repository (#18)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_exists(document: Path) -> None:
    targets = [target for target in LINK.findall(document.read_text()) if not re.match(r"^[a-z]+:|^#", target)]

    missing = [target for target in targets if not (document.parent / target.partition("#")[0]).exists()]

    assert missing == []
