use thiserror::Error;

/// Why a token was refused. Each variant is one check; the text is for logs, never for callers
/// (callers only ever learn "invalid service token").
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a well-formed compact JWS")]
    Malformed,
    #[error("token header carries `{0}`, which is never accepted")]
    ForbiddenHeader(String),
    #[error("token `typ` is not a service token")]
    WrongType,
    #[error("token has no `kid`")]
    MissingKid,
    #[error("issuer `{0}` is not trusted")]
    UntrustedIssuer(String),
    #[error("no key `{kid}` for issuer `{issuer}`")]
    UnknownKey { issuer: String, kid: String },
    #[error("algorithm `{0}` is not the one pinned by the key")]
    AlgorithmNotAllowed(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("claim `{0}` is missing or has the wrong type")]
    BadClaim(&'static str),
    #[error("token carries several audiences")]
    MultipleAudiences,
    #[error("token is for audience `{0}`")]
    WrongAudience(String),
    #[error("token has expired")]
    Expired,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token lives longer than allowed")]
    LifetimeTooLong,
    #[error("keys for issuer `{0}` could not be fetched")]
    KeysUnavailable(String),
    #[error("token was already used on a state-changing route")]
    Replayed,
    #[error("too many live tokens remembered to accept another one-use token")]
    ReplayCacheFull,
}
