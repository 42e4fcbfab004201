"""Preparing a turn: what it reads, the mode it routes to, and the prompt it sends.

Nothing here writes (but the profile row of a user made outside the API, created on first
use). `turn_plan_make` reads the conversation (with its user, profile, summary and the
avatar's version) in one query, the history the summary does not cover, the remembered
facts and what recall finds in older messages (`turn_recall`, the recall app), asks the
pure crisis detector (`safety.detector`) about the user's recent messages, then the pure
mode router (`conversations.intents`), and builds the prompt (`conversations.context`,
`llm.prompts`): the crisis prompt for a flagged turn.
The result is a frozen `TurnPlan`: everything decided before the model is called and
before anything is stored.

Its last step is the daily quota (`llm.quotas.quota_admit`: the user's, and the avatar's own
when it has one), which reserves what the turn may spend on the counter rows, atomically, or
says why it is refused
(`TurnPlan.quota`); run.py then stores the user message and calls no model.
"""

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import intimate_block_reason
from conversations.context import ContextBudget, HistoryItem, context_build
from conversations.intents import RouteDecision, RouterSettings, route_message
from conversations.models import SAFETY_CRISIS, Conversation, Message, Role, Status
from conversations.selectors import AvatarForTurn, avatar_for_turn, message_dict
from conversations.turns.events import ModeChanged, SafetyAlert
from conversations.turns.request import Regenerate, TurnRequest
from core.db import CompiledQuery
from core.errors import Conflict, NotFound
from core.modes import Mode
from core.timezones import zone_or_utc
from images.prompts import picture_reply_note, picture_request_detect
from llm.base import ChatMessage, ToolSpec
from llm.catalog import model_choose, model_default, model_get
from llm.prompts import (
    PromptContext,
    crisis_fallback_line,
    crisis_prompt,
    post_history_prompt,
    system_prompt_for_mode,
)
from llm.quotas import QuotaExceeded, QuotaTicket, quota_admit, quota_limits_of
from memory.selectors import SummaryForPrompt, memory_list_for_prompt
from recall.prompt import RecallSection, recall_section_build
from recall.selectors import Recall, recall_for_turn
from recall.text import Speakers
from safety.detector import CrisisAssessment, crisis_assess
from safety.selectors import Resource, crisis_resources_for_locale
from secretary.tools import SECRETARY_TOOLS

logger = logging.getLogger("companion.recall")

FACTS_IN_PROMPT = 30
CRISIS_CONTEXT_MESSAGES = 4  # earlier user messages the crisis detector reads with the new one
SAFETY_BLOCK_REASON = "safety"  # why intimate mode is closed while a crisis is unresolved
HISTORY_UNBOUNDED = 2**62  # `before_id` of an ordinary turn: every message is before it


@dataclass(frozen=True, slots=True)
class TurnConversation:
    """What a turn reads of its conversation, its user and the summary: one query."""

    pk: int
    user_id: int
    avatar_id: int
    avatar_version: datetime  # the avatar's updated_at: the key of its per-version cache
    mode: str
    mode_locked: bool
    safety_state: str  # "crisis" from a flagged turn until the next calm one
    ai_notice_at: datetime | None
    username: str
    profile: Profile  # unsaved: read-only here
    summary: SummaryForPrompt | None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    role: str
    content: str
    status: str
    id: int = 0


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Everything a turn decided before it stores or streams anything."""

    conversation_id: int
    user_id: int
    avatar_id: int
    request: TurnRequest
    decision: RouteDecision
    mode_event: ModeChanged | None  # sent before reply.start; None when the mode stays
    mode_locked: bool
    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    fallback_lines: tuple[str, ...]
    last_fallback: str | None  # the fallback line last shown here, not to be repeated at once
    created_at: datetime
    crisis: CrisisAssessment  # the detector's answer on the user's recent messages
    resources: tuple[Resource, ...]  # the crisis lines of the user's locale, on a flagged turn
    safety_state: str  # the conversation's state after this turn: "crisis" or "" (calm)
    ai_notice: bool  # the AI notice is due and goes out with this turn
    tools: tuple[ToolSpec, ...] = ()  # offered to the model: the secretary's, in secretary mode only
    regenerate: "RegenerateTarget | None" = None  # a new reply to a stored user message (maybe edited)
    model: str | None = None  # the model asked for (request, avatar, LLM_MODELS); None: the provider's own
    # The user's daily quota: a reservation to settle when the reply ends, a refusal (no model
    # call), or None (no limit).
    quota: QuotaTicket | QuotaExceeded | None = None
    zone_name: str = "UTC"  # the user's zone: the day their spending counts on
    # What the user asked a picture of ("" for one of the avatar itself); None: no picture asked for.
    # The picture comes as a message of its own after reply.end (images.services.chat_picture_request).
    picture: str | None = None
    recall: dict[str, Any] | None = None  # what recall found and why (Recall.as_record), stored on the reply

    @property
    def mode(self) -> str:
        return self.decision.mode

    @property
    def quota_refusal(self) -> QuotaExceeded | None:
        return self.quota if isinstance(self.quota, QuotaExceeded) else None

    @property
    def quota_ticket(self) -> QuotaTicket | None:
        return self.quota if isinstance(self.quota, QuotaTicket) else None


def turn_conversation_get(*, user_id: int, conversation_id: int) -> TurnConversation:
    """The user's conversation as a turn needs it; another user's is a `NotFound`."""
    rows = _TURN_CONVERSATION.rows(user_id=user_id, conversation_id=conversation_id)
    if not rows:
        raise NotFound("Conversation not found.")
    row = rows[0]
    pk, owner_id, avatar_id, avatar_version, mode, mode_locked, safety_state, ai_notice_at, username = row[:9]
    profile_id, display_name, adult_confirmed_at, intimate_opt_in, locale, zone, summary_text, covers_until = row[9:17]
    quota_tokens, quota_usd, quota_images, recall_across_avatars = row[17:]
    if profile_id is None:  # no profile row yet (a user made outside the API)
        profile, _ = Profile.objects.get_or_create(user_id=owner_id)
    else:
        profile = Profile(
            pk=profile_id,
            user_id=owner_id,
            display_name=display_name,
            adult_confirmed_at=adult_confirmed_at,
            intimate_opt_in=intimate_opt_in,
            locale=locale,
            timezone=zone,
            quota_daily_tokens=quota_tokens,
            quota_daily_usd=quota_usd,
            quota_daily_images=quota_images,
            recall_across_avatars=recall_across_avatars,
        )
    return TurnConversation(
        pk=pk,
        user_id=owner_id,
        avatar_id=avatar_id,
        avatar_version=avatar_version,
        mode=mode,
        mode_locked=mode_locked,
        safety_state=safety_state,
        ai_notice_at=ai_notice_at,
        username=username,
        profile=profile,
        summary=SummaryForPrompt(text=summary_text, covers_until=covers_until) if summary_text is not None else None,
    )


@dataclass(frozen=True, slots=True)
class RegenerateTarget:
    """The user message a regeneration answers again, as read under the conversation's lock."""

    user_message_id: int
    content: str  # the text the new reply answers: the stored one, or the edit
    edited: bool
    replies: tuple[int, ...]  # its earlier replies: kept as alternatives, or replaced by an edit


def regenerate_target_get(*, conversation_id: int, regenerate: Regenerate) -> RegenerateTarget:
    """The conversation's last user message and its replies. Call it holding the conversation's lock.

    `regenerate.message_id` names the message the client means: another conversation's (or
    an assistant message) is a `NotFound`, an older user message a `Conflict`.
    """
    last = (
        Message.objects.filter(conversation_id=conversation_id, role=Role.USER)
        .order_by("-id")
        .values_list("id", "content")
        .first()
    )
    if regenerate.message_id is not None and regenerate.message_id != (last[0] if last else None):
        named = Message.objects.filter(pk=regenerate.message_id, conversation_id=conversation_id, role=Role.USER)
        if not named.exists():
            raise NotFound("Message not found.", field="message_id")
        raise Conflict("Only the last message you sent can be edited or answered again.", field="message_id")
    if last is None:
        raise Conflict("There is no message of yours to answer again.")
    replies = Message.objects.filter(reply_to_id=last[0], role=Role.ASSISTANT).order_by("id").values_list("id")
    return RegenerateTarget(
        user_message_id=last[0],
        content=regenerate.content if regenerate.content is not None else last[1],
        edited=regenerate.content is not None,
        replies=tuple(reply_id for (reply_id,) in replies),
    )


def message_list_for_prompt(
    *, conversation_id: int, after_id: int, before_id: int = HISTORY_UNBOUNDED
) -> list[HistoryRow]:
    """The newest messages the summary does not cover (and older than `before_id`), oldest
    first: one query, bounded by the context budget. Superseded alternatives are left out."""
    budget = ContextBudget.from_django_settings()
    rows = _HISTORY.rows(
        shape=budget.max_pairs * 2 + 2, conversation_id=conversation_id, after_id=after_id, before_id=before_id
    )
    rows.reverse()
    return [HistoryRow(*row) for row in rows]


def turn_plan_make(
    *,
    conversation: TurnConversation,
    request: TurnRequest,
    tools_supported: bool = False,
    regenerate: RegenerateTarget | None = None,
) -> TurnPlan:
    """Assess the message for a crisis, route it and build the prompt. The caller holds the
    conversation's lock, so no other message can be stored in it before this turn's are.

    A regeneration (`regenerate`) answers a stored user message again: its history is what
    came before that message, and `request.content` is its text (or the edit).

    The secretary's tools are offered in secretary mode when the provider supports them, never
    in intimate mode, and never on a crisis turn (its reply is about the person, not a to-do).
    """
    avatar = avatar_for_turn(avatar_id=conversation.avatar_id, version=conversation.avatar_version)
    profile = conversation.profile
    summary = conversation.summary
    history = message_list_for_prompt(
        conversation_id=conversation.pk,
        after_id=summary.covers_until if summary else 0,
        before_id=regenerate.user_message_id if regenerate else HISTORY_UNBOUNDED,
    )
    # Before the mode router: a crisis in either mode, read with the user's recent messages.
    recent = [m.content for m in history if m.role == Role.USER][-CRISIS_CONTEXT_MESSAGES:]
    crisis = crisis_assess([*recent, request.content])
    # Intimate mode stays closed on a flagged turn and on the calm turn after it (docs/safety.md).
    safety_hold = crisis.crisis or conversation.safety_state == SAFETY_CRISIS
    decision, mode_event = _mode_route(
        conversation, avatar, profile, request.content, safety_block=SAFETY_BLOCK_REASON if safety_hold else None
    )
    facts = memory_list_for_prompt(
        user_id=conversation.user_id, avatar_id=conversation.avatar_id, limit=FACTS_IN_PROMPT
    )
    now = timezone.now()
    speakers = Speakers(user=profile.display_name or conversation.username, avatar=avatar.persona.name)
    recalled = turn_recall(
        conversation=conversation, speakers=speakers, text=request.content, history=history, facts=facts, now=now
    )
    model = model_choose(requested=request.model, avatar_default=avatar.default_model)
    spec = model_get(model) if model is not None else None
    tools_supported = tools_supported and (spec is None or spec.tools)
    tools = SECRETARY_TOOLS if tools_supported and decision.mode == Mode.SECRETARY and not crisis.crisis else ()
    prompt_context = PromptContext(
        persona=avatar.persona,
        user_display_name=speakers.user,
        facts=facts,
        now=now,
        timezone_name=profile.timezone,
        actions=bool(tools),
    )
    resources: tuple[Resource, ...] = ()
    fallback_lines = avatar.fallback_lines
    if crisis.crisis:
        resources = crisis_resources_for_locale(locale=profile.locale)
        lines = tuple(r.as_line() for r in resources)
        system_prompt = crisis_prompt(prompt_context, resources=lines)
        post_history = ""  # the card's last word has no place in a crisis reply
        fallback_lines = (crisis_fallback_line(resources=lines),)  # if the model fails: help, not a quip
    else:
        system_prompt = system_prompt_for_mode(decision.mode, prompt_context)
        post_history = post_history_prompt(prompt_context)
    picture = None if crisis.crisis or regenerate is not None else picture_request_detect(request.content)
    if picture is not None:
        post_history = "\n\n".join(part for part in (post_history, picture_reply_note(picture)) if part)
    built = context_build(
        system_prompt=system_prompt,
        summary=summary.text if summary else None,
        history=[HistoryItem(role=m.role, content=m.content) for m in history],
        user_message=request.content,
        post_history_instructions=post_history,
        recalled=recalled.section.text,
        budget=ContextBudget.from_django_settings(),
    )
    return TurnPlan(
        conversation_id=conversation.pk,
        user_id=conversation.user_id,
        avatar_id=avatar.id,
        request=request,
        decision=decision,
        mode_event=mode_event,
        mode_locked=conversation.mode_locked if decision.lock is None else decision.lock,
        messages=tuple(built.messages),
        prompt_tokens=built.prompt_tokens,
        fallback_lines=fallback_lines,
        last_fallback=next((m.content for m in reversed(history) if m.status == Status.FALLBACK), None),
        created_at=now,
        crisis=crisis,
        resources=resources,
        safety_state=SAFETY_CRISIS if crisis.crisis else "",
        ai_notice=ai_notice_due(last=conversation.ai_notice_at, now=now),
        tools=tools,
        regenerate=regenerate,
        model=model,
        picture=picture,
        quota=quota_admit(
            user_id=conversation.user_id,
            limits=quota_limits_of(profile),
            zone_name=profile.timezone,
            model=model or model_default().id,
            prompt_tokens=built.prompt_tokens,
            max_tokens=request.max_tokens or int(settings.LLM_MAX_TOKENS),
            now=now,
            avatar_id=avatar.id,
            avatar_limits=avatar.quota,
        ),
        zone_name=profile.timezone,
        recall=recalled.record,
    )


@dataclass(frozen=True, slots=True)
class TurnRecall:
    section: RecallSection
    record: dict[str, Any] | None  # None when recall is off


def turn_recall(
    *,
    conversation: TurnConversation,
    speakers: Speakers,
    text: str,
    history: list[HistoryRow],
    facts: tuple[str, ...],
    now: datetime,
) -> TurnRecall:
    """What this user told the avatar before that bears on `text`, as the prompt's recalled section.

    A failing search costs the turn its recall, never the turn: it is logged (no text) and
    the reply goes on without it.
    """
    budget = int(settings.RECALL_TOKEN_BUDGET)
    if budget <= 0:
        return TurnRecall(section=RecallSection(text="", message_ids=(), fact_ids=(), tokens=0), record=None)
    # Inside a transaction a failed query would poison what follows (PostgreSQL): a savepoint keeps it apart.
    guard: AbstractContextManager[Any] = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with guard:
            recall = recall_for_turn(
                user_id=conversation.user_id,
                avatar_id=conversation.avatar_id,
                conversation_id=conversation.pk,
                across_avatars=conversation.profile.recall_across_avatars,
                speakers=speakers,
                text=text,
                window=[(row.id, row.role, row.content) for row in history],
                today=now.astimezone(zone_or_utc(conversation.profile.timezone)).date(),
            )
    except Exception as exc:  # a broken index must not cost the user their reply
        logger.warning(
            "recall failed; the turn goes on without it",
            extra={"data": {"conversation_id": conversation.pk, "error": type(exc).__name__}},
        )
        recall = Recall(error=type(exc).__name__)
    section = recall_section_build(
        recall=recall,
        speakers=speakers,
        budget_tokens=budget,
        zone_name=conversation.profile.timezone or "UTC",
        known_facts=facts,
    )
    record = recall.as_record(used=section.message_ids, used_facts=section.fact_ids)
    record["tokens"] = section.tokens
    return TurnRecall(section=section, record=record)


def ai_notice_due(*, last: datetime | None, now: datetime) -> bool:
    """Whether the AI notice goes out now: at a conversation's first turn, then every SAFETY_AI_NOTICE_HOURS."""
    if last is None:
        return True
    return now - last >= timedelta(hours=float(settings.SAFETY_AI_NOTICE_HOURS))


def _mode_route(
    conversation: TurnConversation, avatar: AvatarForTurn, profile: Profile, content: str, *, safety_block: str | None
) -> tuple[RouteDecision, ModeChanged | None]:
    block: str | None = safety_block or intimate_block_reason(profile=profile, avatar_allows=avatar.intimate_allowed)
    current = conversation.mode
    gate_event: ModeChanged | None = None
    if current == Mode.INTIMATE and block:
        # The gate closed since the last turn (opt-in withdrawn, avatar changed): leave intimate mode.
        current = Mode.SECRETARY
        gate_event = ModeChanged(
            mode=current, previous=Mode.INTIMATE, source="gate", blocked=Mode.INTIMATE, blocked_reason=block
        )
    decision = route_message(
        content,
        current_mode=current,
        locked=conversation.mode_locked,
        bank=avatar.bank,
        intimate_block=block,
        settings=RouterSettings.from_django_settings(),
    )
    locked = conversation.mode_locked if decision.lock is None else decision.lock
    if decision.switch or decision.blocked or locked != conversation.mode_locked:
        event = ModeChanged(
            mode=decision.mode,
            previous=conversation.mode,
            source=decision.source,
            matched=decision.matched,
            score=round(decision.score, 1),
            blocked=decision.blocked,
            blocked_reason=decision.blocked_reason,
            locked=locked,
        )
        return decision, event
    return decision, gate_event


def _turn_conversation_query(*, user_id: int, conversation_id: int) -> QuerySet[Conversation, Any]:
    return Conversation.objects.filter(pk=conversation_id, user_id=user_id).values_list(
        "id",
        "user_id",
        "avatar_id",
        "avatar__updated_at",
        "mode",
        "mode_locked",
        "safety_state",
        "ai_notice_at",
        "user__username",
        "user__profile__id",
        "user__profile__display_name",
        "user__profile__adult_confirmed_at",
        "user__profile__intimate_opt_in",
        "user__profile__locale",
        "user__profile__timezone",
        "summary__text",
        "summary__covers_until_id",
        "user__profile__quota_daily_tokens",
        "user__profile__quota_daily_usd",
        "user__profile__quota_daily_images",
        "user__profile__recall_across_avatars",
    )


def _history_query(*, conversation_id: int, after_id: int, before_id: int, shape: int) -> QuerySet[Message, Any]:
    return (
        Message.objects.filter(conversation_id=conversation_id, pk__gt=after_id, pk__lt=before_id, superseded=False)
        .exclude(status=Status.STREAMING)
        .order_by("-id")
        .values_list("role", "content", "status", "id")[:shape]
    )


# Read on every turn before the model is called: compiled once (core/db.py).
_TURN_CONVERSATION = CompiledQuery(_turn_conversation_query, arguments=("user_id", "conversation_id"))
_HISTORY = CompiledQuery(_history_query, arguments=("conversation_id", "after_id", "before_id"))


@dataclass(frozen=True, slots=True)
class DuplicateTurn:
    """A message whose `client_id` is already stored: the turn it started is the answer."""

    conversation_id: int
    mode: str
    user_message: dict[str, Any]
    reply: dict[str, Any] | None  # None while that turn's reply has no row yet
    # A crisis message sent again: its safety frame again, for the device that missed the first.
    safety_alert: SafetyAlert | None = None


def turn_duplicate_get(*, conversation_id: int, mode: str, client_id: str | None) -> DuplicateTurn | None:
    """The turn this `client_id` already started in the conversation, if any."""
    if client_id is None:
        return None
    existing = Message.objects.filter(conversation_id=conversation_id, client_id=client_id, role=Role.USER).first()
    if existing is None:
        return None
    reply = Message.objects.filter(reply_to_id=existing.pk).order_by("superseded", "-id").first()  # the selected one
    return DuplicateTurn(
        conversation_id=conversation_id,
        mode=mode,
        user_message={**message_dict(existing), "duplicate": True},
        reply=message_dict(reply) if reply else None,
        safety_alert=_safety_alert_again(existing) if existing.safety == SAFETY_CRISIS else None,
    )


def _safety_alert_again(message: Message) -> SafetyAlert:
    """The flagged message's safety frame, with today's lines of its owner's locale."""
    owner = Profile.objects.filter(user__conversations=message.conversation_id)
    locale = owner.values_list("locale", flat=True).first()
    resources = crisis_resources_for_locale(locale=locale or "")
    return SafetyAlert(message_id=message.pk, resources=tuple(resource.as_dict() for resource in resources))
