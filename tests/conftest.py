"""Fixtures shared by the test files."""

import pytest
import torch

from xnorpp_core import packed


@pytest.fixture
def kernel():
    """The compiled packed-kernel module; the test skips where it does not build."""
    try:
        return packed.backend._compiled()[0] or pytest.skip("no compiled kernel")
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.fixture
def threads(request):
    """torch's intra-op thread count set to the test's parameter (``indirect=True``) for the test, then restored:
    with several threads each thread of a compiled kernel starts at a work item of its own."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)
