import pytest

from gateway.messaging.segments import encoding, fit, is_gsm7, segments, units

LINK = "https://hcp.example.gov.cn/r/Ab3dE5fG"


def prompt(item: str) -> str:
    return f"【政务服务好差评】您办理的“{item}”已办结，请点击 {LINK} 评价本次服务。回复TD退订"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("ÄÖÜ@£$¥" * 20, 1),  # GSM-7 letters beyond ASCII
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("a" * 159 + "€", 2),
        ("好" * 70, 1),
        ("好" * 71, 2),
        ("好" * 134, 2),
        ("好" * 135, 3),
        ("a" * 69 + "好", 1),  # one Chinese character turns the whole text into UCS-2
        ("a" * 70 + "好", 2),
        ("😀" * 35, 1),  # an emoji is a surrogate pair: two UCS-2 units
        ("😀" * 36, 2),
        ("好" * 66 + "😀", 1),
        ("好" * 66 + "😀" * 33, 2),  # 66 units, then a pair does not fit 67: it moves whole
        ("好" * 66 + "😀" * 34, 3),  # 134 units, yet three segments: pairs are never split
    ],
)
def test_segment_counts(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_encoding_and_units() -> None:
    assert is_gsm7("Reply 1-5 [ok]") and encoding("Reply 1-5") == "GSM-7"
    assert units("[ok]") == 6
    assert encoding("请回复1-5") == "UCS-2" and units("请回复😀") == 5
    assert not is_gsm7("naïve")  # ï is not in the GSM alphabet


def test_short_item_name_is_kept_whole() -> None:
    text = fit(prompt, "居民身份证换领")
    assert text == prompt("居民身份证换领")
    assert segments(text) == 2


def test_long_item_name_is_shortened_to_fit_two_segments() -> None:
    item = ("不动产登记（国有建设用地使用权及房屋所有权首次登记、转移登记、变更登记）" * 6)[:200]
    assert len(item) == 200 and segments(prompt(item)) > 2

    text = fit(prompt, item)

    assert segments(text) <= 2
    assert LINK in text and text.count(LINK) == 1
    assert text.startswith("【政务服务好差评】您办理的“") and text.endswith("评价本次服务。回复TD退订")
    shortened = text.split("“", 1)[1].split("”", 1)[0]
    assert shortened.endswith("…") and item.startswith(shortened[:-1])
    # As much of the name as possible: one more character would not fit.
    longer = item[: len(shortened)] + "…"
    assert segments(prompt(longer)) > 2


def test_fit_respects_a_one_segment_budget() -> None:
    text = fit(lambda item: f"请评价{item}：{LINK}", "行政许可事项" * 20, max_segments=1)
    assert segments(text) == 1 and text.endswith(LINK)


def test_a_template_too_long_without_the_name_raises() -> None:
    with pytest.raises(ValueError, match="even without the item name"):
        fit(lambda item: "好" * 140 + item, "任意事项")


def _packed(text: str) -> int:
    """Segments by placing the characters one by one, the way every text was counted before the shortcut
    for texts of one unit a character."""
    from gateway.messaging.segments import _pack, _weights

    gsm7 = is_gsm7(text)
    return _pack(_weights(text, gsm7), *((160, 153) if gsm7 else (70, 67)))


@pytest.mark.parametrize("alphabet", ["ab€", "好a", "好😀", "a😀", "ab", "好"])
def test_segment_counts_agree_with_placing_each_character(alphabet: str) -> None:
    import random

    rng = random.Random(alphabet)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 420)))
        assert segments(text) == _packed(text), text
