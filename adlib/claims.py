"""Claim files: one process at a time trains a run, also across machines sharing a filesystem.

A run folder of the results store (:mod:`adlib.results`) holds ``claim.json`` while a process
trains or tests that run: who holds it (host, process id, Slurm task, start time) and, in the
file's modification time, a heartbeat that a thread of the holder refreshes every
:data:`HEARTBEAT_S` seconds. :func:`adlib.results.run_job` takes the claim after the run folder's
``flock`` (:func:`adlib.io.file_lock`), so the notebooks, ``adlib train`` and ``adlib grid`` all
claim their runs, and ``adlib grid list`` can tell a run that is being trained from one that is
not.

Why a file besides the ``flock``: ``flock`` is exact on one machine (the lock goes with the
process) but not on every shared filesystem (NFS without a lock manager, Lustre mounted without
``flock`` or with ``localflock``: locks that one node does not see from another). The claim needs
nothing but atomic creation: it is written to a temporary file and ``os.link``-ed to
``claim.json``, which fails when the name exists (atomic on local filesystems and on NFS, unlike
``O_EXCL`` on old NFS clients), so two processes never both create it, and the file is complete
from the moment it appears.

A claim is **stale**, and is broken by the next process that wants the run, when

- its holder ran on this host and that process is gone (``os.kill(pid, 0)`` fails): a killed
  run, found at once;
- its holder was this Slurm task in an earlier life (same ``SLURM_ARRAY_JOB_ID``/``TASK_ID`` or
  ``SLURM_JOB_ID``): a task that was preempted and requeued takes its run back at once;
- its heartbeat is older than :data:`STALE_S` seconds (``$ADLIB_CLAIM_STALE_S``): a holder on
  another machine that died. The age compares the file's modification time (set by the file
  server on most shared filesystems) with this machine's clock: clocks must agree to within
  much less than :data:`STALE_S` (NTP does that).

Breaking is serialised by a second file (``claim.json.break``, created the same way; a breaker
that dies leaves it, and it is removed after :data:`BREAK_STALE_S` seconds): the breaker reads
the claim again under it and removes it only if it is still the stale one it judged, so a fresh
claim is never removed. A claim is re-entrant in the thread that holds it (``adlib grid`` claims
a run, then :func:`adlib.results.run_job` claims it again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLAIM = "claim.json"
#: seconds between two heartbeats of a held claim (the claim file's modification time)
HEARTBEAT_S = 30.0
#: a claim whose heartbeat is older than this many seconds is stale (``$ADLIB_CLAIM_STALE_S``)
STALE_S = 600.0
ENV_STALE = "ADLIB_CLAIM_STALE_S"
#: a breaker's guard file older than this is left over from a breaker that died
BREAK_STALE_S = 60.0

#: claims held by this process: run folder -> (thread id, depth, token, heartbeat stop event)
_held: dict[str, list[Any]] = {}
_held_lock = threading.Lock()


class Claimed(RuntimeError):
    """The run is claimed by a live holder (:func:`claim` with ``wait=False``)."""

    def __init__(self, run_dir: Path, holder: dict[str, Any]):
        self.run_dir, self.holder = run_dir, holder
        super().__init__(f"{run_dir} is being run by {describe(holder)}")


def stale_after() -> float:
    """:data:`STALE_S`, or ``$ADLIB_CLAIM_STALE_S`` when set."""
    raw = os.environ.get(ENV_STALE, "").strip()
    if not raw:
        return STALE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${ENV_STALE}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"${ENV_STALE}={raw!r}: expected a positive number of seconds")
    return value


def slurm_task() -> str:
    """This process's Slurm task (``<array job>_<array task>`` or ``<job>``), empty outside Slurm."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID", "")


def describe(holder: dict[str, Any]) -> str:
    """``host pid N (Slurm task T), since <time>, heartbeat A s ago``."""
    task = f" (Slurm task {holder['task']})" if holder.get("task") else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (
        f"{holder.get('host')} pid {holder.get('pid')}{task}, since {since}, heartbeat {holder.get('age', 0):.0f} s ago"
    )


def read(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The claim of ``run_dir`` with its heartbeat ``age`` in seconds, or None when there is none.
    A claim file that cannot be read as JSON (not written by this module) counts as held by an
    unknown holder until its age makes it stale."""
    path = Path(run_dir) / CLAIM
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except ValueError:
        info = {"host": "?", "pid": None, "task": "", "started": 0, "token": None}
    return {**info, "age": max(0.0, age)}


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):  # alive but not ours / unreadable: assume alive
        return True
    try:  # Linux: the state field of /proc/<pid>/stat follows the command name in parentheses
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def staleness(holder: dict[str, Any]) -> str | None:
    """Why the claim ``holder`` (:func:`read`) is stale, or None when its holder is taken to be alive."""
    limit = stale_after()
    if holder.get("age", 0.0) > limit:
        return f"no heartbeat for {holder['age']:.0f} s (> {limit:g} s)"
    host = socket.gethostname()
    if holder.get("host") == host and holder.get("pid") is not None and not _pid_alive(holder["pid"]):
        return f"process {holder['pid']} on {host} is gone"
    task = slurm_task()
    if task and holder.get("task") == task and (holder.get("host"), holder.get("pid")) != (host, os.getpid()):
        return f"an earlier life of Slurm task {task} (requeued)"
    return None


def live_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The claim of ``run_dir`` when its holder is alive (not stale), else None."""
    holder = read(run_dir)
    if holder is None or staleness(holder) is not None:
        return None
    return holder


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create ``path`` holding ``info``, atomically and only if it does not exist."""
    tmp = path.with_name(f".{path.name}.{info['token']}.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _break(path: Path, judged: dict[str, Any], why: str) -> None:
    """Remove the stale claim ``judged`` at ``path`` unless it changed meanwhile (under a guard)."""
    guard = path.with_name(path.name + ".break")
    me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
    if not _create(guard, me):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > BREAK_STALE_S:
                guard.unlink()  # left by a breaker that died
        return  # another process is breaking it: try again later
    try:
        now = read(path.parent)
        if now is not None and now.get("token") == judged.get("token") and staleness(now) is not None:
            log.warning("claim %s is stale (%s): %s; taking the run over", path, why, describe(now))
            path.unlink()
    finally:
        guard.unlink(missing_ok=True)


def _heartbeat(path: Path, token: str, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        now = read(path.parent)
        if now is None or now.get("token") != token:
            log.warning("claim %s was taken over by another process", path)
            return
        with contextlib.suppress(OSError):
            os.utime(path)


@contextlib.contextmanager
def claim(run_dir: str | os.PathLike, *, wait: bool = True, poll: float = 1.0):
    """Hold ``run_dir``'s claim for the ``with`` block (see the module docstring).

    A live claim of another process is waited for (``wait``; polled every ``poll`` seconds) or
    raises :class:`Claimed`; a stale one is broken. Re-entrant in the holding thread. The claim
    file is removed at the end (unless another process took it over meanwhile)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    key = str(run_dir.resolve())
    with _held_lock:
        mine = _held.get(key)
        if mine is not None and mine[0] == threading.get_ident():
            mine[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                _held[key][1] -= 1
        return
    token = uuid.uuid4().hex
    info = {"host": socket.gethostname(), "pid": os.getpid(), "task": slurm_task(), "started": time.time()}
    info["token"] = token
    waited = False
    while not _create(path, info):
        holder = read(run_dir)
        if holder is None:
            continue  # released meanwhile
        why = staleness(holder)
        if why is not None:
            _break(path, holder, why)
            time.sleep(0.05)  # another process may be breaking it (its guard): let it finish
            continue
        if not wait:
            raise Claimed(run_dir, holder)
        if not waited:
            log.info("%s is being run by %s: waiting", run_dir, describe(holder))
            waited = True
        time.sleep(poll)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, token, stop, HEARTBEAT_S), daemon=True)
    beat.start()
    with _held_lock:
        _held[key] = [threading.get_ident(), 1, token, stop]
    try:
        yield
    finally:
        with _held_lock:
            _held.pop(key, None)
        stop.set()
        now = read(run_dir)
        if now is not None and now.get("token") == token:
            path.unlink(missing_ok=True)


__all__ = ["CLAIM", "Claimed", "claim", "live_holder", "read", "staleness", "describe", "slurm_task"]
