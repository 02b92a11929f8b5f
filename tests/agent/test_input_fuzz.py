"""Bad input never gives a traceback (issue 14): hostile inventory and config files, and a
daemon started where its port, store directory or store file is not usable.

Everything runs through the real CLI entry (``agent.cli.main.main``) in-process, except two
subprocess tests that prove the real exit status and stderr.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.cli.main import main
from agent.errors import AgentError
from agent.metrics.registry import Registry, serve_metrics
from store import StoreError, open_store

PASSWORD = "Bmc-pa55word"
INSTANCE = "4b3b9a57-0a53-4e5a-a1b7-1f4d0fb6f2c1"
ROOT = Path(__file__).resolve().parents[2]
CSV_HEADER = "name,bmc_address,bmc_port,bmc_username,bmc_password_file,cipher_suites\n"
DEEP = 10_000


class Site:
    """A config, a password file and a SQLite store in one directory; runs ``powersync``."""

    def __init__(self, directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir = directory
        self.capsys = capsys
        self.config = directory / "agent.toml"
        self.write_config('[store]\npath = "nodes.sqlite"\n')
        self.password_file = directory / "bmc.pw"
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def write_config(self, text: str) -> None:
        self.config.write_text(text)
        self.config.chmod(0o600)

    def __call__(self, *argv: str, config: Path | None = None) -> tuple[int, str, str]:
        status = main(["--config", str(config or self.config), *argv])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        assert PASSWORD not in out and PASSWORD not in err
        return status, out, err

    def fails(self, *argv: str, config: Path | None = None) -> str:
        """The one line a failed command printed (exit status 1, nothing on stdout)."""
        status, out, err = self(*argv, config=config)
        assert status == 1, (out, err)
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("powersync: ")
        return lines[0]

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def import_(self, path: Path, *extra: str) -> tuple[int, str, str]:
        return self("node", "import", str(path), "--password-file", str(self.password_file), *extra)

    def nodes(self) -> list[tuple[object, ...]]:
        """Every node's inventory and state: what a failed import must leave as it was."""
        store_file = self.dir / "nodes.sqlite"
        if not store_file.exists():
            return []
        with open_store(str(store_file)) as store:
            return [
                (n.uuid, n.name, n.bmc_address, n.bmc_port, n.instance_uuid, n.power_state)
                for n in store.list_nodes()
            ]


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    return Site(tmp_path, capsys)


def powersync_command() -> list[str]:
    script = Path(sys.executable).with_name("powersync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli.main"]


def run_real(site: Site, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*powersync_command(), "--config", str(site.config), *argv],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=site.dir, check=False,
    )  # fmt: skip


# ---- files nested 10,000 deep ------------------------------------------------------------------


def test_deep_toml_inventory_is_one_line(site: Site) -> None:
    path = site.file("deep.toml", "nodes = " + "[" * DEEP + "\n")
    line = site.fails("node", "import", str(path))
    assert line == f"powersync: {path}: line 1: invalid TOML: nested too deeply"
    assert site.nodes() == []


def test_deep_json_inventory_is_one_line(site: Site) -> None:
    path = site.file("deep.json", "[" * DEEP)
    line = site.fails("node", "import", str(path))
    assert line == f"powersync: {path}: line 1: invalid JSON: nested too deeply"


def test_deep_config_is_one_line(site: Site) -> None:
    site.write_config("[store]\n" + "x = " + "{a = " * DEEP + "\n")
    line = site.fails("node", "list")
    assert line == f"powersync: {site.config}: line 2: invalid TOML: nested too deeply"


def test_deep_toml_in_a_real_process(site: Site) -> None:
    path = site.file("deep.toml", "\n" + "nodes = " + "[" * DEEP + "\n")
    result = run_real(site, "node", "import", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"powersync: {path}: line 2: invalid TOML: nested too deeply\n"


# ---- integers: ASCII digits only ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "suites"), [("6²3", "3"), ("623", "³"), ("٦٢٣", "3"), ("623", "1\u0667")]
)
def test_csv_unicode_digits_are_a_row_error(site: Site, port: str, suites: str) -> None:
    path = site.file(
        "fleet.csv",
        CSV_HEADER + f"r1,127.0.0.1,{port},admin,bmc.pw,{suites}\n"
        "r2,127.0.0.1,6232,admin,bmc.pw,3\n",
    )
    status, out, err = site("node", "import", str(path))
    assert status == 1
    assert "1 added, 0 updated, 0 unchanged, 0 skipped, 1 failed" in out
    [line] = err.splitlines()
    key, value = ("bmc_port", port) if port != "623" else ("cipher_suites", suites)
    assert line.startswith(f"powersync: {path}: row 2 (r1): {key} ")
    assert repr(value) in line
    assert [node[1] for node in site.nodes()] == ["r2"]


def test_ironic_unicode_digit_port_is_a_row_error(site: Site) -> None:
    node = {
        "Name": "n1",
        "Driver Info": {"ipmi_address": "127.0.0.1", "ipmi_username": "admin", "ipmi_port": "٦٢٣"},
    }
    path = site.file("ironic.json", json.dumps([node]))
    status, _, err = site.import_(path)
    assert status == 1
    assert err == f"powersync: {path}: node #1 (n1): bmc_port must be an integer (got '٦٢٣')\n"


@pytest.mark.parametrize("command", ["add", "set"])
def test_cli_unicode_digits_are_refused(site: Site, command: str) -> None:
    site("node", "add", "n0", "--address", "127.0.0.1", "--username", "admin",
         "--password-file", str(site.password_file))  # fmt: skip
    add = ["add", "n1", "--address", "127.0.0.1", "--username", "admin",
           "--password-file", str(site.password_file)]  # fmt: skip
    target = add if command == "add" else ["set", "n0"]
    line = site.fails("node", *target, "--cipher-suites", "³")
    assert "--cipher-suites" in line or "cipher_suites" in line
    assert "'³'" in line
    # argparse's int() takes Arabic-Indic digits: ٦٢٣ would be port 623.
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(site.config), "node", *target, "--port", "٦٢٣"])
    assert exited.value.code == 2
    assert "--port: must be a whole number in ASCII digits" in site.capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["bmc", "--host", "127.0.0.1", "--port", "٦٢٣", "--username", "a", "power", "status"],
        ["sim", "--nodes", "٣"],
        ["demo", "--nodes", "٣"],
    ],
)
def test_other_commands_refuse_unicode_digits(site: Site, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(site.config), *argv])
    assert exited.value.code == 2
    assert "ASCII digits" in site.capsys.readouterr().err


def test_metrics_listen_with_unicode_digits_is_refused(site: Site) -> None:
    site.write_config('[store]\npath = "nodes.sqlite"\n[metrics]\nlisten = "127.0.0.1:٩١٠٠"\n')
    line = site.fails("node", "list")
    assert line.startswith(f"powersync: {site.config}: [metrics] listen must be HOST:PORT")


# ---- CSV shape ---------------------------------------------------------------------------------


def test_csv_cell_over_the_field_limit_is_one_line(site: Site) -> None:
    path = site.file(
        "big.csv", CSV_HEADER + "r1,127.0.0.1,623,admin,bmc.pw,3\n" + "r2," + "a" * 140_000 + "\n"
    )
    line = site.fails("node", "import", str(path))
    assert line == f"powersync: {path}: row 3: a cell is longer than 131072 characters"
    assert site.nodes() == []


def test_csv_duplicate_column_is_refused(site: Site) -> None:
    path = site.file("dup.csv", "name,bmc_address,bmc_username,name\nn1,127.0.0.1,admin,n2\n")
    line = site.fails("node", "import", str(path), "--password-file", str(site.password_file))
    assert line == f"powersync: {path}: row 1: column 'name' appears twice"
    assert site.nodes() == []


def test_control_characters_from_a_file_cannot_forge_lines(site: Site) -> None:
    path = site.file(
        "fleet.csv", CSV_HEADER + 'r1,127.0.0.1,623,admin,"pw\rpowersync: ok\u2028x",3\n'
    )
    status, _, err = site("node", "import", str(path))
    assert status == 1
    assert err.count("\n") == 1 and len(err.splitlines()) == 1, repr(err)
    assert "pw\\rpowersync: ok\\u2028x" in err


# ---- the same instance on two nodes ------------------------------------------------------------


def test_two_rows_with_one_instance_are_refused(site: Site) -> None:
    path = site.file(
        "fleet.csv",
        "name,bmc_address,bmc_username,instance_uuid\n"
        f"r1,127.0.0.1,admin,{INSTANCE}\nr2,127.0.0.2,admin,{INSTANCE.upper()}\n",
    )
    status, out, err = site.import_(path)
    assert status == 1 and "1 added" in out and "1 failed" in out
    assert err == (
        f"powersync: {path}: row 3 (r2): instance_uuid {INSTANCE} is already used by row 2 (r1)\n"
    )
    assert [node[1] for node in site.nodes()] == ["r1"]


def test_an_instance_already_in_the_store_is_refused(site: Site) -> None:
    add = ["--address", "127.0.0.1", "--username", "admin",
           "--password-file", str(site.password_file)]  # fmt: skip
    assert site("node", "add", "n1", *add, "--instance-uuid", INSTANCE)[0] == 0
    line = site.fails("node", "add", "n2", *add, "--instance-uuid", INSTANCE)
    assert line == f"powersync: node n2: instance {INSTANCE} is already on node 'n1'"
    assert site("node", "add", "n2", *add)[0] == 0
    line = site.fails("node", "set", "n2", "--instance-uuid", INSTANCE)
    assert line == f"powersync: node n2: instance {INSTANCE} is already on node 'n1'"
    path = site.file(
        "fleet.csv", f"name,bmc_address,bmc_username,instance_uuid\nn3,::1,u,{INSTANCE}\n"
    )
    status, _, err = site.import_(path)
    assert status == 1
    assert err == f"powersync: {path}: row 2 (n3): instance {INSTANCE} is already on node 'n1'\n"
    # Moving an instance is two steps, as in Ironic: clear it, then set it on the other node.
    assert site("node", "set", "n1", "--no-instance")[0] == 0
    assert site("node", "set", "n2", "--instance-uuid", INSTANCE)[0] == 0


# ---- encodings and line ends -------------------------------------------------------------------

TOML_INVENTORY = (
    '[[nodes]]\nname = "t1"\nbmc_address = "127.0.0.1"\nbmc_username = "admin"\n'
    'bmc_password_file = "bmc.pw"\n'
)
JSON_INVENTORY = json.dumps(
    [{"Name": "j1", "Driver Info": {"ipmi_address": "127.0.0.1", "ipmi_username": "admin"}}]
)
TEMPLATES = {
    "toml": TOML_INVENTORY,
    "csv": CSV_HEADER + "c1,127.0.0.1,623,admin,bmc.pw,17 3\n",
    "json": JSON_INVENTORY,
}


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_bom_and_crlf_are_read(site: Site, kind: str) -> None:
    text = "\ufeff" + TEMPLATES[kind].replace("\n", "\r\n")
    status, out, err = site.import_(site.file(f"nodes.{kind}", text.encode()))
    assert (status, err) == (0, ""), err
    assert "1 added" in out


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe[", "not UTF-8 text (byte 0)"),
        (b"name\x00", "line 1, column 5: contains a NUL character"),
        (b"", None),
    ],
)
def test_undecodable_nul_and_empty_files_are_one_line(
    site: Site, kind: str, content: bytes, problem: str | None
) -> None:
    path = site.file(f"nodes.{kind}", content)
    line = site.fails("node", "import", str(path))
    assert line.startswith(f"powersync: {path}: ")
    if problem is not None:
        assert line == f"powersync: {path}: {problem}"
    assert site.nodes() == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe[", "not UTF-8 text (byte 0)"),
        (b"[store]\r\n\x00", "line 2, column 1: contains a NUL character"),
    ],
)
def test_undecodable_and_nul_config_are_one_line(site: Site, content: bytes, problem: str) -> None:
    site.config.write_bytes(content)
    assert site.fails("node", "list") == f"powersync: {site.config}: {problem}"


def test_config_with_bom_and_crlf_is_read(site: Site) -> None:
    site.config.write_bytes(b'\xef\xbb\xbf[store]\r\npath = "other.sqlite"\r\n')
    assert "other.sqlite does not exist yet" in site.fails("node", "list")


# ---- the environment at start-up ---------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process's socket holds (listening, as a real service would)."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_metrics_port_in_use_is_an_agent_error(busy_port: int) -> None:
    async def serve() -> None:
        await serve_metrics(Registry(), "127.0.0.1", busy_port)

    with pytest.raises(AgentError) as raised:
        trio.run(serve)
    assert str(raised.value) == f"[metrics] listen 127.0.0.1:{busy_port}: address already in use"


def test_run_with_metrics_port_in_use_is_one_line(site: Site, busy_port: int) -> None:
    site.write_config(
        f'[store]\npath = "nodes.sqlite"\n[metrics]\nlisten = "127.0.0.1:{busy_port}"\n'
        '[logging]\nlevel = "error"\n'
    )
    line = site.fails("run")
    assert line == f"powersync: [metrics] listen 127.0.0.1:{busy_port}: address already in use"


def test_run_with_metrics_port_in_use_in_a_real_process(site: Site, busy_port: int) -> None:
    site.write_config(
        f'[store]\npath = "nodes.sqlite"\n[metrics]\nlisten = "127.0.0.1:{busy_port}"\n'
    )
    result = run_real(site, "run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"powersync: [metrics] listen 127.0.0.1:{busy_port}: address already in use"
    )


def test_a_group_of_agent_errors_is_unwrapped(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nursery wraps what its task raised, maybe twice; the CLI reports the cause."""
    from agent.cli import node

    def raises_a_group(_args: object) -> int:
        inner = BaseExceptionGroup("inner", [AgentError("the cause")])
        raise BaseExceptionGroup("outer", [inner])

    monkeypatch.setattr(node, "_cmd_list", raises_a_group)
    assert site.fails("node", "list") == "powersync: the cause"

    def raises_a_bug(_args: object) -> int:
        raise ExceptionGroup("outer", [AgentError("reported"), KeyError("a bug")])

    monkeypatch.setattr(node, "_cmd_list", raises_a_bug)
    with pytest.raises(ExceptionGroup):  # a bug keeps its traceback
        main(["--config", str(site.config), "node", "list"])


def test_store_directory_missing(site: Site) -> None:
    site.write_config('[store]\npath = "no/such/dir/nodes.sqlite"\n')
    line = site.fails("node", "add", "n1", "--address", "127.0.0.1", "--username", "admin",
                      "--password-file", str(site.password_file))  # fmt: skip
    missing = site.dir / "no/such/dir"
    assert line == (
        f"powersync: cannot create store file {missing}/nodes.sqlite: No such file or directory"
    )
    site.write_config('[store]\nbackend = "json"\npath = "no/such/dir/nodes.json"\n')
    assert site.fails("run") == (
        f"powersync: cannot open store lock file {missing}/nodes.json.lock: "
        "No such file or directory"
    )


def test_store_directory_unwritable(site: Site) -> None:
    if os.geteuid() == 0:  # root writes anywhere but in sysfs (CI runs as root)
        locked = Path("/sys")
    else:
        locked = site.dir / "locked"
        locked.mkdir(mode=0o500)
    site.write_config(f'[store]\npath = "{locked}/nodes.sqlite"\n')
    line = site.fails("run")
    assert line == (f"powersync: cannot create store file {locked}/nodes.sqlite: Permission denied")


@pytest.mark.parametrize("backend", ["sqlite", "json"])
def test_store_file_that_is_not_a_store(site: Site, backend: str) -> None:
    site.file("nodes.db", "hello, this is a text file\n").chmod(0o600)
    site.write_config(f'[store]\nbackend = "{backend}"\npath = "nodes.db"\n')
    line = site.fails("run")
    assert line.startswith(f"powersync: store {site.dir}/nodes.db is damaged")
    assert line.endswith("restore it from a backup or move it aside")


def test_store_file_locked_by_another_process(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import store.sqlite

    monkeypatch.setattr(store.sqlite, "BUSY_TIMEOUT", 0.2)
    site("node", "add", "n1", "--address", "127.0.0.1", "--username", "admin",
         "--password-file", str(site.password_file))  # fmt: skip
    holder = sqlite3.connect(site.dir / "nodes.sqlite", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE nodes SET name = name")
        line = site.fails("run")
    finally:
        holder.close()
    store_file = site.dir / "nodes.sqlite"
    assert line.startswith(f"powersync: store {store_file} is busy (another process holds it")


# ---- Hypothesis: arbitrary bytes ---------------------------------------------------------------

HOSTILE = [
    "\x00", "\ufeff", "\r", "\r\n", "²", "٣", "\udcff", "\xff", '"', "'", ",", ";", "[", "{",
    "[" * 3000, "{a=" * 3000, ".a" * 3000, "a" * 140_000, "\n" * 3, " = ", "[[nodes]]", INSTANCE,
]  # fmt: skip


def spliced(template: str) -> st.SearchStrategy[bytes]:
    """A valid file with hostile text spliced in (bytes, so undecodable ones occur too)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = template.encode()
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            piece = draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6)))
            data = data[:at] + piece.encode("utf-8", "surrogatepass") + data[at:]
        return data

    return build()


def file_bytes(template: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), spliced(template))


@pytest.fixture(scope="module")
def fuzz_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def summary_counts(out: str) -> dict[str, int] | None:
    """The counts of an import's summary line, or None when it printed none."""
    if ": " not in out:
        return None
    words = out.strip().rsplit(": ", 1)[1].split(", ")
    return {word.split(" ", 1)[1]: int(word.split(" ", 1)[0]) for word in words}


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
@FUZZ
@given(data=st.data())
def test_any_bytes_as_inventory(
    fuzz_dir: Path, capsys: pytest.CaptureFixture[str], kind: str, data: st.DataObject
) -> None:
    site = Site(fuzz_dir, capsys)
    content = data.draw(file_bytes(TEMPLATES[kind]), label="content")
    path = site.file(f"nodes.{kind}", content)
    before = site.nodes()
    status, out, err = site.import_(path)
    after = site.nodes()
    for line in err.splitlines():
        assert line.startswith("powersync: "), err
    counts = summary_counts(out)
    event("refused" if counts is None else "added" if counts["added"] else "summary")
    if counts is None:  # the file as a whole was refused: one line, nothing written
        assert status == 1 and len(err.splitlines()) == 1, (out, err)
        assert after == before
    else:
        assert status == (1 if counts["failed"] else 0)
        assert len(after) == len(before) + counts["added"]
        assert {node[0] for node in before} <= {node[0] for node in after}


@FUZZ
@given(
    content=file_bytes(
        '[store]\npath = "nodes.sqlite"\n[conductor]\nsync_power_state_workers = 4\n'
    )
)
def test_any_bytes_as_config(
    fuzz_dir: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    site = Site(fuzz_dir, capsys)
    site.config.write_bytes(content)
    status, out, err = site("node", "list", "--json")
    event(f"exit {status}")
    if status == 0:
        assert err == ""
        assert isinstance(json.loads(out), list)
    else:
        assert status == 1 and out == ""
        [line] = err.splitlines()
        assert line.startswith("powersync: ")


def test_a_store_failing_during_an_import_stops_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy or full store fails every later row too: one line, not one wait per row."""
    from store.sql import SqlStore

    real_upsert = SqlStore.upsert_node
    calls: list[str] = []

    def upsert_then_fail(self: SqlStore, **fields: object) -> object:
        calls.append(str(fields["name"]))
        if len(calls) == 2:
            raise StoreError(f"store {self.path}: disk I/O error")
        return real_upsert(self, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(SqlStore, "upsert_node", upsert_then_fail)
    rows = "".join(f"r{i},127.0.0.1,{6230 + i},admin,bmc.pw,3\n" for i in range(1, 5))
    path = site.file("fleet.csv", CSV_HEADER + rows)
    line = site.fails("node", "import", str(path))
    assert line.startswith(f"powersync: {path}: row 3 (r2): store ")
    assert "disk I/O error; import stopped after writing 1 node(s)" in line
    assert calls == ["r1", "r2"]
    assert [node[1] for node in site.nodes()] == ["r1"]


def test_static_nodes_with_one_instance_are_refused(site: Site) -> None:
    node = (
        '[[nodes]]\nname = "{}"\nbmc_address = "127.0.0.1"\nbmc_username = "admin"\n'
        f'bmc_password_file = "bmc.pw"\ninstance_uuid = "{INSTANCE}"\n'
    )
    site.write_config('[store]\npath = "nodes.sqlite"\n' + node.format("a") + node.format("b"))
    assert site.fails("run") == (
        f"powersync: {site.config}: [[nodes]] #2 (b): instance_uuid {INSTANCE} "
        "is also used by [[nodes]] #1"
    )


def test_values_nested_without_brackets_are_one_line(site: Site) -> None:
    """Dotted keys nest tables with no bracket for the parser to recurse on; showing such a
    value in a message (repr) would recurse instead."""
    site.write_config("[conductor]\nsync_power_state_interval" + ".a" * DEEP + " = 1\n")
    assert site.fails("node", "list") == f"powersync: {site.config}: nested deeper than 32 levels"
    site.write_config('[store]\npath = "nodes.sqlite"\n')
    level = "[" * 900 + "]" * 900
    info = '{"ipmi_address": "::1", "ipmi_priv_level": ' + level + "}"
    node = '{"Name": "x", "Driver Info": ' + info + "}"
    path = site.file("ironic.json", f"[{node}]")
    assert site.fails("node", "import", str(path)) == (
        f"powersync: {path}: nested deeper than 32 levels"
    )
