//! berth's scheduler, as a pure library: (read-only cluster view, pending jobs) -> plan.
//!
//! Being written; see docs/ARCHITECTURE.md.
