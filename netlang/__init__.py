"""netlang: a declarative graph compiler for neural networks.

    model = netlang.compile("specs/mnist.net")
    print(model.ir())
    session = model.session(device="cpu", seed=0)
"""
from netlang.errors import NetlangError
from netlang.model import Model, Session, compile

__all__ = ["Model", "NetlangError", "Session", "compile"]
__version__ = "0.1.0"
