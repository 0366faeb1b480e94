//! One converter per kind: a Raptor row into the record its import endpoint takes. Nothing is
//! decided here that a service decides (expired sessions, unknown hash methods, unsupported keys
//! go as they are, and the service says `skipped` or `refused`); the one thing decided here is
//! what only queuectl knows: which Queue user a grant's customers became, and whether its role
//! made it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;

use crate::legacy::records::{self, ImportResult, Outcome};
use crate::legacy::source::{BackupCodeRow, CredentialRow, CustomerRow, GrantRow, RoleRow, SessionRow};

/// A record to send, or a result already decided here.
pub enum Prepared<T> {
    Send(T),
    Decided(ImportResult),
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn user(r: &CustomerRow) -> Prepared<records::User> {
    Prepared::Send(records::User {
        legacy_id: r.id.to_string(),
        tenant_id: r.tenant_id.clone(),
        email: r.email.clone(),
        email_verified_at: r.email_verified_at,
        display_name: r.display_name.clone(),
        active: r.is_active,
        created_at: r.created_at,
    })
}

pub fn session(r: &SessionRow) -> Prepared<records::Session> {
    Prepared::Send(records::Session {
        legacy_id: r.id.to_string(),
        user_legacy_id: r.customer_id.to_string(),
        token_sha256: b64url(&r.token_sha256),
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_seen_at: r.last_seen_at,
        revoked_at: r.revoked_at,
        ip: r.ip.clone(),
        user_agent: r.user_agent.clone(),
    })
}

pub fn backup_code(r: &BackupCodeRow) -> Prepared<records::BackupCode> {
    Prepared::Send(records::BackupCode {
        legacy_id: r.id.to_string(),
        user_legacy_id: r.customer_id.to_string(),
        werkzeug_hash: r.code_hash.clone(),
        created_at: r.created_at,
        used_at: r.used_at,
    })
}

pub fn passkey(r: &CredentialRow) -> Prepared<records::Passkey> {
    Prepared::Send(records::Passkey {
        legacy_id: r.id.to_string(),
        user_legacy_id: r.customer_id.to_string(),
        credential_id: b64url(&r.credential_id),
        public_key: b64url(&r.public_key),
        sign_count: r.sign_count,
        aaguid: r.aaguid.clone(),
        device_type: r.device_type.clone(),
        backed_up: r.backed_up,
        user_verified: r.user_verified,
        transports: r.transports.clone(),
        user_handle: b64url(&r.user_handle),
        name: r.name.clone(),
        created_at: r.created_at,
        last_used_at: r.last_used_at,
    })
}

pub fn role(r: &RoleRow) -> Prepared<records::Role> {
    Prepared::Send(records::Role {
        legacy_id: r.id.to_string(),
        tenant_id: r.tenant_id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        permissions: r.permissions.clone(),
        created_at: r.created_at,
    })
}

/// What the users' import made of each customer.
enum Became {
    User(String),
    /// Created by a dry run: no Queue id exists yet.
    WouldBeCreated,
    NotImported(String),
}

/// Raptor customer id → Queue user id, learnt from the users' results.
pub struct UserIds {
    ids: HashMap<i64, Became>,
    dry_run: bool,
}

impl UserIds {
    pub fn new(dry_run: bool) -> Self {
        Self { ids: HashMap::new(), dry_run }
    }

    pub fn learn(&mut self, r: &ImportResult) {
        let Ok(customer) = r.legacy_id.parse::<i64>() else { return };
        let became = match (&r.id, r.outcome) {
            (_, Outcome::Refused | Outcome::Skipped) => Became::NotImported(format!(
                "was {} at auth: {}",
                r.outcome.name(),
                r.reason.as_deref().unwrap_or("no reason given")
            )),
            (Some(id), _) => Became::User(id.clone()),
            (None, Outcome::Created) if self.dry_run => Became::WouldBeCreated,
            (None, o) => Became::NotImported(format!("has no Queue id (auth answered `{}` without one)", o.name())),
        };
        self.ids.insert(customer, became);
    }

    /// The Queue user id of `customer`, or why there is none. A customer a dry run would create
    /// gets a stand-in id (a UUID that spells the customer id, written nowhere) so that rbac can
    /// still judge its grants.
    fn resolve(&self, customer: i64, role: &str) -> Result<String, String> {
        match self.ids.get(&customer) {
            Some(Became::User(id)) => Ok(id.clone()),
            Some(Became::WouldBeCreated) => Ok(dry_run_stand_in(customer)),
            Some(Became::NotImported(why)) => Err(format!("{role} customer {customer} {why}")),
            None => Err(format!("{role} customer {customer} is not among the imported users")),
        }
    }
}

/// `00000000-0000-4000-8000-<customer id, 12 digits>`: recognisably not a real user.
pub fn dry_run_stand_in(customer: i64) -> String {
    format!("00000000-0000-4000-8000-{:012}", customer.rem_euclid(1_000_000_000_000))
}

/// Raptor role id → why it was not imported (roles that made it are absent).
#[derive(Default)]
pub struct RoleRefusals(HashMap<i64, String>);

impl RoleRefusals {
    pub fn learn(&mut self, r: &ImportResult) {
        if matches!(r.outcome, Outcome::Refused | Outcome::Skipped)
            && let Ok(role) = r.legacy_id.parse::<i64>()
        {
            let why = r.reason.as_deref().unwrap_or("no reason given");
            self.0.insert(role, format!("{} at rbac: {why}", r.outcome.name()));
        }
    }
}

/// A grant with its principal, granter and revoker as Queue user ids; refused here when one of
/// them, or its role, did not make it into Queue (a refused built-in must not be granted as
/// Queue's own built-in of that name).
pub fn grant(r: &GrantRow, users: &UserIds, roles: &RoleRefusals) -> Prepared<records::Grant> {
    match grant_record(r, users, roles) {
        Ok(g) => Prepared::Send(g),
        Err(why) => Prepared::Decided(ImportResult::refused(r.id.to_string(), why)),
    }
}

fn grant_record(r: &GrantRow, users: &UserIds, roles: &RoleRefusals) -> Result<records::Grant, String> {
    if let Some(why) = roles.0.get(&r.role_id) {
        return Err(format!("role {} ({}) was {why}", r.role_id, r.role));
    }
    let principal_id = users.resolve(r.customer_id, "the grantee")?;
    let granted_by = r.granted_by.map(|c| users.resolve(c, "the granting")).transpose()?;
    let revoked_by = r.revoked_by.map(|c| users.resolve(c, "the revoking")).transpose()?;
    Ok(records::Grant {
        legacy_id: r.id.to_string(),
        principal_id,
        role: r.role.clone(),
        role_tenant_id: r.role_tenant_id.clone(),
        scope: records::Scope {
            kind: r.scope_type.clone(),
            tenant_id: r.tenant_id.clone(),
            ticket_id: r.ticket_id.clone(),
        },
        granted_by,
        granted_at: r.granted_at,
        expires_at: r.expires_at,
        reason: r.reason.clone(),
        revoked_at: r.revoked_at,
        revoked_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, outcome: Outcome, queue: Option<&str>, reason: Option<&str>) -> ImportResult {
        ImportResult { legacy_id: id.into(), outcome, id: queue.map(String::from), reason: reason.map(String::from) }
    }

    fn grant_row(customer: i64, granted_by: Option<i64>, role_id: i64) -> GrantRow {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        GrantRow {
            id: 9,
            customer_id: customer,
            role_id,
            role: "viewer".into(),
            role_tenant_id: None,
            scope_type: "ticket".into(),
            tenant_id: Some("t".into()),
            ticket_id: Some("T-1".into()),
            granted_by,
            granted_at: t,
            expires_at: None,
            reason: None,
            revoked_at: None,
            revoked_by: None,
        }
    }

    fn refused_reason(p: Prepared<records::Grant>) -> String {
        match p {
            Prepared::Decided(r) => {
                assert_eq!(r.outcome, Outcome::Refused);
                r.reason.unwrap_or_default()
            }
            Prepared::Send(g) => panic!("sent {g:?}"),
        }
    }

    #[test]
    fn a_grant_takes_its_customers_queue_ids_or_is_refused_naming_the_customer() {
        let mut users = UserIds::new(true);
        users.learn(&result("1", Outcome::Unchanged, Some("u-1"), None));
        users.learn(&result("2", Outcome::Refused, None, Some("email taken by legacy 7")));
        users.learn(&result("3", Outcome::Created, None, None));
        let mut roles = RoleRefusals::default();
        roles.learn(&result("5", Outcome::Refused, None, Some("built-in differs: +rbac.grant")));
        roles.learn(&result("4", Outcome::Unchanged, Some("r-4"), None));

        let Prepared::Send(g) = grant(&grant_row(1, Some(3), 4), &users, &roles) else { panic!("refused") };
        assert_eq!(g.principal_id, "u-1");
        assert_eq!(g.granted_by.as_deref(), Some("00000000-0000-4000-8000-000000000003"));
        let why = refused_reason(grant(&grant_row(2, None, 4), &users, &roles));
        assert_eq!(why, "the grantee customer 2 was refused at auth: email taken by legacy 7");
        let why = refused_reason(grant(&grant_row(1, Some(2), 4), &users, &roles));
        assert!(why.starts_with("the granting customer 2 was refused"), "{why}");
        let why = refused_reason(grant(&grant_row(1, None, 5), &users, &roles));
        assert_eq!(why, "role 5 (viewer) was refused at rbac: built-in differs: +rbac.grant");
        let why = refused_reason(grant(&grant_row(8, None, 4), &users, &roles));
        assert_eq!(why, "the grantee customer 8 is not among the imported users");
    }

    #[test]
    fn only_a_dry_run_stands_in_for_a_user_without_an_id() {
        let mut users = UserIds::new(false);
        users.learn(&result("3", Outcome::Created, None, None));
        let why = refused_reason(grant(&grant_row(3, None, 4), &users, &RoleRefusals::default()));
        assert_eq!(why, "the grantee customer 3 has no Queue id (auth answered `created` without one)");
    }
}
