//! The CLI's side of the admin socket.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use super::frame::{read_message, write_message};
use super::server::peer_credentials;
use super::{AdminError, Command, Request, Response};

/// Sends one command to the daemon listening on `path` and returns its
/// answer. [`AdminError::NotRunning`] means no daemon listens there (the
/// caller may fall back to the files); the whole exchange, connect included,
/// is bounded by `timeout`.
pub async fn request(path: &Path, cmd: Command, timeout: Duration) -> Result<Response, AdminError> {
    let exchange = async {
        let mut stream = connect(path).await?;
        let protocol = |source| AdminError::Protocol {
            path: path.to_path_buf(),
            source,
        };
        write_message(&mut stream, &Request::new(cmd))
            .await
            .map_err(protocol)?;
        read_message::<_, Response>(&mut stream)
            .await
            .map_err(protocol)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AdminError::Timeout {
            path: path.to_path_buf(),
            timeout,
        }),
    }
}

/// The pid of the daemon listening on `path`, from the socket's peer
/// credentials (no request is sent).
pub async fn daemon_pid(path: &Path) -> Result<i32, AdminError> {
    let stream = connect(path).await?;
    let cred =
        peer_credentials(&stream).map_err(AdminError::io("read peer credentials of", path))?;
    Ok(cred.pid)
}

async fn connect(path: &Path) -> Result<UnixStream, AdminError> {
    UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(path, e))
}

/// Missing or refusing means no daemon; a permission error means there may
/// well be one, so it must not be mistaken for "not running" (the CLI would
/// then act on files a live daemon owns).
fn connect_error(path: &Path, e: std::io::Error) -> AdminError {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => AdminError::NotRunning {
            path: path.to_path_buf(),
        },
        ErrorKind::PermissionDenied => AdminError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ if e.raw_os_error() == Some(nix::libc::ENOTDIR) => AdminError::NotRunning {
            path: path.to_path_buf(),
        },
        _ => AdminError::Io {
            action: "connect to admin socket",
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{read_frame, write_frame};
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("quorate.sock");
        let err = request(&path, Command::Status, T).await.unwrap_err();
        assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn stale_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = request(&path, Command::Status, T).await.unwrap_err();
        assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        // Bound and listening, but nobody ever answers.
        let _listener = UnixListener::bind(&path).unwrap();
        let err = request(&path, Command::Status, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, AdminError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_answer_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_frame(&mut s).await.unwrap().unwrap();
            assert_eq!(req, br#"{"version":1,"command":"Recover"}"#);
            write_frame(&mut s, b"[1,2]").await.unwrap();
        });
        let err = request(&path, Command::Recover, T).await.unwrap_err();
        assert!(matches!(err, AdminError::Protocol { .. }), "{err:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn daemon_closing_early_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = read_frame(&mut s).await;
            s.shutdown().await.unwrap();
        });
        let err = request(&path, Command::Status, T).await.unwrap_err();
        assert!(matches!(err, AdminError::Protocol { .. }), "{err:?}");
        assert!(err.to_string().contains("closed"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn daemon_pid_reads_peer_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        assert_eq!(daemon_pid(&path).await.unwrap(), std::process::id() as i32);
    }

    #[test]
    fn connect_errors_are_classified() {
        let p = Path::new("/run/quorate/quorate.sock");
        let e = |kind| connect_error(p, std::io::Error::from(kind));
        assert!(matches!(
            e(ErrorKind::NotFound),
            AdminError::NotRunning { .. }
        ));
        assert!(matches!(
            e(ErrorKind::ConnectionRefused),
            AdminError::NotRunning { .. }
        ));
        assert!(matches!(
            e(ErrorKind::PermissionDenied),
            AdminError::PermissionDenied { .. }
        ));
        assert!(matches!(e(ErrorKind::Other), AdminError::Io { .. }));
    }
}
