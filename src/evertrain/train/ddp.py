"""Data-parallel training over several processes: what a training loop sees of its ranks
(:class:`Ranks`), and the launch of such a loop as a Ray Train job (:func:`run_on_ray`).

A loop written against :class:`Ranks` runs unchanged in one process, where ``Ranks()`` is
one rank and every collective returns what it is given, and as rank ``r`` of ``N`` under
``torch.distributed``, where:

- :meth:`Ranks.split` gives rank ``r`` rows ``r, r + N, ...`` of each micro-batch (as
  PyTorch's ``DistributedSampler`` deals an epoch's rows, without its repeated rows: the
  ranks' parts are exactly the micro-batch one process would take), and the weight of its
  mean loss: its share of the micro-batch's rows, times ``N``;
- :meth:`Ranks.parallel` wraps the forward pass in ``DistributedDataParallel``, so the
  gradients are averaged across the ranks during backward (once per optimizer step when
  micro-batches are accumulated: the others run under ``no_sync``). The average of the
  weighted mean losses' gradients is the gradient of the whole micro-batch's mean loss, so
  ``N`` ranks make the optimizer steps one process makes, whatever the batch size;
- :meth:`Ranks.total` sums a few numbers over the ranks (losses, token counts, a deadline
  passed), so every decision taken from them (early stopping, stopping at the time limit)
  is the same on every rank and no rank is left waiting in a collective;
- :meth:`Ranks.from_lead` gives every rank rank 0's value (a checkpoint only rank 0 can read).

:func:`run_on_ray` runs ``work(ranks)`` on ``N`` Ray Train workers (``TorchTrainer``: gloo
on CPUs, NCCL on GPUs) and returns what rank 0 returned. That value comes back through a
Ray queue rather than Ray Train's checkpoint storage, so no filesystem shared by the
workers and the caller is needed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from evertrain.exceptions import EvertrainError, TrainingFailed, UsageError
from evertrain.train.raycluster import connect, stdout_to_stderr

_Items = TypeVar("_Items", np.ndarray, list[Any])
#: Seconds to wait for rank 0's value once the Ray Train job has ended (it was sent before).
RESULT_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one model (``Ranks()``: alone)."""

    rank: int = 0
    world: int = 1
    #: The torch device this rank trains on (None: the trainer's own choice; alone only).
    device: Any = None

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and hands the model back."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        if self.world == 1:
            return None
        import torch.distributed as dist

        return str(dist.get_backend())

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's part of a micro-batch's ``rows``, and the weight of its mean loss (its
        part's share of the rows, times the ranks: 1 alone). A rank left without a row (a last
        micro-batch smaller than the ranks) takes the first one, weighted 0: DDP needs every
        rank's backward pass."""
        if self.world == 1:
            return rows, 1.0
        mine = rows[self.rank :: self.world]
        if not len(mine):
            return rows[:1], 0.0
        return mine, self.world * len(mine) / len(rows)

    def shard(self, items: _Items) -> _Items:
        """This rank's share of ``items`` (the valid batches, whose losses are summed)."""
        return items if self.world == 1 else items[self.rank :: self.world]

    def seed(self, *key: int) -> int:
        """A torch seed drawn from ``key`` and, with several ranks, this rank (so that each
        rank's dropout differs); alone, the same seed as before ranks existed."""
        return hash(key if self.world == 1 else (*key, self.rank)) & 0x7FFFFFFF

    def total(self, *values: float) -> list[float]:
        """Each value summed over the ranks (in float64, whatever the backend)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def from_lead(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank (what the others pass is ignored)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def parallel(self, forward: Callable[..., Any], modules: list[Any]) -> Parallel:
        """``forward`` as one data-parallel module over the parameters of ``modules`` (which it
        uses): called like ``forward``, its gradients averaged across the ranks on backward."""
        return Parallel(forward, modules, self)


class Parallel:
    """A forward function whose trainable parameters DistributedDataParallel keeps in step."""

    def __init__(self, forward: Callable[..., Any], modules: list[Any], ranks: Ranks) -> None:
        self.forward = forward
        self.ddp: Any = None
        if ranks.world > 1:
            import torch

            class Together(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.parts = torch.nn.ModuleList(modules)

                def forward(self, *args: Any) -> Any:
                    return forward(*args)

            together = Together()
            # Frozen weights and buffers are read from the same files on every rank: DDP neither
            # broadcasts them (a large base's worth) nor watches them.
            frozen = [n for n, p in together.named_parameters() if not p.requires_grad]
            frozen += [n for n, _ in together.named_buffers()]
            ddp = torch.nn.parallel.DistributedDataParallel
            ddp._set_params_and_buffers_to_ignore_for_model(together, frozen)
            device = ranks.device
            ids = [device.index] if device is not None and device.type == "cuda" else None
            # Rank 0's trainable parameters are broadcast to the others here: one starting point.
            self.ddp = ddp(together, device_ids=ids)

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args) if self.ddp is None else self.ddp(*args)

    @contextlib.contextmanager
    def accumulating(self, sync: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: its gradients are averaged across the
        ranks only when ``sync`` (the last micro-batch of an optimizer step)."""
        if self.ddp is None or sync:
            yield
        else:
            with self.ddp.no_sync():
                yield


def use_gpus(ray: Any, device: str, workers: int) -> bool:
    """Whether the workers train on GPUs: ``cuda`` says yes (the cluster must have one per
    worker), ``cpu`` no, ``auto`` yes where the cluster has a GPU for each worker."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if device == "cuda" and gpus < workers:
        raise UsageError(
            f"lora.device is cuda with {workers} distributed workers, but the Ray cluster has {gpus:g} GPUs"
        )
    return device == "cuda" or (device == "auto" and gpus >= workers)


def run_on_ray(
    work: Callable[[Ranks], Any], *, workers: int, cpus_per_worker: float, device: str, name: str
) -> Any:
    """``work(ranks)`` on ``workers`` Ray Train workers (DDP); what rank 0 returned.

    An :class:`EvertrainError` raised on a rank is raised here as it was; any other failure is
    a :class:`TrainingFailed` naming the worker's error (or the first line of Ray's). A cluster
    without the CPUs or GPUs asked for is refused before anything starts, rather than left
    waiting for them.
    """
    ray = connect(needed_by="distributed fine-tuning (lora.distributed)")
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    gpu = use_gpus(ray, device, workers)
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < workers * cpus_per_worker:
        raise UsageError(
            f"lora.distributed asks for {workers} workers of {cpus_per_worker:g} CPUs, but the Ray cluster "
            f"has {cpus:g} CPUs"
        )
    answers = Queue(actor_options={"num_cpus": 0})
    # Ray Train keeps its run's state there; nothing is persisted (no checkpoint is reported).
    storage = tempfile.mkdtemp(prefix="evertrain-ray-train-")
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"work": ray.put(work), "answers": answers},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        # A failed rank fails the job: the training job's own retry resumes it from its checkpoint.
        run_config=RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=0)),
    )
    failure: Exception | None = None
    try:
        with stdout_to_stderr():
            trainer.fit()
    except Exception as exc:  # Ray's own error types differ between its versions
        failure = exc
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    try:
        if failure is None:
            kind, value = answers.get(timeout=RESULT_WAIT_SECONDS)
        else:
            kind, value = answers.get_nowait()
    except Exception:  # the queue's Empty, or its actor gone
        kind, value = "failed", None
    finally:
        answers.shutdown(force=True)
    if kind == "ok":
        return value
    if isinstance(value, EvertrainError):
        raise value
    first = value if isinstance(value, str) else (str(failure or "").strip().splitlines() or ["no result"])[0]
    raise TrainingFailed(f"the Ray Train job ({workers} workers) failed: {first}")


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank's ``work``, and rank 0's value (or any rank's
    EvertrainError) sent back to the caller."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    ranks = Ranks(context.get_world_rank(), context.get_world_size(), device)
    work = ray.get(config["work"])
    try:
        value = work(ranks)
    except Exception as exc:
        # Ray's own error names the worker group first; the caller says what went wrong.
        config["answers"].put(
            ("error", exc if isinstance(exc, EvertrainError) else f"{type(exc).__name__}: {exc}")
        )
        raise
    if ranks.lead:
        config["answers"].put(("ok", value))
