"""Syntax errors in words: "unexpected ')', expected an expression".

The parser hands over what Lark knows at the point of failure (the token it got, the token
kinds it would have accepted, the brackets still open); this module turns that into a
``SpecSyntaxError`` a person can act on.  Groups of tokens collapse into one phrase: every token
that can start an expression becomes "an expression", every binary operator "an operator".
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from netlang.errors import SourceFile, Span, SpecSyntaxError

KEYWORDS = ("network", "block", "train", "input", "param", "output", "loss", "metric",
            "return", "true", "false")

# Terminals with a name rather than fixed text.
NAMED_TERMINALS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a newline", "$END": "the end of the file",
}
EXPRESSION_START = frozenset({"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "LPAR",
                              "LSQB", "MINUS"})
OPERATORS = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "AT", "_POW", "_PIPE"})
STATEMENT_START = frozenset({"INPUT", "PARAM", "OUTPUT", "LOSS", "METRIC"})
ITEM_START = frozenset({"NETWORK", "BLOCK", "TRAIN"})


@dataclass
class ErrorContext:
    """Everything known about one syntax error, independent of Lark's classes."""

    source: SourceFile
    line: int
    col: int
    token_type: str | None
    token_text: str | None
    expected: set[str]
    open_brackets: list[tuple[str, int, int]]
    terminal_text: dict[str, str] = field(default_factory=dict)
    example_hint: str | None = None


def describe_syntax_error(ctx: ErrorContext) -> SpecSyntaxError:
    width = len(ctx.token_text) if ctx.token_text and ctx.token_type not in ("_NL",
                                                                              "$END") else 1
    span = Span(ctx.source, ctx.line, ctx.col, ctx.col + max(1, width))
    message = f"unexpected {_describe_token(ctx)}"
    wanted = expected_in_words(ctx.expected, ctx.terminal_text)
    if wanted:
        message += f", expected {wanted}"
    return SpecSyntaxError(message, span, hint=_hint(ctx))


def _describe_token(ctx: ErrorContext) -> str:
    kind, text = ctx.token_type, ctx.token_text
    if kind is None:
        return f"character {text!r}"
    if kind == "_NL":
        return "end of line" if text and text[0] != ";" else "';'"
    if kind == "$END":
        return "end of file"
    if kind == "NAME":
        return f"name '{text}'"
    if kind in ("INT", "FLOAT"):
        return f"number {text}"
    if kind == "STRING":
        return f"string {text}"
    return f"'{text}'"


def expected_in_words(expected: set[str], terminal_text: dict[str, str]) -> str:
    """``{'NAME', 'INT', ..., 'RBRACE', '_NL'}`` -> "an expression, '}' or a newline"."""
    remaining = set(expected)
    phrases = []
    if STATEMENT_START <= remaining:
        phrases.append("a statement")
        remaining -= STATEMENT_START | {"NAME"}
    if ITEM_START <= remaining:
        phrases.append("'network', 'block' or 'train'")
        remaining -= ITEM_START | {"_NL", "$END"}
    if {"NAME", "INT", "LPAR"} <= remaining:
        phrases.append("an expression")
        remaining -= EXPRESSION_START
    if len(remaining & OPERATORS) >= 3:
        phrases.append("an operator")
        remaining -= OPERATORS
    for name in sorted(remaining, key=_order):
        phrases.append(_terminal_phrase(name, terminal_text))
    return _join_or(phrases)


def _order(name: str) -> tuple:
    # Punctuation first, then names and keywords, then newline and end of file last.
    return (name in ("_NL", "$END"), name in NAMED_TERMINALS, name)


def _terminal_phrase(name: str, terminal_text: dict[str, str]) -> str:
    if name in NAMED_TERMINALS:
        return NAMED_TERMINALS[name]
    if name in terminal_text:
        return f"'{terminal_text[name]}'"
    return name.lower()


def _join_or(phrases: list[str]) -> str:
    phrases = list(dict.fromkeys(phrases))
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _hint(ctx: ErrorContext) -> str | None:
    unclosed = ctx.open_brackets and (ctx.token_type in ("RBRACE", "$END", "_NL")
                                      or ctx.open_brackets[-1][1] < ctx.line)
    if unclosed:
        text, line, col = ctx.open_brackets[-1]
        closer = {"(": ")", "[": "]"}[text]
        return f"the '{text}' at line {line}, column {col} is never closed: add '{closer}'"
    if ctx.token_type == "$END" and "RBRACE" in ctx.expected:
        return "a '{' is never closed: add '}'"
    keyword = _misspelled_keyword(ctx)
    if keyword:
        return keyword
    if ctx.token_type in {k.upper() for k in KEYWORDS}:
        return f"'{ctx.token_text}' is a reserved word; use another name"
    if ctx.token_type is None and ctx.token_text and not ctx.token_text.isascii():
        return ("names are ASCII letters, digits and '_' (not starting with a digit); "
                "other characters may appear only in comments and strings")
    return ctx.example_hint


def _misspelled_keyword(ctx: ErrorContext) -> str | None:
    """``ouptut probs = ...`` fails at ``probs``; the first word of the line is the typo."""
    text = ctx.source.line(ctx.line)
    words = text.split()
    first = words[0] if words else ""
    if first in KEYWORDS or ctx.col <= text.find(first) + len(first):
        return None
    close = difflib.get_close_matches(first, KEYWORDS, n=1, cutoff=0.7)
    return f"did you mean '{close[0]}'?" if close else None
