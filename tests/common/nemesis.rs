//! Fault injection for cluster tests (Jepsen's "nemesis"): SIGKILL,
//! SIGSTOP/SIGCONT, graceful stop and restart of any node, and real packet
//! loss between any two nodes: blackhole routes between network namespaces
//! (`netns.rs`, root), or a UDP relay the test controls (`relay.rs`, no
//! root). `Faults` is the set of verbs any test can
//! use; `Schedule` is a seeded sequence of faults that `Faults::run` plays
//! against a cluster while clients work.
//!
//! Include it next to `mod common;` with
//! `#[path = "common/nemesis.rs"] mod nemesis;`.
#![allow(dead_code)]

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::cluster::Cluster;
use crate::common::netns::Net;

/// Links between nodes that a test can cut with real packet loss.
pub trait Links {
    fn cut(&self, a: usize, b: usize);
    fn heal(&self, a: usize, b: usize);
    /// What does the cutting, for the report.
    fn how(&self) -> &'static str;
}

impl Links for Net {
    fn cut(&self, a: usize, b: usize) {
        Net::cut(self, a, b)
    }
    fn heal(&self, a: usize, b: usize) {
        Net::heal(self, a, b)
    }
    fn how(&self) -> &'static str {
        "blackhole routes between network namespaces"
    }
}

/// Which node a fault hits: a fixed one, or whoever leads when it starts
/// (the sequencer, whose loss costs the most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Node(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, later started again (a crash: membership unchanged).
    Kill(Target),
    /// SIGSTOP, later SIGCONT (a hung process: it wakes up believing
    /// whatever it believed).
    Pause(Target),
    /// SIGTERM (the node leaves the membership), later started again.
    Stop(Target),
    /// Every link of the node dropped, later restored.
    Isolate(Target),
    /// The link between two nodes dropped (a partial partition: both still
    /// see the others).
    Cut(usize, usize),
    /// Every node SIGKILLed (a power cut), later all started again.
    KillAll,
    /// The nodes split into a minority and a majority (the first `len`
    /// nodes of a rotation by `at`), every link between the halves dropped.
    Split { at: usize, minority: usize },
}

impl Fault {
    pub fn is_partition(&self) -> bool {
        matches!(
            self,
            Fault::Isolate(_) | Fault::Cut(..) | Fault::Split { .. }
        )
    }
}

/// The kinds of fault a schedule draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kill,
    Pause,
    Stop,
    Isolate,
    Cut,
    KillAll,
    Split,
}

/// One step: wait `quiet`, inject `faults` (one, sometimes two at once),
/// hold them for `hold`, heal.
#[derive(Clone, Debug)]
pub struct Step {
    pub quiet: Duration,
    pub faults: Vec<Fault>,
    pub hold: Duration,
}

/// How often a step injects a second fault on top of the first (a crash
/// during a partition, say), which often costs the cluster its majority.
const SECOND_FAULT: f64 = 0.25;

/// A seeded schedule: the same seed and kinds give the same faults in the
/// same order with the same durations (the system's own timing is not
/// reproducible; which faults it meets is).
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Enough steps for any run; `run` stops when the time is up.
    pub fn generate(seed: u64, nodes: usize, kinds: &[Kind]) -> Schedule {
        assert!(!kinds.is_empty() && nodes >= 2);
        let mut rng = StdRng::seed_from_u64(seed);
        let fault = |rng: &mut StdRng| {
            let target = if rng.gen_bool(0.5) {
                Target::Leader
            } else {
                Target::Node(rng.gen_range(0..nodes))
            };
            match kinds[rng.gen_range(0..kinds.len())] {
                Kind::Kill => Fault::Kill(target),
                Kind::Pause => Fault::Pause(target),
                Kind::Stop => Fault::Stop(target),
                Kind::Isolate => Fault::Isolate(target),
                Kind::Cut => {
                    let a = rng.gen_range(0..nodes);
                    let b = (a + rng.gen_range(1..nodes)) % nodes;
                    Fault::Cut(a, b)
                }
                Kind::KillAll => Fault::KillAll,
                Kind::Split => Fault::Split {
                    at: rng.gen_range(0..nodes),
                    minority: rng.gen_range(1..=(nodes - 1) / 2),
                },
            }
        };
        let steps = (0..10_000)
            .map(|_| {
                let mut faults = vec![fault(&mut rng)];
                if rng.gen_bool(SECOND_FAULT) {
                    faults.push(fault(&mut rng));
                }
                Step {
                    quiet: Duration::from_millis(rng.gen_range(1_000..4_000)),
                    faults,
                    hold: Duration::from_millis(rng.gen_range(2_000..8_000)),
                }
            })
            .collect();
        Schedule { seed, steps }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    Killed,
    Paused,
    Stopped,
}

/// What the nemesis did, when (ms since the run began), for the report.
#[derive(Clone, Debug)]
pub struct Event {
    pub at_ms: u64,
    pub what: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8} ms  {}", self.at_ms, self.what)
    }
}

/// The fault verbs on a running cluster. Keeps track of what it broke so
/// `heal_all` can put everything back.
pub struct Faults<'c> {
    pub cluster: &'c mut Cluster,
    net: Option<&'c dyn Links>,
    state: Vec<State>,
    cuts: Vec<(usize, usize)>,
    start: Instant,
    pub events: Vec<Event>,
    /// Faults injected, by kind (for the report).
    pub injected: Vec<Fault>,
    /// Heals after which the cluster did not recover in time.
    pub unrecovered: Vec<String>,
    probe: ureq::Agent,
}

impl<'c> Faults<'c> {
    /// `net` cuts the links between the cluster's nodes (a `Net` when they
    /// live in namespaces, a `Relay`); without it partitions are refused.
    pub fn new(cluster: &'c mut Cluster, net: Option<&'c dyn Links>, start: Instant) -> Faults<'c> {
        let n = cluster.nodes.len();
        Faults {
            cluster,
            net,
            state: vec![State::Up; n],
            cuts: Vec::new(),
            start,
            events: Vec::new(),
            injected: Vec::new(),
            unrecovered: Vec::new(),
            probe: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(2))
                .build(),
        }
    }

    pub fn can_partition(&self) -> bool {
        self.net.is_some()
    }

    fn note(&mut self, what: String) {
        let at_ms = self.start.elapsed().as_millis() as u64;
        eprintln!("nemesis {at_ms:>8} ms  {what}");
        self.events.push(Event { at_ms, what });
    }

    fn name(&self, i: usize) -> String {
        self.cluster.nodes[i].name.clone()
    }

    /// `/status` of node `i`, if it answers within two seconds.
    pub fn status(&self, i: usize) -> Option<Value> {
        if self.state[i] != State::Up {
            return None;
        }
        let url = self.cluster.nodes[i].url("/status");
        self.probe.get(&url).call().ok()?.into_json().ok()
    }

    /// The node the running nodes name as leader, if one is named.
    pub fn leader(&self) -> Option<usize> {
        (0..self.state.len()).find_map(|i| {
            let s = self.status(i)?;
            let name = s["store"]["leader"]["node_id"].as_str()?;
            self.cluster.nodes.iter().position(|n| n.name == name)
        })
    }

    /// The running node `t` names, if there is one.
    fn resolve(&self, t: Target) -> Option<usize> {
        let i = match t {
            Target::Node(i) => i,
            Target::Leader => self.leader()?,
        };
        (self.state[i] == State::Up).then_some(i)
    }

    pub fn kill(&mut self, i: usize) {
        self.cluster.nodes[i].kill();
        self.state[i] = State::Killed;
        self.note(format!("kill {}", self.name(i)));
    }

    pub fn pause(&mut self, i: usize) {
        self.cluster.nodes[i].signal(Signal::SIGSTOP);
        self.state[i] = State::Paused;
        self.note(format!("pause {}", self.name(i)));
    }

    pub fn resume(&mut self, i: usize) {
        self.cluster.nodes[i].signal(Signal::SIGCONT);
        self.state[i] = State::Up;
        self.note(format!("resume {}", self.name(i)));
    }

    /// Graceful stop: the node leaves the membership.
    pub fn stop(&mut self, i: usize) {
        let status = self.cluster.nodes[i].stop();
        self.state[i] = State::Stopped;
        self.note(format!("stop {} ({status})", self.name(i)));
    }

    /// Start a killed or stopped node again; it rejoins by itself.
    pub fn restart(&mut self, i: usize) {
        self.cluster.nodes[i].start(&[]);
        self.state[i] = State::Up;
        self.note(format!("restart {}", self.name(i)));
    }

    fn net(&self) -> &'c dyn Links {
        self.net
            .expect("partitions need a Net (network namespaces, root) or a Relay")
    }

    /// Cut a link unless it is cut already (two faults may share one).
    fn link_down(&mut self, a: usize, b: usize) {
        if !self.cuts.iter().any(|&c| c == (a, b) || c == (b, a)) {
            self.net().cut(a, b);
            self.cuts.push((a, b));
        }
    }

    fn link_up(&mut self, a: usize, b: usize) {
        if self.cuts.iter().any(|&c| c == (a, b) || c == (b, a)) {
            self.net().heal(a, b);
            self.cuts.retain(|&c| c != (a, b) && c != (b, a));
        }
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.link_down(a, b);
        self.note(format!("cut {} <-> {}", self.name(a), self.name(b)));
    }

    pub fn heal(&mut self, a: usize, b: usize) {
        self.link_up(a, b);
        self.note(format!("heal {} <-> {}", self.name(a), self.name(b)));
    }

    pub fn isolate(&mut self, i: usize) {
        for j in (0..self.state.len()).filter(|&j| j != i) {
            self.link_down(i, j);
        }
        self.note(format!("isolate {}", self.name(i)));
    }

    pub fn rejoin(&mut self, i: usize) {
        for j in (0..self.state.len()).filter(|&j| j != i) {
            self.link_up(i, j);
        }
        self.note(format!("rejoin {}", self.name(i)));
    }

    /// Inject `fault`; returns the healing to do later, or `None` when the
    /// target could not be resolved (no leader named right now).
    pub fn inject(&mut self, fault: Fault) -> Option<Heal> {
        let heal = match fault {
            Fault::Kill(t) => {
                let i = self.resolve(t)?;
                self.kill(i);
                Heal::Restart(i)
            }
            Fault::Pause(t) => {
                let i = self.resolve(t)?;
                self.pause(i);
                Heal::Resume(i)
            }
            Fault::Stop(t) => {
                let i = self.resolve(t)?;
                self.stop(i);
                Heal::Restart(i)
            }
            Fault::Isolate(t) => {
                let i = self.resolve(t)?;
                self.isolate(i);
                Heal::Rejoin(i)
            }
            Fault::Cut(a, b) => {
                self.cut(a, b);
                Heal::Link(a, b)
            }
            Fault::KillAll => {
                for i in 0..self.state.len() {
                    if matches!(self.state[i], State::Up | State::Paused) {
                        self.kill(i);
                    }
                }
                Heal::RestartAll
            }
            Fault::Split { at, minority } => {
                let n = self.state.len();
                let small: Vec<usize> = (0..minority).map(|j| (at + j) % n).collect();
                for &a in &small {
                    for b in (0..n).filter(|b| !small.contains(b)) {
                        self.link_down(a, b);
                    }
                }
                let names: Vec<String> = small.iter().map(|&i| self.name(i)).collect();
                self.note(format!("split {names:?} from the rest"));
                Heal::Mend
            }
        };
        self.injected.push(fault);
        Some(heal)
    }

    pub fn undo(&mut self, heal: Heal) {
        match heal {
            Heal::Restart(i) if matches!(self.state[i], State::Killed | State::Stopped) => {
                self.restart(i)
            }
            Heal::Restart(_) => {}
            // SIGKILL works on a stopped process too: then it is restarted.
            Heal::Resume(i) if self.state[i] == State::Paused => self.resume(i),
            Heal::Resume(_) => {}
            Heal::Rejoin(i) => self.rejoin(i),
            Heal::Link(a, b) => self.heal(a, b),
            Heal::RestartAll => {
                for i in 0..self.state.len() {
                    if self.state[i] == State::Killed {
                        self.restart(i);
                    }
                }
            }
            Heal::Mend => {
                for (a, b) in std::mem::take(&mut self.cuts) {
                    self.net().heal(a, b);
                }
                self.note("mend the split".into());
            }
        }
    }

    /// Undo everything still broken.
    pub fn heal_all(&mut self) {
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.net().heal(a, b);
        }
        for i in 0..self.state.len() {
            match self.state[i] {
                State::Up => {}
                State::Paused => self.resume(i),
                State::Killed | State::Stopped => self.restart(i),
            }
        }
        self.note("healed everything".into());
    }

    /// Whether every node is a Primary member of a full-size cluster.
    fn whole(&self) -> bool {
        let n = self.state.len() as i64;
        (0..self.state.len()).all(|i| {
            self.status(i).is_some_and(|s| {
                s["cluster"]["cluster_status"] == "Primary" && s["cluster"]["cluster_size"] == n
            })
        })
    }

    /// Wait until the cluster is whole again; says so when it is not.
    pub fn await_recovery(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.whole() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let what = format!("cluster not whole {within:?} after healing");
        self.note(what.clone());
        self.unrecovered.push(what);
        false
    }

    /// Play `schedule` until `stop` is set or `until` passes, one fault at
    /// a time, waiting for recovery after each heal. Leaves everything
    /// healed.
    pub fn run(&mut self, schedule: &Schedule, until: Instant, stop: &AtomicBool) {
        for step in &schedule.steps {
            if !sleep_until(step.quiet, until, stop) {
                break;
            }
            let mut heals = Vec::new();
            for &fault in &step.faults {
                match self.inject(fault) {
                    Some(heal) => heals.push(heal),
                    None => self.note(format!(
                        "{fault:?}: no leader named or node already down, skipped"
                    )),
                }
            }
            if heals.is_empty() {
                continue;
            }
            sleep_until(step.hold, until, stop);
            for heal in heals.into_iter().rev() {
                self.undo(heal);
            }
            self.await_recovery(Duration::from_secs(60));
        }
        self.heal_all();
    }
}

/// What undoes an injected fault.
#[derive(Clone, Copy, Debug)]
pub enum Heal {
    Restart(usize),
    Resume(usize),
    Rejoin(usize),
    Link(usize, usize),
    RestartAll,
    Mend,
}

/// Sleep `d`, but not past `until` nor after `stop`; false if cut short.
fn sleep_until(d: Duration, until: Instant, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
