//! Black-box tests of the simulator over HTTP: one binary, one module per area.

mod contacts;
mod control;
mod delivery;
mod helpers;
mod limits;
mod oauth;
mod properties;
mod search;
mod standalone;
mod webhook_management;
