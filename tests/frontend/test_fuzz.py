"""Hypothesis: garbage and broken specs only ever raise ``SpecError``; valid networks that
are generated at random always check clean, with the shapes computed independently here."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlang
from netlang.errors import SpecError
from netlang.frontend import load_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.net"))
TEXTS = [p.read_text() for p in SPECS]
TOKENS = ["network", "block", "train", "input", "param", "output", "loss", "metric", "return",
          "true", "false", "x", "h", "image", "label", "N", "f32", "i32", "dense", "conv2d",
          "maxpool", "batchnorm", "dropout", "flatten", "relu", "grad", "repeat", "share=",
          "name=", "kernel=", "padding=", "same", "valid", "axis=", "0", "1", "-1", "2.5",
          "1e-4", "99999999999", "0.0", '"s"', "(", ")", "[", "]", "{", "}", ",", ":", "=",
          "+", "-", "*", "/", "@", "**", "|>", "\n", ";", " ", "#", "(1, 2)"]

CHECK = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def only_spec_errors(text: str) -> None:
    try:
        load_spec(text, "fuzz.net")
    except SpecError as err:
        str(err)  # rendering the message must not fail either


@CHECK
@given(st.text(alphabet=st.sampled_from(list("abnetwork{}()[]<>|=:,.;#\n +-*/@_0123456789\"'")),
               max_size=200))
def test_random_text_only_raises_spec_errors(text):
    only_spec_errors(text)


@CHECK
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_random_token_soup_only_raises_spec_errors(tokens):
    only_spec_errors(" ".join(tokens))


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "swap_lines"]))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)):]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif kind == "replace":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at + draw(st.integers(1, 6)):]
        else:
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spec())
def test_mutated_specs_only_raise_spec_errors(text):
    only_spec_errors(text)


# -- random valid networks -----------------------------------------------------------------

@st.composite
def image_network(draw):
    """A random CNN and the shape each named step must have, computed without netlang."""
    size, channels = draw(st.integers(6, 16)), draw(st.integers(1, 3))
    lines, expected = [f"input x: f32[N, {size}, {size}, {channels}]", "input label: i32[N]"], {}
    current = "x"
    for i in range(draw(st.integers(1, 5))):
        step, size, channels = draw(image_layer(size, channels))
        lines.append(f"h{i} = " + step.format(x=current))
        expected[f"h{i}"] = f"f32[N,{size},{size},{channels}]"
        current = f"h{i}"
    units = draw(st.integers(2, 12))
    lines.append(f"logits = {current} |> flatten |> dense({units})")
    expected["logits"] = f"f32[N,{units}]"
    lines.append("output probs = softmax(logits) + 0 * logits")
    lines.append("loss = mean(softmax_cross_entropy(logits, label))")
    return "network random {\n" + "".join(f"  {line}\n" for line in lines) + "}\n", expected


@st.composite
def image_layer(draw, size: int, channels: int):
    """One step (a template on ``{x}``) that fits a ``size`` x ``size`` x ``channels`` image."""
    kind = draw(st.sampled_from(["conv", "pool", "norm", "act", "drop", "res"]))
    if kind == "conv":
        filters = draw(st.integers(1, 6))
        kernel = draw(st.integers(1, min(3, size)))
        stride = draw(st.integers(1, 2))
        padding = draw(st.sampled_from(["same", "valid"]))
        out = -(-size // stride) if padding == "same" else (size - kernel) // stride + 1
        conv = f"conv2d({filters}, kernel={kernel}, stride={stride}, padding={padding})"
        return "{x} |> " + conv, out, filters
    if kind == "pool" and size >= 2:
        op = draw(st.sampled_from(["maxpool", "avgpool"]))
        return f"{{x}} |> {op}(2, padding=same)", -(-size // 2), channels
    if kind == "norm":
        return "batchnorm({x}, momentum=0.9)", size, channels
    if kind == "drop":
        return f"{{x}} |> dropout({draw(st.sampled_from(['0.1', '0.5']))})", size, channels
    if kind == "res":
        return "relu({x}) * 2 - {x} / 2.0", size, channels
    return "{x} |> " + draw(st.sampled_from(["relu", "tanh", "sigmoid", "elu"])), size, channels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_network())
def test_random_valid_networks_check_clean(case):
    text, expected = case
    model = netlang.compile(text)          # what `netlang check` runs
    assert model.warnings == []
    graph = model.lowered
    got = {name: str(graph.type_of(graph.values[name])) for name in expected}
    assert got == expected
    assert all(node.span is not None for node in graph)
