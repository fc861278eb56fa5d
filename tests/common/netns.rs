//! Real network faults for cluster tests: every node in a network namespace
//! of its own on a private bridge, and links cut by blackhole routes, so
//! packets between the two nodes are really dropped. Needs root (CI runs as
//! root); elsewhere the tests say why they did not run.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why network-namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to create network namespaces (CI runs as root)".into());
    }
    // Unique per call: a stale probe left by a killed run of a process
    // that had the same pid must not look like missing support.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let probe = format!("qp{}x{nanos}", std::process::id());
    match run(&["ip", "netns", "add", &probe]) {
        Ok(()) => {
            let _ = run(&["ip", "netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// A private network: a bridge in the host namespace and one namespace per node.
pub struct Net {
    pub tag: String,
    pub subnet: u32,
    pub size: usize,
}

impl Net {
    pub fn new(size: usize) -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let subnet = (std::process::id() * 7 + n * 13) % 200 + 20;
        let tag = format!("q{}{}", std::process::id() % 10000, n);
        let net = Net { tag, subnet, size };
        let br = net.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"]).expect("bridge");
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.213.{}.1/24", subnet),
            "dev",
            &br,
        ])
        .expect("bridge addr");
        run(&["ip", "link", "set", &br, "up"]).expect("bridge up");
        for i in 0..size {
            let ns = net.ns(i);
            let (host, inner) = (format!("{}h{i}", net.tag), format!("{}c{i}", net.tag));
            run(&["ip", "netns", "add", &ns]).expect("netns");
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ])
            .expect("veth");
            run(&["ip", "link", "set", &inner, "netns", &ns]).expect("veth into ns");
            run(&["ip", "link", "set", &host, "master", &br]).expect("veth on bridge");
            run(&["ip", "link", "set", &host, "up"]).expect("veth up");
            let ip = format!("{}/24", net.ip(i));
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &ip, "dev", &inner,
            ])
            .expect("ns addr");
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ])
            .expect("ns link up");
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]).expect("ns lo up");
        }
        net
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, 10 + i)
    }

    /// `ip route VERB blackhole` for `to`'s address inside `from`'s namespace.
    fn blackhole(&self, verb: &str, from: usize, to: usize) -> Result<(), String> {
        let dest = format!("{}/32", self.ip(to));
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(from),
            "ip",
            "route",
            verb,
            "blackhole",
            &dest,
        ])
    }

    /// Drop every packet between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.blackhole("add", a, b).expect("cut");
        self.blackhole("add", b, a).expect("cut");
    }

    pub fn heal(&self, a: usize, b: usize) {
        let _ = self.blackhole("del", a, b);
        let _ = self.blackhole("del", b, a);
    }

    /// Cut node `a` off from every other node.
    pub fn isolate(&self, a: usize) {
        (0..self.size)
            .filter(|&b| b != a)
            .for_each(|b| self.cut(a, b));
    }

    pub fn rejoin(&self, a: usize) {
        (0..self.size)
            .filter(|&b| b != a)
            .for_each(|b| self.heal(a, b));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.size {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}
