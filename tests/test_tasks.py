"""The Python API for writing tasks: `@task`, params, the registry, schedules, `Context`."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from pydantic import Field

from tasks import (
    Context,
    Cron,
    Every,
    TaskDeclarationError,
    TaskDefinition,
    TaskRegistry,
    cron,
    every,
    task,
)
from tasks_service.models import InvalidParams, UnknownTaskType

pytestmark = pytest.mark.anyio


@task
async def resize(ctx: Context, file_id: str, width: int = 200) -> dict[str, Any]:
    """Resize an image.

    The width is in pixels.
    """
    return {"file_id": file_id, "width": width}


@task(max_attempts=3, timeout=30, schedule=every(seconds=30))
def import_csv(ctx: Context, file_id: str) -> int:
    return len(file_id)


@task
async def at_time(
    ctx: Context,
    when: datetime,
    count: Annotated[int, Field(ge=1, le=10)] = 1,
    tags: list[str] | None = None,
) -> str:
    return when.isoformat()


@task
async def no_params(ctx: Context) -> None:
    pass


def _first_dup() -> TaskDefinition:
    @task
    async def dup(ctx: Context) -> None:
        pass

    return dup


def _second_dup() -> TaskDefinition:
    @task
    def dup(ctx: Context, x: int) -> None:
        pass

    return dup


# -- @task -----------------------------------------------------------------------------------


def test_bare_task_decorator_names_it_after_the_function() -> None:
    assert isinstance(resize, TaskDefinition)
    assert resize.name == "resize"
    assert resize.is_async is True
    assert resize.description == "Resize an image.\n\nThe width is in pixels."
    assert resize.max_attempts == 1
    assert resize.timeout is None
    assert resize.schedule is None
    assert list(resize.param_names) == ["file_id", "width"]


def test_task_decorator_with_options() -> None:
    assert isinstance(import_csv, TaskDefinition)
    assert import_csv.name == "import_csv"
    assert import_csv.is_async is False
    assert import_csv.description == ""
    assert import_csv.max_attempts == 3
    assert import_csv.timeout == 30
    assert import_csv.schedule == Every(30)
    described = import_csv.describe()
    assert described["name"] == "import_csv"
    assert described["schedule"] == "every 30 s"
    assert described["max_attempts"] == 3


async def test_a_definition_still_calls_the_function() -> None:
    assert import_csv(None, "abcd") == 4
    assert await resize(None, "f1", width=10) == {"file_id": "f1", "width": 10}


def test_a_function_without_a_ctx_parameter_is_refused() -> None:
    def lonely() -> None:
        pass

    with pytest.raises(TypeError, match="Context"):
        task(lonely)


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_star_args_and_kwargs_cannot_be_params(kind: str) -> None:
    def with_args(ctx: Context, *args: int) -> None:
        pass

    def with_kwargs(ctx: Context, **kwargs: int) -> None:
        pass

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):
        task(with_args if kind == "args" else with_kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 1.5},
        {"timeout": 0},
        {"timeout": -5.0},
        {"timeout": "soon"},
        {"process": "yes"},
        {"schedule": "every minute"},
    ],
)
def test_bad_options_are_refused_naming_the_task_and_the_option(options: dict[str, Any]) -> None:
    def nightly(ctx: Context) -> None:
        pass

    (option,) = options
    with pytest.raises(TaskDeclarationError, match=rf"^@task 'nightly': {option} "):
        task(**options)(nightly)


# -- params ----------------------------------------------------------------------------------


def test_validate_fills_in_defaults() -> None:
    assert resize.validate({"file_id": "f1"}) == {"file_id": "f1", "width": 200}
    assert resize.validate({"file_id": "f1", "width": 50}) == {"file_id": "f1", "width": 50}
    assert no_params.validate({}) == {}


def assert_invalid(definition: TaskDefinition, params: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidParams) as caught:
        definition.validate(params)
    errors = caught.value.errors
    assert errors
    json.dumps(errors)  # the HTTP layer sends them as they are
    assert definition.name in str(caught.value)
    return errors


def test_extra_params_are_refused() -> None:
    errors = assert_invalid(resize, {"file_id": "f1", "height": 3})
    assert [(e["type"], e["loc"]) for e in errors] == [("extra_forbidden", ["height"])]
    assert_invalid(no_params, {"anything": 1})


def test_wrong_types_are_refused() -> None:
    errors = assert_invalid(resize, {"file_id": "f1", "width": "wide"})
    assert [e["loc"] for e in errors] == [["width"]]
    assert_invalid(resize, {"file_id": ["not", "a", "string"]})
    assert_invalid(at_time, {"when": "not a date"})


def test_missing_params_are_refused() -> None:
    errors = assert_invalid(resize, {})
    assert [(e["type"], e["loc"]) for e in errors] == [("missing", ["file_id"])]


def test_constraints_are_refused_with_json_ready_errors() -> None:
    errors = assert_invalid(at_time, {"when": "2024-01-01T00:00:00Z", "count": 11})
    assert errors[0]["loc"] == ["count"]
    assert errors[0]["ctx"] == {"le": 10}


def test_validated_params_are_json_ready_and_bind_gives_python_types() -> None:
    stored = at_time.validate({"when": "2024-03-01T12:30:00Z", "tags": ["a"]})
    assert json.loads(json.dumps(stored)) == stored
    assert isinstance(stored["when"], str)
    assert stored["count"] == 1
    bound = at_time.bind(stored)
    assert bound == {
        "when": datetime(2024, 3, 1, 12, 30, tzinfo=UTC),
        "count": 1,
        "tags": ["a"],
    }
    assert isinstance(bound["when"], datetime)
    assert resize.bind(resize.validate({"file_id": "f"})) == {"file_id": "f", "width": 200}


def test_params_schema_is_strict_and_lists_what_is_required() -> None:
    schema = resize.params_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["file_id"]
    assert schema["properties"]["file_id"]["type"] == "string"
    assert schema["properties"]["width"]["type"] == "integer"
    assert schema["properties"]["width"]["default"] == 200
    assert "ctx" not in schema["properties"]
    json.dumps(schema)

    timed = at_time.params_schema()
    assert timed["required"] == ["when"]
    assert timed["properties"]["when"]["format"] == "date-time"
    assert timed["properties"]["count"]["maximum"] == 10

    empty = no_params.params_schema()
    assert empty["additionalProperties"] is False
    assert empty.get("required", []) == []
    assert empty.get("properties", {}) == {}


# -- the registry ----------------------------------------------------------------------------


def test_two_definitions_with_one_name_are_refused_naming_both() -> None:
    first, second = _first_dup(), _second_dup()
    with pytest.raises(ValueError) as caught:
        TaskRegistry([first, second])
    message = str(caught.value)
    assert "'dup'" in message
    assert "tests.test_tasks._first_dup.<locals>.dup" in message
    assert "tests.test_tasks._second_dup.<locals>.dup" in message


def test_the_same_definition_twice_is_fine() -> None:
    registry = TaskRegistry([resize, resize, no_params])
    assert registry.names() == ["no_params", "resize"]
    assert registry.get("resize") is resize
    assert [d.name for d in registry] == ["no_params", "resize"]


def test_from_modules_finds_the_tasks_of_each_module() -> None:
    registry = TaskRegistry.from_modules(["tasks.sleep", "tests.sample_tasks"])
    assert "sleep" in registry
    assert "echo" in registry
    assert "noop" in registry
    assert registry.get("sleep").is_async
    assert not registry.get("record_sync").is_async
    assert registry.names() == sorted(registry.names())
    assert "Context" not in registry and "task" not in registry
    # Loading a module twice (imported again by another module) is not a clash.
    again = TaskRegistry.from_modules(["tasks.sleep", "tasks.sleep"])
    assert again.names() == ["sleep"]


def test_an_unknown_name_lists_the_known_ones() -> None:
    registry = TaskRegistry.from_modules(["tasks.sleep", "tests.sample_tasks"])
    with pytest.raises(UnknownTaskType) as caught:
        registry.get("nope")
    assert caught.value.name == "nope"
    assert caught.value.known == registry.names()
    assert "'nope'" in str(caught.value)
    assert "sleep" in str(caught.value) and "echo" in str(caught.value)
    with pytest.raises(UnknownTaskType, match=r"\(none\)"):
        TaskRegistry([]).get("nope")


# -- schedules -------------------------------------------------------------------------------


def test_every_adds_up_its_units() -> None:
    assert every(minutes=1).seconds == 60
    assert every(seconds=30).seconds == 30
    assert every(hours=1, minutes=1, seconds=1).seconds == 3661
    assert every(days=1).seconds == 86400
    assert every(seconds=0.5).seconds == 0.5


@pytest.mark.parametrize("units", [{}, {"seconds": 0}, {"seconds": -1}, {"minutes": -1}])
def test_every_needs_a_positive_interval(units: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        every(**units)


def test_cron_parses_its_expression_at_once() -> None:
    nightly = cron("0 2 * * *")
    assert nightly == Cron("0 2 * * *", "UTC")
    assert cron("*/5 * * * 1-5", tz="Europe/Paris").tz == "Europe/Paris"
    assert "0 2 * * *" in nightly.describe()


@pytest.mark.parametrize("expression", ["not a cron", "61 * * * *", "* * *", ""])
def test_a_bad_cron_expression_fails_at_once(expression: str) -> None:
    with pytest.raises(ValueError):
        cron(expression)


# -- Context ---------------------------------------------------------------------------------


class FakeSink:
    """Stands in for the store: records progress reports, commits at once."""

    def __init__(self, committed: asyncio.Future[None] | None = None) -> None:
        self.reports: list[tuple[str, float, str | None]] = []
        self.committed = committed

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        self.reports.append((task_id, percent, message))

    def progress_committed(self) -> asyncio.Future[None] | None:
        return self.committed


async def test_context_reports_progress_to_its_sink() -> None:
    sink = FakeSink()
    ctx = Context("t1", 2, sink, asyncio.get_running_loop())
    assert (ctx.task_id, ctx.attempt) == ("t1", 2)
    await ctx.progress(50, "half")
    ctx.progress(75)  # a plain call works too
    await ctx.progress(100.0, 42)  # type: ignore[arg-type]
    assert sink.reports == [("t1", 50.0, "half"), ("t1", 75.0, None), ("t1", 100.0, "42")]
    assert all(isinstance(percent, float) for _, percent, _ in sink.reports)


async def test_context_cuts_long_messages() -> None:
    sink = FakeSink()
    ctx = Context("t1", 1, sink, asyncio.get_running_loop())
    await ctx.progress(1, "x" * 5000)
    assert sink.reports[0][2] == "x" * 1000


@pytest.mark.parametrize("percent", [101, -0.5, float("nan"), math.inf, -math.inf])
async def test_context_refuses_progress_outside_0_to_100(percent: float) -> None:
    sink = FakeSink()
    ctx = Context("t1", 1, sink, asyncio.get_running_loop())
    with pytest.raises(ValueError, match="between 0 and 100"):
        ctx.progress(percent)
    assert sink.reports == []


async def test_context_progress_from_a_thread_reaches_the_loop() -> None:
    sink = FakeSink()
    loop = asyncio.get_running_loop()
    ctx = Context("t1", 1, sink, loop)

    def sync_task() -> None:
        ctx.progress(10, "from a thread")
        with pytest.raises(ValueError):
            ctx.progress(200)

    await asyncio.to_thread(sync_task)
    await asyncio.sleep(0)  # the report was handed to the loop thread-safely
    assert sink.reports == [("t1", 10.0, "from a thread")]


async def test_awaiting_progress_waits_for_the_commit() -> None:
    loop = asyncio.get_running_loop()
    committed: asyncio.Future[None] = loop.create_future()
    ctx = Context("t1", 1, FakeSink(committed), loop)
    waiting = asyncio.ensure_future(report(ctx, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    committed.set_result(None)
    await asyncio.wait_for(waiting, 1)


async def test_a_cancelled_wait_for_progress_leaves_the_commit_alone() -> None:
    loop = asyncio.get_running_loop()
    committed: asyncio.Future[None] = loop.create_future()
    ctx = Context("t1", 1, FakeSink(committed), loop)
    waiting = asyncio.ensure_future(report(ctx, 5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not committed.cancelled()  # other tasks may still wait on the same commit
    committed.set_result(None)


async def report(ctx: Context, percent: float) -> None:
    await ctx.progress(percent)


async def test_context_cancelled_turns_true_on_request() -> None:
    ctx = Context("t1", 1, FakeSink(), asyncio.get_running_loop())
    assert ctx.cancelled is False
    ctx.request_cancel()
    assert ctx.cancelled is True
    ctx.request_cancel()  # asking twice is harmless
    assert ctx.cancelled is True


def test_params_named_like_pydantic_methods_keep_their_names() -> None:
    @task
    async def call(ctx: Context, json: dict[str, int], copy: bool = False) -> None: ...

    assert call.validate({"json": {"a": 1}}) == {"json": {"a": 1}, "copy": False}
    assert call.bind({"json": {"a": 1}, "copy": True}) == {"json": {"a": 1}, "copy": True}
    schema = call.params_schema()
    assert set(schema["properties"]) == {"json", "copy"} and schema["required"] == ["json"]
    with pytest.raises(InvalidParams):
        call.validate({"json_param": {"a": 1}})
