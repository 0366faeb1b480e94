//! The route table of queue-auth. The platform endpoints (/healthz, /readyz, /metrics,
//! /.well-known/jwks.json, /openapi.json, /internal/v1/caller) are added by queue-platform.

use actix_web::{guard, web};
use queue_platform::ServicePolicy;
use queue_platform::service_auth::ReadOnlyRoute;

use crate::config::GeneralConfig;
use crate::handlers::{backup_codes, email, import, import_passkeys, sessions, users, webauthn};

pub fn configure(general: GeneralConfig) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        let provisioners: Vec<&str> = general.provisioners.iter().map(String::as_str).collect();
        let validators: Vec<&str> = general.validators.iter().map(String::as_str).collect();
        let importers: Vec<&str> = general.importers.iter().map(String::as_str).collect();
        // Issue 19: a user by Raptor's customer id, for whoever may provision, validate or import.
        let readers: Vec<&str> = provisioners.iter().chain(&validators).chain(&importers).copied().collect::<Vec<_>>();
        // Two resources on one path, one per method, each with its own policy.
        cfg.service(
            web::resource("/internal/v1/users")
                .guard(guard::Post())
                .app_data(ServicePolicy::issuers(&provisioners).scope("users:write").data())
                .post(users::provision),
        )
        .service(
            web::resource("/internal/v1/users")
                .guard(guard::Get())
                .app_data(ServicePolicy::issuers(&readers).scope("users:read").data())
                .get(import::find_by_legacy_id),
        )
        .service(
            web::resource("/internal/v1/sessions/validate")
                .app_data(ServicePolicy::issuers(&validators).scope("sessions:validate").data())
                // A lookup with the session in the body: callers (the proxy) may reuse a token.
                .app_data(ReadOnlyRoute)
                .post(sessions::validate),
        )
        // Issue 19, item 1: Raptor's users, sessions and backup codes coming in (`queuectl legacy
        // import`), batches of up to 1,000 records (a larger body limit than the rest).
        .service(
            web::scope("/internal/v1/import")
                .app_data(ServicePolicy::issuers(&importers).scope("users:import").data())
                .app_data(
                    web::JsonConfig::default()
                        .limit(import::MAX_BODY_BYTES)
                        .error_handler(queue_platform::error::json_error_handler),
                )
                .app_data(web::PayloadConfig::new(import::MAX_BODY_BYTES))
                .service(web::resource("/users").route(web::post().to(import::users)))
                .service(web::resource("/sessions").route(web::post().to(import::sessions)))
                .service(web::resource("/backup-codes").route(web::post().to(import::backup_codes)))
                .service(web::resource("/passkeys").route(web::post().to(import_passkeys::import)))
                // Issue 19, item 4: what auth holds from Raptor (`queuectl legacy status`).
                .service(web::resource("/status").route(web::get().to(import::status))),
        )
        .route("/api/v1/auth/email/verification", web::post().to(email::send))
        .route("/api/v1/auth/email/verification/confirm", web::post().to(email::confirm))
        .route("/api/v1/auth/webauthn/register/start", web::post().to(webauthn::register_start))
        .route("/api/v1/auth/webauthn/register/finish", web::post().to(webauthn::register_finish))
        .route("/api/v1/auth/webauthn/login/start", web::post().to(webauthn::login_start))
        .route("/api/v1/auth/webauthn/login/finish", web::post().to(webauthn::login_finish))
        .route("/api/v1/auth/webauthn/reauth/start", web::post().to(webauthn::reauth_start))
        .route("/api/v1/auth/webauthn/reauth/finish", web::post().to(webauthn::reauth_finish))
        .route("/api/v1/auth/webauthn/credentials", web::get().to(webauthn::list))
        .service(
            web::resource("/api/v1/auth/webauthn/credentials/{id}")
                .route(web::patch().to(webauthn::rename))
                .route(web::delete().to(webauthn::remove)),
        )
        .service(
            web::resource("/api/v1/auth/session")
                .route(web::get().to(sessions::whoami))
                .route(web::delete().to(sessions::logout)),
        )
        .route("/api/v1/auth/sessions", web::get().to(sessions::list))
        // Resources, not `.route(...)`: a route's method guard would let a DELETE fall through
        // to `sessions/{id}` below; a resource answers the methods it lacks 405 (with `Allow`).
        .service(web::resource("/api/v1/auth/sessions/revoke-others").route(web::post().to(sessions::revoke_others)))
        .service(web::resource("/api/v1/auth/sessions/revoke-all").route(web::post().to(sessions::revoke_all)))
        .route("/api/v1/auth/sessions/{id}", web::delete().to(sessions::revoke_one))
        .service(
            web::resource("/api/v1/auth/backup-codes")
                .guard(guard::Any(guard::Get()).or(guard::Post()))
                .route(web::post().to(backup_codes::generate))
                .route(web::get().to(backup_codes::remaining)),
        )
        .route("/api/v1/auth/backup-codes/redeem", web::post().to(backup_codes::redeem));
        crate::pages::configure(cfg);
    }
}
