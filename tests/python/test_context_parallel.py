"""attnkit.torch.context_parallel_attention on torch.distributed: 2 to 4 gloo processes on
loopback, every scheme, causal and not, GQA, a pattern in global coordinates; each rank's output
rows and gradients against one process's attnkit.torch.attention on the whole sequence."""

import os
import socket
import sys
import traceback

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, size, port, cases, failures):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        import attnkit.torch as at

        for scheme, causal, pattern, n in cases:
            label = f"{scheme} P={size} causal={causal} pattern={pattern}"
            g = torch.Generator().manual_seed(7)
            q = torch.randn(2, 4, n, 16, generator=g, dtype=torch.float64).float()
            k = torch.randn(2, 2, n, 16, generator=g, dtype=torch.float64).float()
            v = torch.randn(2, 2, n, 8, generator=g, dtype=torch.float64).float()
            w = torch.randn(2, 4, n, 8, generator=g, dtype=torch.float64).float()
            # One process, the whole sequence (every rank computes it to compare).
            whole = [x.clone().requires_grad_() for x in (q, k, v)]
            want = at.attention(*whole, causal=causal, pattern=pattern)
            (want * w).sum().backward()
            # This rank's shards, then context-parallel.
            local = [at.context_shard(x, scheme, pattern=pattern).requires_grad_()
                     for x in (q, k, v)]
            out = at.context_parallel_attention(*local, scheme=scheme, causal=causal,
                                                pattern=pattern)
            (out * at.context_shard(w, scheme, pattern=pattern)).sum().backward()
            checks = [(out, at.context_shard(want.detach(), scheme, pattern=pattern), "out", 2e-6)]
            for x, full, name in zip(local, whole, ("dq", "dk", "dv")):
                checks.append((x.grad, at.context_shard(full.grad, scheme, pattern=pattern), name,
                               2e-5))
            for got, expect, name, tol in checks:
                error = float((got.detach() - expect).abs().max())
                if not error <= tol:
                    failures.append(f"{label} {name}: max error {error} > {tol}")
            # The gathered output is the whole one.
            gathered = at.context_gather(out.detach(), n, scheme, pattern=pattern)
            if not torch.allclose(gathered, want.detach(), atol=2e-6, rtol=0):
                failures.append(f"{label}: context_gather differs")
    except Exception:  # noqa: BLE001 -- reported to the parent
        failures.append(f"rank {rank}: {traceback.format_exc()}")
    finally:
        dist.barrier()  # every rank done with its transfers before gloo's pairs close
        dist.destroy_process_group()
    # Skip the interpreter's finalisation: a gloo worker thread may still drop its last reference
    # to a Python-owned tensor (a finished Work) once finalisation has begun, and a thread that
    # cannot take the GIL then exits through std::terminate (SIGABRT, about 1 run in 5; the core
    # dump's backtrace: ~AsyncBarrierWork -> decref_pyobject -> take_gil -> pthread_exit). The
    # failures list is a manager proxy, so everything is reported by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run(size, cases):
    manager = mp.Manager()
    failures = manager.list()
    mp.spawn(worker, args=(size, free_port(), cases, failures), nprocs=size, join=True)
    assert not list(failures), "\n".join(failures)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_every_scheme_equals_one_process(size):
    run(size, [(scheme, causal, None, 150) for scheme in ("ring", "zigzag", "allgather")
               for causal in (False, True)])


def test_a_pattern_in_global_coordinates():
    run(3, [("zigzag", True, "window:size=100", 512), ("ring", True, "document:lengths=200+312",
                                                       512)])


def test_errors_name_the_argument():
    import attnkit.torch as at

    q = torch.randn(1, 2, 10, 4)
    with pytest.raises(ValueError, match="group"):  # no process group
        at.context_parallel_attention(q, q, q)
    with pytest.raises(ValueError, match="scheme"):
        at.context_ranges(100, "spiral", rank=0, size=2)
    with pytest.raises(ValueError, match="global_n"):
        at.context_ranges(3, "zigzag", rank=0, size=4)
    with pytest.raises(ValueError, match="pattern"):
        at.context_ranges(1024, "ring", rank=0, size=2, pattern="natten2d:kernel=3")
