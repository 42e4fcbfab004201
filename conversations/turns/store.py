"""The turn's writes: its messages when it starts, the reply's outcome when it ends.

`turn_messages_store` writes the user message, the reply's "streaming" row, the
conversation's mode and safety state and the day's safety counts in one transaction,
while the model call is already under way.
`reply_outcome_store` finishes the reply's row with one UPDATE, then counts what the reply
cost on the user's day (giving back the quota's reservation).
A turn refused by the quota stores the user message alone (`with_reply=False`).
"""

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from conversations.models import Conversation, Message, Origin, Role, Status
from conversations.selectors import message_dict
from conversations.turns.prepare import DuplicateTurn, RegenerateTarget, TurnPlan, turn_duplicate_get
from conversations.turns.stream import ReplyOutcome
from core.errors import Conflict
from llm.catalog import call_cost_usd, usd_text
from llm.quotas import quota_settle
from memory.services import summary_discard_covering
from safety.services import safety_counts_add


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """The rows a turn wrote when it started, as clients see them."""

    user_message: dict[str, Any]
    reply: dict[str, Any]  # the reply's row while it streams; empty when the quota refused the turn
    regenerated: bool = False  # the user message was stored before: this is another reply to it
    edited: bool = False  # ...and its text was just changed

    @property
    def reply_id(self) -> int:
        reply_id: int = self.reply["id"]
        return reply_id


def turn_messages_store(plan: TurnPlan, *, with_reply: bool = True) -> StoredTurn | DuplicateTurn:
    """Store the user message, the reply's "streaming" row and the conversation's mode.

    `with_reply=False` (the quota refused the turn): the user message alone, as the contract asks.

    When the same `client_id` raced in from another socket, the first one stored wins and
    its turn is returned as a `DuplicateTurn`.
    """
    if plan.regenerate is not None:
        return _regenerated_turn_store(plan, plan.regenerate)
    request, decision = plan.request, plan.decision
    conversation_id = plan.conversation_id
    try:
        with transaction.atomic():
            # A turn that died mid-stream leaves its reply "streaming"; we hold the lock, so any such row is stale.
            Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING).update(
                status=Status.FAILED, error_code="interrupted", finish_reason="error"
            )
            user_message = Message.objects.create(
                conversation_id=conversation_id,
                role=Role.USER,
                content=request.content,
                mode=decision.mode,
                client_id=request.client_id,
                origin=Origin.USER,
                route=decision.as_dict(),
                safety=plan.safety_state,
            )
            reply = (
                Message.objects.create(
                    conversation_id=conversation_id,
                    role=Role.ASSISTANT,
                    content="",
                    mode=decision.mode,
                    status=Status.STREAMING,
                    reply_to=user_message,
                    recall=plan.recall,
                )
                if with_reply
                else None
            )
            notice = {"ai_notice_at": plan.created_at} if plan.ai_notice else {}
            Conversation.objects.filter(pk=conversation_id).update(
                mode=decision.mode,
                mode_locked=plan.mode_locked,
                safety_state=plan.safety_state,
                message_count=F("message_count") + (2 if reply is not None else 1),
                last_message_at=plan.created_at,
                updated_at=plan.created_at,
                # Writing is reading: what came before, and the reply about to stream, are seen.
                last_read_message_id=(reply or user_message).pk,
                **notice,
            )
            # The operator's daily counts (numbers only, no text), with the rows they count.
            safety_counts_add(
                day=plan.created_at.date(),
                crisis_detections=int(plan.crisis.crisis),
                referrals_shown=int(plan.crisis.crisis and bool(plan.resources)),
                notices_shown=int(plan.ai_notice),
            )
    except IntegrityError as exc:
        duplicate = turn_duplicate_get(conversation_id=conversation_id, mode=plan.mode, client_id=request.client_id)
        if duplicate is None:
            raise Conflict("The message could not be stored; try again.") from exc
        return duplicate
    return StoredTurn(user_message=message_dict(user_message), reply=message_dict(reply) if reply else {})


def _regenerated_turn_store(plan: TurnPlan, target: RegenerateTarget) -> StoredTurn:
    """Another reply to a stored user message: the earlier ones become superseded alternatives
    (or, when the message was edited, are deleted: they answered words no longer there)."""
    decision, conversation_id = plan.decision, plan.conversation_id
    with transaction.atomic():
        Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING).update(
            status=Status.FAILED, error_code="interrupted", finish_reason="error"
        )
        user_message = Message.objects.filter(pk=target.user_message_id, conversation_id=conversation_id).first()
        if user_message is None:  # forgotten between the read and now (the lock keeps turns out, not a delete)
            raise Conflict("The message was deleted meanwhile.")
        removed = 0
        earlier = Message.objects.filter(reply_to_id=user_message.pk, role=Role.ASSISTANT)
        if target.edited:
            user_message.content = plan.request.content
            user_message.route = decision.as_dict()
            user_message.mode = decision.mode
            user_message.safety = plan.safety_state
            user_message.save(update_fields=["content", "route", "mode", "safety"])
            # The messages alone: what goes with them (their recall documents) is not counted.
            removed = earlier.delete()[1].get(Message._meta.label, 0)
            # A summary that read the old words (only with SUMMARY_KEEP_RECENT at 0) is rebuilt.
            summary_discard_covering(conversation_id=conversation_id, message_ids=[user_message.pk])
        else:
            earlier.update(superseded=True)
        reply = Message.objects.create(
            conversation_id=conversation_id,
            role=Role.ASSISTANT,
            content="",
            mode=decision.mode,
            status=Status.STREAMING,
            reply_to=user_message,
            recall=plan.recall,
        )
        notice = {"ai_notice_at": plan.created_at} if plan.ai_notice else {}
        Conversation.objects.filter(pk=conversation_id).update(
            mode=decision.mode,
            mode_locked=plan.mode_locked,
            safety_state=plan.safety_state,
            message_count=Greatest(F("message_count") + 1 - removed, 0),
            last_message_at=plan.created_at,
            updated_at=plan.created_at,
            last_read_message_id=reply.pk,
            **notice,
        )
        safety_counts_add(
            day=plan.created_at.date(),
            crisis_detections=int(plan.crisis.crisis and target.edited),  # the same words are counted once
            referrals_shown=int(plan.crisis.crisis and bool(plan.resources)),
            notices_shown=int(plan.ai_notice),
        )
    alternatives = [reply.pk] if target.edited else [*target.replies, reply.pk]
    return StoredTurn(
        user_message=message_dict(user_message),
        reply=message_dict(reply, alternatives=alternatives),
        regenerated=True,
        edited=target.edited,
    )


def reply_outcome_store(*, stored: StoredTurn, outcome: ReplyOutcome, plan: TurnPlan, priced_as: str) -> dict[str, Any]:
    """Finish the reply's row (one UPDATE), then count its cost on the user's day; returns the reply
    as clients see it.

    `priced_as` is the model id the turn asked for (the price table's key); the server may name
    the model it ran differently (a dated version), and that name is what `model` keeps.
    """
    cost = call_cost_usd(
        model=priced_as, prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens
    )
    fields: dict[str, Any] = {
        "content": outcome.text,
        "status": outcome.status,
        "finish_reason": outcome.finish_reason[:32],
        "model": outcome.model[:200],
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "ttft_ms": outcome.ttft_ms,
        "duration_ms": outcome.duration_ms,
        "error_code": outcome.error.code if outcome.error else "",
        "cost_usd": cost,
    }
    if outcome.actions:
        fields["actions"] = list(outcome.actions)
    Message.objects.filter(pk=stored.reply_id).update(**fields)
    # After the reply's row, not in its transaction: the reply is what must be kept; a counter
    # that failed to move costs at most this reply's count on the user's day.
    quota_settle(
        ticket=plan.quota_ticket,
        user_id=plan.user_id,
        zone_name=plan.zone_name,
        tokens=(outcome.prompt_tokens or 0) + (outcome.completion_tokens or 0),
        cost_usd=cost,
        avatar_id=plan.avatar_id,
        model=priced_as,
    )
    return {
        **stored.reply,
        **{key: fields[key] or None for key in ("model", "finish_reason", "error_code")},
        "content": outcome.text,
        "status": outcome.status,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens},
        "ttft_ms": outcome.ttft_ms,
        "duration_ms": outcome.duration_ms,
        "cost_usd": usd_text(cost),
        "actions": list(outcome.actions),
    }
