//! One converter per kind: a Raptor row into the record its import endpoint takes. Nothing is
//! decided here that a service decides (expired sessions, unknown hash methods, unsupported keys
//! go as they are, and the service says `skipped` or `refused`); what is decided here is what
//! only queuectl knows: which Queue user a grant's customers became, whether its role made it,
//! whether its grantee is in its tenant (rbac knows no users), whether a passkey's counter fits
//! WebAuthn's 32 bits (else the whole batch would fail at auth), and — in a dry run — which records
//! name a user or role that only this same run creates (the dry run writes nothing, so the
//! service cannot find it: such a refusal is reported `skipped`, to be judged on the real run).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::{HashMap, HashSet};

use crate::legacy::records::{self, ImportResult, Outcome};
use crate::legacy::source::{BackupCodeRow, CredentialRow, CustomerRow, GrantRow, RoleRow, SessionRow};

/// Why a dry run's refusal of a record may only mean that what it names is not written yet.
const USER_NOT_YET: &str =
    "dry run: its user is created or linked by this import, so auth can judge it only on the real run";
const ROLE_NOT_YET: &str =
    "dry run: its role is created or linked by this import, so rbac can judge it only on the real run";

/// A record to send, or a result already decided here.
pub enum Prepared<T> {
    /// `provisional`: set in a dry run when the record names something only this run creates.
    Send {
        record: T,
        provisional: Option<&'static str>,
    },
    Decided(ImportResult),
}

impl<T> Prepared<T> {
    fn send(record: T) -> Self {
        Prepared::Send { record, provisional: None }
    }
}

/// The result to report: a refusal of a provisional record is `skipped` with the reason why.
pub fn settle(result: ImportResult, provisional: Option<&'static str>) -> ImportResult {
    match provisional {
        Some(why) if result.outcome == Outcome::Refused => {
            ImportResult { outcome: Outcome::Skipped, reason: Some(why.to_string()), ..result }
        }
        _ => result,
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn user(r: &CustomerRow) -> Prepared<records::User> {
    Prepared::send(records::User {
        legacy_id: r.id.to_string(),
        tenant_id: r.tenant_id.clone(),
        email: r.email.clone(),
        email_verified_at: r.email_verified_at,
        display_name: r.display_name.clone(),
        active: r.is_active,
        created_at: r.created_at,
    })
}

pub fn session(r: &SessionRow, users: &Customers) -> Prepared<records::Session> {
    Prepared::Send {
        record: records::Session {
            legacy_id: r.id.to_string(),
            user_legacy_id: r.customer_id.to_string(),
            token_sha256: b64url(&r.token_sha256),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_seen_at: r.last_seen_at,
            revoked_at: r.revoked_at,
            ip: r.ip.clone(),
            user_agent: r.user_agent.clone(),
        },
        provisional: users.provisional(r.customer_id),
    }
}

pub fn backup_code(r: &BackupCodeRow, users: &Customers) -> Prepared<records::BackupCode> {
    Prepared::Send {
        record: records::BackupCode {
            legacy_id: r.id.to_string(),
            user_legacy_id: r.customer_id.to_string(),
            werkzeug_hash: r.code_hash.clone(),
            created_at: r.created_at,
            used_at: r.used_at,
        },
        provisional: users.provisional(r.customer_id),
    }
}

pub fn passkey(r: &CredentialRow, users: &Customers) -> Prepared<records::Passkey> {
    // WebAuthn's counter is 32 bits; auth reads it as such, and a value it cannot read would
    // fail the whole batch rather than this record.
    if u32::try_from(r.sign_count).is_err() {
        let why = format!("sign_count {} is not a WebAuthn signature counter (0 to {})", r.sign_count, u32::MAX);
        return Prepared::Decided(ImportResult::refused(r.id.to_string(), why));
    }
    Prepared::Send {
        record: records::Passkey {
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
        },
        provisional: users.provisional(r.customer_id),
    }
}

pub fn role(r: &RoleRow) -> Prepared<records::Role> {
    Prepared::send(records::Role {
        legacy_id: r.id.to_string(),
        tenant_id: r.tenant_id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        permissions: r.permissions.clone(),
        created_at: r.created_at,
    })
}

/// What the users' import made of a customer.
enum Became {
    /// `new`: created or updated (perhaps linked) by this run, which is a dry run (the id may be
    /// written nowhere, or absent).
    User {
        id: Option<String>,
        new: bool,
    },
    NotImported(String),
}

struct Customer {
    tenant: String,
    became: Became,
}

/// Raptor customer id → its tenant and Queue user, learnt from the users' rows and results.
pub struct Customers {
    known: HashMap<i64, Customer>,
    dry_run: bool,
}

impl Customers {
    pub fn new(dry_run: bool) -> Self {
        Self { known: HashMap::new(), dry_run }
    }

    pub fn learn(&mut self, row: &CustomerRow, r: &ImportResult) {
        // Created, or updated (which may be a link of a Queue user without a legacy id): in a dry
        // run auth may not find it by legacy id afterwards.
        let new = self.dry_run && matches!(r.outcome, Outcome::Created | Outcome::Updated);
        let became = match (&r.id, r.outcome) {
            (_, Outcome::Refused | Outcome::Skipped) => Became::NotImported(format!(
                "was {} at auth: {}",
                r.outcome.name(),
                r.reason.as_deref().unwrap_or("no reason given")
            )),
            (Some(id), _) => Became::User { id: Some(id.clone()), new },
            (None, _) if new => Became::User { id: None, new },
            (None, o) => Became::NotImported(format!("has no Queue id (auth answered `{}` without one)", o.name())),
        };
        self.known.insert(row.id, Customer { tenant: row.tenant_id.clone(), became });
    }

    /// `(customer id, Queue user id)` of every customer auth holds as a user (none in a dry run's
    /// new users: they have no Queue id), in customer id order.
    pub fn imported(&self) -> Vec<(i64, String)> {
        let mut pairs: Vec<(i64, String)> = self
            .known
            .iter()
            .filter_map(|(c, k)| match &k.became {
                Became::User { id: Some(id), .. } => Some((*c, id.clone())),
                _ => None,
            })
            .collect();
        pairs.sort();
        pairs
    }

    fn provisional(&self, customer: i64) -> Option<&'static str> {
        match self.known.get(&customer) {
            Some(Customer { became: Became::User { new: true, .. }, .. }) => Some(USER_NOT_YET),
            _ => None,
        }
    }

    /// The Queue user id of `customer`, or why there is none. A customer a dry run would create
    /// and auth gave no id gets a stand-in (a UUID that spells the customer id, written nowhere)
    /// so that rbac can still judge its grants.
    fn resolve(&self, customer: i64, who: &str) -> Result<String, String> {
        match self.known.get(&customer).map(|c| &c.became) {
            Some(Became::User { id: Some(id), .. }) => Ok(id.clone()),
            Some(Became::User { id: None, .. }) => Ok(dry_run_stand_in(customer)),
            Some(Became::NotImported(why)) => Err(format!("{who} customer {customer} {why}")),
            None => Err(format!("{who} customer {customer} is not among the imported users")),
        }
    }

    fn tenant(&self, customer: i64) -> Option<&str> {
        self.known.get(&customer).map(|c| c.tenant.as_str())
    }
}

/// `00000000-0000-4000-8000-<customer id, 12 digits>`: recognisably not a real user.
pub fn dry_run_stand_in(customer: i64) -> String {
    format!("00000000-0000-4000-8000-{:012}", customer.rem_euclid(1_000_000_000_000))
}

/// Raptor role id → what the roles' import made of it: why it was not imported, or that only
/// this dry run creates it.
pub struct Roles {
    refused: HashMap<i64, String>,
    new: HashSet<i64>,
    dry_run: bool,
}

impl Roles {
    pub fn new(dry_run: bool) -> Self {
        Self { refused: HashMap::new(), new: HashSet::new(), dry_run }
    }

    pub fn learn(&mut self, row: &RoleRow, r: &ImportResult) {
        match r.outcome {
            Outcome::Refused | Outcome::Skipped => {
                let why = r.reason.as_deref().unwrap_or("no reason given");
                self.refused.insert(row.id, format!("{} at rbac: {why}", r.outcome.name()));
            }
            Outcome::Created | Outcome::Updated if self.dry_run => {
                self.new.insert(row.id);
            }
            _ => {}
        }
    }
}

/// A grant with its principal, granter and revoker as Queue user ids; refused here when one of
/// them, or its role, did not make it into Queue (a refused built-in must not be granted as
/// Queue's own built-in of that name), or when its grantee is not in the grant's tenant.
pub fn grant(r: &GrantRow, users: &Customers, roles: &Roles) -> Prepared<records::Grant> {
    match grant_record(r, users, roles) {
        Ok(record) => Prepared::Send { record, provisional: roles.new.contains(&r.role_id).then_some(ROLE_NOT_YET) },
        Err(why) => Prepared::Decided(ImportResult::refused(r.id.to_string(), why)),
    }
}

fn grant_record(r: &GrantRow, users: &Customers, roles: &Roles) -> Result<records::Grant, String> {
    if let Some(why) = roles.refused.get(&r.role_id) {
        return Err(format!("role {} ({}) was {why}", r.role_id, r.role));
    }
    let principal_id = users.resolve(r.customer_id, "the grantee")?;
    // Raptor's own API refuses such a grant (409); a row made around it must not give a
    // customer rights in another tenant at Queue.
    if let (Some(scope), Some(home)) = (r.tenant_id.as_deref(), users.tenant(r.customer_id))
        && scope != home
    {
        return Err(format!(
            "the grantee customer {} is in tenant {home}, not in the grant's tenant {scope}",
            r.customer_id
        ));
    }
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

    fn result(id: i64, outcome: Outcome, queue: Option<&str>, reason: Option<&str>) -> ImportResult {
        ImportResult {
            legacy_id: id.to_string(),
            outcome,
            id: queue.map(String::from),
            reason: reason.map(String::from),
        }
    }

    fn time() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time")
    }

    fn customer(id: i64, tenant: &str) -> CustomerRow {
        CustomerRow {
            id,
            tenant_id: tenant.into(),
            email: format!("c{id}@example.test"),
            email_verified_at: None,
            display_name: None,
            is_active: true,
            created_at: time(),
        }
    }

    fn role_row(id: i64) -> RoleRow {
        RoleRow {
            id,
            tenant_id: None,
            name: "viewer".into(),
            description: None,
            permissions: vec![],
            created_at: time(),
        }
    }

    fn grant_row(customer: i64, granted_by: Option<i64>, role_id: i64) -> GrantRow {
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
            granted_at: time(),
            expires_at: None,
            reason: None,
            revoked_at: None,
            revoked_by: None,
        }
    }

    fn sent(p: Prepared<records::Grant>) -> (records::Grant, Option<&'static str>) {
        match p {
            Prepared::Send { record, provisional } => (record, provisional),
            Prepared::Decided(r) => panic!("decided {r:?}"),
        }
    }

    fn refused_reason(p: Prepared<records::Grant>) -> String {
        match p {
            Prepared::Decided(r) => {
                assert_eq!(r.outcome, Outcome::Refused);
                r.reason.unwrap_or_default()
            }
            Prepared::Send { record, .. } => panic!("sent {record:?}"),
        }
    }

    #[test]
    fn a_grant_takes_its_customers_queue_ids_or_is_refused_naming_the_customer() {
        let mut users = Customers::new(true);
        users.learn(&customer(1, "t"), &result(1, Outcome::Unchanged, Some("u-1"), None));
        users.learn(&customer(2, "t"), &result(2, Outcome::Refused, None, Some("email taken by legacy 7")));
        users.learn(&customer(3, "t"), &result(3, Outcome::Created, None, None));
        users.learn(&customer(4, "other"), &result(4, Outcome::Unchanged, Some("u-4"), None));
        let mut roles = Roles::new(true);
        roles.learn(&role_row(5), &result(5, Outcome::Refused, None, Some("built-in differs: +rbac.grant")));
        roles.learn(&role_row(4), &result(4, Outcome::Unchanged, Some("r-4"), None));

        let (g, provisional) = sent(grant(&grant_row(1, Some(3), 4), &users, &roles));
        assert_eq!(g.principal_id, "u-1");
        assert_eq!(g.granted_by.as_deref(), Some("00000000-0000-4000-8000-000000000003"));
        assert_eq!(provisional, None);
        let why = refused_reason(grant(&grant_row(2, None, 4), &users, &roles));
        assert_eq!(why, "the grantee customer 2 was refused at auth: email taken by legacy 7");
        let why = refused_reason(grant(&grant_row(1, Some(2), 4), &users, &roles));
        assert!(why.starts_with("the granting customer 2 was refused"), "{why}");
        let why = refused_reason(grant(&grant_row(1, None, 5), &users, &roles));
        assert_eq!(why, "role 5 (viewer) was refused at rbac: built-in differs: +rbac.grant");
        let why = refused_reason(grant(&grant_row(8, None, 4), &users, &roles));
        assert_eq!(why, "the grantee customer 8 is not among the imported users");
        let why = refused_reason(grant(&grant_row(4, None, 4), &users, &roles));
        assert_eq!(why, "the grantee customer 4 is in tenant other, not in the grant's tenant t");
    }

    #[test]
    fn a_counter_beyond_32_bits_is_refused_here() {
        let t = time();
        let mut row = CredentialRow {
            id: 4,
            customer_id: 1,
            credential_id: vec![1],
            public_key: vec![2],
            sign_count: i64::from(u32::MAX),
            aaguid: None,
            device_type: "single_device".into(),
            backed_up: false,
            user_verified: true,
            transports: None,
            user_handle: vec![3],
            name: None,
            created_at: t,
            last_used_at: None,
        };
        let users = Customers::new(false);
        assert!(matches!(passkey(&row, &users), Prepared::Send { .. }));
        row.sign_count += 1;
        let Prepared::Decided(r) = passkey(&row, &users) else { panic!("sent") };
        assert_eq!(
            r.reason.as_deref(),
            Some("sign_count 4294967296 is not a WebAuthn signature counter (0 to 4294967295)")
        );
    }

    #[test]
    fn only_a_dry_run_stands_in_for_a_user_without_an_id() {
        let mut users = Customers::new(false);
        users.learn(&customer(3, "t"), &result(3, Outcome::Created, None, None));
        let why = refused_reason(grant(&grant_row(3, None, 4), &users, &Roles::new(false)));
        assert_eq!(why, "the grantee customer 3 has no Queue id (auth answered `created` without one)");
    }

    #[test]
    fn in_a_dry_run_a_refusal_for_what_only_this_run_creates_is_a_skip() {
        let mut users = Customers::new(true);
        users.learn(&customer(3, "t"), &result(3, Outcome::Created, Some("u-3"), None));
        users.learn(&customer(1, "t"), &result(1, Outcome::Unchanged, Some("u-1"), None));
        let mut roles = Roles::new(true);
        roles.learn(&role_row(4), &result(4, Outcome::Created, None, None));
        let linked = Some("linked to the existing Queue user of this address");
        users.learn(&customer(5, "t"), &result(5, Outcome::Updated, Some("u-5"), linked));
        assert_eq!(users.provisional(3), Some(USER_NOT_YET));
        assert_eq!(users.provisional(5), Some(USER_NOT_YET), "a link is undone with the dry run too");
        assert_eq!(users.provisional(1), None);
        let (g, provisional) = sent(grant(&grant_row(3, None, 4), &users, &roles));
        assert_eq!((g.principal_id.as_str(), provisional), ("u-3", Some(ROLE_NOT_YET)));

        let refused = result(7, Outcome::Refused, None, Some("no Queue user has legacy id 3"));
        let settled = settle(refused.clone(), Some(USER_NOT_YET));
        assert_eq!((settled.outcome, settled.reason.as_deref()), (Outcome::Skipped, Some(USER_NOT_YET)));
        assert_eq!(settle(refused, None).outcome, Outcome::Refused);
        let created = result(7, Outcome::Created, None, None);
        assert_eq!(settle(created, Some(USER_NOT_YET)).outcome, Outcome::Created);
        // Not a dry run: nothing is provisional.
        let mut real = Customers::new(false);
        real.learn(&customer(3, "t"), &result(3, Outcome::Created, Some("u-3"), None));
        assert_eq!(real.provisional(3), None);
    }
}
