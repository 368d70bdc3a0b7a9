import pytest

from conversations import MemoryStateStore, decode_state, encode_state, sender_key, state_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.asyncio
async def test_set_get_delete(clock):
    store = MemoryStateStore(clock)
    state = {"v": 1, "step": "staff", "invitation_id": 7, "since": "2026-05-06T02:00:00+00:00"}
    await store.set("k", state, 60)
    assert await store.get("k") == state
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("k")  # deleting twice is fine


@pytest.mark.asyncio
async def test_ttl_is_honoured(clock):
    store = MemoryStateStore(clock)
    await store.set("k", {"step": "idle"}, 60)
    clock.now += 59.9
    assert await store.get("k") == {"step": "idle"}
    clock.now += 0.1
    assert await store.get("k") is None
    assert len(store) == 0


@pytest.mark.asyncio
async def test_set_replaces_and_renews(clock):
    store = MemoryStateStore(clock)
    await store.set("k", {"n": 1}, 10)
    clock.now += 8
    await store.set("k", {"n": 2}, 10)
    clock.now += 8
    assert await store.get("k") == {"n": 2}


@pytest.mark.asyncio
async def test_stored_state_is_a_copy(clock):
    store = MemoryStateStore(clock)
    state = {"selected": [113]}
    await store.set("k", state, 10)
    state["selected"].append(115)
    got = await store.get("k")
    got["selected"].append(108)
    assert await store.get("k") == {"selected": [113]}


@pytest.mark.asyncio
@pytest.mark.parametrize("ttl", [0, -5, 1.5, True])
async def test_ttl_must_be_positive_int(clock, ttl):
    with pytest.raises(ValueError):
        await MemoryStateStore(clock).set("k", {}, ttl)


@pytest.mark.asyncio
async def test_only_json_is_stored(clock):
    with pytest.raises((TypeError, ValueError)):
        await MemoryStateStore(clock).set("k", {"at": object()}, 10)


@pytest.mark.asyncio
async def test_full_store_drops_expired_then_soonest(clock):
    store = MemoryStateStore(clock, max_entries=2)
    await store.set("a", {}, 5)
    await store.set("b", {}, 100)
    clock.now += 10
    await store.set("c", {}, 100)  # "a" has expired and makes room
    assert await store.get("b") == {} and await store.get("c") == {}
    await store.set("d", {}, 200)  # full of live ones: the one closest to expiry goes
    assert await store.get("b") is None and await store.get("d") == {}


def test_encode_decode_round_trip():
    state = {"v": 1, "step": "clarify", "text": "差评，太慢", "since": "2026-05-06T02:00:00+00:00"}
    encoded = encode_state(state)
    assert "差评" in encoded  # compact UTF-8, not \\u escapes
    assert decode_state(encoded) == state
    assert decode_state(encoded.encode()) == state


@pytest.mark.parametrize("raw", [None, b"", "{", "[1, 2]", "null", b"\xff\xfe", "42"])
def test_decode_corrupt_is_none(raw):
    assert decode_state(raw) is None


def test_encode_refuses_huge_or_odd_states():
    with pytest.raises(ValueError):
        encode_state({"text": "x" * 20_000})
    with pytest.raises(ValueError):
        encode_state({"x": float("nan")})


def test_state_key_is_namespaced():
    key = sender_key("secret", "sms", "+8613812341234")
    assert state_key("sms", key) == f"gw:conv:sms:{key}"
    assert "13812341234" not in state_key("sms", key)


@pytest.mark.parametrize(
    ("channel", "sender"),
    [("sms", "+8613812341234"), ("sms", "13812341234567890"), ("SMS", "a" * 32), ("sms:x", "a" * 32), ("sms", "ab")],
)
def test_state_key_refuses_addresses_and_odd_names(channel, sender):
    with pytest.raises(ValueError):
        state_key(channel, sender)


def test_sender_key_is_keyed_and_stable():
    a = sender_key(b"one", "sms", "+8613812341234")
    assert a == sender_key(b"one", "sms", "+8613812341234")
    assert a != sender_key(b"two", "sms", "+8613812341234")
    assert a != sender_key(b"one", "telegram", "+8613812341234")
    assert len(a) == 32 and not a.isdigit()
    with pytest.raises(ValueError):
        sender_key(b"", "sms", "+8613812341234")
