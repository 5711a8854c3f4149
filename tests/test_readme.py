"""README's "Using it" section, run as a newcomer types it: every command of every block, in order.

The section is read from README.md itself, so the README cannot drift from the product. The only
changes made to the commands are the two ports (the city's broker and the API), moved to free
ones so the story can run beside other tests; everything else — files, flags, background jobs
(`&`) and the expected exit codes stated in comments ("exit code 1") — is taken as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "## Using it"
BROKER_PORT = "1884"
API_PORT = "8000"
STORY_TIMEOUT_S = 900


def section(text: str, heading: str = SECTION) -> str:
    """The text of one `## ` section, without its heading."""
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def commands(markdown: str) -> list[str]:
    """The shell commands of the ```sh blocks, backslash continuations joined, in order."""
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            pending = ""
            if line and not line.startswith("#"):
                found.append(line)
    return found


def expected_exit(command: str) -> int:
    """0, unless the command's comment says otherwise ("exit code 1: ...")."""
    m = re.search(r"#.*\bexit code (\d+)", command)
    return int(m.group(1)) if m else 0


def script(lines: list[str]) -> str:
    """One bash script: each command in turn, its exit code checked; background jobs ended at exit."""
    parts = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT"]
    for number, line in enumerate(lines, start=1):
        shown = shlex.quote(f"[{number}] {line}")
        parts.append(f"printf '%s\\n' {shown}")
        parts.append(line)
        if re.sub(r"\s+#.*$", "", line).rstrip().endswith("&"):
            continue  # a background job (the broker, the simulated city, the server)
        want = expected_exit(line)
        parts.append(f"rc=$?; if [ $rc -ne {want} ]; then printf 'README command %s exited %s, expected {want}\\n' "
                     f"{number} $rc >&2; exit 100; fi")
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def newcomer_dir() -> Iterator[Path]:
    """A fresh working folder holding what a clone has at its top: the venv, examples/, policies/.

    World-traversable: Mosquitto, started as root, reads the generated files as its own user."""
    work = Path(tempfile.mkdtemp(prefix="cityward-readme-", dir="/tmp"))
    work.chmod(0o755)
    for name in (".venv", "examples", "policies"):
        (work / name).symlink_to(REPO / name)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_readme_section_is_parsed_as_written() -> None:
    text = ("intro\n## Using it\n```sh\n# a comment\na --x \\\n    --y  # note\nb &\n```\nprose\n"
            "## Next\n```sh\nc\n```\n")
    assert commands(section(text)) == ["a --x --y  # note", "b &"]
    assert expected_exit("x --fail-on critical   # exit code 1: findings") == 1
    assert expected_exit("x # fine") == 0


def test_every_readme_command_calls_the_project_cli() -> None:
    """A newcomer copies lines: each one that runs cityward names `.venv/bin/cityward`."""
    lines = commands(section(README.read_text(encoding="utf-8")))
    assert len(lines) > 40
    for line in lines:
        words = re.sub(r"#.*$", "", line).split()
        called = [w for w in words if w.endswith("cityward") and not w.startswith(("http", "--"))]
        assert all(w == ".venv/bin/cityward" for w in called), line


@pytest.mark.slow
@pytest.mark.xdist_group("default-sim-addresses")
def test_readme_story_runs_in_order(newcomer_dir: Path) -> None:
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if mosquitto is None:
        pytest.fail("Debian's mosquitto is required for README's device story (.ci/run installs it)", pytrace=False)
    broker_port, api_port = str(_free_port()), str(_free_port())
    lines = [line.replace(BROKER_PORT, broker_port).replace(f"localhost:{API_PORT}", f"localhost:{api_port}")
             for line in commands(section(README.read_text(encoding="utf-8")))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWARD_")}
    env.update(CITYWARD_API_PORT=api_port, PATH=f"{Path(mosquitto).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               COLUMNS="200", PYTHONUNBUFFERED="1")
    (newcomer_dir / "story.sh").write_text(script(lines), encoding="utf-8")
    proc = subprocess.Popen(["bash", "story.sh"], cwd=newcomer_dir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=STORY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"README story still running after {STORY_TIMEOUT_S} s:\n{output[-6000:]}", pytrace=False)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    sim_log = newcomer_dir / "sim.log"
    if proc.returncode != 0:
        tail = sim_log.read_text()[-1500:] if sim_log.exists() else ""
        pytest.fail(f"README story failed (exit {proc.returncode}):\n{output[-8000:]}\nsim.log: {tail}", pytrace=False)
    assert f"[{len(lines)}]" in output  # the last command ran
    assert "Traceback" not in output
    assert "[green]" not in output and "[/]" not in output  # markup rendered or stripped, never raw
    # The story did what it says: devices came online, the rollouts finished, the server answered.
    assert re.search(r"devices online\s*│?\s*(\d+)", output)
    assert '"status":"ok"' in output.replace(" ", "") or "ok" in output.splitlines()[-1]
