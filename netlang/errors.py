"""The error tree every user-visible failure belongs to, and the caret formatter.

Spec errors render as ``file:line:col: message``, the source line, a caret under the
column and a ``hint:`` line.  Everything a user can trigger raises a subclass of
``NetlangError``; the CLI prints ``str(error)`` and never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceFile:
    """The text of one spec, kept so any later stage can quote the offending line."""

    path: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """Where a piece of IR came from: 1-based line and column in a source file."""

    source: SourceFile
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def short(self) -> str:
        """``mnist.net:6:7`` (file name without folders), as the IR printer shows it."""
        name = self.source.path.replace("\\", "/").rsplit("/", 1)[-1]
        return f"{name}:{self.line}:{self.col}"

    def caret(self) -> str:
        text = self.source.line(self.line).rstrip("\n")
        width = max(1, (self.end_col or self.col + 1) - self.col)
        width = min(width, max(1, len(text) - self.col + 1))
        return f"    {text}\n    {' ' * (self.col - 1)}{'^' * width}"

    def __hash__(self) -> int:  # spans ride along on IR nodes; hash without the text
        return hash((self.source.path, self.line, self.col, self.end_col))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Span) and (
            (self.source.path, self.line, self.col, self.end_col)
            == (other.source.path, other.line, other.col, other.end_col)
        )


class NetlangError(Exception):
    """Root of every error a user can trigger."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def with_span(self, span: Span | None) -> NetlangError:
        """Attach a location if the error has none yet (raised deep inside a shape rule)."""
        if self.span is None and span is not None:
            self.span = span
        return self

    def __str__(self) -> str:
        head = f"{self.span}: {self.kind}: {self.message}" if self.span else (
            f"{self.kind}: {self.message}")
        parts = [head]
        if self.span is not None:
            parts.append(self.span.caret())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class SpecError(NetlangError):
    """Anything wrong with a .net spec: syntax, names, arguments, shapes."""


class SpecSyntaxError(SpecError):
    kind = "syntax error"


class SpecNameError(SpecError):
    kind = "name error"


class ArgumentError(SpecError):
    kind = "argument error"


class ShapeError(SpecError):
    kind = "shape error"


class GradientError(SpecError):
    kind = "gradient error"


class IRError(NetlangError):
    """A pass produced an ill-formed graph (a compiler bug, not a spec error)."""

    kind = "IR check failed"


class ExecutionError(NetlangError):
    kind = "execution error"


class FeedError(ExecutionError):
    kind = "feed error"


class NonFiniteError(ExecutionError):
    kind = "non-finite value"


class DataError(NetlangError):
    kind = "data error"


class CheckpointError(NetlangError):
    kind = "checkpoint error"


class DeviceError(NetlangError):
    kind = "device error"


class UsageError(NetlangError):
    kind = "usage error"


class ExportError(NetlangError):
    """A network part that has no ONNX form (an assignment, a loss op), at its spec line."""

    kind = "export error"


class OutputError(NetlangError):
    """A file netlang writes could not be written (disk full, permissions)."""

    kind = "write error"


@dataclass
class SpecWarning:
    """A non-fatal finding (an unused input); printed like an error, never raised."""

    message: str
    span: Span | None = None
    hint: str | None = None

    def __str__(self) -> str:
        err = NetlangError(self.message, self.span, self.hint)
        err.kind = "warning"
        return str(err)


def did_you_mean(name: str, candidates) -> str | None:
    """``did you mean 'relu'?`` for the closest candidate, or None."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
