"""The front end: parse .net text (Lark) and lower it to the IR (layers are macros)."""


def load_spec(text: str, path: str):
    """Parse and lower a spec to a ``Graph``; raises ``SpecError`` with file:line:col."""
    raise NotImplementedError("the frontend is being written")
