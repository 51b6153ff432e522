"""sdk.envsubst: faas-cli's (drone/envsubst v1.0.3) substitution on raw stack text."""

from __future__ import annotations

import pytest

from sdk.envsubst import SubstitutionError, substitute

EXPANSIONS = [
    # (text, env, expected)
    ("${A}", {"A": "x"}, "x"),
    ("${A}", {}, ""),
    ("${A:-d}", {}, "d"),
    ("${A:-d}", {"A": ""}, "d"),
    ("${A:-d}", {"A": "x"}, "x"),
    ("${A-d}", {}, "d"),
    ("${A-d}", {"A": ""}, "d"),
    ("${A:=d}", {"A": ""}, "d"),
    ("${A=d}", {"A": ""}, "d"),
    ("${A=d}", {"A": "x"}, "x"),
    ("${A:?d}", {}, "d"),
    ("${A:+d}", {}, "d"),
    ("${A:-}", {}, ""),
    ("${REGISTRY:-localhost:5000/authorize-otp}", {}, "localhost:5000/authorize-otp"),
    (
        "${R:-docker.io/alexellis2}/fastapi:${TAG:-latest}",
        {"TAG": "1"},
        "docker.io/alexellis2/fastapi:1",
    ),
    ("${A:-${B}-suffix}", {"B": "b"}, "b-suffix"),
    ("${A:-${B:-inner}}", {}, "inner"),
    ("$${A}", {"A": "x"}, "${A}"),
    ("$$", {}, "$"),
    ("$A and $", {"A": "x"}, "$A and $"),
    ("greeter.Greeter/SayHello$  ", {}, "greeter.Greeter/SayHello$  "),
    ("a\\\\b", {}, "a\\b"),
    ("a\\/b", {}, "a/b"),
    ("a\\nb", {}, "a\\nb"),
    ("${A:-$$}", {}, "$$"),
    ("line1\n  image: ${IMG}\r\n", {"IMG": "i"}, "line1\n  image: i\r\n"),
    ("${A_1}${b2}", {"A_1": "x", "b2": "y"}, "xy"),
]
EXPANSION_IDS = [
    "braced-set", "braced-unset-is-empty", "colon-dash-unset", "colon-dash-empty",
    "colon-dash-set", "dash-unset", "dash-empty", "colon-equals-empty", "equals-empty",
    "equals-set", "colon-question-is-default", "colon-plus-is-default", "empty-default",
    "default-with-colon-and-slash", "two-in-one-value", "nested-in-default",
    "nested-default-in-default", "dollar-dollar-escapes-braces", "dollar-dollar-alone",
    "bare-dollar-name-kept", "trailing-dollar-kept", "double-backslash-unescaped",
    "backslash-slash-unescaped", "other-backslash-kept", "no-escapes-inside-default",
    "newlines-preserved", "names-with-digits-and-underscore",
]  # fmt: skip


@pytest.mark.parametrize(("text", "env", "expected"), EXPANSIONS, ids=EXPANSION_IDS)
def test_substitute_expands_like_drone_envsubst(text, env, expected):
    assert substitute(text, env) == expected


ERRORS = [
    # (text, line, column, fragment of the message)
    ("image: ${A", 1, 8, "unterminated"),
    ("a: 1\nb: ${A:-x", 2, 4, "unterminated"),
    ("${A:-${B}", 1, 1, "unterminated"),
    ("${}", 1, 1, "expected a variable name"),
    ("${A^^}", 1, 1, "unsupported substitution '${A^"),
    ("${#A}", 1, 1, "unsupported substitution '${#"),
    ("${A:1:2}", 1, 1, "unsupported substitution '${A:"),
    ("${A/x/y}", 1, 1, "unsupported substitution '${A/"),
    ("${A B}", 1, 1, "invalid character ' '"),
    ("x\n${A\ny}", 2, 1, "no '}' before the end of the line"),
]
ERROR_IDS = [
    "unterminated-plain",
    "unterminated-default-second-line",
    "unterminated-outer-of-nested",
    "empty-name",
    "case-function",
    "length-function",
    "substring-function",
    "replace-function",
    "space-in-name",
    "name-runs-into-newline",
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERRORS, ids=ERROR_IDS)
def test_substitute_with_bad_expression_raises_with_position(text, line, column, fragment):
    with pytest.raises(SubstitutionError) as caught:
        substitute(text, {})
    assert (caught.value.line, caught.value.column) == (line, column)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"line {line}, column {column}: ")


def test_substitution_error_is_a_value_error():
    assert issubclass(SubstitutionError, ValueError)


def test_substitute_with_hostile_nesting_raises_instead_of_recursing():
    text = "${A:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(SubstitutionError, match="more than 16 nested"):
        substitute(text, {})


def test_substitute_allows_modest_nesting():
    assert substitute("${A:-" * 16 + "x" + "}" * 16, {}) == "x"
