"""The matrix DSL: text such as ``(g | qwen) & +tts`` → a small frozen syntax tree.

Grammar (router spec §4.3.2)::

    expr     := and_expr ( "|" and_expr )*     n-ary OR
    and_expr := atom ( "&" atom )*             n-ary AND; binds tighter than "|"
    atom     := IDENT | "+" IDENT | "(" expr ")"
    IDENT    := one or more Unicode letters, decimal digits, "_", "-" or "."

This module only knows syntax. Whether an identifier is a var or a model, and
whether a ``+ref`` names a defined set, is decided by :mod:`modelswap.core.matrix`,
which also prefixes every message with ``matrix: set "<name>": ``.

Positions in error messages are 0-based *character* indexes into the expression,
so they stay meaningful for non-ASCII identifiers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "And",
    "Expr",
    "Ident",
    "MatrixError",
    "Or",
    "Ref",
    "Token",
    "TokenKind",
    "identifiers",
    "parse",
    "references",
    "to_dsl",
    "tokenize",
]

#: Deeper nesting than this is refused instead of overflowing Python's stack,
#: both here and in the solver, which walks the same tree recursively.
MAX_NESTING = 100


class MatrixError(ValueError):
    """A matrix definition is invalid; the message is meant for the user verbatim."""


# --- tokens ------------------------------------------------------------------------


class TokenKind(enum.Enum):
    """Lexical categories; ``REF`` is ``+name`` with the ``+`` already removed."""

    IDENT = "IDENT"
    REF = "REF"
    AND = "&"
    OR = "|"
    LPAREN = "("
    RPAREN = ")"


@dataclass(frozen=True, slots=True)
class Token:
    """One token; ``pos`` is where it starts (0-based character index)."""

    kind: TokenKind
    text: str
    pos: int


_PUNCTUATION = {
    "&": TokenKind.AND,
    "|": TokenKind.OR,
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
}


def _is_ident_char(ch: str) -> bool:
    """Letters of any script, decimal digits, and the three joiners ``_ - .``.

    ``isdecimal`` (category Nd) rather than ``isdigit``, so that superscripts and
    other numeric-looking symbols are rejected like any other punctuation.
    """
    return ch.isalpha() or ch.isdecimal() or ch in "_-."


def _quote_char(ch: str) -> str:
    """Show a character in single quotes, escaping what would not print legibly."""
    if ch == "'":
        return "'\\''"
    if ch == "\\":
        return "'\\\\'"
    if ch.isprintable():
        return f"'{ch}'"
    code = ord(ch)
    if code <= 0xFF:
        return f"'\\x{code:02x}'"
    if code <= 0xFFFF:
        return f"'\\u{code:04x}'"
    return f"'\\U{code:08x}'"


def _scan_ident(text: str, start: int) -> int:
    """Index just past the identifier that begins at ``start`` (``start`` if none)."""
    end = start
    while end < len(text) and _is_ident_char(text[end]):
        end += 1
    return end


def _iter_tokens(text: str) -> Iterator[Token]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCTUATION:
            yield Token(_PUNCTUATION[ch], ch, i)
            i += 1
        elif ch == "+":
            # The name must follow directly: "+ base" is an error, not a ref.
            end = _scan_ident(text, i + 1)
            if end == i + 1:
                raise MatrixError(f"tokenize: expected set name after '+' at position {i + 1}")
            yield Token(TokenKind.REF, text[i + 1 : end], i)
            i = end
        elif _is_ident_char(ch):
            end = _scan_ident(text, i)
            yield Token(TokenKind.IDENT, text[i:end], i)
            i = end
        else:
            raise MatrixError(f"tokenize: unexpected character {_quote_char(ch)} at position {i}")


def tokenize(text: str) -> tuple[Token, ...]:
    """Split ``text`` into tokens, or raise :class:`MatrixError` at the first bad one."""
    return tuple(_iter_tokens(text))


# --- syntax tree -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ident:
    """A leaf: a var name or a model ID (which one is resolved later)."""

    name: str


@dataclass(frozen=True, slots=True)
class Ref:
    """``+name``: every combination of another set, inlined here."""

    name: str


@dataclass(frozen=True, slots=True)
class And:
    """All operands together: one combination of each operand, united."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Alternatives: the combinations of each operand, in operand order."""

    items: tuple[Expr, ...]


Expr = Ident | Ref | And | Or


# --- parser ------------------------------------------------------------------------


class _Parser:
    """Recursive descent over a token tuple; one instance parses one expression."""

    def __init__(self, tokens: tuple[Token, ...]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    def _peek(self) -> Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _accept(self, kind: TokenKind) -> Token | None:
        token = self._peek()
        if token is not None and token.kind is kind:
            self._index += 1
            return token
        return None

    def parse_all(self) -> Expr:
        expr = self._expr()
        leftover = self._peek()
        if leftover is not None:
            raise _unexpected(leftover)
        return expr

    def _expr(self) -> Expr:
        items = [self._and_expr()]
        while self._accept(TokenKind.OR):
            items.append(self._and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and_expr(self) -> Expr:
        items = [self._atom()]
        while self._accept(TokenKind.AND):
            items.append(self._atom())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _atom(self) -> Expr:
        token = self._peek()
        if token is None:
            raise MatrixError("parse: unexpected end of expression")
        self._index += 1
        if token.kind is TokenKind.IDENT:
            return Ident(token.text)
        if token.kind is TokenKind.REF:
            return Ref(token.text)
        if token.kind is TokenKind.LPAREN:
            return self._group(token)
        raise _unexpected(token)

    def _group(self, opening: Token) -> Expr:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise MatrixError(
                f"parse: parentheses nested deeper than {MAX_NESTING} at position {opening.pos}"
            )
        inner = self._expr()
        if self._accept(TokenKind.RPAREN) is None:
            stray = self._peek()
            if stray is not None:
                raise _unexpected(stray)
            raise MatrixError(
                f"parse: missing closing parenthesis for '(' at position {opening.pos}"
            )
        self._depth -= 1
        return inner


def _unexpected(token: Token) -> MatrixError:
    shown = f"+{token.text}" if token.kind is TokenKind.REF else token.text
    return MatrixError(f'parse: unexpected token "{shown}" at position {token.pos}')


def parse(text: str) -> Expr:
    """Parse one set's DSL text, raising :class:`MatrixError` with the spec's wording.

    Blank text is its own error (``empty DSL expression``) rather than a generic
    "unexpected end", because an empty set is a common configuration slip.
    """
    tokens = tokenize(text)
    if not tokens:
        raise MatrixError("empty DSL expression")
    return _Parser(tokens).parse_all()


# --- helpers over the tree ---------------------------------------------------------


def _walk(expr: Expr) -> Iterator[Expr]:
    """Pre-order, left to right, without recursion (trees may be wide or deep)."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, And | Or):
            stack.extend(reversed(node.items))


def identifiers(expr: Expr) -> tuple[str, ...]:
    """Leaf names in order of first mention, without repeats."""
    return tuple(dict.fromkeys(n.name for n in _walk(expr) if isinstance(n, Ident)))


def references(expr: Expr) -> tuple[str, ...]:
    """``+ref`` set names in order of first mention, without repeats.

    This order decides where referenced sets land in the evaluation order.
    """
    return tuple(dict.fromkeys(n.name for n in _walk(expr) if isinstance(n, Ref)))


def to_dsl(expr: Expr) -> str:
    """Render a tree back to DSL text that parses to the same tree."""
    if isinstance(expr, Ident):
        return expr.name
    if isinstance(expr, Ref):
        return f"+{expr.name}"
    if isinstance(expr, And):
        return " & ".join(_wrap(item, nested=isinstance(item, And | Or)) for item in expr.items)
    return " | ".join(_wrap(item, nested=isinstance(item, Or)) for item in expr.items)


def _wrap(item: Expr, *, nested: bool) -> str:
    """Parenthesise an operand whose own operator would otherwise merge or rebind."""
    text = to_dsl(item)
    return f"({text})" if nested else text
