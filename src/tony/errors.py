"""Errors a user can cause. The CLI catches `TonyError` once and prints one line."""
from __future__ import annotations


class TonyError(Exception):
    """Base class: a problem with the user's input, explained in one line.

    `where` names the place (an ONNX node name and op type, a file, a flag);
    `hint` says what to do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:  # one line: "where: message (hint)"
        text = self.message
        if self.where:
            text = f"{self.where}: {text}"
        if self.hint:
            text = f"{text}; {self.hint}"
        return show(text)


def show(text) -> str:
    """`text` for a terminal line: newlines, escapes and other unprintable characters (which model
    names may hold) written as Python escapes, so one message stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class ModelError(TonyError):
    """The model file is not a valid ONNX model (unreadable, truncated, fails the checker)."""


class UnsupportedError(TonyError):
    """The model uses something Tony (or its hardware) does not support."""


class OverflowRisk(TonyError):
    """A layer's accumulator could exceed ACC_BITS for some input in range."""


class InputError(TonyError):
    """User-supplied data (inputs, calibration set, flags) has the wrong shape or values."""


def not_a_file(path, where: str) -> InputError:
    """The refusal of an input path that is not a readable file: missing, a folder (say, the
    folder of `tony example` given where its model.onnx was meant), or a device or pipe."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        return InputError("no such file", where=where)
    kind = "a folder" if p.is_dir() else "not a regular file"
    return InputError(f"is {kind}", where=where, hint="give the path of a file")


def node_where(node) -> str:
    """'node "name" (OpType)' for an onnx NodeProto."""
    name = node.name or (node.output[0] if node.output else "?")
    return f'node "{name}" ({node.op_type})'
