//! Everything the metasync API and workers both need: domain types, configuration, the
//! catalog database layer, the Redis delivery queue and telemetry set-up.
//!
//! This crate depends on neither axum nor apalis's worker runtime, so that either side can
//! change its framework without touching the other.

#![warn(missing_docs)]

pub mod catalog;
pub mod config;
pub mod connection_test;
pub mod crypto;
pub mod custody;
pub mod db;
pub mod domain;
pub mod ids;
pub mod maintenance;
pub mod ops;
pub mod outbound;
pub mod queue;
pub mod retry;
pub mod scan_options;
pub mod schedule;
pub mod submit;
pub mod telemetry;
pub mod tls;
pub mod warnings;
