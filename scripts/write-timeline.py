#!/usr/bin/env python3
"""Where a one-client write's time goes, phase by phase, from system calls.

    sudo scripts/write-timeline.py [--seconds 1] [DIR]

Starts a local 3-node cluster (scripts/local-cluster.sh, binaries from DIR,
default target/release), runs one client writing to the leader (node-1) and
records the system calls that mark the phases of each write with `perf
record` on tracepoints (little overhead, unlike strace or perf trace). Then,
per write, from the leader's receipt of the HTTP request, prints p25 / p50 /
p75 of:

- the capture (the SQLite lock calls before the log write), the log write;
- what the followers do with the entry: receipt, log write, fsync start and
  end, the acknowledgement;
- the leader's fsync, its apply (the lock calls after the log write) and
  its reply to the client;

and the leader's system calls per write in order (p = log pwrite, S =
sendmsg, Y = fsync, r = receive, F = SQLite lock, W = reply, H = request),
the most frequent sequences first.

Needs root (tracepoints) and perf (apt install linux-perf). Nothing else may
run meanwhile: on two cores every other process shows up in the figures.
"""
import argparse, bisect, collections, importlib.util, os, re, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
# The cluster helpers of bench-ab.py (same cluster, same $BASE).
_spec = importlib.util.spec_from_file_location("bench_ab", os.path.join(HERE, "bench-ab.py"))
bench_ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_ab)
EVENTS = [f"syscalls:sys_enter_{s}" for s in
          ("pwrite64", "sendmsg", "fdatasync", "recvmmsg", "recvfrom", "writev", "fcntl")]
EVENTS.append("syscalls:sys_exit_fdatasync")
LINE = re.compile(r"\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)")


def log_fd(pid):
    """The descriptor of the node's write-set log segment."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "/log/log-" in target and target.endswith(".seg"):
            return f"fd: 0x{int(fd):08x}"
    sys.exit(f"node {pid} has no open log segment")


def record(bindir, seconds):
    bench_ab.cluster(bindir, "up")
    try:
        time.sleep(2)
        bench = [f"{bindir}/quorate", "bench", "--nodes", "127.0.0.1:4001", "--clients", "1",
                 "--rows", "10000"]
        subprocess.run(bench + ["--duration", "2s"], check=True, stdout=subprocess.DEVNULL)
        load = subprocess.Popen(bench + ["--duration", f"{seconds + 3}s", "--no-prepare"],
                                stdout=subprocess.DEVNULL)
        time.sleep(1)
        pids = bench_ab.pids()
        fds = {p: log_fd(p) for p in pids}
        data = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
        events = ",".join(EVENTS)
        subprocess.run(["perf", "record", "-a", "-e", events, "-o", data, "--", "sleep", str(seconds)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load.wait()
    finally:
        bench_ab.cluster(bindir, "down")
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,pid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(data)
    return pids, fds, out


def parse(text, pids):
    events = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m and int(m.group(2)) in pids:
            _, pid, _, t, edge, call, args = m.groups()
            events.append((float(t), int(pid), edge, call, args))
    events.sort()
    return events


def first(events, matches):
    """The time of the first of `events` that `matches`, or None."""
    return next((e[0] for e in events if matches(e)), None)


def quartiles(values):
    v = sorted(x * 1e6 for x in values if x is not None)
    if not v:
        return "    -"
    return f"n {len(v):4d}  p25 {v[len(v) // 4]:6.0f}  p50 {v[len(v) // 2]:6.0f}  p75 {v[3 * len(v) // 4]:6.0f} us"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default="target/release", help="holds quorated and quorate")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of the recording")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: perf records system-call tracepoints")
    pids, fds, text = record(args.dir, args.seconds)
    leader, followers = pids[0], pids[1:]
    events = parse(text, set(pids))

    def is_log_write(e, pid):
        return e[1] == pid and e[3] == "pwrite64" and e[4].startswith(fds[pid])

    times = [e[0] for e in events]
    requests = [e for e in events if e[1] == leader and e[3] == "recvfrom"]
    phases = collections.defaultdict(list)
    sequences = collections.Counter()
    symbol = {"pwrite64": "p", "sendmsg": "S", "fdatasync": "Y", "recvmmsg": "r",
              "fcntl": "F", "writev": "W", "recvfrom": "H"}
    for i, request in enumerate(requests[:-1]):
        t0, t1 = request[0], requests[i + 1][0]
        window = events[bisect.bisect_left(times, t0):bisect.bisect_left(times, t1)]
        mine = [e for e in window if e[1] == leader]
        log = first(mine, lambda e: is_log_write(e, leader))
        reply = first(mine, lambda e: e[3] == "writev")
        if log is None or reply is None:
            continue
        locks = [e[0] for e in mine if e[3] == "fcntl"]
        before = [t for t in locks if t < log]
        after = [t for t in locks if log < t < reply]

        def at(t):
            return None if t is None else t - t0

        phases["leader: capture starts"].append(at(before[0]) if before else None)
        phases["leader: capture ends"].append(at(before[-1]) if before else None)
        phases["leader: log write"].append(at(log))
        phases["leader: first send"].append(at(first(mine, lambda e: e[3] == "sendmsg" and e[0] > log)))
        phases["leader: fsync starts"].append(at(first(mine, lambda e: e[3] == "fdatasync" and e[2] == "enter")))
        phases["leader: fsync ends"].append(at(first(mine, lambda e: e[3] == "fdatasync" and e[2] == "exit")))
        for n, f in enumerate(followers, start=2):
            theirs = [e for e in window if e[1] == f and e[0] > log]
            synced = first(theirs, lambda e: e[3] == "fdatasync" and e[2] == "exit")
            phases[f"node-{n}: receives"].append(at(first(theirs, lambda e: e[3] == "recvmmsg")))
            phases[f"node-{n}: log write"].append(at(first(theirs, lambda e: is_log_write(e, f))))
            phases[f"node-{n}: fsync starts"].append(at(first(theirs, lambda e: e[3] == "fdatasync" and e[2] == "enter")))
            phases[f"node-{n}: fsync ends"].append(at(synced))
            phases[f"node-{n}: acknowledges"].append(
                at(first(theirs, lambda e: e[3] == "sendmsg" and synced is not None and e[0] > synced)))
        phases["leader: apply starts"].append(at(after[0]) if after else None)
        phases["leader: apply ends"].append(at(after[-1]) if after else None)
        phases["leader: reply"].append(at(reply))
        seq = []
        for e in mine:
            if e[2] != "enter":
                continue
            s = symbol.get(e[3], "?")
            if not (seq and seq[-1] == s and s in "Fpr"):
                seq.append(s)
        sequences["".join(seq)] += 1

    print(f"{len(requests) - 1} writes; times from the leader's receipt of the request")
    order = ["leader: capture starts", "leader: capture ends", "leader: log write", "leader: first send",
             "leader: fsync starts", "leader: fsync ends"]
    for n in range(2, 2 + len(followers)):
        order += [f"node-{n}: {p}" for p in ("receives", "log write", "fsync starts", "fsync ends", "acknowledges")]
    order += ["leader: apply starts", "leader: apply ends", "leader: reply"]
    for name in order:
        print(f"{name:24s} {quartiles(phases[name])}")
    print("leader's calls per write (p log write, S send, Y fsync, r receive, F SQLite lock, W reply, H request):")
    for seq, count in sequences.most_common(5):
        print(f"{count:5d}  {seq}")


if __name__ == "__main__":
    main()
