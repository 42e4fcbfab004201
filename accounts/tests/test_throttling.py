"""The cache counters behind login and registration throttling."""

import pytest

from accounts import throttling
from core.errors import Throttled


@pytest.fixture(autouse=True)
def _limits(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.LOGIN_THROTTLE_PER_USERNAME = 2
    settings.LOGIN_THROTTLE_PER_IP = 2
    settings.LOGIN_THROTTLE_WINDOW_SECONDS = 60
    monkeypatch.setattr(throttling, "_now", lambda: 500.0)


def test_ipv6_addresses_of_one_64_share_a_counter() -> None:
    throttling.login_throttle_hit(username="a", ip="2001:db8:1:2::1")
    throttling.login_throttle_hit(username="b", ip="2001:db8:1:2:ffff::9")

    with pytest.raises(Throttled) as raised:
        throttling.login_throttle_hit(username="c", ip="2001:db8:1:2::abcd")
    assert raised.value.retry_after == 60
    # another /64 is another counter
    throttling.login_throttle_hit(username="d", ip="2001:db8:1:3::1")


def test_username_counter_ignores_case_and_surrounding_spaces() -> None:
    throttling.login_throttle_hit(username="Sam", ip=None)
    throttling.login_throttle_hit(username=" sam ", ip=None)

    with pytest.raises(Throttled):
        throttling.login_throttle_hit(username="SAM", ip=None)


def test_a_refused_attempt_does_not_count_against_the_other_key() -> None:
    # given the username's failures are spent
    throttling.login_throttle_hit(username="sam", ip="10.0.0.1")
    throttling.login_throttle_hit(username="sam", ip="10.0.0.2")

    # when it is tried twice more from a third address, refused both times
    for _ in range(2):
        with pytest.raises(Throttled):
            throttling.login_throttle_hit(username="sam", ip="10.0.0.3")

    # then that address still has its whole allowance for other usernames
    throttling.login_throttle_hit(username="amy", ip="10.0.0.3")
    throttling.login_throttle_hit(username="bob", ip="10.0.0.3")


def test_forgive_takes_an_attempt_back() -> None:
    throttling.login_throttle_hit(username="sam", ip="10.0.0.1")
    throttling.login_throttle_hit(username="sam", ip="10.0.0.1")
    throttling.login_throttle_forgive(username="sam", ip="10.0.0.1")

    throttling.login_throttle_hit(username="sam", ip="10.0.0.1")
    with pytest.raises(Throttled):
        throttling.login_throttle_hit(username="sam", ip="10.0.0.1")


def test_forgive_without_a_window_is_harmless() -> None:
    throttling.login_throttle_forgive(username="nobody", ip="10.9.9.9")

    throttling.login_throttle_hit(username="nobody", ip="10.9.9.9")
    throttling.login_throttle_hit(username="nobody", ip="10.9.9.9")
    with pytest.raises(Throttled):
        throttling.login_throttle_hit(username="nobody", ip="10.9.9.9")
