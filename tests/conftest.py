"""Fixtures shared by the test files."""

import pytest

from xnorpp_core import packed


@pytest.fixture
def kernel():
    """The compiled packed-kernel module; the test skips where it does not build."""
    try:
        return packed.backend._compiled()[0] or pytest.skip("no compiled kernel")
    except RuntimeError as err:
        pytest.skip(str(err))
