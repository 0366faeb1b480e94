//! One use per token on state-changing routes: `Verifier::spend` remembers `(iss, jti)` until
//! the token could no longer verify.

use super::*;
use std::sync::atomic::AtomicU64;

struct MovingClock(AtomicU64);
impl Clock for MovingClock {
    fn now_secs(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn moving_verifier(k: &SigningKey) -> (Verifier, Arc<MovingClock>) {
    let clock = Arc::new(MovingClock(AtomicU64::new(NOW)));
    let trusted = vec![TrustedIssuer { name: "auth".into(), source: IssuerSource::Static(vec![k.public().clone()]) }];
    (Verifier::new(VerifierSettings::new("audit"), trusted, reqwest::Client::new(), clock.clone()), clock)
}

#[tokio::test]
async fn a_spent_token_is_refused_as_replayed_until_it_expires() {
    let k = key();
    let (v, clock) = moving_verifier(&k);
    let t = Minter::new("auth", k.clone()).sign(&claims()).expect("sign");
    let first = verify(&v, &t).await.expect("fresh");
    assert_eq!(v.spend(&first), Ok(()));
    // The very same text, and another text carrying the same iss+jti (re-signed), are refused.
    let again = verify(&v, &t).await.expect("still verifies: reads may reuse it");
    assert_eq!(v.spend(&again), Err(TokenError::Replayed));
    let same_jti =
        Minter::new("auth", k.clone()).sign(&with(claims(), "scope", json!(["audit:write", "x"]))).expect("sign");
    let same_jti = verify(&v, &same_jti).await.expect("verifies");
    assert_eq!(v.spend(&same_jti), Err(TokenError::Replayed));
    // Another jti is another token.
    let other = Minter::new("auth", k.clone()).sign(&with(claims(), "jti", json!("j-2"))).expect("sign");
    assert_eq!(v.spend(&verify(&v, &other).await.expect("verifies")), Ok(()));
    // Still remembered at the last second the token could verify…
    clock.0.store(NOW + 60 + 29, Ordering::SeqCst);
    assert_eq!(v.spend(&first), Err(TokenError::Replayed));
    // …and gone once it cannot: verification itself refuses it from then on.
    clock.0.store(NOW + 60 + 30, Ordering::SeqCst);
    assert_eq!(verify(&v, &t).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn a_full_replay_set_refuses_new_tokens_rather_than_forgetting() {
    let k = key();
    let trusted = vec![TrustedIssuer { name: "auth".into(), source: IssuerSource::Static(vec![k.public().clone()]) }];
    let mut settings = VerifierSettings::new("audit");
    settings.replay_max_entries = 2;
    let v = Verifier::new(settings, trusted, reqwest::Client::new(), Arc::new(FixedClock(NOW)));
    let minter = Minter::new("auth", k.clone());
    let mut spent = Vec::new();
    for jti in ["a", "b", "c"] {
        let t = minter.sign(&with(claims(), "jti", json!(jti))).expect("sign");
        let verified = verify(&v, &t).await.expect("verifies");
        spent.push(v.spend(&verified));
    }
    assert_eq!(spent, vec![Ok(()), Ok(()), Err(TokenError::ReplayCacheFull)]);
}
