//! `quorate bench`. SKELETON.
