//! Which writer may write which actions (`limits.writers`): each issuer owns a set of actions,
//! so a compromised or buggy writer cannot put events into the log that look like another
//! service's (auth cannot announce `rbac.grant.created`, Raptor cannot forge `auth.*`).
//!
//! A pattern is an exact action (`raptor.import.finished`) or a prefix ending in `.*`
//! (`auth.*`: every action that starts with `auth.`). There is no catch-all: a writer that may
//! write anything could forge everything, which is what this is here to prevent.

use std::collections::{BTreeMap, HashMap};

/// One allowed action or family of actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionPattern {
    Exact(String),
    /// The prefix including its trailing dot (`auth.`).
    Prefix(String),
}

fn action_chars(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:-".contains(&b))
}

impl ActionPattern {
    /// Parses `auth.*` or `raptor.import.finished`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let pattern = match raw.strip_suffix(".*") {
            Some(prefix) => {
                if !action_chars(prefix) || prefix.ends_with('.') {
                    return Err(format!(
                        "`{raw}`: the part before `.*` must be a non-empty action prefix (a-z, 0-9, . _ : -)"
                    ));
                }
                Self::Prefix(format!("{prefix}."))
            }
            None => {
                if raw.contains('*') {
                    return Err(format!("`{raw}`: `*` is allowed only as a final `.*` (there is no catch-all)"));
                }
                if !action_chars(raw) || raw.len() > 128 {
                    return Err(format!("`{raw}`: an action is 1 to 128 characters of a-z, 0-9, . _ : -"));
                }
                Self::Exact(raw.to_string())
            }
        };
        Ok(pattern)
    }

    pub fn matches(&self, action: &str) -> bool {
        match self {
            Self::Exact(a) => a == action,
            Self::Prefix(p) => action.len() > p.len() && action.starts_with(p.as_str()),
        }
    }
}

/// The parsed `limits.writers`: issuer → the actions it may write.
#[derive(Debug, Clone, Default)]
pub struct WriterPolicy {
    by_issuer: HashMap<String, Vec<ActionPattern>>,
}

impl WriterPolicy {
    /// Parses the configured table; the error is `(issuer, message)` for the config error.
    pub fn from_config(writers: &BTreeMap<String, Vec<String>>) -> Result<Self, (String, String)> {
        let mut by_issuer = HashMap::new();
        for (issuer, patterns) in writers {
            if issuer.is_empty() {
                return Err((issuer.clone(), "an issuer name must not be empty".into()));
            }
            if patterns.is_empty() {
                return Err((
                    issuer.clone(),
                    "lists no actions: remove the issuer to stop it writing, or list what it owns (e.g. [\"auth.*\"])"
                        .into(),
                ));
            }
            let parsed = patterns.iter().map(|p| ActionPattern::parse(p)).collect::<Result<Vec<_>, _>>();
            by_issuer.insert(issuer.clone(), parsed.map_err(|e| (issuer.clone(), e))?);
        }
        Ok(Self { by_issuer })
    }

    /// The issuers that may write at all (the route's service policy).
    pub fn issuers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_issuer.keys().cloned().collect();
        v.sort();
        v
    }

    /// May `issuer` write `action`?
    pub fn allows(&self, issuer: &str, action: &str) -> bool {
        self.by_issuer.get(issuer).is_some_and(|ps| ps.iter().any(|p| p.matches(action)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &[&str])]) -> WriterPolicy {
        let m = pairs.iter().map(|(i, ps)| (i.to_string(), ps.iter().map(|p| p.to_string()).collect())).collect();
        WriterPolicy::from_config(&m).expect("valid")
    }

    #[test]
    fn prefixes_and_exact_names_match_only_what_they_say() {
        let p = policy(&[("auth", &["auth.*"]), ("raptor", &["raptor.*", "ticket.*", "legacy.import"])]);
        assert!(p.allows("auth", "auth.session.created"));
        assert!(!p.allows("auth", "auth"), "the bare prefix is not an action of the family");
        assert!(!p.allows("auth", "auth."), "nothing after the dot");
        assert!(!p.allows("auth", "authx.session"), "a longer first word is another family");
        assert!(!p.allows("auth", "rbac.grant.created"));
        assert!(p.allows("raptor", "ticket.assigned"));
        assert!(p.allows("raptor", "legacy.import"));
        assert!(!p.allows("raptor", "legacy.import.more"));
        assert!(!p.allows("raptor", "auth.login.failed"));
        assert!(!p.allows("rbac", "rbac.grant.created"), "an issuer not listed writes nothing");
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in ["*", "auth*", "*.created", ".*", "Auth.*", "auth..*", "auth.*.x", "", "a b"] {
            assert!(ActionPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let empty: BTreeMap<String, Vec<String>> = [("auth".to_string(), vec![])].into_iter().collect();
        assert_eq!(WriterPolicy::from_config(&empty).map(|_| ()).map_err(|e| e.0), Err("auth".to_string()));
    }
}
