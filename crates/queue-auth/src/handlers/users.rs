//! `POST /internal/v1/users`: Raptor provisions existing customers.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::{ApiError, ServiceCaller};
use serde::Deserialize;

use crate::domain::users::{self, EmailAddress, NewUser};
use crate::extract::info;
use crate::state::AuthState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionUser {
    pub email: String,
    pub tenant_id: Option<String>,
    pub display_name: Option<String>,
    /// Whether the legacy system already verified the address.
    #[serde(default)]
    pub email_verified: bool,
}

/// Provision a user: 201 when created, 200 with the existing user when (tenant, email) exists.
#[utoipa::path(post, path = "/internal/v1/users", tag = "users", security(("service_token" = ["users:write"])),
    request_body = ProvisionUser,
    responses((status = 201, body = crate::domain::users::User), (status = 200, body = crate::domain::users::User),
              (status = 401), (status = 403), (status = 422)))]
pub async fn provision(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<ProvisionUser>,
) -> Result<HttpResponse, ApiError> {
    let email = EmailAddress::parse(&body.email)?;
    let tenant = body.tenant_id.clone().unwrap_or_else(|| state.config.auth.default_tenant.clone());
    users::check_tenant(&tenant)?;
    let display = body.display_name.as_deref().map(str::trim).filter(|d| !d.is_empty());
    if display.is_some_and(|d| d.len() > 200 || d.chars().any(char::is_control)) {
        return Err(ApiError::invalid("display_name", "at most 200 printable characters"));
    }
    let now = state.now();
    let mut conn = state.conn().await?;
    let actor = queue_audit_client::Party::new("service", caller.issuer());
    let info = info(&req);
    let verified = body.email_verified;
    let (user, created) = {
        use diesel_async::AsyncConnection;
        conn.transaction::<_, crate::domain::Error, _>(async |conn| {
            users::create_or_get(
                conn,
                now,
                &info,
                actor,
                NewUser {
                    tenant_id: &tenant,
                    email: &email,
                    display_name: display,
                    verified_at: verified.then_some(now),
                },
            )
            .await
        })
        .await?
    };
    state.committed();
    Ok(if created { HttpResponse::Created().json(user) } else { HttpResponse::Ok().json(user) })
}
