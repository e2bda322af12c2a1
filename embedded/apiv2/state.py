"""What the API server keeps across a restart (``--state-dir``): jobs, idempotency keys and the
asset index, in SQLite (stdlib ``sqlite3``, ``<state-dir>/state.sqlite3``), next to the asset files.

Owns the schema and ``State``: one row per job, key and asset, written through on every change
(from the server's event loop only), read back at start. What a restart means for a job is the
``Jobs``' rule (``Jobs.restore``): a finished job and its outputs are readable as before; one that
was queued or running is ``failed`` with ``server_restarted``.

A write that fails (a full or read-only disk) never fails what the server is doing: the server's
memory stays the authority while it runs, the failure is logged (once, and again when writes work
again) and ``error`` says it (``/health`` shows it). What was not written is lost at a restart.
Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

log = logging.getLogger("embedded.apiv2")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, job_id TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assets (id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


class State:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        #: why the last write failed (None: writes work)
        self.error: str | None = None

    def _write(self, sql: str, values: tuple) -> None:
        try:
            self.db.execute(sql, values)
        except (sqlite3.Error, OSError) as exc:
            if self.error is None:
                log.error("embedded.apiv2: the state (--state-dir) cannot be written (%s); the server goes on from "
                          "memory, and what is not written is lost if it restarts", exc)
            self.error = f"the state cannot be written: {exc}"
            return
        if self.error is not None:
            log.warning("embedded.apiv2: the state can be written again")
            self.error = None

    def save_job(self, job_id: str, created_at: float, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (job_id, created_at, json.dumps(record)))

    def delete_job(self, job_id: str) -> None:
        self._write("DELETE FROM jobs WHERE id = ?", (job_id,))

    def jobs(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self.db.execute("SELECT record FROM jobs ORDER BY created_at")]

    def save_key(self, key: str, job_id: str | None, at: float) -> None:
        self._write("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?)", (key, job_id, at))

    def delete_key(self, key: str) -> None:
        self._write("DELETE FROM idempotency_keys WHERE key = ?", (key,))

    def keys(self) -> dict[str, tuple[str | None, float]]:
        return {k: (j, at) for k, j, at in self.db.execute("SELECT key, job_id, at FROM idempotency_keys")}

    def save_asset(self, asset_id: str, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO assets VALUES (?, ?)", (asset_id, json.dumps(record)))

    def delete_asset(self, asset_id: str) -> None:
        self._write("DELETE FROM assets WHERE id = ?", (asset_id,))

    def assets(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self.db.execute("SELECT record FROM assets")]

    def close(self) -> None:
        self.db.close()
