"""The matrix DSL on its own: tokens, trees and syntax errors (router spec §4.3.2, §8.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelswap.core.matrix_dsl import (
    MAX_NESTING,
    And,
    Expr,
    Ident,
    MatrixError,
    Or,
    Ref,
    Token,
    TokenKind,
    identifiers,
    parse,
    references,
    to_dsl,
    tokenize,
)

T = TokenKind


def kinds(text: str) -> list[tuple[TokenKind, str]]:
    return [(t.kind, t.text) for t in tokenize(text)]


# --- §8.5 #88: tokenizer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", [(T.IDENT, "abc")]),
        ("model-name.v2", [(T.IDENT, "model-name.v2")]),
        (
            "(a | +base) & b",
            [
                (T.LPAREN, "("),
                (T.IDENT, "a"),
                (T.OR, "|"),
                (T.REF, "base"),
                (T.RPAREN, ")"),
                (T.AND, "&"),
                (T.IDENT, "b"),
            ],
        ),
        (
            "(a|b)&c",
            [
                (T.LPAREN, "("),
                (T.IDENT, "a"),
                (T.OR, "|"),
                (T.IDENT, "b"),
                (T.RPAREN, ")"),
                (T.AND, "&"),
                (T.IDENT, "c"),
            ],
        ),
        ("+llms & v", [(T.REF, "llms"), (T.AND, "&"), (T.IDENT, "v")]),
        ("under_score", [(T.IDENT, "under_score")]),
        ("Qwen3-30B.Q4_K_M", [(T.IDENT, "Qwen3-30B.Q4_K_M")]),
        ("模型 & ünïcode٣", [(T.IDENT, "模型"), (T.AND, "&"), (T.IDENT, "ünïcode٣")]),
        (" \t\n a \r\n", [(T.IDENT, "a")]),
        ("", []),
    ],
)
def test_s8_88_tokenizer(text: str, expected: list[tuple[TokenKind, str]]) -> None:
    assert kinds(text) == expected


def test_tokens_carry_their_start_position() -> None:
    assert tokenize(" a & +bb") == (
        Token(T.IDENT, "a", 1),
        Token(T.AND, "&", 3),
        Token(T.REF, "bb", 5),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+", "tokenize: expected set name after '+' at position 1"),
        ("a & + b", "tokenize: expected set name after '+' at position 5"),
        ("a & +(b)", "tokenize: expected set name after '+' at position 5"),
        ("a @ b", "tokenize: unexpected character '@' at position 2"),
        ("模型 @", "tokenize: unexpected character '@' at position 3"),
        ("a, b", "tokenize: unexpected character ',' at position 1"),
        ("a/b", "tokenize: unexpected character '/' at position 1"),
        ("a ' b", "tokenize: unexpected character '\\'' at position 2"),
        ("a\x00", "tokenize: unexpected character '\\x00' at position 1"),
        ("x²", "tokenize: unexpected character '²' at position 1"),  # not a decimal digit
    ],
)
def test_tokenizer_errors(text: str, message: str) -> None:
    with pytest.raises(MatrixError) as caught:
        tokenize(text)
    assert str(caught.value) == message


def test_matrix_error_is_a_value_error() -> None:
    assert issubclass(MatrixError, ValueError)


# --- trees ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a", Ident("a")),
        ("+base", Ref("base")),
        ("a & b", And((Ident("a"), Ident("b")))),
        ("a | b | c", Or((Ident("a"), Ident("b"), Ident("c")))),
        ("a | b & c", Or((Ident("a"), And((Ident("b"), Ident("c")))))),
        ("a & b | c", Or((And((Ident("a"), Ident("b"))), Ident("c")))),
        (
            "(a | b) & (c | d)",
            And((Or((Ident("a"), Ident("b"))), Or((Ident("c"), Ident("d"))))),
        ),
        ("((a))", Ident("a")),
        ("+llms & v", And((Ref("llms"), Ident("v")))),
        ("a & a", And((Ident("a"), Ident("a")))),
    ],
)
def test_parse_builds_precedence_aware_trees(text: str, tree: Expr) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty DSL expression"),
        ("   \t", "empty DSL expression"),
        ("(a", "parse: missing closing parenthesis for '(' at position 0"),
        ("a & (b | (c)", "parse: missing closing parenthesis for '(' at position 4"),
        ("a)", 'parse: unexpected token ")" at position 1'),
        ("()", 'parse: unexpected token ")" at position 1'),
        ("a b", 'parse: unexpected token "b" at position 2'),
        ("(a b)", 'parse: unexpected token "b" at position 3'),
        ("a +b", 'parse: unexpected token "+b" at position 2'),
        ("& a", 'parse: unexpected token "&" at position 0'),
        ("a | | b", 'parse: unexpected token "|" at position 4'),
        ("a &", "parse: unexpected end of expression"),
        ("(", "parse: unexpected end of expression"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(MatrixError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_spec_error_texts_are_substrings() -> None:
    """§8.5 #92 matches by substring; keep the spec's phrases inside our richer texts."""
    cases = {
        "": "empty DSL expression",
        "(a": "missing closing parenthesis",
        "a)": "unexpected token",
        "()": "unexpected token",
    }
    for text, phrase in cases.items():
        with pytest.raises(MatrixError, match=phrase):
            parse(text)


def test_nesting_limit_is_an_error_not_a_crash() -> None:
    fine = "(" * MAX_NESTING + "a" + ")" * MAX_NESTING
    assert parse(fine) == Ident("a")
    too_deep = "(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1)
    with pytest.raises(MatrixError, match="nested deeper than"):
        parse(too_deep)


def test_identifiers_and_references_in_first_mention_order() -> None:
    tree = parse("(b | +y) & a & +x & b & +y")
    assert identifiers(tree) == ("b", "a")
    assert references(tree) == ("y", "x")


# --- round trip ----------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "m-1", "x.y"])
leaves: st.SearchStrategy[Expr] = st.one_of(names.map(Ident), st.sampled_from(["s", "t"]).map(Ref))


trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=12,
)


@given(trees)
def test_to_dsl_round_trips(tree: Expr) -> None:
    assert parse(to_dsl(tree)) == tree
