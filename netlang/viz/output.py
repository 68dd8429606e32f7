"""Writing a picture: the format comes from the file extension; ``dot`` lays it out.

``.dot`` (or ``.gv``) writes the DOT source and needs nothing else.  The other formats run
Graphviz's ``dot`` program; when it is missing the DOT source is still written next to the
requested file, and the error says how to install Graphviz and finish by hand.
"""
from __future__ import annotations

from pathlib import Path

import graphviz

from netlang.errors import NetlangError

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; "
                "macOS: brew install graphviz)")


class RenderError(NetlangError):
    kind = "render error"


class GraphvizMissing(RenderError):
    """``dot`` is not installed; ``dot_path`` holds the DOT source that was written instead."""

    def __init__(self, message: str, dot_path: Path, hint: str):
        super().__init__(message, hint=hint)
        self.dot_path = dot_path


def format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        shown = path.suffix or "no extension"
        raise RenderError(f"cannot render to '{path}': unknown format ({shown})",
                          hint="name the output .svg, .png, .pdf or .dot")
    return fmt


def write_bytes(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as err:
        reason = err.strerror or str(err)
        raise RenderError(f"cannot write '{path}': {reason}",
                          hint="choose a folder that exists and that you can write to"
                          ) from None


def svg_text(source: str) -> str | None:
    """``source`` (DOT) laid out as SVG text, or None when Graphviz's ``dot`` is missing
    (a notebook then shows the object's text form)."""
    try:
        return graphviz.pipe("dot", "svg", source.encode("utf-8"), quiet=True).decode("utf-8")
    except graphviz.ExecutableNotFound:
        return None
    except graphviz.CalledProcessError as err:
        detail = (err.stderr or b"").decode("utf-8", "replace").strip()
        raise RenderError(f"Graphviz could not lay out the graph: {detail or err}") from None


def write_picture(source: str, path: str | Path) -> Path:
    """Write ``source`` (DOT) to ``path`` in the format its extension names."""
    path = Path(path)
    fmt = format_of(path)
    if fmt == "dot":
        write_bytes(path, source.encode("utf-8"))
        return path
    try:
        data = graphviz.pipe("dot", fmt, source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:
        dot_path = path.with_suffix(".dot")
        write_bytes(dot_path, source.encode("utf-8"))
        raise GraphvizMissing(
            f"Graphviz's 'dot' program was not found, so '{path}' was not made; "
            f"the graph was written to '{dot_path}' instead", dot_path,
            hint=f"{INSTALL_HINT}, then run: dot -T{fmt} {dot_path} -o {path}") from None
    except graphviz.CalledProcessError as err:
        detail = (err.stderr or b"").decode("utf-8", "replace").strip()
        raise RenderError(f"Graphviz could not render '{path}': {detail or err}") from None
    write_bytes(path, data)
    return path
