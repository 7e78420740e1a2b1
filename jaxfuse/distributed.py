"""Checks over several hosts, on JAX's own machinery (jax.distributed).

Every process runs the same command. `initialize` joins them (jax.distributed.initialize:
a coordinator address, the number of processes and this process's id, from arguments,
from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or detected by JAX on
a cluster it knows). A sample set is cut into fixed-size chunks; each process takes a
contiguous share of them (`share`) and reads only those samples, shards each batch over
its own devices, and the per-sample results are gathered (`allgather_rows`, through the
key-value store of jax.distributed's coordination service) so that every process builds
the same report. A chunk's values do not depend on which process or device computes it.
"""
from __future__ import annotations

import os
import sys

import numpy as np

ENV_ADDRESS, ENV_PROCESSES, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


class DistributedError(RuntimeError):
    """jax.distributed could not be started; the message says why."""


def requested_by_environment() -> bool:
    """True when the environment names a coordinator and more than one process."""
    try:
        return bool(os.environ.get(ENV_ADDRESS)) and int(os.environ.get(ENV_PROCESSES, "1")) > 1
    except ValueError:
        return False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> None:
    """Join the processes of a distributed run (jax.distributed.initialize), before
    anything else touches JAX's devices. Arguments left out come from JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID, else from JAX's cluster detection."""
    import jax

    def env_int(name):
        value = os.environ.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise DistributedError(f"{name} must be an integer, got {value!r}") from None

    coordinator_address = coordinator_address or os.environ.get(ENV_ADDRESS) or None
    num_processes = num_processes if num_processes is not None else env_int(ENV_PROCESSES)
    process_id = process_id if process_id is not None else env_int(ENV_ID)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except Exception as e:  # jax raises ValueError / RuntimeError with its own wording
        raise DistributedError(f"cannot start jax.distributed: {type(e).__name__}: {e}") from None


def initialized() -> bool:
    """Whether this process has joined a distributed run (jax.distributed.initialize).
    Imports nothing: a process that has not imported JAX's distributed module has joined
    none, and JAX may be half imported on another thread (programs.start_jax_in_background)."""
    state = getattr(sys.modules.get("jax._src.distributed"), "global_state", None)
    return getattr(state, "client", None) is not None


def process_index() -> int:
    import jax
    return jax.process_index()


def process_count() -> int:
    import jax
    return jax.process_count()


def share(n_chunks: int, process: int | None = None, processes: int | None = None) -> range:
    """The chunks one process computes: a contiguous block, the first processes taking one
    more when the count does not divide."""
    process = process_index() if process is None else process
    processes = process_count() if processes is None else processes
    base, extra = divmod(n_chunks, processes)
    start = process * base + min(process, extra)
    return range(start, start + base + (1 if process < extra else 0))


_gathers = 0  # gathers so far: every process makes the same ones, in the same order


def allgather_bytes(payload: bytes, timeout_s: int = 600) -> list[bytes]:
    """Every process's `payload`, in process order, through jax.distributed's key-value
    store (no device collectives: on CPU those would start gloo, which prints to stdout)."""
    global _gathers
    if process_count() == 1:
        return [payload]
    from jax._src import distributed as jax_distributed  # the coordination service's client
    client = jax_distributed.global_state.client
    _gathers += 1
    prefix = f"jaxfuse/gather/{_gathers}"
    client.key_value_set_bytes(f"{prefix}/{process_index()}", payload)
    return [payload if p == process_index() else
            client.blocking_key_value_get_bytes(f"{prefix}/{p}", timeout_s * 1000)
            for p in range(process_count())]


def allgather_rows(indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every process's (sample indices [n], rows [n, ...] of one dtype and row shape)
    concatenated, in process order; a single process returns its own. Processes may hold
    different counts."""
    if process_count() == 1:
        return indices, rows
    indices = np.ascontiguousarray(indices, np.int64)
    rows = np.ascontiguousarray(rows)
    parts = allgather_bytes(np.int64(len(indices)).tobytes() + indices.tobytes() + rows.tobytes())
    all_indices, all_rows = [], []
    for part in parts:
        n = int(np.frombuffer(part[:8], np.int64)[0])
        all_indices.append(np.frombuffer(part[8:8 + 8 * n], np.int64))
        all_rows.append(np.frombuffer(part[8 + 8 * n:], rows.dtype).reshape((n, *rows.shape[1:])))
    return np.concatenate(all_indices), np.concatenate(all_rows)


def allgather_int(value: int) -> list[int]:
    """Every process's integer, in process order."""
    return [int(np.frombuffer(p, np.int64)[0]) for p in allgather_bytes(np.int64(value).tobytes())]


def chunk_groups(chunks: range, devices: int, size: int, total: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sample indices, valid) per step: `devices` chunks of `size` samples each, one per
    device. A chunk past the end of the set is filled with copies of the last sample, and the
    last step with copies of its last chunk; `valid` marks the samples that count."""
    steps = []
    for first in range(0, len(chunks), devices):
        group = list(chunks[first:first + devices])
        real = len(group)
        group += [group[-1]] * (devices - real)
        indices = np.concatenate([np.minimum(np.arange(c * size, (c + 1) * size), total - 1) for c in group])
        valid = np.concatenate([np.arange(c * size, (c + 1) * size) < total for c in group])
        valid[real * size:] = False
        steps.append((indices, valid))
    return steps
