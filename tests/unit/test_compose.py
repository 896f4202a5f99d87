"""docker-compose.yml runs a real cluster: every stoker service's command is a real stoker command."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml
from click.testing import CliRunner

from stoker.cli import COMMAND_MODULES, cli

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_the_cluster_has_every_role_and_its_stores() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "gateway", "scheduler", "node1", "node2"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    for name in ("gateway", "scheduler", "node1", "node2", "migrate"):
        svc = services[name]
        assert svc["build"] == "." and (ROOT / "Dockerfile").exists()
        env = svc["environment"]
        # least privilege: Redis requires a password (docs/security.md)
        assert env["STOKER_REDIS_URL"].startswith("redis://:${STOKER_REDIS_PASSWORD")
        assert env["STOKER_REDIS_URL"].endswith("@redis:6379/0")
        assert env["STOKER_DB_URL"].startswith("postgresql://") and "@postgres:" in env["STOKER_DB_URL"]
        assert "STOKER_TOKEN" in env


def test_every_command_parses_as_a_stoker_command() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    services = compose()["services"]
    runner = CliRunner()
    for name in ("gateway", "scheduler", "node1", "node2", "migrate"):
        command = services[name]["command"]
        # --help after the arguments: click validates them all, then prints help and exits 0
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (name, command, result.output)
    assert 'ENTRYPOINT ["stoker"]' in (ROOT / "Dockerfile").read_text()


def test_redis_requires_a_password_and_only_nodes_are_privileged() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    assert "--requirepass" in command and "STOKER_REDIS_PASSWORD" in command[command.index("--requirepass") + 1]
    assert "REDIS_PASSWORD" in " ".join(services["redis"]["healthcheck"]["test"])
    assert {name for name, svc in services.items() if svc.get("privileged")} == {"node1", "node2"}
    assert "nftables" in (ROOT / "Dockerfile").read_text() and "iproute2" in (ROOT / "Dockerfile").read_text()


def test_nodes_share_no_disk_with_the_gateway() -> None:
    services = compose()["services"]
    assert not services["node1"].get("volumes") and not services["node2"].get("volumes")
    assert "--advertise-url" in services["gateway"]["command"]


def test_the_image_has_what_documented_features_need() -> None:
    """Every extra the docs tell users to install, and the programs deploys and triggers run."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    installed = re.search(r"pip install [^\n]*'\.\[([a-z,]+)\]'", dockerfile)
    assert installed, "the Dockerfile does not pip install stoker with extras"
    extras = set(installed.group(1).split(","))
    known = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert extras <= known, extras - known
    documented = {m for doc in (ROOT / "docs").glob("*.md")
                  for m in re.findall(r"pip install 'stoker\[([a-z]+)\]'", doc.read_text())}
    documented |= {t for t in ("celery", "rq") if f'type = "{t}"' in (ROOT / "docs" / "queues.md").read_text()}
    assert documented and documented <= extras, f"the image lacks the extras {sorted(documented - extras)}"
    assert "postgres" in extras  # the compose cluster's ledger
    apt = re.search(r"apt-get install ([^\n]*)", dockerfile)
    assert apt and {"nodejs", "npm", "curl"} <= set(apt.group(1).split()), "the image lacks node, npm or curl"
