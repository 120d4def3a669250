//! Several PostgreSQL hosts in one URL, as libpq writes them:
//! `postgres://user@h1:5433,h2:5434/db?target_session_attrs=read-write`. A connection
//! is opened to the first host, in the list's order starting from the one that last
//! worked, that answers and (with `read-write` or `primary`) is not a standby. After a
//! failover the pool's broken connections are dropped (`pool`), and the next ones
//! opened find the promoted standby by themselves: no restart, no DNS change.
//!
//! sqlx parses URLs of one host only; each host here becomes a URL of its own that sqlx
//! parses, so every other parameter means what sqlx's documentation says.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Which servers a connection may be kept on (libpq's `target_session_attrs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    /// Whichever answers first (libpq's `any`, the default).
    Any,
    /// One that accepts writes: not in recovery, not read-only by default (`read-write`,
    /// and `primary`, which differ only for a primary set read-only by hand).
    ReadWrite,
}

pub(super) struct Hosts {
    each: Vec<PgConnectOptions>,
    wanted: Wanted,
    /// The host that last gave a connection: tried first next time.
    last_good: AtomicUsize,
}

impl Hosts {
    pub(super) fn parse(url: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = url.split_once("://").context("no scheme")?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut wanted = Wanted::Any;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    wanted = match value {
                        "any" => Wanted::Any,
                        "read-write" | "primary" => Wanted::ReadWrite,
                        other => {
                            bail!("target_session_attrs={other} is not supported (use any, read-write or primary)")
                        }
                    }
                }
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
        let each = hosts
            .split(',')
            .map(|host| {
                if host.is_empty() {
                    bail!("an empty host in the host list");
                }
                format!("{scheme}://{user}{host}{path}{query}")
                    .parse::<PgConnectOptions>()
                    .with_context(|| format!("host {host:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { each, wanted, last_good: AtomicUsize::new(0) })
    }

    /// The same hosts with `f` applied to each one's options.
    pub(super) fn map(self, f: impl Fn(PgConnectOptions) -> PgConnectOptions) -> Self {
        Self { each: self.each.into_iter().map(f).collect(), ..self }
    }

    /// The first host's options, for what all hosts share (the application name).
    pub(super) fn first(&self) -> &PgConnectOptions {
        &self.each[0]
    }

    /// A connection to the first suitable host, trying each once, from the one that
    /// worked last. The error is the last host's (a refused connection, usually), or,
    /// when every host that answered is a standby, a read-only error that the store
    /// classifies as worth retrying.
    pub(super) async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let start = self.last_good.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in (0..self.each.len()).map(|k| (start + k) % self.each.len()) {
            match PgConnection::connect_with(&self.each[i]).await {
                Ok(mut conn) => match self.suits(&mut conn).await {
                    Ok(true) => {
                        self.last_good.store(i, Ordering::Relaxed);
                        return Ok(conn);
                    }
                    Ok(false) => {
                        let _ = conn.close().await;
                        last_error = Some(read_only());
                    }
                    Err(e) => last_error = Some(e),
                },
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(read_only))
    }

    async fn suits(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        if self.wanted == Wanted::Any {
            return Ok(true);
        }
        let (in_recovery, read_only): (bool, String) =
            sqlx::query_as("select pg_is_in_recovery(), current_setting('default_transaction_read_only')")
                .fetch_one(&mut *conn)
                .await?;
        Ok(!in_recovery && read_only == "off")
    }
}

/// What a connection to a standby would answer a write with: SQLSTATE 25006, which the
/// store answers with 503 and `Retry-After` (`is_transient`).
fn read_only() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "no PostgreSQL host accepts writes (every host that answered is a standby)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<(String, u16, String)> {
        let parsed = Hosts::parse(url).unwrap();
        parsed
            .each
            .iter()
            .map(|o| (o.get_host().to_owned(), o.get_port(), o.get_database().unwrap_or_default().to_owned()))
            .collect()
    }

    #[test]
    fn one_host_is_parsed_as_sqlx_parses_it() {
        let parsed = Hosts::parse("postgres://postgres@127.0.0.1:5432/quotask?application_name=x").unwrap();
        assert_eq!(parsed.wanted, Wanted::Any);
        assert_eq!(hosts("postgres://postgres@127.0.0.1:5432/quotask"), [("127.0.0.1".into(), 5432, "quotask".into())]);
        assert_eq!(parsed.first().get_application_name(), Some("x"));
    }

    #[test]
    fn several_hosts_share_the_user_the_database_and_the_parameters() {
        let url = "postgresql://app:secret@10.0.0.1:5433,10.0.0.2:5434,db3/tasks?target_session_attrs=read-write&sslmode=disable";
        let parsed = Hosts::parse(url).unwrap();
        assert_eq!(parsed.wanted, Wanted::ReadWrite);
        assert_eq!(
            hosts(url),
            [
                ("10.0.0.1".into(), 5433, "tasks".into()),
                ("10.0.0.2".into(), 5434, "tasks".into()),
                ("db3".into(), 5432, "tasks".into())
            ]
        );
        assert!(parsed.each.iter().all(|o| o.get_username() == "app"));
    }

    #[test]
    fn unknown_session_attributes_and_empty_hosts_are_refused() {
        assert!(Hosts::parse("postgres://h1,h2/db?target_session_attrs=standby").is_err());
        assert!(Hosts::parse("postgres://h1,,h2/db").is_err());
        assert_eq!(Hosts::parse("postgres://h1/db?target_session_attrs=primary").unwrap().wanted, Wanted::ReadWrite);
    }

    /// The main test server is a primary: `read-write` keeps a connection to it, after
    /// passing over a host that refuses connections.
    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_refusing_host_is_passed_over_for_one_that_accepts_writes() {
        let url = std::env::var("QUOTASK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let rest = url.strip_prefix("postgres://postgres@").expect("a test URL for the user postgres");
        let dead = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let join = if rest.contains('?') { '&' } else { '?' };
        let url = format!("postgres://postgres@127.0.0.1:{dead},{rest}{join}target_session_attrs=read-write");
        let hosts = Hosts::parse(&url).unwrap();
        let mut conn = hosts.connect().await.unwrap();
        assert_eq!(hosts.last_good.load(Ordering::Relaxed), 1);
        let (recovery,): (bool,) = sqlx::query_as("select pg_is_in_recovery()").fetch_one(&mut conn).await.unwrap();
        assert!(!recovery);
    }
}
