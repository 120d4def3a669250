//! Black-box tests over real HTTP: one server per test, on port 0, with its own database.

#![expect(clippy::unwrap_used, reason = "a test fails loudly at the first surprise")]

#[macro_use]
mod helpers;

mod accounts;
mod admin;
mod idempotency;
mod input;
mod instances;
mod quota;
mod restart;
mod security;
mod seed;
mod store;
mod tasks;
