//! Wiring: opening the store, building the use cases on it, and serving them with a
//! graceful stop (readiness turns 503 at once, requests in flight are answered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service as _;

use crate::auth::token;
use crate::clock::Clock;
use crate::config::Backend;
use crate::config::{MetricsToken, Settings, TrustedProxies};
use crate::events::Events;
use crate::http::AppState;
use crate::jobs::Jobs;
use crate::redis_link::RedisLink;
use crate::service::accounts::Accounts;
use crate::service::{Deliveries, Services};
use crate::store::{Store, postgres::PostgresStore, sqlite::SqliteStore};

/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// One instance of the service, built from its settings: the store, the use cases, and
/// what runs beside them. Both the server and the command line start from one.
#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub services: Services,
    /// Live events: the services publish, `/v1/events` streams.
    pub events: Events,
    /// The periodic jobs; `serve` schedules them, tests run them.
    pub jobs: Jobs,
    /// The webhook delivery worker; `serve` starts it, tests run it (`run_once`).
    pub deliveries: Deliveries,
    /// Redis, if configured (also held by the throttle, events and jobs).
    pub redis: Option<RedisLink>,
    pub clock: Arc<dyn Clock>,
    /// Whose `X-Forwarded-For` names the client.
    trusted_proxies: TrustedProxies,
    /// What `/metrics` asks for, if anything.
    metrics_token: Option<MetricsToken>,
}

pub async fn open_store(backend: &Backend, db_max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    match backend {
        Backend::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??;
            Ok(Arc::new(store))
        }
        Backend::Postgres(url) => Ok(Arc::new(PostgresStore::connect(url, db_max_connections).await?)),
    }
}

impl App {
    /// Opens the store, settles the signing secret and builds the services.
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = open_store(&settings.backend, settings.db_max_connections).await?;
        Self::with_store(settings, store, clock).await
    }

    pub async fn with_store(settings: &Settings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let secret = match &settings.jwt_secret {
            Some(secret) => secret.clone(),
            None => store.signing_secret(token::new_secret()).await?,
        };
        tracing::info!(durability = %store.durability().await?, tzdb = crate::domain::input::tzdb_version(), "store open");
        let redis = settings.redis.as_ref().map(RedisLink::new).transpose()?;
        let accounts = Accounts::new(
            store.clone(),
            &secret,
            settings.signin_failures_per_hour,
            settings.signups_per_hour,
            redis.clone(),
            settings.default_daily_limit,
            settings.default_timezone.clone(),
        );
        let events = Events::new(redis.clone(), settings.max_streams_per_user);
        Ok(App {
            services: Services::new(store.clone(), accounts, events.clone(), settings.webhook_allow_private),
            jobs: Jobs::new(store.clone(), redis.clone(), &settings.jobs),
            deliveries: Deliveries::new(store.clone(), settings.webhook_allow_private),
            events,
            redis,
            trusted_proxies: settings.trusted_proxies.clone(),
            metrics_token: settings.metrics_token.clone(),
            store,
            clock,
        })
    }

    /// The state the HTTP handlers see.
    pub fn http_state(&self) -> AppState {
        AppState::new(
            self.services.clone(),
            self.clock.clone(),
            self.events.clone(),
            self.trusted_proxies.clone(),
            self.metrics_token.clone(),
        )
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: AppState,
}

impl Server {
    /// Binds `addr` and serves `app` until `stop`.
    pub async fn start(app: &App, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let state = app.http_state();
        let router = crate::http::router(state.clone());
        app.events.start_relay();
        let task = tokio::spawn(accept_loop(listener, router, state.clone(), stopped));
        Ok(Server { addr, stop, task, state })
    }

    /// Begins a graceful stop and waits for it to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Serves until the task ends (after `stop`).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that can begin the stop from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

async fn accept_loop(listener: TcpListener, router: Router, state: AppState, mut stopped: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only (HTTP/2 belongs to a TLS-terminating proxy in front): hyper's header
    // timer then starts the moment a connection is accepted, so a client that connects
    // and sends nothing is also let go. Serving HTTP/2 as well, the server first waited,
    // with no timer, for the bytes that tell the two apart.
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually out of file descriptors: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(remote));
                    router.clone().call(req)
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    state.draining.store(true, Ordering::Relaxed);
    // Event streams never end by themselves; end them so the drain is not held up.
    state.events.close();
    drop(listener);
    tracing::info!(connections = graceful.count(), "stopping: answering requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("stopping: gave up waiting for requests in flight");
    }
}

/// Serves until SIGTERM or Ctrl-C, then stops gracefully.
pub async fn serve(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let app = App::build(&settings, clock.clone()).await?;
    if settings.jobs.enabled {
        app.jobs.clone().spawn(clock.clone());
    } else {
        tracing::info!("periodic jobs are off on this instance (--no-jobs)");
    }
    // Every instance delivers webhooks: each event is leased to one at a time.
    app.deliveries.clone().spawn(clock);
    let server =
        Server::start(&app, settings.bind).await.map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", settings.bind))?;
    tracing::info!(addr = %server.addr, "listening");
    let stop = server.stopper();
    let state = server.state.clone();
    let delay = settings.shutdown_delay;
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        state.draining.store(true, Ordering::Relaxed);
        if signal == Signal::Terminate && !delay.is_zero() {
            // The lame-duck period: `/readyz` answers 503 from now on, so load balancers
            // take this instance out, while every request still gets its answer here.
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "SIGTERM: /readyz answers 503; serving on until the delay ends"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_signal() => tracing::info!("second signal: stopping now"),
            }
        } else {
            tracing::info!(?signal, "signal received");
        }
        let _ = stop.send(true);
    });
    server.wait().await;
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Ctrl-C: someone at a terminal, who wants the server gone now.
    Interrupt,
    /// SIGTERM: an orchestrator or service manager, which gets the lame-duck period.
    Terminate,
}

async fn shutdown_signal() -> Signal {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return Signal::Interrupt;
            }
        };
        tokio::select! {
            _ = ctrl_c => Signal::Interrupt,
            _ = term.recv() => Signal::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        Signal::Interrupt
    }
}
