//! The account pages a person uses (reached through the proxy at `/auth/…`): verify an email,
//! add a passkey, log in (by email, or usernameless with passkey autofill), see and revoke
//! sessions, name and remove passkeys, generate and redeem backup codes.
//!
//! Plain HTML, one stylesheet and one script, embedded in the binary (`pages/`); the script
//! calls this service's own JSON API on the same origin. Every page is served with a strict
//! Content-Security-Policy (scripts only from this origin, no inline code, no framing).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

/// Scripts, styles and requests only from the page's own origin; nothing inline; never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const LOGIN: &str = include_str!("../pages/login.html");
const VERIFY: &str = include_str!("../pages/verify.html");
const ENROLL: &str = include_str!("../pages/enroll.html");
const ACCOUNT: &str = include_str!("../pages/account.html");
const RECOVER: &str = include_str!("../pages/recover.html");
const APP_JS: &str = include_str!("../pages/app.js");
const STYLE_CSS: &str = include_str!("../pages/style.css");
const FAVICON: &str = include_str!("../pages/favicon.svg");

/// The pages and their assets, by path.
pub const PAGES: [(&str, &str); 5] = [
    ("/auth/login", LOGIN),
    ("/auth/verify", VERIFY),
    ("/auth/enroll", ENROLL),
    ("/auth/account", ACCOUNT),
    ("/auth/recover", RECOVER),
];

fn respond(content_type: &'static str, body: &'static str, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static(cache)))
        .body(body)
}

/// Adds the pages' routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, html) in PAGES {
        // `no-cache`: the pages are small and change with the binary; revalidate every time.
        cfg.route(path, web::get().to(move || async move { respond("text/html; charset=utf-8", html, "no-cache") }));
    }
    cfg.route(
        "/auth/assets/app.js",
        web::get().to(|| async { respond("text/javascript; charset=utf-8", APP_JS, "no-cache") }),
    )
    .route(
        "/auth/assets/style.css",
        web::get().to(|| async { respond("text/css; charset=utf-8", STYLE_CSS, "no-cache") }),
    )
    .route("/auth/assets/favicon.svg", web::get().to(|| async { respond("image/svg+xml", FAVICON, "max-age=86400") }))
    .route(
        "/auth",
        web::get().to(|| async { HttpResponse::Found().insert_header((header::LOCATION, "/auth/login")).finish() }),
    )
    .route(
        "/auth/",
        web::get().to(|| async { HttpResponse::Found().insert_header((header::LOCATION, "/auth/login")).finish() }),
    );
}
