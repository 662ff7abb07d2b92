//! sluice host
