"""facestyle.threads: the count is set inside the block and put back after, also on an error."""

from __future__ import annotations

import pytest

from facestyle.threads import thread_count


def test_the_count_is_set_for_the_block_and_restored_even_on_error() -> None:
    state = {"n": 4}
    with thread_count(lambda: state["n"], lambda n: state.update(n=n), 1):
        assert state["n"] == 1
    assert state["n"] == 4
    with pytest.raises(RuntimeError), thread_count(lambda: state["n"], lambda n: state.update(n=n), 2):
        assert state["n"] == 2
        raise RuntimeError
    assert state["n"] == 4
