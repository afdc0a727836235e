"""How many threads and worker processes a stage may use, from its ``resources`` entry in params.yaml.

Each stage command reads its own ``resources.<stage>.cpus_per_task`` (active preset applied) and splits that many
cores between torch's intra-op threads and its worker processes (DataLoader workers; the process pools of the
prepare and hha stages), never using more cores than the process was given: its CPU affinity (what SLURM's
``--cpus-per-task`` or ``taskset`` grants) and ``OMP_NUM_THREADS`` when set (Snakemake sets it to a job's threads).
DVC sets neither, so without this a DVC stage ran torch's default pool (one thread per core of the machine) beside
its DataLoader workers, many times slower than the same stage under Snakemake on a machine shared by several jobs.

Each stage command with a ``resources`` entry resolves its plan (:func:`thread_plan`, no side effect), applies it
(:func:`apply_threads`: torch's threads, a pool's ``OMP_NUM_THREADS``) and hands the worker count on explicitly
(:meth:`ThreadPlan.fit`, a copy of the parameters; training records the plan in train.json), through
``primkd.cli.options.use_threads``. The data stages do so too, so this module sits at the bottom layer and imports
no other primkd module: were it in ``engine/``, the data stages' code dependencies (dvc.yaml) would include the
engine, and editing it would rerun data preparation.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

# The `resources` entry each stage command reads (analyze runs as an evaluation job in both pipelines).
STAGE_RESOURCES = {"prepare": "prepare", "hha": "hha", "train": "train", "evaluate": "evaluate",
                   "evaluate-released": "evaluate", "analyze": "evaluate"}
# The parameter holding each stage's requested worker processes, and whether the workers run the stage's own work
# (a process pool: the main process waits) or feed the main process (DataLoader workers: the main process computes).
STAGE_WORKERS = {"prepare": (("data", "workers"), "pool"), "hha": (("hha", "workers"), "pool"),
                 "train": (("train", "num_workers"), "loader"), "evaluate": (("train", "num_workers"), "loader"),
                 "evaluate-released": (("train", "num_workers"), "loader"),
                 "analyze": (("train", "num_workers"), "loader")}


@dataclass(frozen=True)
class ThreadPlan:
    """How a stage uses its cores (recorded in ``train.json`` as ``threads``).

    Attributes:
        stage: the stage command.
        cpus_per_task: the cores its ``resources`` entry asks for.
        cores_given: what the process may use: CPU affinity, capped by ``OMP_NUM_THREADS`` when set.
        cores: ``min(cpus_per_task, cores_given)``, divided among the local ranks of a ``torchrun`` job.
        torch_threads: torch intra-op threads of the main process (of each pool process for the pool stages).
        workers: DataLoader workers (train, evaluate, analyze) or pool processes (prepare, hha).
        requested_workers: the workers the parameters ask for (``train.num_workers``, ``data.workers``,
            ``hha.workers``).
    """

    stage: str
    cpus_per_task: int
    cores_given: int
    cores: int
    torch_threads: int
    workers: int
    requested_workers: int

    def as_dict(self) -> dict:
        return asdict(self)

    def fit(self, cfg: dict) -> dict:
        """A copy of the parameters ``cfg`` whose worker count (``train.num_workers``, ``data.workers`` or
        ``hha.workers``) is :attr:`workers`, what the cores allow; ``cfg`` is left as it is."""
        (section, key), _ = STAGE_WORKERS[self.stage]
        return {**cfg, section: {**cfg[section], key: self.workers}}


def cores_given(environ: dict | None = None) -> int:
    """Cores this process may use: its CPU affinity, capped by ``OMP_NUM_THREADS`` when that is a positive integer."""
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    omp = environ.get("OMP_NUM_THREADS", "")
    if omp.strip().isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(cores, 1)


def plan_threads(stage: str, cpus_per_task: int, requested_workers: int, given: int,
                 local_ranks: int = 1) -> ThreadPlan:
    """Split ``min(cpus_per_task, given)`` cores (shared by ``local_ranks`` processes) between threads and workers.

    DataLoader stages keep at least one core for the main process, which computes: workers =
    ``min(requested, cores - 1)``, threads = the cores left, so workers + threads = cores whenever workers are asked
    for (set ``train.num_workers: 0`` to give torch every core). Pool stages run ``min(requested, cores)``
    processes, each with ``cores // processes`` threads.
    """
    _, kind = STAGE_WORKERS[stage]
    cores = max(1, min(cpus_per_task, given) // max(local_ranks, 1))
    if kind == "loader":
        workers = max(0, min(requested_workers, cores - 1))
        threads = cores - workers
    else:
        workers = max(1, min(requested_workers, cores))
        threads = max(1, cores // workers)
    return ThreadPlan(stage=stage, cpus_per_task=cpus_per_task, cores_given=given, cores=cores,
                      torch_threads=threads, workers=workers, requested_workers=requested_workers)


def thread_plan(cfg: dict, stage: str, environ: dict | None = None) -> ThreadPlan:
    """The thread plan of stage ``stage`` (a key of :data:`STAGE_RESOURCES`) for the parameters ``cfg`` in this
    process's environment (its CPU affinity, ``OMP_NUM_THREADS``, ``LOCAL_WORLD_SIZE`` of a torchrun job)."""
    environ = os.environ if environ is None else environ
    (section, key), _ = STAGE_WORKERS[stage]
    local_ranks = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun: the ranks on this node share the cores
    return plan_threads(stage, cfg["resources"][STAGE_RESOURCES[stage]]["cpus_per_task"], cfg[section][key],
                        cores_given(environ), local_ranks)


def apply_threads(plan: ThreadPlan, environ: dict | None = None) -> None:
    """Give this process the plan's torch threads; pool processes (prepare, hha) inherit ``OMP_NUM_THREADS`` = their
    thread share through the environment."""
    environ = os.environ if environ is None else environ
    _, kind = STAGE_WORKERS[plan.stage]
    if kind == "pool":
        environ["OMP_NUM_THREADS"] = str(plan.torch_threads)
    # The pool stages never import torch themselves; importing it only to set a thread count costs seconds.
    if kind == "loader" or "torch" in sys.modules:
        import torch

        torch.set_num_threads(plan.torch_threads)
    log.info("%s: %d torch thread(s), %d worker(s) on %d core(s) (resources.%s.cpus_per_task %d, %d cores given)",
             plan.stage, plan.torch_threads, plan.workers, plan.cores, STAGE_RESOURCES[plan.stage],
             plan.cpus_per_task, plan.cores_given)
