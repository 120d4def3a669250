//! quotask: a todo-task HTTP API where every user may create at most N tasks per day,
//! the day being the user's own calendar day in their time zone.
//!
//! Layout (docs/architecture.md): `domain` holds the pure rules (no I/O, `now` passed
//! in), `store` the SQL behind one trait, `auth` passwords, tokens and throttling,
//! `service` the use cases, `http` the routes over them, `cli` the commands over them,
//! `app` the wiring; `events`, `jobs` and `redis_link` are what several instances share
//! (through Redis).

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod redis_link;
pub mod service;
pub mod store;
