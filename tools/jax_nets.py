"""Each seed workload written with JAX, its whole training step one ``jax.jit`` function.

JAX's jit hands XLA the whole step (forward, gradients, optimizer) as one graph, as netlang
sees it: the closest rival a graph compiler has on the CPU.  The networks match the specs and
tools/torch_nets.py layer for layer (NHWC images, HWIO filters as netlang's, batchnorm epsilon
1e-3 and moving averages with momentum 0.99, dropout 0.5), the optimizers TensorFlow 1.x's
formulas as netlang's (train/optimizers.py).  netlang's package never imports this module.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import netlang
from netlang.cli import bench

BN_EPS, BN_DECAY = 1e-3, 0.99


# -- layers: (init(key, shape_in) -> params, shape_out; apply(params, state, x, train, key)) --

def _glorot(key, shape, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


class Net:
    """A list of layers; params and batchnorm state are dicts keyed by layer index."""

    def __init__(self):
        self.layers: list = []

    def add(self, kind: str, **kw) -> Net:
        self.layers.append((kind, kw))
        return self


def conv_params(key, kh, kw, cin, cout):
    return {"w": _glorot(key, (kh, kw, cin, cout), kh * kw * cin, kh * kw * cout),
            "b": jnp.zeros((cout,), jnp.float32)}


def conv(p, x, padding):
    y = lax.conv_general_dilated(x, p["w"], (1, 1), padding,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def maxpool(x, k, padding="VALID"):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, k, k, 1), padding)


def dense_params(key, cin, cout):
    return {"w": _glorot(key, (cin, cout), cin, cout), "b": jnp.zeros((cout,), jnp.float32)}


def batchnorm_params(c):
    return {"gamma": jnp.ones((c,), jnp.float32), "beta": jnp.zeros((c,), jnp.float32)}


def batchnorm(p, s, x, train):
    """Batch statistics in training (and the moving averages' update), moving ones at eval."""
    if train:
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        s = {"mean": s["mean"] * BN_DECAY + mean * (1 - BN_DECAY),
             "var": s["var"] * BN_DECAY + var * (1 - BN_DECAY)}
    else:
        mean, var = s["mean"], s["var"]
    y = (x - mean) * lax.rsqrt(var + BN_EPS) * p["gamma"] + p["beta"]
    return y, s


def bn_state(c):
    return {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}


# -- the four networks: init(key) -> (params, state); apply(params, state, x, train, key) ------

def mnist():
    def init(key):
        k = jax.random.split(key, 4)
        return {"c1": conv_params(k[0], 5, 5, 1, 32), "c2": conv_params(k[1], 5, 5, 32, 64),
                "d1": dense_params(k[2], 4 * 4 * 64, 1024),
                "d2": dense_params(k[3], 1024, 10)}, {}

    def apply(p, s, x, train, key):
        h = maxpool(jax.nn.relu(conv(p["c1"], x, "VALID")), 2)
        h = maxpool(jax.nn.relu(conv(p["c2"], h, "VALID")), 2)
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["d1"]["w"] + p["d1"]["b"])
        if train:
            keep = jax.random.bernoulli(key, 0.5, h.shape)
            h = jnp.where(keep, h / 0.5, 0.0)
        return h @ p["d2"]["w"] + p["d2"]["b"], s
    return init, apply


def mnist_small():
    def init(key):
        k = jax.random.split(key, 3)
        return {"c1": conv_params(k[0], 3, 3, 1, 4), "c2": conv_params(k[1], 3, 3, 4, 8),
                "d": dense_params(k[2], 7 * 7 * 8, 10)}, {}

    def apply(p, s, x, train, key):
        h = maxpool(jax.nn.relu(conv(p["c1"], x, "SAME")), 2, "SAME")
        h = maxpool(jax.nn.relu(conv(p["c2"], h, "SAME")), 2, "SAME")
        return h.reshape(h.shape[0], -1) @ p["d"]["w"] + p["d"]["b"], s
    return init, apply


def spiral():
    def init(key):
        k = jax.random.split(key, 3)
        return {"d1": dense_params(k[0], 2, 64), "d2": dense_params(k[1], 64, 64),
                "d3": dense_params(k[2], 64, 4)}, {}

    def apply(p, s, x, train, key):
        h = jax.nn.relu(x @ p["d1"]["w"] + p["d1"]["b"])
        h = jax.nn.relu(h @ p["d2"]["w"] + p["d2"]["b"])
        return h @ p["d3"]["w"] + p["d3"]["b"], s
    return init, apply


def residual():
    blocks = (("r1", 16), ("r2", 16), ("r3", 32))

    def init(key):
        k = iter(jax.random.split(key, 16))
        p = {"c0": conv_params(next(k), 3, 3, 1, 16), "c1x1": conv_params(next(k), 1, 1, 16, 32),
             "bn": batchnorm_params(32), "d": dense_params(next(k), 32, 10)}
        s = {"bn": bn_state(32)}
        for name, c in blocks:
            p[name] = {"bn1": batchnorm_params(c), "bn2": batchnorm_params(c),
                       "c1": conv_params(next(k), 3, 3, c, c),
                       "c2": conv_params(next(k), 3, 3, c, c)}
            s[name] = {"bn1": bn_state(c), "bn2": bn_state(c)}
        return p, s

    def block(p, s, x, train):
        a, s1 = batchnorm(p["bn1"], s["bn1"], x, train)
        a = conv(p["c1"], jax.nn.relu(a), "SAME")
        r, s2 = batchnorm(p["bn2"], s["bn2"], a, train)
        r = conv(p["c2"], jax.nn.relu(r), "SAME")
        return r + x, {"bn1": s1, "bn2": s2}

    def apply(p, s, x, train, key):
        s = dict(s)
        h = conv(p["c0"], x, "SAME")
        h, s["r1"] = block(p["r1"], s["r1"], h, train)
        h, s["r2"] = block(p["r2"], s["r2"], h, train)
        h = conv(p["c1x1"], maxpool(h, 2), "VALID")
        h, s["r3"] = block(p["r3"], s["r3"], h, train)
        h, s["bn"] = batchnorm(p["bn"], s["bn"], h, train)
        h = jnp.mean(jax.nn.relu(h), axis=(1, 2))
        return h @ p["d"]["w"] + p["d"]["b"], s
    return init, apply


NETS = {"mnist": mnist, "mnist_small": mnist_small, "spiral": spiral, "residual": residual}


# -- optimizers: TensorFlow 1.x's formulas, as train/optimizers.py --------------------------

def optimizer_fns(optimizer):
    """(init(params) -> slots, update(params, grads, slots) -> (params, slots))."""
    name, lr, h = optimizer.name, optimizer.lr, dict(optimizer.hyper)
    tree = jax.tree_util.tree_map
    if name == "adam":
        b1, b2, eps = h.get("beta1", 0.9), h.get("beta2", 0.999), h.get("epsilon", 1e-8)

        def init(p):
            zeros = tree(jnp.zeros_like, p)
            return {"m": zeros, "v": zeros, "b1p": jnp.float32(b1), "b2p": jnp.float32(b2)}

        def update(p, g, s):
            m = tree(lambda m, g: m + (g - m) * (1 - b1), s["m"], g)
            v = tree(lambda v, g: v + (g * g - v) * (1 - b2), s["v"], g)
            lr_t = lr * jnp.sqrt(1 - s["b2p"]) / (1 - s["b1p"])
            p = tree(lambda p, m, v: p - lr_t * m / (jnp.sqrt(v) + eps), p, m, v)
            return p, {"m": m, "v": v, "b1p": s["b1p"] * b1, "b2p": s["b2p"] * b2}
        return init, update

    def init(p):
        return {}

    def update(p, g, s):
        return tree(lambda p, g: p - lr * g, p, g), s
    return init, update


def jax_step(name: str, spec: Path, batch: int, seed: int = 0, train: bool = True):
    """(step function, parameter count): the workload's jitted training step (or forward
    pass, ``train=False``) on netlang's synthetic batch for that spec."""
    model = netlang.compile(spec)
    optimizer = bench.train_config_of(model).make_optimizer()
    init, apply = NETS[name]()
    params, state = init(jax.random.PRNGKey(seed))
    opt_init, opt_update = optimizer_fns(optimizer)
    slots = opt_init(params)
    feeds = bench.synthetic_batch(model.graph, batch, seed)
    x_name, y_name = [n for n in model.graph.inputs if not n.startswith("train/")][:2]
    x, y = jnp.asarray(feeds[x_name]), jnp.asarray(feeds[y_name].astype(np.int32))
    count = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))

    def loss_fn(p, s, x, y, key):
        logits, s = apply(p, s, x, True, key)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), s

    @jax.jit
    def train_step(p, s, slots, x, y, key):
        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y, key)
        p, slots = opt_update(p, grads, slots)
        return p, s, slots, loss

    @jax.jit
    def forward(p, s, x):
        return apply(p, s, x, False, None)[0]

    carry = {"p": params, "s": state, "slots": slots, "key": jax.random.PRNGKey(seed + 1)}
    host_x, host_y = feeds[x_name], feeds[y_name].astype(np.int32)

    def step():
        carry["key"], key = jax.random.split(carry["key"])
        xb, yb = jnp.asarray(host_x), jnp.asarray(host_y)     # the batch crosses every step
        carry["p"], carry["s"], carry["slots"], loss = train_step(
            carry["p"], carry["s"], carry["slots"], xb, yb, key)
        return float(loss)

    def infer():
        return np.asarray(forward(carry["p"], carry["s"], jnp.asarray(host_x)))

    del x, y
    return (step if train else infer), count
