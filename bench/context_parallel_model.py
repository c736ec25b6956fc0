"""A model of context-parallel attention's time per layer, checked against runs here, then
used to predict 8-64 machines at a million tokens (BENCHMARKS.md, "Beyond one machine").

The model, per rank r of P (forward; include/attnkit/distributed.h for the schemes):
  compute of a pair of shards = attended pairs x 2 (D + Dv) x B x H / R, R the kernel rate of one
  rank (measured: attnkit bench on one core), shared when ranks outnumber cores;
  ring, zigzag: P steps, step s costs max(compute_s, L + kv_bytes / W) while the next shard is in
  flight (the last step computes only), kv_bytes the padded K and V of one shard, L and W the
  link's latency and bandwidth (measured: build/mpi_link);
  allgather: the gather ((P - 1) shards over the link, not overlapped), then every pair.
The busiest rank sets the layer's time.

    python3 bench/context_parallel_model.py [build-dir]      # measures, then predicts
"""

import json
import os
import subprocess
import sys

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
AK = os.path.join(BUILD, "attnkit")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
CORES = os.cpu_count() or 1


def run_json(command):
    out = subprocess.run(command, env=ENV, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def shards(scheme, n, size):
    """The global ranges each rank holds (no alignment: no pattern), as context_shard does."""
    chunks = 2 * size if scheme == "zigzag" else size
    bound = [i * n // chunks for i in range(chunks + 1)]
    chunk = [(bound[i], bound[i + 1]) for i in range(chunks)]
    if scheme == "zigzag":
        return [[chunk[r], chunk[2 * size - 1 - r]] for r in range(size)]
    return [[chunk[r]] for r in range(size)]


def pairs(q, k, causal):
    """Attended (query, key) pairs between global ranges q and k."""
    (qa, qb), (ka, kb) = q, k
    if not causal or kb <= qa:
        return (qb - qa) * (kb - ka)
    if ka >= qb:
        return 0
    m = qb - qa  # equal ranges: the causal triangle
    return m * (m + 1) // 2


def layer_seconds(scheme, n, size, causal, heads, d, rate, latency, bandwidth, cores):
    """The busiest rank's forward time per layer (B = 1, Hkv = Hq, D = Dv)."""
    layout = shards(scheme, n, size)
    cap = max(sum(b - a for a, b in ranges) for ranges in layout)
    kv_bytes = 2 * heads * cap * d * 4
    transfer = latency + kv_bytes / bandwidth
    share = min(1.0, cores / size)  # ranks beyond the cores time-share them
    worst = 0.0
    for r in range(size):
        steps = []
        for s in range(size):
            src = (r - s) % size
            work = sum(pairs(q, k, causal) for q in layout[r] for k in layout[src])
            steps.append(work * 4 * d * heads / (rate * share))
        if scheme == "allgather":
            total = (size - 1) * transfer + sum(steps) if size > 1 else sum(steps)
        else:
            total = sum(max(c, transfer) for c in steps[:-1]) + steps[-1]
        worst = max(worst, total)
    return worst


def main():
    heads, d, n = 4, 64, 16384
    link = run_json(MPIRUN + ["-np", "2", os.path.join(BUILD, "mpi_link")])
    latency, bandwidth = link["latency_seconds"], link["bandwidth_gbps"] * 1e9
    print(f"link (2 ranks, this machine): latency {latency * 1e6:.1f} us, "
          f"bandwidth {bandwidth / 1e9:.2f} GB/s")
    rates = {}
    for causal in (False, True):
        flag = ["--causal"] if causal else []
        one = run_json([AK, "bench", "--n", str(n), "--d", str(d), "--heads", str(heads),
                        "--threads", "1", "--reps", "2", "--json"] + flag)
        rates[causal] = one["gflops"] * 1e9
        print(f"kernel rate, one core, N={n} {'causal' if causal else 'full'}: "
              f"{one['gflops']:.1f} GFLOP/s")
    print(f"\nmeasured against the model, N={n}, {heads} heads, D={d}, one thread per rank, "
          f"{CORES} cores:")
    print("| scheme | causal | P | measured s (busiest rank) | model s | model / measured |")
    print("|---|---|---|---|---|---|")
    for scheme in ("ring", "zigzag", "allgather"):
        for causal in (False, True):
            for size in (1, 2, 3, 4):
                flag = ["--causal"] if causal else []
                got = run_json(MPIRUN + ["-np", str(size), AK, "bench", "--context-parallel",
                                         scheme, "--n", str(n), "--d", str(d), "--heads",
                                         str(heads), "--threads", "1", "--reps", "2",
                                         "--json"] + flag)
                model = layer_seconds(scheme, n, size, causal, heads, d, rates[causal], latency,
                                      bandwidth, CORES)
                print(f"| {scheme} | {causal} | {size} | {got['seconds']:.3f} | {model:.3f} | "
                      f"{model / got['seconds']:.2f} |")
    # Prediction: machines like this one (its two-thread kernel rate), a million tokens.
    two = run_json([AK, "bench", "--n", "16384", "--d", "128", "--heads", "8", "--causal",
                    "--reps", "1", "--json"])
    machine = two["gflops"] * 1e9
    for big in (1 << 20, 1 << 17):
        print(f"\npredicted: {big:,} tokens, 8 heads, D=128, causal; each machine this one "
              f"({two['gflops']:.0f} GFLOP/s, two threads); one layer's attention forward:")
        print("| scheme | link | P=1 | P=8 | P=16 | P=32 | P=64 | speedup at 64 |")
        print("|---|---|---|---|---|---|---|---|")
        for scheme in ("ring", "zigzag", "allgather"):
            for name, lat, bw in (("100 Gb/s (12.5 GB/s, 5 us)", 5e-6, 12.5e9),
                                  ("10 Gb/s (1.25 GB/s, 20 us)", 2e-5, 1.25e9)):
                times = [layer_seconds(scheme, big, p, True, 8, 128, machine, lat, bw, p * 1e9)
                         for p in (1, 8, 16, 32, 64)]
                cells = " | ".join(f"{t:.3g} s" for t in times)
                print(f"| {scheme} | {name} | {cells} | {times[0] / times[-1]:.1f}x |")


if __name__ == "__main__":
    main()
