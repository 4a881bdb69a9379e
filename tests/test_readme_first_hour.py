"""README's Quick start and Troubleshooting say what a new user meets: a
virtual environment first, `serve` in the foreground, and the failure
messages the CLI really prints (taken from the CLI here, not copied)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from .test_cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def flat(text: str) -> str:
    """Markdown prose as one line: line breaks inside `code` spans don't count."""
    return " ".join(text.split())


def test_quick_start_makes_a_venv_first_and_says_serve_stays_in_the_foreground():
    quick = section("Quick start")
    blocks = re.findall(r"^```sh\n(.*?)^```", quick, re.S | re.M)
    assert blocks[0].strip() == "python -m venv .venv && . .venv/bin/activate"
    assert any("openopen8 serve" in b for b in blocks[1:])
    prose = flat(quick)
    assert "foreground" in prose and "second terminal" in prose
    assert "#troubleshooting" in prose


def test_ci_still_finds_the_test_command_and_it_needs_no_activated_venv():
    awk = re.search(r"cmd=\$\((awk .*) README\.md\)", (ROOT / ".ci" / "run").read_text()).group(1)
    cmd = subprocess.run(["bash", "-c", f"{awk} README.md"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert cmd == "EXTRAS=test scripts/install-local.sh && python -m pytest -q"


def test_troubleshooting_lists_the_messages_the_cli_prints(tmp_path):
    trouble = flat(section("Troubleshooting"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        serve = cli("serve", "--host", "127.0.0.1", "--port", str(port), data_dir=tmp_path / "d",
                    check=False).stderr.strip()
    assert serve.replace(f"127.0.0.1:{port}", "127.0.0.1:8000") in trouble
    past = cli("tokens", "create", "a", "--expires", "2020-01-01", data_dir=tmp_path,
               check=False).stderr.strip()
    assert past.split(". ")[0] in trouble          # the first sentence, then "…"
    for expires in ("2027-02-30", "someday"):
        said = cli("tokens", "create", "a", "--expires", expires, data_dir=tmp_path,
                   check=False).stderr.strip()
        assert said in trouble, said
    by = cli("usage", "--by", "week", data_dir=tmp_path, check=False).stderr
    assert by.split(" (got")[0].removeprefix("error: ") in trouble
    # the messages other parts print, and what to do about them
    for words in ("openopen8 serve", "--token", "OPENOPEN8_TOKEN", "GET /v1/models",
                  "openopen8 channels list", "404", "503",
                  '{"status": "starting", "local_engine": "loading"}', "admin_token",
                  "OPENOPEN8_ADMIN_TOKEN"):
        assert words in trouble, words
