//! Prometheus metrics: what is recorded where, and the one process-wide recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "quotask_http_requests_total";
pub const HTTP_DURATION: &str = "quotask_http_request_duration_seconds";
pub const QUOTA_REJECTIONS: &str = "quotask_quota_rejections_total";
pub const TASKS_CREATED: &str = "quotask_tasks_created_total";
pub const SIGNIN_FAILURES: &str = "quotask_signin_failures_total";
pub const SIGNIN_THROTTLED: &str = "quotask_signin_throttled_total";
pub const SIGNUP_THROTTLED: &str = "quotask_signup_throttled_total";
/// Password hashes by `outcome`: computed, skipped (its client had gone), refused (queue full).
pub const PASSWORD_HASHES: &str = "quotask_password_hashes_total";
/// SQLite reads asked for and not yet answered (waiting for or running on the reader).
pub const DB_READS_IN_FLIGHT: &str = "quotask_db_reads_in_flight";
pub const DB_GROUP_COMMIT_SIZE: &str = "quotask_db_group_commit_jobs";
/// 1 while Redis answers, 0 during an outage (only with `QUOTASK_REDIS_URL`).
pub const REDIS_UP: &str = "quotask_redis_up";
/// Redis outages seen (each logged once), and the failed calls, by `op`.
pub const REDIS_OUTAGES: &str = "quotask_redis_outages_total";
pub const REDIS_ERRORS: &str = "quotask_redis_errors_total";
/// Attempts counted by this instance alone because Redis was unavailable, by `throttle`
/// (`signin`, `signup`).
pub const THROTTLE_FALLBACKS: &str = "quotask_signin_throttle_local_fallbacks_total";
/// Live events: published here (to a stream open here or to other instances; an event
/// nobody can receive is not made), dropped on the way to Redis, open streams, lagged clients.
pub const EVENTS_PUBLISHED: &str = "quotask_events_published_total";
pub const EVENTS_NOT_SHARED: &str = "quotask_events_not_shared_total";
pub const EVENT_STREAMS: &str = "quotask_event_streams";
pub const EVENTS_LAGGED: &str = "quotask_event_streams_lagged_total";
/// Streams refused, by `why`: `instance_full` (the instance's cap) or `user_full` (the
/// user's own cap).
pub const EVENT_STREAMS_REFUSED: &str = "quotask_event_streams_refused_total";
/// Periodic job runs by `outcome` (ran, skipped, failed) and rows pruned by `what`.
pub const JOB_RUNS: &str = "quotask_job_runs_total";
pub const JOB_PRUNED: &str = "quotask_job_pruned_rows_total";
/// Users' limits the adaptive plans changed.
pub const LIMITS_ADAPTED: &str = "quotask_limits_adapted_total";

/// How often the recorder's histogram samples are folded into their buckets. Until then
/// each sample is kept, a few bytes per request; without this, a server nobody scrapes
/// grew by 7.6 to 8.7 MiB every 450,000 requests (measured), without end.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The recorder, installed on first use (tests start many servers in one process), and
/// the thread that keeps its memory bounded, started with it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &latency)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DB_GROUP_COMMIT_SIZE.into()), &batch));
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // Fails only if another recorder is installed, and then ours simply stays empty.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        let started = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no metrics upkeep thread: samples are kept until /metrics is read");
        }
        handle
    })
}
