//! Everything the browser loads, compiled into the binary.
//!
//! A caseworker's network has no internet and the Content-Security-Policy
//! allows nothing but the desk itself, so templates, the stylesheet and the
//! script are all embedded here; nothing is read from disk at run time.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The templates, by name.
pub const TEMPLATES: [(&str, &str); 17] = [
    ("layout.html", include_str!("../../templates/layout.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("cases.html", include_str!("../../templates/cases.html")),
    ("offers.html", include_str!("../../templates/offers.html")),
    ("thread.html", include_str!("../../templates/thread.html")),
    ("side.html", include_str!("../../templates/side.html")),
    ("conversation.html", include_str!("../../templates/conversation.html")),
    ("entry.html", include_str!("../../templates/entry.html")),
    ("packet.html", include_str!("../../templates/packet.html")),
    ("offer.html", include_str!("../../templates/offer.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("report.html", include_str!("../../templates/report.html")),
    ("review.html", include_str!("../../templates/review.html")),
    ("status.html", include_str!("../../templates/status.html")),
    ("offer_row.html", include_str!("../../templates/offer_row.html")),
    ("inbox.html", include_str!("../../templates/inbox.html")),
    ("share.html", include_str!("../../templates/share.html")),
];

const ASSETS: [(&str, &str, &str); 3] = [
    ("desk.css", "text/css; charset=utf-8", include_str!("../../assets/desk.css")),
    ("family.css", "text/css; charset=utf-8", ketenhub_sdk::family::STYLE),
    ("desk.js", "text/javascript; charset=utf-8", include_str!("../../assets/desk.js")),
];

/// Serves an embedded asset.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            let mut response = (*body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
