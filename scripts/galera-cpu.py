#!/usr/bin/env python3
"""Galera's CPU per transaction, measured the way scripts/bench-ab.py
measures quorate's: user + system time of the three mariadbd processes
during a sysbench run, divided by the transactions committed meanwhile.

    scripts/galera-cpu.py [--time 20] [--cases "upd_nonidx_16t_3n upd_nonidx_1t_1n"]

Runs ../shared/bench/galera/bench.sh (REPS=1; it starts and stops the
cluster itself) and samples /proc beside it. Prints, per case, sysbench's
throughput, the nodes' CPU per transaction, how many cores they kept busy,
and the machine's idle and iowait shares over the run. Stop any quorate
cluster first (pkill -9 quorated): both on two cores would measure each
other.
"""
import argparse, os, re, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
GALERA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench", "galera"))
TICK = os.sysconf("SC_CLK_TCK")
# The first seconds of a run are connection set-up and ramp; skip them.
SETTLE_S = 2.0


def process_ticks(name):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])
    return total


def sysbench_running():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"sysbench") and b"run" in args:
            return True
    return False


def machine():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return sum(cpu), cpu[3], cpu[4]  # all, idle, iowait


def sample(windows, done):
    """One window per sysbench run: (seconds, mariadbd ticks, machine ticks, idle, iowait)."""
    while not done.is_set():
        if not sysbench_running():
            time.sleep(0.1)
            continue
        time.sleep(SETTLE_S)
        t0, d0, m0 = time.time(), process_ticks("mariadbd"), machine()
        t1, d1, m1 = t0, d0, m0
        while sysbench_running():
            # The last full second before sysbench ends: its closing
            # moments (no more transactions) stay out.
            t1, d1, m1 = time.time(), process_ticks("mariadbd"), machine()
            time.sleep(1)
        windows.append((t1 - t0, d1 - d0, m1[0] - m0[0], m1[1] - m0[1], m1[2] - m0[2]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time", type=int, default=20, help="seconds per sysbench run")
    ap.add_argument("--cases", default="upd_nonidx_16t_3n upd_nonidx_1t_1n",
                    help="bench.sh case names, in the order bench.sh runs them")
    args = ap.parse_args()
    if not os.access(os.path.join(GALERA, "bench.sh"), os.R_OK):
        sys.exit(f"{GALERA}/bench.sh not found")
    out = tempfile.mkdtemp(prefix="galera-cpu-")
    windows, done = [], threading.Event()
    sampler = threading.Thread(target=sample, args=(windows, done), daemon=True)
    sampler.start()
    env = dict(os.environ, REPS="1", TIME=str(args.time), CASES=args.cases, OUT=out)
    run = subprocess.run(["bash", "bench.sh", "galera"], cwd=GALERA, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    done.set()
    sampler.join(timeout=5)
    if run.returncode != 0:
        sys.exit(f"bench.sh failed ({run.returncode}); see {out}/bench.log")
    cases = args.cases.split()
    if len(windows) != len(cases):
        sys.exit(f"saw {len(windows)} sysbench runs for {len(cases)} cases; see {out}")
    for case, (secs, ticks, all_ticks, idle, iowait) in zip(cases, windows):
        with open(os.path.join(out, f"galera.{case}.rep1.txt")) as f:
            m = re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", f.read())
        if not m:
            sys.exit(f"no throughput in {out}/galera.{case}.rep1.txt")
        tps = float(m.group(1))
        cores = ticks / TICK / secs
        print(f"{case}: {tps:7.0f} tps | mariadbd CPU/txn {cores * 1e6 / tps:5.0f} us "
              f"({cores:.2f} cores) | machine idle {100 * idle / all_ticks:2.0f} % "
              f"iowait {100 * iowait / all_ticks:2.0f} % | results {out}/results.md", flush=True)


if __name__ == "__main__":
    main()
