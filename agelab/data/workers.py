"""Worker processes that end with the process that started them.

A killed parent (SIGKILL, out of memory) cannot stop its workers, which would go on using CPU
and memory. Every pool and loader worker the lab starts runs ``die_with_parent`` first: the Linux
kernel then kills the worker when its parent dies. Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """Have the kernel SIGKILL this worker process when its parent dies (Linux only). The kernel
    watches the thread that started the worker (start workers from a thread that outlives them), and
    under the forkserver start method the fork server, not the process that asked for the worker."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if not parent.is_alive():  # it died before the request: no signal will come
        os.kill(os.getpid(), signal.SIGKILL)


def pool_size(wanted: int) -> int:
    """``wanted`` worker processes for a pool, or 1 (the work done in this process) when this process is
    a worker itself, as a sweep's job under joblib is: a pool in each job only oversubscribes the cores,
    and a process started the loky way cannot spawn children (they cannot set its "loky" start method)."""
    return 1 if multiprocessing.parent_process() is not None else wanted


def loader_worker_init(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: dies with its parent, and is seeded as Lightning
    seeds workers after ``seed_everything(workers=True)`` (which it does only for loaders without one)."""
    die_with_parent()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
