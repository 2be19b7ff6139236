"""Data-parallel runs: which process this is, and the few collectives the runner needs.

``torchrun`` and ``accelerate launch`` start one process per rank with ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in its environment. Each rank evaluates its share of the pending samples into its own
record shard; rank 0 merges the shards and scores (see :mod:`medmim_eval.runner`).

The ranks only exchange small status objects, at two points of a run, through torch.distributed
with the gloo backend, also on GPU hosts: gloo carries Python objects over TCP without touching a
GPU, so a rank's adapter is free to place its model with ``cuda:$LOCAL_RANK`` or
``device_map="auto"``. A collective that waits longer than ``$MEDMIM_DIST_TIMEOUT`` seconds (a rank
that hangs), or whose peer died, raises a :class:`DistributedError` instead of waiting forever.

A single-process run (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never imports torch.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from medmim_eval.errors import MedmimError

TIMEOUT_ENV = "MEDMIM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 6 * 3600  # a rank may wait while the slowest rank finishes its share


class DistributedError(MedmimError):
    """Another rank failed, died or hung; the message names the rank and what it reported."""


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a launched run (``world_size == 1`` for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise MedmimError(f"${name}={text!r} is not an integer; it is set by torchrun / accelerate launch") from None


def rank_info(environ: Mapping[str, str] = os.environ) -> RankInfo:
    """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` as torchrun and accelerate launch set them."""
    world = _env_int(environ, "WORLD_SIZE", 1)
    if world <= 1:
        return RankInfo()
    rank = _env_int(environ, "RANK", -1)
    if not 0 <= rank < world:
        raise MedmimError(f"$WORLD_SIZE={world} but $RANK is {environ.get('RANK')!r}; launch data-parallel runs "
                          "with torchrun or accelerate launch, or unset WORLD_SIZE for a single process")
    return RankInfo(rank=rank, world_size=world, local_rank=_env_int(environ, "LOCAL_RANK", 0))


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def die_with_launcher() -> None:
    """Ask Linux to SIGKILL this rank when its launcher dies.

    torchrun starts each rank in a session of its own, so a launcher killed with SIGKILL (which it
    cannot forward) would leave its ranks running: they would keep appending to their shards while
    the user resumes the run. With the parent-death signal they die with it. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the signal was armed
        os._exit(1)


class RankGroup:
    """The ranks of one run. With one process every collective is trivial and torch stays unimported."""

    def __init__(self, info: RankInfo | None = None, timeout_s: float | None = None) -> None:
        self.info = info or rank_info()
        self.timeout_s = timeout_s if timeout_s is not None else float(
            os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
        self._dist: Any = None
        self._group: Any = None
        self._owned = False
        if self.info.distributed:
            self._connect()

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def distributed(self) -> bool:
        return self.info.distributed

    def _connect(self) -> None:
        die_with_launcher()
        try:
            import torch.distributed as dist
        except ImportError:
            raise MedmimError(f"WORLD_SIZE={self.world_size}: a data-parallel run needs torch "
                              "(pip install torch, then pip install 'medmim-eval[hf]')") from None
        if not dist.is_available():
            raise MedmimError("this torch build has no torch.distributed; a data-parallel run needs it")
        missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
        if missing and not dist.is_initialized():
            raise MedmimError(f"WORLD_SIZE={self.world_size} but ${' and $'.join(missing)} unset; launch with "
                              "torchrun or accelerate launch, or unset WORLD_SIZE for a single process")
        timeout = timedelta(seconds=self.timeout_s)
        self._dist = dist
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", rank=self.rank, world_size=self.world_size, timeout=timeout)
            self._owned = True
        elif dist.get_backend() != "gloo":
            # Someone (an adapter, accelerate) already set up NCCL: keep status traffic off the GPUs.
            self._group = dist.new_group(backend="gloo", timeout=timeout)

    def gather(self, value: Any, stage: str) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank.

        Raises:
            DistributedError: when a peer died or did not answer within the timeout.
        """
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        try:
            self._dist.all_gather_object(out, value, group=self._group)
        except RuntimeError as exc:  # gloo timeouts and closed connections (DistBackendError included)
            raise DistributedError(
                f"rank {self.rank}: the other ranks did not answer while {stage} ({_describe(exc)}); a rank "
                f"died or hung, see its log. Rerun the same command to resume; ${TIMEOUT_ENV} (now "
                f"{self.timeout_s:g} s) sets how long ranks wait for each other") from None
        return out

    def check(self, stage: str, error: BaseException | None) -> None:
        """Raise on every rank when any rank failed at ``stage``; the failing rank re-raises its own error."""
        reports = self.gather(None if error is None else _describe(error), stage)
        if error is not None:
            raise error
        failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
        if failed:
            rank, text = failed[0]
            raise DistributedError(f"rank {rank} failed while {stage}: {text}")

    def close(self) -> None:
        if self._owned and self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owned = False


def failure_message(exc: BaseException) -> str:
    """One line for an exception, as another rank reports it."""
    return _describe(exc)
