//! The queue against a real Redis at 127.0.0.1:6379, each test under its own
//! key prefix.

mod helpers;
mod retire;
mod stall;
