//! The aws-kms key provider against a KMS-compatible server (moto) on loopback.

use crate::support::{Audit, exec};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use queue_audit::config::{ChainConfig, KeysConfig};
use queue_testkit::moto::Moto;

/// Creates the two KMS keys the service needs, under aliases, as an operator would.
async fn kms_keys(moto: &Moto) -> KeysConfig {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    let kms = aws_sdk_kms::Client::from_conf(conf);
    let data = kms.create_key().key_usage(KeyUsageType::EncryptDecrypt).send().await.expect("create data key");
    let data_id = data.key_metadata().expect("metadata").key_id().to_string();
    kms.create_alias().alias_name("alias/queue-audit-data").target_key_id(&data_id).send().await.expect("alias");
    let sign = kms
        .create_key()
        .key_usage(KeyUsageType::SignVerify)
        .key_spec(KeySpec::EccNistP256)
        .send()
        .await
        .expect("create signing key");
    let sign_id = sign.key_metadata().expect("metadata").key_id().to_string();
    kms.create_alias().alias_name("alias/queue-audit-checkpoint").target_key_id(&sign_id).send().await.expect("alias");
    KeysConfig {
        provider: "aws-kms".into(),
        kms_endpoint: Some(moto.endpoint.parse().expect("url")),
        kms_region: "us-east-1".into(),
        kms_data_key_id: Some("alias/queue-audit-data".into()),
        kms_checkpoint_key_id: Some("alias/queue-audit-checkpoint".into()),
        ..KeysConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_works_with_kms_data_keys_and_kms_signed_checkpoints() {
    let moto = Moto::start().await;
    let keys = kms_keys(&moto).await;
    let chain = ChainConfig { checkpoint_every: 4, checkpoint_interval_secs: 1, ..ChainConfig::default() };
    let a = Audit::start_with(chain, move |c| c.keys = keys).await;
    a.write_n("t1", 8).await;

    let checkpoint = a.wait_for_checkpoint("t1", 8).await;
    assert_eq!(
        (checkpoint["seq"].as_i64(), checkpoint["algorithm"].as_str()),
        (Some(8), Some("ECDSA_SHA_256")),
        "signed by KMS"
    );
    let report = a.verify("t1").await;
    assert_eq!((report["ok"].as_bool(), report["checkpoint_seq"].as_i64()), (Some(true), Some(8)), "{report}");

    // Rotation through KMS: a new GenerateDataKey; both epochs verify.
    let ring = queue_audit::key_ring(&a.config).await.expect("ring");
    let mut owner = a.attacker().await;
    assert_eq!(ring.rotate(&mut owner).await.expect("rotate"), 2);
    a.write_n("t1", 2).await;
    assert_eq!(a.verify("t1").await["ok"], true);

    // The stored data key is the KMS ciphertext, bound to its epoch by the encryption context:
    // moving it to another epoch makes it unusable, and the verifier says where.
    exec(
        &mut owner,
        "UPDATE audit.keys SET epoch = 3 WHERE epoch = 2;
                      UPDATE audit.customer_audit_events SET key_id = 3 WHERE tenant_id = 't1' AND key_id = 2",
    )
    .await
    .expect("tamper");
    let report = a.verify("t1").await;
    assert_eq!((report["ok"].as_bool(), report["first_bad_seq"].as_i64()), (Some(false), Some(9)), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kms_key_stops_start_up() {
    let moto = Moto::start().await;
    let mut keys = kms_keys(&moto).await;
    keys.kms_data_key_id = Some("alias/does-not-exist".into());
    let db = queue_testkit::TestDb::new(&[queue_audit::MIGRATIONS]).await;
    let tk = queue_testkit::TestKeys::new();
    let base = queue_testkit::service_config("audit", &db.url, &tk);
    let err = queue_audit::run(queue_audit::AuditConfig::new(base, keys), queue_platform::Signals::Ignore).await.err();
    let err = err.expect("must not start").to_string();
    assert!(err.contains("GenerateDataKey"), "{err}");
}
