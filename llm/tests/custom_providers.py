"""Classes for the registry's dotted-path tests (LLM_PROVIDER="llm.tests.custom_providers.X")."""

from llm.fake import FakeProvider


class EchoProvider(FakeProvider):
    """A custom provider: any class with the Protocol's members will do."""

    def __init__(self) -> None:
        super().__init__(reply="echo", name="echo", model="echo-1")


class NotAProvider:
    name = "nope"


class ProviderBeforeTools:
    """A custom provider written before tool calling: every Protocol member but `supports_tools`."""

    name = "before-tools"
    configured = True
    default_model = "old-1"

    def __init__(self) -> None:
        self._fake = FakeProvider(reply="old", name=self.name, model=self.default_model)
        self.complete = self._fake.complete
        self.stream = self._fake.stream
