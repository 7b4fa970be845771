"""Hostile properties end in one SpecError line, never a RecursionError, a crash or gigabytes: deep nesting
(1.0 and 2.0), numbers beyond float64, unknown element types, comment-only files, file contents that look
like paths, a gzip bomb (non-regular files: tests/cli/test_fuzz_inputs.py)."""

from __future__ import annotations

import gzip

import pytest

from onnxdual.inputfiles import MAX_DECOMPRESSED_ENV
from onnxdual.specs import SpecError, declared_networks, parse_vnnlib, parse_vnnlib_text
from onnxdual.specs.sexpr import MAX_DEPTH
from tests.specs.queries import BOX_QUERY

HEAD = "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))\n"


def nested(kind: str, depth: int) -> str:
    """A property whose assertion nests ``depth`` levels of ``kind`` (and / + / not, or 2.0's and)."""
    if kind == "and":
        return HEAD + "(assert " + "(and " * depth + "(<= Y_0 1)" + ")" * depth + ")"
    if kind == "not":
        return HEAD + "(assert " + "(not " * depth + "(<= Y_0 1)" + ")" * depth + ")"
    if kind == "+":
        return HEAD + "(assert (<= Y_0 " + "(+ " * depth + "1" + " 1)" * depth + "))"
    return BOX_QUERY.format(t="Real") + "(assert " + "(and " * depth + "(>= Y[0,0] 1.0)" + ")" * depth + ")"


def one_line_error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_vnnlib_text(text, name="p.vnnlib")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("p.vnnlib"), msg
    return msg


@pytest.mark.parametrize("kind", ["and", "not", "+", "v2"])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_refused(kind, depth):
    assert "nested too deeply" in one_line_error(nested(kind, depth))


@pytest.mark.parametrize("kind", ["and", "not", "+", "v2"])
def test_nesting_just_inside_the_limit_parses(kind):
    assert parse_vnnlib_text(nested(kind, MAX_DEPTH - 3)).n_cases == 1


def test_declarations_of_a_deep_2_0_query_are_refused_too():
    with pytest.raises(SpecError, match="nested too deeply"):
        declared_networks(nested("v2", 100_000), "q.vnnlib")


@pytest.mark.parametrize("number", ["1e999999999", "-1e400", "1E+999999999999"])
def test_numbers_beyond_float64_are_refused(number):
    one_line_error(BOX_QUERY.format(t="Real").replace("100.0", number))
    one_line_error(HEAD + f"(assert (<= Y_0 {number}))")


def test_tiny_numbers_read_as_zero_in_2_0():
    prop = parse_vnnlib_text(BOX_QUERY.format(t="Real").replace("100.0", "1e-999999999"))
    ((_, (constraint,)),) = prop.cases
    assert constraint.b.tolist() == [0.0]


def test_an_unknown_element_type_is_refused_with_its_line():
    msg = one_line_error(BOX_QUERY.format(t="Banana"))
    assert msg.startswith("p.vnnlib:3:") and "'Banana'" in msg


@pytest.mark.parametrize("text", ["", "   \n", "; nothing\n", "; a\n;; b (with parentheses)\n"])
def test_a_file_without_commands_says_so(tmp_path, text):
    path = tmp_path / "c.vnnlib"
    path.write_text(text)
    with pytest.raises(SpecError, match="no VNN-LIB commands"):
        parse_vnnlib(path)


def test_a_file_holding_a_path_is_parsed_as_text_never_opened(tmp_path):
    target = tmp_path / "real.vnnlib"
    target.write_text(BOX_QUERY.format(t="Real"))
    with pytest.raises(SpecError, match="unexpected token"):
        parse_vnnlib_text(str(target), name="p.vnnlib")


def test_a_gzip_bomb_property_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "p.vnnlib.gz"
    path.write_bytes(gzip.compress(b";" * (2 << 20)))
    monkeypatch.setenv(MAX_DECOMPRESSED_ENV, str(1 << 20))
    with pytest.raises(SpecError, match="decompresses to more than"):
        parse_vnnlib(path)
