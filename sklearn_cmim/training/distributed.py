"""One process or a ``torchrun`` job: the few collective operations pretraining needs.

:class:`Context` reads the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables that ``torchrun``
sets. With one process nothing distributed is initialised and every method is a plain
pass-through, so the training loop is written once for both cases.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

__all__ = ["Context", "LatentGather", "StoppedByMain"]


class StoppedByMain(Exception):
    """Rank 0 stopped the job with an error that it reports itself; the other ranks end quietly."""


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Context:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs and writes files."""
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo otherwise); returns this rank's device."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", rank=self.rank, world_size=self.world_size, device_id=device)
        else:
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world_size)
        return device

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, compute, *, share: bool = True):
        """``compute()`` run on rank 0 alone; its result on every rank (``share``) or on rank 0 only.

        Should it raise, rank 0 raises that error and the other ranks :class:`StoppedByMain`, instead
        of waiting at their next collective call for a process that has gone: gloo and NCCL end
        that wait with a traceback of their own, which buries rank 0's message.
        """
        if not self.distributed:
            return compute()
        result, error = None, None
        if self.is_main:
            try:
                result = compute()
            except Exception as caught:
                error = caught
        if self.broadcast(error is not None):
            dist.barrier()  # every rank holds the flag before rank 0 tears the group down (NCCL is async)
            raise error if error is not None else StoppedByMain()
        return self.broadcast(result) if share else result

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class LatentGather:
    """``train_step``'s ``gather``: the latents of the global batch as contrastive negatives.

    The autograd-aware all-gather sends each rank's gradient back to the rank that produced the
    latent, so the contrastive term is optimised over the global batch. Every rank's batch has
    the same size (:class:`~sklearn_cmim.training.streams.BatchStream` only makes full batches), so this
    rank's rows start at ``rank * local batch size``.
    """

    def __init__(self, context: Context):
        self.rank = context.rank
        self.global_batch: int | None = None  # measured on the last call, for the logs

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        with warnings.catch_warnings():
            # Recent torch deprecates it for a private API that the oldest supported torch lacks.
            warnings.filterwarnings("ignore", category=FutureWarning)
            # float32 on the wire: the losses compute in float32 anyway, and gloo lacks some bf16 ops.
            parts = dist_fn.all_gather(z.float().contiguous())
        negatives = torch.cat(parts)
        self.global_batch = negatives.shape[0]
        return negatives, self.rank * z.shape[0]
