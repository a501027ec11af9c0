"""Command-line values of the plain kinds (a string, a path) read without pydantic.

Recent typer releases turn every parameter's value into its annotated type through a
pydantic ``TypeAdapter``, built when the value is first read. For a string or a path
that costs more than a quick command's whole work: importing pydantic, its core and
schema machinery, and building one adapter per parameter (about a sixth of what
``evertrain versions`` cost). :func:`read_plain_values` gives the parameters of those two
kinds a reader that does what typer's adapters do for them: a string stays as given,
and a path goes through typer's own path checks (:func:`typer._param_types.coerce_cli_path`),
made a ``Path`` first as pydantic would. Any other value, or any parameter with more than
plain needs (a parser, a choice, a file, several values), keeps typer's reader, and so
does a flag (a boolean) given anything but its own value.

These are typer's internals: with a typer that lacks them (older releases convert through
click, without pydantic) or has changed them, parameters keep typer's readers, and the
loss shows up as pydantic in the quick commands' modules (``tests/faces/test_cli_imports.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover - a typer without pydantic coercion needs no help
    RuntimeParam = None  # type: ignore[assignment,misc]


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _PlainValue(RuntimeParam):
        """A string or a path from the command line, read as typer's adapter reads it.

        A flag's missing value (None) never reaches here: :meth:`RuntimeParam.coerce`
        answers it, and typer skips a flag's boolean value itself.
        """

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.annotation
            if kind is str and isinstance(value, str):
                return value
            if kind is not str and kind is not bool and isinstance(value, (str, kind)):
                path = value if isinstance(value, kind) else kind(value)
                return coerce_cli_path(path, self.parameter_info, path_type=kind, param=param, ctx=ctx)
            # Anything else (a flag given a word, a number from a default_map): typer's reader.
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)


def _is_plain(param: Any) -> bool:
    if not isinstance(param, _TyperParameter) or getattr(param, "_runtime_param", False) is not None:
        return False  # not typer's, or a reader is set already (or typer keeps none there)
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or param.multiple or param.nargs != 1:
        return False
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None:
        return False
    annotation = descriptor.annotation
    if annotation is str or annotation is bool:
        return True
    is_path = isinstance(annotation, type) and issubclass(annotation, Path)
    return is_path and info.path_type in (None, annotation)


def read_plain_values(command: Any, ctx: Any) -> None:
    """Give ``command``'s plain parameters (and its sub-commands') the pydantic-free reader.

    ``ctx`` is the context ``command`` runs in or under: its help option (a flag typer
    makes and keeps on first use, with the names the context gives) is one of them.
    """
    if RuntimeParam is None:  # pragma: no cover
        return
    for param in command.get_params(ctx):
        if _is_plain(param):
            param._runtime_param = _PlainValue(
                parameter_info=param.type_descriptor.parameter_info,
                annotation=param.type_descriptor.annotation,
            )
    for sub in (getattr(command, "commands", None) or {}).values():
        read_plain_values(sub, ctx)


__all__ = ["read_plain_values"]
