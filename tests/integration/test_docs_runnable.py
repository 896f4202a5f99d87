"""The guides work as written: every block of README.md and docs/*.md marked runnable is run,
in order, against a fresh platform (one per file).

Markers (an HTML comment on the line before the fenced block; invisible on GitHub):

    <!-- runnable -->                  a sh block runs in bash (`set -e`, `stoker` on PATH); of a
                                       console block, the `$ ` lines (the rest is output shown);
                                       a python block runs with this Python. The platform is the one the
                                       commands find (STOKER_URL / STOKER_TOKEN); $URL and $TOKEN
                                       hold the same, and http://127.0.0.1:8700 (the default
                                       address the guides show) is replaced by the platform's.
    <!-- runnable: needs aws -->       the same, when that program is installed (else skipped)
    <!-- runnable: file PATH -->       the block is a file (a manifest, a handler): written to
                                       PATH in the scratch folder the commands run in

Every function folder written from the blocks is then deployed and must answer the event
each of its triggers sends (for cron: EventBridge's Scheduled Event), so that an example
manifest cannot declare a trigger its handler fails on. A command that fails is retried for
a few seconds, as a person typing the next command would find the platform caught up; blocks
that need other machines are not marked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RedisServer, start_platform

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^<!--\s*runnable(?::\s*(?P<how>[^>]*?))?\s*-->\s*\n```(?P<lang>\w*)\n(?P<body>.*?)^```",
                   re.M | re.S)
DEFAULT_URL = "http://127.0.0.1:8700"
RETRY_S = 20


@dataclass
class Block:
    doc: Path
    line: int
    how: str
    lang: str
    body: str

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text()
    return [Block(doc, text[: m.start()].count("\n") + 1, (m["how"] or "").strip(), m["lang"], m["body"])
            for m in BLOCK.finditer(text)]


def test_the_marker_finds_the_readme_tour() -> None:
    """The extraction itself: README's tour, its manifest and handler, and its Python are marked; the
    guides' examples with the tools they need."""
    assert [(b.how, b.lang) for b in blocks(ROOT / "docs" / "http.md")] == [("needs aws", "sh")]
    assert [b.how for b in blocks(ROOT / "docs" / "ledger.md")] == ["needs jq", ""]
    assert [(b.how, b.lang) for b in blocks(ROOT / "docs" / "runtimes.md")] == [("needs node", "console")]
    found = blocks(ROOT / "README.md")
    assert [(b.how, b.lang) for b in found] == [("", "sh"), ("file hello/stoker.toml", "toml"),
                                                ("file hello/handler.py", "python"), ("", "python")]
    assert found[0].body.startswith("stoker deploy examples/hello")


def logical_lines(script: str) -> list[str]:
    """Shell lines with backslash continuations joined; blank lines and whole-line comments dropped."""
    out, pending = [], ""
    for raw in script.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def shell_script(body: str) -> str:
    """Each command retried while it fails (up to RETRY_S), in a subshell so that `exit` in a guide
    cannot end the script; assignments run once, as written, so later lines see them."""
    lines = ["set -e", f"retry() {{ local end=$((SECONDS+{RETRY_S})); until ( eval \"$1\" ); do "
             "(( SECONDS < end )) || { echo \"failed: $1\" >&2; return 1; }; sleep 0.5; done; }"]
    for line in logical_lines(body):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            lines.append(line)
        else:
            lines.append(f"retry {shlex.quote(line)}")
    return "\n".join(lines) + "\n"


def test_shell_lines_are_retried_and_assignments_kept(tmp_path: Path) -> None:
    later = tmp_path / "later"
    script = shell_script(f"X=$(echo 1)   # keep\ntest -e {later} || {{ touch {later}; false; }}  # fails once\n"
                          f'test "$X" = 1 && echo "$X" > {tmp_path / "seen"}\n')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "seen").read_text() == "1\n"
    failing = subprocess.run(["bash", "-c", shell_script("exit 3").replace(str(RETRY_S), "1")],
                             capture_output=True, text=True, timeout=60)
    assert failing.returncode != 0 and "failed: exit 3" in failing.stderr


def _cron_event(folder: Path, index: int) -> dict[str, object]:
    from stoker.platform.manifest import parse_manifest
    from stoker.triggers.cron.config import cron_configs
    from stoker.triggers.cron.source import scheduled_event

    spec = parse_manifest((folder / "stoker.toml").read_text(), str(folder))
    config = cron_configs(spec.name, spec.to_json())[index]
    return scheduled_event(config, "docs-test", 1_700_000_000_000)


@pytest.mark.parametrize("doc", [d for d in DOCS if blocks(d)], ids=lambda d: d.name)
def test_runnable_blocks_work_as_written(doc: Path, tmp_path: Path, redis_server: RedisServer,
                                         prefix: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    # other guides assume the tour's hello is there; README deploys it itself
    deploy = [] if doc.name == "README.md" else [ROOT / "examples" / "hello"]
    platform = start_platform(tmp_path / "home", redis_server.url, prefix, deploy=deploy)
    try:
        env = {**platform.env, "URL": platform.url, "TOKEN": platform.token,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        written: set[Path] = set()
        for block in blocks(doc):
            body = block.body.replace(DEFAULT_URL, platform.url)
            if block.how.startswith("file "):
                path = work / block.how.split(None, 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body)
                written.add(path.parent)
                continue
            if block.how.startswith("needs "):
                program = block.how.split(None, 1)[1]
                if shutil.which(program) is None:
                    continue
            elif block.how:
                raise AssertionError(f"{block.where()}: unknown marker 'runnable: {block.how}'")
            if block.lang == "sh":
                argv = ["bash", "-c", shell_script(body)]
            elif block.lang == "console":
                commands = "\n".join(line[2:] for line in body.splitlines() if line.startswith("$ "))
                argv = ["bash", "-c", shell_script(commands)]
            elif block.lang == "python":
                argv = [sys.executable, "-c", body]
            else:
                raise AssertionError(f"{block.where()}: a runnable {block.lang or 'plain'} block cannot run: "
                                     "mark it 'runnable: file PATH', or use sh or python")
            result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, (f"{block.where()} failed (exit {result.returncode}):\n"
                                            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

        for folder in sorted(f for f in written if (f / "stoker.toml").is_file()):
            manifest = tomllib.loads((folder / "stoker.toml").read_text())
            name = manifest["function"]["name"]
            platform.cli("deploy", str(folder), check=True)
            for index, trigger in enumerate(t for t in manifest.get("triggers", []) if t["type"] == "cron"):
                event = _cron_event(folder, index)
                answer = platform.cli("invoke", name, "--data", json.dumps(event))
                assert answer.returncode == 0, (f"{folder.name}'s handler fails on its cron trigger "
                                                f"{trigger}:\n{answer.stdout}{answer.stderr}")
    finally:
        platform.stop()
