"""Running under torchrun: process group set-up, global-batch sharding, gathers, and the launcher.

emotk runs the same commands in one process or under PyTorch's elastic launcher::

    torchrun --standalone --nproc_per_node 2 -m emotk train gru ...
    emotk train gru ... --nproc 2          # the same: emotk starts torchrun itself (argument list, no shell)

Training semantics (see :class:`GlobalBatchSampler` and :func:`gather_batch`):

- ``--batch-size`` is the *global* batch. Every rank draws the same permutation of the windows for
  (seed, epoch) — the very permutation a single process draws — cuts it into global batches, and
  takes its contiguous share of each (sizes differ by at most one; a rank with no share runs one
  dummy window whose output is discarded).
- The loss is computed on the whole global batch: each rank gathers the outputs, targets and masks
  of all ranks (its own outputs keep their autograd graph) and evaluates the loss exactly as a single
  process would. Batch-pooled losses (AffWild2's CCC) therefore see the same frames as in one
  process. The local loss is multiplied by the world size so that DDP's gradient *average* becomes
  the single-process gradient: d(L)/dθ = Σ_r ∂L/∂out_r · ∂out_r/∂θ.
- Result: N processes reproduce one process up to floating-point reduction order (kernels with a
  different batch size, the all-reduce sum), for models without dropout or batch statistics.
  Dropout masks are drawn per rank (different seeds per rank), so with dropout the runs are
  statistically, not bitwise, equivalent. BatchNorm layers are converted to SyncBatchNorm on CUDA
  (PyTorch's SyncBatchNorm has no CPU implementation).
- Validation windows are split contiguously across ranks, predicted, and gathered in order, so the
  metric is computed on exactly the single-process predictions.
- Rank 0 alone writes run files; other ranks wait at barriers.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (1 process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world_size=world,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    return env_info().rank == 0


def init(device: str | None = None) -> DistInfo:
    """Join torchrun's process group (once per process): NCCL when the run uses CUDA, gloo otherwise."""
    info = env_info()
    if not info.distributed:
        return info
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(info.rank, info.world_size, info.local_rank, dist.get_backend())


def resolve_device(name: str | None) -> torch.device:
    """The torch device for ``--device NAME``: None means CUDA when present, else the CPU.

    Raises :class:`~emotk.errors.EmotkError` (one sentence, what to pass instead) for a name torch
    does not know, a device type emotk does not run on, or a CUDA/MPS device this machine lacks.
    """
    from emotk.errors import EmotkError

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise EmotkError(f"--device {name!r} is not a device name: use cpu, cuda or cuda:N (N a GPU index).") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise EmotkError(f"--device {name!r}: emotk runs on cpu, cuda or cuda:N (and mps), not on {dev.type!r}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise EmotkError(f"--device {name}: this machine has no usable CUDA GPU (torch {torch.__version__} is "
                             f"{built}); pass --device cpu or leave --device out.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise EmotkError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 … cuda:{count - 1}.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EmotkError(f"--device {name}: Apple's MPS is not available here; pass --device cpu.")
    return dev


def device_for(info: DistInfo, device: str | None) -> torch.device:
    """The device of this rank: ``cuda:<local rank>`` under torchrun with CUDA, else the one asked
    (checked by :func:`resolve_device`)."""
    dev = resolve_device(device)
    if info.distributed and dev.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return dev


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (the object itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Contiguous shares of ``n`` items over ranks: sizes differ by at most one, earlier ranks larger."""
    return [n // world_size + (r < n % world_size) for r in range(world_size)]


class GlobalBatchSampler(DistributedSampler):
    """A DistributedSampler of *batches*: this rank's share of each global batch.

    The permutation of an epoch is ``torch.randperm(n)`` from a generator seeded with
    ``seed + epoch`` (``set_epoch`` as for any DistributedSampler) — the permutation torch's
    RandomSampler draws with the same generator, so one process and N processes see the same global
    batches. Unlike torch's DistributedSampler nothing is duplicated to even out the ranks: each
    rank's share is padded (with repeats that the loss never sees) to the largest share, and
    :meth:`real_sizes` tells every rank how many items of each rank's share are real.
    """

    def __init__(self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size

    def global_batches(self) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def real_sizes(self) -> list[list[int]]:
        """Per global batch, the number of real items of every rank."""
        return [shard_sizes(len(b), self.num_replicas) for b in self.global_batches()]

    def local_batches(self) -> list[list[int]]:
        out = []
        for batch in self.global_batches():
            sizes = shard_sizes(len(batch), self.num_replicas)
            start = sum(sizes[:self.rank])
            mine = batch[start:start + sizes[self.rank]]
            width = max(sizes)
            filler = mine[-1] if mine else batch[0]
            out.append(mine + [filler] * (width - len(mine)))
        return out

    def __iter__(self):
        return iter(self.local_batches())

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)


def gather_batch(local: torch.Tensor, sizes: Sequence[int], rank: int, keep_grad: bool) -> torch.Tensor:
    """Concatenate the real items of every rank's (padded, equal-shape) tensor, in rank order.

    ``keep_grad``: this rank's own rows stay in the autograd graph (the others arrive detached).
    """
    world = len(sizes)
    if world == 1:
        return local[: sizes[0]]
    send = local.detach()
    if send.dtype == torch.bool:  # gloo has no bool all-gather
        send = send.to(torch.uint8)
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send.contiguous())
    if local.dtype == torch.bool:
        parts = [p.bool() for p in parts]
    pieces = [(local if (r == rank and keep_grad) else parts[r])[: sizes[r]] for r in range(world)]
    return torch.cat(pieces)


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (used to relaunch the same command)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == option:
            skip = True
            continue
        if a.startswith(option + "="):
            continue
        out.append(a)
    return out


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m emotk ARGS`` as an argument list."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
            "-m", "emotk", *map(str, args)]


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``emotk ARGS`` under torchrun with ``nproc`` processes on this machine; returns its exit status.

    No shell is involved: the command is an argument list. Exit status 2 of any rank (a user error,
    already printed by that rank) is passed through as 2.
    """
    proc = subprocess.run(torchrun_command(nproc, args), check=False)
    return proc.returncode


__all__ = ["DistInfo", "env_info", "init", "device_for", "resolve_device", "barrier", "broadcast_object", "gather_objects",
           "GlobalBatchSampler", "gather_batch", "shard_sizes", "strip_option", "torchrun_command", "launch"]
