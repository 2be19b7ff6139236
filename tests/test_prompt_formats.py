"""Exact strings of the shared prompt formats (written by hand from the format definitions)."""
from __future__ import annotations

import pytest

from medmim_eval.errors import MedmimError
from medmim_eval.prompt_formats import FORMATS, get_format, render_prompt, render_training
from medmim_eval.schema import ImagePart, Prompt, TextPart

TWO = Prompt(parts=[ImagePart(index=0, path="a.png"), ImagePart(index=1, path="b.png"),
                    TextPart(text="Which is larger?")])
THREE = Prompt(parts=[TextPart(text="Prior:"), ImagePart(index=0, path="a.png"), TextPart(text=" now:"),
                      ImagePart(index=1, path="b.png"), ImagePart(index=2, path="c.png"), TextPart(text="Change?")])

EXPECTED = {
    ("mantis_llama3", 2): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate chatbot who always responds in pirate speak!<|eot_id|>"
                          "<|start_header_id|>user<|end_header_id|>\n\n"
                          "(image 1: <Image><image></Image>)(image 2: <Image><image></Image>)Which is larger?"
                          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ("mantis_llama3", 3): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate chatbot who always responds in pirate speak!<|eot_id|>"
                          "<|start_header_id|>user<|end_header_id|>\n\n"
                          "Prior:(image 1: <Image><image></Image>) now:(image 2: <Image><image></Image>)"
                          "(image 3: <Image><image></Image>)Change?"
                          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llava_med_mistral", 2): "[INST] <image>\n<image>\nWhich is larger? [/INST]",
    ("llava_med_mistral", 3): "[INST] Prior:<image>\n now:<image>\n<image>\nChange? [/INST]",
    ("idefics2", 2): "User:<image><image>Which is larger?<end_of_utterance>\nAssistant:",
    ("idefics2", 3): "User:Prior:<image> now:<image><image>Change?<end_of_utterance>\nAssistant:",
}
RESPONSE_END = {
    "mantis_llama3": "B: second<|eot_id|>",
    "llava_med_mistral": " B: second</s>",
    "idefics2": "B: second<end_of_utterance>\n",  # no space after the cue: Mantis's conv_idefics_2
}


@pytest.mark.parametrize("name,n", sorted(EXPECTED))
def test_rendered_prompt_is_exact(name: str, n: int) -> None:
    prompt = TWO if n == 2 else THREE
    assert render_prompt(name, prompt) == EXPECTED[name, n]


@pytest.mark.parametrize("name,n", sorted(EXPECTED))
def test_training_text_extends_the_evaluation_prompt(name: str, n: int) -> None:
    prompt = TWO if n == 2 else THREE
    text = render_training(name, prompt, "B: second")
    assert text.prompt == EXPECTED[name, n] == render_prompt(name, prompt)
    assert text.full == EXPECTED[name, n] + RESPONSE_END[name]
    assert text.response == RESPONSE_END[name]


def test_mantis_carries_the_system_turn_of_its_llama_3_template_and_stop_tokens() -> None:
    mantis = get_format("mantis_llama3")
    # Mantis trains and evaluates Llama-3 checkpoints with this system turn (tests/parity checks the
    # full text against mantis-vl); revision 2 keeps answers cached for revision 1 from being reused.
    assert render_prompt(mantis, TWO).startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                                 "You are a pirate chatbot who always responds in pirate speak!<|eot_id|>")
    assert mantis.tag == "mantis_llama3@2" and get_format("idefics2").tag == "idefics2@2"
    assert mantis.stop_strings == ("<|eot_id|>",) and mantis.bos_in_text
    assert not get_format("llava_med_mistral").bos_in_text


def test_each_format_has_one_image_token_per_image() -> None:
    for fmt in FORMATS.values():
        assert render_prompt(fmt, THREE).count(fmt.image_token) == 3


def test_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(MedmimError, match="mantis_llama3"):
        render_prompt("chatml", TWO)
