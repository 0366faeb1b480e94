//! Backup codes: shown once, stored as HMACs, single use under concurrency, any order, a new
//! set voids the old, redeem gives a recovery session; behind the flag.

use serde_json::{Value, json};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::support::Auth;

const REDEEM: &str = "/api/v1/auth/backup-codes/redeem";

async fn codes(auth: &Auth, token: &str) -> Vec<String> {
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(token), &json!({})).await;
    assert_eq!(s, 201, "{v}");
    v["codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("code").to_string()).collect()
}

#[tokio::test]
async fn generate_redeem_in_any_order_and_a_new_set_voids_the_old() {
    let auth = Auth::start().await;
    let (token, _key) = auth.signed_in("codes@example.com").await;
    let set = codes(&auth, &token).await;
    assert_eq!(set.len(), 10);
    for c in &set {
        // xxxx-xxxx-xxxxx: 13 base32 characters, 65 bits.
        assert_eq!(c.len(), 15, "{c}");
        assert!(c.chars().all(|ch| ch == '-' || ch.is_ascii_digit() || ch.is_ascii_lowercase()), "{c}");
    }
    let (_, v) = auth.get("/api/v1/auth/backup-codes", &token).await;
    assert_eq!(v["remaining"], 10);

    // Redeem the last and then the third, typed sloppily: upper case, spaces instead of dashes.
    let sloppy = set[9].to_uppercase().replace('-', " ");
    let (s, v) = auth.post(REDEEM, None, &json!({"email": "codes@example.com", "code": sloppy})).await;
    assert_eq!(
        (s.as_u16(), v["session"]["kind"].as_str(), v["remaining"].as_i64()),
        (200, Some("recovery"), Some(9)),
        "{v}"
    );
    assert_eq!(auth.validate(&token).await["valid"], false, "a redeem ends the user's other sessions");
    let first_recovery = v["session"]["token"].as_str().expect("token").to_string();
    let (s, v) = auth.post(REDEEM, None, &json!({"email": "codes@example.com", "code": set[2]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(auth.validate(&first_recovery).await["valid"], false);
    let recovery = v["session"]["token"].as_str().expect("token").to_string();
    // A used code fails.
    let (s, _) = auth.post(REDEEM, None, &json!({"email": "codes@example.com", "code": set[9]})).await;
    assert_eq!(s, 401);

    // The recovery session may register a passkey, and nothing else.
    let (s, _) = auth.get("/api/v1/auth/sessions", &recovery).await;
    assert_eq!(s, 403);
    let mut new_key = SoftPasskey::new(true);
    auth.add_passkey(&recovery, &mut new_key, "replacement").await;
    let full = auth.login("codes@example.com", &mut new_key).await;
    let (_, v) = auth.get("/api/v1/auth/backup-codes", &full).await;
    assert_eq!(v["remaining"], 8);

    let fresh = codes(&auth, &full).await;
    let (s, _) = auth.post(REDEEM, None, &json!({"email": "codes@example.com", "code": set[0]})).await;
    assert_eq!(s, 401, "the old set is void");
    let (_, v) = auth.get("/api/v1/auth/backup-codes", &full).await;
    assert_eq!(v["remaining"], 10);
    assert_ne!(fresh, set);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.backup_code.used'")
            .await,
        2
    );
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.backup_codes.generated'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn fifty_concurrent_redeems_of_one_code_succeed_once() {
    let auth = Auth::start().await;
    let (token, _key) = auth.signed_in("race@example.com").await;
    let set = codes(&auth, &token).await;
    let calls = (0..50).map(|_| {
        let client = auth.app.client.clone();
        let url = auth.app.url(REDEEM);
        let code = set[4].clone();
        async move {
            client
                .post(url)
                .json(&json!({"email": "race@example.com", "code": code}))
                .send()
                .await
                .expect("send")
                .status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| s.as_u16() == 200).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 401, 429].contains(&s.as_u16())), "{statuses:?}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.queue_backup_codes WHERE used_at IS NOT NULL").await, 1);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.queue_sessions WHERE kind = 'recovery'").await,
        1,
        "one recovery session"
    );
}

#[tokio::test]
async fn no_code_or_token_is_stored_in_plaintext() {
    let auth = Auth::start().await;
    let (token, _key) = auth.signed_in("plain@example.com").await;
    let set = codes(&auth, &token).await;
    let (_, v) = auth.post(REDEEM, None, &json!({"email": "plain@example.com", "code": set[0]})).await;
    let recovery = v["session"]["token"].as_str().expect("token").to_string();
    let mut secrets: Vec<String> = vec![token, recovery];
    for c in &set {
        secrets.push(c.clone());
        secrets.push(c.replace('-', ""));
    }
    // Every row of every table of the service (shadows included), as text.
    let tables: Vec<String> = {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct T {
            #[diesel(sql_type = diesel::sql_types::Text)]
            t: String,
        }
        let mut c = auth.sql().await;
        diesel::sql_query("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'auth'")
            .load::<T>(&mut c)
            .await
            .expect("tables")
            .into_iter()
            .map(|t| t.t)
            .collect()
    };
    assert!(tables.len() >= 10, "{tables:?}");
    for table in &tables {
        for s in &secrets {
            let n = auth
                .scalar(&format!(
                    "SELECT count(*) AS n FROM auth.{table} t WHERE row_to_json(t)::text ILIKE '%{s}%' \
                     OR encode(convert_to(row_to_json(t)::text, 'UTF8'), 'hex') LIKE '%' || encode(convert_to('{s}', 'UTF8'), 'hex') || '%'"
                ))
                .await;
            assert_eq!(n, 0, "{s} found in auth.{table}");
        }
    }
}

#[tokio::test]
async fn the_flag_turns_them_off() {
    let auth = Auth::start_with(|c| c.flags.auth_backup_codes = false).await;
    let (token, _key) = auth.signed_in("off@example.com").await;
    let (s, _) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 404);
    let (s, v): (_, Value) = auth.post(REDEEM, None, &json!({"email": "off@example.com", "code": "x"})).await;
    assert_eq!(s, 404, "{v}");
}
