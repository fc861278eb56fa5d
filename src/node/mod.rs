//! The node: opens the store and the sequencer, keeps `grastate.dat` true,
//! serves the client API and the admin socket, and stops gracefully.
//!
//! `backend.rs` answers client requests (the write path of DESIGN.md §2),
//! `admin.rs` answers the CLI, `status.rs` computes the wsrep status.

mod admin;
mod backend;
mod members;
mod metrics;
mod notify;
mod peers;
mod reload;
mod run;
mod status;

pub use peers::probe_peers_offline;
pub use reload::{LogReload, ReloadReport, RELOADABLE};
pub use run::run;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex as AsyncMutex};
use uuid::Uuid;

use crate::config::Config;
use crate::grastate::GrastateFile;
use crate::order::{fence, NodeInfo, Sequencer, SequencerOptions};
use crate::store::{Store, StoreOptions};

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Grastate(#[from] crate::grastate::GrastateError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Order(#[from] crate::order::OrderError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// How the daemon was asked to start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `quorated --bootstrap` (or the CLI's bootstrap request file).
    pub bootstrap: bool,
    /// `quorated --arbitrator`: as `arbitrator = true`, also across reloads.
    pub arbitrator: bool,
    /// The file the config came from, re-read on SIGHUP.
    pub config_path: Option<std::path::PathBuf>,
    /// Replaces the log filter on SIGHUP.
    pub log_reload: Option<LogReload>,
}

/// Marker the CLI leaves when systemd starts the daemon for a bootstrap.
pub const BOOTSTRAP_REQUEST_FILE: &str = "bootstrap.request";

pub struct Node {
    config: Config,
    store: Arc<Store>,
    seq: Sequencer,
    started: Instant,
    next_trx: AtomicU64,
    /// Set by `--force-safe-to-bootstrap` while running.
    forced_safe: AtomicBool,
    /// Serialises bootstrap and grastate updates.
    control: AsyncMutex<()>,
    shutdown_tx: watch::Sender<bool>,
    transport: Option<crate::transport::Transport>,
    /// Set once a graceful stop begins.
    leaving: AtomicBool,
    counters: metrics::ClientCounters,
    /// Joiners the leader is catching up right now.
    joining: Arc<std::sync::Mutex<std::collections::HashSet<crate::order::NodeId>>>,
    /// Who left or was removed (`--members`, `--remove-node`).
    members: Arc<members::MemberBook>,
    /// The settings in effect: `config` as SIGHUP last changed it.
    running: std::sync::Mutex<Config>,
    /// `replication.primary_timeout_ms` in effect, read on every request.
    primary_timeout_ms: AtomicU64,
    /// `replication.sync_wait_writes` in effect, read on every write.
    sync_wait_writes: AtomicBool,
}

impl Node {
    /// Open everything in `data_dir`. Does not serve yet.
    pub async fn open(config: Config) -> Result<Arc<Node>, NodeError> {
        let io = |context: String| move |source| NodeError::Io { context, source };
        std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
            "cannot create data_dir {}",
            config.data_dir.display()
        )))?;
        // A damaged grastate.dat stops the node: it does not guess.
        let grastate = GrastateFile::read(&config.grastate_path())?;
        let notice = fence::read_marker(&config.data_dir).map_err(io(format!(
            "cannot read the fence marker in {}",
            config.data_dir.display()
        )))?;
        if let Some(notice) = notice {
            Self::save_and_reset_fenced(&config, &notice).await?;
        }
        // A node told it was removed starts as a new, empty member.
        members::reset_if_removed(&config.data_dir).await?;
        let member_book = Arc::new(members::MemberBook::open(&config.data_dir)?);
        let store_options = StoreOptions {
            read_connections: config.storage.read_connections,
            max_writeset_bytes: config.replication.max_writeset_bytes,
            cert_window: config.replication.cert_window,
        };
        Self::check_data_dir_role(&config)?;
        let mut store = Arc::new(Self::open_store(&config, store_options.clone())?);
        let info = NodeInfo {
            name: config.node_name.clone(),
            repl_addr: config.advertise_addr().to_string(),
            api_addr: config.api_advertise(),
            arbitrator: config.arbitrator,
        };
        let transport = peers::open_transport(&config).await?;
        // A node of an older incarnation learns it before it takes part.
        if let Some(notice) = Self::newer_incarnation(&config, transport.as_ref(), &store).await {
            tracing::error!(
                "FENCED at start: this node holds incarnation {} of cluster {}, but {notice}, started \
                 by a forced bootstrap",
                store.position().incarnation,
                notice.state_uuid
            );
            fence::write_marker(&config.data_dir, &notice).map_err(io(format!(
                "cannot write the fence marker in {}",
                config.data_dir.display()
            )))?;
            drop(store);
            Self::save_and_reset_fenced(&config, &notice).await?;
            store = Arc::new(Self::open_store(&config, store_options)?);
        }
        let seq = Sequencer::open(
            &config.data_dir,
            info,
            &SequencerOptions {
                cluster_name: config.cluster_name.clone(),
                heartbeat_ms: config.replication.heartbeat_ms,
                election_timeout_ms: config.replication.election_timeout_ms,
                snapshot_every_entries: config.storage.snapshot_every_entries,
                log_retain_entries: config.storage.log_retain_entries,
                flow_control_limit: config.replication.flow_control_limit,
                max_snapshot_bytes: config.storage.max_snapshot_bytes,
            },
            store.clone(),
            transport.clone(),
        )
        .await?;
        let (shutdown_tx, _) = watch::channel(false);
        let node = Arc::new(Node {
            running: std::sync::Mutex::new(config.clone()),
            primary_timeout_ms: AtomicU64::new(config.replication.primary_timeout_ms),
            sync_wait_writes: AtomicBool::new(config.replication.sync_wait_writes),
            forced_safe: AtomicBool::new(false),
            config,
            store,
            seq,
            started: Instant::now(),
            next_trx: AtomicU64::new(rand::random::<u64>() >> 1),
            control: AsyncMutex::new(()),
            shutdown_tx,
            transport,
            leaving: AtomicBool::new(false),
            counters: metrics::ClientCounters::default(),
            joining: Arc::default(),
            members: member_book,
        });
        let position = node.store.position();
        tracing::info!(
            node = %node.config.node_name,
            node_id = node.seq.node_id(),
            %position,
            "opened data_dir {}",
            node.config.data_dir.display()
        );
        if let Some(g) = &grastate {
            if g.seqno >= 0 && g.seqno != position.seqno {
                tracing::warn!(
                    "grastate.dat says seqno {} but the database holds seqno {}; trusting the database",
                    g.seqno,
                    position.seqno
                );
            }
        }
        Ok(node)
    }

    /// A data node's database, or an arbitrator's in-memory stand-in.
    fn open_store(config: &Config, options: StoreOptions) -> Result<Store, NodeError> {
        if config.arbitrator {
            // No client reads it: one reader connection is plenty.
            let store = Store::open_in_memory(StoreOptions {
                read_connections: 1,
                ..options
            })?;
            // Its saved position goes in before anything reads it: the
            // start-up fence probe compares it with the peers'.
            crate::order::arbitrator::restore(&store, &config.data_dir).map_err(|source| {
                NodeError::Io {
                    context: format!(
                        "cannot restore the arbitrator's state in {}",
                        config.data_dir.display()
                    ),
                    source,
                }
            })?;
            return Ok(store);
        }
        Ok(Store::open(&config.data_dir, options)?)
    }

    /// A data_dir is a data node's or an arbitrator's for life: an
    /// arbitrator's log was never applied to a database, and a data node's
    /// database would sit unused (and stale) under an arbitrator.
    fn check_data_dir_role(config: &Config) -> Result<(), NodeError> {
        let db = config.db_path();
        let arbitrator_state = config.data_dir.join(crate::order::arbitrator::STATE_FILE);
        if config.arbitrator && db.exists() {
            return Err(NodeError::Refused(format!(
                "this node is configured as an arbitrator, but {} holds a database ({}): it was a data node. An arbitrator keeps no database: give it an empty data_dir, or start this node without --arbitrator (and without arbitrator = true)",
                config.data_dir.display(),
                db.display()
            )));
        }
        if !config.arbitrator && arbitrator_state.exists() {
            return Err(NodeError::Refused(format!(
                "{} belongs to an arbitrator ({} exists) and holds no database: start this node with --arbitrator (or arbitrator = true), or give the data node an empty data_dir and let it join by SST",
                config.data_dir.display(),
                arbitrator_state.display()
            )));
        }
        Ok(())
    }

    /// Whether this node is an arbitrator (Galera's garbd): it votes, holds
    /// no data, serves no clients, never leads.
    pub fn is_arbitrator(&self) -> bool {
        self.config.arbitrator
    }

    /// Voters that hold data (every voter but the arbitrators).
    fn data_voters(&self) -> std::collections::BTreeSet<crate::order::NodeId> {
        self.seq
            .members()
            .into_iter()
            .filter(|(_, info, voter)| *voter && !info.arbitrator)
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Keep what a fenced node held under `data_dir/fenced-*` and start it empty.
    async fn save_and_reset_fenced(
        config: &Config,
        notice: &fence::FenceNotice,
    ) -> Result<(), NodeError> {
        let saved = fence::save_and_reset(&config.data_dir, notice)
            .await
            .map_err(|source| NodeError::Io {
                context: format!(
                    "fenced node: cannot save its data under {}",
                    config.data_dir.display()
                ),
                source,
            })?;
        tracing::warn!(
            "fence: saved this node's database, log and {} write-sets past the fork point to {} \
             ({}); it now starts empty with a new node id and rejoins {} by SST",
            saved.writesets,
            saved.dir.display(),
            saved.writesets_file.display(),
            notice.by_node
        );
        Ok(())
    }

    /// Ask the configured peers (for at most 500 ms: it delays every start
    /// while peers are down) whether one runs a newer
    /// incarnation of this node's cluster.
    async fn newer_incarnation(
        config: &Config,
        transport: Option<&crate::transport::Transport>,
        store: &Store,
    ) -> Option<fence::FenceNotice> {
        let position = store.position();
        let t = transport?;
        if position.state_uuid.is_nil() || config.other_peers().is_empty() {
            return None;
        }
        let reports = peers::probe(t, &config.other_peers(), Duration::from_millis(500)).await;
        reports
            .into_iter()
            .filter(|r| {
                r.state_uuid == Some(position.state_uuid)
                    && r.incarnation.is_some_and(|i| i > position.incarnation)
            })
            .max_by_key(|r| r.incarnation)
            .map(|r| fence::FenceNotice {
                state_uuid: position.state_uuid,
                incarnation: r.incarnation.unwrap_or_default(),
                fork_index: r.fork_index,
                by_node: r.node_name.clone().unwrap_or_else(|| r.addr.clone()),
                by_addr: r.addr.clone(),
            })
    }

    fn joining_handle(
        &self,
    ) -> Arc<std::sync::Mutex<std::collections::HashSet<crate::order::NodeId>>> {
        self.joining.clone()
    }

    /// Not a member yet, but asking peers to admit this node.
    fn joining_now(&self) -> bool {
        !self.other_peers().is_empty() && !self.seq.voters().contains(&self.seq.node_id())
    }

    pub fn transport(&self) -> Option<&crate::transport::Transport> {
        self.transport.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Become ready: bootstrap if asked, else wait for the cluster.
    pub async fn start(self: &Arc<Self>, opts: StartOptions) -> Result<(), NodeError> {
        let request_file = self.config.data_dir.join(BOOTSTRAP_REQUEST_FILE);
        let requested = opts.bootstrap || request_file.exists();
        if request_file.exists() {
            let _ = std::fs::remove_file(&request_file);
        }
        if self.seq.is_initialized().await && !requested {
            tracing::info!("rejoining the primary component this node belonged to");
        } else if requested {
            match self.bootstrap().await {
                Ok(uuid) => {
                    tracing::info!(state_uuid = %uuid, "bootstrapped a new primary component")
                }
                Err(e) => {
                    self.write_grastate_running().await?;
                    return Err(e);
                }
            }
        } else if !self.config.other_peers().is_empty() {
            tracing::info!(
                "this node is not part of a cluster yet; it asks its peers to admit it and waits \
                 non-Primary. To create a new cluster from this node instead run `quorate --bootstrap-node`"
            );
        } else {
            tracing::warn!(
                "this node is not part of a cluster and has no peers; it waits non-Primary. \
                 To create a new cluster from this node run `quorate --bootstrap-node`"
            );
        }
        self.spawn_join_loop();
        self.spawn_fence_watcher();
        let node = self.clone();
        let shutdown = self.shutdown_tx.subscribe();
        tokio::spawn(async move { node.seq.resume_after_storage_faults(shutdown).await });
        self.spawn_event_logger();
        self.spawn_member_watch();
        self.write_grastate_running().await?;
        Ok(())
    }

    /// One log line per change an operator looks for: became or lost
    /// Primary, and leader changes (Galera's view changes).
    fn spawn_event_logger(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut shutdown = node.shutdown_tx.subscribe();
            let mut was_primary = false;
            let mut last_leader: Option<String> = None;
            loop {
                let primary = node.is_primary();
                let leader = node.leader_info().map(|(_, info)| info.name);
                if leader != last_leader {
                    match &leader {
                        Some(l) => {
                            tracing::info!(leader = %l, "leader changed: {l} now orders the write-sets")
                        }
                        None => tracing::info!("leader lost: no node orders the write-sets now"),
                    }
                    last_leader = leader;
                }
                if primary != was_primary {
                    let size = node.seq.voters().len();
                    if primary {
                        tracing::info!(
                            members = size,
                            "became Primary: {}",
                            if node.is_arbitrator() {
                                "this arbitrator votes in the primary component"
                            } else {
                                "this node serves clients"
                            }
                        );
                    } else if let Some(why) = node.not_primary_reason(false) {
                        tracing::warn!("lost Primary: {why}");
                    } else {
                        tracing::warn!(
                            "lost Primary: no majority of the {size} members reached this node within \
                             primary_timeout_ms; clients are refused until it is back"
                        );
                    }
                    was_primary = primary;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    /// A fenced node stops its Raft: it takes no part until restarted.
    fn spawn_fence_watcher(self: &Arc<Self>) {
        let node = self.clone();
        let mut fenced = self.seq.fence().subscribe();
        tokio::spawn(async move {
            while !*fenced.borrow_and_update() {
                if fenced.changed().await.is_err() {
                    return;
                }
            }
            notify::notify(
                "STATUS=fenced by a newer incarnation; restart with quorate --restart-node",
            );
            node.seq.shutdown().await;
        });
    }

    /// Start a new primary component from this node (guarded).
    ///
    /// On a node that is not a member yet, this creates the cluster. On a
    /// member that lost its quorum (the survivor of a crash of the others),
    /// it is Galera's `pc.bootstrap=YES`: only when forced, and it starts a
    /// new incarnation that fences the old one (DESIGN.md §4).
    pub async fn bootstrap(&self) -> Result<Uuid, NodeError> {
        if self.is_arbitrator() {
            tracing::warn!("bootstrap refused: this node is an arbitrator");
            return Err(NodeError::Refused(
                "this node is an arbitrator: it holds no database, so a primary component \
                 started from it would have no data. Bootstrap a data node instead (`quorate \
                 --show-cluster-status` names the one to use); the arbitrator rejoins it by itself"
                    .into(),
            ));
        }
        let _guard = self.control.lock().await;
        let grastate = GrastateFile::read(&self.config.grastate_path())?;
        let guard = crate::grastate::check_bootstrap(grastate.as_ref());
        let allowed = guard.is_ok() || self.forced_safe.load(Ordering::SeqCst);
        let position = self.store.position();
        if self.seq.is_initialized().await {
            let voters = self.seq.voters();
            if self.is_primary() {
                // Nothing to do (a sole member elects itself at start).
                return Ok(position.state_uuid);
            }
            if voters.len() == 1 && voters.contains(&self.seq.node_id()) {
                // The only member elects itself; nothing to force.
                return Ok(position.state_uuid);
            }
            if !allowed {
                tracing::warn!(
                    "bootstrap refused: safe_to_bootstrap is 0 in {} and this node is one of {} members",
                    self.config.grastate_path().display(),
                    voters.len()
                );
                return Err(NodeError::Refused(format!(
                    "safe_to_bootstrap is 0 in {}",
                    self.config.grastate_path().display()
                )));
            }
            let incarnation = self
                .seq
                .force_new_incarnation(self.config.replication.cert_window)
                .await?;
            // Now the only member: the flag is true by Galera's rule.
            self.forced_safe.store(false, Ordering::SeqCst);
            tracing::warn!(
                "forced bootstrap done: this node is Primary alone, incarnation {incarnation}; \
                 restart the other nodes with `quorate --restart-node` to rejoin (a node of the old \
                 incarnation saves what it holds and rejoins by SST)"
            );
            return Ok(position.state_uuid);
        }
        if !allowed {
            // A refused bootstrap changes nothing in grastate.dat.
            tracing::warn!(
                "bootstrap refused: safe_to_bootstrap is 0 in {}",
                self.config.grastate_path().display()
            );
            return Err(NodeError::Refused(format!(
                "safe_to_bootstrap is 0 in {}",
                self.config.grastate_path().display()
            )));
        }
        if position.state_uuid.is_nil() {
            self.refuse_empty_bootstrap_beside_data().await?;
        }
        let uuid = if position.state_uuid.is_nil() {
            Uuid::new_v4()
        } else {
            position.state_uuid
        };
        self.seq
            .bootstrap(
                uuid,
                position.incarnation,
                self.config.replication.cert_window,
            )
            .await?;
        Ok(uuid)
    }

    /// The foot-gun of a fresh install: bootstrapping an empty node while its
    /// peers hold the cluster's data would start a second, empty cluster.
    async fn refuse_empty_bootstrap_beside_data(&self) -> Result<(), NodeError> {
        let with_data: Vec<String> = self
            .probe_peers()
            .await
            .into_iter()
            .filter(|r| r.state_uuid.is_some_and(|u| !u.is_nil()))
            .map(|r| {
                format!(
                    "{} ({}:{}{})",
                    r.node_name.unwrap_or(r.addr),
                    r.state_uuid.unwrap_or_default(),
                    r.seqno.unwrap_or(-1),
                    if r.primary == Some(true) {
                        ", Primary"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if with_data.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            "bootstrap refused: this node has no data, but its peers do: {}",
            with_data.join(", ")
        );
        Err(NodeError::Refused(format!(
            "bootstrap refused: this node has no data (state UUID 00000000-...), but its peers hold \
             the cluster's: {}. Bootstrapping here would start a second, empty cluster. Start this \
             node normally (`quorate --restart-node`) and it joins them by SST; if they are not \
             Primary, bootstrap the node that `quorate --show-cluster-status` names.",
            with_data.join(", ")
        )))
    }

    pub fn force_safe_to_bootstrap(&self) {
        self.forced_safe.store(true, Ordering::SeqCst);
    }

    /// Galera's rule: 1 exactly while this node is the only member.
    /// Arbitrators do not count (a cluster cannot start from one), and an
    /// arbitrator itself is never safe to bootstrap.
    pub fn safe_to_bootstrap(&self) -> bool {
        if self.is_arbitrator() {
            return false;
        }
        if self.forced_safe.load(Ordering::SeqCst) {
            return true;
        }
        let voters = self.data_voters();
        voters.len() == 1 && voters.contains(&self.seq.node_id())
    }

    /// Keep grastate.dat true while running: seqno -1, the state UUID, safe_to_bootstrap.
    async fn write_grastate_running(&self) -> Result<(), NodeError> {
        self.grastate_now(-1)?
            .write_atomic(&self.config.grastate_path())?;
        Ok(())
    }

    /// What grastate.dat should say now, with `seqno`. A node that is not a
    /// member keeps what its file says about a cluster it knew (its UUID and
    /// flag): it has learned nothing new about that cluster.
    fn grastate_now(&self, seqno: i64) -> Result<GrastateFile, NodeError> {
        let position = self.store.position();
        let file = GrastateFile::read(&self.config.grastate_path())?;
        let member = !self.seq.voters().is_empty();
        let uuid = match (&file, position.state_uuid.is_nil()) {
            (Some(f), true) => f.uuid,
            _ => position.state_uuid,
        };
        let safe = if member || self.forced_safe.load(Ordering::SeqCst) {
            self.safe_to_bootstrap()
        } else {
            file.as_ref().is_some_and(|f| f.safe_to_bootstrap)
        };
        Ok(GrastateFile {
            uuid,
            seqno,
            safe_to_bootstrap: safe,
        })
    }

    /// Watch membership and keep grastate.dat in step with it.
    pub fn spawn_grastate_keeper(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut last: Option<(Uuid, bool)> = None;
            let mut shutdown = node.shutdown_tx.subscribe();
            loop {
                let now = (node.store.position().state_uuid, node.safe_to_bootstrap());
                if last != Some(now) && !node.seq.voters().is_empty() {
                    match node.write_grastate_running().await {
                        Ok(()) => last = Some(now),
                        Err(e) => tracing::error!("cannot update grastate.dat: {e}"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    /// Graceful stop: order stops, grastate.dat records the last committed
    /// seqno. With `leave` the node first leaves the membership; without,
    /// it stops as a member (a quick restart rejoins with no membership change).
    pub async fn stop(&self, leave: bool) -> Result<(), NodeError> {
        if leave {
            notify::notify("STOPPING=1\nSTATUS=leaving the cluster and stopping");
            self.leave().await;
        } else {
            notify::notify("STOPPING=1\nSTATUS=stopping; staying a member of the cluster");
            // The join loop must not ask to be let in while Raft stops.
            self.leaving.store(true, Ordering::SeqCst);
            self.hand_over_leadership().await;
            tracing::info!(
                "stopping without leaving: this node stays a member and counts against the quorum \
                 until it is back"
            );
        }
        let _ = self.shutdown_tx.send(true);
        // Decided before Raft stops: afterwards its metrics no longer say who the members were.
        let mut file = self.grastate_now(-1)?;
        self.seq.shutdown().await;
        let position = self.store.position();
        // An arbitrator holds no data: it has no seqno to record.
        file.seqno = if self.is_arbitrator() {
            -1
        } else {
            position.seqno
        };
        file.write_atomic(&self.config.grastate_path())?;
        tracing::info!(%position, safe_to_bootstrap = file.safe_to_bootstrap, "stopped gracefully; grastate.dat written");
        Ok(())
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    fn primary_timeout(&self) -> Duration {
        Duration::from_millis(self.primary_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn is_primary(&self) -> bool {
        self.seq.is_primary(self.primary_timeout())
    }
}
