"""Rules and limits of account fields, shared by the API schemas and the services.

The schemas use the limits so they show in the OpenAPI document; the services enforce the
rules again because not every caller comes through the API (seed data, commands, tests).
"""

import re
import unicodedata

from core.errors import InvalidInput

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 40
# ASCII only: look-alike letters from other scripts would defeat case-insensitive uniqueness.
USERNAME_PATTERN = r"^[A-Za-z0-9._-]+$"
# Usernames made in the admin may follow Django's looser rules, so login accepts up to its limit.
LOGIN_USERNAME_MAX_LENGTH = 150

DISPLAY_NAME_MAX_LENGTH = 80

PASSWORD_MAX_LENGTH = 128
# Bounds the hashing work a login request can ask for without refusing a long admin-set password.
LOGIN_PASSWORD_MAX_LENGTH = 1024

TOKEN_MAX_LENGTH = 256

_USERNAME_RE = re.compile(USERNAME_PATTERN)
# Control characters and line breaks: the display name ends up in prompts and one-line UIs.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def username_clean(username: str) -> str:
    """Return the canonical (stripped, lower-case) form of a new username, or raise `InvalidInput`.

    3 to 40 characters, ASCII letters, digits, `.`, `_` and `-`.
    """
    cleaned = username.strip()
    if not USERNAME_MIN_LENGTH <= len(cleaned) <= USERNAME_MAX_LENGTH:
        raise InvalidInput(
            f"Username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long.", field="username"
        )
    if not _USERNAME_RE.match(cleaned):
        raise InvalidInput("Username may contain only letters, digits, '.', '_' and '-'.", field="username")
    return cleaned.lower()


def display_name_clean(display_name: str) -> str:
    """Return the display name stripped of surrounding spaces, or raise `InvalidInput`.

    At most 80 characters, no control characters or line breaks; may be empty.
    """
    cleaned = display_name.strip()
    if len(cleaned) > DISPLAY_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"Display name must be at most {DISPLAY_NAME_MAX_LENGTH} characters long.", field="display_name"
        )
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in cleaned):
        raise InvalidInput("Display name may not contain control characters or line breaks.", field="display_name")
    return cleaned
