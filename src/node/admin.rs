//! The node's side of the admin socket.

use super::{Node, NodeError};
use crate::admin::{AdminHandler, Command, Response};

impl AdminHandler for Node {
    async fn handle(&self, cmd: Command) -> Response {
        match cmd {
            Command::Status => {
                let mut status = self.cluster_status();
                if !status.ready {
                    // An operator looking at a non-Primary node wants to know
                    // where the data is: ask the peers.
                    status.peers = self.probe_peers().await;
                }
                Response::Status(Box::new(status))
            }
            Command::Bootstrap => {
                if self.is_primary() && !self.is_arbitrator() {
                    return Response::Error(
                        "this node is already Primary; nothing to bootstrap".into(),
                    );
                }
                match self.bootstrap().await {
                    Ok(state_uuid) => {
                        if let Err(e) = self.write_grastate_running().await {
                            return Response::Error(format!("bootstrapped, but grastate.dat: {e}"));
                        }
                        Response::Bootstrapped { state_uuid }
                    }
                    Err(NodeError::Refused(reason)) if reason.contains("safe_to_bootstrap") => {
                        Response::BootstrapRefused { reason }
                    }
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Command::SafeToBootstrap => Response::SafeToBootstrap(self.safe_to_bootstrap()),
            Command::ForceSafeToBootstrap => {
                self.force_safe_to_bootstrap();
                match self.write_grastate_running().await {
                    Ok(()) => Response::Done,
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Command::Recover => Response::Position(self.store.position()),
            Command::Members => Response::Members(self.members_view().await),
            Command::RemoveNode { name } => match self.remove_node(&name).await {
                Ok(summary) => Response::Removed { summary },
                Err(why) => Response::Error(format!("cannot remove {name}: {why}")),
            },
        }
    }
}
