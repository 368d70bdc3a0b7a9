import pytest
from conversation_world import World


@pytest.fixture
def world() -> World:
    return World()
