//! Black-box tests over real HTTP: one server per test, on port 0, with its own database.

#![expect(clippy::unwrap_used, reason = "a test fails loudly at the first surprise")]

#[macro_use]
mod helpers;
#[macro_use]
mod redis_harness;

mod accounts;
mod admin;
mod batch;
mod cookies;
mod durability;
mod events;
mod forwarded;
mod idempotency;
mod input;
mod instances;
mod jobs;
mod metrics;
mod plans;
mod quota;
mod redis_outage;
mod restart;
mod security;
mod seed;
mod shared;
mod store;
mod tasks;
mod tokens;
