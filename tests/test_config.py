from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fediguard
from fediguard.config import load_settings
from fediguard.errors import ConfigError
from fediguard.verdicts import FailPolicy

SRC = str(Path(fediguard.__file__).parents[1])
"""The fediguard under test, for the subprocesses (whatever is installed in the environment)."""


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
        ({"FEDIGUARD_PORT": "tcp://10.96.0.17:14051"}, "Service named like fediguard"),
        ({"FEDIGUARD_TLS_CERTFILE": "/etc/hostname"}, "tls_certfile and tls_keyfile"),
        ({"FEDIGUARD_TLS_CERTFILE": "/no/c.pem", "FEDIGUARD_TLS_KEYFILE": "/etc/hostname"}, "tls_certfile"),
        ({"FEDIGUARD_WORKER_CA_FILE": "/nonexistent-ca.pem"}, "worker_ca_file"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert named in str(info.value)


def test_unknown_variables_are_warnings_that_name_them() -> None:
    warnings: list[str] = []
    env = {
        "FEDIGUARD_TOKEN": "from-the-compose-env-file",
        "FEDIGUARD_DEADLIN_S": "3",
        "FEDIGUARD_SERVICE_HOST": "10.96.0.17",
        "FEDIGUARD_PORT_14051_TCP_ADDR": "10.96.0.17",
        "FEDIGUARD_DEADLINE_S": "4",
    }
    s = load_settings(environ=env, warnings=warnings)
    assert s.deadline_s == 4
    assert any("FEDIGUARD_TOKEN" in w and "FEDIGUARD_CLIENT_TOKENS" in w for w in warnings), warnings
    assert any("FEDIGUARD_DEADLIN_S" in w and "did you mean FEDIGUARD_DEADLINE_S" in w for w in warnings)
    assert any("FEDIGUARD_SERVICE_HOST" in w and "Kubernetes" in w for w in warnings), warnings


def test_a_service_address_in_a_known_name_says_what_injected_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FEDIGUARD_PORT": "tcp://10.96.0.17:14051"})
    message = str(info.value)
    assert "FEDIGUARD_PORT='tcp://10.96.0.17:14051'" in message
    assert "Kubernetes" in message and "enableServiceLinks: false" in message
    # URLs that are values of a setting stay values.
    s = load_settings(environ={"FEDIGUARD_WORKER_SERVER": "https://gw.example.org"})
    assert s.worker_server == "https://gw.example.org"


def test_serve_starts_with_an_unknown_variable(tmp_path: Path) -> None:
    """`fediguard config` (which reads settings as serve does) warns about FEDIGUARD_TOKEN and goes on."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "FEDIGUARD_TOKEN": "x" * 20}
    run = subprocess.run(
        [sys.executable, "-m", "fediguard", "config"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "warning: FEDIGUARD_TOKEN is not a fediguard setting" in run.stderr


def test_errors_in_the_file_name_the_file_and_key(tmp_path: Path) -> None:
    toml = tmp_path / "fediguard.toml"
    toml.write_text("deadline_s = -1\nnot_a_setting = 2\n[client_policies.lemmy]\nminor_age = 900\n")
    with pytest.raises(ConfigError) as info:
        load_settings(toml, environ={})
    message = str(info.value)
    assert f"deadline_s (in {toml})" in message
    assert f"unknown key 'not_a_setting' in {toml}" in message
    assert f"client_policies.lemmy.minor_age (in {toml})" in message
    assert "FEDIGUARD_DEADLINE_S" not in message
    with pytest.raises(ConfigError, match=r"deadline_s \(env FEDIGUARD_DEADLINE_S\)"):
        load_settings(toml, environ={"FEDIGUARD_DEADLINE_S": "-2"})


def test_the_file_is_found_on_the_search_path_and_its_paths_are_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / ".config" / "fediguard").mkdir(parents=True)
    elsewhere.mkdir()
    found = home / ".config" / "fediguard" / "fediguard.toml"
    found.write_text('data_dir = "data"\ndeadline_s = 3\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "HOME": str(home)}
    run = subprocess.run(
        [sys.executable, "-m", "fediguard", "config"], env=env, capture_output=True, text=True, cwd=elsewhere,
        check=True,
    )  # fmt: skip
    shown = json.loads(run.stdout)
    assert shown["config_file"] == str(found) and shown["deadline_s"] == 3
    assert shown["data_dir"] == str(found.parent / "data"), "relative to the file, not to the current folder"
    # ./fediguard.toml comes first; FEDIGUARD_CONFIG before both.
    (elsewhere / "fediguard.toml").write_text("deadline_s = 4\n")
    monkeypatch.chdir(elsewhere)
    s = load_settings(environ={"HOME": str(home)})
    assert s.deadline_s == 4 and s.config_file == elsewhere / "fediguard.toml"
    given = tmp_path / "given.toml"
    given.write_text("deadline_s = 5\n")
    assert load_settings(environ={"HOME": str(home), "FEDIGUARD_CONFIG": str(given)}).deadline_s == 5


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
