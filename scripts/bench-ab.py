#!/usr/bin/env python3
"""The standard performance measurement of issue 3, for one build or an A/B
pair of builds, alternating so that both see the same machine.

    scripts/bench-ab.py [--rounds 2] [--duration 12] [--warmup 0] [--rows 10000] [--clients 16] DIR [DIR ...]

Each DIR holds a `quorated` and a `quorate` binary (target/release, or a copy
of an older build). Every round runs, for each DIR in turn, on a fresh local
3-node cluster (scripts/local-cluster.sh):
- 16 clients spread over the three nodes (`quorate bench --clients 16`, or
  `--clients N`);
- one client on the leader (node-1) and one on a follower (node-2);
- the nodes' CPU time per committed transaction under that load (user +
  system from /proc, summed over the three processes), and under the one
  client on the leader (no batching: the cost of a whole replication round
  per write);
- UDP datagrams sent per committed transaction under that load (the
  whole machine's, from /proc/net/snmp: QUIC between the nodes);
- the idle RSS of each node before the load.

With `--warmup 40` the measured run follows 40 s of writes: the steady state
of a node that has been up for a while (full certification window, WAL at
its working size), which a fresh 12 s run never reaches.

This machine's speed changes from minute to minute: compare builds within a
round, not across rounds, and take several rounds (an even number: every
other round runs the builds in reverse order).
"""
import argparse, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.environ.get("BASE", "/tmp/quorate-cluster")
NODES = "127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003"
TICK = os.sysconf("SC_CLK_TCK")


def pids():
    out = []
    for i in (1, 2, 3):
        with open(f"{BASE}/node-{i}/pid") as f:
            out.append(int(f.read().strip()))
    return out


def cpu_ticks():
    total = 0
    for pid in pids():
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the command name, which may hold spaces.
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def udp_datagrams_sent():
    """The machine's UDP datagrams sent so far (QUIC between the nodes)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("OutDatagrams")])


def rss_mb():
    out = []
    for pid in pids():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
    return out


def bench(bindir, nodes, clients, seconds, prepare, rows=10000):
    cmd = [f"{bindir}/quorate", "bench", "--nodes", nodes, "--clients", str(clients),
           "--rows", str(rows), "--duration", f"{seconds}s", "--json"]
    if not prepare:
        cmd.append("--no-prepare")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def cluster(bindir, action):
    env = dict(os.environ, BIN=bindir, BASE=BASE)
    subprocess.run([f"{HERE}/local-cluster.sh", action, "3"], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def measure(bindir, seconds, warmup, rows, clients):
    cluster(bindir, "up")
    try:
        time.sleep(2)
        rss = rss_mb()
        if warmup > 0:
            bench(bindir, NODES, 16, warmup, True, rows)
        t0, u0 = cpu_ticks(), udp_datagrams_sent()
        many = bench(bindir, NODES, clients, seconds, warmup == 0, rows)
        ticks, datagrams = cpu_ticks() - t0, udp_datagrams_sent() - u0
        t1 = cpu_ticks()
        leader = bench(bindir, "127.0.0.1:4001", 1, max(4, seconds * 2 // 3), False, rows)
        ticks_one = cpu_ticks() - t1
        follower = bench(bindir, "127.0.0.1:4002", 1, max(4, seconds * 2 // 3), False, rows)
    finally:
        cluster(bindir, "down")
    cpu_us = ticks / TICK * 1e6 / max(1, many["transactions"])
    cpu_one_us = ticks_one / TICK * 1e6 / max(1, leader["transactions"])
    return (f"{clients} clients {many['tps']:7.0f} tps p50 {many['p50_ms']:5.2f} p95 {many['p95_ms']:5.2f} "
            f"p99 {many['p99_ms']:6.2f} max {many['max_ms']:6.1f} ms | 1 client p50 leader {leader['p50_ms']:.3f} "
            f"follower {follower['p50_ms']:.3f} ms | CPU/txn {cpu_us:4.0f} us (1 client {cpu_one_us:4.0f}) | "
            f"UDP datagrams/txn {datagrams / max(1, many['transactions']):.2f} | "
            f"idle RSS {max(rss):.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="directories holding quorated and quorate")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=12, help="seconds of the measured run")
    ap.add_argument("--clients", type=int, default=16,
                    help="clients of the measured run (the warm-up uses 16); with fewer, the nodes "
                         "are not saturated and CPU/txn shows the cost of a replication round, "
                         "which fewer transactions share")
    ap.add_argument("--warmup", type=int, default=0,
                    help="seconds of 16-client writes before the measured run; 40 fills the "
                         "certification window (100,000 write-sets), so its prune runs as in "
                         "a node that has been up for a while")
    ap.add_argument("--rows", type=int, default=10000, help="rows of the update table")
    args = ap.parse_args()
    for d in args.dirs:
        for b in ("quorated", "quorate"):
            if not os.access(f"{d}/{b}", os.X_OK):
                sys.exit(f"{d}/{b}: not an executable (build with cargo build --release)")
    for r in range(1, args.rounds + 1):
        # Every other round in reverse (A B, B A, ...): the machine drifts
        # within a round too, and the build measured second would otherwise
        # always see the later, often slower, minutes.
        for d in (args.dirs if r % 2 else list(reversed(args.dirs))):
            print(f"round {r} {d}: {measure(d, args.duration, args.warmup, args.rows, args.clients)}",
                  flush=True)


if __name__ == "__main__":
    main()
