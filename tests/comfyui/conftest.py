"""Fixtures of the real-ComfyUI tests (the `runner` itself lives in tests/conftest.py)."""
import pytest
from graphs import CHECKPOINT, reference_latents


@pytest.fixture(scope="module")
def references(runner):
    """The untouched branch's latents from a fresh executor cache, for seeds 1 and 2."""
    return reference_latents(runner, CHECKPOINT)
