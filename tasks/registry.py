"""`@task`, the task definitions it makes, and the registry of the task types a service runs."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn, get_args, get_origin, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from tasks.schedules import Cron, Every, Schedule
from tasks_service.models import InvalidParams, UnknownTaskType, dump_json

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
    process: bool = False  # each attempt in a child process (see runtime.processes)
    limits: Limits = field(default_factory=lambda: Limits())
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
            "process": self.process,
            "concurrency": self.limits.concurrency,
            "rate_limit": self.limits.rate.describe() if self.limits.rate else None,
            "limit_key": self.limits.key,
        }

    def lane(self, params: dict[str, Any]) -> str | None:
        """Where the claim finds this type's task with these (validated) params: no lane for
        plain tasks; the type's own for process and limited types; one per value of the
        `limit_key` param for keyed limits."""
        if self.limits.key is not None:
            return f"{self.name}:{dump_json(params.get(self.limits.key))}"
        if self.process or self.limits.limited:
            return self.name
        return None

    @property
    def module(self) -> str:
        """The module a child process imports to find this task type."""
        return str(self.fn.__module__)


@overload
def task(fn: Callable[..., Any], /) -> TaskDefinition: ...
@overload
def task(
    *,
    max_attempts: int = 1,
    timeout: float | None = None,
    schedule: Schedule | None = None,
    process: bool = False,
    concurrency: int | None = None,
    rate_limit: str | None = None,
    limit_key: str | None = None,
) -> Callable[[Callable[..., Any]], TaskDefinition]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    max_attempts: int = 1,
    timeout: float | None = None,
    schedule: Schedule | None = None,
    process: bool = False,
    concurrency: int | None = None,
    rate_limit: str | None = None,
    limit_key: str | None = None,
) -> TaskDefinition | Callable[[Callable[..., Any]], TaskDefinition]:
    """Make a function a task type named after it; its parameters after `ctx` are its params.

    A bad option is refused here, when the module loads, naming the task and the option.
    """

    def decorate(function: Callable[..., Any]) -> TaskDefinition:
        refuse = _Refusal(getattr(function, "__name__", repr(function)))
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            refuse("max_attempts", f"must be a whole number, got {max_attempts!r}")
        if max_attempts < 1:
            refuse("max_attempts", f"must be at least 1, got {max_attempts!r}")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            refuse("timeout", f"must be a positive number of seconds, got {timeout!r}")
        if not isinstance(process, bool):
            refuse("process", f"must be True or False, got {process!r}")
        if schedule is not None and not isinstance(schedule, Every | Cron):
            refuse("schedule", f"must be every(...) or cron(...), got {schedule!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            refuse("concurrency", f"must be a whole number of at least 1, got {concurrency!r}")
        rate = None
        if rate_limit is not None:
            try:
                rate = RateLimit.parse(rate_limit)
            except ValueError as exc:
                refuse("rate_limit", str(exc))
        model, names, file_params = _params_model(function)
        if limit_key is not None:
            if limit_key not in names:
                known = ", ".join(names) or "none"
                refuse(
                    "limit_key", f"{limit_key!r} names no param of the task (its params: {known})"
                )
            if concurrency is None and rate is None:
                refuse("limit_key", "needs concurrency or rate_limit: it says what they count per")
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
            process=process,
            limits=Limits(concurrency, rate, limit_key),
            param_names=names,
            file_params=file_params,
        )

    return decorate(fn) if fn is not None else decorate


_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` starts in any window of `period` seconds."""

    count: int
    unit: str  # s, m or h

    @property
    def period(self) -> float:
        return _PERIODS[self.unit]

    def describe(self) -> str:
        return f"{self.count}/{self.unit}"

    @classmethod
    def parse(cls, text: object) -> RateLimit:
        match = _RATE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f'must be "N/s", "N/m" or "N/h" (e.g. "10/m"), got {text!r}')
        count = int(match.group(1))
        if count < 1:
            raise ValueError(f"must allow at least 1 start, got {text!r}")
        return cls(count, match.group(2))


@dataclass(frozen=True, slots=True)
class Limits:
    """How many of a type's tasks may run at once and start per period, anywhere; with
    `key`, per distinct value of that param."""

    concurrency: int | None = None
    rate: RateLimit | None = None
    key: str | None = None

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate is not None


class TaskDeclarationError(ValueError):
    """A `@task` declaration the service cannot run; the message names the task and option."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    task: str

    def __call__(self, option: str, problem: str) -> NoReturn:
        raise TaskDeclarationError(f"@task {self.task!r}: {option} {problem}")


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
            if definition.process:
                _check_importable(definition)
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


def _check_importable(definition: TaskDefinition) -> None:
    """A child process finds a process task by importing its module and taking the name."""
    where = f"{definition.module}.{definition.fn.__qualname__}"
    module = sys.modules.get(definition.module)
    if definition.module == "__main__" or module is None:
        problem = "it is defined in __main__" if definition.module == "__main__" else "no module"
    elif getattr(module, definition.name, None) is not definition:
        problem = "it is not at the top level of its module under its own name"
    else:
        return
    raise TaskDeclarationError(
        f"@task {definition.name!r}: process=True needs a task a child process can import "
        f"by name, and {where} cannot be: {problem}; define it at the top level of an "
        "importable module"
    )


def _origin(definition: TaskDefinition) -> str:
    return f"{definition.fn.__module__}.{definition.fn.__qualname__}"
