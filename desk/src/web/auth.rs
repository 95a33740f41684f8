//! Who may use the desk: the token printed at start, a session cookie, and CSRF tokens.
//!
//! The desk holds a caseworker's key, so any local process or web page that
//! could reach its port could act as that caseworker. Access therefore needs
//! the random token printed at start; the browser exchanges it once for an
//! HttpOnly, SameSite=Strict session cookie (the token leaves the address bar
//! with a redirect). Every state-changing request also carries the session's
//! CSRF token, in the form or in a header, and must come from the desk's own origin.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ring::rand::{SecureRandom, SystemRandom};

use super::App;
use crate::i18n::{self, Lang};

/// The cookie's name starts with this and ends with the desk's port: browsers keep cookies per host, not per
/// port, and several desks on one machine (the demo's) must not overwrite each other's session.
const COOKIE: &str = "ketenhub_desk_";
const FORM_LIMIT: usize = 1 << 20;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every state-changing request must carry.
    pub csrf: String,
    /// The language chosen.
    pub lang: Lang,
}

/// The access token and the sessions made with it.
pub struct Sessions {
    token: String,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self { token: random_token(), sessions: Mutex::default() }
    }
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system's random source does not fail on a working machine; zeros would only weaken, never open.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// The access token printed at start.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn open(&self) -> String {
        let id = random_token();
        let session = Session { csrf: random_token(), lang: Lang::Nl };
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), session);
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn set_lang(&self, id: &str, lang: Lang) {
        if let Some(s) = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            s.lang = lang;
        }
    }
}

fn session_id(headers: &HeaderMap, port: u16) -> Option<String> {
    let cookie = format!("{COOKIE}{port}");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| value.to_owned())
}

/// The query of the URL printed at start.
#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// Exchanges the access token for a session cookie.
pub async fn login(State(app): State<App>, Query(login): Query<Login>) -> Response {
    if !same(&login.token, app.sessions.token()) {
        return refused(Lang::Nl);
    }
    let id = app.sessions.open();
    let cookie = format!("{COOKIE}{}={id}; HttpOnly; SameSite=Strict; Path=/", app.addr.port());
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn refused(lang: Lang) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>Ketenhub</title>\
         <link rel=\"stylesheet\" href=\"/assets/desk.css\"></head><body><main id=\"main\"><h1>{}</h1>\
         <p role=\"alert\">{}</p></main></body></html>",
        lang.code(),
        i18n::word(lang, "login_title"),
        i18n::word(lang, "login_needed")
    );
    (StatusCode::UNAUTHORIZED, axum::response::Html(body)).into_response()
}

/// Lets a request through only with a session, and a state-changing one only with its CSRF token from the
/// desk's own origin. The session travels to the handler as a request extension.
pub async fn require_session(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some((id, session)) =
        session_id(request.headers(), app.addr.port()).and_then(|id| app.sessions.get(&id).map(|s| (id, s)))
    else {
        return refused(Lang::Nl);
    };
    let mut request = if request.method() == Method::GET || request.method() == Method::HEAD {
        request
    } else {
        match checked(&app, &session, request).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    request.extensions_mut().insert(SessionId(id));
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The session's cookie value, for the language switch.
#[derive(Debug, Clone)]
pub struct SessionId(String);

async fn checked(app: &App, session: &Session, request: Request) -> Result<Request, Response> {
    let forbidden = || (StatusCode::FORBIDDEN, i18n::word(session.lang, "csrf_refused")).into_response();
    let origin_ok = match request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => {
            let port = app.addr.port();
            origin == format!("http://127.0.0.1:{port}") || origin == format!("http://localhost:{port}")
        }
    };
    if !origin_ok {
        return Err(forbidden());
    }
    if let Some(token) = request.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return if same(token, &session.csrf) { Ok(request) } else { Err(forbidden()) };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| forbidden())?;
    let token = form_urlencoded_value(&bytes, "_csrf");
    if !token.is_some_and(|t| same(&t, &session.csrf)) {
        return Err(forbidden());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn form_urlencoded_value(bytes: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The language switch's form.
#[derive(serde::Deserialize)]
pub struct LanguageForm {
    lang: String,
    back: Option<String>,
}

/// Switches the session's language and goes back to the page it came from.
pub async fn language(
    State(app): State<App>,
    axum::Extension(SessionId(id)): axum::Extension<SessionId>,
    axum::Form(form): axum::Form<LanguageForm>,
) -> Redirect {
    if let Some(lang) = Lang::from_code(&form.lang) {
        app.sessions.set_lang(&id, lang);
    }
    // Only a path on this desk, never another site.
    let back = form.back.filter(|b| b.starts_with('/') && !b.starts_with("//")).unwrap_or_else(|| "/".into());
    Redirect::to(&back)
}
