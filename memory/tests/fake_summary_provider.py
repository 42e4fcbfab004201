"""A deterministic provider for the Celery worker tests: LLM_PROVIDER=<this module>.FakeSummaryProvider.

It answers the two memory prompts of `llm.prompts.memory` by reading them, as a model would:

- a summary prompt gets one line of prose that names the last message it saw and repeats
  every pinned fact, so a test can tell which messages and facts reached the prompt;
- a fact prompt gets a JSON list from a few fixed phrases ("my name is Sam", ...).

`FAKE_LLM_HANG_MARKER=<path>`: the first summary call (across processes) creates that file
with its process id and then hangs, so a test can kill the worker mid-task; every later
call finds the file and answers normally.
"""

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Sequence

from llm.base import ChatMessage, Completion, CompletionParams, StreamEnd, StreamEvent, TextDelta, Usage

MODEL = "fake-summary-model"
HANG_SECONDS = 600

_FACT_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"my name is (\w+)", re.IGNORECASE), "name", "The user's name is {0}."),
    (re.compile(r"call me (\w+)", re.IGNORECASE), "name", "The user's name is {0}."),
    (
        re.compile(r"my sister (\w+)'s birthday is (\d+ \w+)", re.IGNORECASE),
        "sister_birthday",
        "The user's sister {0}'s birthday is {1}.",
    ),
    (re.compile(r"i work night shifts", re.IGNORECASE), "work_schedule", "The user works night shifts."),
    # Same fact, another key: only the text tells it apart, as with a real model.
    (re.compile(r"night shifts are my thing", re.IGNORECASE), "job_hours", "The user works the night shift."),
)


def _section(tag: str, text: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return match.group(1) if match else ""


class FakeSummaryProvider:
    name = "fake-summary"

    @property
    def configured(self) -> bool:
        return True

    @property
    def default_model(self) -> str:
        return MODEL

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        prompt = messages[-1].content
        if "<new_messages>" in prompt:
            await self._maybe_hang()
            text = self._summary(prompt)
        elif "<user_message>" in prompt:
            text = json.dumps(self._facts(_section("user_message", prompt)))
        else:
            text = "I only write summaries and facts."
        return Completion(
            text=text,
            finish_reason="stop",
            usage=Usage(prompt_tokens=len(prompt) // 4, completion_tokens=len(text) // 4, estimated=True),
            model=(params.model if params and params.model else None) or MODEL,
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        return self._stream(messages, params)

    async def _stream(
        self, messages: Sequence[ChatMessage], params: CompletionParams | None
    ) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(messages, params=params)
        yield TextDelta(completion.text)
        yield StreamEnd(finish_reason=completion.finish_reason, usage=completion.usage, model=completion.model)

    @staticmethod
    def _summary(prompt: str) -> str:
        lines = [line for line in _section("new_messages", prompt).splitlines() if line.strip()]
        pinned = [line.removeprefix("- ") for line in _section("pinned_facts", prompt).splitlines() if line.strip()]
        last = lines[-1].split(": ", 1)[-1] if lines else "nothing"
        text = f"They talked through {len(lines)} more messages, the last one being {last!r}."
        if pinned:
            text += " Pinned facts kept: " + " ".join(pinned)
        return text

    @staticmethod
    def _facts(message: str) -> list[dict[str, str]]:
        facts: list[dict[str, str]] = []
        for pattern, key, template in _FACT_RULES:
            match = pattern.search(message)
            if match:
                facts.append({"key": key, "text": template.format(*match.groups())})
        return facts

    @staticmethod
    async def _maybe_hang() -> None:
        marker = os.environ.get("FAKE_LLM_HANG_MARKER")
        if not marker:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        await asyncio.sleep(HANG_SECONDS)
