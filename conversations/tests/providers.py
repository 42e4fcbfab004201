"""Fake providers loadable by dotted path (LLM_PROVIDER), for tests that go through the registry."""

from dataclasses import dataclass

from llm.fake import FakeProvider


@dataclass
class SlowFakeProvider(FakeProvider):
    """Forty pieces, 50 ms apart: long enough to stop, resume or send a second message mid-reply."""

    reply: str = " ".join(f"word{i}" for i in range(40))
    chunks: int = 40
    delay: float = 0.05
