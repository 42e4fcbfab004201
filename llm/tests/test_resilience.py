"""ResilientProvider and CircuitBreaker with a scripted inner provider, a fake clock and no real sleeping."""

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from llm.base import (
    ChatMessage,
    Completion,
    CompletionParams,
    LLMProvider,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolSpec,
    Usage,
)
from llm.breaker import BreakerState, CircuitBreaker
from llm.errors import (
    AuthenticationFailed,
    BadRequest,
    CircuitOpen,
    ConnectionDropped,
    ContentFiltered,
    ContextTooLong,
    LLMError,
    ModelNotFound,
    NotConfigured,
    PermissionDenied,
    RateLimited,
    StreamIncomplete,
    Timeout,
    Unavailable,
)
from llm.resilience import ResilientProvider, RetryPolicy
from llm.tests.helpers import HELLO, UpperJitter, consume, drain, texts
from llm.usage import CallStats, MeteredStream

END = StreamEnd(finish_reason="stop", usage=Usage(prompt_tokens=5, completion_tokens=2), model="scripted-model")

Step = str | ToolCalls | LLMError | None  # a delta or tool calls, an error raised there, or None: end without StreamEnd


@dataclass
class ScriptedProvider:
    """Each call plays the next script: text deltas (and ToolCalls), then StreamEnd, unless an error comes first."""

    scripts: list[list[Step]]
    configured: bool = True
    name: str = "scripted"
    default_model: str = "scripted-model"
    supports_tools: bool = False
    calls: int = 0  # scripts played (a stream counts once it is iterated)
    closed: int = 0
    block: asyncio.Event | None = None  # when set, each stream waits on it before its first step
    params: list[CompletionParams | None] = field(default_factory=list)

    def _script(self) -> list[Step]:
        self.calls += 1
        return self.scripts.pop(0) if self.scripts else []

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        self.params.append(params)
        script = self._script()
        for step in script:
            if isinstance(step, LLMError):
                raise step
        text = "".join(step for step in script if isinstance(step, str))
        return Completion(text=text, finish_reason="stop", usage=END.usage, model=END.model)

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        self.params.append(params)
        return self._stream()

    async def _stream(self) -> AsyncIterator[StreamEvent]:
        script = self._script()
        try:
            if self.block is not None:
                await self.block.wait()
            for step in script:
                if isinstance(step, LLMError):
                    raise step
                if step is None:
                    return
                yield step if isinstance(step, ToolCalls) else TextDelta(step)
            yield END
        finally:
            self.closed += 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records each pause and returns at once; `yields`: lets other tasks run meanwhile, as a real sleep does."""

    def __init__(self, *, yields: bool = False) -> None:
        self.delays: list[float] = []
        self.yields = yields

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.yields:
            await asyncio.sleep(0)


class RecordingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return (a + b) / 2


@dataclass
class Rig:
    inner: ScriptedProvider
    provider: ResilientProvider
    breaker: CircuitBreaker
    sleep: FakeSleep
    clock: FakeClock


def failing(times: int, error: type[LLMError] = Unavailable) -> list[list[Step]]:
    return [[error()] for _ in range(times)]


def rig(
    *scripts: list[Step],
    max_retries: int = 2,
    threshold: int = 3,
    reset_seconds: float = 30.0,
    rng: random.Random | None = None,
    max_retry_after: float = 20.0,
    resume: bool = True,
    sleep: FakeSleep | None = None,
) -> Rig:
    inner = ScriptedProvider(scripts=list(scripts))
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="scripted", failure_threshold=threshold, reset_seconds=reset_seconds, clock=clock, wall_clock=lambda: 0.0
    )
    sleep = sleep or FakeSleep()
    provider = ResilientProvider(
        inner,
        policy=RetryPolicy(
            max_retries=max_retries, base_delay=0.5, max_delay=8.0, max_retry_after=max_retry_after, resume=resume
        ),
        breaker=breaker,
        sleep=sleep,
        rng=rng or UpperJitter(),
        clock=clock,
    )
    return Rig(inner, provider, breaker, sleep, clock)


def test_is_an_llm_provider_with_the_inner_identity() -> None:
    r = rig()
    assert isinstance(r.provider, LLMProvider)
    assert (r.provider.name, r.provider.default_model, r.provider.configured) == (
        "scripted",
        "scripted-model",
        True,
    )


# -- retries -------------------------------------------------------------------------------------


async def test_a_retryable_error_before_any_token_is_retried() -> None:
    r = rig([Unavailable("503")], ["Hi", "!"])

    stream = r.provider.stream(HELLO)
    events = await drain(stream)

    assert events == [TextDelta("Hi"), TextDelta("!"), END]
    assert r.inner.calls == 2
    assert r.sleep.delays == [0.5]
    assert stream.stats.attempts == 2
    assert stream.stats.outcome == "ok"


async def test_a_break_after_text_resumes_past_what_the_caller_saw() -> None:
    # The replay is cut into other pieces than the first attempt: matching is by text, not by delta.
    r = rig(["Hel", "lo wor", ConnectionDropped("gone")], ["Hello", " world", "!"])
    received: list[StreamEvent] = []

    stream = r.provider.stream(HELLO)
    await consume(stream, received)

    assert received == [TextDelta("Hel"), TextDelta("lo wor"), TextDelta("ld"), TextDelta("!"), END]
    assert r.inner.calls == 2
    assert r.sleep.delays == [0.5]
    assert (stream.stats.attempts, stream.stats.resumed, stream.stats.outcome) == (2, True, "ok")


async def test_a_replay_is_the_same_request_with_one_seed_per_reply() -> None:
    r = rig(["Hi", ConnectionDropped("gone")], ["Hi", "!"], ["Bye"])

    await drain(r.provider.stream(HELLO, params=CompletionParams(temperature=1.2)))
    await drain(r.provider.stream(HELLO, params=CompletionParams(temperature=1.2)))

    first, replay, other = r.inner.params
    assert first == replay
    assert first is not None
    assert other is not None
    assert first.temperature == 1.2
    assert first.seed is not None
    assert other.seed != first.seed


async def test_a_callers_own_seed_is_kept() -> None:
    r = rig(["Hi"])

    await drain(r.provider.stream(HELLO, params=CompletionParams(seed=7)))

    assert r.inner.params == [CompletionParams(seed=7)]


@pytest.mark.parametrize(
    "replay",
    [
        pytest.param(["Hello, ", "friend"], id="says-something-else"),
        pytest.param(["Hi"], id="ends-before-the-shown-text"),
    ],
)
async def test_a_replay_that_differs_from_the_shown_text_raises_the_original_error(replay: list[Step]) -> None:
    r = rig(["Hi", " there", ConnectionDropped("gone")], replay, ["never"])
    received: list[StreamEvent] = []

    stream = r.provider.stream(HELLO)
    with pytest.raises(ConnectionDropped) as caught:
        await consume(stream, received)

    assert caught.value.detail == "gone"
    assert received == [TextDelta("Hi"), TextDelta(" there")]  # nothing of the replay leaked
    assert r.inner.calls == 2  # no third try: a model that sampled differently will again
    assert r.inner.closed == 2
    assert (stream.stats.resumed, stream.stats.outcome) == (False, "llm_connection_dropped")
    assert r.breaker.snapshot()["failures"] == 1  # the replay answered: it is not a provider failure


async def test_without_resume_no_retry_once_a_token_reached_the_caller() -> None:
    r = rig(["Hi", ConnectionDropped("gone")], ["never"], resume=False)
    received: list[StreamEvent] = []

    stream = r.provider.stream(HELLO)
    with pytest.raises(ConnectionDropped):
        await consume(stream, received)

    assert received == [TextDelta("Hi")]
    assert r.inner.calls == 1
    assert r.sleep.delays == []
    assert r.inner.params == [None]  # and no seed is sent


@pytest.mark.parametrize(
    "error",
    [
        BadRequest(),
        ContextTooLong(),
        ContentFiltered(),
        AuthenticationFailed(),
        PermissionDenied(),
        ModelNotFound(),
        NotConfigured(),
    ],
)
async def test_non_retryable_errors_are_raised_at_once(error: LLMError) -> None:
    r = rig([error], [error], ["never"])

    with pytest.raises(type(error)):
        await drain(r.provider.stream(HELLO))
    with pytest.raises(type(error)):
        await r.provider.complete(HELLO)

    assert r.inner.calls == 2  # one per call
    assert r.sleep.delays == []


async def test_gives_up_after_max_retries_with_growing_full_jitter_bounds() -> None:
    recording = RecordingRandom()
    r = rig([Timeout("1")], [Timeout("2")], [Timeout("3")], ["never"], rng=recording)

    with pytest.raises(Timeout) as caught:
        await drain(r.provider.stream(HELLO))

    assert caught.value.detail == "3"
    assert r.inner.calls == 3
    assert recording.bounds == [(0.0, 0.5), (0.0, 1.0)]  # uniform(0, base * 2 ** (n - 1))
    assert r.sleep.delays == [0.25, 0.5]


def test_backoff_is_capped_and_full_jitter_spans_zero_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=2.0)
    error = Unavailable()

    delays = [policy.delay(attempt=n, error=error, rng=UpperJitter()) for n in range(1, 6)]
    seeded = [policy.delay(attempt=4, error=error, rng=random.Random(seed)) for seed in range(200)]

    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(d is not None and 0.0 <= d <= 2.0 for d in seeded)
    assert min(d for d in seeded if d is not None) < 0.2
    assert policy.delay(attempt=11, error=error, rng=UpperJitter()) is None


async def test_retry_after_is_waited_for() -> None:
    r = rig([RateLimited("429", retry_after=3.0)], ["Hi"])

    await drain(r.provider.stream(HELLO))

    assert r.sleep.delays == [3.0]  # max(retry_after, jitter up to 0.5)


async def test_retry_after_beyond_the_cap_gives_up_instead_of_waiting() -> None:
    r = rig([RateLimited("429", retry_after=120.0)], ["never"], max_retry_after=20.0)

    with pytest.raises(RateLimited) as caught:
        await drain(r.provider.stream(HELLO))

    assert caught.value.retry_after == 120.0
    assert r.inner.calls == 1
    assert r.sleep.delays == []


async def test_a_stream_that_ends_without_stream_end_is_incomplete_and_retried() -> None:
    r = rig([None], ["Hi"])

    events = await drain(r.provider.stream(HELLO))

    assert events == [TextDelta("Hi"), END]
    assert r.inner.calls == 2


async def test_a_stream_cut_after_tokens_without_stream_end_is_resumed_then_given_up() -> None:
    r = rig(["Hi", None], ["Hi", None], ["Hi", None], ["never"])
    received: list[StreamEvent] = []

    with pytest.raises(StreamIncomplete):
        await consume(r.provider.stream(HELLO), received)

    assert received == [TextDelta("Hi")]  # never a complete reply, and never "Hi" twice
    assert r.inner.calls == 3


async def test_complete_retries_and_fills_stats() -> None:
    r = rig([Unavailable()], [RateLimited(retry_after=1.0)], ["Hello"])
    stats = CallStats()

    completion = await r.provider.complete(HELLO, params=CompletionParams(model="m2"), stats=stats)

    assert completion.text == "Hello"
    assert r.sleep.delays == [0.5, 1.0]
    assert (stats.attempts, stats.outcome, stats.kind, stats.model) == (3, "ok", "complete", "scripted-model")
    assert r.inner.params == [CompletionParams(model="m2")] * 3


async def test_complete_fills_stats_when_it_fails() -> None:
    r = rig([Unavailable()], [Unavailable()], [Unavailable("last")])
    stats = CallStats()

    with pytest.raises(Unavailable):
        await r.provider.complete(HELLO, stats=stats)

    assert (stats.attempts, stats.outcome, stats.error is not None) == (3, "llm_unavailable", True)


async def test_not_configured_fails_before_the_inner_provider_or_the_breaker() -> None:
    r = rig(["never"])
    r.inner.configured = False

    with pytest.raises(NotConfigured):
        await drain(r.provider.stream(HELLO))

    assert len(r.inner.params) == 1  # the stream was made (its params checked eagerly)...
    assert r.inner.calls == 0  # ...and never played
    assert r.breaker.snapshot()["failures"] == 0


async def test_stream_returns_a_metered_stream_and_closing_it_closes_the_inner_stream() -> None:
    r = rig(["a", "b", "c"])

    stream = r.provider.stream(HELLO)
    first = await anext(stream)
    await stream.aclose()

    assert isinstance(stream, MeteredStream)
    assert first == TextDelta("a")
    assert r.inner.closed == 1
    assert stream.stats.outcome == "cancelled"


# -- the circuit breaker ---------------------------------------------------------------------------


async def test_the_circuit_opens_after_consecutive_failures_and_fails_fast() -> None:
    r = rig(*failing(3), ["never"], max_retries=0, threshold=3, reset_seconds=30.0)

    for _ in range(3):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    with pytest.raises(CircuitOpen) as caught:
        await drain(r.provider.stream(HELLO))

    assert r.inner.calls == 3  # the fourth stream was made but never played
    assert r.inner.closed == 3
    assert caught.value.retry_after == 30.0
    assert r.provider.health() == {
        "state": "open",
        "failures": 3,
        "opened_at": "1970-01-01T00:00:00+00:00",
        "retry_in": 30.0,
    }


async def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    r = rig(*failing(3), ["probe"], ["after"], max_retries=0, threshold=3, reset_seconds=30.0)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    r.clock.advance(30.0)
    r.inner.block = asyncio.Event()

    probe = asyncio.create_task(drain(r.provider.stream(HELLO)))
    await asyncio.sleep(0)  # the probe took the only permit and waits upstream
    with pytest.raises(CircuitOpen):  # waited its bounded time: this fake sleep never lets the probe run
        await drain(r.provider.stream(HELLO))
    state_during_probe = r.breaker.state
    r.inner.block.set()
    probe_events = await probe
    after = await drain(r.provider.stream(HELLO))

    assert state_during_probe is BreakerState.HALF_OPEN
    assert texts(probe_events) == ["probe"]
    assert texts(after) == ["after"]
    assert r.breaker.snapshot() == {"state": "closed", "failures": 0, "opened_at": None, "retry_in": None}


async def _circuit_opened_then_probing(r: Rig) -> "asyncio.Task[list[StreamEvent]]":
    """Three failures open the circuit; once it may probe, a probe that waits upstream until `r.inner.block` is set."""
    for _ in range(3):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    r.clock.advance(30.0)
    r.inner.block = asyncio.Event()
    probe = asyncio.create_task(drain(r.provider.stream(HELLO)))
    await asyncio.sleep(0)  # the probe took the only permit
    assert r.breaker.probe_pending()
    return probe


async def test_a_call_during_the_probe_waits_for_it_and_goes_on_when_it_succeeds() -> None:
    # Given a half-open circuit whose probe is in flight
    r = rig(*failing(3), ["probe"], ["waited"], max_retries=0, threshold=3, sleep=FakeSleep(yields=True))
    probe = await _circuit_opened_then_probing(r)

    # When another user's call comes meanwhile
    waiting = asyncio.create_task(drain(r.provider.stream(HELLO)))
    for _ in range(5):
        await asyncio.sleep(0)

    # Then it neither fails at once nor calls the provider: it waits for the probe
    assert not waiting.done()
    assert r.inner.calls == 4  # three failures and the probe
    # And once the probe succeeds it goes on, with the circuit closed
    assert r.inner.block is not None
    r.inner.block.set()
    assert texts(await probe) == ["probe"]
    assert texts(await waiting) == ["waited"]
    assert r.breaker.state is BreakerState.CLOSED
    assert set(r.sleep.delays) == {0.05}


async def test_a_call_during_the_probe_fails_fast_once_the_probe_fails() -> None:
    r = rig(*failing(3), [Unavailable()], ["never"], max_retries=0, threshold=3, sleep=FakeSleep(yields=True))
    probe = await _circuit_opened_then_probing(r)
    waiting = asyncio.create_task(drain(r.provider.stream(HELLO)))
    await asyncio.sleep(0)

    # When the probe fails
    assert r.inner.block is not None
    r.inner.block.set()
    with pytest.raises(Unavailable):
        await probe

    # Then the waiting call is refused as the open circuit refuses, without calling the provider
    with pytest.raises(CircuitOpen) as caught:
        await waiting
    assert caught.value.retry_after == 30.0
    assert r.inner.calls == 4


async def test_a_call_waits_for_a_probe_no_longer_than_its_bound() -> None:
    # Given a probe that never answers
    r = rig(*failing(3), ["stuck"], max_retries=0, threshold=3, sleep=FakeSleep(yields=True))
    probe = await _circuit_opened_then_probing(r)

    # When another call comes, it gives up after `probe_wait_seconds` of polling
    with pytest.raises(CircuitOpen):
        await drain(r.provider.stream(HELLO))

    assert sum(r.sleep.delays) == pytest.approx(r.provider.probe_wait_seconds)
    assert r.inner.calls == 4
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    r = rig(*failing(4), ["never"], max_retries=0, threshold=3, reset_seconds=30.0)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    r.clock.advance(31.0)

    with pytest.raises(Unavailable):
        await drain(r.provider.stream(HELLO))  # the probe
    with pytest.raises(CircuitOpen) as caught:
        await drain(r.provider.stream(HELLO))

    assert caught.value.retry_after == 30.0  # a full new wait from the probe's failure
    assert r.inner.calls == 4
    assert r.inner.closed == 4


async def test_a_cancelled_probe_frees_the_slot_for_the_next_call() -> None:
    r = rig(*failing(3), ["slow probe"], ["next"], max_retries=0, threshold=3)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    r.clock.advance(30.0)
    r.inner.block = asyncio.Event()

    probe = asyncio.create_task(drain(r.provider.stream(HELLO)))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    r.inner.block.set()
    events = await drain(r.provider.stream(HELLO))

    assert texts(events) == ["next"]
    assert r.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error", [BadRequest(), ContextTooLong(), ContentFiltered(), ModelNotFound(), PermissionDenied()]
)
async def test_request_errors_do_not_count_as_provider_failures(error: LLMError) -> None:
    r = rig(*failing(10, type(error)), max_retries=0, threshold=3)

    for _ in range(10):
        with pytest.raises(type(error)):
            await drain(r.provider.stream(HELLO))

    assert r.breaker.snapshot()["state"] == "closed"
    assert r.breaker.snapshot()["failures"] == 0


async def test_a_success_resets_the_consecutive_count() -> None:
    r = rig([Unavailable()], [Unavailable()], ["ok"], [Unavailable()], [Unavailable()], max_retries=0, threshold=3)

    for _ in range(2):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))
    await drain(r.provider.stream(HELLO))
    for _ in range(2):
        with pytest.raises(Unavailable):
            await drain(r.provider.stream(HELLO))

    assert r.breaker.snapshot()["state"] == "closed"
    assert r.breaker.snapshot()["failures"] == 2


async def test_when_the_circuit_opens_during_retries_the_real_error_is_raised() -> None:
    r = rig([Unavailable("a")], [Unavailable("b")], ["never"], max_retries=5, threshold=2)

    with pytest.raises(Unavailable) as caught:
        await drain(r.provider.stream(HELLO))

    assert caught.value.detail == "b"
    assert r.inner.calls == 2
    assert r.breaker.state is BreakerState.OPEN


def test_breaker_transitions_with_a_fake_clock() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="p", failure_threshold=2, reset_seconds=10.0, clock=clock, wall_clock=lambda: 86400.0)

    first = breaker.acquire()
    assert first is not None
    first.failure()
    first.failure()  # settled once: ignored
    assert breaker.snapshot()["failures"] == 1
    second = breaker.acquire()
    assert second is not None
    second.failure()
    assert breaker.snapshot() == {
        "state": "open",
        "failures": 2,
        "opened_at": "1970-01-02T00:00:00+00:00",
        "retry_in": 10.0,
    }
    clock.advance(9.9)
    assert breaker.acquire() is None
    clock.advance(0.1)
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    assert breaker.acquire() is None
    probe.neutral()  # the provider answered (a bad request): it is back
    assert breaker.state is BreakerState.CLOSED


def test_a_threshold_of_zero_disables_the_breaker() -> None:
    breaker = CircuitBreaker(name="p", failure_threshold=0, reset_seconds=10.0)

    for _ in range(50):
        permit = breaker.acquire()
        assert permit is not None
        permit.failure()

    assert breaker.state is BreakerState.CLOSED


# -- tools --------------------------------------------------------------------------------------------

CALLS = ToolCalls((ToolCall(id="call_1", name="weather_get", arguments='{"city": "Lyon"}'),))
WEATHER = ToolSpec(name="weather_get", description="The forecast.", parameters={"type": "object"})


async def test_tool_calls_after_a_retry_before_any_text_arrive_once() -> None:
    r = rig([Unavailable()], [CALLS])

    events = await drain(r.provider.stream(HELLO))

    assert events == [CALLS, END]
    assert r.inner.calls == 2


async def test_tool_calls_after_a_resumed_text_arrive_once_after_the_rest_of_it() -> None:
    r = rig(["Let me ", ConnectionDropped("gone")], ["Let me ", "check.", CALLS])

    stream = r.provider.stream(HELLO)
    events = await drain(stream)

    assert events == [TextDelta("Let me "), TextDelta("check."), CALLS, END]
    assert (stream.stats.resumed, stream.stats.outcome) == (True, "ok")


async def test_tool_calls_already_passed_on_are_not_passed_on_again_by_a_retry() -> None:
    # An inner provider that breaks between its ToolCalls and its StreamEnd (ours never does).
    r = rig([CALLS, ConnectionDropped("gone")], [CALLS])

    events = await drain(r.provider.stream(HELLO))

    assert events == [CALLS, END]
    assert r.inner.calls == 2


async def test_the_seed_set_for_a_stream_keeps_the_tools() -> None:
    r = rig(["Hi"])

    await drain(r.provider.stream(HELLO, params=CompletionParams(temperature=0.3, tools=(WEATHER,))))

    (sent,) = r.inner.params
    assert sent is not None
    assert sent.seed is not None
    assert (sent.tools, sent.temperature) == ((WEATHER,), 0.3)


async def test_complete_passes_the_tools_through() -> None:
    r = rig(["Hi"])
    params = CompletionParams(tools=(WEATHER,))

    await r.provider.complete(HELLO, params=params)

    assert r.inner.params == [params]


def test_supports_tools_is_the_inner_providers() -> None:
    r = rig()
    r.inner.supports_tools = True

    assert r.provider.supports_tools is True
    r.inner.supports_tools = False
    assert r.provider.supports_tools is False
