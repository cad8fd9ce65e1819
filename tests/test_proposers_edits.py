"""The llm reply format: parsing what models actually send, applying it strictly."""

from __future__ import annotations

import pytest

from autoresearch.proposers.edits import EditError, apply_reply, parse_reply

SOURCE = """\
import math

# hyperparameters
DEPTH = 4  # layers
MATRIX_LR = 0.04  # Muon lr
WARMUP = 0.0


def schedule(progress):
    if progress < WARMUP:
        return progress / WARMUP
    return 1.0


def train():
    lr = MATRIX_LR * schedule(0.5)
    return lr
""" + "".join(f"\n# filler line {i}" for i in range(20)) + "\n"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


def test_the_common_form_with_description_hypothesis_and_notes():
    reply = parse_reply(
        "Description: deeper model\nHypothesis: more capacity helps\nat this size.\n\n"
        "Notes: depth 4 is the baseline\n- try 6 next\n\n"
        + block("DEPTH = 4  # layers", "DEPTH = 5  # layers"))
    assert reply.description == "deeper model"
    assert reply.hypothesis == "more capacity helps at this size."
    assert reply.notes == "depth 4 is the baseline\n- try 6 next"
    assert len(reply.edits) == 1 and reply.edits[0].path == ""
    assert "DEPTH = 5  # layers" in apply_reply(reply, SOURCE)


def test_fences_file_lines_blank_lines_and_markdown_around_blocks_are_tolerated():
    text = (
        "Sure, here is my proposal.\n\n**Description:** raise the lr and warm up\n\n"
        "**Hypothesis:** faster early progress\n\n"
        "`train.py`\n```python\n<<<<<<< SEARCH\nMATRIX_LR = 0.04  # Muon lr\n=======\nMATRIX_LR = 0.05  # Muon lr\n"
        ">>>>>>> REPLACE\n```\n\n\ntrain.py\n```\n\n" + block("\nWARMUP = 0.0\n", "WARMUP = 0.1") + "\n```\n"
        "\nNotes: lr and warmup changed together\n")
    reply = parse_reply(text)
    assert reply.description == "raise the lr and warm up" and reply.hypothesis == "faster early progress"
    assert [e.path for e in reply.edits] == ["train.py", "train.py"]
    assert reply.notes == "lr and warmup changed together"
    new = apply_reply(reply, SOURCE)
    assert "MATRIX_LR = 0.05" in new and "WARMUP = 0.1\n" in new and "WARMUP = 0.0" not in new


def test_a_reply_wrapped_in_one_fence_and_trailing_spaces():
    text = "```\nDescription: one\n" + block("DEPTH = 4  # layers   ", "DEPTH = 3  # layers") + "\n```"
    assert "DEPTH = 3" in apply_reply(parse_reply(text), SOURCE)


def test_blocks_apply_in_order_to_the_edited_text():
    text = "Description: two steps\n" + block("DEPTH = 4  # layers", "DEPTH = 6  # layers") + "\n" + \
        block("DEPTH = 6  # layers", "DEPTH = 7  # layers")
    assert "DEPTH = 7" in apply_reply(parse_reply(text), SOURCE)


def test_a_block_that_does_not_match_names_the_closest_lines():
    text = "Description: x\n" + block("    lr = MATRIX_LR * schedule(0.25)\n    return lr", "    return 0.0")
    with pytest.raises(EditError) as e:
        apply_reply(parse_reply(text), SOURCE)
    message = str(e.value)
    assert "block 1 does not match train.py" in message
    assert "-    lr = MATRIX_LR * schedule(0.25)" in message and "+    lr = MATRIX_LR * schedule(0.5)" in message


def test_ambiguous_empty_outside_and_unchanged_edits_are_refused():
    twice = SOURCE + "\n\ndef other(lr):\n    return lr\n"
    with pytest.raises(EditError, match=r"matches 2 places in train.py \(lines 17, 42\)"):
        apply_reply(parse_reply("Description: x\n" + block("    return lr", "    return lr * 2")), twice)
    with pytest.raises(EditError, match="empty SEARCH part"):
        apply_reply(parse_reply("Description: x\n" + block("", "DEPTH = 1")), SOURCE)
    with pytest.raises(EditError, match="edits prepare.py: only train.py may change"):
        apply_reply(parse_reply("Description: x\nprepare.py\n" + block("MAX_SEQ_LEN = 2048", "MAX_SEQ_LEN = 4096")), SOURCE)
    with pytest.raises(EditError, match="leave train.py unchanged"):
        apply_reply(parse_reply("Description: x\n" + block("DEPTH = 4  # layers", "DEPTH = 4  # layers")), SOURCE)


def test_a_syntax_error_is_reported_with_its_line():
    text = "Description: broken\n" + block("def train():", "def train(:")
    with pytest.raises(EditError) as e:
        apply_reply(parse_reply(text), SOURCE)
    assert "does not compile" in str(e.value) and "def train(:" in str(e.value) and "line 15" in str(e.value)


def test_malformed_replies_say_what_is_missing():
    with pytest.raises(EditError, match="no `Description: <one line>` line"):
        parse_reply(block("DEPTH = 4  # layers", "DEPTH = 5  # layers"))
    with pytest.raises(EditError, match="has no ======= line"):
        parse_reply("Description: x\n<<<<<<< SEARCH\nDEPTH = 4\n>>>>>>> REPLACE\n")
    with pytest.raises(EditError, match="does not end with a >>>>>>> REPLACE line"):
        parse_reply("Description: x\n<<<<<<< SEARCH\nDEPTH = 4\n=======\nDEPTH = 5\n")
    with pytest.raises(EditError, match="no SEARCH/REPLACE block"):
        apply_reply(parse_reply("Description: just talk\nI think we should go deeper."), SOURCE)


def test_whole_file_replacement_is_a_fallback_for_a_full_file_only():
    whole = SOURCE.replace("DEPTH = 4", "DEPTH = 8")
    reply = parse_reply(f"Description: deeper\nHere is the file:\n\n```python\n{whole}```\n")
    assert reply.edits == () and apply_reply(reply, SOURCE) == whole
    snippet = parse_reply("Description: deeper\n```python\nDEPTH = 8\n```\n")
    with pytest.raises(EditError, match="too short to be the whole of train.py"):
        apply_reply(snippet, SOURCE)
    elsewhere = parse_reply(f"Description: x\nprepare.py\n```python\n{whole}```\n")
    with pytest.raises(EditError, match="for prepare.py"):
        apply_reply(elsewhere, SOURCE)
