//! End-to-end test harness.

pub mod chart;
pub mod ns;
pub mod vm;
