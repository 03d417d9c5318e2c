//! host-probe library.
