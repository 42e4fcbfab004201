"""`python manage.py chat AVATAR_SLUG [--user USERNAME]`: talk to an avatar in the terminal.

Replies stream as they are generated; mode switches are shown with their reason, and what
the secretary did (a reminder set, a task added) as a line of its own. Ctrl-C
during a reply stops it (stored as cancelled, like the app's stop button); Ctrl-C or
Ctrl-D at the prompt leaves, with exit code 0.

A terminal or a pipe is read on the event loop (`add_reader`), not on a thread: a thread
blocked on a read nobody finishes would keep the process waiting for Enter after Ctrl-C.
"""

import asyncio
import codecs
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any, TextIO

from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from avatars.models import Avatar
from conversations.models import Conversation, Message
from conversations.services import conversation_create
from conversations.turns import turn_start
from conversations.turns.events import (
    Action,
    AiNotice,
    ErrorEvent,
    MessageCreated,
    ModeChanged,
    ReplyEnd,
    ReplyStart,
    SafetyAlert,
    Token,
    TurnEvent,
)
from core.background import in_process_tasks_stop, in_process_tasks_wait
from core.errors import DomainError
from llm.registry import provider_get

HELP_LINE = (
    "Type a message. /secretary, /intimate and /auto switch modes; Ctrl-C stops a reply; "
    "Ctrl-C or Ctrl-D at the prompt quits."
)
GOODBYE = "bye"


class Command(BaseCommand):
    help = "Chat with an avatar in the terminal, replies streamed, mode switches shown."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("avatar_slug")
        parser.add_argument("--user", default="demo", help="Username to chat as (default: demo, see seed_demo).")
        parser.add_argument("--new", action="store_true", help="Start a new conversation instead of continuing.")
        parser.add_argument("--verbose", action="store_true", help="Show the server's JSON logs too.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = User.objects.get(username=options["user"])
        except User.DoesNotExist as exc:
            raise CommandError(
                f"No user {options['user']!r}. Run `python manage.py seed_demo` or pass --user."
            ) from exc
        avatar = Avatar.objects.filter(slug=options["avatar_slug"]).first()
        if avatar is None or not (avatar.is_public or avatar.owner_id == user.pk):
            slugs = ", ".join(Avatar.objects.filter(is_public=True).values_list("slug", flat=True)) or "none"
            raise CommandError(f"No avatar {options['avatar_slug']!r} for {user.username}. Catalogue: {slugs}.")
        conversation = (
            None
            if options["new"]
            else (Conversation.objects.filter(user=user, avatar=avatar).order_by("-updated_at").first())
        )
        if conversation is None:
            conversation = conversation_create(user=user, avatar_id=avatar.pk)
        self._print_recent(conversation)
        if not options["verbose"]:
            # The JSON logs are for servers; here they would tear through the conversation.
            logging.getLogger("companion").setLevel(logging.WARNING)
        asyncio.run(_chat_loop(user, conversation, self.stdout, sys.stdin))
        # Without Redis, memory work runs on a background thread of this process: give it a moment
        # (a second Ctrl-C cuts it short).
        try:
            finished = in_process_tasks_wait(timeout=10)
        except KeyboardInterrupt:
            finished = False
        if not finished:
            in_process_tasks_stop()
            self.stderr.write("Some memory work was still pending at exit; it is picked up again later.")

    def _print_recent(self, conversation: Conversation) -> None:
        self.stdout.write(f"Conversation {conversation.pk} with {conversation.avatar.name} — mode {conversation.mode}")
        self.stdout.write(HELP_LINE)
        recent = list(Message.objects.filter(conversation=conversation).order_by("-id")[:6])
        for message in reversed(recent):
            who = "you" if message.role == "user" else conversation.avatar.name
            self.stdout.write(f"{who}> {message.content}")


def mode_line(frame: dict[str, Any]) -> str:
    reason = frame["reason"]
    if frame.get("blocked"):
        return f"[intimate mode not available ({reason.get('code')}); staying in {frame['mode']}]"
    why = reason["source"]
    if reason.get("matched"):
        why += f": '{reason['matched']}' score {reason.get('score')}"
    lock = ", locked" if frame.get("locked") else ""
    return f"[mode {frame['previous']} → {frame['mode']} ({why}){lock}]"


# What a failed action was meant to do, for "✗ Could not set the reminder: <why>".
ACTION_FAILURES = {
    "reminder_create": "Could not set the reminder",
    "reminder_list": "Could not read your reminders",
    "reminder_cancel": "Could not cancel the reminder",
    "task_add": "Could not add it to your list",
    "task_list": "Could not read your list",
    "task_complete": "Could not tick it off",
}


def action_line(frame: dict[str, Any]) -> str:
    """An `action` frame as one line: "✓ Reminder set for Tue 8 Dec 14:32", or "✗ Could not ...: why"."""
    error = frame.get("error")
    if error:
        what = ACTION_FAILURES.get(frame["name"], f"Could not run {frame['name']}")
        return f"✗ {what}: {error.get('message') or error.get('code') or 'it failed'}"
    result = frame.get("result") or {}
    if result.get("confirmation"):
        return f"✓ {result['confirmation']}"
    if frame["name"] == "reminder_list":
        return f"✓ Looked at your reminders ({result.get('count', 0)} pending)"
    if frame["name"] == "task_list":
        return f"✓ Looked at your list ({result.get('count', 0)} items)"
    return f"✓ {frame['name']}"


async def _chat_loop(user: User, conversation: Conversation, out: Any, stdin: TextIO) -> None:
    provider = await database_sync_to_async(provider_get)()
    loop = asyncio.get_running_loop()
    name = conversation.avatar.name
    lines = StdinLines(stdin)
    # Ctrl-C: at the prompt it quits; during a turn it stops the reply (`stop` is set per turn).
    interrupted = asyncio.Event()
    stop: asyncio.Event | None = None

    def on_interrupt() -> None:
        (stop if stop is not None else interrupted).set()

    handled = _sigint_handle(loop, on_interrupt)
    try:
        while True:
            line = await _prompt(lines, interrupted)
            if line is None:
                out.write("\n" + GOODBYE)
                return
            if not line.strip():
                continue
            stop = asyncio.Event()
            await _turn_run(user, conversation, name, line, provider, stop, out)
            stop = None
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


async def _turn_run(
    user: User, conversation: Conversation, name: str, line: str, provider: Any, stop: asyncio.Event, out: Any
) -> None:
    # The reply's "Name> " is written with its first token, so an action line can come first.
    speaking = False

    async def emit(event: TurnEvent) -> None:
        nonlocal speaking
        if isinstance(event, ModeChanged):
            out.write(mode_line(event.frame()))
        elif isinstance(event, ReplyStart):
            speaking = False
        elif isinstance(event, Token):
            if not speaking:
                out.write(f"{name}> ", ending="")
                speaking = True
            out.write(event.delta, ending="")
            out.flush()
        elif isinstance(event, Action):
            if speaking:
                out.write("")  # end the words so far: the action gets a line of its own
                speaking = False
            out.write(action_line(event.frame()))
        elif isinstance(event, ReplyEnd):
            suffix = "" if event.status == "complete" else f"  [{event.status}]"
            out.write(suffix if speaking else f"{name}> {suffix.strip()}")
            speaking = False
        elif isinstance(event, ErrorEvent):
            out.write(f"[error {event.code}: {event.message}]")
        elif isinstance(event, AiNotice):
            out.write(f"[{event.text}]")
        elif isinstance(event, SafetyAlert):
            resources = [" ".join(v for v in r.values() if v) for r in event.resources]
            out.write("[You are not alone. Support right now: " + "; ".join(resources) + "]")
        elif isinstance(event, MessageCreated):
            pass

    # Ctrl-C stops the reply; pressed before the turn started, it stops it as soon as it has.
    try:
        running = await turn_start(
            user_id=user.pk,
            conversation_id=conversation.pk,
            message={"content": line},
            provider=provider,
            listener=emit,
        )
        await running.result_or_stop(stop)
    except DomainError as exc:
        out.write(f"[{exc.code}: {exc.message}]")


def _sigint_handle(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> bool:
    """Ctrl-C calls `handler` on the loop instead of raising KeyboardInterrupt; False where it
    cannot (outside the main thread)."""
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def _prompt(lines: "StdinLines", interrupted: asyncio.Event) -> str | None:
    """The next line typed, or None to quit: Ctrl-D (end of input) or Ctrl-C."""
    sys.stdout.write("you> ")
    sys.stdout.flush()
    interrupted.clear()
    reading = asyncio.ensure_future(lines.readline())
    waiting = asyncio.ensure_future(interrupted.wait())
    try:
        done, _ = await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if reading in done:
            return reading.result() or None
        return None
    finally:
        for task in (reading, waiting):
            task.cancel()
        await asyncio.gather(reading, waiting, return_exceptions=True)


class StdinLines:
    """Lines of stdin for the event loop; "" at the end of input.

    A terminal or a pipe is read with `add_reader`, so an abandoned read holds nothing up; a
    file or an in-memory stream (tests) never blocks and is read directly.
    """

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self.fd = _pollable_fd(stdin)
        self.buffer = ""
        self.ended = False
        self.threaded = False
        self.decoder = codecs.getincrementaldecoder(getattr(stdin, "encoding", None) or "utf-8")(errors="replace")

    async def readline(self) -> str:
        if self.threaded:
            return await asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
        if self.fd is None:
            return self.stdin.readline()
        while "\n" not in self.buffer and not self.ended:
            try:
                chunk = await self._chunk_read(self.fd)
            except StdinUnwatchable:
                # A loop or a descriptor add_reader cannot watch (Windows): a thread, as a last resort.
                self.threaded = True
                line, self.buffer = self.buffer, ""
                return line + await self.readline()
            self.ended = not chunk
            self.buffer += self.decoder.decode(chunk, final=self.ended)
        line, newline, self.buffer = self.buffer.partition("\n")
        return line + newline

    async def _chunk_read(self, fd: int) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(fd, on_readable)
        except (NotImplementedError, OSError) as exc:
            raise StdinUnwatchable from exc
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            return os.read(fd, 65536)
        except OSError:  # the terminal went away (EIO): the end of input
            return b""


class StdinUnwatchable(Exception):
    """The event loop cannot watch stdin (`add_reader` refused it)."""


def _pollable_fd(stdin: TextIO) -> int | None:
    try:
        fd = stdin.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        return None
    return None if regular else fd
