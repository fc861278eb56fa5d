//! Command-line syntax of `quorate`: `cfg-cm-cluster`-style action flags
//! (exactly one per call) plus the `tls`, `bench`, `demo` and `shell`
//! subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::demo::DemoArgs;
use super::shell::ShellArgs;
use crate::bench::BenchArgs;
use crate::config::DEFAULT_CONFIG_PATH;

const ABOUT: &str = "Administer the local quorate node (Galera-style SQLite cluster)";

const LONG_ABOUT: &str = "\
Administer the local quorate node.

Each action asks the running daemon (quorated) over its admin socket
(runtime_dir/quorate.sock). When the daemon is not running, the action works
on the files in data_dir instead (grastate.dat, db.sqlite), so the node can
be inspected and repaired after a crash.";

const AFTER_LONG_HELP: &str = "\
Exit status:
  0  success
  1  error
  2  usage error
  3  bootstrap refused: this node is not safe to bootstrap
  4  the daemon is not running (or exited) and the action needs it
  5  timed out waiting for the node

Examples:
  quorate --show-cluster-status
  quorate --members
  quorate --remove-node node-c
  quorate --safe-to-bootstrap
  quorate --bootstrap-node --wait 120
  quorate demo
  quorate shell --node 127.0.0.1:4001
  quorate tls ca --out /etc/quorate/tls
  quorate tls node node-a --addr 192.168.1.11 --ca-dir /etc/quorate/tls --out /etc/quorate/tls";

#[derive(Debug, Parser)]
#[command(
    name = "quorate",
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Configuration file of the local node.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(flatten)]
    pub action: ActionFlags,

    /// Print machine-readable JSON (--show-cluster-status, --members,
    /// --recover, --safe-to-bootstrap).
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the node to come up (--bootstrap-node,
    /// --restart-node).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,

    /// Start the daemon directly even when systemd has a quorated unit
    /// (--bootstrap-node, --restart-node). systemd is only used for the
    /// default config file or one its unit names.
    #[arg(long)]
    pub no_systemd: bool,

    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// The action flags: exactly one per call.
#[derive(Debug, Args)]
#[group(id = "action", required = true, multiple = false)]
pub struct ActionFlags {
    /// Start a new primary component (cluster) from this node's data.
    /// Refused (exit 3) unless safe_to_bootstrap is 1 or the node has never
    /// started. Starts the daemon in bootstrap mode if it is not running and
    /// waits until it is Primary.
    #[arg(long)]
    pub bootstrap_node: bool,

    /// (Re)start the daemon normally: it joins its cluster. Uses systemd
    /// when it manages quorated; otherwise refuses while the daemon runs.
    #[arg(long)]
    pub restart_node: bool,

    /// Print safe_to_bootstrap (0 or 1): whether this node may bootstrap.
    #[arg(long)]
    pub safe_to_bootstrap: bool,

    /// Set safe_to_bootstrap to 1, so that --bootstrap-node is accepted.
    /// Only do this on the most advanced node, when no other node of the
    /// cluster runs a primary component.
    #[arg(long)]
    pub force_safe_to_bootstrap: bool,

    /// Print the wsrep status table of this node (--json for scripts).
    #[arg(long)]
    pub show_cluster_status: bool,

    /// Print the position of the local data as uuid:seqno, read from the
    /// database itself (also after a crash).
    #[arg(long)]
    pub recover: bool,

    /// List every member and every node seen recently: name, addresses,
    /// role (voter, learner, arbitrator), state (alive, left, failed,
    /// joining), last committed seqno and how far behind it is (--json for
    /// scripts).
    #[arg(long)]
    pub members: bool,

    /// Remove a member that is gone for good (dead hardware) from the
    /// membership, so that the quorum counts the machines that exist.
    /// Refused when the node is alive (stop it gracefully instead) or when
    /// the others would lose quorum. A removed node that comes back rejoins
    /// only as a new member, its data replaced by SST.
    #[arg(long, value_name = "NAME")]
    pub remove_node: Option<String>,

    /// Print the version of quorate.
    #[arg(long)]
    pub version: bool,
}

/// The one action a call performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    BootstrapNode,
    RestartNode,
    SafeToBootstrap,
    ForceSafeToBootstrap,
    ShowClusterStatus,
    Recover,
    Members,
    RemoveNode(String),
    Version,
}

impl ActionFlags {
    /// The selected action; `None` only when a subcommand replaced it (the
    /// `action` group guarantees at most one flag is set).
    pub fn action(&self) -> Option<Action> {
        let flags = [
            (self.bootstrap_node, Action::BootstrapNode),
            (self.restart_node, Action::RestartNode),
            (self.safe_to_bootstrap, Action::SafeToBootstrap),
            (self.force_safe_to_bootstrap, Action::ForceSafeToBootstrap),
            (self.show_cluster_status, Action::ShowClusterStatus),
            (self.recover, Action::Recover),
            (self.members, Action::Members),
            (self.version, Action::Version),
        ];
        if let Some(name) = &self.remove_node {
            return Some(Action::RemoveNode(name.clone()));
        }
        flags
            .into_iter()
            .find_map(|(set, action)| set.then_some(action))
    }
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Make the cluster CA and node certificates.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Measure the throughput and latency of a running cluster.
    Bench(BenchArgs),
    /// Run a throw-away cluster on 127.0.0.1 until Ctrl-C, to try quorate.
    Demo(DemoArgs),
    /// An interactive SQL client of one node (reads statements from stdin
    /// when it is not a terminal).
    Shell(ShellArgs),
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a new cluster CA: DIR/ca.pem and DIR/ca.key (0600).
    Ca {
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write a node certificate signed by the CA: DIR/NAME.pem and
    /// DIR/NAME.key (0600).
    Node {
        /// The node's name; must equal node_name in its quorate.toml.
        name: String,
        /// The node's addresses (IP or DNS name), comma-separated or repeated.
        #[arg(
            long = "addr",
            value_name = "IP[,IP...]",
            value_delimiter = ',',
            required = true
        )]
        addrs: Vec<String>,
        /// Directory holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("quorate").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_action_flag_maps_to_its_action() {
        for (flag, action) in [
            ("--bootstrap-node", Action::BootstrapNode),
            ("--restart-node", Action::RestartNode),
            ("--safe-to-bootstrap", Action::SafeToBootstrap),
            ("--force-safe-to-bootstrap", Action::ForceSafeToBootstrap),
            ("--show-cluster-status", Action::ShowClusterStatus),
            ("--recover", Action::Recover),
            ("--members", Action::Members),
            ("--version", Action::Version),
        ] {
            let cli = parse(&[flag]).unwrap();
            assert_eq!(cli.action.action(), Some(action), "{flag}");
            assert_eq!(cli.config, PathBuf::from(DEFAULT_CONFIG_PATH));
            assert!(cli.command.is_none());
        }
    }

    #[test]
    fn options_around_the_action() {
        let cli = parse(&["--config", "/tmp/q.toml", "--show-cluster-status", "--json"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("/tmp/q.toml"));
        assert!(cli.json);
        assert_eq!(cli.wait, 60);
        let cli = parse(&["--bootstrap-node", "--wait", "5", "--no-systemd"]).unwrap();
        assert_eq!(cli.wait, 5);
        assert!(cli.no_systemd);
    }

    #[test]
    fn exactly_one_action() {
        let e = parse(&[]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["--recover", "--safe-to-bootstrap"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["--json"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn tls_subcommands() {
        let cli = parse(&["tls", "ca", "--out", "/etc/quorate/tls"]).unwrap();
        assert_eq!(cli.action.action(), None);
        assert!(
            matches!(cli.command, Some(Sub::Tls { command: TlsCommand::Ca { out } }) if out == Path::new("/etc/quorate/tls"))
        );

        let cli = parse(&[
            "tls",
            "node",
            "node-a",
            "--addr",
            "10.0.0.1,10.0.0.2",
            "--addr",
            "a.example",
            "--ca-dir",
            "ca",
            "--out",
            "o",
        ])
        .unwrap();
        match cli.command {
            Some(Sub::Tls {
                command:
                    TlsCommand::Node {
                        name,
                        addrs,
                        ca_dir,
                        out,
                    },
            }) => {
                assert_eq!(name, "node-a");
                assert_eq!(addrs, ["10.0.0.1", "10.0.0.2", "a.example"]);
                assert_eq!(ca_dir, PathBuf::from("ca"));
                assert_eq!(out, PathBuf::from("o"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = parse(&["tls", "node", "node-a", "--ca-dir", "ca", "--out", "o"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn remove_node_takes_a_name() {
        let cli = parse(&["--remove-node", "node-c"]).unwrap();
        assert_eq!(
            cli.action.action(),
            Some(Action::RemoveNode("node-c".into()))
        );
        let e = parse(&["--remove-node"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = parse(&["--remove-node", "node-c", "--members"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn action_and_subcommand_do_not_mix() {
        assert!(parse(&["--recover", "tls", "ca", "--out", "x"]).is_err());
    }

    #[test]
    fn bench_subcommand_parses() {
        // `--help` is accepted whatever arguments bench itself requires.
        let e = parse(&["bench", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("Usage: quorate bench"), "{e}");
    }

    #[test]
    fn demo_and_shell_subcommands() {
        let cli = parse(&["demo"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Sub::Demo(DemoArgs {
                nodes: 3,
                dir: None,
                keep: false
            }))
        ));
        let cli = parse(&["demo", "--nodes", "5", "--dir", "/tmp/d", "--keep"]).unwrap();
        assert!(
            matches!(cli.command, Some(Sub::Demo(DemoArgs { nodes: 5, dir: Some(d), keep: true })) if d == Path::new("/tmp/d"))
        );
        let e = parse(&["demo", "--nodes", "4"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);

        let cli = parse(&["shell"]).unwrap();
        assert!(
            matches!(cli.command, Some(Sub::Shell(ShellArgs { node, json: false })) if node == "127.0.0.1:4001")
        );
        let cli = parse(&["shell", "--node", "10.0.0.1:4001", "--json"]).unwrap();
        assert!(
            matches!(cli.command, Some(Sub::Shell(ShellArgs { node, json: true })) if node == "10.0.0.1:4001")
        );
    }

    #[test]
    fn long_help_documents_exit_codes_and_actions() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--bootstrap-node",
            "--restart-node",
            "--safe-to-bootstrap",
            "--force-safe-to-bootstrap",
            "--show-cluster-status",
            "--recover",
            "--members",
            "--remove-node <NAME>",
            "--version",
            "3  bootstrap refused",
            "4  the daemon is not running",
            "5  timed out",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
    }
}
