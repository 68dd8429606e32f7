"""Parse .net text into the syntax tree (``ast``).  The only module that imports Lark.

The grammar lives in ``grammar/netlang.lark``; the LALR parser is built once per process.
A small line joiner between lexer and parser drops the newlines that do not end a statement
(inside brackets, after an operator, before ``|>``), so pipelines can span lines.  Lark's
errors become ``SpecSyntaxError`` with what was expected in words (see ``syntax_errors``).
"""
from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark, Token, Tree, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from netlang.errors import SourceFile, Span, SpecError, SpecSyntaxError
from netlang.frontend import ast
from netlang.frontend.syntax_errors import ErrorContext, describe_syntax_error

GRAMMAR_NAME = "netlang.lark"

# A newline right after one of these tokens continues the statement on the next line.
CONTINUES_AFTER = frozenset({"_PIPE", "PLUS", "MINUS", "STAR", "SLASH", "AT", "_POW",
                             "EQUAL", "COMMA", "COLON", "LPAR", "LSQB"})
OPENERS = {"LPAR": "(", "LSQB": "["}
# The lowering evaluates an expression recursively, a few Python frames per level, so an
# expression may nest at most this many operators, calls and brackets (Python's default
# recursion limit of 1000 leaves room for the caller).  Checked before anything recurses.
MAX_NESTING = 200
NESTING_RULES = frozenset({"add", "sub", "mul", "div", "matmul", "pow", "neg", "call",
                           "pipe_name", "pipe_call", "tuple", "list"})
CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB"}


def grammar_path() -> Path:
    """``grammar/netlang.lark`` at the repository root (or packaged next to ``netlang``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "grammar" / GRAMMAR_NAME,
                      here.parent.parent / "grammar" / GRAMMAR_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find the grammar file {GRAMMAR_NAME}")


class LineJoiner:
    """Drops newline tokens that do not end a statement; tracks open brackets for hints."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.open_brackets: list[Token] = []

    def process(self, stream):
        self.open_brackets = []
        pending = None
        previous = None
        for token in stream:
            if token.type == "_NL":
                if not self.open_brackets and previous not in CONTINUES_AFTER:
                    pending = pending or token
                continue
            if pending is not None and token.type != "_PIPE":
                yield pending
            pending = None
            self._track(token)
            previous = token.type
            yield token
        if pending is not None:
            yield pending

    def _track(self, token: Token) -> None:
        if token.type in OPENERS:
            self.open_brackets.append(token)
        elif (token.type in CLOSERS and self.open_brackets
              and self.open_brackets[-1].type == CLOSERS[token.type]):
            self.open_brackets.pop()


@functools.cache
def _parser() -> tuple[Lark, LineJoiner]:
    joiner = LineJoiner()
    lark = Lark(grammar_path().read_text(), parser="lalr", lexer="basic",
                propagate_positions=True, maybe_placeholders=True, postlex=joiner,
                cache=True)
    return lark, joiner


def parse(text: str, path: str = "<string>") -> ast.Spec:
    """The syntax tree of one spec; raises ``SpecSyntaxError`` pointing at the first mistake."""
    source = SourceFile(path, text)
    lark, joiner = _parser()
    try:
        tree = lark.parse(text)
        check_nesting(tree, source)
        items = ToAst(source).transform(tree)
    except UnexpectedInput as err:
        raise _syntax_error(err, source, lark, joiner) from None
    except VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise
    except LarkError as err:  # anything else Lark can raise on odd input
        raise SpecSyntaxError(str(err).splitlines()[0], Span(source, 1, 1)) from None
    return ast.Spec(source, list(items))


def _flat(body) -> tuple:
    """A body's statements, with the lists ``on`` blocks become spliced in."""
    out = []
    for item in body:
        if isinstance(item, list):
            out += item
        elif item is not None:
            out.append(item)
    return tuple(out)


def check_nesting(tree: Tree, source: SourceFile) -> None:
    """Refuse the first expression nested deeper than ``MAX_NESTING``, pointing at its start.

    The walk is iterative: it must not itself run out of stack on the trees it refuses.
    """
    deepest: dict[int, tuple[Tree, int]] = {}
    stack = [(tree, 0, None)]
    while stack:
        node, depth, outermost = stack.pop()
        if node.data in NESTING_RULES:
            depth, outermost = depth + 1, outermost or node
            if depth > deepest.get(id(outermost), (outermost, 0))[1]:
                deepest[id(outermost)] = (outermost, depth)
        stack.extend((child, depth, outermost) for child in node.children
                     if isinstance(child, Tree))
    too_deep = [(node.meta.line, node.meta.column, depth, node)
                for node, depth in deepest.values() if depth > MAX_NESTING]
    if too_deep:
        _, _, depth, node = min(too_deep, key=lambda t: t[:2])
        raise SpecSyntaxError(f"an expression is nested too deeply to compile: {depth} levels of "
                        f"operators, calls or brackets, at most {MAX_NESTING}",
                        _span(source, node.meta),
                        hint="split it into several assignments, e.g. a = ...; b = a + ...")


def _syntax_error(err: UnexpectedInput, source: SourceFile, lark: Lark,
                  joiner: LineJoiner) -> SpecSyntaxError:
    line, col = max(1, int(err.line) if err.line != "?" else 1), 1
    if isinstance(err.column, int):
        col = max(1, err.column)
    context = ErrorContext(
        source=source, line=line, col=col,
        token_type=None, token_text=None, expected=set(),
        open_brackets=[(t.value, t.line, t.column) for t in joiner.open_brackets],
        terminal_text=_terminal_texts(lark),
    )
    if isinstance(err, UnexpectedToken):
        context.token_type = err.token.type
        context.token_text = str(err.token)
        context.expected = set(err.accepts or err.expected)
        if err.token.type == "$END":
            context.line, context.col = _end_position(source.text)
        context.example_hint = _match_example(err, lark)
    elif isinstance(err, UnexpectedCharacters):
        context.token_text = source.text[err.pos_in_stream]
    elif isinstance(err, UnexpectedEOF):
        context.token_type = "$END"
        context.line, context.col = _end_position(source.text)
    return describe_syntax_error(context)


def _end_position(text: str) -> tuple[int, int]:
    """Line and column just after the last non-blank character (where EOF errors point)."""
    stripped = text.rstrip()
    if not stripped:
        return 1, 1
    lines = stripped.splitlines()
    return len(lines), len(lines[-1]) + 1


@functools.cache
def _terminal_texts(lark: Lark) -> dict[str, str]:
    """Terminal name -> its literal text, for the terminals that are fixed strings."""
    out = {}
    for term in lark.terminals:
        if term.pattern.type == "str":
            out[term.name] = term.pattern.value
    return out


# Typical mistakes, matched against the parser state of an error (Lark's
# error_reporting_lalr idea); the label becomes the error's hint.  Lark compares the parser
# stack, so each statement is tried first in a network and after other statements.
def _in_network(*statements: str) -> list[str]:
    out = []
    for stmt in statements:
        out += [f"network n {{\n {stmt}\n}}", f"network n {{\n a = 1\n b = 2\n {stmt}\n}}"]
    return out


EXAMPLES = {
    "an input needs a type after ':', as in: input x: f32[N, 784]":
        _in_network("input x = 1", "input x f32[N]"),
    "a parameter needs a type and an initializer, as in: param W: f32[3, 3] = zeros()":
        _in_network("param W = 1", "param W: f32[1]"),
    "a type is a dtype and dims in brackets, as in f32[N, 28, 28, 1]":
        _in_network("input x: f32(N)", "input x: f32[N-1]"),
    "a pipeline is the loosest operation: write (x |> f) + y":
        _in_network("y = x |> f + 1", "y = x |> f(1) * 2", "y = x |> f - 1",
                    "y = x |> f(1) / 2", "y = x |> f @ w", "y = x |> f ** 2"),
    "one statement per line (or separate them with ';')":
        _in_network("y = x z = x", "y = f(x) z"),
    "a train setting is written KEY VALUE, as in: batch 64": [
        "train n {\n batch = 64\n}", "train n {\n a 1\n batch = 64\n}",
    ],
    "statements go inside 'network NAME { ... }', 'block NAME(...) { ... }' or "
    "'train NAME { ... }'": ["a = 1", "input x: f32[]", "output y = x"],
}


def _match_example(err: UnexpectedToken, lark: Lark) -> str | None:
    """The label of the first example failing in the same parser state, on the same kind of
    token, with the same acceptable tokens.

    This is Lark's ``match_examples`` without its debug logging, which formats the parser
    state with ``%d`` and raises ``TypeError`` in Lark 1.3.
    """
    for label, examples in EXAMPLES.items():
        for example in examples:
            try:
                lark.parse(example)
            except UnexpectedToken as other:
                same_token = other.token.type == err.token.type
                if same_token and other.state == err.state and other.accepts == err.accepts:
                    return label
            except LarkError:
                continue
    return None


# -- tree -> syntax tree -------------------------------------------------------------------

def _span(source: SourceFile, meta) -> Span:
    end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
    return Span(source, meta.line, meta.column, end)


def _token_span(source: SourceFile, token: Token) -> Span:
    end = token.end_column if token.end_line == token.line else None
    return Span(source, token.line, token.column, end)


@v_args(meta=True)
class ToAst(Transformer_NonRecursive):
    """Builds ``ast`` nodes from Lark's parse tree, attaching spans everywhere."""

    def __init__(self, source: SourceFile):
        super().__init__()
        self.source = source

    def _s(self, meta) -> Span:
        return _span(self.source, meta)

    def _t(self, token: Token) -> Span:
        return _token_span(self.source, token)

    # top level
    def start(self, meta, items):
        return items

    def network(self, meta, children):
        name, *body = children
        return ast.Network(str(name), _flat(body), self._s(meta))

    def block(self, meta, children):
        name, *rest = children
        params, body = [], []
        for child in rest:
            if isinstance(child, Token):
                params.append((str(child), self._t(child)))
            elif child is not None:
                body.append(child)
        return ast.Block(str(name), tuple(params), _flat(body), self._s(meta), meta.end_line)

    def net_on(self, meta, children):
        """``on gpu { ... }``: its statements, each ``Placed`` on the device."""
        device, *body = children
        return [ast.Placed(str(device), self._t(device), stmt) for stmt in _flat(body)]

    block_on = net_on

    def train(self, meta, children):
        name, *entries = children
        return ast.Train(str(name), tuple(entries), self._s(meta))

    def train_entry(self, meta, children):
        key, value = children
        return ast.TrainEntry(str(key), value, self._s(meta), self._t(key))

    # statements
    def input_decl(self, meta, children):
        name, type_, *default = children
        return ast.InputDecl(str(name), type_, self._s(meta), self._t(name),
                             default[0] if default else None)

    def param_decl(self, meta, children):
        name, type_, init = children
        return ast.ParamDecl(str(name), type_, init, self._s(meta), self._t(name))

    def assign(self, meta, children):
        name, value = children
        return ast.Assign(str(name), value, self._s(meta), self._t(name))

    def _role(self, role, meta, children):
        name, value = children
        span = self._s(meta)
        name_span = self._t(name) if name is not None else span
        return ast.RoleDecl(role, str(name) if name is not None else None, value, span,
                            name_span)

    def output_decl(self, meta, children):
        return self._role("output", meta, children)

    def loss_decl(self, meta, children):
        return self._role("loss", meta, children)

    def metric_decl(self, meta, children):
        return self._role("metric", meta, children)

    def return_stmt(self, meta, children):
        return ast.Return(children[0], self._s(meta))

    def type(self, meta, children):
        dtype, *dims = children
        dims = tuple(d for d in dims if d is not None)
        return ast.TypeExpr(str(dtype), dims, self._s(meta), self._t(dtype))

    def dim(self, meta, children):
        (token,) = children
        return (int(token) if token.type == "INT" else str(token)), self._t(token)

    # expressions
    def name(self, meta, children):
        return ast.Name(str(children[0]), self._s(meta))

    def int(self, meta, children):
        return ast.Number(int(children[0]), self._s(meta))

    def float(self, meta, children):
        return ast.Number(float(children[0]), self._s(meta))

    def string(self, meta, children):
        text = str(children[0])[1:-1]
        return ast.String(text.encode("utf-8").decode("unicode_escape", "replace")
                          if "\\" in text else text, self._s(meta))

    def true(self, meta, children):
        return ast.Bool(True, self._s(meta))

    def false(self, meta, children):
        return ast.Bool(False, self._s(meta))

    def tuple(self, meta, children):
        return ast.Sequence(tuple(c for c in children if c is not None), self._s(meta))

    list = tuple

    def neg(self, meta, children):
        (operand,) = children
        if isinstance(operand, ast.Number):  # -1 is a literal, so reshape(x, (-1, 392)) works
            return ast.Number(-operand.value, self._s(meta))
        return ast.Neg(operand, self._s(meta))

    def _binary(op):
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, self._s(meta))
        return build

    add, sub, mul, div = _binary("+"), _binary("-"), _binary("*"), _binary("/")
    matmul, pow = _binary("@"), _binary("**")

    def call(self, meta, children):
        name, *args = children
        return ast.Call(str(name), self._args(args), self._s(meta), self._t(name))

    def kwarg(self, meta, children):
        name, value = children
        return ast.Arg(str(name), value, self._s(meta))

    def pipe_name(self, meta, children):
        piped, name = children
        span = self._t(name)
        return ast.Call(str(name), (ast.Arg(None, piped, piped.span),), span, span, True)

    def pipe_call(self, meta, children):
        piped, name, *args = children
        first = self._t(name)
        last = meta.end_column if meta.end_line == name.line else None
        span = Span(self.source, name.line, name.column, last)
        args = (ast.Arg(None, piped, piped.span),) + self._args(args)
        return ast.Call(str(name), args, span, first, True)

    @staticmethod
    def _args(args) -> tuple:
        out = []
        for a in args:
            if a is None:
                continue
            out.append(a if isinstance(a, ast.Arg) else ast.Arg(None, a, a.span))
        return tuple(out)
