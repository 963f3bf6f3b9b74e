"""What the reliability campaign (issue 14) found outside the parsers, kept as tests."""

from hypothesis import given
from hypothesis import strategies as st

from sockd import failures


@given(st.integers(0, 2**32 - 1))
def test_the_login_delay_is_bounded_for_any_count(count):
    assert 0 <= failures.delay(count) <= failures.MAX_DELAY


def test_the_login_delay_below_the_overflow():
    assert failures.delay(1024) == failures.MAX_DELAY
