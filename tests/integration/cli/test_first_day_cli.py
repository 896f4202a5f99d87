"""The commands a new user reaches for: `stoker init` and `describe`, `--url/--token` instead of the
environment, a deploy interrupted with Ctrl-C, a missing extra named in the error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from stoker.cli.output import handles_errors
from tests.conftest import RunningPlatform, wait_until


def run(platform: RunningPlatform, *args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stoker", *args], env=env or platform.env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("runtime", ["python", "nodejs"])
def test_init_scaffolds_a_function_that_deploys_and_answers_its_test_event(
        runtime: str, platform: RunningPlatform, tmp_path: Path) -> None:
    if runtime == "nodejs" and not (os.environ.get("STOKER_NODEJS") or shutil.which("node")):
        pytest.skip("Node.js is not installed here")
    name = f"greet-{runtime}"
    created = run(platform, "init", "--runtime", runtime, name, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert f"stoker deploy {name}" in created.stdout
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(
        ["stoker.toml", "event.json", "handler.py" if runtime == "python" else "index.js"])
    deployed = run(platform, "deploy", name, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    answer = run(platform, "invoke", name, "--data-file", f"{name}/event.json", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"message": "Hello, you!"}


def test_init_refuses_what_it_would_overwrite_and_bad_names(platform: RunningPlatform, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    refused = run(platform, "init", "taken", cwd=tmp_path)
    assert refused.returncode == 2 and "already exists and is not empty" in refused.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    bad = run(platform, "init", "no spaces", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a function name" in bad.stderr
    assert not (tmp_path / "no spaces").exists()


def test_describe_shows_settings_triggers_aliases_and_versions(platform: RunningPlatform, make_function,
                                                               tmp_path: Path) -> None:
    folder = make_function("shop", "def handler(event, context):\n    return 1\n",
                           'memory = 256\n[function.env]\nAPI_KEY = "s3cret"\n'
                           '[[triggers]]\ntype = "cron"\nschedule = "rate(1 hour)"\n')
    platform.cli("deploy", str(folder), check=True)
    platform.cli("alias", "set", "shop", "prod", "1", check=True)
    shown = platform.cli("describe", "shop", check=True).stdout
    assert "memory: 256 MB" in shown and "handler: handler.handler" in shown
    assert "#1 cron: schedule = 'rate(1 hour)'" in shown
    assert "aliases: prod -> 1" in shown and "env: API_KEY" in shown
    assert "s3cret" not in shown
    data = json.loads(platform.cli("describe", "shop", "--format", "json", check=True).stdout)
    assert data["spec"]["env"] == {"API_KEY": "***"} and data["spec"]["triggers"][0]["type"] == "cron"
    missing = platform.cli("describe", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_url_and_token_flags_stand_in_for_the_environment(platform: RunningPlatform, tmp_path: Path) -> None:
    bare = {k: v for k, v in platform.env.items() if k not in ("STOKER_URL", "STOKER_TOKEN")}
    bare["STOKER_HOME"] = str(tmp_path / "elsewhere")  # no endpoint.json to find
    lost = run(platform, "functions", cwd=tmp_path, env=bare)
    assert lost.returncode == 2 and "stoker is not running here" in lost.stderr
    found = run(platform, "functions", "--url", platform.url, "--token", platform.token, "--format", "json",
                cwd=tmp_path, env=bare)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
    wrong = run(platform, "functions", "--url", platform.url, "--token", "stk_wrong", cwd=tmp_path, env=bare)
    assert wrong.returncode == 2 and "token" in wrong.stderr.lower()


def test_a_deploy_interrupted_by_ctrl_c_says_what_happened(tmp_path: Path, make_function) -> None:
    folder = make_function("slow", "def handler(event, context):\n    return 1\n")
    with socket.socket() as silent:  # a gateway that accepts and never answers, like one busy installing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        proc = subprocess.Popen([sys.executable, "-m", "stoker", "deploy", str(folder), "--url",
                                 f"http://127.0.0.1:{silent.getsockname()[1]}", "--token", "stk_x"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held: list[socket.socket] = []  # accepted and kept open, never answered
        wait_until(lambda: _accept(silent, held), timeout=30, message="the deploy to be sent")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        for conn in held:
            conn.close()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines() == [err.strip()]
    assert "deploy interrupted: the platform may still finish it" in err


def _accept(sock: socket.socket, held: list[socket.socket]) -> bool:
    sock.settimeout(0.1)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    held.append(conn)
    return True


def test_a_missing_extra_is_named_instead_of_a_traceback() -> None:
    @click.command()
    @handles_errors
    def needs_postgres() -> None:
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    @click.command()
    @handles_errors
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nothing_we_know'", name="nothing_we_know")

    result = CliRunner().invoke(needs_postgres, [])
    assert result.exit_code == 2
    assert "pip install 'stoker[postgres]'" in result.output
    other = CliRunner().invoke(broken, [])
    assert isinstance(other.exception, ModuleNotFoundError)  # not an extra: a real bug, shown as one


# -- a deploy that installs requirements: the installer's output as it runs -----------------

def _wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel, made by hand so that the test needs no build tools or network."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": source,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: stoker-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def wheel_index(tmp_path: Path) -> Iterator[str]:
    """A find-links page over HTTP with one wheel, stokerdemo 1.0."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "stokerdemo", "1.0", "ANSWER = 42\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_deploy_shows_the_installers_output_as_it_runs(platform: RunningPlatform, make_function,
                                                          wheel_index: str) -> None:
    folder = make_function("withdemo", "import stokerdemo\n\ndef handler(event, context):\n"
                                       "    return stokerdemo.ANSWER\n")
    (folder / "requirements.txt").write_text(f"--no-index\n--find-links {wheel_index}\nstokerdemo==1.0\n")
    deployed = platform.cli("deploy", str(folder), timeout=300)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == "deployed withdemo: version 1"
    lines = deployed.stderr.splitlines()
    assert lines[0].startswith(f"deploying {folder}") and "installs requirements.txt" in lines[0]
    assert "  Successfully installed stokerdemo-1.0" in lines, lines
    assert json.loads(platform.cli("invoke", "withdemo", check=True).stdout) == 42


def test_a_package_that_does_not_exist_is_not_blamed_on_wheels(platform: RunningPlatform, make_function,
                                                               wheel_index: str) -> None:
    folder = make_function("nosuch", "def handler(event, context):\n    return 1\n")
    (folder / "requirements.txt").write_text(f"--no-index\n--find-links {wheel_index}\nstokerdemo-nosuch==1.0\n")
    refused = platform.cli("deploy", str(folder), timeout=300)
    assert refused.returncode == 2
    assert "installing requirements.txt failed" in refused.stderr
    assert "stokerdemo-nosuch==1.0: no installable distribution was found. Check the name" in refused.stderr
    assert json.loads(platform.cli("functions", "--format", "json", check=True).stdout) == []


def test_db_watch_without_the_postgres_extra_says_which_to_install(tmp_path: Path) -> None:
    """README's plain install has no psycopg: `stoker db watch --url postgresql://...` names the extra."""
    script = ("import sys; sys.modules['psycopg'] = None; from stoker.cli import main; "
              "sys.argv = ['stoker', 'db', 'watch', '--url', 'postgresql://app@127.0.0.1:5432/shop', "
              "'--table', 'orders']; main()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: this needs the Python package 'psycopg', which stoker installs as an extra: "
        "pip install 'stoker[postgres]' (in the environment stoker runs from)"]
