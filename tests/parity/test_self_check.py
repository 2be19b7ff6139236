"""The comparison helper rejects one altered character, one altered token and one altered pixel."""
from __future__ import annotations

import pytest
from compare import rejects, same_ids, same_pixels, same_text, same_value

torch = pytest.importorskip("torch")

TEXT = "<|start_header_id|>user<|end_header_id|>\n\n(image 1: <Image><image></Image>)Which?<|eot_id|>"


def test_identical_renderings_pass() -> None:
    same_text("prompt", TEXT, str(TEXT))
    same_ids("ids", [1, 2, 3], (1, 2, 3))
    same_pixels("pixels", torch.arange(12.0).reshape(3, 2, 2), torch.arange(12.0).reshape(3, 2, 2))
    same_value("eos", [7, 9], [7, 9])


def test_one_changed_character_is_rejected() -> None:
    message = rejects(same_text, "prompt", TEXT.replace("Which?", "Which!"), TEXT)
    assert f"character {TEXT.index('?')}" in message


def test_one_changed_token_is_rejected() -> None:
    assert "position 2" in rejects(same_ids, "ids", [5, 6, 7, 8], [5, 6, 9, 8])
    assert "lengths 3, 4" in rejects(same_ids, "ids", [5, 6, 7], [5, 6, 7, 8])


def test_one_changed_pixel_is_rejected() -> None:
    ref = torch.zeros(2, 3, 4, 4)
    ours = ref.clone()
    ours[1, 2, 3, 0] = 2e-6
    assert "(1, 2, 3, 0)" in rejects(same_pixels, "pixels", ours, ref)
    ints = torch.zeros(3, 4, 4, dtype=torch.uint8)
    changed = ints.clone()
    changed[0, 1, 1] = 1
    assert "1 integer pixel" in rejects(same_pixels, "pixels", changed, ints)
    assert "shapes differ" in rejects(same_pixels, "pixels", torch.zeros(1, 3, 4, 4), ref)


def test_a_difference_within_the_tolerance_passes() -> None:
    ref = torch.zeros(3, 4, 4)
    same_pixels("pixels", ref + 5e-7, ref)
