//! chinit
