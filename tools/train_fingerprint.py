"""Fingerprints of a few training steps of every shipped spec, to show a change is bitwise neutral.

For each spec with a loss: compile its train step (network, gradients, the spec's optimizer),
run ``--steps`` steps on seeded random feeds at batch 8, and print the sha256 of every state
array afterwards (parameters, optimizer slots, batchnorm statistics).  Run it before and after
a refactor; equal lines mean bitwise-identical training.

    python3 tools/train_fingerprint.py [--steps 5] [--kernels default|builtin|numpy]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import netlang
from netlang.gradcheck import random_feeds
from netlang.train.config import train_config
from netlang.train.step import LR_INPUT, build_train_graph


def fingerprint(spec: Path, steps: int, batch: int = 8, kernels: str = "default") -> str | None:
    model = netlang.compile(spec)
    if model.graph.loss is None or model.train_config is None:
        return None
    config = train_config(model.train_config, model.graph.name)
    train = netlang.Model(build_train_graph(model, config.make_optimizer(None),
                                            config.weight_decay))
    session = train.session("cpu", config.seed, kernels)
    rng = np.random.default_rng(7)
    for _ in range(steps):
        feeds = {k: v.astype(np.float32) if v.dtype.kind == "f" else v
                 for k, v in random_feeds(model, batch, rng).items()}
        feeds[LR_INPUT] = np.float32(0.01)
        session.run(model.graph.loss, feeds, training=True, updates=True)
    digest = hashlib.sha256()
    for name, value in sorted(session.state.to_numpy().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--kernels", default="default", choices=("default", "builtin", "numpy"))
    args = parser.parse_args()
    for spec in sorted((ROOT / "specs").glob("*.net")):
        print(f"{spec.name:<18} "
              f"{fingerprint(spec, args.steps, kernels=args.kernels) or 'no loss/train section'}")


if __name__ == "__main__":
    main()
