//! `POST /internal/v1/users`: Raptor provisions existing customers.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::{ApiError, ServiceCaller};
use serde::Deserialize;

use crate::domain::fields;
use crate::domain::users::{self, EmailAddress, NewUser};
use crate::extract::info;
use crate::state::AuthState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "tenant_id": "acme", "display_name": "Ada Lovelace", "email_verified": true}))]
pub struct ProvisionUser {
    #[schema(schema_with = fields::schema::email)]
    pub email: String,
    /// Absent: the default tenant.
    #[schema(schema_with = fields::schema::tenant_id_or_null)]
    pub tenant_id: Option<String>,
    /// Stored trimmed; blank is none.
    #[schema(schema_with = fields::schema::display_name_or_null)]
    pub display_name: Option<String>,
    /// Whether the legacy system already verified the address.
    #[serde(default)]
    pub email_verified: bool,
}

/// Provision a user: 201 when created, 200 with the existing user when (tenant, email) exists.
#[utoipa::path(post, path = "/internal/v1/users", tag = "users", operation_id = "provision_user",
    security(("service_token" = ["users:write"])), request_body = ProvisionUser,
    responses((status = 201, body = crate::domain::users::User, description = "Created"),
              (status = 200, body = crate::domain::users::User, description = "The existing user of that (tenant, email)")))]
pub async fn provision(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<super::Object<ProvisionUser>>,
) -> Result<HttpResponse, ApiError> {
    let email = EmailAddress::parse(&body.email)?;
    let tenant = body.tenant_id.clone().unwrap_or_else(|| state.config.auth.default_tenant.clone());
    users::check_tenant(&tenant)?;
    if let Some(d) = &body.display_name {
        fields::DISPLAY_NAME.check(d)?;
    }
    // Stored trimmed; only spaces is no name.
    let display = body.display_name.as_deref().map(str::trim).filter(|d| !d.is_empty());
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
