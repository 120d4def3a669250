//! Settings, each a flag and an environment variable (README, "Configuration"), and
//! their validation: bad configuration is one clear line and a non-zero exit, before
//! anything binds a port.

pub mod trusted_proxies;

use std::net::SocketAddr;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

pub use self::trusted_proxies::TrustedProxies;
use crate::domain::{DailyLimit, TimeZoneName};

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Listen address (the seed's port by default).
    #[arg(long, env = "QUOTASK_BIND", default_value = "127.0.0.1:5000", global = true)]
    pub bind: SocketAddr,
    /// Where the embedded database lives.
    #[arg(long, env = "QUOTASK_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://<data dir>/quotask.db`.
    #[arg(long, env = "QUOTASK_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Most connections this instance opens to PostgreSQL (each instance has its own pool;
    /// keep instances × this under the server's `max_connections`).
    #[arg(long, env = "QUOTASK_DB_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_max_connections: u32,
    /// Redis, for what several instances share: sign-in throttle counts, live events,
    /// the periodic jobs' lock. Never needed for correctness (the quota is in the database).
    /// Several comma-separated `redis://` URLs name nodes of one Redis Cluster.
    #[arg(long, env = "QUOTASK_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so that deployments can share one Redis.
    #[arg(long, env = "QUOTASK_REDIS_PREFIX", default_value = "quotask:", global = true)]
    pub redis_prefix: String,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` gives
    /// the client's address; by default none, and the socket's peer is the client. The
    /// header is read from the right, past the trusted proxies; the first other address
    /// is the client, and an item that is not an address ends the walk (see
    /// `http::client_ip`). Sign-in failures are counted per IPv4 address and per IPv6 /64.
    #[arg(long, env = "QUOTASK_TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<String>,
    /// Do not run the periodic jobs (pruning) on this instance.
    #[arg(long, env = "QUOTASK_NO_JOBS", global = true)]
    pub no_jobs: bool,
    /// Days of quota usage rows kept by the pruning job (2 to 36500).
    #[arg(long, env = "QUOTASK_USAGE_RETENTION_DAYS", default_value_t = 90, global = true)]
    pub usage_retention_days: u32,
    /// Token signing secret, at least 32 bytes; default: generated once and kept in the database.
    #[arg(long, env = "QUOTASK_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Daily limit of new users (0 to 1000000).
    #[arg(
        long,
        env = "QUOTASK_DEFAULT_DAILY_LIMIT",
        default_value_t = 5,
        global = true,
        allow_negative_numbers = true
    )]
    pub default_daily_limit: i64,
    /// Time zone of new users who name none (an IANA name).
    #[arg(long, env = "QUOTASK_DEFAULT_TIMEZONE", default_value = "UTC", global = true)]
    pub default_timezone: String,
    /// Log format.
    #[arg(long, env = "QUOTASK_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Failed sign-ins evaluated per account (and per client address) per hour.
    #[arg(long, env = "QUOTASK_SIGNIN_FAILURES_PER_HOUR", default_value_t = 100, global = true)]
    pub signin_failures_per_hour: u32,
    /// When set, `GET /metrics` answers only requests with `Authorization: Bearer <token>`
    /// (401 otherwise): for instances whose port is reachable from outside. 16 to 1024
    /// visible ASCII characters. By default `/metrics` is open to anyone who can reach it.
    #[arg(long, env = "QUOTASK_METRICS_TOKEN", global = true, hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Live event streams (`GET /v1/events`) one user may hold open on this instance (1 to
    /// 10000); one more is refused with 429 until one of them ends. An instance serves at
    /// most 10,000 streams in all.
    #[arg(long, env = "QUOTASK_MAX_STREAMS_PER_USER", default_value_t = 5, global = true)]
    pub max_streams_per_user: u32,
    /// Sign-ups accepted per client address per hour (at least 1).
    #[arg(long, env = "QUOTASK_SIGNUPS_PER_HOUR", default_value_t = 20, global = true)]
    pub signups_per_hour: u32,
    /// After SIGTERM, how long (ms, 0 to 60000) the server goes on serving, with `/readyz`
    /// answering 503, so that load balancers stop sending it requests before it closes.
    #[arg(long, env = "QUOTASK_SHUTDOWN_DELAY_MS", default_value_t = 1000, global = true)]
    pub shutdown_delay_ms: u64,
    /// Allow webhook URLs on loopback, private and link-local addresses (tests, closed
    /// networks). Off, such destinations are refused at creation and at each delivery.
    #[arg(long, env = "QUOTASK_WEBHOOK_ALLOW_PRIVATE", global = true)]
    pub webhook_allow_private: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Configuration after validation.
pub struct Settings {
    pub bind: SocketAddr,
    pub backend: Backend,
    /// The PostgreSQL pool's size (the SQLite store sizes itself).
    pub db_max_connections: u32,
    pub jwt_secret: Option<Vec<u8>>,
    pub default_daily_limit: u32,
    pub default_timezone: TimeZoneName,
    pub signin_failures_per_hour: u32,
    pub signups_per_hour: u32,
    /// Redis, if configured.
    pub redis: Option<RedisSettings>,
    pub trusted_proxies: TrustedProxies,
    /// What `/metrics` asks for, if anything.
    pub metrics_token: Option<MetricsToken>,
    /// Open event streams one user may hold on one instance.
    pub max_streams_per_user: usize,
    pub jobs: JobSettings,
    /// How long SIGTERM leaves the server serving (with `/readyz` 503) before it closes.
    pub shutdown_delay: std::time::Duration,
    /// Whether webhooks may point at loopback, private and link-local addresses.
    pub webhook_allow_private: bool,
}

/// Where Redis is, and the prefix of this deployment's keys.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
}

/// One Redis URL, or several (comma-separated) naming nodes of one Redis Cluster. The
/// parser's message could quote a URL, password and all: the error names the form only.
fn check_redis_url(url: &str, prefix: &str) -> Result<(), String> {
    let Some(nodes) = crate::redis_link::cluster_nodes(url) else {
        redis::Client::open(url)
            .map_err(|_| "QUOTASK_REDIS_URL: not a valid Redis URL (redis://[:PASSWORD@]HOST[:PORT][/DB])")?;
        return Ok(());
    };
    const CLUSTER_FORM: &str = "redis://[:PASSWORD@]HOST[:PORT],redis://...";
    for (i, node) in nodes.iter().enumerate() {
        let info = redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(|_| {
            format!("QUOTASK_REDIS_URL: cluster node {} is not a valid Redis URL ({CLUSTER_FORM})", i + 1)
        })?;
        if info.redis_settings().db() != 0 {
            return Err(format!("QUOTASK_REDIS_URL: cluster node {} names a database; a cluster has only 0", i + 1));
        }
    }
    crate::redis_link::cluster_builder(&nodes).build().map_err(|_| {
        format!("QUOTASK_REDIS_URL: the cluster nodes must share one scheme and password ({CLUSTER_FORM})")
    })?;
    if prefix.is_empty() {
        // The prefix is the hash tag that keeps the deployment's keys in one slot.
        return Err("QUOTASK_REDIS_PREFIX: must not be empty with a Redis Cluster".into());
    }
    Ok(())
}

/// The periodic jobs (see `jobs`).
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Whether this instance schedules them (`--no-jobs` turns it off).
    pub enabled: bool,
    pub usage_retention_days: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings { enabled: true, usage_retention_days: 90 }
    }
}

/// The bearer token `/metrics` asks for. Only its SHA-256 digest is kept, and the check
/// compares digests in constant time, so neither the token's bytes nor its length can be
/// learnt from how long a refusal takes.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// Longest token taken, so that the setting stays a sane header value.
    const MAX_LEN: usize = 1024;
    /// Shortest token taken: short enough to type, long enough not to be guessed.
    const MIN_LEN: usize = 16;

    /// The token of `QUOTASK_METRICS_TOKEN`: visible ASCII (what an `Authorization` header
    /// can carry), 16 to 1024 characters.
    pub fn parse(token: &str) -> Result<MetricsToken, String> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("QUOTASK_METRICS_TOKEN: must be 16 to 1024 visible ASCII characters (no spaces)".into());
        }
        Ok(MetricsToken(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether `presented` is the token.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&presented).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl Config {
    /// Checks every setting; the error is one line naming the setting.
    pub fn validate(&self) -> Result<Settings, String> {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("quotask.db").display()),
        };
        let backend = Backend::from_url(&url)?;
        if self.db_max_connections == 0 {
            return Err("QUOTASK_DB_MAX_CONNECTIONS: must be at least 1".into());
        }
        if let Backend::Sqlite(path) = &backend {
            prepare_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(&self.data_dir))?;
        }
        let jwt_secret = match &self.jwt_secret {
            Some(s) if s.len() < 32 => {
                return Err(format!("QUOTASK_JWT_SECRET: must be at least 32 bytes, got {}", s.len()));
            }
            s => s.as_ref().map(|s| s.as_bytes().to_vec()),
        };
        let default_daily_limit = DailyLimit::parse(self.default_daily_limit)
            .map_err(|e| format!("QUOTASK_DEFAULT_DAILY_LIMIT: {}", e.message))?
            .get();
        let default_timezone = TimeZoneName::parse(&self.default_timezone)
            .map_err(|e| format!("QUOTASK_DEFAULT_TIMEZONE: {}", e.message))?;
        let redis = match &self.redis_url {
            Some(url) => {
                check_redis_url(url, &self.redis_prefix)?;
                Some(RedisSettings { url: url.clone(), prefix: self.redis_prefix.clone() })
            }
            None => None,
        };
        let trusted_proxies =
            TrustedProxies::parse(&self.trusted_proxies).map_err(|e| format!("QUOTASK_TRUSTED_PROXIES: {e}"))?;
        if !(2..=36500).contains(&self.usage_retention_days) {
            return Err("QUOTASK_USAGE_RETENTION_DAYS: must be from 2 to 36500".into());
        }
        if self.signups_per_hour == 0 {
            return Err("QUOTASK_SIGNUPS_PER_HOUR: must be at least 1".into());
        }
        if self.shutdown_delay_ms > 60_000 {
            return Err("QUOTASK_SHUTDOWN_DELAY_MS: must be from 0 to 60000".into());
        }
        let metrics_token = self.metrics_token.as_deref().map(MetricsToken::parse).transpose()?;
        if !(1..=10_000).contains(&self.max_streams_per_user) {
            return Err("QUOTASK_MAX_STREAMS_PER_USER: must be from 1 to 10000".into());
        }
        Ok(Settings {
            bind: self.bind,
            backend,
            db_max_connections: self.db_max_connections,
            jwt_secret,
            default_daily_limit,
            default_timezone,
            signin_failures_per_hour: self.signin_failures_per_hour,
            signups_per_hour: self.signups_per_hour,
            redis,
            trusted_proxies,
            metrics_token,
            max_streams_per_user: self.max_streams_per_user as usize,
            jobs: JobSettings { enabled: !self.no_jobs, usage_retention_days: self.usage_retention_days },
            shutdown_delay: std::time::Duration::from_millis(self.shutdown_delay_ms),
            webhook_allow_private: self.webhook_allow_private,
        })
    }
}

/// Creates the data directory (owner-only) and checks that it is writable.
fn prepare_dir(dir: &std::path::Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("QUOTASK_DATA_DIR: cannot use {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir).map_err(fail)?;
        if meta.permissions().mode() & 0o077 != 0 && dir.read_dir().map_err(fail)?.next().is_none() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        }
    }
    let probe = dir.join(".quotask-write-check");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Which database a URL names.
pub enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("QUOTASK_DATABASE_URL: sqlite:// needs a file path".into());
            }
            Ok(Backend::Sqlite(path.into()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(url.to_owned()))
        } else {
            let scheme = url.split("://").next().unwrap_or(url);
            Err(format!("QUOTASK_DATABASE_URL: unknown scheme {scheme:?} (use sqlite:// or postgres://)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_accepts_itself_and_nothing_else() {
        let token = MetricsToken::parse("s3cret-metrics-token").unwrap();
        assert!(token.accepts("s3cret-metrics-token"));
        for wrong in ["", "s3cret-metrics-toke", "s3cret-metrics-token!", "S3CRET-METRICS-TOKEN"] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "MetricsToken(..)", "never printed");
    }

    #[test]
    fn a_short_or_unprintable_metrics_token_is_refused() {
        for bad in ["", "too-short", "has a space in the middle", "tab\tinside-the-token", "é-is-not-ascii-at-all"] {
            assert!(MetricsToken::parse(bad).unwrap_err().starts_with("QUOTASK_METRICS_TOKEN"), "{bad:?}");
        }
        assert!(MetricsToken::parse(&"x".repeat(1025)).is_err());
        assert!(MetricsToken::parse(&"x".repeat(1024)).is_ok());
    }
}
