from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CARDS_DIR = Path(__file__).parent / "cards"


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Imported images go to a throw-away folder, never the project's media/."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def card_bytes() -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (CARDS_DIR / name).read_bytes()

    return read
