"""Opaque bearer tokens: made here, stored only as their SHA-256 hash."""

import hashlib
import secrets

# 32 random bytes: 43 URL-safe characters, far beyond guessing.
_TOKEN_BYTES = 32


def token_generate() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The hex SHA-256 digest the database keeps instead of the token.

    A fast hash is enough here (unlike for passwords): the tokens are long random strings,
    so there is no dictionary to try against a leaked table.
    """
    return hashlib.sha256(token.encode()).hexdigest()
