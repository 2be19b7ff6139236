"""Where cells run: ``local`` (a process pool bounded by this machine's GPUs and cores), ``ray[:ADDRESS]``
(Ray tasks with ``num_gpus``/``num_cpus``) or ``slurm[,key=value...]`` (submitit jobs or job arrays).

Every executor runs :func:`medmim_eval.sweep.cell_job.run_cell` for a cell and hands back a
:class:`Handle` the sweep polls; a cell that fails (or whose worker dies) becomes a failed outcome,
never an exception that stops the other cells.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medmim_eval.errors import MedmimError
from medmim_eval.sweep.cell_job import CellJob, CellOutcome, run_cell
from medmim_eval.sweep.resources import Resources

SWEEP_HINT = "pip install 'medmim-eval[sweep]'"


@dataclass
class ExecutorSpec:
    """``--executor`` parsed: ``NAME[:ADDRESS][,key=value...]``."""

    name: str
    address: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "ExecutorSpec":
        head, *rest = [p.strip() for p in text.split(",")]
        name, _, address = head.partition(":")
        options = {}
        for piece in rest:
            key, sep, value = piece.partition("=")
            if not sep or not key:
                raise MedmimError(f"--executor {text!r}: '{piece}' is not key=value "
                                  "(e.g. slurm,partition=gpu,time=120 or ray:auto or local,gpus=2)")
            options[key.strip()] = value.strip()
        if name not in EXECUTORS:
            raise MedmimError(f"--executor {text!r}: unknown executor '{name}'; use local, ray[:ADDRESS] or "
                              "slurm[,partition=P,...]")
        if address and name != "ray":
            raise MedmimError(f"--executor {text!r}: only ray takes an address (ray:HOST:PORT or ray:auto)")
        return cls(name, address or None, options)

    def int_option(self, key: str, default: int | None) -> int | None:
        raw = self.options.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise MedmimError(f"--executor {self.name}: {key}={raw!r} must be a whole number") from None

    def __str__(self) -> str:
        head = f"{self.name}:{self.address}" if self.address else self.name
        return ",".join([head, *(f"{k}={v}" for k, v in self.options.items())])


class Handle(Protocol):
    job: CellJob

    def done(self) -> bool: ...
    def outcome(self) -> CellOutcome: ...
    def cancel(self) -> None: ...


def _failed(job: CellJob, what: str) -> CellOutcome:
    return CellOutcome(job.key, -1, 0.0, "", what)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


class Executor:
    """Base: ``start`` sees every cell's resources (and says which can never be placed), ``submit`` queues one."""

    name = "base"

    def start(self, needs: dict[str, Resources]) -> tuple[dict[str, Resources], dict[str, str], list[str]]:
        """(resources each cell will ask for, cells that can never be placed with why, notes for the user)."""
        return needs, {}, []

    def submit_all(self, jobs: list[tuple[CellJob, Resources]]) -> list[Handle]:
        return [self.submit(job, res) for job, res in jobs]

    def submit(self, job: CellJob, resources: Resources) -> Handle:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _fit_gpus(needs: dict[str, Resources], gpus_total: int, per_node: int, where: str
              ) -> tuple[dict[str, Resources], dict[str, str], list[str]]:
    """With no GPU at all every cell runs on CPUs (as ``run`` would); a cell wanting more than a node has fails."""
    if gpus_total == 0:
        wanting = [k for k, r in needs.items() if r.gpus]
        notes = [f"no GPU in {where}: {len(wanting)} GPU cell(s) run on CPUs, as `medmim-eval run` would"] if wanting else []
        return {k: Resources(0, r.cpus) for k, r in needs.items()}, {}, notes
    problems = {k: f"needs {r.gpus} GPUs but the largest node of {where} has {per_node}"
                for k, r in needs.items() if r.gpus > per_node}
    return needs, problems, []


# ---------------------------------------------------------------------------------------------- local
def visible_gpus() -> list[str]:
    """GPU ids this machine offers: ``$CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


class _LocalHandle:
    def __init__(self, job: CellJob, resources: Resources) -> None:
        self.job, self.resources = job, resources
        self.result: CellOutcome | None = None
        self.cancelled = False
        self.gpu_ids: list[str] = []

    def done(self) -> bool:
        return self.result is not None

    def outcome(self) -> CellOutcome:
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        self.cancelled = True  # a queued cell never starts; a running one stops with the terminal's Ctrl-C


class LocalExecutor(Executor):
    """Cells as child processes of this machine, as many at once as free cores and GPUs allow."""

    name = "local"

    def __init__(self, spec: ExecutorSpec) -> None:
        gpu_ids = visible_gpus()
        count = spec.int_option("gpus", None)
        self.gpu_ids = gpu_ids[:count] if count is not None and count <= len(gpu_ids) else gpu_ids
        if count is not None and count > len(gpu_ids):
            raise MedmimError(f"--executor local,gpus={count}: this machine shows {len(gpu_ids)} GPU(s)")
        self.cpus = spec.int_option("cpus", None) or os.cpu_count() or 1
        self.has_gpus = bool(self.gpu_ids)
        self._lock = threading.Lock()
        self._queue: list[_LocalHandle] = []
        self._free_gpus = list(self.gpu_ids)
        self._free_cpus = self.cpus

    def start(self, needs: dict[str, Resources]) -> tuple[dict[str, Resources], dict[str, str], list[str]]:
        needs = {k: Resources(r.gpus, min(r.cpus, self.cpus)) for k, r in needs.items()}
        return _fit_gpus(needs, len(self.gpu_ids), len(self.gpu_ids), "this machine")

    def submit(self, job: CellJob, resources: Resources) -> Handle:
        handle = _LocalHandle(job, resources)
        with self._lock:
            self._queue.append(handle)
        self._dispatch()
        return handle

    def _dispatch(self) -> None:
        with self._lock:
            for handle in list(self._queue):
                if handle.cancelled:
                    self._queue.remove(handle)
                    handle.result = _failed(handle.job, "cancelled before it started")
                    continue
                need = handle.resources
                if need.cpus > self._free_cpus or need.gpus > len(self._free_gpus):
                    continue
                self._queue.remove(handle)
                self._free_cpus -= need.cpus
                handle.gpu_ids, self._free_gpus = self._free_gpus[:need.gpus], self._free_gpus[need.gpus:]
                threading.Thread(target=self._run, args=(handle,), daemon=True, name=f"cell {handle.job.key}").start()

    def _run(self, handle: _LocalHandle) -> None:
        extra = {"CUDA_VISIBLE_DEVICES": ",".join(handle.gpu_ids)} if self.has_gpus else {}
        try:
            result = run_cell(handle.job, extra)
        except BaseException as exc:  # noqa: BLE001 - reported as the cell's failure
            result = _failed(handle.job, _first_line(exc))
        with self._lock:
            self._free_cpus += handle.resources.cpus
            self._free_gpus += handle.gpu_ids
        handle.result = result
        self._dispatch()


# ---------------------------------------------------------------------------------------------- ray
def _import(name: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise MedmimError(f"--executor {what} needs the '{name}' package: {SWEEP_HINT}") from None


class _RayHandle:
    def __init__(self, ray: Any, job: CellJob, ref: Any) -> None:
        self.ray, self.job, self.ref = ray, job, ref

    def done(self) -> bool:
        ready, _ = self.ray.wait([self.ref], timeout=0)
        return bool(ready)

    def outcome(self) -> CellOutcome:
        try:
            return self.ray.get(self.ref)
        except Exception as exc:  # noqa: BLE001 - a dead worker or node, a cancelled task
            return _failed(self.job, f"Ray: {_first_line(exc)}")

    def cancel(self) -> None:
        try:
            self.ray.cancel(self.ref, force=True)
        except Exception:  # noqa: BLE001 - already finished
            pass


def _check_reachable(address: str | None, where: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not minutes, when ``HOST:PORT`` does not answer (Ray itself keeps retrying a long time)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise MedmimError(f"--executor ray:{address}: expected ray:HOST:PORT (the head's GCS address) or ray:auto")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise MedmimError(f"{where} does not answer ({exc}); start it with `ray start --head` or check the address, "
                          "or run with --executor local") from None


class RayExecutor(Executor):
    """One Ray task per cell with the cell's ``num_gpus`` and ``num_cpus``; Ray places and queues them.

    ``ray`` starts a Ray instance on this machine for the sweep (or joins ``$RAY_ADDRESS``); ``ray:auto``
    or ``ray:HOST:PORT`` joins a running cluster. ``retries=N`` lets Ray rerun a cell whose worker
    died (default 0: the cell is reported failed and the next sweep resumes it).
    """

    name = "ray"

    def __init__(self, spec: ExecutorSpec) -> None:
        self.ray = _import("ray", "ray")
        self.spec = spec
        self.retries = spec.int_option("retries", 0) or 0
        self._owned = False
        self._remote: Any = None

    def start(self, needs: dict[str, Resources]) -> tuple[dict[str, Resources], dict[str, str], list[str]]:
        ray = self.ray
        if not ray.is_initialized():
            self._connect()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        per_node_cpus = int(max((n.get("CPU", 0) for n in nodes), default=1)) or 1
        per_node_gpus = int(max((n.get("GPU", 0) for n in nodes), default=0))
        total_gpus = int(sum(n.get("GPU", 0) for n in nodes))
        needs = {k: Resources(r.gpus, min(r.cpus, per_node_cpus)) for k, r in needs.items()}
        self._remote = ray.remote(run_cell)
        return _fit_gpus(needs, total_gpus, per_node_gpus, "the Ray cluster")

    def _connect(self) -> None:
        """Join the cluster at the address (or ``$RAY_ADDRESS``), else start an instance here without
        the dashboard; Ray gives a new node 30 s to come up, so a busy machine gets a second try."""
        ray = self.ray
        kwargs: dict[str, Any] = {"address": self.spec.address, "log_to_driver": False}
        cpus = self.spec.int_option("cpus", None)
        if self.spec.address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False
            if cpus is not None:
                kwargs["num_cpus"] = cpus
        where = f"the Ray cluster at {self.spec.address}" if self.spec.address else "Ray"
        _check_reachable(self.spec.address, where)
        for attempt in (1, 2):
            try:
                ray.init(**kwargs)
                self._owned = True
                return
            except Exception as exc:  # noqa: BLE001 - Ray raises plain Exception for a node that timed out
                if ray.is_initialized():
                    ray.shutdown()
                if attempt == 2 or self.spec.address:
                    raise MedmimError(f"could not start or join {where}: {_first_line(exc)}; check `ray status` "
                                      "on the head node, or run with --executor local") from None

    def submit(self, job: CellJob, resources: Resources) -> Handle:
        ref = self._remote.options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=self.retries,
                                   retry_exceptions=False, name=f"medmim-cell {job.key}").remote(job)
        return _RayHandle(self.ray, job, ref)

    def close(self) -> None:
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
        self._owned = False


# ---------------------------------------------------------------------------------------------- slurm
# executor option -> submitit parameter (the sbatch flag it becomes)
SLURM_OPTIONS = {
    "partition": ("slurm_partition", str),      # --partition
    "time": ("timeout_min", int),               # --time (minutes)
    "account": ("slurm_account", str),          # --account
    "qos": ("slurm_qos", str),                  # --qos
    "constraint": ("slurm_constraint", str),    # --constraint
    "mem_gb": ("mem_gb", int),                  # --mem
    "exclude": ("slurm_exclude", str),          # --exclude
    "array_parallelism": ("slurm_array_parallelism", int),  # --array=...%N
}
EXECUTOR_ONLY = {"array", "cluster", "folder"}


def slurm_parameters(spec: ExecutorSpec, resources: Resources, name: str) -> dict[str, Any]:
    """submitit parameters for one cell: the executor's options plus the cell's GPUs and CPUs."""
    unknown = sorted(set(spec.options) - set(SLURM_OPTIONS) - EXECUTOR_ONLY)
    if unknown:
        raise MedmimError(f"--executor slurm: unknown option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(set(SLURM_OPTIONS) | EXECUTOR_ONLY))}")
    params: dict[str, Any] = {"nodes": 1, "tasks_per_node": 1, "cpus_per_task": resources.cpus,
                              "slurm_gpus_per_node": resources.gpus, "name": name}
    params.setdefault("timeout_min", 24 * 60)
    for key, (param, kind) in SLURM_OPTIONS.items():
        if key in spec.options:
            params[param] = spec.int_option(key, None) if kind is int else spec.options[key]
    if not resources.gpus:
        del params["slurm_gpus_per_node"]
    return params


class _SlurmHandle:
    def __init__(self, job: CellJob, sjob: Any) -> None:
        self.job, self.sjob = job, sjob

    def done(self) -> bool:
        try:
            return bool(self.sjob.done())
        except Exception:  # noqa: BLE001 - sacct unreachable for a moment: ask again later
            return False

    def outcome(self) -> CellOutcome:
        try:
            return self.sjob.result()
        except Exception as exc:  # noqa: BLE001 - a failed, cancelled or timed-out job
            return _failed(self.job, f"Slurm job {self.sjob.job_id}: {_first_line(exc)} (submitit logs: "
                           f"{self.sjob.paths.stderr})")

    def cancel(self) -> None:
        try:
            self.sjob.cancel(check=False)
        except Exception:  # noqa: BLE001
            pass


class SlurmExecutor(Executor):
    """One submitit job per cell (``array=1``: one job array per group of cells with the same resources).

    Options map to sbatch flags (see ``SLURM_OPTIONS``); ``folder=`` is where submitit keeps its job
    files (default ``SWEEP/slurm``); ``cluster=local`` runs the same jobs through submitit's local
    executor, to try a Slurm set-up on one machine.
    """

    name = "slurm"

    def __init__(self, spec: ExecutorSpec, sweep_dir: Path) -> None:
        self.submitit = _import("submitit", "slurm")
        self.spec = spec
        self.folder = Path(spec.options.get("folder") or sweep_dir / "slurm")
        self.cluster = spec.options.get("cluster", "slurm")
        if self.cluster not in ("slurm", "local"):
            raise MedmimError(f"--executor slurm,cluster={self.cluster}: use slurm (the default) or local")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise MedmimError("--executor slurm: no sbatch on this machine; run the sweep from a Slurm login node "
                              "(or try it here with --executor slurm,cluster=local)")
        self.array = spec.options.get("array", "").lower() in ("1", "true", "yes")

    def _executor(self, resources: Resources, name: str) -> Any:
        executor = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        executor.update_parameters(**slurm_parameters(self.spec, resources, name))
        return executor

    def submit(self, job: CellJob, resources: Resources) -> Handle:
        return _SlurmHandle(job, self._executor(resources, "medmim-cell").submit(run_cell, job))

    def submit_all(self, jobs: list[tuple[CellJob, Resources]]) -> list[Handle]:
        if not self.array:
            return [self.submit(job, res) for job, res in jobs]
        groups: dict[Resources, list[CellJob]] = {}
        for job, res in jobs:
            groups.setdefault(res, []).append(job)
        handles: list[Handle] = []
        for res, members in groups.items():
            executor = self._executor(res, "medmim-sweep")
            sjobs = executor.map_array(run_cell, members)
            handles += [_SlurmHandle(job, sjob) for job, sjob in zip(members, sjobs)]
        return handles


def sbatch_script(spec: ExecutorSpec, resources: Resources, folder: Path, name: str = "medmim-cell") -> str:
    """The sbatch script submitit submits for a cell with ``resources``, made here without a Slurm cluster."""
    submitit = _import("submitit", "slurm")

    class _ScriptOnly(submitit.SlurmExecutor):  # type: ignore[misc,name-defined]
        @classmethod
        def affinity(cls) -> int:  # the real one looks for srun
            return 1

    executor = _ScriptOnly(folder=str(folder / "%j"))
    params = {k.removeprefix("slurm_"): v for k, v in slurm_parameters(spec, resources, name).items()}
    executor.update_parameters(**executor._convert_parameters(params))  # noqa: SLF001 - submitit's own mapping
    return executor._make_submission_file_text("python -u -m submitit.core._submit " + str(folder), "preview")  # noqa: SLF001


EXECUTORS = ("local", "ray", "slurm")


def make_executor(spec: ExecutorSpec, sweep_dir: Path) -> Executor:
    if spec.name == "ray":
        return RayExecutor(spec)
    if spec.name == "slurm":
        return SlurmExecutor(spec, sweep_dir)
    unknown = sorted(set(spec.options) - {"gpus", "cpus"})
    if unknown:
        raise MedmimError(f"--executor local: unknown option(s) {', '.join(unknown)}; known: cpus, gpus")
    return LocalExecutor(spec)
