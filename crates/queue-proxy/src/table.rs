//! The route table: a TOML file that says, for each legacy path, where it goes in the current
//! migration phase. This module parses and validates it into a [`Table`] (nothing else in the
//! proxy sees the file format), matches requests to routes, rewrites paths for Queue, and
//! decides the side a request goes to. Reference: docs/proxy.md.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

/// The phases of the migration plan (seeds): 1 co-location, 2 cutover, 3 database extraction,
/// 4 standalone.
pub(crate) const PHASES: std::ops::RangeInclusive<u8> = 1..=4;

/// A route table that was refused, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableError {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl TableError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route table: `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for TableError {}

// ---- the file format ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    /// Free text shown by `GET /admin/routes` (e.g. a change ticket).
    #[serde(default)]
    label: Option<String>,
    phase: u8,
    /// The legacy upstream for paths no route matches; absent: such paths get a JSON 404.
    #[serde(default)]
    default_legacy: Option<String>,
    /// Mixed into the cohort hash; changing it reshuffles every canary cohort.
    #[serde(default = "default_salt")]
    canary_salt: String,
    #[serde(default)]
    legacy: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    services: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

fn default_salt() -> String {
    "queue-canary-v1".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    url: String,
    #[serde(default = "default_response_timeout")]
    response_timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
}

fn default_response_timeout() -> u64 {
    30_000
}
fn default_max_in_flight() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    legacy: Option<String>,
    queue: QueueTargetFile,
    cutover_phase: u8,
    #[serde(default)]
    pinned: Option<Side>,
    #[serde(default)]
    canary: Option<CanaryFile>,
    #[serde(default)]
    shadow: Option<ShadowFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueTargetFile {
    service: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryFile {
    percent: f64,
    cohort: Cohort,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowFile {
    #[serde(default)]
    primary: Option<Side>,
    #[serde(default = "hundred")]
    percent: f64,
    /// Methods copied to the shadow side; default the safe ones.
    #[serde(default)]
    methods: Vec<String>,
    /// Fields left out of the comparison: a name (anywhere in the body) or a JSON pointer.
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default = "default_shadow_body")]
    max_body_bytes: usize,
}

fn hundred() -> f64 {
    100.0
}
fn default_shadow_body() -> usize {
    1024 * 1024
}

// ---- the validated table ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Side {
    Legacy,
    Queue,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::Queue => "queue",
        }
    }

    pub(crate) fn other(self) -> Side {
        match self {
            Side::Legacy => Side::Queue,
            Side::Queue => Side::Legacy,
        }
    }
}

/// What a canary cohort is keyed by. Each falls back to the next weaker key when the stronger
/// one is unknown: user → tenant → client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Cohort {
    User,
    Tenant,
    Client,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) side: Side,
    /// Base URL without a trailing slash.
    pub(crate) base: String,
    #[serde(skip)]
    pub(crate) response_timeout: Duration,
    pub(crate) response_timeout_ms: u64,
    pub(crate) max_in_flight: usize,
    /// Requests in flight to this upstream under this table (a full one answers 503).
    #[serde(skip)]
    pub(crate) in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// For a plain-http base: its authority and path prefix, parsed once (the forwarding path
    /// builds the upstream URI from parts instead of parsing a URL per request).
    #[serde(skip)]
    pub(crate) plain: Option<(http::uri::Authority, String)>,
}

/// A plain-http base URL's authority and path prefix (`None` for https or an unusual URL).
fn plain_parts(base: &str) -> Option<(http::uri::Authority, String)> {
    let rest = base.strip_prefix("http://")?;
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return None;
    }
    Some((authority.parse().ok()?, prefix.to_string()))
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Matcher {
    /// The path equals the prefix or continues it after a `/`.
    Prefix(String),
    /// Segments; `{name}` matches one segment, a final `{*name}` the rest.
    Pattern(String),
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Canary {
    pub(crate) percent: f64,
    pub(crate) cohort: Cohort,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShadowRule {
    pub(crate) primary: Option<Side>,
    pub(crate) percent: f64,
    pub(crate) methods: Vec<String>,
    pub(crate) ignore: Vec<String>,
    pub(crate) max_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Route {
    pub(crate) name: String,
    #[serde(rename = "match")]
    pub(crate) matcher: Matcher,
    /// Upper-case; empty means every method.
    pub(crate) methods: Vec<String>,
    pub(crate) legacy: String,
    pub(crate) queue_service: String,
    /// The Queue path: for a prefix route it replaces the prefix; for a pattern route it is a
    /// template using the pattern's `{names}`.
    pub(crate) queue_path: String,
    pub(crate) cutover_phase: u8,
    pub(crate) pinned: Option<Side>,
    pub(crate) canary: Option<Canary>,
    pub(crate) shadow: Option<ShadowRule>,
}

/// A validated route table. Immutable: a reload builds a new one and swaps it in whole.
#[derive(Debug)]
pub(crate) struct Table {
    /// Content hash of the source: the same table always has the same version, so a rollback
    /// brings back the version (and metric labels) it had before.
    pub(crate) version: String,
    pub(crate) label: Option<String>,
    pub(crate) phase: u8,
    pub(crate) default_legacy: Option<String>,
    pub(crate) canary_salt: String,
    pub(crate) legacy: BTreeMap<String, Upstream>,
    pub(crate) services: BTreeMap<String, Upstream>,
    pub(crate) routes: Vec<Route>,
    /// The file text this table came from (what a rollback writes back).
    pub(crate) source: String,
}

/// How a request matched: the route and the captured pattern segments.
pub(crate) struct Match<'t> {
    pub(crate) route: &'t Route,
    /// The route's position in the table (for its cached metric handles).
    pub(crate) index: usize,
    captures: Vec<(String, String)>,
}

/// Why a request went where it went (in the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reason {
    Phase,
    Pinned,
    Canary,
    Shadow,
    Default,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Phase => "phase",
            Reason::Pinned => "pinned",
            Reason::Canary => "canary",
            Reason::Shadow => "shadow",
            Reason::Default => "default",
        }
    }
}

const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

impl Table {
    /// Parses and validates a table. Every refusal names the key.
    pub(crate) fn parse(source: &str) -> Result<Table, TableError> {
        let file: TableFile = toml::from_str(source).map_err(|e| {
            let msg = one_line(e.message());
            let at = e.span().map(|s| line_of(source, s.start)).map(|l| format!(" (line {l})")).unwrap_or_default();
            TableError::new("(file)", format!("{msg}{at}"))
        })?;
        Self::validate(file, source)
    }

    /// A table with no routes and no default: every forwarded path gets a JSON 404. Used when
    /// the proxy runs without a table file.
    pub(crate) fn empty() -> Table {
        let source = "phase = 1\n".to_string();
        Table {
            version: version_of(&source),
            label: Some("no route table configured".into()),
            phase: 1,
            default_legacy: None,
            canary_salt: default_salt(),
            legacy: BTreeMap::new(),
            services: BTreeMap::new(),
            routes: Vec::new(),
            source,
        }
    }

    fn validate(file: TableFile, source: &str) -> Result<Table, TableError> {
        if !PHASES.contains(&file.phase) {
            return Err(TableError::new("phase", format!("must be between {} and {}", PHASES.start(), PHASES.end())));
        }
        let mut legacy_ups = BTreeMap::new();
        let mut service_ups = BTreeMap::new();
        for (side, table, map) in [(Side::Legacy, "legacy", &file.legacy), (Side::Queue, "services", &file.services)] {
            for (name, u) in map {
                let key = format!("{table}.{name}");
                if !valid_name(name) {
                    return Err(TableError::new(key, "names are 1-64 characters of a-z, 0-9, '-' or '_'"));
                }
                let base = parse_base_url(&u.url).map_err(|m| TableError::new(format!("{key}.url"), m))?;
                if !(1..=600_000).contains(&u.response_timeout_ms) {
                    return Err(TableError::new(format!("{key}.response_timeout_ms"), "must be between 1 and 600000"));
                }
                if !(1..=1_000_000).contains(&u.max_in_flight) {
                    return Err(TableError::new(format!("{key}.max_in_flight"), "must be between 1 and 1000000"));
                }
                let into = if side == Side::Legacy { &mut legacy_ups } else { &mut service_ups };
                into.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        side,
                        plain: plain_parts(&base),
                        base,
                        response_timeout: Duration::from_millis(u.response_timeout_ms),
                        response_timeout_ms: u.response_timeout_ms,
                        max_in_flight: u.max_in_flight,
                        in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(u.max_in_flight)),
                    },
                );
            }
        }
        if let Some(d) = &file.default_legacy
            && !file.legacy.contains_key(d)
        {
            return Err(TableError::new("default_legacy", format!("no [legacy.{d}] upstream")));
        }
        let only_legacy = (file.legacy.len() == 1).then(|| file.legacy.keys().next().cloned()).flatten();
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            let at = |k: &str| format!("routes[{i}] ({}).{k}", r.name);
            if !valid_name(&r.name) || r.name == "default" {
                return Err(TableError::new(
                    format!("routes[{i}].name"),
                    "must be 1-64 characters of a-z, 0-9, '-' or '_' (and not `default`)",
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(TableError::new(format!("routes[{i}].name"), format!("`{}` is used twice", r.name)));
            }
            let (matcher, captures) = match (&r.prefix, &r.pattern) {
                (Some(p), None) => {
                    check_path(p).map_err(|m| TableError::new(at("prefix"), m))?;
                    (Matcher::Prefix(p.trim_end_matches('/').to_string()), Vec::new())
                }
                (None, Some(p)) => {
                    let names = check_pattern(p).map_err(|m| TableError::new(at("pattern"), m))?;
                    (Matcher::Pattern(p.clone()), names)
                }
                _ => return Err(TableError::new(at("prefix"), "give exactly one of `prefix` or `pattern`")),
            };
            let methods = check_methods(&r.methods).map_err(|m| TableError::new(at("methods"), m))?;
            let legacy = match r.legacy.clone().or_else(|| file.default_legacy.clone()).or(only_legacy.clone()) {
                Some(l) => l,
                None => return Err(TableError::new(at("legacy"), "missing (several legacy upstreams: name one)")),
            };
            if !file.legacy.contains_key(&legacy) {
                return Err(TableError::new(at("legacy"), format!("no [legacy.{legacy}] upstream")));
            }
            if !file.services.contains_key(&r.queue.service) {
                return Err(TableError::new(
                    at("queue.service"),
                    format!("no [services.{}] upstream", r.queue.service),
                ));
            }
            let queue_path = match (&r.queue.path, &matcher) {
                (Some(p), _) => p.clone(),
                (None, Matcher::Prefix(p)) | (None, Matcher::Pattern(p)) => p.clone(),
            };
            check_template(&queue_path, &captures).map_err(|m| TableError::new(at("queue.path"), m))?;
            if !PHASES.contains(&r.cutover_phase) {
                return Err(TableError::new(
                    at("cutover_phase"),
                    format!("must be between {} and {}", PHASES.start(), PHASES.end()),
                ));
            }
            let canary = match r.canary {
                Some(c) => {
                    check_percent(c.percent).map_err(|m| TableError::new(at("canary.percent"), m))?;
                    if r.pinned.is_some() {
                        return Err(TableError::new(at("canary"), "a pinned route cannot also have a canary"));
                    }
                    Some(Canary { percent: c.percent, cohort: c.cohort })
                }
                None => None,
            };
            let shadow = match r.shadow {
                Some(s) => {
                    check_percent(s.percent).map_err(|m| TableError::new(at("shadow.percent"), m))?;
                    if let (Some(pin), Some(primary)) = (r.pinned, s.primary)
                        && pin != primary
                    {
                        return Err(TableError::new(
                            at("shadow.primary"),
                            format!(
                                "the route is pinned to {}; the primary cannot be {}",
                                pin.as_str(),
                                primary.as_str()
                            ),
                        ));
                    }
                    if s.primary.is_some() && canary.is_some() {
                        return Err(TableError::new(
                            at("shadow.primary"),
                            "a canary route decides its primary by cohort; leave `primary` out",
                        ));
                    }
                    let methods = if s.methods.is_empty() {
                        SAFE_METHODS.iter().map(|m| m.to_string()).collect()
                    } else {
                        check_methods(&s.methods).map_err(|m| TableError::new(at("shadow.methods"), m))?
                    };
                    if !(1..=64 * 1024 * 1024).contains(&s.max_body_bytes) {
                        return Err(TableError::new(at("shadow.max_body_bytes"), "must be between 1 and 67108864"));
                    }
                    for (j, f) in s.ignore.iter().enumerate() {
                        if f.is_empty() {
                            return Err(TableError::new(at(&format!("shadow.ignore[{j}]")), "must not be empty"));
                        }
                    }
                    Some(ShadowRule {
                        primary: s.primary,
                        percent: s.percent,
                        methods,
                        ignore: s.ignore,
                        max_body_bytes: s.max_body_bytes,
                    })
                }
                None => None,
            };
            routes.push(Route {
                name: r.name,
                matcher,
                methods,
                legacy,
                queue_service: r.queue.service,
                queue_path,
                cutover_phase: r.cutover_phase,
                pinned: r.pinned,
                canary,
                shadow,
            });
        }
        if file.label.as_ref().is_some_and(|l| l.len() > 200) {
            return Err(TableError::new("label", "at most 200 characters"));
        }
        Ok(Table {
            version: version_of(source),
            label: file.label,
            phase: file.phase,
            default_legacy: file.default_legacy,
            canary_salt: file.canary_salt,
            legacy: legacy_ups,
            services: service_ups,
            routes,
            source: source.to_string(),
        })
    }

    /// The first route (in file order) whose path and methods match.
    pub(crate) fn find(&self, method: &str, path: &str) -> Option<Match<'_>> {
        self.routes.iter().enumerate().find_map(|(index, route)| {
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == method) {
                return None;
            }
            let captures = route.matcher.matches(path)?;
            Some(Match { route, index, captures })
        })
    }

    pub(crate) fn upstream(&self, side: Side, name: &str) -> Option<&Upstream> {
        match side {
            Side::Legacy => self.legacy.get(name),
            Side::Queue => self.services.get(name),
        }
    }

    /// The side this route sends to, before any per-request cohort: `None` when it depends on
    /// the canary cohort.
    pub(crate) fn static_side(&self, route: &Route) -> Option<(Side, Reason)> {
        if let Some(p) = route.pinned {
            return Some((p, Reason::Pinned));
        }
        if let Some(p) = route.shadow.as_ref().and_then(|s| s.primary) {
            return Some((p, Reason::Shadow));
        }
        if self.phase >= route.cutover_phase {
            return Some((Side::Queue, Reason::Phase));
        }
        if route.canary.is_some() {
            return None;
        }
        Some((Side::Legacy, Reason::Phase))
    }

    /// The rewritten Queue path for a matched request (without the query).
    pub(crate) fn queue_path(&self, m: &Match<'_>, path: &str) -> String {
        match &m.route.matcher {
            Matcher::Prefix(prefix) => {
                let rest = &path[prefix.len().min(path.len())..];
                let base = m.route.queue_path.trim_end_matches('/');
                if rest.is_empty() && base.is_empty() { "/".to_string() } else { format!("{base}{rest}") }
            }
            Matcher::Pattern(_) => {
                let mut out = m.route.queue_path.clone();
                for (name, value) in &m.captures {
                    out = out.replace(&format!("{{*{name}}}"), value).replace(&format!("{{{name}}}"), value);
                }
                out
            }
        }
    }

    /// A copy of the source text with the top-level `phase` set to `phase`.
    pub(crate) fn source_with_phase(&self, phase: u8) -> Result<String, TableError> {
        let mut out = String::with_capacity(self.source.len() + 8);
        let mut done = false;
        let mut in_root = true;
        for line in self.source.split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with('[') {
                in_root = false;
            }
            let is_phase =
                in_root && !done && t.strip_prefix("phase").is_some_and(|rest| rest.trim_start().starts_with('='));
            if is_phase {
                out.push_str(&format!("phase = {phase}\n"));
                done = true;
            } else {
                out.push_str(line);
            }
        }
        if !done {
            return Err(TableError::new("phase", "no top-level `phase = N` line to change"));
        }
        Ok(out)
    }
}

impl Matcher {
    /// `Some(captures)` when `path` matches.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        match self {
            Matcher::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/') || p.is_empty()).then(Vec::new)
            }
            Matcher::Pattern(p) => {
                let mut captures = Vec::new();
                let mut path_segs = path.trim_start_matches('/').split('/');
                // No allocation until a segment matches: this runs for every pattern route a
                // request is tried against.
                for seg in p.trim_start_matches('/').split('/') {
                    if let Some(name) = seg.strip_prefix("{*").and_then(|s| s.strip_suffix('}')) {
                        let rest: Vec<&str> = path_segs.by_ref().collect();
                        captures.push((name.to_string(), rest.join("/")));
                        return Some(captures);
                    }
                    let actual = path_segs.next()?;
                    if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        if actual.is_empty() {
                            return None;
                        }
                        captures.push((name.to_string(), actual.to_string()));
                    } else if seg != actual {
                        return None;
                    }
                }
                path_segs.next().is_none().then_some(captures)
            }
        }
    }
}

/// The bucket of a cohort key in [0, 10000) (hundredths of a percent): the first 8 bytes of
/// SHA-256(salt, key) modulo 10000. It depends only on the salt and the key, so a member with
/// bucket < 10 % is also < 30 %: raising the percentage only adds members.
pub(crate) fn bucket(salt: &str, key: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// Whether a bucket falls inside `percent`.
pub(crate) fn in_percent(bucket: u32, percent: f64) -> bool {
    f64::from(bucket) < percent * 100.0
}

fn version_of(source: &str) -> String {
    let d = Sha256::digest(source.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_base_url(raw: &str) -> Result<String, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if u.host_str().is_none() {
        return Err("has no host".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if p.contains(['?', '#', ' ', '{', '}']) {
        return Err("must be a plain path (no query, fragment, spaces or `{}`)".into());
    }
    Ok(())
}

fn check_pattern(p: &str) -> Result<Vec<String>, String> {
    if !p.starts_with('/') {
        return Err("must start with `/`".into());
    }
    let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let mut names = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if seg.contains(['?', '#', ' ']) {
            return Err("must be a plain path (no query, fragment or spaces)".into());
        }
        if let Some(inner) = seg.strip_prefix('{') {
            let Some(inner) = inner.strip_suffix('}') else {
                return Err(format!("segment `{seg}`: a placeholder is a whole segment `{{name}}`"));
            };
            let (rest, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if rest && i + 1 != segs.len() {
                return Err(format!("`{seg}` must be the last segment"));
            }
            if !valid_name(name) {
                return Err(format!("placeholder `{seg}`: names are a-z, 0-9, '-' or '_'"));
            }
            if names.contains(&name.to_string()) {
                return Err(format!("placeholder `{name}` is used twice"));
            }
            names.push(name.to_string());
        } else if seg.contains(['{', '}']) {
            return Err(format!("segment `{seg}`: a placeholder is a whole segment `{{name}}`"));
        }
    }
    Ok(names)
}

fn check_template(t: &str, captures: &[String]) -> Result<(), String> {
    if !t.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if t.contains(['?', '#', ' ']) {
        return Err("must be a plain path (no query, fragment or spaces)".into());
    }
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { return Err("unclosed `{`".into()) };
        let name = rest[start + 1..start + end].trim_start_matches('*');
        if !captures.iter().any(|c| c == name) {
            return Err(format!("`{{{name}}}` is not a placeholder of the route's pattern"));
        }
        rest = &rest[start + end + 1..];
    }
    Ok(())
}

fn check_methods(methods: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for m in methods {
        let up = m.to_ascii_uppercase();
        if up.is_empty() || up.len() > 16 || !up.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("`{m}` is not an HTTP method"));
        }
        if !out.contains(&up) {
            out.push(up);
        }
    }
    Ok(out)
}

fn check_percent(p: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&p) || p.is_nan() {
        return Err("must be between 0 and 100".into());
    }
    Ok(())
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const BASE: &str = r#"
phase = 1
default_legacy = "raptor"
[legacy.raptor]
url = "http://127.0.0.1:8090"
[services.auth]
url = "http://127.0.0.1:8081/"
[[routes]]
name = "backup-codes"
prefix = "/api/v1/auth/backup-codes"
queue = { service = "auth", path = "/api/v2/backup-codes" }
cutover_phase = 2
[[routes]]
name = "user-sessions"
pattern = "/legacy/users/{id}/sessions/{*rest}"
methods = ["get"]
queue = { service = "auth", path = "/api/v1/auth/users/{id}/sessions/{rest}" }
cutover_phase = 3
"#;

    #[test]
    fn matches_prefixes_on_segment_boundaries_and_rewrites() {
        let t = Table::parse(BASE).expect("valid");
        assert!(t.find("GET", "/api/v1/auth/backup-codesX").is_none());
        let m = t.find("POST", "/api/v1/auth/backup-codes/redeem").expect("match");
        assert_eq!(m.route.name, "backup-codes");
        assert_eq!(t.queue_path(&m, "/api/v1/auth/backup-codes/redeem"), "/api/v2/backup-codes/redeem");
        let m = t.find("GET", "/api/v1/auth/backup-codes").expect("match");
        assert_eq!(t.queue_path(&m, "/api/v1/auth/backup-codes"), "/api/v2/backup-codes");
    }

    #[test]
    fn matches_patterns_and_methods() {
        let t = Table::parse(BASE).expect("valid");
        let p = "/legacy/users/u1/sessions/a/b";
        let m = t.find("GET", p).expect("match");
        assert_eq!(t.queue_path(&m, p), "/api/v1/auth/users/u1/sessions/a/b");
        assert!(t.find("POST", p).is_none(), "POST is not in methods");
        assert!(t.find("GET", "/legacy/users//sessions/x").is_none());
    }

    #[test]
    fn phase_decides_the_side_and_pins_override() {
        let t = Table::parse(BASE).expect("valid");
        let r = &t.routes[0];
        assert_eq!(t.static_side(r), Some((Side::Legacy, Reason::Phase)));
        let t2 = Table::parse(&t.source_with_phase(2).expect("phase line")).expect("valid");
        assert_eq!(t2.phase, 2);
        assert_eq!(t2.static_side(&t2.routes[0]), Some((Side::Queue, Reason::Phase)));
        assert_ne!(t.version, t2.version);
        let pinned = BASE.replace("cutover_phase = 2", "cutover_phase = 2\npinned = \"legacy\"");
        let t3 = Table::parse(&pinned.replace("phase = 1", "phase = 4")).expect("valid");
        assert_eq!(t3.static_side(&t3.routes[0]), Some((Side::Legacy, Reason::Pinned)));
    }

    #[test]
    fn the_same_text_has_the_same_version() {
        assert_eq!(Table::parse(BASE).expect("v").version, Table::parse(BASE).expect("v").version);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (BASE.replace("phase = 1", "phase = 7"), "phase"),
            (
                BASE.replace("service = \"auth\", path = \"/api/v2", "service = \"authz\", path = \"/api/v2"),
                "routes[0] (backup-codes).queue.service",
            ),
            (BASE.replace("{rest}\" }", "{other}\" }"), "routes[1] (user-sessions).queue.path"),
            (BASE.replace("http://127.0.0.1:8090", "ftp://x"), "legacy.raptor.url"),
            (BASE.replace("name = \"user-sessions\"", "name = \"backup-codes\""), "routes[1].name"),
            (BASE.replace("methods = [\"get\"]", "methods = [\"G E T\"]"), "routes[1] (user-sessions).methods"),
            (
                BASE.replace("cutover_phase = 2", "cutover_phase = 2\ncanary = { percent = 140, cohort = \"user\" }"),
                "routes[0] (backup-codes).canary.percent",
            ),
            (
                BASE.replace(
                    "cutover_phase = 2",
                    "cutover_phase = 2\npinned = \"queue\"\nshadow = { primary = \"legacy\" }",
                ),
                "routes[0] (backup-codes).shadow.primary",
            ),
            (BASE.replace("{*rest}\"", "{*rest}/x\""), "routes[1] (user-sessions).pattern"),
            (BASE.replace("cutover_phase = 3", "cutover_phase = 3\ncolour = \"red\""), "(file)"),
        ];
        for (text, key) in cases {
            let e = Table::parse(&text).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
        let e = Table::parse("phase = ").expect_err("syntax");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("s", "user-1"), bucket("s", "user-1"));
        let inside = (0..10_000).filter(|i| in_percent(bucket("s", &format!("u{i}")), 10.0)).count();
        assert!((800..1200).contains(&inside), "{inside}");
        assert!(!in_percent(0, 0.0));
        assert!(in_percent(9999, 100.0));
    }

    /// The table `make run` starts with (deploy/local/routes.toml, docs/proxy.md "The table under
    /// make run"): valid, in phase 1, and no route takes Raptor's own pages or API
    /// (legacy/raptor/README.md): in every phase they fall to `default_legacy`, Raptor, except
    /// the bookmarked pages `GET /account` and `GET /signin`, which become Queue's account and
    /// login pages from phase 3 (the exact paths only). Queue's account pages reach auth from
    /// phase 3, with the last of the API routes they call.
    #[test]
    fn the_make_run_table_leaves_raptors_own_paths_to_raptor_in_every_phase() {
        let shipped =
            Table::parse(include_str!("../../../deploy/local/routes.toml")).expect("deploy/local/routes.toml");
        assert_eq!(shipped.phase, 1);
        assert_eq!(shipped.default_legacy.as_deref(), Some("raptor"));
        let raptor = [
            ("GET", "/"),
            ("POST", "/signin"),
            ("POST", "/signin/backup-code"),
            ("POST", "/signout"),
            ("POST", "/account"),
            ("GET", "/account/other"),
            ("GET", "/signin/other"),
            ("POST", "/account/backup-codes"),
            ("POST", "/account/email/verify"),
            ("GET", "/tickets"),
            ("GET", "/tickets/T-1001"),
            ("GET", "/access"),
            ("POST", "/api/signin/password"),
            ("POST", "/api/signin/backup-code"),
            ("POST", "/api/signout"),
            ("GET", "/api/me"),
            ("POST", "/api/passkeys/register/options"),
            ("POST", "/api/passkeys/signin/verify"),
            ("GET", "/api/passkeys"),
            ("POST", "/api/backup-codes"),
            ("POST", "/api/email/send-code"),
            ("POST", "/api/rbac/grants"),
            ("POST", "/api/rbac/grants/7/revoke"),
            ("GET", "/api/rbac/check"),
            ("GET", "/api/queue/check"),
        ];
        for phase in 1..=4 {
            let t = Table::parse(&shipped.source_with_phase(phase).expect("phase line")).expect("valid");
            for (method, path) in raptor {
                let taken = t.find(method, path).map(|m| m.route.name.clone());
                assert_eq!(taken, None, "phase {phase}: {method} {path} is taken from Raptor");
            }
            let want = if phase >= 3 { Side::Queue } else { Side::Legacy };
            for path in ["/auth/login", "/account", "/signin"] {
                let route = t.find("GET", path).unwrap_or_else(|| panic!("a route for GET {path}")).route;
                assert_eq!(t.static_side(route).map(|(side, _)| side), Some(want), "phase {phase}: GET {path}");
            }
            for (path, page) in [("/account", "/auth/account"), ("/signin", "/auth/login")] {
                let m = t.find("GET", path).expect("the page route");
                assert_eq!(t.queue_path(&m, path), page, "GET {path} is Queue's {page}");
            }
        }
    }
}
