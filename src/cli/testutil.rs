//! Test helpers for the CLI: a node configuration in a temporary directory
//! and a fake daemon on a real admin socket.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Ctx;
use crate::admin::{self, AdminHandler, Command, Response};
use crate::config::Config;
use crate::status::{ClusterStatus, ComponentStatus, LocalState};

/// Runs an action with captured output: `capture!(action, &ctx)` yields
/// `(result, stdout, stderr)`.
macro_rules! capture {
    ($action:path, $ctx:expr) => {{
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = $action(
            $ctx,
            &mut $crate::cli::Console {
                out: &mut out,
                err: &mut err,
            },
        )
        .await;
        (
            r,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }};
}
pub(crate) use capture;

/// A node `node-a` whose data and runtime directories live in a fresh
/// temporary directory (neither exists yet), systemd disabled.
pub fn ctx_in() -> (tempfile::TempDir, Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("quorate.toml");
    let text = format!(
        "node_name = \"node-a\"\ndata_dir = '{}'\nruntime_dir = '{}'\n",
        dir.path().join("data").display(),
        dir.path().join("run").display()
    );
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &config_path).unwrap();
    let ctx = Ctx {
        config,
        config_path,
        json: false,
        wait: Duration::from_secs(5),
        no_systemd: true,
    };
    (dir, ctx)
}

pub fn sample_status() -> ClusterStatus {
    ClusterStatus {
        node_name: "node-a".into(),
        cluster_name: "quorate".into(),
        cluster_conf_id: 2,
        cluster_size: 3,
        cluster_state_uuid: uuid::Uuid::from_u128(0x8348d5ea_5664_11e7_8628_262d8bf5ad3d),
        cluster_status: ComponentStatus::Primary,
        connected: true,
        gcomm_uuid: uuid::Uuid::from_u128(0xea4e26e9_5678_11e7_bc53_3e334c415aa8),
        last_committed: 4,
        local_state_uuid: uuid::Uuid::from_u128(0x8348d5ea_5664_11e7_8628_262d8bf5ad3d),
        ready: true,
        local_state: LocalState::Synced,
        local_cert_failures: 0,
        incoming_addresses: vec!["127.0.0.1:4001".into()],
        flow_control_paused: 0.0,
        incarnation: 1,
        leader: Some("node-a".into()),
        safe_to_bootstrap: false,
        peers: Vec::new(),
        fenced: None,
        fence_saved: None,
        not_primary_reason: None,
        arbitrator: false,
    }
}

struct Handler<F> {
    answer: F,
    seen: Arc<Mutex<Vec<Command>>>,
}

impl<F: Fn(Command) -> Response + Send + Sync + 'static> AdminHandler for Handler<F> {
    async fn handle(&self, cmd: Command) -> Response {
        self.seen.lock().unwrap().push(cmd.clone());
        (self.answer)(cmd)
    }
}

/// The real admin server with a scripted handler, on the socket of `ctx`.
/// Stops when dropped.
pub struct FakeDaemon {
    seen: Arc<Mutex<Vec<Command>>>,
    _stop: oneshot::Sender<()>,
}

impl FakeDaemon {
    pub async fn start(
        ctx: &Ctx,
        answer: impl Fn(Command) -> Response + Send + Sync + 'static,
    ) -> FakeDaemon {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Handler {
            answer,
            seen: Arc::clone(&seen),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let path = ctx.config.socket_path();
        tokio::spawn({
            let path = path.clone();
            async move {
                admin::serve(&path, handler, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        wait_for_socket(&path).await;
        FakeDaemon { seen, _stop: stop }
    }

    /// The commands received so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        self.seen.lock().unwrap().clone()
    }
}

async fn wait_for_socket(path: &Path) {
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fake daemon never listened on {}", path.display());
}
