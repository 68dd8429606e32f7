"""Enum words (``padding=same``, ``activation=relu``, ``dtype=f64``) are their own namespace:
a value of the same name in the spec does not change what they mean (issue 14, item 15)."""
from __future__ import annotations

import pytest

from netlang.errors import SpecNameError
from netlang.frontend import load_spec

SPEC = """\
network n {
  input x: f32[N, 8, 8, 2]
  %s
  h = conv2d(x, 4, kernel=3, padding=same, activation=relu, init=zeros)
  p = maxpool(h, 2, padding=valid) |> flatten
  q = dense(p, 3, activation=tanh, bias_init=ones, name=fc)
  r = cast(q, dtype=f64) |> softmax(axis=-1)
  s = repeat(step, 2, r)
  output y = s
}
block step(v) {
  return v |> leaky_relu(alpha=0.2)
}
"""
# Every enum word the spec uses, each shadowed by a value of that name.
WORDS = ["same", "valid", "relu", "zeros", "tanh", "ones", "fc", "f64", "step"]



@pytest.mark.parametrize("word", WORDS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_value_named_like_an_enum_word_changes_nothing(word, where):
    """9 words x defined before or after the use = 18 cases: the same IR as without it."""
    plain = load_spec(SPEC % "", "t.net")
    if where == "before":
        text = SPEC % f"{word} = x"
    else:
        text = SPEC.replace("  output y = s\n", f"  output y = s\n  {word} = x\n") % ""
    graph = load_spec(text, "t.net")
    assert graph.nodes[graph.outputs["y"]].type == plain.nodes[plain.outputs["y"]].type
    assert _ops(graph) == _ops(plain)


def _ops(graph) -> list[tuple]:
    return [(n.op, tuple(sorted(n.attrs.items(), key=str)), str(n.type)) for n in graph]


def test_a_value_used_before_its_definition_is_still_reported():
    text = """\
network n {
  input x: f32[N, 4]
  y = step(h)
  h = relu(x)
  output z = y
}
block step(v) {
  return relu(v)
}
"""
    with pytest.raises(SpecNameError) as info:
        load_spec(text, "t.net")
    assert str(info.value) == """\
t.net:3:12: name error: 'h' is used before it is defined (line 4)
      y = step(h)
               ^
hint: move the definition above its first use"""
