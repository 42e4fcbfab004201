"""core.outage: Redis's errors become `Unavailable`; its URL is logged without credentials."""

import kombu.exceptions
import pytest
import redis.exceptions

from core.errors import Unavailable
from core.outage import redis_needed, url_redacted


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379."),
    ],
)
def test_an_outage_inside_the_block_is_unavailable_503_retryable(error: Exception) -> None:
    with pytest.raises(Unavailable) as caught, redis_needed():
        raise error

    assert (caught.value.status_code, caught.value.code, caught.value.retryable) == (503, "unavailable", True)
    assert caught.value.as_dict()["retryable"] is True
    assert "6379" not in caught.value.message  # nothing of the error's text reaches the client


def test_other_errors_pass_through() -> None:
    with pytest.raises(ValueError, match="not an outage"), redis_needed():
        raise ValueError("not an outage")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache.internal:6379/1", "redis://cache.internal:6379/1"),
        ("rediss://user:s3cret@cache.internal:6380/0?ssl_cert_reqs=none", "rediss://cache.internal:6380/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_url_is_named_without_its_credentials(url: str, shown: str) -> None:
    assert url_redacted(url) == shown
