"""Device mesh, sharding rules and multi-host initialisation.

The mesh has two axes, ("data", "fsdp"). A batch is split over both (every device sees a
different slice of the sequences); parameters and the optimiser state are sharded over
"fsdp" along their "embed" axis (ZeRO-3 style) and replicated over "data". fsdp=1 is pure
data parallelism, data=1 is pure FSDP. The model tags every parameter with logical axis
names (see `scaling.model`); `RULES` maps those names onto mesh axes here, in one place.
A dimension that the mesh axis does not divide stays replicated rather than failing.

Multi-host: `initialize_distributed()` calls `jax.distributed.initialize` when the
environment describes more than one process, either explicitly (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) or as Slurm sets it (SLURM_NTASKS > 1 inside a job step,
which JAX's own cluster detection reads: the coordinator is the step's first node, its port
derived from the job id). It must run before anything touches a device. In a multi-process
run only process 0 writes the run's records; every process takes part in the checkpoint
(orbax saves collectively) and in `any_process`, the agreement on when to stop.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from scaling.errors import UserError

DATA_AXES = ("data", "fsdp")
# logical parameter axis -> mesh axis (None: replicated)
RULES: dict[str | None, str | None] = {
    "embed": "fsdp", "vocab": None, "heads": None, "mlp": None, "layers": None, None: None}

_initialized = False


def initialize_distributed() -> bool:
    """Join a multi-process JAX job if the environment describes one; True if it did."""
    global _initialized
    if _initialized:
        return True
    explicit = os.environ.get("JAX_COORDINATOR_ADDRESS")
    n_slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if not explicit and not (os.environ.get("SLURM_STEP_ID") is not None and n_slurm > 1):
        return False
    # CPU collectives across processes need gloo (docs/architecture.md, "JAX notes"); the setting only
    # concerns the CPU backend, so it is harmless on accelerator hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            explicit, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()  # Slurm cluster auto-detection
    _initialized = True
    return True


def make_mesh(fsdp: int = 1, devices: list | None = None) -> Mesh:
    """A ("data", "fsdp") mesh over all (global) devices; fsdp must divide their number."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise UserError(f"fsdp: expected a divisor of the device count {n}, got {fsdp}")
    grid = np.array(devices, dtype=object).reshape(n // fsdp, fsdp)
    return Mesh(grid, DATA_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def n_data_shards(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in DATA_AXES]))


def check_batch(batch_size: int, grad_accum: int, mesh: Mesh) -> None:
    """The micro-batch must split evenly over the devices that share the batch."""
    if grad_accum < 1 or batch_size % grad_accum:
        raise UserError(f"grad_accum: expected a divisor of batch_size ({batch_size}), got {grad_accum}")
    shards = n_data_shards(mesh)
    micro = batch_size // grad_accum
    if micro % shards:
        raise UserError(
            f"batch_size: {batch_size} (micro-batch {micro} with grad_accum {grad_accum}) is not "
            f"divisible by the {shards} devices the batch is split over")


def logical_spec(names, shape, mesh: Mesh, rules=RULES) -> PartitionSpec:
    """PartitionSpec for one array from its logical axis names (None/empty: replicated)."""
    if not names:
        return PartitionSpec()
    used: set[str] = set()
    spec: list[str | None] = []
    for name, size in zip(names, shape, strict=True):
        axis = rules.get(name)
        if axis is None or axis in used or size % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def _axis_names(variable) -> tuple | None:
    meta = variable.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):
        if meta.get(key):
            return tuple(meta[key])
    return None


def state_shardings(abstract_state, mesh: Mesh, rules=RULES):
    """NamedShardings (same tree as an nnx.State of abstract Variables) from their metadata."""
    from flax import nnx

    def one(variable):
        value = variable.get_value()
        spec = logical_spec(_axis_names(variable), value.shape, mesh, rules)
        return variable.replace(NamedSharding(mesh, spec))  # keeps the tree's structure

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int, ndim: int) -> NamedSharding:
    """Split axis `batch_axis` of an `ndim`-dimensional batch over every data axis."""
    spec: list[tuple[str, ...] | None] = [None] * ndim
    spec[batch_axis] = DATA_AXES
    return NamedSharding(mesh, PartitionSpec(*spec))


def put_global(host_array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds in full (batches are a
    pure function of (seed, step), so each process can build the whole batch)."""
    if jax.process_count() == 1:
        return jax.device_put(host_array, sharding)
    return jax.make_array_from_callback(host_array.shape, sharding, lambda idx: host_array[idx])


def any_process(flag: bool) -> bool:
    """True in every process if `flag` is true in any of them. A SIGTERM reaches the
    processes of a job at slightly different steps; they must agree on the step at which
    they stop, since the checkpoint they then save is collective."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, dtype=np.bool_))))


def fetch(x) -> np.ndarray:
    """Host copy of a (replicated, possibly multi-process) array."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    return np.asarray(x.addressable_data(0))
