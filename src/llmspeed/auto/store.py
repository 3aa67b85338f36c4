"""Trials on disk: one SQLite file (`trials.db`) holds Optuna's study (the sampler's history) and llmspeed's own
`auto_trials` table (one JSON record per measured candidate: recipe, metrics, machine, status).

Resume (`--resume`): a record is written only when a trial's screening finished, and confirmation results are
written back into it, so a resumed run looks a candidate up by its key and never measures it again. Optuna trials
left RUNNING by a killed run are marked FAIL (they finished nothing).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
DB_NAME = "trials.db"
STUDY = "llmspeed-auto"


class TrialStore:
    """`auto_trials(key PRIMARY KEY, number, record JSON)` in `path` (":memory:" for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS auto_trials (key TEXT PRIMARY KEY, number INTEGER NOT NULL, "
                         "record TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS auto_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def records(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT record FROM auto_trials ORDER BY number").fetchall()
        return [json.loads(r[0]) for r in rows]

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT record FROM auto_trials WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, record: dict[str, Any]) -> None:
        """Insert or update (confirmation results land in the screened trial's record)."""
        self._db.execute("INSERT INTO auto_trials (key, number, record) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET record = excluded.record", (record["key"], record["number"], json.dumps(record)))
        self._db.commit()

    def next_number(self) -> int:
        row = self._db.execute("SELECT MAX(number) FROM auto_trials").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def meta(self, name: str) -> Any:
        row = self._db.execute("SELECT value FROM auto_meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, name: str, value: Any) -> None:
        self._db.execute("INSERT INTO auto_meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                         "SET value = excluded.value", (name, json.dumps(value)))
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def open_study(db_path: str | Path | None, seed: int, resume: bool) -> Any:
    """Optuna study, two objectives (objective score: maximize, screened accuracy-budget use: minimize), TPE; each
    trial carries the budget as its constraint (`Trial.set_constraint`). `db_path=None`: in memory."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # multivariate/group TPE (conditional space) are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True, group=True)
    storage = None if db_path is None else f"sqlite:///{Path(db_path).resolve()}"
    study = optuna.create_study(study_name=STUDY, storage=storage, sampler=sampler,
                                directions=["maximize", "minimize"], load_if_exists=resume)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:  # killed mid-trial: nothing of it was kept
            log.info("auto: trial %d was interrupted; marking it failed", t.number)
            study.tell(t.number, state=TrialState.FAIL)
    return study
