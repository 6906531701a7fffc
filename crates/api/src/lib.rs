#![doc = include_str!("../README.md")]

pub mod auth;
pub mod error;
pub mod input;
pub mod openapi;
pub mod root_span;
pub mod routes;
pub mod startup;

pub use error::ApiError;
pub use startup::{AppState, Application, StopHandle};
