//! The `quorate` admin CLI. SKELETON.
