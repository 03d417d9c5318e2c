//! End-to-end test harness.

pub mod arm;
pub mod chart;
pub mod e2e;
pub mod l1;
pub mod ns;
pub mod vm;
