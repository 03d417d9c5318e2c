//! End-to-end test harness.

pub mod ns;
pub mod vm;
