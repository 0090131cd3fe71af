"""Tab handlers built from field names, not written out: a new common field reaches every tab's API by itself.

Gradio reads an event function's signature: the parameter names become the API's keywords (in order, one per input
component), a default of None makes a picture optional for API clients, a ``gr.Request`` annotation and a
``gr.Progress`` default ask for the request and a progress tracker (``gradio.helpers.special_args``), and the
docstring is the endpoint's description. ``tab_handler`` builds such a function around a body that takes the
values as one dict: its ``__signature__`` lists the tab's common fields (``backend.schema.catalog.common_fields``,
in their order) and then the tab's own fields, annotated with the request class's field types.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import gradio as gr

from backend.schema.fields import field_default
from backend.schema.requests import GenerationRequest

Values = dict[str, Any]
Body = Callable[[Values, gr.Request, gr.Progress], Iterator[Any]]
PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD
SPECIAL = ("request", "progress")  # filled in by Gradio, not inputs


def build_request(cls: type[GenerationRequest], values: Values, **overrides: Any) -> GenerationRequest:
    """A tab handler's values → the request: every field the request class has."""
    names = {f.name for f in dataclasses.fields(cls)}
    chosen = {name: value for name, value in values.items() if name in names}
    chosen.update(overrides)
    chosen["styles"] = tuple(chosen.get("styles") or ())
    return cls(**chosen)


def field_parameters(
    classes: type | Sequence[type],
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> list[inspect.Parameter]:
    """``required`` then ``optional`` as parameters. An optional one takes its default from ``defaults``, else from
    the first of ``classes`` that has the field. The annotation is that class's field type, else the default's type
    (e.g. a second ControlNet unit's ``conditioning_scale_2``), else ``Any``."""
    classes = (classes,) if isinstance(classes, type) else tuple(classes)
    hints: dict[str, Any] = {}
    for cls in reversed(classes):
        hints |= typing.get_type_hints(cls)
    defaults = defaults or {}
    found = []
    for name in (*required, *optional):
        default = inspect.Parameter.empty
        if name in optional:
            default = defaults[name] if name in defaults else _default(classes, name)
        annotation = hints.get(name) or (
            Any if default is inspect.Parameter.empty or default is None else type(default)
        )
        found.append(inspect.Parameter(name, PLAIN, default=default, annotation=annotation))
    return found


def _default(classes: Sequence[type], name: str) -> Any:
    for cls in classes:
        if name in {item.name for item in dataclasses.fields(cls)}:
            return field_default(cls, name)
    raise KeyError(f"no field {name!r} in {[cls.__name__ for cls in classes]}: give its default")


def with_signature(body: Callable[..., Any], parameters: Sequence[inspect.Parameter], call: Callable[..., Any]) -> Any:
    """``call`` (a function of ``*args, **kwargs``) presented to Gradio as ``body``: its name and docstring, and a
    signature of ``parameters``."""
    signature = inspect.Signature(list(parameters))
    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = body.__name__
    call.__doc__ = body.__doc__
    call.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty}
    return call


def tab_handler(
    body: Body,
    classes: type | Sequence[type],
    common: Sequence[str],
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> Callable[..., Iterator[Any]]:
    """A generating tab's event function: parameters ``common`` (the tab's common fields), then ``required`` and
    ``optional`` (``field_parameters``: types and defaults from ``classes``), then Gradio's request and progress.
    It calls ``body(values, request, progress)`` with the values by name and streams what the body yields; its name
    and docstring are the body's."""
    parameters = [
        *field_parameters(classes, (*common, *required), optional, defaults),
        inspect.Parameter("request", PLAIN, default=None, annotation=gr.Request),
        inspect.Parameter("progress", PLAIN, default=gr.Progress(), annotation=gr.Progress),
    ]
    signature = inspect.Signature(parameters)

    def handler(*args: Any, **kwargs: Any) -> Iterator[Any]:
        values = _bind(signature, args, kwargs)
        request, progress = (values.pop(name) for name in SPECIAL)
        yield from body(values, request, progress)

    return with_signature(body, parameters, handler)


def field_function(body: Callable[[Values], Any], classes: type | Sequence[type], required: Sequence[str]) -> Any:
    """A plain event function of ``required`` fields (``field_parameters``) that calls ``body(values)``."""
    parameters = field_parameters(classes, required)
    signature = inspect.Signature(parameters)

    def function(*args: Any, **kwargs: Any) -> Any:
        return body(_bind(signature, args, kwargs))

    return with_signature(body, parameters, function)


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Values:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def input_names(handler: Callable[..., Any]) -> list[str]:
    """The parameters of ``handler`` that take an input component, in order (Gradio fills in the others)."""
    return [name for name in inspect.signature(handler).parameters if name not in SPECIAL]
