//! End-to-end test harness.

pub mod ns;
