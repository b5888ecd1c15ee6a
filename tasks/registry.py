"""`@task`, the task registry, and the schedule specifications `every` and `cron`."""

from __future__ import annotations

import importlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, get_args, get_origin, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from tasks_service.models import InvalidParams, UnknownTaskType

# The built-in task modules, loaded before TASKS_MODULES.
BUILTIN_MODULES: tuple[str, ...] = (
    "tasks.sleep",
    "tasks.http_request",
    "tasks.send_email",
    "tasks.process_csv",
    "tasks.maintenance",
)


class PermanentError(Exception):
    """Raise it from a task to fail at once, without the retries `max_attempts` allows."""


class _UploadedFile:
    """Marks a param as the id of an upload: an unknown id is a 422 before anything is stored."""

    def __repr__(self) -> str:
        return "UploadedFile"


UPLOADED_FILE = _UploadedFile()
FileId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Z]{26}$"), UPLOADED_FILE]


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval; fires are aligned to the epoch, so every process agrees on them."""

    seconds: float

    def describe(self) -> str:
        return f"every {self.seconds:g} s"


@dataclass(frozen=True, slots=True)
class Cron:
    """A crontab expression (minute hour day month weekday), read in `tz` (UTC by default)."""

    expression: str
    tz: str = "UTC"

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"

    def trigger_fields(self) -> dict[str, str]:
        """APScheduler CronTrigger arguments, weekdays numbered as crontab numbers them."""
        fields = self.expression.split()
        if len(fields) != 5:
            raise ValueError(f"a cron expression has 5 fields, got {self.expression!r}")
        minute, hour, day, month, weekday = fields
        return {
            "minute": minute,
            "hour": hour,
            "day": day,
            "month": month,
            "day_of_week": crontab_weekdays(weekday),
        }


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """Crontab's weekday field (0 or 7 = Sunday) as day names.

    APScheduler 3 numbers weekdays from Monday = 0, so `from_crontab("0 2 * * 1")` would run
    on Tuesdays. Names mean the same to both, so numbers are spelled out as names.
    """
    names: list[str] = []
    for part in field.split(","):
        if part == "*" or any(c.isalpha() for c in part):
            names.append(part)
            continue
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = int(first_text), int(last_text)
        else:
            first = last = int(span)
            if step_text:
                last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"bad day-of-week field {field!r}")
        names.extend(_DAY_NAMES[day % 7] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(names))


Schedule = Every | Cron


def every(*, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> Every:
    total = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days).total_seconds()
    if total <= 0:
        raise ValueError("every(...) needs a positive interval")
    return Every(total)


def cron(expression: str, *, tz: str = "UTC") -> Cron:
    # Parse now so that a typo fails at import, not at the first fire.
    from apscheduler.triggers.cron import CronTrigger

    schedule = Cron(expression, tz)
    CronTrigger(**schedule.trigger_fields(), timezone=tz)
    return schedule


@dataclass(frozen=True, slots=True, eq=False)
class TaskDefinition:
    """A registered task type. Calling it calls the function itself."""

    fn: Callable[..., Any]
    name: str
    description: str
    params_model: type[BaseModel]
    is_async: bool
    max_attempts: int = 1
    timeout: float | None = None
    schedule: Schedule | None = None
    param_names: dict[str, str] = field(default_factory=dict)  # param -> model field
    file_params: tuple[str, ...] = field(default=())  # params typed FileId

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params as stored: validated, defaults filled in, JSON-ready; else InvalidParams."""
        try:
            model = self.params_model.model_validate(params)
        except ValidationError as exc:
            raise InvalidParams(self.name, json.loads(exc.json(include_url=False))) from None
        return model.model_dump(mode="json", by_alias=True)

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """Stored params turned back into the Python values the function's hints ask for."""
        model = self.params_model.model_validate(params)
        return {param: getattr(model, name) for param, name in self.param_names.items()}

    def params_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params_schema": self.params_schema(),
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "schedule": self.schedule.describe() if self.schedule else None,
        }


@overload
def task(fn: Callable[..., Any], /) -> TaskDefinition: ...
@overload
def task(
    *, max_attempts: int = 1, timeout: float | None = None, schedule: Schedule | None = None
) -> Callable[[Callable[..., Any]], TaskDefinition]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    max_attempts: int = 1,
    timeout: float | None = None,
    schedule: Schedule | None = None,
) -> TaskDefinition | Callable[[Callable[..., Any]], TaskDefinition]:
    """Make a function a task type named after it; its parameters after `ctx` are its params."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")

    def decorate(function: Callable[..., Any]) -> TaskDefinition:
        model, names, file_params = _params_model(function)
        doc = inspect.getdoc(function) or ""
        return TaskDefinition(
            fn=function,
            name=function.__name__,
            description=doc,
            params_model=model,
            is_async=inspect.iscoroutinefunction(function),
            max_attempts=max_attempts,
            timeout=timeout,
            schedule=schedule,
            param_names=names,
            file_params=file_params,
        )

    return decorate(fn) if fn is not None else decorate


def _params_model(
    function: Callable[..., Any],
) -> tuple[type[BaseModel], dict[str, str], tuple[str, ...]]:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if not parameters:
        raise TypeError(f"task {function.__name__!r} must take a Context as first parameter")
    hints = typing.get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}  # param name -> field name in the model
    file_params: list[str] = []
    for parameter in parameters[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"task {function.__name__!r}: *args and **kwargs cannot be params")
        default = ... if parameter.default is parameter.empty else parameter.default
        hint = hints.get(parameter.name, Any)
        if get_origin(hint) is Annotated and UPLOADED_FILE in get_args(hint)[1:]:
            file_params.append(parameter.name)
        field_name = parameter.name
        if hasattr(BaseModel, field_name):  # `json`, `copy`...: keep the name as an alias
            field_name = f"{parameter.name}_param"
            hint = Annotated[hint, Field(alias=parameter.name)]
        fields[field_name] = (hint, default)
        names[parameter.name] = field_name
    model = create_model(  # type: ignore[call-overload]
        f"{function.__name__}_params",
        __config__=ConfigDict(extra="forbid", title=f"{function.__name__} params"),
        **fields,
    )
    return model, names, tuple(file_params)


class TaskRegistry:
    """The task types this service runs: only these names can ever be started."""

    def __init__(self, definitions: Iterable[TaskDefinition]) -> None:
        self._by_name: dict[str, TaskDefinition] = {}
        for definition in definitions:
            known = self._by_name.get(definition.name)
            if known is not None and known is not definition:
                raise ValueError(
                    f"two task types are named {definition.name!r}: "
                    f"{_origin(known)} and {_origin(definition)}"
                )
            self._by_name[definition.name] = definition

    @classmethod
    def from_modules(cls, module_names: Sequence[str]) -> TaskRegistry:
        """Import each module and collect the task types defined at its top level."""
        found: list[TaskDefinition] = []
        for module_name in module_names:
            module = importlib.import_module(module_name)
            found.extend(_definitions_in(module))
        return cls(found)

    def get(self, name: str) -> TaskDefinition:
        definition = self._by_name.get(name)
        if definition is None:
            raise UnknownTaskType(name, self.names())
        return definition

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(sorted(self._by_name.values(), key=lambda d: d.name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def _definitions_in(module: types.ModuleType) -> Iterator[TaskDefinition]:
    for value in vars(module).values():
        if isinstance(value, TaskDefinition):
            yield value


def _origin(definition: TaskDefinition) -> str:
    return f"{definition.fn.__module__}.{definition.fn.__qualname__}"
