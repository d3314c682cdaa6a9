"""Flags shared by generate, batch and serve: every GenerationSpec field, and the engine's options."""

from __future__ import annotations

import functools
import signal
import threading

import click


def _field_options(model, names=None) -> list[tuple]:
    """(flag, field name, click.option keywords, short flag) for the fields of a pydantic model that carry a CLI flag:
    the name, type, choices, help and bounds all come from the field itself."""
    import typing

    from ..models.registry import DEFAULT_MODEL, ModelDefaults, get_entry
    from ..spec import cli_flag

    defaults = get_entry(DEFAULT_MODEL).defaults
    out = []
    for name, f in model.model_fields.items():
        if names is not None and name not in names:
            continue
        extra = f.json_schema_extra or {}
        ann = f.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) is typing.Union else [ann]
        base = args[0] if args else ann
        if extra.get("x-text"):  # parsed by the field's own validator, e.g. sizes like 8GB
            typ, kind = str, str
        elif typing.get_origin(base) is typing.Literal:
            typ, kind = click.Choice([str(c) for c in typing.get_args(base)]), None
        else:
            typ, kind = base, base
        bounds = [f"{op} {getattr(m, attr)}" for m in f.metadata for attr, op in
                  (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if getattr(m, attr, None) is not None]
        help_ = f.description or ""
        if bounds and kind in (int, float):
            help_ += f" ({', '.join(bounds)})"
        if name in ModelDefaults.__dataclass_fields__:
            help_ += f" [default: the model's; {DEFAULT_MODEL}: {getattr(defaults, name)}]"
        elif f.default is not None and kind is not bool:
            help_ += f" [default: {f.default}]"
        kw: dict = {"help": help_, "default": None}
        if kind is bool:
            # a flag of a field that defaults to None (one some families take) is None when not given
            kw = {"help": help_, "is_flag": True, "default": None if f.default is None else False}
        else:
            kw["type"] = typ
        if "x-flag-value" in extra:  # e.g. `--loop` alone means `--loop blend`
            kw.update(is_flag=False, flag_value=extra["x-flag-value"])
        if "x-metavar" in extra:
            kw["metavar"] = extra["x-metavar"]
        flag = cli_flag(model, name)
        out.append((flag, name, kw, extra.get("x-short")))
    return out


def _add_options(f, fields):
    for flag, name, kw, short in reversed(fields):
        decls = [flag, short, name] if short else [flag, name]
        f = click.option(*decls, **kw)(f)
    return f


def spec_options(f=None, *, fields=None):
    """Add every GenerationSpec field (or those named in `fields`) as a flag; they arrive in kwargs under their
    spec names (None: not given). `@spec_options` or `@spec_options(fields=...)`."""
    from ..spec import GenerationSpec

    if f is None:
        return functools.partial(spec_options, fields=fields)
    return _add_options(f, _field_options(GenerationSpec, fields))


def pop_spec_fields(kwargs: dict) -> dict:
    """Remove the spec flags from kwargs; return those the user actually gave."""
    from ..spec import SPEC_FIELDS

    given = {name: kwargs.pop(name, None) for name in SPEC_FIELDS}
    return {k: v for k, v in given.items() if v is not None}


def engine_flags() -> tuple[str, ...]:
    """The EngineConfig settings that are flags: those whose field names an `x-flag`."""
    from ..engine.config import EngineConfig

    return tuple(n for n, f in EngineConfig.model_fields.items() if "x-flag" in (f.json_schema_extra or {}))


def engine_options(f=None, *, fields=None):
    """Add every EngineConfig setting that has a flag (--model, --device, --offload, ...), or those of them named in
    `fields`. `@engine_options` or `@engine_options(fields=...)`."""
    from ..engine.config import EngineConfig

    if f is None:
        return functools.partial(engine_options, fields=fields)
    return _add_options(f, _field_options(EngineConfig, [n for n in engine_flags() if fields is None or n in fields]))


def engine_config_from(kwargs: dict, **overrides):
    """Pop the engine flags from a command's kwargs -> one EngineConfig (flags not given keep their defaults)."""
    from ..engine.config import EngineConfig

    given = {name: kwargs.pop(name, None) for name in engine_flags()}
    given = {k: v for k, v in given.items() if v not in (None, False)}
    return EngineConfig.build(**{**given, **overrides})


class CancelOnSigint:
    """First Ctrl-C asks the engine to stop between steps; a second one interrupts at once."""

    def __init__(self):
        self.event = threading.Event()
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False

    def __call__(self) -> bool:
        return self.event.is_set()


def rich_progress(enabled: bool = True):
    """A rich progress bar for one generation; returns (context manager, on_progress callback)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.fields[stage]:<11}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task("generate", total=1.0, stage="loading", detail="")

    def on_progress(p):
        progress.update(task, completed=p.fraction, stage=p.stage, detail=p.message)

    return progress, on_progress, functools.partial(progress.update, task)
