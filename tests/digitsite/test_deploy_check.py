"""`manage.py check --deploy` is clean with the production environment README documents."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

PRODUCTION_ENV = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "digits.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "BEHIND_TLS_PROXY": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_check_is_clean_with_production_settings():
    env = {**PRODUCTION_ENV, "SECRET_KEY": secrets.token_urlsafe(50)}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_warns_when_production_settings_are_missing():
    env = {"DEBUG": "true", "SECRET_KEY": secrets.token_urlsafe(50)}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {**PRODUCTION_ENV, "SECRET_KEY": "", "SECRET_KEY_FILE": "", "VAR_DIR": str(tmp_path)}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert not (tmp_path / "secret_key").exists()  # no key made up behind the operator's back


def test_a_local_development_service_keeps_its_key_in_var(tmp_path):
    env = {"DEBUG": "false", "SECRET_KEY": "", "SECRET_KEY_FILE": "", "VAR_DIR": str(tmp_path)}
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "secret_key").read_text()) > 40
