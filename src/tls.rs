//! Cluster CA and node certificates (`quorate tls`). SKELETON.
