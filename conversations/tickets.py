"""One-time websocket tickets: the app trades its bearer token for a ticket, so no token is put in a URL.

A ticket is bound to one user and one conversation, lives at most 60 seconds and works
once; minted with a session's bearer token, it dies with that session (logout). Only its
hash is stored (in the cache: Redis when REDIS_URL is set, so any server process can redeem
it).
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.cache import cache

from accounts.selectors import token_family_is_live
from conversations.selectors import conversation_get_owned
from core.outage import redis_needed

TICKET_TTL_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class TicketClaim:
    user_id: int
    conversation_id: int
    family: uuid.UUID | None = None  # the session that minted it: its sockets close when it ends


def _ticket_key(ticket: str) -> str:
    return "ws-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


@redis_needed()
def ws_ticket_issue(*, user: User, conversation_id: int, family: uuid.UUID | None = None) -> Ticket:
    conversation = conversation_get_owned(user=user, conversation_id=conversation_id)
    ticket = secrets.token_urlsafe(32)
    claim = (user.pk, conversation.pk, family.hex if family is not None else None)
    cache.set(_ticket_key(ticket), claim, timeout=TICKET_TTL_SECONDS)
    return Ticket(ticket=ticket, expires_in=TICKET_TTL_SECONDS)


@redis_needed()
def ws_ticket_redeem(*, ticket: str, conversation_id: int) -> TicketClaim | None:
    """The claim, once; None for an unknown, expired, reused or mismatched ticket."""
    if not ticket or len(ticket) > 128:
        return None
    key = _ticket_key(ticket)
    claim = cache.get(key)
    # delete() tells whether this caller removed the key: of two racing redeemers only one wins.
    if claim is None or not cache.delete(key):
        return None
    user_id, bound_conversation_id, family_hex = claim
    if bound_conversation_id != conversation_id:
        return None
    family = uuid.UUID(family_hex) if family_hex else None
    if family is not None and not token_family_is_live(family=family):
        return None  # minted before a logout
    return TicketClaim(user_id=user_id, conversation_id=bound_conversation_id, family=family)
