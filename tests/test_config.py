"""Settings from TASKS_* variables: SPEC.md's defaults, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_service.config import Settings, SettingsError


def test_defaults_match_the_spec() -> None:
    settings = Settings.from_env({})
    assert settings.db == "tasks.db"
    assert settings.modules == ()
    assert settings.concurrency == 8
    assert settings.api_token is None
    assert settings.shutdown_grace == 10
    assert settings.result_ttl == 604800
    assert settings.max_body == 1048576
    assert settings.data_dir == Path("data")
    assert settings.max_upload == 104857600
    assert settings.smtp_url is None
    assert settings.smtp_from is None
    assert settings.sqlite_synchronous == "FULL"
    assert settings == Settings()


def test_empty_values_mean_the_default() -> None:
    settings = Settings.from_env(
        {"TASKS_CONCURRENCY": "", "TASKS_DB": "", "TASKS_API_TOKEN": "", "TASKS_MODULES": ""}
    )
    assert settings == Settings()


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "TASKS_DB": "/var/lib/tasks/prod.db",
            "TASKS_CONCURRENCY": "3",
            "TASKS_API_TOKEN": "s3cret",
            "TASKS_SHUTDOWN_GRACE": "2.5",
            "TASKS_RESULT_TTL": "0",
            "TASKS_MAX_BODY": "10",
            "TASKS_DATA_DIR": "/srv/uploads",
            "TASKS_MAX_UPLOAD": "2048",
            "TASKS_SMTP_URL": "smtp://u:p@mail:25",
            "TASKS_SMTP_FROM": "noreply@example.com",
            "TASKS_SQLITE_SYNCHRONOUS": "normal",
        }
    )
    assert settings.db == "/var/lib/tasks/prod.db"
    assert settings.concurrency == 3
    assert settings.api_token == "s3cret"
    assert settings.shutdown_grace == 2.5
    assert settings.result_ttl == 0
    assert settings.max_body == 10
    assert settings.data_dir == Path("/srv/uploads")
    assert settings.max_upload == 2048
    assert settings.smtp_url == "smtp://u:p@mail:25"
    assert settings.smtp_from == "noreply@example.com"
    assert settings.sqlite_synchronous == "NORMAL"


def test_modules_are_split_on_commas_and_trimmed() -> None:
    assert Settings.from_env({"TASKS_MODULES": "a, b,,c"}).modules == ("a", "b", "c")
    assert Settings.from_env({"TASKS_MODULES": " jobs.email "}).modules == ("jobs.email",)
    assert Settings.from_env({"TASKS_MODULES": " , ,"}).modules == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASKS_CONCURRENCY", "abc"),
        ("TASKS_CONCURRENCY", "0"),
        ("TASKS_CONCURRENCY", "-3"),
        ("TASKS_CONCURRENCY", "1.5"),
        ("TASKS_MAX_BODY", "0"),
        ("TASKS_MAX_UPLOAD", "lots"),
        ("TASKS_SHUTDOWN_GRACE", "-1"),
        ("TASKS_SHUTDOWN_GRACE", "inf"),
        ("TASKS_SHUTDOWN_GRACE", "nan"),
        ("TASKS_SHUTDOWN_GRACE", "soon"),
        ("TASKS_RESULT_TTL", "inf"),
        ("TASKS_RESULT_TTL", "-86400"),
        ("TASKS_SQLITE_SYNCHRONOUS", "FAST"),
        ("TASKS_SQLITE_SYNCHRONOUS", "OFF"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name) as caught:
        Settings.from_env({name: value})
    assert isinstance(caught.value, ValueError)


def test_the_api_token_never_shows_in_repr() -> None:
    settings = Settings.from_env(
        {"TASKS_API_TOKEN": "tok-9f8e7d", "TASKS_SMTP_URL": "smtp://user:pw-4c3b2a@mail:587"}
    )
    assert settings.api_token == "tok-9f8e7d"
    assert "tok-9f8e7d" not in repr(settings)
    assert "tok-9f8e7d" not in str(settings)
    assert "pw-4c3b2a" not in repr(settings)  # nor the SMTP password
    assert "tasks.db" in repr(settings)  # repr still shows the rest
