//! The OpenAPI 3.1 document, generated from the handlers' annotations, and the
//! interactive docs page; both served from the binary.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response, Schema};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;
use super::{accounts, admin, events, ops, seed, tasks, tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "quotask",
        description = "A todo-task API in which every user may create at most N tasks per day, the day being the user's own calendar day in their time zone."
    ),
    paths(
        accounts::sign_up, accounts::sign_in, accounts::refresh, accounts::sign_out,
        accounts::me, accounts::update_me, accounts::quota,
        tokens::create, tokens::list, tokens::remove,
        tasks::create, tasks::create_batch, tasks::list, tasks::read, tasks::update, tasks::remove,
        events::stream_events,
        admin::list_users, admin::update_user, admin::audit,
        admin::list_plans, admin::create_plan, admin::update_plan, admin::plan_audit,
        admin::list_boosts, admin::add_boost, admin::delete_boost,
        seed::sign_up, seed::sign_in, seed::task,
        ops::health, ops::ready, ops::metrics,
    ),
    modifiers(&CommonResponses),
)]
struct ApiDoc;

/// The docs page shares the web page's origin, so a script it were made to run could
/// call the API as the signed-in user: it may run only its own files (Swagger UI has no
/// inline script), show its own and `data:` images (its icons), talk to this origin
/// only, and never be framed. Its styles are its own files, and the one `<style>` it
/// adds from script, allowed by its hash: the Swagger UI built into the binary is a
/// fixed version, and the browser test (tests/e2e) fails on any policy violation, so a
/// new version that changes it is noticed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .layer(middleware::map_response(with_policy))
}

async fn with_policy(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The document, for tests and tools.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// Adds the bearer scheme, and to every `/v1` operation the problem answers any route
/// can give (bad body, bad token, overload), so that each route lists only its own. A
/// bearer requirement lists the scope a personal access token needs there (OpenAPI 3.1
/// allows role names for any scheme); an empty one means a signed-in session only.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An access token from `POST /v1/auth/signin`, or a personal access token (`qtk_...`) from \
                 `POST /v1/me/tokens`, good only where the requirement names one of its scopes.",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        for name in ["SignUp", "MeChanges"] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name)
                && let Some(RefOr::T(Schema::Object(zone))) = object.properties.get_mut("timezone")
            {
                zone.enum_values = Some(zone_names().into_iter().map(Into::into).collect());
            }
        }
        // `current_password` is required with `password`. utoipa has no attribute for
        // that; JSON Schema 2020-12, which OpenAPI 3.1 uses, says it with `dependentRequired`.
        if let Some(RefOr::T(Schema::Object(me))) = components.schemas.get_mut("MeChanges") {
            let keywords = me.extensions.get_or_insert_with(Default::default);
            keywords.insert("dependentRequired".into(), serde_json::json!({"password": ["current_password"]}));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            // The seed's routes answer errors in the seed's own shape.
            let shape = if path.starts_with("/v1/") {
                ("Problem", "application/problem+json")
            } else if matches!(path.as_str(), "/auth/signup" | "/auth/signin" | "/task") {
                ("SeedFailure", "application/json")
            } else {
                continue;
            };
            let operations = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put];
            for op in operations.into_iter().flatten() {
                let secured = op.security.is_some();
                let has_body = op.request_body.is_some();
                // A header parameter alone (Last-Event-ID) is never refused with 422.
                let has_query =
                    op.parameters.as_ref().is_some_and(|p| p.iter().any(|p| p.parameter_in != ParameterIn::Header));
                let mut add = |code: &str, why: &str| {
                    op.responses.responses.entry(code.into()).or_insert_with(|| problem(shape, why));
                };
                if secured {
                    add("401", "Missing, invalid or expired token (WWW-Authenticate: Bearer)");
                    add(
                        "403",
                        "A personal access token on a route it does not reach: without the scope the operation's \
                         security requirement names, or on a route for signed-in sessions only (`insufficient-scope`)",
                    );
                    add(
                        "429",
                        "Too many failed sign-ins from this address; a wrong personal access token counts as one",
                    );
                }
                if has_body {
                    add("400", "Malformed JSON");
                    add("408", "The body did not arrive within 10 s");
                    add("413", "Body over 128 KiB (8 MiB for a batch)");
                    add("415", "Body not sent as application/json");
                }
                if has_body || has_query {
                    add("422", "Invalid input; `errors` names each field");
                }
                add("500", "Internal error; the cause is logged under the x-request-id");
                add("503", "Database unavailable; retry after Retry-After");
            }
        }
    }
}

/// Every zone name the built-in database knows: the only values `timezone` takes.
fn zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::TimeZoneDatabase::bundled().available().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// A response of error `schema` sent as `content_type`.
fn problem((schema, content_type): (&str, &str), description: &str) -> RefOr<Response> {
    let content = Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(schema))));
    RefOr::T(utoipa::openapi::ResponseBuilder::new().description(description).content(content_type, content).build())
}
