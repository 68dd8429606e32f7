"""Optimizers as IR: each one emits, per parameter, the expressions of its new value.

An optimizer's slots (momentum accumulators, Adam's moments) are ``state`` nodes updated
with ``b.update``; the parameter's new value goes into ``graph.updates``, so one run of the
train step does forward, backward and update.  The formulas and defaults are TensorFlow
1.x's (``tf.train.*Optimizer``), which the seeds use: Adam's bias correction folded into the
step size, RMSProp's mean square starting at one, AdaGrad's accumulator at 0.1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from netlang.errors import ArgumentError, Span, did_you_mean
from netlang.ir.types import TensorType
from netlang.ops.builder import Builder


@dataclass
class Optimizer:
    """Hyper-parameters plus the IR each step needs; subclasses write ``step``."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    lr: float = 0.01
    hyper: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str):
        hyper = self.__dict__.get("hyper", {})
        if key in hyper:
            return hyper[key]
        raise AttributeError(key)

    def prepare(self, b: Builder, lr: int) -> int:
        """Emit what all parameters share; returns the step size ``step`` gets (Adam's is
        bias-corrected)."""
        return lr

    def step(self, b: Builder, name: str, param: int, grad: int, lr: int) -> int:
        """The new value of ``param`` given its gradient and the step's learning rate."""
        raise NotImplementedError

    # helpers for subclasses -------------------------------------------------------------
    def const(self, b: Builder, value: float, like: int) -> int:
        return b.const(value, b.type_of(like).dtype)

    def slot(self, b: Builder, name: str, param: int, slot: str, init=("zeros",)) -> int:
        return b.state(f"{name}/{slot}", b.type_of(param), init=init)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in {"lr": self.lr, **self.hyper}.items())
        return f"{self.name}({args})"


class SGD(Optimizer):
    """``p -= lr * g``."""

    name = "sgd"

    def step(self, b, name, param, grad, lr):
        return b.sub(param, b.mul(lr, grad))


class Momentum(Optimizer):
    """``a = momentum*a + g; p -= lr*a`` (Nesterov: ``p -= lr*(g + momentum*a)``)."""

    name = "momentum"
    defaults: ClassVar[dict[str, Any]] = {"momentum": 0.9, "nesterov": False}

    def step(self, b, name, param, grad, lr):
        acc = self.slot(b, name, param, "momentum")
        mu = self.const(b, self.momentum, param)
        new_acc = b.add(b.mul(mu, acc), grad)
        b.update(acc, new_acc)
        direction = b.add(grad, b.mul(mu, new_acc)) if self.nesterov else new_acc
        return b.sub(param, b.mul(lr, direction))


class RMSProp(Optimizer):
    """``ms += (g^2 - ms)(1-decay); mom = momentum*mom + lr*g/sqrt(ms+eps); p -= mom``."""

    name = "rmsprop"
    defaults: ClassVar[dict[str, Any]] = {"decay": 0.9, "momentum": 0.0, "epsilon": 1e-10}

    def step(self, b, name, param, grad, lr):
        ms = self.slot(b, name, param, "rms", init=("ones",))
        rate = self.const(b, 1.0 - self.decay, param)
        new_ms = b.add(ms, b.mul(b.sub(b.square(grad), ms), rate))
        b.update(ms, new_ms)
        eps = self.const(b, self.epsilon, param)
        delta = b.div(b.mul(lr, grad), b.sqrt(b.add(new_ms, eps)))
        if self.momentum:
            mom = self.slot(b, name, param, "momentum")
            delta = b.add(b.mul(self.const(b, self.momentum, param), mom), delta)
            b.update(mom, delta)
        return b.sub(param, delta)


class Adam(Optimizer):
    """``m += (g-m)(1-b1); v += (g^2-v)(1-b2); p -= lr_t*m/(sqrt(v)+eps)`` with
    ``lr_t = lr*sqrt(1-b2^t)/(1-b1^t)``; ``b1^t``, ``b2^t`` are state, as in TF."""

    name = "adam"
    defaults: ClassVar[dict[str, Any]] = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}

    def prepare(self, b, lr):
        scalar = TensorType(b.type_of(lr).dtype, ())
        b1p = b.state("beta1_power", scalar, init=("constant", self.beta1))
        b2p = b.state("beta2_power", scalar, init=("constant", self.beta2))
        one = b.const(1.0, scalar.dtype)
        b.update(b1p, b.mul(b1p, b.const(self.beta1, scalar.dtype)))
        b.update(b2p, b.mul(b2p, b.const(self.beta2, scalar.dtype)))
        return b.div(b.mul(lr, b.sqrt(b.sub(one, b2p))), b.sub(one, b1p))

    def step(self, b, name, param, grad, lr):
        m = self.slot(b, name, param, "m")
        v = self.slot(b, name, param, "v")
        new_m = b.add(m, b.mul(b.sub(grad, m), self.const(b, 1.0 - self.beta1, param)))
        new_v = b.add(v, b.mul(b.sub(b.square(grad), v), self.const(b, 1.0 - self.beta2, param)))
        b.update(m, new_m)
        b.update(v, new_v)
        denom = b.add(b.sqrt(new_v), self.const(b, self.epsilon, param))
        return b.sub(param, b.mul(lr, b.div(new_m, denom)))


class AdaGrad(Optimizer):
    """``acc += g^2; p -= lr*g/sqrt(acc)``."""

    name = "adagrad"
    defaults: ClassVar[dict[str, Any]] = {"initial_accumulator": 0.1}

    def step(self, b, name, param, grad, lr):
        acc = self.slot(b, name, param, "accumulator",
                        init=("constant", self.initial_accumulator))
        new_acc = b.add(acc, b.square(grad))
        b.update(acc, new_acc)
        return b.sub(param, b.div(b.mul(lr, grad), b.sqrt(new_acc)))


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, RMSProp, Adam, AdaGrad)}
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "rmsprop": 0.001, "adam": 0.001, "adagrad": 0.01}


def make_optimizer(name: str, args: dict | None = None, span: Span | None = None) -> Optimizer:
    """``optimizer adam(lr=1e-4)`` as an ``Optimizer``; unknown names and arguments are
    spec errors."""
    if name not in OPTIMIZERS:
        hint = did_you_mean(name, OPTIMIZERS) or f"known optimizers: {', '.join(OPTIMIZERS)}"
        raise ArgumentError(f"unknown optimizer '{name}'", span, hint)
    cls, args = OPTIMIZERS[name], dict(args or {})
    lr = args.pop("lr", args.pop("learning_rate", DEFAULT_LR[name]))
    for key in args:
        if key not in cls.defaults:
            known = ", ".join(["lr", *cls.defaults])
            raise ArgumentError(f"optimizer {name} has no argument '{key}'", span,
                                did_you_mean(key, ["lr", *cls.defaults]) or
                                f"{name} takes: {known}")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ArgumentError(f"optimizer {name}: lr must be a positive number, got {lr}", span)
    return cls(float(lr), {**cls.defaults, **args})
