//! Tracking against a real MLflow 3.17 server started here on 127.0.0.1: the run tree, params,
//! metric histories, NaN, artifacts; the local store served by `mlflow server`; and a server
//! killed and restarted mid-run losing nothing.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dnarun::track::{LocalStore, Metric, MlflowServer, RunStatus, Tracker};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_dnarun");

/// The tests share two cores in CI: one MLflow server at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Server {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::current_dir()
        .unwrap()
        .join("target/tracking-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Server {
    fn start(dir: &Path, port: u16, backend: &str) -> Server {
        Server::start_with(dir, port, backend, &[], &[])
    }

    fn start_with(
        dir: &Path,
        port: u16,
        backend: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mlflow = std::env::var("DNARUN_TEST_MLFLOW").expect(
            "DNARUN_TEST_MLFLOW must name the mlflow executable: run the suite with `scripts/test`",
        );
        let log = std::fs::File::create(dir.join(format!("server-{port}.log"))).unwrap();
        let child = Command::new(mlflow)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
                "--backend-store-uri",
                backend,
            ])
            .args([
                "--artifacts-destination",
                &dir.join("artifacts").display().to_string(),
            ])
            .args(args)
            .envs(env.iter().copied())
            // The basic-auth app keeps its users in `basic_auth.db` in the working directory.
            .current_dir(dir)
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env("MLFLOW_ALLOW_FILE_STORE", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = ureq::get(format!("{}/health", s.uri())).call()
                && r.status().is_success()
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the MLflow server did not start; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Value {
        let mut r = ureq::get(format!("{}/api/2.0/mlflow/{endpoint}", self.uri()));
        for (k, v) in query {
            r = r.query(*k, *v);
        }
        r.call().unwrap().body_mut().read_json().unwrap()
    }

    fn post(&self, endpoint: &str, body: Value) -> Value {
        ureq::post(format!("{}/api/2.0/mlflow/{endpoint}", self.uri()))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }

    fn runs(&self, experiment: &str) -> (String, Vec<Value>) {
        let id = self.get(
            "experiments/get-by-name",
            &[("experiment_name", experiment)],
        )["experiment"]["experiment_id"]
            .as_str()
            .unwrap()
            .to_string();
        let runs = self.post(
            "runs/search",
            json!({"experiment_ids": [id], "max_results": 1000}),
        )["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (id, runs)
    }

    fn history(&self, run: &str, key: &str) -> Vec<Value> {
        self.get(
            "metrics/get-history",
            &[("run_id", run), ("metric_key", key)],
        )["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)?["value"]
        .as_str()
}

fn param<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["params"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)?["value"]
        .as_str()
}

fn run_tiny(out: &Path, uri: &str, experiment: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("tests/fixtures/tiny.toml")
        .args([
            "--set",
            &format!("experiment.output_dir=\"{}\"", out.display()),
        ])
        .args(["--set", &format!("tracking.uri=\"{uri}\"")])
        .args(["--set", &format!("tracking.experiment=\"{experiment}\"")]);
    for e in extra {
        cmd.args(["--set", e]);
    }
    cmd.output().unwrap()
}

/// Checks the run tree of a finished tiny run as the server shows it.
fn check_tree(server: &Server, experiment: &str, run_dir: &Path, distill_epochs: usize) {
    let (exp_id, runs) = server.runs(experiment);
    let parents: Vec<&Value> = runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId").is_none())
        .collect();
    assert_eq!(parents.len(), 1, "one parent run");
    let parent = parents[0];
    let parent_id = parent["info"]["run_id"].as_str().unwrap();
    let children: Vec<&Value> = runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId") == Some(parent_id))
        .collect();
    assert_eq!(
        children.len(),
        9,
        "teacher, 2 distill, 2 rate, search, 3 retrain"
    );
    assert!(
        runs.iter().all(|r| r["info"]["status"] == "FINISHED"),
        "every run finished"
    );
    assert_eq!(
        param(parent, "distill.epochs"),
        Some(distill_epochs.to_string().as_str())
    );
    assert_eq!(param(parent, "blocks.0.cells.1.layers"), Some("2"));
    assert!(tag(parent, "dnarun.recipe_sha256").is_some_and(|h| h.len() == 64));
    for b in 0..2 {
        let child = children
            .iter()
            .find(|r| r["info"]["run_name"] == format!("distill/block{b}"))
            .unwrap();
        let h = server.history(child["info"]["run_id"].as_str().unwrap(), "distill_loss");
        let steps: Vec<i64> = h.iter().map(|m| m["step"].as_i64().unwrap_or(0)).collect();
        assert_eq!(
            steps,
            (0..distill_epochs as i64).collect::<Vec<_>>(),
            "block {b}: every epoch's loss"
        );
    }
    let best = server.history(parent_id, "best_accuracy");
    assert_eq!(best.len(), 1);
    // Artifacts come back byte for byte.
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{parent_id}/artifacts/report.md",
        server.uri()
    );
    let served = ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    assert_eq!(served, std::fs::read(run_dir.join("report.md")).unwrap());
}

#[test]
fn a_run_on_a_real_server() {
    let _serial = serial();
    let dir = scratch("server");
    let mut server = Server::start(
        &dir,
        free_port(),
        &format!("sqlite:///{}/mlflow.db", dir.display()),
    );
    let out = run_tiny(
        &dir.join("runs"),
        &server.uri(),
        "tiny-server",
        &["tracking.system_metrics_seconds=0.3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_tree(&server, "tiny-server", &dir.join("runs/tiny-001"), 3);
    // The link printed opens the training-runs view.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/#/experiments/") && err.contains("/runs"),
        "{err}"
    );
    // Dataset inputs (the Dataset column) and system metrics on the parent run.
    let (_, runs) = server.runs("tiny-server");
    let parent = runs
        .iter()
        .find(|r| tag(r, "mlflow.parentRunId").is_none())
        .unwrap();
    let inputs = parent["inputs"]["dataset_inputs"].as_array().unwrap();
    let contexts = data_contexts(inputs);
    for c in ["train", "distill", "rate", "test"] {
        assert!(contexts.contains(&c), "{contexts:?}");
    }
    assert!(
        inputs
            .iter()
            .all(|i| i["dataset"]["digest"].as_str().unwrap().len() == 12)
    );
    let id = parent["info"]["run_id"].as_str().unwrap();
    for key in [
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
    ] {
        assert!(!server.history(id, key).is_empty(), "{key}");
    }
    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", "tiny-server")],
    );
    let tags = exp["experiment"]["tags"].as_array().unwrap();
    assert!(
        tags.iter().any(
            |t| t["key"] == "mlflow.experimentKind" && t["value"] == "custom_model_development"
        )
    );

    // NaN and infinities round-trip (a bare NaN would be stored as 0).
    let mut t =
        MlflowServer::connect(&server.uri(), "tiny-server", &dir.join("spool.jsonl")).unwrap();
    let run = t.start_run("nan", None, &[]).unwrap();
    let m = |v: f64, step| Metric {
        key: "odd".into(),
        value: v,
        step,
        timestamp: 1000 + step,
    };
    t.log_metrics(
        &run,
        &[
            m(f64::NAN, 0),
            m(f64::INFINITY, 1),
            m(f64::NEG_INFINITY, 2),
            m(0.5, 3),
        ],
    )
    .unwrap();
    t.end_run(&run, RunStatus::Finished).unwrap();
    assert_eq!(t.flush(), 0);
    let values: Vec<Value> = server
        .history(&run, "odd")
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    // MLflow's SQL store keeps infinities as the largest finite doubles.
    assert_eq!(
        values,
        vec![json!("NaN"), json!(f64::MAX), json!(-f64::MAX), json!(0.5)]
    );

    // An artifact whose name needs percent-encoding arrives, and calls after it are not held up.
    let odd = dir.join("my recipe#1 100%.toml");
    std::fs::write(&odd, "x = 1\n").unwrap();
    let run = t.start_run("odd-names", None, &[]).unwrap();
    t.log_artifact(&run, &odd, "sub dir?").unwrap();
    t.log_metrics(&run, &[m(1.0, 0)]).unwrap();
    t.end_run(&run, RunStatus::Finished).unwrap();
    assert_eq!(t.flush(), 0, "every call was sent");
    assert_eq!(server.history(&run, "odd").len(), 1);
    let stored = dir
        .join("artifacts")
        .read_dir()
        .unwrap()
        .flatten()
        .flat_map(|e| common::files_under(&e.path()))
        .any(|p| p.ends_with("sub dir?/my recipe_1 100%.toml"));
    // (MLflow refuses `#` in artifact paths: it becomes `_`.)
    assert!(stored, "the artifact is stored under its own name");
    server.stop();
}

#[test]
fn the_local_store_is_what_mlflow_serves() {
    let _serial = serial();
    let dir = scratch("local");
    let store = dir.join("mlruns");
    let out = run_tiny(
        &dir.join("runs"),
        &format!("file:{}", store.display()),
        "tiny-local",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A NaN written to the local store reads back as NaN.
    let mut local = LocalStore::open(&store, "tiny-local").unwrap();
    let run = local.start_run("nan", None, &[]).unwrap();
    local
        .log_metrics(
            &run,
            &[Metric {
                key: "odd".into(),
                value: f64::NAN,
                step: 0,
                timestamp: 5,
            }],
        )
        .unwrap();
    local.end_run(&run, RunStatus::Finished).unwrap();
    let server = Server::start(&dir, free_port(), &format!("file://{}", store.display()));
    let (_, runs) = server.runs("tiny-local");
    assert_eq!(runs.len(), 11, "10 pipeline runs and the NaN run");
    let nan_run = runs
        .iter()
        .find(|r| r["info"]["run_name"] == "nan")
        .unwrap();
    let h = server.history(nan_run["info"]["run_id"].as_str().unwrap(), "odd");
    assert_eq!(h[0]["value"], json!("NaN"));
    let parent = runs
        .iter()
        .find(|r| tag(r, "mlflow.parentRunId").is_none() && r["info"]["run_name"] != "nan")
        .unwrap();
    assert_eq!(param(parent, "distill.epochs"), Some("3"));
    // The datasets are the parent's dataset inputs, read back by MLflow from the file store.
    let inputs = parent["inputs"]["dataset_inputs"].as_array().unwrap();
    let mut contexts = data_contexts(inputs);
    contexts.sort();
    assert_eq!(contexts, ["distill", "rate", "test", "train"], "{inputs:?}");
    let train = inputs
        .iter()
        .find(|i| i["dataset"]["name"] == "tiny-train")
        .unwrap();
    assert_eq!(train["dataset"]["digest"].as_str().unwrap().len(), 12);
    assert!(
        train["dataset"]["source"]
            .as_str()
            .unwrap()
            .contains("train-images-idx3-ubyte.gz"),
        "{train}"
    );
    assert_eq!(train["dataset"]["profile"], "{\"num_rows\":400}");
    let children = runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId") == parent["info"]["run_id"].as_str())
        .count();
    assert_eq!(children, 9);
    let distill = runs
        .iter()
        .find(|r| r["info"]["run_name"] == "distill/block1")
        .unwrap();
    assert_eq!(
        server
            .history(distill["info"]["run_id"].as_str().unwrap(), "distill_loss")
            .len(),
        3
    );
}

#[test]
fn a_server_that_goes_away_mid_run_loses_nothing() {
    let _serial = serial();
    let dir = scratch("restart");
    let port = free_port();
    let backend = format!("sqlite:///{}/mlflow.db", dir.display());
    let mut server = Server::start(&dir, port, &backend);
    let epochs = 40;
    let mut child = Command::new(BIN)
        .arg("tests/fixtures/tiny.toml")
        .args([
            "--set",
            &format!("experiment.output_dir=\"{}\"", dir.join("runs").display()),
        ])
        .args(["--set", &format!("tracking.uri=\"{}\"", server.uri())])
        .args([
            "--set",
            "tracking.experiment=\"tiny-restart\"",
            "--set",
            &format!("distill.epochs={epochs}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let state = dir.join("runs/tiny-001/distill/block0/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"epochs_done\": 2,")) {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "distillation did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    let server = Server::start(&dir, port, &backend);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.join("run.log")).unwrap()
    );
    check_tree(&server, "tiny-restart", &dir.join("runs/tiny-001"), epochs);
    let spools = std::fs::read_dir(dir.join("runs/tiny-001"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tracking-spool")
        })
        .count();
    assert_eq!(spools, 0, "the spool was flushed");
}

#[test]
fn credentials_from_mlflows_variables_reach_a_server_with_basic_auth() {
    let _serial = serial();
    let dir = scratch("auth");
    let password = "dnarun-test-pass-123";
    let mut server = Server::start_with(
        &dir,
        free_port(),
        &format!("sqlite:///{}/mlflow.db", dir.display()),
        &["--app-name", "basic-auth"],
        &[
            ("MLFLOW_AUTH_ADMIN_PASSWORD", password),
            ("MLFLOW_FLASK_SERVER_SECRET_KEY", "dnarun-tests"),
        ],
    );
    let run = |creds: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("tests/fixtures/tiny.toml")
            .args([
                "--set",
                &format!("experiment.output_dir=\"{}/runs\"", dir.display()),
                "--set",
                &format!("tracking.uri=\"{}\"", server.uri()),
                "--set",
                "tracking.experiment=\"tiny-auth\"",
            ])
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD");
        cmd.envs(creds.iter().copied());
        cmd.output().unwrap()
    };
    // Without credentials the server refuses: a clear error, exit 2.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    // With them the run is tracked; the password is never printed.
    let out = run(&[
        ("MLFLOW_TRACKING_USERNAME", "admin"),
        ("MLFLOW_TRACKING_PASSWORD", password),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(password) && !String::from_utf8_lossy(&out.stdout).contains(password));
    let runs = ureq::post(format!("{}/api/2.0/mlflow/runs/search", server.uri()))
        .header(
            "Authorization",
            &format!("Basic {}", "YWRtaW46ZG5hcnVuLXRlc3QtcGFzcy0xMjM="),
        )
        .send_json(json!({"experiment_ids": ["1"], "max_results": 100}))
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    assert!(
        runs["runs"].as_array().is_some_and(|r| r.len() > 5),
        "{runs}"
    );
    server.stop();
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dnarun test CA",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn a_server_behind_tls_with_its_own_ca() {
    let _serial = serial();
    let dir = scratch("tls").canonicalize().unwrap();
    let mut server = Server::start(
        &dir,
        free_port(),
        &format!("sqlite:///{}/mlflow.db", dir.display()),
    );
    let (ca, cert, key) = certificates(&dir);
    let port = free_port();
    let python = Path::new(&std::env::var("DNARUN_TEST_MLFLOW").unwrap()).with_file_name("python");
    let mut proxy = Command::new(python)
        .args([
            "tests/fixtures/tls_proxy.py",
            &port.to_string(),
            &cert.display().to_string(),
            &key.display().to_string(),
            &server.uri(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("ready"), "{line}");
    let uri = format!("https://127.0.0.1:{port}");
    let run = |env: &[(&str, &str)], n: usize| {
        Command::new(BIN)
            .arg("tests/fixtures/tiny.toml")
            .args([
                "--set",
                &format!("experiment.output_dir=\"{}/runs{n}\"", dir.display()),
                "--set",
                &format!("tracking.uri=\"{uri}\""),
                "--set",
                "retrain.epochs=1",
            ])
            .env_remove("MLFLOW_TRACKING_SERVER_CERT_PATH")
            .env_remove("MLFLOW_TRACKING_INSECURE_TLS")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    // The CA is not trusted by default: refused with a clear error.
    let out = run(&[], 0);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // Trusted through MLflow's variable, or with verification off.
    let ca = ca.display().to_string();
    for (n, env) in [
        (1, vec![("MLFLOW_TRACKING_SERVER_CERT_PATH", ca.as_str())]),
        (2, vec![("MLFLOW_TRACKING_INSECURE_TLS", "true")]),
    ] {
        let out = run(&env, n);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    server.stop();
}

/// The `mlflow.data.context` of each dataset input of a run, as MLflow returns them.
fn data_contexts(inputs: &[serde_json::Value]) -> Vec<&str> {
    inputs
        .iter()
        .filter_map(|i| {
            i["tags"]
                .as_array()?
                .iter()
                .find(|t| t["key"] == "mlflow.data.context")?["value"]
                .as_str()
        })
        .collect()
}

#[test]
fn a_sweep_is_the_parent_run_of_its_members_in_mlflows_own_client() {
    let _serial = serial();
    let dir = scratch("sweep");
    let server = Server::start(
        &dir,
        free_port(),
        &format!("sqlite:///{}/mlflow.db", dir.display()),
    );
    let mut cmd = Command::new(BIN);
    cmd.args(["sweep", "tests/fixtures/tiny.toml"]);
    for s in [
        format!("experiment.output_dir=\"{}\"", dir.join("runs").display()),
        format!("tracking.uri=\"{}\"", server.uri()),
        "tracking.experiment=\"tiny-sweep\"".into(),
        "search.top_k=1".into(),
        "retrain.epochs=1".into(),
        r#"sweep.grid={"rate.calibration_batches"=[1,2]}"#.into(),
    ] {
        cmd.args(["--set", &s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read back with MLflow's Python client, as a user comparing the members would.
    let python = Path::new(&std::env::var("DNARUN_TEST_MLFLOW").unwrap()).with_file_name("python");
    let script = r#"
import json, sys, mlflow
c = mlflow.MlflowClient(sys.argv[1])
e = c.get_experiment_by_name("tiny-sweep")
runs = c.search_runs([e.experiment_id], max_results=1000)
sweep = [r for r in runs if r.info.run_name == "tiny-sweep"][0]
print(json.dumps({
    "sweep": sweep.info.run_id,
    "status": sweep.info.status,
    "params": sweep.data.params,
    "artifacts": sorted(a.path for a in c.list_artifacts(sweep.info.run_id)),
    "runs": [{"name": r.info.run_name, "parent": r.data.tags.get("mlflow.parentRunId"),
              "params": r.data.params, "metrics": r.data.metrics, "status": r.info.status}
             for r in runs],
}))
"#;
    let read = Command::new(python)
        .args(["-c", script, &server.uri()])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let v: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(v["status"], "FINISHED");
    assert_eq!(v["params"]["sweep.members"], "2");
    assert_eq!(v["params"]["sweep.keys"], "rate.calibration_batches");
    assert_eq!(v["artifacts"], json!(["sweep.json", "sweep.md"]));
    let members: Vec<&Value> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["parent"] == v["sweep"])
        .collect();
    assert_eq!(members.len(), 2, "{v}");
    let mut swept: Vec<&str> = members
        .iter()
        .map(|m| m["params"]["rate.calibration_batches"].as_str().unwrap())
        .collect();
    swept.sort();
    assert_eq!(swept, ["1", "2"]);
    for m in &members {
        assert_eq!(m["status"], "FINISHED");
        assert!(m["metrics"]["top1_rating"].is_number(), "{m}");
    }
}
