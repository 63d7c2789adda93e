"""A bottleneck model of the Redis broker's throughput, fed with measured costs per task.

`bench/redis_bench.py --json FILE` measures, for each run of ours, the CPU seconds one
task costs in Redis (all servers), in the worker processes and in the client, and the
bytes in and out of Redis. This model takes the costs of the one-Redis, one-worker-process
runs and predicts, for any set-up, the rate the first saturated resource allows:

- the client: one process, one core at most: 1 / client;
- the worker processes: P of them, one core each at most: P / workers;
- Redis: each master is one core at most, and takes the share of the tasks whose shards
  hash to its slots: 1 / (redis x the busiest master's share);
- the machine: all of them share its cores: cores / (client + workers + redis), where
  `cores` is what the bench's processes got: on a machine shared with other work, the CPU
  they used per second of the one-Redis, one-process run (rate x CPU per task);
- beyond one machine, the network: bytes per task x rate, per Redis node.

It prints the prediction next to what the bench measured (one Redis with 1, 2 and 4
worker processes; the cluster run, if given), then what an internet-scale set-up needs.

    python bench/redis_bench.py --only ours --procs 1,2,4 --no-latency --json one.json
    python bench/redis_bench.py --cluster 3 --procs 1,2,4 --no-latency --json cluster.json
    python bench/scale_model.py one.json --cluster cluster.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

#: Redis Cluster's slots, and the share of a master's core the plan uses (headroom).
SLOTS = 16384
UTILIZATION = 0.7


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def busiest_share(masters: int, shards: int, prefix: str = "queueing", queue: str = "job") -> float:
    """The largest share of a queue's tasks one master takes, for `redis-cli --cluster
    create`'s even split of the slots over `masters` and the queue's shard tags."""
    tags = [f"{prefix}:{queue}" if shards == 1 else f"{prefix}:{queue}:{i}" for i in range(shards)]
    per_master = [0] * masters
    for tag in tags:
        slot = crc16(tag.encode()) % SLOTS
        per_master[min(masters - 1, slot * masters // SLOTS)] += 1
    return max(per_master) / shards


def costs_of(summary: dict[str, Any], procs: int = 1) -> dict[str, float]:
    runs = summary["frameworks"]["ours"]["cpu_per_task"][str(procs)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def predict(
    costs: dict[str, float], procs: int, cores: float, masters: int = 1, share: float = 1.0
) -> tuple[float, str]:
    """The rate the first saturated resource allows, and which one it is."""
    limits = {
        "client": 1 / costs["client"],
        "workers": procs / costs["workers"],
        "redis": 1 / (costs["redis"] * share) if masters else float("inf"),
        "cores": cores / (costs["client"] + costs["workers"] + costs["redis"]),
    }
    name = min(limits, key=lambda key: limits[key])
    return limits[name], name


def measured(summary: dict[str, Any], procs: int) -> tuple[float | None, float | None]:
    ours = summary["frameworks"]["ours"]
    return ours["rate"].get(str(procs)), ours["best"].get(str(procs))


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("single", type=Path, help="redis_bench.py --json of one Redis")
    parser.add_argument("--cluster", type=Path, help="redis_bench.py --json of --cluster")
    parser.add_argument(
        "--cores", type=float, help="cores to model (default: what the one-Redis run got)"
    )
    args = parser.parse_args()
    single = json.loads(args.single.read_text())
    costs = costs_of(single)
    cpu = costs["client"] + costs["workers"] + costs["redis"]
    one, _ = measured(single, 1)
    cores = args.cores or (one or 0) * cpu
    print(
        f"costs per task (one Redis, 1 worker process, median): redis "
        f"{1e6 * costs['redis']:.0f} us, workers {1e6 * costs['workers']:.0f} us, client "
        f"{1e6 * costs['client']:.0f} us of CPU; {costs.get('redis_bytes', 0):.0f} bytes in "
        f"and out of Redis"
    )
    print(
        f"cores the bench's processes got: {cores:.2f} of {single['machine']['cpus']} "
        f"(load average before/after: {single['machine']['load_before']} / "
        f"{single['machine']['load_after']})"
    )
    print()
    print(f"{'set-up':52} {'model':>10} {'limit':>8} {'measured':>10} {'best':>10}")
    rows = [("one Redis", single, 1, 1)]
    cluster = json.loads(args.cluster.read_text()) if args.cluster else None
    if cluster is not None:
        topology = cluster["machine"].get("topology", "")
        masters = int(topology.split()[2]) if topology.startswith("cluster") else 3
        shards = int(topology.split()[4]) if topology.startswith("cluster") else 2 * masters
        rows.append((f"cluster, {masters} masters, {shards} shards", cluster, masters, shards))
    for label, summary, masters, shards in rows:
        share = busiest_share(masters, shards) if masters > 1 else 1.0
        for procs in (1, 2, 4):
            model, limit = predict(costs, procs, cores, masters, share)
            median, best = measured(summary, procs)
            print(
                f"{label + f', {procs} worker process(es)':52} {rate(model):>10} {limit:>8} "
                f"{rate(median):>10} {rate(best):>10}"
            )
    if cluster is not None:
        own = costs_of(cluster)
        print(
            f"\ncosts per task measured on the cluster (1 worker process): redis "
            f"{1e6 * own['redis']:.0f} us (all masters), workers {1e6 * own['workers']:.0f} "
            f"us, client {1e6 * own['client']:.0f} us"
        )
        for procs in (1, 2, 4):
            model, limit = predict(own, procs, cores, masters, share)
            median, best = measured(cluster, procs)
            print(
                f"{f'  the cluster at its own costs, {procs} process(es)':52} {rate(model):>10} "
                f"{limit:>8} {rate(median):>10} {rate(best):>10}"
            )

    print("\nInternet scale: what a rate needs, at these costs (one core per process,")
    print(f"Redis masters at {UTILIZATION:.0%} of a core, tasks spread evenly over shards):")
    print(
        f"{'tasks/s':>10} {'client cores':>13} {'worker cores':>13} {'Redis masters':>14} "
        f"{'shards (>=)':>12} {'Redis MB/s':>11}"
    )
    per_master = UTILIZATION / costs["redis"]
    for target in (10_000, 100_000, 1_000_000):
        masters_needed = max(1, -(-target // int(per_master)))
        print(
            f"{target:>10,} {target * costs['client']:>13.1f} {target * costs['workers']:>13.1f} "
            f"{masters_needed:>14} {masters_needed:>12} "
            f"{target * costs.get('redis_bytes', 0) / 1e6:>11.1f}"
        )
    print(
        f"\nOne queue in one slot is served by one master: at most {per_master:,.0f} tasks/s "
        "here; a queue beyond that needs Queue(shards=N) with N at least the masters it "
        "should use."
    )


if __name__ == "__main__":
    main()
