//! `GET /v1/events`: the signed-in user's task events as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt as _, stream};
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{Scoped, scope};
use crate::domain::Credential;
use crate::events::{Item, Refused, Subscription};

/// What a client's `EventSource` waits before reconnecting.
const RETRY: Duration = Duration::from_secs(3);
/// How often an open stream checks that its credential still holds: a sign-out ends the
/// session's streams, and a personal token's deletion or expiry the token's, within this
/// long (on every instance, since each checks the store). A check costs one session
/// lookup, which the SQLite store answers from memory, or one read of the token.
const SESSION_CHECK: Duration = Duration::from_secs(5);
/// What a user refused a stream (they hold their share) is told to wait: a stream of
/// theirs that was signed out elsewhere has ended by then.
const RETRY_WHEN_FULL: Duration = SESSION_CHECK;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(stream_events))
}

#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = ["events:read"])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Accepted, but events are live only: a reconnecting client is sent `lagged` and should re-read its tasks")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-sent events of the signed-in user, from whichever instance made them. Each has an `id:` (UUIDv7), \
an `event:` and JSON `data:`: `task.created` and `task.updated` (the task), `task.deleted` (`{\"id\"}`), \
`quota.changed` (`{\"daily_limit\"}`, after an admin's change), and `lagged` (`{\"missed\"}`: events were lost, re-read \
the list). Comments keep the connection alive; the stream ends when its access token expires (with a personal \
token, at its expiry or after 15 minutes), within 5 s of its session's sign-out or its personal token's deletion, \
and when the server stops; the client reconnects with a current token. A personal token needs the scope \
`events:read`."),
              (status = 429, description = "The user already holds as many streams as one user may on this instance (`QUOTASK_MAX_STREAMS_PER_USER`, 5 by default)", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, description = "This instance serves as many streams as it can", body = Problem, content_type = "application/problem+json")))]
async fn stream_events(
    State(state): State<AppState>,
    auth: Scoped<scope::EventsRead>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Until the token stops being accepted, as measured by the server's clock now.
    let lifetime = Duration::try_from(auth.token_until.duration_since(auth.now)).unwrap_or(Duration::ZERO);
    let subscription = state.events.subscribe(auth.user.id, lifetime).map_err(|refused| match refused {
        Refused::InstanceFull => ApiError::Unavailable("too many event streams".into()),
        Refused::UserFull { limit } => ApiError::TooManyStreams { limit, retry_after: RETRY_WHEN_FULL.as_secs() },
    })?;
    let resumed = headers.contains_key("last-event-id");
    let live = Live { subscription, state, credential: auth.credential, user_id: auth.user.id, check: session_check() };
    Ok(Sse::new(sse(live, resumed)).keep_alive(KeepAlive::default()))
}

/// An open stream: the user's events, and the credential they were asked for with.
struct Live {
    subscription: Subscription,
    state: AppState,
    credential: Credential,
    user_id: Uuid,
    check: Interval,
}

fn session_check() -> Interval {
    let mut check = interval_at(Instant::now() + SESSION_CHECK, SESSION_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    check
}

impl Live {
    /// The next event; `None` once the stream should end: the server is stopping, the
    /// stream's lifetime is over, or its credential no longer holds. A check the store cannot
    /// answer (an outage) keeps the stream; the next check asks again.
    async fn next(&mut self) -> Option<Item> {
        loop {
            tokio::select! {
                item = self.subscription.next() => return item,
                _ = self.check.tick() => {
                    let now = self.state.clock.now();
                    let accepted = self.state.services.tokens.still_accepted(self.user_id, self.credential, now).await;
                    if matches!(accepted, Ok(false)) {
                        return None;
                    }
                }
            }
        }
    }
}

/// The stream: first the reconnect delay (and, for a reconnecting client, `lagged`,
/// since nothing is replayed), then events as they come.
fn sse(live: Live, resumed: bool) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut opening = vec![SseEvent::default().retry(RETRY).comment("quotask events")];
    if resumed {
        opening.push(lagged(None));
    }
    let live = stream::unfold(live, |mut live| async move {
        let event = match live.next().await? {
            Item::Event(e) => SseEvent::default().id(e.id.to_string()).event(&e.kind).data(&e.data),
            Item::Lagged(missed) => lagged(Some(missed)),
        };
        Some((event, live))
    });
    stream::iter(opening).chain(live).map(Ok)
}

fn lagged(missed: Option<u64>) -> SseEvent {
    SseEvent::default().event("lagged").data(json!({"missed": missed}).to_string())
}
