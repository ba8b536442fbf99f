"""Settings read only their documented environment variables."""

from pathlib import Path

import pytest

from service.settings import Settings


def test_unprefixed_home_and_token_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TINYSTORIES_HOME", "TINYSTORIES_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/somewhere/else")
    monkeypatch.setenv("ADMIN_TOKEN", "not-ours")
    settings = Settings(_env_file=None)
    assert settings.home == Path(".tinystories")
    assert settings.admin_token is None


def test_documented_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TINYSTORIES_HOME", str(tmp_path))
    monkeypatch.setenv("TINYSTORIES_ADMIN_TOKEN", "t0ken")
    monkeypatch.setenv("TINYSTORIES_WORKER_CONCURRENCY", "7")
    settings = Settings(_env_file=None)
    assert settings.home == tmp_path
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0ken"
    assert settings.worker_concurrency == 7
    assert Settings(_env_file=None, home=tmp_path / "x").home == tmp_path / "x"


def test_a_blank_key_is_unset_and_the_api_url_follows_the_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A key of spaces (a stray `OPENAI_API_KEY=" "` in .env) must not turn the simulator off.
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    monkeypatch.setenv("OPENAI_BASE_URL", " ")
    monkeypatch.delenv("TINYSTORIES_PROVIDERS", raising=False)
    settings = Settings(_env_file=None)
    assert settings.openai_api_key is None and settings.uses_simulator
    monkeypatch.setenv("TINYSTORIES_PORT", "8123")
    monkeypatch.delenv("TINYSTORIES_API_URL", raising=False)
    assert Settings(_env_file=None).api_base == "http://127.0.0.1:8123"
    assert Settings(_env_file=None, host="0.0.0.0").api_base == "http://127.0.0.1:8123"
    monkeypatch.setenv("TINYSTORIES_API_URL", "http://api.internal:9000")
    assert Settings(_env_file=None).api_base == "http://api.internal:9000"
