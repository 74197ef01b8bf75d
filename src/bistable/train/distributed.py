"""torchrun / DistributedDataParallel, PyTorch's own scale-out (no home-made distribution).

``torchrun --nproc_per_node=N -m bistable train ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`setup` then joins the process group (gloo on CPU, nccl on CUDA). Every rank
builds the same global batch of ``--batch-size`` examples from the same seeded generator and trains
on its own contiguous slice of ``batch_size / world_size`` examples; DDP averages the gradients, so
a step equals one process's step on the whole global batch (to float rounding). Only rank 0
evaluates and writes files.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.torch_version import TorchVersion


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of ranks, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (dimension 0)."""
        if not self.distributed:
            return tensor
        size = tensor.shape[0] // self.world_size
        return tensor[self.rank * size:(self.rank + 1) * size]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the ranks (the global-batch loss)."""
        if not self.distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def from_main(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def check_device(device: str) -> torch.device:
    """``--device``'s value as a device, if this machine has one."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(device)


def setup(device: str = "cpu") -> Context:
    """Join the torchrun process group if there is one; otherwise a one-process context."""
    checked = check_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=checked)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # torch._dynamo before the group: PyTorch imports it on a process's first custom-operator
        # call (the scan's), and imported after a gloo group was up it made two-rank runs abort at
        # exit ("terminate called without an active exception") in 1 of about 8 runs; 0 of 30
        importlib.import_module("torch._dynamo")
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Context(rank, world_size,
                   torch.device(f"cuda:{local_rank}" if device == "cuda" else "cpu"))


def wrap(model: torch.nn.Module, context: Context) -> torch.nn.Module:
    """The model under DDP when there are several ranks, else itself."""
    if not context.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [context.device.index] if context.device.type == "cuda" else None
    # buffers are set alike on every rank; syncing them before each forward would also send
    # state that only rank 0's evaluations reshape (snnTorch's membrane follows the batch): a
    # size mismatch. torch >= 2.13 names the switch forward_sync_buffers (broadcast_buffers
    # deprecated); older ones know only broadcast_buffers.
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, **no_sync)


_BARRIER_BEFORE_DESTROY = TorchVersion(torch.__version__) < (2, 5)
# how long a rank that raised waits for its peers before destroying the group (torch < 2.5)
PEERS_AFTER_ERROR = datetime.timedelta(seconds=60)


def teardown(context: Context, *, ended_well: bool = True) -> None:
    """Destroy the process group, on every path (without it a rank that raised could abort at
    exit). On torch < 2.5 the ranks meet first: there ``destroy_process_group`` could hang in
    gloo when they had not (two-rank runs: 3 of 25 that ended well, 2 of 37 stopped by the same
    user error on both ranks; none of 30 and of 50 with a barrier first). After a run that ended
    well, a barrier; after an error, one that waits :data:`PEERS_AFTER_ERROR` at most, since a
    rank may have raised alone while its peers wait in a collective: then the group is left to
    the process's exit, which closes its connections and stops the peers. Torch 2.13 showed no
    hang without the barrier (none of 25 runs of either kind), so it is left out there: it would
    time out the ranks that wait while rank 0 runs a final evaluation longer than the group's
    timeout."""
    if not (context.distributed and dist.is_initialized()):
        return
    if _BARRIER_BEFORE_DESTROY:
        if ended_well:
            dist.barrier()
        else:
            try:
                dist.barrier(async_op=True).wait(timeout=PEERS_AFTER_ERROR)
            except RuntimeError:  # a peer did not come: it is still in the run
                return
    dist.destroy_process_group()
