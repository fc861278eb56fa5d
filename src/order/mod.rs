//! Ordering: openraft behind one module. SKELETON.
