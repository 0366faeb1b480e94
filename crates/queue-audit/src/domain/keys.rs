//! Key handling: the HMAC data keys (one per epoch, stored encrypted) and the checkpoint
//! signing key, behind one provider interface with two implementations.
//!
//! - `local`: a 32-byte master key file wraps data keys with AES-256-GCM; checkpoints are
//!   signed with a local ECDSA P-256 key file. The default for `make run`.
//! - `aws-kms`: `GenerateDataKey` under a configured KMS key (the encrypted blob is stored),
//!   `Decrypt` with an encryption context at start-up, and `Sign` (ECDSA_SHA_256) with a KMS
//!   key that never leaves KMS. The endpoint is configurable (tests use a KMS-compatible server
//!   on loopback).
//!
//! Plaintext key bytes live in `Zeroizing` buffers and in [`DataKey`], whose `Debug` redacts;
//! nothing here logs or serialises them.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, MessageType, SigningAlgorithmSpec};
use base64::Engine;
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

use crate::config::KeysConfig;

pub const CHECKPOINT_ALGORITHM: &str = "ECDSA_SHA_256";
/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows it.
const SPKI_P256_PREFIX_LEN: usize = 26;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    File(String, String),
    #[error("key material is malformed: {0}")]
    Malformed(&'static str),
    #[error("KMS {operation} failed: {message}")]
    Kms { operation: &'static str, message: String },
}

/// One epoch's HMAC key.
pub struct DataKey {
    pub epoch: i32,
    key: Zeroizing<[u8; 32]>,
    mac: crate::domain::chain::MacKey,
}

impl DataKey {
    pub fn new(epoch: i32, key: Zeroizing<[u8; 32]>) -> Self {
        let mac = crate::domain::chain::MacKey::new(&key);
        Self { epoch, key, mac }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The key ready to MAC with (see [`crate::domain::chain::MacKey`]).
    pub fn mac_key(&self) -> &crate::domain::chain::MacKey {
        &self.mac
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("epoch", &self.epoch).field("key", &"<redacted>").finish()
    }
}

/// A freshly generated data key: the plaintext to use and the wrapped form to store.
pub struct NewDataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub encrypted: Vec<u8>,
    pub key_ref: String,
}

pub enum KeyProvider {
    Local(LocalKeys),
    AwsKms(KmsKeys),
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn context(epoch: i32) -> [(&'static str, String); 2] {
    [("service", "queue-audit".to_string()), ("epoch", epoch.to_string())]
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut k = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(KeyError::Malformed("data key is not 32 bytes"));
    }
    k.copy_from_slice(bytes);
    Ok(k)
}

impl KeyProvider {
    pub async fn from_config(config: &KeysConfig) -> Result<Self, KeyError> {
        match config.provider.as_str() {
            "aws-kms" => Ok(Self::AwsKms(KmsKeys::new(config))),
            _ => Ok(Self::Local(LocalKeys::load(config)?)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::AwsKms(_) => "aws-kms",
        }
    }

    pub async fn generate_data_key(&self, epoch: i32) -> Result<NewDataKey, KeyError> {
        match self {
            Self::Local(l) => l.generate_data_key(epoch),
            Self::AwsKms(k) => k.generate_data_key(epoch).await,
        }
    }

    pub async fn decrypt_data_key(&self, epoch: i32, encrypted: &[u8], key_ref: &str) -> Result<DataKey, KeyError> {
        let key = match self {
            Self::Local(l) => l.decrypt(epoch, encrypted)?,
            Self::AwsKms(k) => k.decrypt(epoch, encrypted, key_ref).await?,
        };
        Ok(DataKey::new(epoch, key))
    }

    /// Signs `message` with the checkpoint key: (DER ECDSA signature, key reference).
    pub async fn sign(&self, message: &[u8]) -> Result<(Vec<u8>, String), KeyError> {
        match self {
            Self::Local(l) => l.sign(message),
            Self::AwsKms(k) => k.sign(message).await,
        }
    }

    /// The checkpoint key's public point (65-byte uncompressed P-256), for verification.
    pub async fn checkpoint_public_key(&self) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Local(l) => Ok(l.checkpoint.public_key().as_ref().to_vec()),
            Self::AwsKms(k) => k.public_key().await,
        }
    }
}

/// Verifies a checkpoint signature against a public point.
pub fn verify_signature(public_point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_point).verify(message, signature).is_ok()
}

pub struct LocalKeys {
    master: LessSafeKey,
    master_id: String,
    checkpoint: EcdsaKeyPair,
    checkpoint_id: String,
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))
}

fn short_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl LocalKeys {
    pub fn load(config: &KeysConfig) -> Result<Self, KeyError> {
        let path = &config.local_master_key;
        let text = read(path)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8_lossy(&text).trim())
            .map(Zeroizing::new)
            .map_err(|_| KeyError::File(path.display().to_string(), "not base64".into()))?;
        let master_key = to_key(&raw)?;
        let master = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, master_key.as_ref()).map_err(|_| KeyError::Malformed("master key"))?,
        );
        let cp_path = &config.local_checkpoint_key;
        let pem_text = read(cp_path)?;
        let doc =
            pem::parse(&*pem_text).map_err(|_| KeyError::File(cp_path.display().to_string(), "not PEM".into()))?;
        let checkpoint = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.contents())
            .map_err(|_| KeyError::File(cp_path.display().to_string(), "not a P-256 PKCS#8 key".into()))?;
        let checkpoint_id = format!("local:{}", short_id(checkpoint.public_key().as_ref()));
        Ok(Self { master, master_id: format!("local:{}", short_id(&raw)), checkpoint, checkpoint_id })
    }

    fn generate_data_key(&self, epoch: i32) -> Result<NewDataKey, KeyError> {
        let rng = SystemRandom::new();
        let mut plaintext = Zeroizing::new([0u8; 32]);
        rng.fill(plaintext.as_mut()).map_err(|_| KeyError::Malformed("rng"))?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| KeyError::Malformed("rng"))?;
        let mut sealed = plaintext.to_vec();
        self.master
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(epoch)), &mut sealed)
            .map_err(|_| KeyError::Malformed("seal"))?;
        let mut encrypted = nonce.to_vec();
        encrypted.extend_from_slice(&sealed);
        sealed.iter_mut().for_each(|b| *b = 0);
        Ok(NewDataKey { plaintext, encrypted, key_ref: self.master_id.clone() })
    }

    fn decrypt(&self, epoch: i32, encrypted: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        if encrypted.len() < NONCE_LEN {
            return Err(KeyError::Malformed("wrapped key too short"));
        }
        let (nonce, sealed) = encrypted.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Malformed("nonce"))?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .master
            .open_in_place(nonce, Aad::from(aad(epoch)), &mut buf)
            .map_err(|_| KeyError::Malformed("wrapped key does not open under this master key and epoch"))?;
        to_key(plain)
    }

    fn sign(&self, message: &[u8]) -> Result<(Vec<u8>, String), KeyError> {
        let sig = self.checkpoint.sign(&SystemRandom::new(), message).map_err(|_| KeyError::Malformed("sign"))?;
        Ok((sig.as_ref().to_vec(), self.checkpoint_id.clone()))
    }
}

fn aad(epoch: i32) -> Vec<u8> {
    format!("queue-audit epoch {epoch}").into_bytes()
}

/// New local key files: (base64 master key, P-256 PKCS#8 PEM checkpoint key).
pub fn generate_local_key_files() -> Result<(Zeroizing<String>, Zeroizing<String>), KeyError> {
    let rng = SystemRandom::new();
    let mut master = Zeroizing::new([0u8; 32]);
    rng.fill(master.as_mut()).map_err(|_| KeyError::Malformed("rng"))?;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(master.as_ref()) + "\n");
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| KeyError::Malformed("generate"))?;
    let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec())));
    Ok((b64, pem))
}

impl KeysConfig {
    /// Creates local key files in `dir` (`audit-master.key`, `audit-checkpoint.pem`, mode 0600)
    /// unless both exist and `replace` is false, and returns a `local` config naming them.
    pub fn local_in(dir: &std::path::Path, replace: bool) -> std::io::Result<(Self, bool)> {
        let config = Self {
            local_master_key: dir.join("audit-master.key"),
            local_checkpoint_key: dir.join("audit-checkpoint.pem"),
            ..Self::default()
        };
        if config.local_master_key.exists() && config.local_checkpoint_key.exists() && !replace {
            return Ok((config, false));
        }
        let (master, checkpoint) = generate_local_key_files().map_err(|e| std::io::Error::other(e.to_string()))?;
        write_private(&config.local_master_key, master.as_bytes())?;
        write_private(&config.local_checkpoint_key, checkpoint.as_bytes())?;
        Ok((config, true))
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    data_key_id: String,
    checkpoint_key_id: String,
}

impl KmsKeys {
    fn new(config: &KeysConfig) -> Self {
        use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let credentials = Credentials::new(
            env("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            env("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        );
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.kms_region.clone()))
            .credentials_provider(credentials);
        if let Some(endpoint) = &config.kms_endpoint {
            builder = builder.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        Self {
            client: aws_sdk_kms::Client::from_conf(builder.build()),
            data_key_id: config.kms_data_key_id.clone().unwrap_or_default(),
            checkpoint_key_id: config.kms_checkpoint_key_id.clone().unwrap_or_default(),
        }
    }

    fn kms_err(operation: &'static str, e: impl std::error::Error) -> KeyError {
        KeyError::Kms { operation, message: aws_sdk_kms::error::DisplayErrorContext(e).to_string() }
    }

    async fn generate_data_key(&self, epoch: i32) -> Result<NewDataKey, KeyError> {
        let mut req = self.client.generate_data_key().key_id(&self.data_key_id).key_spec(DataKeySpec::Aes256);
        for (k, v) in context(epoch) {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| Self::kms_err("GenerateDataKey", e))?;
        let plaintext = to_key(out.plaintext().ok_or(KeyError::Malformed("no plaintext"))?.as_ref())?;
        let encrypted = out.ciphertext_blob().ok_or(KeyError::Malformed("no ciphertext"))?.as_ref().to_vec();
        let key_ref = out.key_id().unwrap_or(&self.data_key_id).to_string();
        Ok(NewDataKey { plaintext, encrypted, key_ref })
    }

    async fn decrypt(&self, epoch: i32, encrypted: &[u8], key_ref: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut req = self.client.decrypt().ciphertext_blob(Blob::new(encrypted.to_vec())).key_id(key_ref);
        for (k, v) in context(epoch) {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| Self::kms_err("Decrypt", e))?;
        to_key(out.plaintext().ok_or(KeyError::Malformed("no plaintext"))?.as_ref())
    }

    async fn sign(&self, message: &[u8]) -> Result<(Vec<u8>, String), KeyError> {
        let out = self
            .client
            .sign()
            .key_id(&self.checkpoint_key_id)
            .message(Blob::new(message.to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| Self::kms_err("Sign", e))?;
        let sig = out.signature().ok_or(KeyError::Malformed("no signature"))?.as_ref().to_vec();
        Ok((sig, out.key_id().unwrap_or(&self.checkpoint_key_id).to_string()))
    }

    async fn public_key(&self) -> Result<Vec<u8>, KeyError> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.checkpoint_key_id)
            .send()
            .await
            .map_err(|e| Self::kms_err("GetPublicKey", e))?;
        let spki = out.public_key().ok_or(KeyError::Malformed("no public key"))?.as_ref();
        if spki.len() != SPKI_P256_PREFIX_LEN + 65 {
            return Err(KeyError::Malformed("checkpoint key is not P-256"));
        }
        Ok(spki[SPKI_P256_PREFIX_LEN..].to_vec())
    }
}
