//! systemd's notify protocol (`Type=notify`): READY, STATUS, STOPPING and
//! EXTEND_TIMEOUT_USEC datagrams to `$NOTIFY_SOCKET`. Without that variable
//! (not started by systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use super::Node;

/// Send one notification; errors are logged, never fatal.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        } else {
            socket.send_to(message.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd at {:?}: {e}", path);
    }
}

impl Node {
    /// Tell systemd when the node is ready (Primary, or waiting for peers or
    /// a bootstrap), keep STATUS= current, and extend the start timeout
    /// while a snapshot (SST) is being received.
    pub fn spawn_notifier(self: &Arc<Self>) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let mut shutdown = node.shutdown_signal();
            let mut ready = false;
            let mut last_status = String::new();
            let mut last_extend = std::time::Instant::now() - Duration::from_secs(60);
            loop {
                let st = node.cluster_status();
                let (_, receiving) = node.seq.transfers();
                if receiving > 0 && last_extend.elapsed() >= Duration::from_secs(10) {
                    // An SST can outlast TimeoutStartSec: ask for more time while it moves.
                    notify("EXTEND_TIMEOUT_USEC=30000000");
                    last_extend = std::time::Instant::now();
                }
                if !ready && receiving == 0 {
                    notify("READY=1");
                    ready = true;
                }
                let status = format!(
                    "STATUS={} ({}), seqno {}, cluster size {}",
                    st.local_state, st.cluster_status, st.last_committed, st.cluster_size
                );
                if status != last_status {
                    notify(&status);
                    last_status = status;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
}
