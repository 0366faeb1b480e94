//! Shadow comparison: for a shadowed route, a copy of the request goes to the other side, off
//! the request path, and its answer is compared with the primary's.
//!
//! The request handler only `try_send`s a job into a bounded queue (a full queue drops the copy
//! and counts it); a dispatcher runs at most `concurrency` copies at once. The primary answer is
//! handed to the job through a oneshot when its body has streamed to the client, so the client
//! never waits for the shadow side. Status codes and bodies are compared: JSON bodies after
//! removing ignored fields (object key order never matters), others byte for byte. Samples of
//! differences keep the method, the path without its query, the statuses and the JSON pointers
//! that differ — never values, which may be codes, tokens or personal data.

use actix_web::web::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::ProxyMetrics;
use crate::table::Side;

const SAMPLES: usize = 20;
const MAX_DIFFS: usize = 10;

/// The primary's answer, as far as the comparison needs it.
pub(crate) struct Outcome {
    pub(crate) status: u16,
    /// `None` when the body was larger than the route's cap.
    pub(crate) body: Option<Bytes>,
}

pub(crate) struct Job {
    pub(crate) route: String,
    pub(crate) table_version: String,
    pub(crate) request_id: String,
    pub(crate) method: reqwest::Method,
    pub(crate) path: String,
    pub(crate) url: String,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) shadow_side: Side,
    pub(crate) timeout: Duration,
    pub(crate) ignore: Arc<Vec<String>>,
    pub(crate) max_body: usize,
    pub(crate) primary: oneshot::Receiver<Outcome>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct RouteReport {
    pub(crate) compared: u64,
    pub(crate) matched: u64,
    pub(crate) mismatched: u64,
    /// The shadow side failed (refused, timed out, reset).
    pub(crate) shadow_errors: u64,
    /// No comparison: the primary failed or a body was over the cap.
    pub(crate) skipped: u64,
    /// Copies not sent because the shadow queue was full.
    pub(crate) dropped: u64,
    /// matched / compared, when anything was compared.
    pub(crate) match_rate: Option<f64>,
    pub(crate) samples: VecDeque<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) at: chrono::DateTime<chrono::Utc>,
    pub(crate) request_id: String,
    pub(crate) table_version: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) shadow_side: Side,
    pub(crate) primary_status: u16,
    pub(crate) shadow_status: Option<u16>,
    /// JSON pointers that differ, `(status)`, `(body)` for non-JSON bodies, or `(error)`.
    pub(crate) differences: Vec<String>,
}

pub(crate) struct Shadow {
    tx: mpsc::Sender<Job>,
    reports: Arc<Mutex<BTreeMap<String, RouteReport>>>,
    metrics: ProxyMetrics,
}

impl Shadow {
    /// Starts the dispatcher; returns the handle and the dispatcher task.
    pub(crate) fn start(
        queue: usize,
        concurrency: usize,
        http: reqwest::Client,
        metrics: ProxyMetrics,
    ) -> (Arc<Shadow>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(queue);
        let reports: Arc<Mutex<BTreeMap<String, RouteReport>>> = Arc::default();
        let shadow = Arc::new(Shadow { tx, reports: reports.clone(), metrics: metrics.clone() });
        let permits = Arc::new(Semaphore::new(concurrency));
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let http = http.clone();
                let reports = reports.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    run(job, &http, &reports, &metrics).await;
                    drop(permit);
                });
            }
        });
        (shadow, task)
    }

    /// Queues a copy; never waits. A full queue drops it and counts it.
    pub(crate) fn submit(&self, job: Job) {
        if let Err(e) = self.tx.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            self.metrics.shadow_dropped.with_label_values(&[&job.route, &job.table_version]).inc();
            lock(&self.reports).entry(job.route).or_default().dropped += 1;
        }
    }

    pub(crate) fn report(&self) -> BTreeMap<String, RouteReport> {
        let mut out = lock(&self.reports).clone();
        for r in out.values_mut() {
            r.match_rate = (r.compared > 0).then(|| r.matched as f64 / r.compared as f64);
        }
        out
    }
}

enum Result_ {
    Match,
    Mismatch(Sample),
    ShadowError(Sample),
    Skipped,
}

async fn run(job: Job, http: &reqwest::Client, reports: &Mutex<BTreeMap<String, RouteReport>>, metrics: &ProxyMetrics) {
    let sample = |primary_status: u16, shadow_status: Option<u16>, differences: Vec<String>| Sample {
        at: chrono::Utc::now(),
        request_id: job.request_id.clone(),
        table_version: job.table_version.clone(),
        method: job.method.to_string(),
        path: job.path.clone(),
        shadow_side: job.shadow_side,
        primary_status,
        shadow_status,
        differences,
    };
    let request = http.request(job.method.clone(), &job.url).headers(job.headers.clone()).body(job.body.clone());
    let shadow = async {
        let resp =
            tokio::time::timeout(job.timeout, request.send()).await.map_err(|_| "timeout")?.map_err(|_| "error")?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(job.timeout, read_capped(resp, job.max_body)).await.map_err(|_| "timeout")?;
        Ok::<_, &str>((status, body))
    };
    // Both run at once; the primary's outcome arrives when its body has reached the client.
    let (shadow, primary) = tokio::join!(shadow, job.primary);
    let result = match (primary, shadow) {
        (Err(_), _) => Result_::Skipped,
        (Ok(p), Err(_)) => Result_::ShadowError(sample(p.status, None, vec!["(error)".into()])),
        (Ok(p), Ok((status, body))) => match (&p.body, &body) {
            (Some(pb), Some(sb)) => {
                let mut diffs = Vec::new();
                if p.status != status {
                    diffs.push("(status)".to_string());
                }
                diffs.extend(compare_bodies(pb, sb, &job.ignore));
                if diffs.is_empty() { Result_::Match } else { Result_::Mismatch(sample(p.status, Some(status), diffs)) }
            }
            _ => Result_::Skipped,
        },
    };
    let outcome = match &result {
        Result_::Match => "match",
        Result_::Mismatch(_) => "mismatch",
        Result_::ShadowError(_) => "error",
        Result_::Skipped => "skipped",
    };
    metrics.shadow.with_label_values(&[&job.route, outcome, &job.table_version]).inc();
    let mut reports = lock(reports);
    let r = reports.entry(job.route.clone()).or_default();
    match result {
        Result_::Match => {
            r.compared += 1;
            r.matched += 1;
        }
        Result_::Mismatch(s) => {
            r.compared += 1;
            r.mismatched += 1;
            push(&mut r.samples, s);
        }
        Result_::ShadowError(s) => {
            r.shadow_errors += 1;
            push(&mut r.samples, s);
        }
        Result_::Skipped => r.skipped += 1,
    }
}

fn push(samples: &mut VecDeque<Sample>, s: Sample) {
    if samples.len() == SAMPLES {
        samples.pop_front();
    }
    samples.push_back(s);
}

/// The body, or `None` when it is larger than `cap`.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Option<Bytes> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > cap {
                    return None;
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Some(Bytes::from(buf)),
            Err(_) => return None,
        }
    }
}

/// JSON pointers at which the two bodies differ after normalisation (at most ten).
pub(crate) fn compare_bodies(a: &[u8], b: &[u8], ignore: &[String]) -> Vec<String> {
    match (serde_json::from_slice::<Value>(a), serde_json::from_slice::<Value>(b)) {
        (Ok(mut x), Ok(mut y)) => {
            strip(&mut x, "", ignore);
            strip(&mut y, "", ignore);
            let mut out = Vec::new();
            diff(&x, &y, String::new(), &mut out);
            out
        }
        _ if a == b => Vec::new(),
        _ => vec!["(body)".to_string()],
    }
}

fn strip(v: &mut Value, pointer: &str, ignore: &[String]) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| {
                let p = format!("{pointer}/{}", escape(k));
                !ignore.iter().any(|i| i == k || *i == p)
            });
            for (k, child) in map.iter_mut() {
                strip(child, &format!("{pointer}/{}", escape(k)), ignore);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                strip(child, &format!("{pointer}/{i}"), ignore);
            }
        }
        _ => {}
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn diff(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    if out.len() >= MAX_DIFFS || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{at}/{}", escape(k));
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => diff(v, w, p, out),
                    _ => out.push(p),
                }
                if out.len() >= MAX_DIFFS {
                    return;
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(if at.is_empty() { "/".to_string() } else { at }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_comparison_ignores_order_and_ignored_fields() {
        let ignore = vec!["request_id".to_string(), "/meta/at".to_string()];
        let a = br#"{"a":1,"b":[1,2],"request_id":"x","meta":{"at":1,"n":2}}"#;
        let b = br#"{"b":[1,2],"a":1,"request_id":"y","meta":{"n":2,"at":9}}"#;
        assert!(compare_bodies(a, b, &ignore).is_empty());
        let c = br#"{"b":[1,3],"a":1,"extra":true,"meta":{"n":2}}"#;
        assert_eq!(compare_bodies(a, c, &ignore), vec!["/b/1", "/extra"]);
        assert_eq!(compare_bodies(b"plain", b"plain", &[]), Vec::<String>::new());
        assert_eq!(compare_bodies(b"plain", b"other", &[]), vec!["(body)"]);
    }
}
