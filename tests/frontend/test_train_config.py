"""The train section: validated into the plain dict the trainer reads."""
from __future__ import annotations

import pytest

from netlang.errors import SpecError
from netlang.frontend import load_spec
from netlang.frontend.train_config import CHOICES, KEYS

NETWORK = "network n {\n  input x: f32[N, 2]\n  output y = relu(x)\n}\n"


def train(*lines: str) -> dict:
    text = NETWORK + "train n {\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
    config = load_spec(text, "t.net").spec.train
    return {k: v for k, v in config.items() if k != "spans"}, config["spans"]


def plain(choice: dict) -> tuple:
    return choice["name"], choice["args"]


def test_only_given_settings_are_stored():
    config, spans = train("batch 32", "epochs 3")
    assert config == {"batch": 32, "epochs": 3}
    assert (spans["batch"].line, spans["epochs"].line) == (6, 7)


def test_choices_keep_the_arguments_as_given_with_their_spans():
    config, spans = train("data spiral(points=50, noise=0.1)", "optimizer momentum(0.05)",
                          "schedule step(every=2, factor=0.5)")
    assert plain(config["data"]) == ("spiral", {"points": 50, "noise": 0.1})
    assert plain(config["optimizer"]) == ("momentum", {"lr": 0.05})
    assert plain(config["schedule"]) == ("step", {"every": 2.0, "factor": 0.5})
    assert spans["optimizer.lr"].col == 22 and config["optimizer"]["span"].col == 13


def test_a_bare_name_is_a_choice_without_arguments():
    config, _ = train("schedule cosine", "optimizer sgd")
    assert plain(config["schedule"]) == ("cosine", {})
    assert plain(config["optimizer"]) == ("sgd", {})


def test_validation_is_a_count_or_a_fraction():
    assert train("validation 0.1")[0] == {"validation": 0.1}
    assert train("data mnist(validation=5000)")[0]["data"]["args"] == {"validation": 5000}


def test_npz_takes_a_path():
    config, _ = train('data npz("arrays.npz", normalize=standardize)')
    assert plain(config["data"]) == ("npz", {"path": "arrays.npz", "normalize": "standardize"})


@pytest.mark.parametrize("line, message", [
    ("optimizer adam(lr=0)", "adam: 'lr' must be a number > 0, got the integer 0"),
    ("seed -1", "seed must be an integer >= 0, got the integer -1"),
    ("data mnist(normalize=unit)",
     "mnist: 'normalize' must be scale, standardize or none, got the name 'unit'"),
    ("schedule cosine(mni=0.1)", "cosine has no argument 'mni'"),
    ("data cifar10", "unknown data set 'cifar10'"),
    ("epochs 2.5", "epochs must be a positive integer, got the number 2.5"),
    ("weight_decay 1e-4 * 2 + x", "a train setting is a constant: numbers, strings, names"),
])
def test_bad_values(line, message):
    with pytest.raises(SpecError) as info:
        train(line)
    assert info.value.message == message


def test_every_key_is_known_to_the_trainer():
    from netlang.train.config import KEYS as TRAINER_KEYS

    assert set(KEYS) <= set(TRAINER_KEYS)


def test_the_trainer_reads_the_config():
    """The dict this module writes is what netlang.train.config reads."""
    from netlang.train.config import train_config

    text = NETWORK + ("train n {\n  data spiral(points=50)\n  optimizer adam(1e-2)\n"
                      "  batch 16\n  epochs 3\n  schedule cosine(min=0.1)\n}\n")
    config = train_config(load_spec(text, "t.net").spec.train, "n")
    assert (config.data.name, config.data.args) == ("spiral", {"points": 50})
    assert (config.optimizer.name, config.optimizer.args) == ("adam", {"lr": 0.01})
    assert (config.batch, config.epochs, config.schedule.name) == (16, 3, "cosine")


def test_choices_match_the_trainers_names():
    from netlang.train.data.datasets import DATASETS
    from netlang.train.optimizers import OPTIMIZERS
    from netlang.train.schedules import SCHEDULES

    assert set(CHOICES["data"]) == set(DATASETS)
    assert set(CHOICES["optimizer"]) == set(OPTIMIZERS)
    assert set(CHOICES["schedule"]) == set(SCHEDULES)
    for name, params in CHOICES["schedule"].items():
        assert {p.name for p in params} == set(SCHEDULES[name]), name
    for name, params in CHOICES["optimizer"].items():
        assert {p.name for p in params} == {"lr", *OPTIMIZERS[name].defaults}, name
