//! One module per HTTP resource; [`crate::app`] merges their routers.

pub mod audit;
pub mod catalog;
pub mod connection_tests;
pub mod fleet;
pub mod health;
pub mod internal;
pub mod jobs;
pub mod resources;
pub mod webhooks;
