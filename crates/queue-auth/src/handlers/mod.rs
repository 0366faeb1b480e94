pub mod backup_codes;
pub mod email;
pub mod import;
pub mod import_passkeys;
pub mod sessions;
pub mod users;
pub mod webauthn;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::sessions::{Kind, Minted};
use crate::state::AuthState;

/// A JSON body that must be an object, as the document says (`type: object`): serde's derive
/// also reads a struct from an array of its fields in order, so `[null, null]` would pass for a
/// body of two optional fields. Dereferences to the body.
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::deserialize(d)?;
        T::deserialize(serde_json::Value::Object(map)).map(Object).map_err(serde::de::Error::custom)
    }
}

impl<T> std::ops::Deref for Object<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A minted session as the client receives it (the token appears here and in the cookie only).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "token": "q3Vt1Yb0m2cHc8Wk5n9dPzL4xRaTfGhJiKlMnOpQrSs", "kind": "full", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "idle_expires_at": "2026-12-07T15:30:00Z", "absolute_expires_at": "2026-12-21T15:00:00Z"}))]
pub struct SessionOut {
    pub id: Uuid,
    pub token: String,
    pub kind: Kind,
    pub user_id: Uuid,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"session": {"id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "token": "q3Vt1Yb0m2cHc8Wk5n9dPzL4xRaTfGhJiKlMnOpQrSs", "kind": "full", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "idle_expires_at": "2026-12-07T15:30:00Z", "absolute_expires_at": "2026-12-21T15:00:00Z"}}))]
pub struct SessionEnvelope {
    pub session: SessionOut,
}

/// 200 with the session in the body and in the `queue_session` cookie.
pub fn session_response(state: &AuthState, m: Minted, mut extra: serde_json::Value) -> HttpResponse {
    let max_age = (m.session.absolute_expires_at - state.now()).num_seconds().max(0);
    let cookie = state.cookie(Some(&m.token), max_age);
    let out = SessionOut {
        id: m.session.id,
        token: m.token.to_string(),
        kind: m.session.kind,
        user_id: m.session.user_id,
        idle_expires_at: m.session.idle_expires_at,
        absolute_expires_at: m.session.absolute_expires_at,
    };
    if let Some(obj) = extra.as_object_mut() {
        obj.insert("session".into(), serde_json::to_value(out).unwrap_or_default());
    }
    HttpResponse::Ok().insert_header(("set-cookie", cookie)).insert_header(("cache-control", "no-store")).json(extra)
}
