//! The node: wires store, order, API and admin. SKELETON.
