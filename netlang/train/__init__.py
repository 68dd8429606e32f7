"""Training: data sources, optimizers, the train-step graph, the loop, checkpoints, metrics.

    model = netlang.compile("specs/mnist.net")
    config = train_config(model.graph.spec.train)
    dataset = load_dataset(config.data.name, config.data.args)
    trainer = Trainer(model, config, dataset)
    fit(trainer, RunFolder("runs/mnist"))
"""
from netlang.train.config import TrainConfig, train_config
from netlang.train.data import load_dataset
from netlang.train.fit import fit
from netlang.train.loop import Trainer
from netlang.train.optimizers import OPTIMIZERS, make_optimizer
from netlang.train.runs import RunFolder
from netlang.train.schedules import SCHEDULES, make_schedule
from netlang.train.step import build_train_graph

__all__ = ["OPTIMIZERS", "SCHEDULES", "RunFolder", "TrainConfig", "Trainer",
           "build_train_graph", "fit", "load_dataset", "make_optimizer", "make_schedule",
           "train_config"]
