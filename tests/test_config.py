from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from fediguard.config import load_settings
from fediguard.errors import ConfigError
from fediguard.verdicts import FailPolicy


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.host == "127.0.0.1" and s.port == 14051
    assert s.fail_policy is FailPolicy.CLOSED and s.deadline_s == 8.0 and s.max_body_mb == 40
    assert s.allowed_cidrs == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert s.effective_database_url == "sqlite:///fediguard-data/fediguard.sqlite3"


def test_env_overrides_toml(tmp_path: Path) -> None:
    toml = tmp_path / "f.toml"
    toml.write_text('fail_policy = "open"\ndeadline_s = 3\nallowed_cidrs = ["10.0.0.0/8"]\n')
    s = load_settings(
        toml, environ={"FEDIGUARD_DEADLINE_S": "5.5", "FEDIGUARD_CLIENT_TOKENS": "a:0123456789abcdef"}
    )
    assert s.fail_policy is FailPolicy.OPEN and s.deadline_s == 5.5
    assert s.allowed_cidrs == [ipaddress.ip_network("10.0.0.0/8")]
    assert s.client_tokens[0].name == "a"


@pytest.mark.parametrize(
    "env,named",
    [
        ({"FEDIGUARD_FAIL_POLICY": "maybe"}, "fail_policy (env FEDIGUARD_FAIL_POLICY)"),
        ({"FEDIGUARD_DEADLINE_S": "-1"}, "deadline_s"),
        ({"FEDIGUARD_ALLOWED_CIDRS": "10.0.0.0/33"}, "allowed_cidrs"),
        ({"FEDIGUARD_CLIENT_TOKENS": "short"}, "client_tokens"),
        ({"FEDIGUARD_WORKER_KEYS": "nokeyname0123456789"}, "worker_keys"),
        ({"FEDIGUARD_WORKER_KEYS": "cache:worker-key-0123456789"}, "'cache' is reserved"),
        ({"FEDIGUARD_WORKER_KEYS": "scanner-0:worker-key-0123456789"}, "'scanner-0' is reserved"),
        ({"FEDIGUARD_BODY_IDLE_TIMEOUT_S": "0"}, "body_idle_timeout_s"),
        ({"FEDIGUARD_REJECT_LABELS": "csam_suspect,bogus"}, "reject_labels"),
        ({"FEDIGUARD_NO_SUCH_THING": "1"}, "FEDIGUARD_NO_SUCH_THING"),
        ({"FEDIGUARD_TLS_CERTFILE": "/etc/hostname"}, "tls_certfile and tls_keyfile"),
        ({"FEDIGUARD_TLS_CERTFILE": "/no/c.pem", "FEDIGUARD_TLS_KEYFILE": "/etc/hostname"}, "tls_certfile"),
        ({"FEDIGUARD_WORKER_CA_FILE": "/nonexistent-ca.pem"}, "worker_ca_file"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert named in str(info.value)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("deadline_s = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    "env,secrets,shown",
    [
        (
            {"FEDIGUARD_CLIENT_TOKENS": "lemmy:supersecretvalue123",
             "FEDIGUARD_DATABASE_URL": "postgresql://fg:dbpassword@db/fg"},
            ["supersecretvalue123", "dbpassword"],
            ['"lemmy:***"', "postgresql://fg:***@db/fg"],
        ),
        (
            {"FEDIGUARD_DATABASE_URL": "postgresql://db/fg?user=fg&password=qpass&sslmode=require"},
            ["qpass"],
            ["postgresql://db/fg?user=fg&password=***&sslmode=require"],
        ),
    ],
)  # fmt: skip
def test_config_command_masks_secrets(
    tmp_path: Path, env: dict[str, str], secrets: list[str], shown: list[str]
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fediguard", "config"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert not [secret for secret in secrets if secret in out]
    assert all(text in out for text in shown), out


def test_config_command_refuses_invalid_settings(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "FEDIGUARD_FAIL_POLICY": "sideways"}
    run = subprocess.run(
        [sys.executable, "-m", "fediguard", "config"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 2 and "fail_policy" in run.stderr


def test_client_policy_labels_are_checked() -> None:
    with pytest.raises(ConfigError, match="client_policies"):
        load_settings(environ={"FEDIGUARD_CLIENT_POLICIES": '{"a": {"reject_labels": ["bogus"]}}'})
    with pytest.raises(ConfigError, match="client_policies"):
        load_settings(environ={"FEDIGUARD_CLIENT_POLICIES": "not json"})


@pytest.mark.parametrize(
    "env,named",
    [
        ({"FEDIGUARD_DETECTORS": "hashlist", "FEDIGUARD_HASHLIST_DENY_FILE": "/nonexistent/deny.txt"},
         "hashlist_deny_file"),
        ({"FEDIGUARD_DETECTORS": "nudity,no-such-detector"}, "in detectors"),
        ({"FEDIGUARD_DETECTORS": "no_such_module:factory"}, "no_such_module:factory"),
    ],
)  # fmt: skip
def test_serve_refuses_detector_settings_it_cannot_use_before_starting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fediguard", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("fediguard: error:") and named in run.stderr
    assert "Traceback" not in run.stderr
