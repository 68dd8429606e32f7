"""A spec's train section as the trainer reads it, with command-line overrides."""
from __future__ import annotations

import pytest

import netlang
from netlang.errors import UsageError
from netlang.train.config import Call, train_config

SPEC = """\
network n {
  input x: f32[N, 2]
  input label: i32[N]
  logits = dense(x, 4)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
train n {
  data spiral(points=10)
  optimizer momentum(lr=0.1, nesterov=true)
  batch 8
  epochs 3
  seed 5
  schedule step(every=2, factor=0.5)
  validation 4
  weight_decay 1e-4
}
"""


def test_the_front_ends_train_section_becomes_a_config():
    graph = netlang.compile(SPEC).graph
    config = train_config(graph.spec.train, graph.name)
    assert config.data == Call("spiral", {"points": 10, "validation": 4}, config.data.span)
    assert (config.batch, config.epochs, config.seed, config.weight_decay) == (8, 3, 5, 1e-4)
    assert config.make_optimizer().describe() == "momentum(lr=0.1, momentum=0.9, nesterov=True)"
    assert config.make_schedule().describe() == "step(every=2.0, factor=0.5)"
    assert str(config.data.span).endswith(":8:8")
    faster = config.with_overrides(epochs=1, batch=None, seed=9)
    assert (faster.epochs, faster.batch, faster.seed) == (1, 8, 9)
    assert config.make_optimizer(lr=0.5).lr == 0.5


def test_defaults_and_bad_overrides():
    config = train_config({"data": {"name": "mnist", "args": {}}}, "n")
    assert (config.optimizer.name, config.batch, config.epochs, config.seed) == ("adam", 64, 1, 0)
    with pytest.raises(UsageError, match="--batch must be at least 1, got 0"):
        config.with_overrides(batch=0)
    with pytest.raises(UsageError, match="network 'n' has no train section"):
        train_config(None, "n")
