//! A small MLflow REST client over ureq. Runs are created synchronously (the stages need their
//! ids); metrics, params, tags, artifacts and run ends go through a background thread with a
//! bounded queue, so training never waits on the network. What cannot be sent (the server went
//! away) is kept in order in a spool file in the run directory and sent when the server answers
//! again; `dnarun track replay RUN_DIR` sends what is still there after the run.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{DatasetInput, Metric, RunStatus, TrackError, Tracker, now_ms};

/// One queued call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Op {
    LogBatch {
        run_id: String,
        metrics: Vec<(String, f64, i64, i64)>,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    },
    Artifact {
        experiment_id: String,
        run_id: String,
        file: PathBuf,
        dir: String,
    },
    End {
        run_id: String,
        status: String,
        end_time: i64,
    },
    Inputs {
        run_id: String,
        datasets: Value,
    },
}

enum Msg {
    Op(Op),
    Flush(Duration, Sender<usize>),
}

/// An MLflow tracking server.
pub struct MlflowServer {
    uri: String,
    agent: ureq::Agent,
    experiment_id: String,
    queue: SyncSender<Msg>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// The connection settings MLflow's own client reads from the environment: a bearer token
/// (`MLFLOW_TRACKING_TOKEN`) or basic credentials (`MLFLOW_TRACKING_USERNAME`,
/// `MLFLOW_TRACKING_PASSWORD`), a CA bundle (`MLFLOW_TRACKING_SERVER_CERT_PATH`), and
/// `MLFLOW_TRACKING_INSECURE_TLS=true` to skip certificate checks. Credentials are sent as a
/// header only, never logged, printed or written to the spool.
struct Connection {
    authorization: Option<String>,
    tls: ureq::tls::TlsConfig,
}

fn connection() -> &'static Connection {
    static C: std::sync::OnceLock<Connection> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let authorization = match (
            var("MLFLOW_TRACKING_TOKEN"),
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(t), _, _) => Some(format!("Bearer {t}")),
            (None, Some(u), Some(p)) => Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            _ => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if var("MLFLOW_TRACKING_INSECURE_TLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            tls = tls.disable_verification(true);
        }
        if let Some(path) = var("MLFLOW_TRACKING_SERVER_CERT_PATH") {
            match std::fs::read(&path) {
                Ok(pem) => {
                    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                        .filter_map(|i| match i {
                            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                            _ => None,
                        })
                        .collect();
                    tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
                }
                Err(e) => tracing::warn!(
                    "`MLFLOW_TRACKING_SERVER_CERT_PATH` = `{path}` cannot be read ({e}); using the default roots"
                ),
            }
        }
        Connection {
            authorization,
            tls: tls.build(),
        }
    })
}

/// Standard base64 (for the basic-auth header).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A request with the credentials of [`connection`].
fn authorized<B>(req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    match &connection().authorization {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .tls_config(connection().tls.clone())
        .build()
        .into()
}

/// MLflow's limits on a param (`MAX_PARAM_VAL_LENGTH`, `MAX_ENTITY_KEY_LENGTH` in
/// `mlflow/utils/validation.py`): the server refuses longer ones, so they are truncated with a
/// warning, as MLflow's autologging does.
const MAX_PARAM_VALUE: usize = 6000;
const MAX_PARAM_KEY: usize = 250;

fn truncated(params: &[(String, String)]) -> Vec<(String, String)> {
    let cut = |s: &str, n: usize| -> String {
        let mut end = n.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    params
        .iter()
        .map(|(k, v)| {
            if k.len() > MAX_PARAM_KEY || v.len() > MAX_PARAM_VALUE {
                tracing::warn!(
                    "the param `{}` is longer than MLflow takes ({} / {} characters for keys / values); logged truncated",
                    cut(k, 80),
                    MAX_PARAM_KEY,
                    MAX_PARAM_VALUE
                );
            }
            (cut(k, MAX_PARAM_KEY), cut(v, MAX_PARAM_VALUE))
        })
        .collect()
}

enum CallError {
    /// Worth retrying: connection refused, timeout, 429, 5xx.
    Transient(String),
    /// The server refused the call for good.
    Fatal(String),
}

/// A failed request: worth retrying when the server could not be reached or timed out, never
/// when the request itself is wrong (a bad URL, a body that cannot be encoded), so that one bad
/// call cannot hold every later one in the spool.
fn request_error(e: ureq::Error) -> CallError {
    use ureq::Error as E;
    match e {
        E::Io(_)
        | E::Timeout(_)
        | E::HostNotFound
        | E::ConnectionFailed
        | E::Protocol(_)
        | E::BodyStalled
        | E::ConnectProxyFailed(_) => CallError::Transient(format!("cannot be reached: {e}")),
        other => CallError::Fatal(format!("cannot take this request: {other}")),
    }
}

/// A path for a URL: every segment percent-encoded (RFC 3986 unreserved characters kept).
fn url_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn post(agent: &ureq::Agent, uri: &str, endpoint: &str, body: &Value) -> Result<Value, CallError> {
    let url = format!("{uri}/api/2.0/mlflow/{endpoint}");
    match authorized(agent.post(&url)).send_json(body) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            match status {
                200..=299 => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                429 | 500..=599 => Err(CallError::Transient(format!(
                    "answered {status} to `{endpoint}`: {text}"
                ))),
                _ => Err(CallError::Fatal(format!(
                    "refused `{endpoint}` ({status}): {text}"
                ))),
            }
        }
        Err(e) => Err(request_error(e)),
    }
}

fn get(
    agent: &ureq::Agent,
    uri: &str,
    endpoint: &str,
    query: &[(&str, &str)],
) -> Result<(u16, Value), CallError> {
    let url = format!("{uri}/api/2.0/mlflow/{endpoint}");
    let mut req = authorized(agent.get(&url));
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    match req.call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        }
        Err(e) => Err(request_error(e)),
    }
}

/// A metric value as MLflow's JSON wants it: NaN and infinities as strings.
fn metric_value(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

fn send(agent: &ureq::Agent, uri: &str, op: &Op) -> Result<(), CallError> {
    match op {
        Op::LogBatch {
            run_id,
            metrics,
            params,
            tags,
        } => {
            // log-batch takes at most 1000 metrics, 100 params and 100 tags per call.
            let mut m = metrics.chunks(1000).peekable();
            let mut p = params.chunks(100).peekable();
            let mut t = tags.chunks(100).peekable();
            while m.peek().is_some() || p.peek().is_some() || t.peek().is_some() {
                let ms: Vec<Value> = m.next().unwrap_or(&[]).iter()
                    .map(|(k, v, s, ts)| json!({"key": k, "value": metric_value(*v), "step": s, "timestamp": ts}))
                    .collect();
                let ps: Vec<Value> = p
                    .next()
                    .unwrap_or(&[])
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect();
                let ts: Vec<Value> = t
                    .next()
                    .unwrap_or(&[])
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect();
                post(
                    agent,
                    uri,
                    "runs/log-batch",
                    &json!({"run_id": run_id, "metrics": ms, "params": ps, "tags": ts}),
                )?;
            }
            Ok(())
        }
        Op::Artifact {
            experiment_id,
            run_id,
            file,
            dir,
        } => {
            let bytes = std::fs::read(file).map_err(|e| {
                CallError::Fatal(format!("cannot read artifact `{}`: {e}", file.display()))
            })?;
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            // The server refuses `#` in artifact paths (it would read it as a URL fragment).
            let path = path.replace('#', "_");
            let url = format!(
                "{uri}/api/2.0/mlflow-artifacts/artifacts/{}",
                url_path(&format!("{experiment_id}/{run_id}/artifacts/{path}"))
            );
            match authorized(agent.put(&url)).send(&bytes[..]) {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => Err(
                    CallError::Transient(format!("answered {} to an artifact upload", r.status())),
                ),
                Ok(r) => Err(CallError::Fatal(format!(
                    "refused an artifact upload ({})",
                    r.status()
                ))),
                Err(e) => Err(request_error(e)),
            }
        }
        Op::Inputs { run_id, datasets } => post(
            agent,
            uri,
            "runs/log-inputs",
            &json!({"run_id": run_id, "datasets": datasets}),
        )
        .map(|_| ()),
        Op::End {
            run_id,
            status,
            end_time,
        } => post(
            agent,
            uri,
            "runs/update",
            &json!({"run_id": run_id, "status": status, "end_time": end_time}),
        )
        .map(|_| ()),
    }
}

fn write_spool(path: &Path, pending: &VecDeque<Op>) {
    let text: String = pending
        .iter()
        .filter_map(|op| serde_json::to_string(op).ok())
        .map(|l| l + "\n")
        .collect();
    if pending.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = crate::atomic::write(path, text.as_bytes());
}

/// Appends a call the server refused for good to `<spool>.rejected.jsonl` (kept, never retried);
/// returns that file.
fn set_aside(spool: &Path, op: Option<Op>) -> PathBuf {
    let path = spool.with_extension("rejected.jsonl");
    if let Some(op) = op
        && let Ok(line) = serde_json::to_string(&op)
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    path
}

fn read_spool(path: &Path) -> VecDeque<Op> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn worker(uri: String, spool: PathBuf, rx: Receiver<Msg>) {
    let agent = agent();
    let mut pending = read_spool(&spool);
    let mut backoff = Duration::from_millis(200);
    let mut next_try = Instant::now();
    let drain = |pending: &mut VecDeque<Op>, backoff: &mut Duration, next_try: &mut Instant| {
        let before = pending.len();
        while let Some(op) = pending.front() {
            match send(&agent, &uri, op) {
                Ok(()) => {
                    pending.pop_front();
                    *backoff = Duration::from_millis(200);
                }
                Err(CallError::Fatal(m)) => {
                    let rejected = set_aside(&spool, pending.pop_front());
                    tracing::warn!(
                        "the MLflow server will never take a call ({m}); set aside in `{}`, the others go on",
                        rejected.display()
                    );
                }
                Err(CallError::Transient(m)) => {
                    tracing::debug!(
                        "MLflow server unavailable ({m}); keeping {} calls in the spool",
                        pending.len()
                    );
                    *next_try = Instant::now() + *backoff;
                    *backoff = (*backoff * 2).min(Duration::from_secs(10));
                    break;
                }
            }
        }
        if pending.len() != before || !pending.is_empty() {
            write_spool(&spool, pending);
        }
    };
    // Keeps sending until everything is out or `limit` has passed; answers how much is left.
    let flush = |pending: &mut VecDeque<Op>,
                 backoff: &mut Duration,
                 next_try: &mut Instant,
                 limit: Duration,
                 reply: &Sender<usize>| {
        let deadline = Instant::now() + limit;
        loop {
            drain(pending, backoff, next_try);
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep((*backoff).min(deadline.saturating_duration_since(Instant::now())));
        }
        let _ = reply.send(pending.len());
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Msg::Op(op)) => {
                pending.push_back(op);
                // Batch what is already queued before sending.
                while pending.len() < 64 {
                    match rx.try_recv() {
                        Ok(Msg::Op(op)) => pending.push_back(op),
                        Ok(Msg::Flush(limit, reply)) => {
                            flush(&mut pending, &mut backoff, &mut next_try, limit, &reply);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if Instant::now() >= next_try {
                    drain(&mut pending, &mut backoff, &mut next_try);
                } else {
                    write_spool(&spool, &pending);
                }
            }
            Ok(Msg::Flush(limit, reply)) => {
                flush(&mut pending, &mut backoff, &mut next_try, limit, &reply)
            }
            Err(RecvTimeoutError::Timeout) => {
                if !pending.is_empty() && Instant::now() >= next_try {
                    drain(&mut pending, &mut backoff, &mut next_try);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                drain(&mut pending, &mut backoff, &mut next_try);
                write_spool(&spool, &pending);
                return;
            }
        }
    }
}

impl MlflowServer {
    /// Connects (failing fast when the server does not answer), creates or reuses the
    /// experiment, and starts the background sender spooling to `spool`.
    pub fn connect(uri: &str, experiment: &str, spool: &Path) -> Result<MlflowServer, TrackError> {
        let uri = uri.trim_end_matches('/').to_string();
        let agent = agent();
        let fail = |problem: String| TrackError::Server {
            uri: uri.clone(),
            problem,
        };
        match authorized(agent.get(format!("{uri}/health"))).call() {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                return Err(fail(format!(
                    "answered {} to `/health`; is it an MLflow server?",
                    r.status()
                )));
            }
            Err(e) => {
                return Err(fail(format!(
                    "cannot be reached ({e}); start it, fix `tracking.uri`, or set `tracking.fallback_to_local = true` to write to the local store instead"
                )));
            }
        }
        let experiment_id = match get(
            &agent,
            &uri,
            "experiments/get-by-name",
            &[("experiment_name", experiment)],
        ) {
            Ok((200, v)) => v["experiment"]["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            Ok(_) => match post(
                &agent,
                &uri,
                "experiments/create",
                &json!({"name": experiment}),
            ) {
                Ok(v) => v["experiment_id"].as_str().unwrap_or_default().to_string(),
                Err(CallError::Transient(m) | CallError::Fatal(m)) => return Err(fail(m)),
            },
            Err(CallError::Transient(m) | CallError::Fatal(m)) => return Err(fail(m)),
        };
        // MLflow 3 opens experiments in a GenAI view unless told this one holds training runs.
        let _ = post(
            &agent,
            &uri,
            "experiments/set-experiment-tag",
            &json!({
                "experiment_id": experiment_id, "key": "mlflow.experimentKind", "value": "custom_model_development"
            }),
        );
        let (tx, rx) = sync_channel(1024);
        let (u, s) = (uri.clone(), spool.to_path_buf());
        let worker = std::thread::spawn(move || worker(u, s, rx));
        Ok(MlflowServer {
            uri,
            agent,
            experiment_id,
            queue: tx,
            worker: Some(worker),
        })
    }

    /// The experiment id.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    fn enqueue(&mut self, op: Op) {
        let _ = self.queue.send(Msg::Op(op));
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let (tx, rx) = channel();
        if self
            .queue
            .send(Msg::Flush(Duration::from_secs(5), tx))
            .is_ok()
        {
            let _ = rx.recv();
        }
        // Closing the queue ends the worker, which writes what is left to the spool.
        let (dead, _) = sync_channel(1);
        drop(std::mem::replace(&mut self.queue, dead));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Tracker for MlflowServer {
    fn start_run(
        &mut self,
        name: &str,
        parent: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String, TrackError> {
        let mut all: Vec<Value> = vec![
            json!({"key": "mlflow.runName", "value": name}),
            json!({"key": "mlflow.source.name", "value": "dnarun"}),
        ];
        if let Some(p) = parent {
            all.push(json!({"key": "mlflow.parentRunId", "value": p}));
        }
        all.extend(tags.iter().map(|(k, v)| json!({"key": k, "value": v})));
        let body = json!({"experiment_id": self.experiment_id, "run_name": name, "start_time": now_ms(), "tags": all});
        let mut wait = Duration::from_millis(500);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match post(&self.agent, &self.uri, "runs/create", &body) {
                Ok(v) => {
                    return Ok(v["run"]["info"]["run_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string());
                }
                Err(CallError::Transient(m)) if Instant::now() < deadline => {
                    tracing::warn!("MLflow server {m}; retrying `runs/create` in {wait:?}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(CallError::Transient(m) | CallError::Fatal(m)) => {
                    return Err(TrackError::Server {
                        uri: self.uri.clone(),
                        problem: m,
                    });
                }
            }
        }
    }

    fn log_params(&mut self, run: &str, params: &[(String, String)]) -> Result<(), TrackError> {
        self.enqueue(Op::LogBatch {
            run_id: run.into(),
            metrics: vec![],
            params: truncated(params),
            tags: vec![],
        });
        Ok(())
    }

    fn log_metrics(&mut self, run: &str, metrics: &[Metric]) -> Result<(), TrackError> {
        let metrics = metrics
            .iter()
            .map(|m| (m.key.clone(), m.value, m.step, m.timestamp))
            .collect();
        self.enqueue(Op::LogBatch {
            run_id: run.into(),
            metrics,
            params: vec![],
            tags: vec![],
        });
        Ok(())
    }

    fn set_tags(&mut self, run: &str, tags: &[(String, String)]) -> Result<(), TrackError> {
        self.enqueue(Op::LogBatch {
            run_id: run.into(),
            metrics: vec![],
            params: vec![],
            tags: tags.to_vec(),
        });
        Ok(())
    }

    fn log_artifact(&mut self, run: &str, file: &Path, dir: &str) -> Result<(), TrackError> {
        let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        self.enqueue(Op::Artifact {
            experiment_id: self.experiment_id.clone(),
            run_id: run.into(),
            file,
            dir: dir.into(),
        });
        Ok(())
    }

    fn end_run(&mut self, run: &str, status: RunStatus) -> Result<(), TrackError> {
        self.enqueue(Op::End {
            run_id: run.into(),
            status: status.name().into(),
            end_time: now_ms(),
        });
        Ok(())
    }

    fn log_inputs(&mut self, run: &str, datasets: &[DatasetInput]) -> Result<(), TrackError> {
        let datasets: Vec<Value> = datasets
            .iter()
            .map(|d| {
                json!({
                    "dataset": {
                        "name": d.name,
                        "digest": d.digest,
                        "source_type": "local",
                        "source": json!({"uri": d.source}).to_string(),
                        "profile": json!({"num_rows": d.rows}).to_string(),
                    },
                    "tags": [{"key": "mlflow.data.context", "value": d.context}],
                })
            })
            .collect();
        self.enqueue(Op::Inputs {
            run_id: run.into(),
            datasets: Value::Array(datasets),
        });
        Ok(())
    }

    fn flush(&mut self) -> usize {
        let (tx, rx) = channel();
        if self
            .queue
            .send(Msg::Flush(Duration::from_secs(60), tx))
            .is_err()
        {
            return usize::MAX;
        }
        rx.recv().unwrap_or(usize::MAX)
    }

    fn describe(&self) -> String {
        format!(
            "MLflow server {0} (experiment {1}): {0}/#/experiments/{1}/runs",
            self.uri, self.experiment_id
        )
    }
}

/// Sends what a run's spool still holds. Returns (sent, still unsent).
pub fn replay(uri: &str, spool: &Path) -> Result<(usize, usize), TrackError> {
    let uri = uri.trim_end_matches('/');
    let agent = agent();
    let mut pending = read_spool(spool);
    let total = pending.len();
    while let Some(op) = pending.front() {
        match send(&agent, uri, op) {
            Ok(()) => {
                pending.pop_front();
            }
            Err(CallError::Fatal(m)) => {
                let rejected = set_aside(spool, pending.pop_front());
                tracing::warn!(
                    "the MLflow server will never take a call ({m}); set aside in `{}`",
                    rejected.display()
                );
            }
            Err(CallError::Transient(m)) => {
                write_spool(spool, &pending);
                return Err(TrackError::Server {
                    uri: uri.into(),
                    problem: format!(
                        "{m}; {} of {total} calls are still in `{}`",
                        pending.len(),
                        spool.display()
                    ),
                });
            }
        }
    }
    write_spool(spool, &pending);
    Ok((total, 0))
}

#[cfg(test)]
mod tests {
    use super::{base64, truncated};

    #[test]
    fn basic_auth_is_standard_base64() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn oversized_params_are_truncated_at_mlflows_limits() {
        let long = "é".repeat(4000);
        let t = truncated(&[("k".repeat(300), long.clone())]);
        assert_eq!(t[0].0.len(), 250);
        assert!(t[0].1.len() <= 6000 && long.starts_with(&t[0].1));
    }
}
