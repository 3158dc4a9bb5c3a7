//! One module per HTTP resource; [`crate::app`] merges their routers.

pub mod catalog;
pub mod health;
pub mod jobs;
pub mod resources;
