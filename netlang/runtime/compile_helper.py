"""The helper process that compiles kernels beside a program's binding (``runtime/jit.py``:
``compile_batch``).  Started as ``python -m netlang.runtime.compile_helper`` with pipes for
its standard input and output: requests come in, replies go out, as pickles (``jit.serve``);
it ends when its input does.  Anything printed goes to standard error."""
import sys

from netlang.runtime import jit

if __name__ == "__main__":
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr
    jit.serve(requests, replies)
