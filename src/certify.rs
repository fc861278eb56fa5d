//! Certification: first committer wins. SKELETON.
