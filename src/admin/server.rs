//! The daemon's side of the admin socket.
//!
//! The socket file is mode 0660, but the mode alone is not the guard: a
//! runtime directory created by hand, or a umask of 0 while binding, could
//! leave it wider. Every connection's peer credentials are therefore checked
//! against the rule in [`peer_allowed`] before any request is read.

use std::ffi::CString;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{getgrouplist, Gid, Uid, User};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::log_limit::LogLimiter;

use super::frame::{read_frame, write_message};
use super::{AdminError, AdminHandler, Command, Request, Response, PROTOCOL_VERSION};

/// Mode of the socket file: the daemon's user and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Mode of a runtime directory `serve` has to create. Group and others need
/// to traverse it to reach the socket; the socket's own mode and the peer
/// check decide who gets in.
const RUNTIME_DIR_MODE: u32 = 0o755;

/// A connection that sends nothing for this long is dropped, so forgotten
/// clients cannot pile up tasks in the daemon.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a refused peer may take to send the request it gets refused.
const DENIED_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once. The `quorate` CLI opens one per command, so
/// this is only ever reached by a runaway script or a flood; the next ones
/// are told why (up to as many again), the rest closed unanswered.
pub const MAX_CONNECTIONS: usize = 256;

/// How long in-flight requests may finish after shutdown is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The access rule: root, the daemon's own user, and members of the socket
/// file's group (as primary group or in `groups`, the peer user's
/// supplementary groups) may use the admin socket.
pub fn peer_allowed(
    peer_uid: u32,
    peer_gid: u32,
    groups: &[u32],
    daemon_uid: u32,
    socket_gid: u32,
) -> bool {
    peer_uid == 0
        || peer_uid == daemon_uid
        || peer_gid == socket_gid
        || groups.contains(&socket_gid)
}

/// Serves the admin socket at `path` until `shutdown` completes, then
/// removes the socket file. Fails at start when another daemon answers on
/// `path` or the socket cannot be set up.
pub async fn serve<H: AdminHandler>(
    path: &Path,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let listener = bind(path).await?;
    let bound = std::fs::metadata(path).map_err(AdminError::io("inspect admin socket", path))?;
    let access = Arc::new(Access {
        path: path.to_path_buf(),
        daemon_uid: Uid::effective().as_raw(),
        bound_gid: bound.gid(),
    });
    tracing::info!(socket = %path.display(), "admin socket listening");

    let mut tasks = JoinSet::new();
    let served = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let told = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusals = LogLimiter::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    let access = Arc::clone(&access);
                    if let Ok(permit) = served.clone().try_acquire_owned() {
                        tasks.spawn(async move {
                            let verdict = access.authorize(&stream).await;
                            handle_conn(stream, handler, verdict).await;
                            drop(permit);
                        });
                        continue;
                    }
                    if let Some(held_back) = refusals.allow() {
                        tracing::warn!(
                            limit = MAX_CONNECTIONS,
                            refused_since_last_warning = held_back,
                            "admin socket: refused a connection: {MAX_CONNECTIONS} are open, the \
                             limit; look for a script that opens connections and does not close \
                             them"
                        );
                    }
                    if let Ok(permit) = told.clone().try_acquire_owned() {
                        tasks.spawn(async move {
                            let busy = format!(
                                "the admin socket serves at most {MAX_CONNECTIONS} connections at \
                                 once and that many are open; retry when some have closed"
                            );
                            handle_conn(stream, handler, Err(busy)).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on it.
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    remove_if_ours(path, &bound);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
    }
    tracing::info!(socket = %path.display(), "admin socket closed");
    Ok(())
}

/// Creates the runtime directory, refuses a live socket, clears a stale one,
/// binds and sets the mode.
async fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(RUNTIME_DIR_MODE)
            .create(dir)
            .map_err(AdminError::io("create runtime directory", dir))?;
    }
    clear_stale(path).await?;
    let listener = UnixListener::bind(path).map_err(AdminError::io("bind admin socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(AdminError::io("set the mode of admin socket", path))?;
    Ok(listener)
}

/// A socket file nobody answers on is left over from a daemon that died;
/// one somebody answers on belongs to a live daemon and must not be stolen.
async fn clear_stale(path: &Path) -> Result<(), AdminError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AdminError::io("inspect admin socket", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::Io {
            action: "use as admin socket",
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; refusing to remove it",
            ),
        });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(AdminError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AdminError::io("remove stale admin socket", path)(e)),
            }
            tracing::info!(socket = %path.display(), "removed stale admin socket");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AdminError::io("probe admin socket", path)(e)),
    }
}

/// Removes the socket file only if it is still the one this server bound:
/// a newer daemon may have replaced it after deciding ours was stale.
fn remove_if_ours(path: &Path, bound: &std::fs::Metadata) {
    let Ok(now) = std::fs::symlink_metadata(path) else {
        return;
    };
    if now.dev() == bound.dev() && now.ino() == bound.ino() {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove admin socket");
        }
    }
}

struct Access {
    path: PathBuf,
    daemon_uid: u32,
    /// Group of the socket when bound; used if the file cannot be read now.
    bound_gid: u32,
}

impl Access {
    /// `Ok(())` when the peer may use the socket, else the message to send.
    async fn authorize(&self, stream: &UnixStream) -> Result<(), String> {
        let peer = match peer_credentials(stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "admin connection refused: cannot read peer credentials");
                return Err(format!(
                    "permission denied: cannot read peer credentials: {e}"
                ));
            }
        };
        // Read the group each time: an operator may chgrp the socket (or
        // systemd's RuntimeDirectory may) after the daemon started.
        let socket_gid = std::fs::metadata(&self.path)
            .map(|m| m.gid())
            .unwrap_or(self.bound_gid);
        if peer_allowed(peer.uid, peer.gid, &[], self.daemon_uid, socket_gid) {
            return Ok(());
        }
        // Only now pay for a group database lookup (NSS may be slow or remote).
        let uid = peer.uid;
        let groups = tokio::task::spawn_blocking(move || supplementary_groups(uid))
            .await
            .unwrap_or_default();
        if peer_allowed(peer.uid, peer.gid, &groups, self.daemon_uid, socket_gid) {
            return Ok(());
        }
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            "admin connection refused: uid {} is not root, the daemon's user or in group {}",
            peer.uid,
            socket_gid
        );
        Err(format!(
            "permission denied: uid {} is not root, the daemon's user (uid {}) or a member of the admin socket's group (gid {})",
            peer.uid, self.daemon_uid, socket_gid
        ))
    }
}

/// The supplementary groups of `uid` from the group database; empty when the
/// user is unknown (a uid without a passwd entry has no group memberships).
fn supplementary_groups(uid: u32) -> Vec<u32> {
    let user = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::debug!(uid, error = %e, "cannot look up user");
            return Vec::new();
        }
    };
    let Ok(name) = CString::new(user.name) else {
        return Vec::new();
    };
    match getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(Gid::as_raw).collect(),
        Err(e) => {
            tracing::debug!(uid, error = %e, "cannot list the user's groups");
            Vec::new()
        }
    }
}

/// `SO_PEERCRED` of a connected Unix stream (either side).
pub fn peer_credentials(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let cred = getsockopt(stream, sockopt::PeerCredentials).map_err(std::io::Error::from)?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Serves one connection: requests until the client closes, idles out or
/// sends something unreadable. `verdict` is the access decision; a refused
/// peer gets its error and the connection is closed; its request is read
/// but never parsed.
async fn handle_conn<H: AdminHandler>(
    mut stream: UnixStream,
    handler: Arc<H>,
    verdict: Result<(), String>,
) {
    if let Err(message) = verdict {
        // Let the client finish writing its request first: closing before
        // that would fail its write with EPIPE and hide the reason.
        let _ = tokio::time::timeout(DENIED_READ_TIMEOUT, read_frame(&mut stream)).await;
        let _ = write_message(&mut stream, &Response::Error(message)).await;
        return;
    }
    loop {
        let body = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Ok(Some(body))) => body,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin connection: bad frame");
                // The peer may already be gone; the close says the rest.
                let _ =
                    write_message(&mut stream, &Response::Error(format!("bad frame: {e}"))).await;
                return;
            }
        };
        let command = match parse_request(&body) {
            Ok(c) => c,
            Err(message) => {
                tracing::debug!(%message, "admin connection: bad request");
                let _ = write_message(&mut stream, &Response::Error(message)).await;
                return;
            }
        };
        tracing::debug!(?command, "admin request");
        let response = handler.handle(command).await;
        if let Err(e) = write_message(&mut stream, &response).await {
            tracing::debug!(error = %e, "admin connection: cannot send response");
            return;
        }
    }
}

/// The version is checked before the command is decoded, so a CLI from
/// another release gets "wrong version" rather than "unknown variant".
fn parse_request(body: &[u8]) -> Result<Command, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "admin protocol version {v} is not supported: this quorated speaks version {PROTOCOL_VERSION}; use the quorate CLI of the same release"
            ))
        }
        None => return Err("malformed request: no protocol version".into()),
    }
    let request: Request =
        serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))?;
    Ok(request.command)
}

#[cfg(test)]
mod tests {
    use super::super::frame::{read_message, write_frame};
    use super::*;
    use crate::writeset::Position;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;

    /// Answers from a fixed table and counts the calls, so tests can tell
    /// whether a bad request reached the handler.
    #[derive(Default)]
    struct FakeHandler {
        calls: AtomicUsize,
    }

    impl AdminHandler for FakeHandler {
        async fn handle(&self, cmd: Command) -> Response {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match cmd {
                Command::SafeToBootstrap => Response::SafeToBootstrap(true),
                Command::Recover => Response::Position(Position {
                    state_uuid: uuid::Uuid::nil(),
                    seqno: 4,
                    incarnation: 1,
                }),
                Command::Bootstrap => Response::BootstrapRefused {
                    reason: "safe_to_bootstrap is 0".into(),
                },
                _ => Response::Done,
            }
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        handler: Arc<FakeHandler>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), AdminError>>,
    }

    impl Running {
        async fn stop(mut self) -> Result<(), AdminError> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            self.task.await.unwrap()
        }
    }

    async fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        // A runtime dir that does not exist yet: serve must create it.
        let path = dir.path().join("run").join("quorate.sock");
        start_at(dir, path).await
    }

    async fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Running {
        let handler = Arc::new(FakeHandler::default());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let path = path.clone();
            let handler = Arc::clone(&handler);
            async move {
                serve(&path, handler, async move {
                    let _ = rx.await;
                })
                .await
            }
        });
        wait_for_socket(&path).await;
        Running {
            _dir: dir,
            path,
            handler,
            stop: Some(tx),
            task,
        }
    }

    async fn wait_for_socket(path: &Path) {
        for _ in 0..200 {
            if UnixStream::connect(path).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("admin socket {} never answered", path.display());
    }

    async fn raw_exchange(path: &Path, bytes: &[u8]) -> Result<Response, super::super::FrameError> {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        read_message(&mut s).await
    }

    #[test]
    fn peer_allowed_named_cases() {
        let daemon = 998;
        let group = 997;
        assert!(peer_allowed(0, 0, &[], daemon, group), "root");
        assert!(
            peer_allowed(daemon, 5000, &[], daemon, group),
            "the daemon's user"
        );
        assert!(
            peer_allowed(1000, group, &[], daemon, group),
            "primary group"
        );
        assert!(
            peer_allowed(1000, 1000, &[4, group, 27], daemon, group),
            "supplementary group"
        );
        assert!(
            !peer_allowed(1000, 1000, &[4, 27], daemon, group),
            "stranger"
        );
        assert!(
            !peer_allowed(1000, 1000, &[], daemon, group),
            "stranger without groups"
        );
        // Being in the daemon's uid number as a *group* grants nothing.
        assert!(!peer_allowed(1000, daemon, &[daemon], daemon, group));
    }

    #[test]
    fn peer_allowed_exhaustive() {
        let uids = [0u32, 1, 998, 1000];
        let gids = [0u32, 1, 997, 1000];
        let group_sets: [&[u32]; 5] = [&[], &[0], &[997], &[1, 1000], &[1, 997, 1000]];
        let mut allowed = 0;
        let mut total = 0;
        for &peer_uid in &uids {
            for &peer_gid in &gids {
                for groups in group_sets {
                    for &daemon_uid in &uids {
                        for &socket_gid in &gids {
                            let in_group = peer_gid == socket_gid || groups.contains(&socket_gid);
                            let expected = match (peer_uid, in_group) {
                                (0, _) => true,
                                (_, true) => true,
                                (u, false) => u == daemon_uid,
                            };
                            let got =
                                peer_allowed(peer_uid, peer_gid, groups, daemon_uid, socket_gid);
                            assert_eq!(
                                got, expected,
                                "peer {peer_uid}:{peer_gid} {groups:?}, daemon {daemon_uid}, socket gid {socket_gid}"
                            );
                            allowed += usize::from(got);
                            total += 1;
                        }
                    }
                }
            }
        }
        // Both outcomes occur, so the table really exercises the rule.
        assert!(allowed > 0 && allowed < total);
    }

    #[test]
    fn parse_request_checks_version_first() {
        assert_eq!(
            parse_request(br#"{"version":1,"command":"Recover"}"#).unwrap(),
            Command::Recover
        );
        let e = parse_request(br#"{"version":2,"command":"Frobnicate"}"#).unwrap_err();
        assert!(e.contains("version 2 is not supported"), "{e}");
        let e = parse_request(br#"{"command":"Status"}"#).unwrap_err();
        assert!(e.contains("no protocol version"), "{e}");
        let e = parse_request(br#"{"version":1,"command":"Frobnicate"}"#).unwrap_err();
        assert!(e.starts_with("malformed request"), "{e}");
        let e = parse_request(b"\xff\xfe").unwrap_err();
        assert!(e.starts_with("malformed request"), "{e}");
    }

    #[tokio::test]
    async fn round_trip_over_a_real_socket() {
        let srv = start().await;
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        // Several requests on one connection.
        for (cmd, want) in [
            (Command::SafeToBootstrap, Response::SafeToBootstrap(true)),
            (Command::ForceSafeToBootstrap, Response::Done),
            (
                Command::Bootstrap,
                Response::BootstrapRefused {
                    reason: "safe_to_bootstrap is 0".into(),
                },
            ),
        ] {
            write_message(&mut s, &Request::new(cmd)).await.unwrap();
            let got: Response = read_message(&mut s).await.unwrap();
            assert_eq!(got, want);
        }
        drop(s);
        assert_eq!(srv.handler.calls.load(Ordering::SeqCst), 3);
        let path = srv.path.clone();
        srv.stop().await.unwrap();
        assert!(!path.exists(), "socket file must be removed on shutdown");
    }

    #[tokio::test]
    async fn socket_mode_is_0660() {
        let srv = start().await;
        let mode = std::fs::metadata(&srv.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "mode {mode:o}");
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn bad_json_gets_an_error_and_never_reaches_the_handler() {
        let srv = start().await;
        let mut frame = Vec::new();
        write_frame(&mut frame, b"{this is not json").await.unwrap();
        match raw_exchange(&srv.path, &frame).await.unwrap() {
            Response::Error(m) => assert!(m.starts_with("malformed request"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(srv.handler.calls.load(Ordering::SeqCst), 0);
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn oversized_frame_gets_an_error_and_is_closed() {
        let srv = start().await;
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        s.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        match read_message::<_, Response>(&mut s).await.unwrap() {
            Response::Error(m) => assert!(m.contains("exceeds the limit"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        // The server closed the connection after the error.
        assert!(matches!(read_frame(&mut s).await, Ok(None)));
        assert_eq!(srv.handler.calls.load(Ordering::SeqCst), 0);
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn truncated_frame_gets_an_error() {
        let srv = start().await;
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        s.write_all(&[0, 0, 0, 50, b'{']).await.unwrap();
        s.shutdown().await.unwrap();
        match read_message::<_, Response>(&mut s).await.unwrap() {
            Response::Error(m) => assert!(m.contains("truncated"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        // The server survives and still answers others.
        let ok = raw_exchange(&srv.path, &{
            let mut f = Vec::new();
            write_frame(&mut f, br#"{"version":1,"command":"Status"}"#)
                .await
                .unwrap();
            f
        })
        .await
        .unwrap();
        assert_eq!(ok, Response::Done);
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn refused_peer_gets_permission_denied() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let handler = Arc::new(FakeHandler::default());
        let conn = tokio::spawn(handle_conn(
            server,
            Arc::clone(&handler),
            Err("permission denied: uid 1000".into()),
        ));
        write_message(&mut client, &Request::new(Command::Status))
            .await
            .unwrap();
        let got: Response = read_message(&mut client).await.unwrap();
        assert_eq!(got, Response::Error("permission denied: uid 1000".into()));
        conn.await.unwrap();
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_test_process_is_allowed_by_the_real_check() {
        // We are the daemon's own user here, whatever uid the tests run as.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let access = Access {
            path: path.clone(),
            daemon_uid: Uid::effective().as_raw(),
            bound_gid: 0,
        };
        assert_eq!(access.authorize(&server).await, Ok(()));
        let cred = peer_credentials(&client).unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.uid, Uid::effective().as_raw());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        // A bound socket whose listener is gone: what a crashed daemon leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let srv = start_at(dir, path).await;
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        write_message(&mut s, &Request::new(Command::Recover))
            .await
            .unwrap();
        assert!(matches!(
            read_message::<_, Response>(&mut s).await.unwrap(),
            Response::Position(_)
        ));
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn live_socket_is_refused_and_left_alone() {
        let srv = start().await;
        let err = serve(&srv.path, Arc::new(FakeHandler::default()), async {})
            .await
            .unwrap_err();
        assert!(matches!(err, AdminError::AlreadyRunning { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "another quorated is running with admin socket {}",
                srv.path.display()
            )
        );
        // The first daemon still serves.
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        write_message(&mut s, &Request::new(Command::Status))
            .await
            .unwrap();
        assert_eq!(
            read_message::<_, Response>(&mut s).await.unwrap(),
            Response::Done
        );
        srv.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = serve(&path, Arc::new(FakeHandler::default()), async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn wrong_protocol_version_is_answered_with_an_error() {
        let srv = start().await;
        let mut frame = Vec::new();
        write_frame(&mut frame, br#"{"version":99,"command":"Status"}"#)
            .await
            .unwrap();
        match raw_exchange(&srv.path, &frame).await.unwrap() {
            Response::Error(m) => assert!(m.contains("version 99"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        srv.stop().await.unwrap();
    }
}
