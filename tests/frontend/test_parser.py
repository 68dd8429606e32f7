"""The grammar and the syntax tree: what each construct parses to, and where it points."""
from __future__ import annotations

import pytest

from netlang.errors import SpecSyntaxError
from netlang.frontend import ast
from netlang.frontend.parser import parse


def body(text: str) -> tuple:
    """The statements of a one-network spec."""
    (network,) = parse(f"network n {{\n{text}\n}}\n", "t.net").items
    return network.body


def expr(text: str):
    (stmt,) = body(f"v = {text}")
    return stmt.value


def shape(e) -> object:
    """A compact view of an expression tree, for comparisons."""
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, (ast.Number, ast.String, ast.Bool)):
        return e.value
    if isinstance(e, ast.Sequence):
        return tuple(shape(i) for i in e.items)
    if isinstance(e, ast.Neg):
        return ("neg", shape(e.operand))
    if isinstance(e, ast.BinOp):
        return (e.op, shape(e.left), shape(e.right))
    return (e.func, *[(a.name, shape(a.value)) if a.name else shape(a.value) for a in e.args])


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", ("+", "a", ("*", "b", "c"))),
    ("a - b - c", ("-", ("-", "a", "b"), "c")),
    ("a * b / c @ d", ("@", ("/", ("*", "a", "b"), "c"), "d")),
    ("-a ** 2", ("neg", ("**", "a", 2))),
    ("a ** -2", ("**", "a", -2)),
    ("(a + b) * c", ("*", ("+", "a", "b"), "c")),
    ("-1", -1),
    ("1e-4", 1e-4),
    ("2.5", 2.5),
    ("7", 7),
    ('"bicubic"', "bicubic"),
    ("true", True),
    ("(1,)", (1,)),
    ("()", ()),
    ("[1, 2, 3,]", (1, 2, 3)),
    ("(-1, 7 * 7 * 8)", (-1, ("*", ("*", 7, 7), 8))),
])
def test_expressions_and_precedence(text, tree):
    assert shape(expr(text)) == tree


def test_calls_take_positional_then_keyword_arguments():
    assert shape(expr("conv2d(x, 32, kernel=5, padding=valid)")) == (
        "conv2d", "x", 32, ("kernel", 5), ("padding", "valid"))


def test_a_pipeline_passes_its_left_side_as_the_first_argument():
    tree = expr("x |> conv2d(32, kernel=5) |> relu |> maxpool(2)")
    assert shape(tree) == ("maxpool", ("relu", ("conv2d", "x", 32, ("kernel", 5))), 2)
    assert tree.piped


def test_a_pipeline_is_looser_than_arithmetic():
    assert shape(expr("a + b |> relu")) == ("relu", ("+", "a", "b"))


def test_pipelines_continue_on_lines_that_start_with_the_pipe():
    stmts = body("h = image\n    # a comment between stages\n    |> relu\n    |> flatten\nk = h")
    assert [type(s) for s in stmts] == [ast.Assign, ast.Assign]
    assert shape(stmts[0].value) == ("flatten", ("relu", "image"))


def test_newlines_inside_brackets_and_after_operators_do_not_end_a_statement():
    stmts = body("h = dense(x,\n  10,\n  activation=relu)\nk = h +\n  1")
    assert shape(stmts[0].value) == ("dense", "x", 10, ("activation", "relu"))
    assert shape(stmts[1].value) == ("+", "h", 1)


def test_semicolons_separate_statements():
    assert [s.name for s in body("a = 1; b = 2;c = 3")] == ["a", "b", "c"]


def test_declarations():
    stmts = body("input image: f32[N, 28, 28, 1]\ninput x: f32[]\ninput n: i64\n"
                 "param W: f32[3, 3] = glorot_uniform()\noutput p = relu(x)\noutput q\n"
                 "loss = mean(x)\nloss named = mean(x)\nmetric acc = x")
    image, x, n, param, p, q, loss, named, acc = stmts
    assert (image.type.dtype, [d for d, _ in image.type.dims]) == ("f32", ["N", 28, 28, 1])
    assert x.type.dims == () and n.type.dims == ()
    assert (param.name, shape(param.init)) == ("W", ("glorot_uniform",))
    assert (p.role, p.name, q.value) == ("output", "p", None)
    assert (loss.role, loss.name, named.name, acc.role) == ("loss", None, "named", "metric")


def test_blocks_and_train_sections():
    spec = parse("block res(x, c) {\n  a = x\n  return a + x\n}\n"
                 "network n {\n}\n"
                 "train n {\n  optimizer adam(lr=1e-4)\n  batch 64\n}\n", "t.net")
    block, _, train = spec.items
    assert (block.name, [p for p, _ in block.params], block.end_line) == ("res", ["x", "c"], 4)
    assert isinstance(block.body[-1], ast.Return)
    assert [(e.key, shape(e.value)) for e in train.entries] == [
        ("optimizer", ("adam", ("lr", 1e-4))), ("batch", 64)]


def test_spans_point_at_the_text():
    (stmt,) = body("  h = image |> conv2d(32, kernel=5)")
    call = stmt.value
    assert (call.span.line, call.span.col, call.span.end_col) == (2, 16, 36)
    assert (stmt.name_span.line, stmt.name_span.col) == (2, 3)
    piped = call.args[0].value
    assert (piped.span.col, piped.span.end_col) == (7, 12)


def test_comments_and_blank_lines_are_ignored():
    spec = parse("# header\n\nnetwork n {  # trailing\n\n  # inside\n  a = 1\n\n}\n# end\n",
                 "t.net")
    assert [s.name for s in spec.items[0].body] == ["a"]


def test_reserved_words_cannot_be_names():
    with pytest.raises(SpecSyntaxError) as info:
        body("input = 3")
    assert "unexpected '='" in info.value.message


DEEP = {  # construct -> an expression nested n levels deep
    "power": lambda n: "x ** " * n + "x",
    "sum": lambda n: " + ".join(["x"] * (n + 1)),
    "product": lambda n: " * ".join(["x"] * (n + 1)),
    "calls": lambda n: "relu(" * n + "x" + ")" * n,
    "pipeline": lambda n: "x" + " |> relu" * n,
    "negation": lambda n: "-" * n + "x",
    "lists": lambda n: "[" * n + "x" + "]" * n,
}


@pytest.mark.parametrize("n", [201, 489, 490, 491, 3000])
@pytest.mark.parametrize("construct", sorted(DEEP))
def test_deep_nesting_is_a_located_error_with_the_limit(construct, n):
    """7 constructs x 5 depths = 35 cases: never a RecursionError or VisitError."""
    from netlang.errors import SpecError
    from netlang.frontend import load_spec
    from netlang.frontend.parser import MAX_NESTING

    text = f"network n {{\n input x: f32[]\n output y = {DEEP[construct](n)}\n}}"
    with pytest.raises(SpecError) as info:
        load_spec(text, "t.net")
    head = str(info.value).splitlines()[0]
    assert head == (f"t.net:3:13: syntax error: an expression is nested too deeply to "
                    f"compile: {n} levels of operators, calls or brackets, at most "
                    f"{MAX_NESTING}")
    assert info.value.hint == "split it into several assignments, e.g. a = ...; b = a + ..."


@pytest.mark.parametrize("construct", ["sum", "product", "calls", "pipeline", "negation"])
def test_nesting_at_the_limit_compiles(construct):
    """5 cases: exactly MAX_NESTING levels lower to a graph."""
    from netlang.frontend import load_spec
    from netlang.frontend.parser import MAX_NESTING

    text = f"network n {{\n input x: f32[]\n output y = {DEEP[construct](MAX_NESTING)}\n}}"
    assert "y" in load_spec(text, "t.net").outputs


def test_the_deepest_statement_is_named_first_in_the_file():
    from netlang.errors import SpecError
    from netlang.frontend import load_spec

    text = ("network n {\n input x: f32[]\n a = relu(x)\n"
            f" b = {DEEP['sum'](250)}\n output y = {DEEP['sum'](300)}\n}}")
    with pytest.raises(SpecError) as info:
        load_spec(text, "t.net")
    assert str(info.value).startswith("t.net:4:6: syntax error: an expression is nested too "
                                      "deeply to compile: 250 levels")


def test_redundant_parentheses_are_free():
    assert shape(expr("(" * 500 + "x" + ")" * 500)) == "x"
