"""Classes for the registry's dotted-path tests (LLM_PROVIDER="llm.tests.custom_providers.X")."""

from llm.fake import FakeProvider


class EchoProvider(FakeProvider):
    """A custom provider: any class with the Protocol's members will do."""

    def __init__(self) -> None:
        super().__init__(reply="echo", name="echo", model="echo-1")


class NotAProvider:
    name = "nope"
