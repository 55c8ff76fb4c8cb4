"""The checkpoint folder of a training is one run's: a lock while it trains, the checkpoints of a run
before it set aside, and that run ended when its process was killed before it could end it."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from agelab.errors import ConfigError

RUN_FILE = ".mlflow_run_id"  # the MLflow run the folder's checkpoints belong to
LOCK_FILE = ".training.lock"
log = logging.getLogger(__name__)


def lock_checkpoint_folder(folder: Path):
    """An acquired lock on the checkpoint folder, held for the whole training: a second command started
    in the same folder (the same ``hydra.run.dir``) would share its ``last.ckpt``; it stops with one
    line instead. The lock goes with the process however it ends (a SIGKILL too). None in the other
    processes of a DDP run, which work in their rank 0's folder."""
    from filelock import FileLock, Timeout
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another training is running in {folder}; wait for it to end, or start this one "
                          "in another folder (hydra.run.dir)") from None
    return lock


def release_checkpoint_folder(lock, folder: Path) -> None:
    """Let the folder go; a folder the command left empty (it stopped on a bad setting before its run
    opened) is removed with its lock file."""
    if lock is None:
        return
    if [p.name for p in folder.iterdir()] == [LOCK_FILE]:
        Path(lock.lock_file).unlink(missing_ok=True)  # (while still held: no other command has it open)
        lock.release()
        folder.rmdir()
    else:
        lock.release()


def set_aside_old_checkpoints(folder: Path) -> dict[Path, Path]:
    """A new run in a folder that holds another run's checkpoints (``auto_resume=false`` with a fixed
    ``hydra.run.dir``): those move into ``<folder>/replaced-<time>-<random>/``, so the new run's best and
    last files are its own and nothing is overwritten. Returns {old path: new path}, resolved."""
    from pytorch_lightning.utilities import rank_zero_only

    old = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not old or rank_zero_only.rank != 0:
        return {}
    aside = Path(tempfile.mkdtemp(prefix=f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-", dir=folder))
    for path in old:
        path.rename(aside / path.name)
    log.warning("a new run in %s: the %d checkpoint(s) of the run before it moved to %s", folder, len(old), aside)
    return {path.resolve(): (aside / path.name).resolve() for path in old}


def end_stranded_run(folder: Path, client, run_id: str) -> None:
    """Record ``run_id`` as the folder's run. The run recorded before it, when still RUNNING, lost its
    process (a SIGKILL before its first checkpoint, or a new run started over it with
    ``auto_resume=false``): it is marked KILLED, so it is not left running in the UI and the report."""
    from mlflow.exceptions import MlflowException

    path = folder / RUN_FILE
    before = path.read_text().strip() if path.is_file() else ""
    if before and before != run_id:
        try:
            stranded = client.get_run(before).info.status == "RUNNING"
        except MlflowException:  # deleted, or another store
            stranded = False
        if stranded:
            client.set_tag(before, "agelab.ended", f"its process stopped without ending it; run {run_id} "
                                                   "started in its folder")
            client.set_terminated(before, "KILLED")
            log.warning("MLflow run %s of %s stopped without ending (killed?): marked KILLED", before, folder)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
