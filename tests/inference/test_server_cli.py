"""``oasst inference keys``: a key is printed once, works, and only its hash is stored."""

from __future__ import annotations

from typer.testing import CliRunner

from oasst.cli.main import app
from oasst.inference.server.auth import hash_key
from oasst.inference.server.db import Database
from oasst.inference.server.services.keys import list_keys, verify_key

runner = CliRunner()


def test_keys_create_and_list(inf_db: Database, database_url: str) -> None:
    result = runner.invoke(
        app,
        [
            "inference",
            "keys",
            "create",
            "--kind",
            "worker",
            "--name",
            "gpu-1",
            "--database-url",
            database_url,
        ],
    )
    assert result.exit_code == 0, result.output
    key = next(line for line in result.stdout.splitlines() if line.startswith("oiw_"))
    row = inf_db.read(lambda s: verify_key(s, key, kind="worker"))
    assert row.name == "gpu-1" and row.key_hash == hash_key(key)
    assert [r.kind for r in inf_db.read(list_keys)] == ["worker"]

    listed = runner.invoke(app, ["inference", "keys", "list", "--database-url", database_url])
    assert listed.exit_code == 0 and "gpu-1" in listed.stdout and key not in listed.stdout
    bad = runner.invoke(app, ["inference", "keys", "create", "--kind", "root", "--name", "x"])
    assert bad.exit_code == 1 and "Unknown kind" in bad.output
