"""Test helpers for avatars: access tokens made directly, and PNG character cards made with Pillow."""

import base64
import hashlib
import io
import json
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone
from PIL import Image, PngImagePlugin

from accounts.models import ApiToken, TokenKind


def access_token_for(user: User) -> str:
    """A working access token for `user`, stored the way accounts stores them (SHA-256 hex)."""
    raw = secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user,
        kind=TokenKind.ACCESS,
        token_hash=hashlib.sha256(raw.encode()).hexdigest(),
        family=uuid.uuid4(),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    return raw


def auth_header(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token_for(user)}"}


def png_bytes(*, size: tuple[int, int] = (4, 4), chunks: dict[str, str] | None = None, itxt: bool = False) -> bytes:
    """A real PNG with the given text chunks (tEXt, or iTXt when `itxt`)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (chunks or {}).items():
        if itxt:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def card_b64(card: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(card).encode()).decode()


def png_card(card: dict[str, Any], *, key: str = "chara", itxt: bool = False) -> bytes:
    return png_bytes(chunks={key: card_b64(card)}, itxt=itxt)
