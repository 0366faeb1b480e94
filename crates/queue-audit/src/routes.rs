//! The route table of queue-audit. The platform endpoints (/healthz, /readyz, /metrics,
//! /.well-known/jwks.json, /openapi.json, /internal/v1/caller) are added by queue-platform.

use actix_web::{guard, web};
use queue_platform::ServicePolicy;

use crate::config::LimitsConfig;
use crate::handlers::{chain, events, proofs};

pub fn configure(limits: LimitsConfig) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        let writers: Vec<&str> = limits.writers.keys().map(String::as_str).collect();
        let readers: Vec<&str> = limits.readers.iter().map(String::as_str).collect();
        let write = || ServicePolicy::issuers(&writers).scope("audit:write").data();
        let read = || ServicePolicy::issuers(&readers).scope("audit:read").data();
        // The same path with two policies: resource guards make the router pick by method.
        cfg.service(web::resource("/api/v1/audit/events").guard(guard::Post()).app_data(write()).post(events::append))
            .service(web::resource("/api/v1/audit/events/batch").app_data(write()).post(events::append_batch))
            .service(web::resource("/api/v1/audit/events").guard(guard::Get()).app_data(read()).get(events::list))
            .service(web::resource("/api/v1/audit/verify").app_data(read()).get(chain::verify))
            .service(web::resource("/api/v1/audit/checkpoints").app_data(read()).get(chain::checkpoints))
            .service(web::resource("/api/v1/audit/checkpoints/latest").app_data(read()).get(proofs::latest_checkpoint))
            .service(web::resource("/api/v1/audit/checkpoint-keys").app_data(read()).get(proofs::checkpoint_keys))
            .service(web::resource("/api/v1/audit/proofs/inclusion").app_data(read()).get(proofs::inclusion))
            .service(web::resource("/api/v1/audit/proofs/consistency").app_data(read()).get(proofs::consistency))
            .service(web::resource("/api/v1/audit/export").app_data(read()).get(chain::export));
    }
}
