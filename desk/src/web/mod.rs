//! The desk's web application: routes, security headers and page rendering.
//!
//! Pages are rendered on the server from templates embedded in the binary; a
//! small script of the desk's own adds live updates (Server-Sent Events),
//! upload and download progress and the justification field. Nothing is
//! loaded from outside the binary, and the Content-Security-Policy says so to
//! the browser: a caseworker's network has no internet, and a page that could
//! load a script from elsewhere could leak a case.

mod assets;
mod auth;
mod caseworker;
mod live;
mod officer;
pub mod packet_form;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde::Serialize;

use crate::desk::Desk;
use crate::i18n::{self, Lang};
use auth::Session;
pub use auth::Sessions;

/// The Content-Security-Policy of every response: nothing but the desk itself.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'";

/// The largest attachment a caseworker can upload through the desk.
pub const MAX_UPLOAD: usize = 100 << 20;

/// Everything a handler needs.
pub struct Web {
    /// The desk behind the pages.
    pub desk: Arc<Desk>,
    env: Environment<'static>,
    /// The signed-in browsers.
    pub sessions: Sessions,
    /// The address the desk listens on, for the Host check.
    pub addr: SocketAddr,
}

/// The shared state of the handlers.
pub type App = Arc<Web>;

/// Why a request failed, as the browser is shown it.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The hub or the SDK refused or failed.
    #[error("{0}")]
    Sdk(#[from] ketenhub_sdk::Error),
    /// The desk's own state failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// A page could not be rendered.
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// The request was malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Not found.
    #[error("not found")]
    NotFound,
    /// Something else failed.
    #[error("{0}")]
    Other(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Sdk(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Self::Sdk(ketenhub_sdk::Error::Hub(_)) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let text = html_escape(&self.to_string());
        let body = format!(
            "<!doctype html><html lang=\"nl\"><head><meta charset=\"utf-8\"><title>Ketenhub</title>\
             <link rel=\"stylesheet\" href=\"/assets/desk.css\"></head><body><main id=\"main\">\
             <h1>{}</h1><p role=\"alert\" class=\"error\">{text}</p><p><a href=\"/\">Ketenhub</a></p></main></body></html>",
            status.as_u16()
        );
        (status, Html(body)).into_response()
    }
}

/// The start of a day given as `YYYY-MM-DD` in a form (UTC), ms since the Unix epoch; `None` when left empty.
fn day_ms(text: &str) -> WebResult<Option<u64>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let d: ketenhub_sdk::packet::Date =
        text.trim().parse().map_err(|e| WebError::BadRequest(format!("{text:?}: {e}")))?;
    Ok(Some(d.unix_ms()))
}

/// Escapes text for an HTML page built without a template (error pages).
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A handler's result.
pub type WebResult<T = Response> = Result<T, WebError>;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in assets::TEMPLATES {
        // The templates are compiled into the binary and parsed by every test run.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!("template {name}: {e}");
        }
    }
    env.add_filter("date_time", |ms: u64| ketenhub_sdk::report::date_time(ms));
    env.add_filter("fid", |path: String| packet_form::field_id(&path));
    env
}

impl Web {
    /// The application for `desk`, listening on `addr`.
    pub fn new(desk: Arc<Desk>, addr: SocketAddr) -> App {
        Arc::new(Self { desk, env: environment(), sessions: Sessions::default(), addr })
    }

    /// Renders a page with the common context (strings, identity, CSRF token).
    pub fn render(&self, session: &Session, name: &str, ctx: impl Serialize) -> WebResult<Html<String>> {
        self.render_status(session, name, ctx).map(Html)
    }

    fn render_status(&self, session: &Session, name: &str, ctx: impl Serialize) -> WebResult<String> {
        let identity = &self.desk.identity;
        let common = minijinja::context! {
            t => i18n::strings(session.lang),
            lang => session.lang.code(),
            csrf => session.csrf.clone(),
            me => minijinja::context! {
                organisation => identity.organisation.clone(),
                worker => identity.worker.clone(),
                role => identity.role.code(),
                officer => self.desk.is_officer(),
            },
        };
        let template = self.env.get_template(name)?;
        Ok(template.render(minijinja::context! { ..common, ..minijinja::Value::from_serialize(&ctx) })?)
    }

    /// Renders a fragment (no layout) in a language, for live updates.
    pub fn fragment(&self, lang: Lang, name: &str, ctx: impl Serialize) -> WebResult<String> {
        let template = self.env.get_template(name)?;
        let common = minijinja::context! { t => i18n::strings(lang), lang => lang.code() };
        Ok(template.render(minijinja::context! { ..common, ..minijinja::Value::from_serialize(&ctx) })?)
    }
}

/// Security headers on every response, including errors and assets.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: under it browsers send `Origin: null` with every POST, even to the same origin,
    // and the CSRF check could no longer tell the desk's own forms from anyone else's.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Only requests addressed to the desk's own loopback name: a page on another
/// site that points a name of its own at 127.0.0.1 (DNS rebinding) is refused.
async fn host_check(State(app): State<App>, request: Request, next: Next) -> Response {
    let port = app.addr.port();
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let allowed = [format!("127.0.0.1:{port}"), format!("localhost:{port}"), app.addr.to_string()];
    if allowed.iter().any(|a| a == host) {
        next.run(request).await
    } else {
        (StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response()
    }
}

async fn home(State(app): State<App>) -> Redirect {
    if app.desk.is_officer() {
        Redirect::to("/audit")
    } else {
        Redirect::to("/cases")
    }
}

/// The desk's routes.
pub fn router(app: App) -> Router {
    let pages = Router::new()
        .route("/", get(home))
        .route("/cases", get(caseworker::cases).post(caseworker::create))
        .route("/cases/{case}", get(caseworker::thread))
        .route("/cases/{case}/messages", post(caseworker::send))
        .route("/cases/{case}/attachments", post(caseworker::upload))
        .route("/cases/{case}/attachments/{seq}", get(caseworker::download))
        .route("/cases/{case}/family-summary/{seq}", get(caseworker::family_summary))
        .route("/cases/{case}/offer", get(caseworker::offer_form).post(caseworker::offer))
        .route("/cases/{case}/offers/{offer}/accept", post(caseworker::accept))
        .route("/cases/{case}/offers/{offer}/decline", post(caseworker::decline))
        .route("/cases/{case}/offers/{offer}/complete", post(caseworker::complete))
        .route("/cases/{case}/offers/{offer}/{step}", post(caseworker::call_off))
        .route("/cases/{case}/leave", post(caseworker::leave))
        .route("/cases/{case}/close", post(caseworker::close))
        .route("/cases/{case}/reopen", post(caseworker::reopen))
        .route("/cases/{case}/reassign", post(caseworker::reassign))
        .route("/cases/{case}/share", get(caseworker::share_form).post(caseworker::share))
        .route("/cases/{case}/members", post(caseworker::add))
        .route("/cases/{case}/side", post(caseworker::open_side))
        .route("/cases/{case}/clocks/{clock}/done", post(caseworker::clock_done))
        .route("/offers", get(caseworker::inbox))
        .route("/take-over", post(caseworker::take_over))
        .route("/audit", get(officer::audit))
        .route("/audit/report", get(officer::report))
        .route("/audit/report/family", get(officer::family_report))
        .route("/audit/status", get(officer::status))
        .route("/review", get(officer::review))
        .route("/review/{entry}", post(officer::mark_reviewed))
        .route("/events", get(live::events))
        .route("/language", post(auth::language))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::require_session));
    Router::new()
        .merge(pages)
        .route("/login", get(auth::login))
        .route("/assets/{name}", get(assets::asset))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(middleware::from_fn_with_state(app.clone(), host_check))
        .layer(middleware::from_fn(headers))
        .with_state(app)
}
