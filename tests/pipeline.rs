//! The whole pipeline on the tiny recipe: every artifact, the lock file re-running exactly,
//! resume after SIGKILL giving the same ratings, refusing to resume a changed recipe, and the
//! exported architectures re-loading.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dnarun");

mod common;

fn out_dir(name: &str) -> PathBuf {
    common::out_dir("pipeline-tests", name)
}

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["tests/fixtures/tiny.toml".to_string()];
    v.extend(common::sets(dir, extra));
    v
}

fn run(a: &[String]) -> Output {
    run_in(Path::new("."), a)
}

/// `dnarun ARGS` from the folder `cwd`, which must succeed.
fn run_in(cwd: &Path, a: &[String]) -> Output {
    let out = Command::new(BIN).args(a).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "dnarun {a:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ratings(run_dir: &Path) -> Vec<serde_json::Value> {
    (0..2)
        .map(|i| {
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(run_dir.join(format!("rate/block{i}.json"))).unwrap(),
            )
            .unwrap();
            v["ratings"].clone()
        })
        .collect()
}

#[test]
fn whole_pipeline_writes_every_artifact() {
    let dir = out_dir("whole");
    let out = run(&args(&dir, &[]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("top1") && stdout.contains("top3") && stdout.contains("Kendall"),
        "{stdout}"
    );
    let r = dir.join("tiny-001");
    for f in [
        "dnarun.lock",
        "tracking/parent.id",
        "tracking/distill__block1.id",
        "teacher/state.json",
        "teacher/model.bpk",
        "distill/block0/state.json",
        "distill/block0/supernet-e3s0.bpk",
        "distill/block1/supernet-e3s0.bpk",
        "rate/block0.json",
        "rate/block0.csv",
        "rate/block1.json",
        "rate/block1.csv",
        "search/result.json",
        "search/pareto.svg",
        "retrain/top1/arch.toml",
        "retrain/top1/model.bpk",
        "retrain/top1/model.safetensors",
        "teacher/teacher.safetensors",
        "retrain/top2/arch.toml",
        "retrain/top3/arch.toml",
        "report.md",
        "report.csv",
        "report.json",
    ] {
        assert!(r.join(f).exists(), "missing {f}");
    }
    let st = std::fs::read(r.join("retrain/top1/model.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&st)
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect();
    assert!(
        names.iter().any(|n| n == "fc.weight")
            && names
                .iter()
                .any(|n| n.starts_with("cells.0.layers.0.depthwise.")),
        "{names:?}"
    );
    let rates = ratings(&r);
    assert_eq!(
        rates[0].as_array().unwrap().len(),
        2 + 4,
        "every path of block 0 is rated"
    );
    assert!(
        rates
            .iter()
            .flat_map(|b| b.as_array().unwrap())
            .all(|x| x["rating"].as_f64().unwrap() > 0.0)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["architectures"].as_array().unwrap().len(), 3);
    assert!(report["kendall_tau"].is_number());
    assert_eq!(report["blocks"][1]["device"], "cpu");
    assert!(
        report["blocks"][1]["distill_seconds"].as_f64().unwrap() > 0.0
            && report["blocks"][1]["paths"] == 6
    );
    assert!(
        std::fs::read_to_string(r.join("search/pareto.svg"))
            .unwrap()
            .starts_with("<svg")
    );
    // No temp files are left behind.
    let leftovers: Vec<_> = common::files_under(&r)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp~"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Only the final checkpoints remain: the teacher's epoch-1 files were replaced.
    let teacher: Vec<String> = std::fs::read_dir(r.join("teacher"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bpk"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(teacher, ["model.bpk", "optim.bpk"]);
    // The local MLflow store: one parent and a child per stage and block.
    let exp = std::fs::read_dir(dir.join("mlruns"))
        .unwrap()
        .flatten()
        .find(|e| e.path().join("meta.yaml").exists())
        .unwrap()
        .path();
    let runs: Vec<PathBuf> = std::fs::read_dir(&exp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("meta.yaml").exists())
        .collect();
    let parents: Vec<&PathBuf> = runs
        .iter()
        .filter(|p| !p.join("tags/mlflow.parentRunId").exists())
        .collect();
    assert_eq!(parents.len(), 1);
    // The parent has the top-1's cost (to plot runs against cost), and no tau over 3 nets (the
    // report calls that too few to judge).
    let metric = |name: &str| parents[0].join("metrics").join(name);
    for m in [
        "top1_mflops",
        "top1_mparams",
        "top1_rating",
        "best_accuracy",
    ] {
        assert!(metric(m).exists(), "{m}");
    }
    assert!(!metric("kendall_tau").exists());
    // Rank stability: an evaluation after every epoch, a tau from the second on, in the run
    // directory, on the block's MLflow run and in the report.
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("distill/stability.json")).unwrap())
            .unwrap();
    for b in st["blocks"].as_array().unwrap() {
        let ev = b["evaluations"].as_array().unwrap();
        assert_eq!(ev.len(), 3, "{b}");
        assert!(ev[0]["tau"].is_null() && ev[1]["tau"].is_number() && ev[2]["tau"].is_number());
        assert_eq!(b["paths"], 6, "every path of a 6-path block");
    }
    let distill1 = runs
        .iter()
        .find(|p| {
            std::fs::read_to_string(p.join("tags/mlflow.runName"))
                .is_ok_and(|n| n == "distill/block1")
        })
        .unwrap();
    assert!(distill1.join("metrics/stability_tau").exists());
    // `status` shows the retrained nets.
    let status = run(&["status".into(), r.display().to_string()]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("retrain      3 of 3 nets done (top1 "),
        "{status}"
    );
    // The report says what the run was and how to read it.
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    for part in [
        "# `tiny`: tiny-001",
        "budget <= 0.14M FLOPs",
        "space 36 architectures (6, 6 paths per block)",
        "accuracies on 200 test images",
        "| 95 % interval |",
        "**Reading it.**",
        "too few to judge",
        "distillation on cpu: ",
        "| distilled epochs | stability tau |",
    ] {
        assert!(md.contains(part), "`{part}` in:\n{md}");
    }
    assert_eq!(
        runs.len(),
        1 + 1 + 2 + 2 + 1 + 3,
        "parent, teacher, 2 distill, 2 rate, search, 3 retrain"
    );
    let params = parents[0].join("params");
    assert_eq!(
        std::fs::read_to_string(params.join("distill.epochs")).unwrap(),
        "3"
    );
    assert_eq!(
        std::fs::read_to_string(params.join("blocks.1.cells.0.layers")).unwrap(),
        "1"
    );
    // The exported architecture re-loads: `plan` shows it and its cost matches the report.
    let arch = r.join("retrain/top1/arch.toml").display().to_string();
    let plan = run(&["plan".into(), arch.clone()]);
    let text = String::from_utf8_lossy(&plan.stdout);
    let params = report["architectures"][0]["chosen"]["params"]
        .as_u64()
        .unwrap();
    assert!(
        text.contains(&format!("{:.4}M params", params as f64 / 1e6)),
        "{text}"
    );
    // ... and retrains.
    let re = run(&[
        "retrain".into(),
        arch,
        "--set".into(),
        "retrain.epochs=1".into(),
    ]);
    let out = String::from_utf8_lossy(&re.stdout);
    assert!(
        out.contains("top1: test accuracy") && out.contains("(run directory `"),
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&re.stderr)
            .contains("retraining `top1` for 1 epoch in the new run directory"),
        "{}",
        String::from_utf8_lossy(&re.stderr)
    );
}

#[test]
fn the_lock_file_reruns_the_same_ratings() {
    let dir = out_dir("lock");
    run(&args(&dir, &["retrain.epochs=1", "search.top_k=1"]));
    let first = dir.join("tiny-001");
    // Without the stage cache, which would hand the second run the first's results.
    let out = Command::new(BIN)
        .arg(first.join("dnarun.lock"))
        .arg("--no-cache")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = dir.join("tiny-002");
    assert_eq!(
        ratings(&first),
        ratings(&second),
        "same seed on the CPU: bit-identical ratings"
    );
    let lock1 = std::fs::read_to_string(first.join("dnarun.lock")).unwrap();
    let lock2 = std::fs::read_to_string(second.join("dnarun.lock")).unwrap();
    assert_eq!(lock1, lock2, "the lock of a lock-file run is the same lock");
}

/// Waits until block 1 of the run in `dir` has distilled `epochs` epochs, while `child` runs.
fn wait_for_block1_epochs(dir: &Path, epochs: u64, child: &mut std::process::Child) {
    let state = dir.join("tiny-001/distill/block1/state.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&state)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .is_none_or(|d| d < epochs)
    {
        assert!(Instant::now() < deadline, "distillation did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dnarun resume`s the run in `dir` and checks its ratings equal the run in `reference`'s.
fn resume_rates_as(dir: &Path, reference: &Path) {
    let resumed = Command::new(BIN)
        .args(["resume", &dir.join("tiny-001").display().to_string()])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        ratings(&reference.join("tiny-001")),
        ratings(&dir.join("tiny-001"))
    );
}

#[test]
fn a_killed_run_resumes_to_the_same_ratings() {
    let reference = out_dir("resume-reference");
    let extra = ["distill.epochs=40", "search.top_k=1", "retrain.epochs=1"];
    run(&args(&reference, &extra));
    let dir = out_dir("resume-killed");
    let mut child = Command::new(BIN)
        .args(args(&dir, &extra))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_block1_epochs(&dir, 3, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !dir.join("tiny-001/rate/block0.json").exists(),
        "killed during distillation"
    );
    resume_rates_as(&dir, &reference);

    // With two devices: SIGKILL the run mid-distillation; its workers notice, save and stop on
    // their own (nothing left to race the resumed run), and the resumed run rates the same.
    let dir = out_dir("resume-killed-2dev");
    let two = [
        extra[0],
        extra[1],
        extra[2],
        "runtime.devices=[\"cpu\", \"cpu\"]",
    ];
    let mut child = Command::new(BIN)
        .args(args(&dir, &two))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_block1_epochs(&dir, 3, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = [0, 1].map(|k| dir.join(format!("tiny-001/workers/distill-{k}.log")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs.iter().all(|l| {
        std::fs::read_to_string(l).is_ok_and(|t| t.contains("everything finished so far is saved"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the workers did not stop with their run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    resume_rates_as(&dir, &reference);
}

#[test]
fn resuming_a_changed_recipe_is_refused() {
    let dir = out_dir("changed");
    run(&args(&dir, &["search.top_k=1", "retrain.epochs=1"]));
    let mut a = args(
        &dir,
        &[
            "search.top_k=1",
            "retrain.epochs=1",
            "distill.epochs=5",
            "distill.lr=0.01",
        ],
    );
    a.push("--resume".into());
    let out = Command::new(BIN).arg("run").args(&a).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`distill.epochs`")
            && err.contains("`distill.lr`")
            && err.contains("cannot be resumed"),
        "{err}"
    );
    insta::assert_snapshot!(err.replace(&dir.display().to_string(), "[DIR]"));
}

#[test]
fn stages_and_blocks_run_alone() {
    let dir = out_dir("stages");
    let base = args(&dir, &["search.top_k=1", "retrain.epochs=1"]);
    let with = |extra: &[&str]| {
        let mut v = vec!["run".to_string()];
        v.extend(base.iter().cloned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    run(&with(&["--stage", "teacher"]));
    let r = dir.join("tiny-001");
    let rd = r.display().to_string();
    assert!(r.join("teacher/state.json").exists() && !r.join("distill").exists());
    run(&with(&[
        "--stage",
        "distill",
        "--block",
        "1",
        "--run-dir",
        &rd,
    ]));
    assert!(r.join("distill/block1/state.json").exists() && !r.join("distill/block0").exists());
    run(&with(&[
        "--stage",
        "distill",
        "--block",
        "0",
        "--run-dir",
        &rd,
    ]));
    run(&with(&["--stage", "rate", "--run-dir", &rd]));
    assert!(r.join("rate/block0.json").exists() && r.join("rate/block1.json").exists());
    run(&with(&["--run-dir", &rd]));
    assert!(r.join("report.md").exists());
}

#[test]
fn a_missing_device_is_reported_before_any_work() {
    // Alone, and as the second of two devices (whose blocks would only start after the teacher).
    for (name, devices) in [
        ("device", "[\"cuda:0\"]"),
        ("device2", "[\"cpu\", \"cuda:0\"]"),
    ] {
        let dir = out_dir(name);
        let out = Command::new(BIN)
            .args(args(&dir, &[&format!("runtime.devices={devices}")]))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        // A build without CUDA refuses it as a recipe error (with CUDA: no such device here).
        assert!(
            err.contains("is `cuda:0`, but this dnarun was built without CUDA")
                || err.contains("`runtime.devices` asks for `cuda:0`"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        insta::assert_snapshot!(format!("missing_{name}"), err);
        assert!(
            std::fs::read_dir(&dir).unwrap().next().is_none(),
            "nothing was written"
        );
    }
}

/// Two devices (`["cpu", "cpu"]`, blocks round-robin): distillation and rating run as one worker
/// process per device on that device's blocks; the ratings equal a one-device run's.
#[test]
fn blocks_spread_over_devices_give_the_same_ratings() {
    let extra = ["search.top_k=1", "retrain.epochs=1"];
    let one = out_dir("devices-one");
    run(&args(&one, &extra));
    let two = out_dir("devices-two");
    let out = run(&args(
        &two,
        &[extra[0], extra[1], "runtime.devices=[\"cpu\", \"cpu\"]"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("distill: blocks [0] on cpu (worker 0")
            && err.contains("distill: blocks [1] on cpu (worker 1")
            && err.contains("rate: blocks [1] on cpu (worker 1"),
        "{err}"
    );
    let (r1, r2) = (one.join("tiny-001"), two.join("tiny-001"));
    assert_eq!(ratings(&r1), ratings(&r2));
    let log = std::fs::read_to_string(r2.join("workers/distill-1.log")).unwrap();
    assert!(
        log.contains("distill block 1:") && !log.contains("distill block 0:"),
        "{log}"
    );
    assert!(r2.join("workers/rate-0.log").exists() && r2.join("report.md").exists());
    // `dnarun plan` shows the assignment.
    let plan = Command::new(BIN)
        .args(["plan", "tests/fixtures/tiny.toml", "--set"])
        .arg("runtime.devices=[\"cpu\", \"cpu\"]")
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("on cpu (worker 0)") && plan.contains("on cpu (worker 1)"),
        "{plan}"
    );
}

#[test]
fn device_names_parse() {
    use dnarun::plan::DeviceSpec;
    assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
    assert_eq!(DeviceSpec::parse("cuda:1"), Ok(DeviceSpec::Cuda(1)));
    assert_eq!(DeviceSpec::parse("wgpu"), Ok(DeviceSpec::Wgpu(0)));
    assert!(
        DeviceSpec::parse("cuda:x")
            .unwrap_err()
            .contains("not a device index")
    );
    assert!(
        DeviceSpec::parse("tpu:0")
            .unwrap_err()
            .contains("not a device")
    );
}

#[test]
fn ctrl_c_and_sigterm_stop_after_saving_and_the_run_resumes() {
    for (name, signal) in [("sigint", "INT"), ("sigterm", "TERM")] {
        let dir = out_dir(name);
        let extra = ["distill.epochs=40", "search.top_k=1", "retrain.epochs=1"];
        let mut child = Command::new(BIN)
            .args(args(&dir, &extra))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let state = dir.join("tiny-001/distill/block0/state.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !state.exists() {
            assert!(
                Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "distillation did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("dnarun resume"), "{err}");
        let resumed = Command::new(BIN)
            .args(["resume", &dir.join("tiny-001").display().to_string()])
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(dir.join("tiny-001/report.md").exists());
    }
}

#[test]
fn an_unreachable_tracking_server_fails_fast_or_falls_back() {
    let dir = out_dir("unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut a = args(&dir, &[]);
    a.extend([
        "--set".to_string(),
        format!("tracking.uri=\"http://127.0.0.1:{port}\""),
    ]);
    let out = Command::new(BIN).args(&a).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the MLflow server at `http://127.0.0.1:{port}` cannot be reached"
        )) && err.contains("fallback_to_local"),
        "{err}"
    );
    insta::assert_snapshot!(err.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:[PORT]"));
    a.extend([
        "--set".to_string(),
        "tracking.fallback_to_local=true".into(),
        "--set".into(),
        "search.top_k=1".into(),
    ]);
    let out = Command::new(BIN).args(&a).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("writing to the local store"));
}

#[test]
fn plan_reports_the_data() {
    let out = Command::new(BIN)
        .args(["plan", "tests/fixtures/tiny.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("train split: 5000 images, 10 classes, 500 per class"),
        "{text}"
    );
    assert!(text.contains("test split: 1000 images"), "{text}");
}

/// The 20 foolbox ImageNet photos as a flat test folder (`imagenet_NN_<label>.jpg`), and a flat
/// training folder that gives every one of the 1000 classes two images (links to the photos),
/// so that the paper's sampling (per class) can draw its subsets.
fn imagenet_photo_folders(dir: &Path) -> (PathBuf, PathBuf) {
    let (train, test) = (dir.join("train"), dir.join("val"));
    std::fs::create_dir_all(&train).unwrap();
    std::fs::create_dir_all(&test).unwrap();
    let sources = common::imagenet_photos(&common::foolbox());
    assert_eq!(sources.len(), 20);
    for p in &sources {
        std::fs::copy(p, test.join(p.file_name().unwrap())).unwrap();
    }
    for label in 0..1000 {
        for k in 0..2 {
            let src = &sources[(label * 2 + k) % sources.len()];
            std::fs::hard_link(src, train.join(format!("fill_{k}_{label}.jpg")))
                .or_else(|_| {
                    std::fs::copy(src, train.join(format!("fill_{k}_{label}.jpg"))).map(|_| ())
                })
                .unwrap();
        }
    }
    (train.canonicalize().unwrap(), test.canonicalize().unwrap())
}

#[test]
fn the_paper_recipe_runs_its_teacher_stage_on_real_photos() {
    let weights = std::env::var("DNARUN_TEST_LITE0")
        .expect("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`");
    let dir = out_dir("paper-teacher");
    let (train, test) = imagenet_photo_folders(&dir);
    let sets = [
        "data.format=\"flat-folder\"".to_string(),
        format!("data.train.dir=\"{}\"", train.display()),
        format!("data.test.dir=\"{}\"", test.display()),
        format!("teacher.weights.path=\"{weights}\""),
        "data.samples_per_class=1".into(),
        "data.rate_per_class=1".into(),
        "data.batch_size=10".into(),
    ];
    let mut a = vec!["recipes/dna-imagenet.toml".to_string()];
    a.extend(common::sets(
        &dir,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    for cmd in ["validate", "plan"] {
        let mut v = vec![cmd.to_string()];
        v.extend(a.iter().cloned());
        let out = run(&v);
        if cmd == "plan" {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("train split: 2000 images, 1000 classes"),
                "{text}"
            );
            assert!(text.contains("test split: 20 images"), "{text}");
        }
    }
    let mut v = vec!["run".to_string()];
    v.extend(a.iter().cloned());
    v.extend(["--stage".into(), "teacher".into()]);
    run(&v);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("dna-imagenet-001/teacher/state.json")).unwrap(),
    )
    .unwrap();
    // EfficientNet-Lite0 gets 17 of the 20 photos right at 224 px (ImageNet protocol).
    let acc = state["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.85, "teacher accuracy {acc}");
    assert!(
        dir.join("dna-imagenet-001/teacher/teacher.safetensors")
            .exists()
    );
    // The same weights as a timm checkpoint (`tf_efficientnet_lite0`'s names, safetensors)
    // through the recipe: `arch = "tf-efficientnet-lite0"`, `layout = "timm"`, taps without
    // shapes. The same accuracy.
    let timm = dir.join("lite0-timm.safetensors");
    {
        use dnarun::recipe::WeightLayout;
        let p = common::plan("recipes/dna-imagenet.toml", &[]);
        let device = burn::tensor::Device::flex();
        let t =
            dnarun::nn::weights::load_teacher(Path::new(&weights), &p.teacher, 3, 1000, &device)
                .unwrap();
        dnarun::nn::weights::export_teacher_safetensors(&t, WeightLayout::Timm, &timm).unwrap();
    }
    let taps = (2..=7)
        .map(|s| format!("{{ name = \"s{s}\", stage = {s} }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sets = sets.to_vec();
    sets.retain(|s| !s.starts_with("teacher.weights"));
    sets.extend([
        "experiment.name=\"timm-teacher\"".to_string(),
        "teacher.arch=\"tf-efficientnet-lite0\"".into(),
        format!(
            "teacher.weights={{ path = \"{}\", format = \"safetensors\", layout = \"timm\" }}",
            timm.display()
        ),
        format!("teacher.taps=[{taps}]"),
    ]);
    let mut v = vec!["run".to_string(), "recipes/dna-imagenet.toml".to_string()];
    v.extend(common::sets(
        &dir,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    v.extend(["--stage".into(), "teacher".into()]);
    run(&v);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("timm-teacher-001/teacher/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["accuracy"].as_f64().unwrap(), acc);
}

#[test]
fn plan_measure_projects_the_tiny_run() {
    let dir = out_dir("measure");
    let mut a = vec!["plan".to_string()];
    a.extend(args(&dir, &[]));
    a.extend(["--measure".into(), "--json".into()]);
    let out = run(&a);
    // Measuring makes no run directory.
    assert!(!dir.join("tiny-001").exists());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let projected: f64 = ["teacher", "distill", "rate", "search", "retrain"]
        .iter()
        .map(|s| p["stages"][s]["seconds"].as_f64().unwrap())
        .sum();
    assert!((projected - p["total_seconds"].as_f64().unwrap()).abs() < 1e-9);
    assert!(p["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(p["blocks"].as_array().unwrap().len(), 2);
    run(&args(&dir, &[]));
    let resources: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tiny-001/resources.json")).unwrap(),
    )
    .unwrap();
    let measured: f64 = resources["seconds"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    // A wide band: the suite shares its 2 cores with other tests (the quickstart's figures,
    // measured alone, are in docs/benchmarks.md).
    let ratio = projected / measured;
    eprintln!("projected {projected:.2}s, measured {measured:.2}s, ratio {ratio:.2}");
    assert!(
        (0.33..3.0).contains(&ratio),
        "projected {projected:.2}s, measured {measured:.2}s"
    );
}

#[test]
fn the_paper_recipe_runs_every_stage_at_paper_shapes() {
    // `recipes/dna-imagenet.toml` as shipped (224 px, EfficientNet-Lite0 with its real weights,
    // 6 blocks, SE and swish ops, the public code's cells up to 5 layers, stride-2 cells) with
    // the work cut: one step of batch 2 per block, 2 images rated, one retraining step.
    let weights = std::env::var("DNARUN_TEST_LITE0")
        .expect("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`");
    let dir = out_dir("paper-smoke");
    let (train, test) = imagenet_photo_folders(&dir);
    let sets = [
        "data.format=\"flat-folder\"".to_string(),
        format!("data.train.dir=\"{}\"", train.display()),
        format!("data.test.dir=\"{}\"", test.display()),
        format!("teacher.weights.path=\"{weights}\""),
        "data.samples_per_class=1".into(),
        "data.rate_per_class=1".into(),
        "data.train_per_class=1".into(),
        "data.batch_size=10".into(),
        "distill.epochs=1".into(),
        "distill.max_steps=1".into(),
        "distill.batch_size=2".into(),
        "rate.batch_size=2".into(),
        "rate.max_images=2".into(),
        "retrain.epochs=1".into(),
        "retrain.max_steps=1".into(),
        "retrain.batch_size=2".into(),
        "search.top_k=1".into(),
    ];
    let mut a = vec!["recipes/dna-imagenet.toml".to_string()];
    a.extend(common::sets(
        &dir,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    run(&a);
    eprintln!(
        "paper-shaped smoke run: {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let r = dir.join("dna-imagenet-001");
    let expected_paths = [288, 1548, 1548, 2808, 16848, 6];
    for (i, n) in expected_paths.iter().enumerate() {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(r.join(format!("distill/block{i}/state.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(state["epochs_done"], 1, "block {i} distilled");
        let rated = ratings_of(&r, i);
        assert_eq!(rated.len(), *n, "every path of block {i} rated");
        assert!(
            rated
                .iter()
                .all(|x| x["rating"].as_f64().unwrap().is_finite())
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    let chosen = &report["architectures"][0]["chosen"];
    assert_eq!(chosen["paths"].as_array().unwrap().len(), 6);
    assert!(report["teacher_accuracy"].as_f64().unwrap() >= 0.85);
    // The report's cost of the found architecture is the cost model's.
    let plan = run(&[
        "plan".into(),
        r.join("retrain/top1/arch.toml").display().to_string(),
    ]);
    let text = String::from_utf8_lossy(&plan.stdout);
    let flops = chosen["flops_dna"].as_u64().unwrap() as f64 / 1e6;
    assert!(
        text.contains(&format!("{flops:.3}M FLOPs (DNA convention)")),
        "{text}"
    );
    assert!(flops <= 400.0, "within the recipe's budget");
    for stage in ["teacher", "distill", "rate", "search", "retrain"] {
        assert!(
            report["peak_rss_bytes"][stage].as_u64().unwrap() > 0,
            "{stage}"
        );
    }
}

fn ratings_of(run_dir: &Path, i: usize) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join(format!("rate/block{i}.json"))).unwrap(),
    )
    .unwrap();
    v["ratings"].as_array().unwrap().clone()
}

fn study_args(dir: &Path) -> Vec<String> {
    let mut v = vec!["study".to_string()];
    v.extend(args(
        dir,
        &[
            "study.architectures=5",
            "study.seeds=2",
            "study.band=0.6",
            "retrain.epochs=2",
        ],
    ));
    v
}

#[test]
fn a_tiny_study_end_to_end_and_resumed_after_a_kill() {
    let dir = out_dir("study");
    // Start, kill once the first net's first seed is finished, resume.
    let mut child = Command::new(BIN)
        .args(study_args(&dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = dir.join("tiny-001/study/net01/s0/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = |p: &Path| {
        std::fs::read_to_string(p)
            .is_ok_and(|t| t.contains("\"accuracy\": 0") || t.contains("\"accuracy\": 1"))
    };
    while !done(&first) {
        assert!(
            Instant::now() < deadline,
            "the first study net did not finish"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let before = std::fs::read_to_string(&first).unwrap();
    let modified = std::fs::metadata(&first).unwrap().modified().unwrap();
    // `status` shows the study's nets, not a run's retraining.
    let run_dir = dir.join("tiny-001").display().to_string();
    let status = run(&["status".into(), run_dir.clone()]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("  study        ")
            && status.contains(" of 12 net seeds done")
            && !status.contains("retrain"),
        "{status}"
    );
    // `dnarun resume` finishes what the run directory holds: the study, not a run's retraining.
    let out = run(&["resume".into(), dir.join("tiny-001").display().to_string()]);
    assert!(
        !dir.join("tiny-001/report.md").exists(),
        "resume finished the study, not a run"
    );
    // The finished net was not retrained.
    assert_eq!(std::fs::read_to_string(&first).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        modified
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("| summed rating (lower = better) |"),
        "{text}"
    );
    let status = run(&["status".into(), run_dir]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("study        12 of 12 net seeds done"),
        "{status}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tiny-001/study.json")).unwrap())
            .unwrap();
    assert_eq!(s["n"], 5);
    assert_eq!(s["seeds"], 2);
    for p in ["rating", "predicted", "flops", "params"] {
        let f = &s["predictors"][p];
        for k in ["kendall_tau", "spearman", "pearson"] {
            assert!(f[k].is_number(), "{p}.{k}");
        }
        assert_eq!(f["kendall_tau_ci"].as_array().unwrap().len(), 2);
    }
    assert!(s["noise_std"].is_number() && s["top1_percentile"].is_number());
    assert!(
        s["seed_tau"]
            .as_f64()
            .is_some_and(|t| (-1.0..=1.0).contains(&t))
    );
    assert_eq!(s["nets"][0]["accuracies"].as_array().unwrap().len(), 2);
    // The honest figures: the means' reliability, the de-noised ceiling (or why there is none),
    // the paired difference of the rating's tau and FLOPs'.
    assert!(s["reliability"].is_number(), "{}", s["reliability"]);
    assert!(
        s["ceiling"].is_number() || s["ceiling_note"].is_string(),
        "{} {}",
        s["ceiling"],
        s["ceiling_note"]
    );
    let d = &s["rating_vs_flops_tau_diff"];
    assert!(
        d["value"].is_number() && d["ci"].as_array().unwrap().len() == 2,
        "{d}"
    );
    let md = std::fs::read_to_string(dir.join("tiny-001/study.md")).unwrap();
    assert!(
        md.contains("reliability of the 2-seed mean accuracies")
            && md.contains("paired bootstrap 95 % CI"),
        "{md}"
    );
    for f in ["study.svg", "study.md", "predictor.json"] {
        assert!(dir.join("tiny-001").join(f).exists(), "{f}");
    }
    // The fitted predictor drives a search: `search.objective = "predicted"`.
    let predictor = dir.join("tiny-001/predictor.json").display().to_string();
    let mut a = args(
        &dir,
        &[
            "search.objective=\"predicted\"",
            &format!("search.predictor=\"{predictor}\""),
            "retrain.epochs=1",
        ],
    );
    a.insert(0, "run".into());
    run(&a);
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tiny-002/search/result.json")).unwrap(),
    )
    .unwrap();
    assert!(result["top"][0]["predicted_accuracy"].is_number());
    // A study that differs only outside retraining takes its retrained nets from the stage
    // cache: the same nets, none retrained.
    let mut again = study_args(&dir);
    again.extend(["--set".into(), "search.top_k=2".into()]);
    let out = run(&again);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("study/net01/s0: taken from the stage cache"),
        "{text}"
    );
    let s3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tiny-003/study.json")).unwrap())
            .unwrap();
    assert_eq!(s3["nets"], s["nets"]);
    use std::os::unix::fs::MetadataExt;
    let inode = |run: &str| {
        std::fs::metadata(dir.join(run).join("study/net01/s1/model.bpk"))
            .unwrap()
            .ino()
    };
    assert_eq!(
        inode("tiny-001"),
        inode("tiny-003"),
        "a hard link, not a copy"
    );
}

#[test]
fn a_second_writer_of_a_run_directory_is_refused() {
    let dir = out_dir("second-writer");
    let mut first = Command::new(BIN)
        .args(args(&dir, &["distill.epochs=30"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.join("tiny-001/distill/block0/state.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !state.exists() {
        assert!(Instant::now() < deadline, "distillation did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a = args(&dir, &["distill.epochs=30"]);
    a.extend([
        "--run-dir".into(),
        dir.join("tiny-001").display().to_string(),
    ]);
    let second = Command::new(BIN).args(&a).output().unwrap();
    let pid = first.id();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr)
        .replace(&format!("pid {pid}"), "pid [PID]")
        .replace(&dir.display().to_string(), "[DIR]");
    assert!(
        err.contains("pid [PID]"),
        "the holder's pid is named: {err}"
    );
    insta::assert_snapshot!(err);
}

/// A ResNet-18 teacher from a torchvision-layout safetensors checkpoint (written here from a
/// randomly initialised teacher: the test is about the path, not the accuracy) runs every stage
/// on the ImageNet photos at 32 px: taps by stage without shapes, MBConv blocks distilled
/// against its basic-block stages, rated, searched and retrained. Its classifier has 10 classes
/// and the data 1000: it is loaded for its features, its accuracy not measured.
#[test]
fn a_resnet_teacher_from_a_torchvision_checkpoint_runs_every_stage() {
    let dir = out_dir("resnet-teacher");
    let (train, test) = imagenet_photo_folders(&dir);
    let weights = dir.join("resnet18.safetensors");
    {
        use dnarun::recipe::WeightLayout;
        let arch = dnarun::plan::TeacherArch::pretrained()
            .find(|a| a.name() == "resnet18")
            .unwrap();
        let p = common::plan("recipes/dna-imagenet.toml", &[]);
        let spec = dnarun::plan::pretrained_spec(
            arch,
            WeightLayout::Torchvision,
            p.teacher.train.clone(),
            true,
        )
        .unwrap();
        let t = dnarun::nn::Teacher::new(&spec, 3, 10, &burn::tensor::Device::flex());
        dnarun::nn::weights::export_teacher_safetensors(&t, WeightLayout::Torchvision, &weights)
            .unwrap();
    }
    let sets = [
        "data.format=\"flat-folder\"".to_string(),
        format!("data.train={{ dir = \"{}\" }}", train.display()),
        format!("data.test={{ dir = \"{}\" }}", test.display()),
        "data.classes=1000".into(),
        "data.channels=3".into(),
        "data.image_size=32".into(),
        "data.samples_per_class=1".into(),
        "data.rate_per_class=1".into(),
        "data.train_per_class=1".into(),
        "data.test_per_class=1".into(),
        "data.normalize={ mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }".into(),
        "teacher.arch=\"resnet18\"".into(),
        format!(
            "teacher.weights={{ path = \"{}\", format = \"safetensors\" }}",
            weights.display()
        ),
        "teacher.taps=[{ name = \"t1\", stage = 1 }, { name = \"t2\", stage = 2 }]".into(),
        "blocks.0.cells=[{ layers = 1, hidden = 64 }, { layers = 2, hidden = 32 }]".into(),
        "blocks.1.cells=[{ layers = 1, hidden = 128 }, { layers = 2, hidden = 64 }]".into(),
        "search.max_mflops=1.9".into(),
    ];
    let mut a = vec!["run".to_string(), "tests/fixtures/tiny.toml".to_string()];
    a.extend(common::sets(
        &dir,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let out = run(&a);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("top3"), "{text}");
    assert!(!text.contains("teacher accuracy"), "{text}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(
            "its classifier has 10 classes and the data 1000, so it is used for its features"
        ),
        "{log}"
    );
    let r = dir.join("tiny-001");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("teacher/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["features_only"], true, "{state}");
    // Every path of both blocks rated (2 cells: 2 + 4 paths each).
    for i in 0..2 {
        let rated: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(r.join(format!("rate/block{i}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(rated["ratings"].as_array().unwrap().len(), 6, "{rated}");
    }
    assert!(r.join("report.md").exists());
}

/// `plan --measure` times the stages' own steps: from the same weights on the same batch, the
/// step it measures and the step the stage takes leave identical parameters (weight decay,
/// loss, path sampling and learning rate included), seen as identical outputs of every path
/// (parameter ids differ between two initialisations, so records are not compared byte for byte).
#[test]
fn the_measured_steps_are_the_stages_steps() {
    use burn::module::Module;
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use dnarun::nn::{Mode, Student, SuperBlock};
    use dnarun::run::measure;
    use dnarun::stages::step;

    let plan = common::plan(
        "tests/fixtures/tiny.toml",
        &["retrain.weight_decay=0.01", "distill.weight_decay=0.001"],
    );
    let ad = Device::flex().autodiff();
    let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    // Distillation of block 1: input the teacher's tap 0, target tap 1.
    let [c0, h0, w0] = plan.taps[0].shape;
    let [c1, h1, w1] = plan.taps[1].shape;
    let x = common::random([4, c0, h0, w0], &ad);
    let y = common::random([4, c1, h1, w1], &ad);
    let init = || dnarun::nn::initialize(|d| SuperBlock::new(&plan.space, 1, d), &ad, 7);
    let mut o1 = step::distill_optimizer(&plan);
    let staged = step::distill_step(&plan, 1, init(), &mut o1, x.clone(), y.clone(), 0, 0).0;
    let mut o2 = step::distill_optimizer(&plan);
    let measured = measure::distill_step(&plan, 1, init(), &mut o2, x.clone(), y);
    let before = init().valid();
    let (staged, measured) = (staged.valid(), measured.valid());
    let probe = x.inner();
    let mut changed = false;
    for path in plan.space.blocks[1].paths() {
        let a = values(staged.forward(&path, probe.clone(), Mode::Eval));
        let b = values(measured.forward(&path, probe.clone(), Mode::Eval));
        assert_eq!(
            a, b,
            "the measured distillation step is the stage's (path {path:?})"
        );
        changed |= a != values(before.forward(&path, probe.clone(), Mode::Eval));
    }
    assert!(changed, "the step changes the weights");

    // Retraining: a student of the first path of every block.
    let arch = dnarun::space::Architecture {
        paths: plan
            .space
            .blocks
            .iter()
            .map(|b| b.paths()[0].clone())
            .collect(),
    };
    let d = &plan.data;
    let x = common::random([4, d.channels, d.image_size, d.image_size], &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &ad);
    let init = || dnarun::nn::initialize(|dev| Student::new(&plan.space, &arch, dev), &ad, 7);
    let t = &plan.retrain.train;
    let mut o1 = step::classifier_optimizer(t);
    let staged = step::classifier_step(t, init(), &mut o1, x.clone(), y.clone(), 0).0;
    let mut o2 = step::classifier_optimizer(t);
    let measured = measure::training_step(t, init(), &mut o2, x.clone(), y).0;
    let logits = |m: &Student| {
        m.logits(x.clone().inner(), Mode::Eval)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (logits(&staged.valid()), logits(&measured.valid()));
    assert_eq!(a, b, "the measured training step is the stages'");
    assert_ne!(a, logits(&init().valid()), "the step changes the weights");
}

/// A run started from the recipe's own folder with a bare file name records an absolute recipe
/// directory (and the git commit) in its lock file, so the lock finds the data from anywhere:
/// the next stage runs from the lock file in another folder, and `plan` of the lock reads it.
#[test]
fn a_run_started_with_a_bare_file_name_continues_from_its_lock_file() {
    let dir = out_dir("bare-file-name");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut a = vec!["tiny.toml".to_string()];
    a.extend(common::sets(&dir, &["teacher.train.epochs=1"]));
    a.extend(["--stage".into(), "teacher".into()]);
    run_in(&fixtures, &a);
    let run_dir = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("dnarun.lock").exists())
        .expect("a run directory");
    let lock = std::fs::read_to_string(run_dir.join("dnarun.lock")).unwrap();
    let recorded: toml::Value = toml::from_str(&lock).unwrap();
    let recipe_dir = recorded["lock"]["recipe_dir"].as_str().unwrap();
    assert_eq!(
        Path::new(recipe_dir),
        fixtures.canonicalize().unwrap(),
        "the recipe directory is recorded absolute"
    );
    assert!(
        !recorded["lock"]["git_commit"].as_str().unwrap().is_empty(),
        "the git commit is found from a bare file name too"
    );
    // From elsewhere (the run directory itself): the lock resolves the data.
    let lock_path = run_dir.join("dnarun.lock");
    let lock = lock_path.display().to_string();
    let plan = run_in(&run_dir, &["plan".into(), lock.clone()]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("train split: ") && !text.contains("not readable here"),
        "{text}"
    );
    run_in(
        &run_dir,
        &[
            "run".into(),
            lock,
            "--run-dir".into(),
            run_dir.display().to_string(),
            "--stage".into(),
            "distill".into(),
        ],
    );
    assert!(run_dir.join("distill/block1/state.json").exists());
}

/// `distill.stop_when_stable`: a block whose stability tau stays at or above the threshold for
/// two evaluations stops distilling (here -1: at the third epoch, the second tau), and a
/// resumed run keeps it stopped; the rest of the pipeline runs from it.
#[test]
fn a_stable_block_stops_distilling_and_stays_stopped() {
    let dir = out_dir("stable");
    let extra = [
        "distill.epochs=6",
        "distill.stop_when_stable=-1.0",
        "retrain.epochs=1",
        "search.top_k=1",
    ];
    let mut a = args(&dir, &extra);
    a.extend(["--stage".into(), "distill".into()]);
    let out = run(&a);
    let r = dir.join("tiny-001");
    let state = |i: usize| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(r.join(format!("distill/block{i}/state.json"))).unwrap(),
        )
        .unwrap()
    };
    for i in 0..2 {
        assert_eq!(state(i)["epochs_done"], 3, "block {i}");
        assert_eq!(state(i)["stable"], true);
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stable (tau >= -1 twice): stops here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Resumed: nothing more is distilled; rating, search, retraining and the report follow.
    let mut a = args(&dir, &extra);
    a.extend(["--run-dir".into(), r.display().to_string()]);
    run(&a);
    for i in 0..2 {
        assert_eq!(state(i)["epochs_done"], 3, "block {i} after the resume");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["blocks"][0]["epochs"], 3);
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("distill/stability.json")).unwrap())
            .unwrap();
    assert_eq!(st["blocks"][1]["stopped_as_stable"], true);
}

/// `distill.sampling`: "cell" trains every cell once per step; "path" draws cells in proportion
/// to their paths (tiny's block 0: 2 and 4 paths, so 1/3 and 2/3), within sampling error.
#[test]
fn path_sampling_gives_every_path_the_same_share() {
    use dnarun::stages::step::sampled_paths;
    let cell = common::plan("tests/fixtures/tiny.toml", &[]);
    for s in 0..50 {
        let cells: Vec<usize> = sampled_paths(&cell, 0, 0, s)
            .iter()
            .map(|p| p.cell)
            .collect();
        assert_eq!(cells, [0, 1]);
    }
    let path = common::plan("tests/fixtures/tiny.toml", &["distill.sampling=\"path\""]);
    let (mut draws, mut deep) = (0usize, 0usize);
    let mut per_path = std::collections::BTreeMap::new();
    for e in 0..10 {
        for s in 0..300 {
            for p in sampled_paths(&path, 0, e, s) {
                draws += 1;
                deep += usize::from(p.cell == 1);
                *per_path.entry(format!("{p:?}")).or_insert(0usize) += 1;
            }
        }
    }
    let share = deep as f64 / draws as f64;
    let sigma = (2.0 / 9.0 / draws as f64).sqrt();
    assert!(
        (share - 2.0 / 3.0).abs() < 4.0 * sigma,
        "{share} of {draws}"
    );
    // Each of the 6 paths about a sixth of the draws.
    assert_eq!(per_path.len(), 6);
    let expected = draws as f64 / 6.0;
    let sd = (expected * 5.0 / 6.0).sqrt();
    for (p, n) in &per_path {
        assert!(
            (*n as f64 - expected).abs() < 4.0 * sd,
            "{p}: {n} of {draws}"
        );
    }
}

/// A planted answer: a random student of the space is the teacher, its block outputs the taps.
/// The supernet is distilled against them with the stages' own step and schedule (2,000 steps of
/// 32 images, the learning rate decayed every 200) and rated with the rating stage's own
/// function. What must hold: no path that costs as little as the planted path or less is rated
/// better (so the search, given the planted path's cost, picks it), at least 5 such paths exist,
/// and every path rated better begins with the planted first op. The planted path need not rank
/// first: a path that contains its ops can imitate it (a wider op in its place, or a deeper cell
/// whose extra MBConv passes its input through the residual). Its rank is printed: over seeds
/// 0-3 it was 2-8 of 39 in block 0 (the same cell with the wider op `c` always ahead) and 1 in
/// block 1, so the best 10 % the issue asked for does not hold in block 0 (docs/study.md,
/// experiment 7).
#[test]
fn distillation_and_rating_find_a_planted_path() {
    use burn::tensor::TensorData;
    use dnarun::nn::{Mode, Student, SuperBlock, initialize};
    use dnarun::space::{Architecture, Path as SPath};
    use dnarun::stages::rate::{RateData, rate_block};
    use dnarun::stages::step::{distill_optimizer, distill_step};
    use rand::{Rng, SeedableRng};

    let plan = common::plan(
        "tests/fixtures/tiny.toml",
        &[
            "ops.c={ kernel = 3, expansion = 4 }",
            "blocks.0.cells=[{ layers = 1, hidden = 12 }, { layers = 2, hidden = 12 }, { layers = 3, hidden = 12 }]",
            "blocks.1.cells=[{ layers = 1, hidden = 16 }, { layers = 2, hidden = 16 }, { layers = 3, hidden = 16 }]",
            "search.max_mflops=0.5",
        ],
    );
    let planted = Architecture {
        paths: vec![
            SPath {
                cell: 1,
                ops: vec![2, 0],
            },
            SPath {
                cell: 1,
                ops: vec![1, 2],
            },
        ],
    };
    let host = burn::tensor::Device::flex();
    let device = host.clone().autodiff();
    let teacher = initialize(|d| Student::new(&plan.space, &planted, d), &host, 11);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut images = |n: usize| {
        let v: Vec<f32> = (0..n * 16 * 16)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        burn::tensor::Tensor::<4>::from_data(TensorData::new(v, [n, 1, 16, 16]), &host)
    };
    // The planted student's block outputs. BatchNorm on the batch's statistics (its running
    // statistics untouched): a freshly initialised net in eval mode has near-constant outputs.
    let bn = Mode::Train { momentum: 0.0 };
    let taps = |x: burn::tensor::Tensor<4>| -> Vec<burn::tensor::Tensor<4>> {
        let mut h = dnarun::nn::layers::activate(
            teacher.stem.forward(x, bn),
            dnarun::space::Activation::Swish,
        );
        let mut out = Vec::new();
        for c in &teacher.cells {
            for l in &c.layers {
                h = l.forward(h, bn);
            }
            if let Some(a) = &c.adapter {
                h = a.forward(h, bn);
            }
            out.push(h.clone());
        }
        out
    };
    let held_out: Vec<burn::tensor::Tensor<4>> = (0..2).map(|_| images(64)).collect();
    let calibration = images(64);
    for (i, planted_path) in planted.paths.iter().enumerate() {
        let mut net = initialize(
            |d| SuperBlock::new(&plan.space, i, d),
            &device,
            3 + i as u64,
        );
        let mut optim = distill_optimizer(&plan);
        let input_of = |x: burn::tensor::Tensor<4>| {
            if i == 0 {
                x.clone()
            } else {
                taps(x)[i - 1].clone()
            }
        };
        for step in 0..2000 {
            let x = images(32);
            let (n, _) = distill_step(
                &plan,
                i,
                net,
                &mut optim,
                input_of(x.clone()).autodiff(),
                taps(x)[i].clone().autodiff(),
                step / 200,
                step,
            );
            net = n;
        }
        let net = burn::module::Module::valid(&net);
        let data = RateData {
            calibration: vec![input_of(calibration.clone())],
            inputs: held_out.iter().map(|x| input_of(x.clone())).collect(),
            targets: held_out
                .iter()
                .map(|x| taps(x.clone())[i].clone())
                .collect(),
            loss: plan.rate.loss,
        };
        let (mut rated, _) = rate_block(&net, &plan.space.blocks[i], &data);
        assert_eq!(rated.len(), 3 + 9 + 27);
        rated.sort_by(|a, b| a.1.total_cmp(&b.1));
        let rank = rated.iter().position(|(p, _)| p == planted_path).unwrap() + 1;
        let block = &plan.space.blocks[i];
        let name = |p: &SPath, r: f64| format!("{} {r:.4}", block.path_name(p));
        let better: Vec<String> = rated[..rank - 1].iter().map(|(p, r)| name(p, *r)).collect();
        eprintln!(
            "block {i}: planted {} ranks {rank} of 39; rated better: {better:?}",
            name(planted_path, rated[rank - 1].1)
        );
        let own = block.path_cost(planted_path).macs;
        let no_dearer = rated
            .iter()
            .filter(|(p, _)| p != planted_path && block.path_cost(p).macs <= own)
            .count();
        assert!(
            no_dearer >= 5,
            "block {i}: only {no_dearer} paths cost no more"
        );
        for (p, r) in &rated[..rank - 1] {
            assert!(
                block.path_cost(p).macs > own,
                "block {i}: {} costs no more than the planted path and is rated better",
                name(p, *r)
            );
            assert_eq!(
                p.ops[0],
                planted_path.ops[0],
                "block {i}: {} is rated better without the planted first op",
                name(p, *r)
            );
        }
    }
}

/// `dnarun export RUN_DIR --format onnx`: ONNX Runtime (PyPI, in the suite's MLflow venv) gives
/// the retrained top-1's logits on the real test images within 1e-4 of dnarun's, and the same
/// test accuracy as the run's report.
#[test]
fn an_exported_onnx_model_gives_dnarun_s_logits_in_onnx_runtime() {
    use dnarun::data::Preprocess;
    use dnarun::nn::Mode;
    let dir = out_dir("onnx");
    run(&args(&dir, &["search.top_k=1", "retrain.epochs=4"]));
    let r = dir.join("tiny-001");
    let model = dir.join("top1.onnx");
    let out = run(&[
        "export".into(),
        r.display().to_string(),
        "--format".into(),
        "onnx".into(),
        "-o".into(),
        model.display().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("top1.onnx"));
    // dnarun's logits on every test image the run tested on.
    let arch = r.join("retrain/top1/arch.toml");
    let (_, plan, student) = dnarun::run::commands::load_student(&arch).unwrap();
    let data = dnarun::data::load(&plan).unwrap();
    let batch = Preprocess::new(&plan.data, false)
        .batch(&data.test, &data.test_idx, 0)
        .unwrap();
    let device = burn::tensor::Device::flex();
    let x = batch.images(&device);
    let input = dnarun::nn::read_back(x.clone());
    let logits = dnarun::nn::read_back(student.logits(x, Mode::Eval));
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("input.f32"), bytes(&input)).unwrap();
    std::fs::write(dir.join("logits.f32"), bytes(&logits)).unwrap();
    let labels: Vec<String> = batch.labels.iter().map(ToString::to_string).collect();
    std::fs::write(dir.join("labels.txt"), labels.join(" ")).unwrap();
    let python = Path::new(&std::env::var("DNARUN_TEST_MLFLOW").unwrap()).with_file_name("python");
    let script = r#"
import json, sys
import numpy as np, onnxruntime as ort
d = sys.argv[1]
s = ort.InferenceSession(d + "/top1.onnx", providers=["CPUExecutionProvider"])
shape = [i for i in s.get_inputs()[0].shape]
labels = np.array([int(v) for v in open(d + "/labels.txt").read().split()])
x = np.fromfile(d + "/input.f32", dtype="<f4").reshape([len(labels)] + shape[1:])
ours = np.fromfile(d + "/logits.f32", dtype="<f4").reshape(len(labels), -1)
theirs = s.run(["logits"], {"input": x})[0]
print(json.dumps({
    "max_abs_diff": float(np.abs(theirs - ours).max()),
    "same_predictions": bool((theirs.argmax(1) == ours.argmax(1)).all()),
    "spread": float(ours.std(0).mean()),
    "classes_predicted": int(len(set(ours.argmax(1).tolist()))),
    "accuracy": float((theirs.argmax(1) == labels).mean()),
    "meta": s.get_modelmeta().custom_metadata_map,
}))
"#;
    let out = Command::new(python)
        .args(["-c", script, &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{v}");
    assert!(v["max_abs_diff"].as_f64().unwrap() < 1e-4, "{v}");
    assert_eq!(v["same_predictions"], true, "{v}");
    // Logits that differ from image to image (not a constant the comparison would pass anyway).
    assert!(v["spread"].as_f64().unwrap() > 1e-2, "{v}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    let reported = report["architectures"][0]["accuracy"].as_f64().unwrap();
    assert!(
        (v["accuracy"].as_f64().unwrap() - reported).abs() < 1e-9,
        "{v} vs {reported}"
    );
    assert_eq!(v["meta"]["mean"], "0.286");
    assert!(
        v["meta"]["normalization"]
            .as_str()
            .unwrap()
            .contains("pixel / 255 - mean")
    );
}

/// `sweep.json` of a sweep directory.
fn sweep_state(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

fn reused(member: &serde_json::Value) -> Vec<String> {
    member["reused"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_sweep_computes_shared_stages_once_and_rates_as_independent_runs() {
    let dir = out_dir("sweep");
    let extra = ["search.top_k=1", "retrain.epochs=1"];
    let mut a = vec!["sweep".to_string()];
    a.extend(args(
        &dir,
        &[
            extra[0],
            extra[1],
            r#"sweep.grid={"rate.calibration_batches"=[1,2]}"#,
        ],
    ));
    let out = run(&a);
    let sweep = dir.join("tiny-sweep");
    let state = sweep_state(&sweep);
    let members = state["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m["status"] == "finished"), "{state}");
    assert!(reused(&members[0]).is_empty(), "the first member computes");
    let second = reused(&members[1]);
    for unit in [
        "teacher",
        "distill/block0",
        "distill/block1",
        "retrain/top1",
    ] {
        assert!(second.contains(&unit.to_string()), "{unit} in {second:?}");
    }
    assert!(
        !second.iter().any(|u| u.starts_with("rate/")),
        "another calibration rates again: {second:?}"
    );
    // The reused units are hard links of the first member's files, not copies.
    let run_of = |k: usize| PathBuf::from(members[k]["run_dir"].as_str().unwrap());
    let meta = |p: PathBuf| std::fs::metadata(p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta(run_of(0).join("teacher/model.bpk")).ino(),
        meta(run_of(1).join("teacher/model.bpk")).ino()
    );
    // The lock file records where each unit came from.
    let lock = std::fs::read_to_string(run_of(1).join("dnarun.lock")).unwrap();
    assert!(
        lock.contains("[stages.\"distill/block0\"]") && lock.contains("reused_from"),
        "{lock}"
    );
    // Each member rates exactly as an independent run with its settings, to the bit.
    for (k, batches) in [(0, 1), (1, 2)] {
        let alone = out_dir(&format!("sweep-alone-{batches}"));
        let set = format!("rate.calibration_batches={batches}");
        let mut a = args(&alone, &[extra[0], extra[1], &set]);
        a.push("--no-cache".into());
        run(&a);
        assert_eq!(ratings(&alone.join("tiny-001")), ratings(&run_of(k)));
    }
    let md = std::fs::read_to_string(sweep.join("sweep.md")).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains("| rate.calibration_batches=1 | finished |")
            && md.contains("| rate.calibration_batches=2 | finished |")
            && stdout.contains(&md),
        "{md}"
    );
    // The same command again has nothing to do.
    let again = run(&a_sweep(&dir, &extra));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!err.contains("sweep member"), "{err}");
    assert_eq!(sweep_state(&sweep)["members"], state["members"]);
}

fn a_sweep(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["sweep".to_string()];
    let mut e: Vec<&str> = extra.to_vec();
    e.push(r#"sweep.grid={"rate.calibration_batches"=[1,2]}"#);
    a.extend(args(dir, &e));
    a
}

#[test]
fn a_failing_member_does_not_stop_a_sweep_and_a_killed_sweep_resumes() {
    let dir = out_dir("sweep-fail");
    // Member 1 fails before it has a run directory, member 4 after (its weights are missing).
    let members = r#"sweep.members=[{"search.max_mflops"=0.0001}, {"rate.calibration_batches"=2}, {"distill.epochs"=40}, {"teacher.weights"={path="/nonexistent.safetensors",format="safetensors"}}]"#;
    let mut a = vec!["sweep".to_string()];
    a.extend(args(&dir, &["search.top_k=1", "retrain.epochs=1", members]));
    let mut child = Command::new(BIN)
        .args(&a)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Member 3 (the second run directory) distilling: kill the whole sweep.
    let state = dir.join("tiny-sweep/tiny-002/distill/block1/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&state)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .is_none_or(|d| d < 3)
    {
        assert!(Instant::now() < deadline, "member 3 did not start");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended first");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let sweep = dir.join("tiny-sweep");
    let before = sweep_state(&sweep);
    // A failed member's status and the message it recorded.
    let failed_with = |state: &serde_json::Value, k: usize, text: &str| {
        let m = &state["members"][k];
        assert_eq!(m["status"], "failed", "{m}");
        assert!(m["error"].as_str().unwrap().contains(text), "{m}");
    };
    let resume = || {
        Command::new(BIN)
            .args(["resume", &sweep.display().to_string()])
            .output()
            .unwrap()
    };
    failed_with(&before, 0, "search.max_mflops");
    assert_eq!(before["members"][1]["status"], "finished");
    assert_eq!(before["members"][2]["status"], "running");
    let status = run(&["status".to_string(), sweep.display().to_string()]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("| distill.epochs=40 | running |"),
        "{status}"
    );
    // `dnarun resume SWEEP_DIR` finishes it: the finished member is kept, the killed one
    // continues in its run directory; the failed one fails again, and the exit code says so.
    let out = resume();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sweep member 1 of 4")
            && !err.contains("sweep member 2 of 4")
            && err.contains("sweep member 3 of 4")
            && err.contains("sweep member 4 of 4")
            && err.contains("2 member(s) of the sweep failed"),
        "{err}"
    );
    let after = sweep_state(&sweep);
    assert_eq!(after["members"][1], before["members"][1]);
    assert_eq!(after["members"][2]["status"], "finished");
    assert_eq!(
        after["members"][2]["run_dir"],
        before["members"][2]["run_dir"]
    );
    failed_with(&after, 3, "/nonexistent.safetensors");
    // Resumed again, member 4 fails again in the run directory its first attempt made.
    assert_eq!(resume().status.code(), Some(1));
    assert_eq!(
        sweep_state(&sweep)["members"][3]["run_dir"],
        after["members"][3]["run_dir"]
    );
    assert!(!sweep.join("tiny-004").exists(), "no new run directory");
    let md = std::fs::read_to_string(sweep.join("sweep.md")).unwrap();
    assert!(md.contains("failed: "), "{md}");
}

/// The stage-cache keys of the tiny recipe's units with `sets`: teacher, distill/blockI,
/// rate/blockI, and retrain/top1 (a fixed architecture).
fn unit_keys(sets: &[&str]) -> std::collections::BTreeMap<String, String> {
    let plan = common::plan("tests/fixtures/tiny.toml", sets);
    let data = dnarun::data::load(&plan).unwrap();
    let keys = dnarun::stages::StageKeys::of(&plan, &data);
    let mut out = std::collections::BTreeMap::new();
    out.insert("teacher".to_string(), keys.teacher.0.clone());
    for i in 0..2 {
        out.insert(format!("distill/block{i}"), keys.distill[i].0.clone());
        out.insert(format!("rate/block{i}"), keys.rate[i].0.clone());
    }
    let top1 = dnarun::stages::search::Chosen {
        name: "top1".into(),
        paths: vec!["c1:a-b".into(), "c0:b".into()],
        rating: 0.0,
        macs: 0,
        flops_dna: 0,
        params: 0,
        predicted_accuracy: None,
        latency_ms: None,
    };
    out.insert(
        "retrain/top1".into(),
        dnarun::stages::retrain::key(&plan, &data, &top1).0,
    );
    out
}

#[test]
fn each_recipe_key_recomputes_exactly_the_stages_that_read_it() {
    // Units: T teacher, D0 D1 distillation, R0 R1 ratings, N a retrained net. A teacher's key is
    // in its blocks' distillation keys, and a distillation's in its ratings'.
    const ALL: &str = "T D0 D1 R0 R1 N";
    const BLOCKS: &str = "T D0 D1 R0 R1";
    const DR: &str = "D0 D1 R0 R1";
    let cases: &[(&str, &str)] = &[
        // experiment
        ("experiment.name=\"other\"", ""),
        ("experiment.output_dir=\"elsewhere\"", ""),
        ("experiment.cache_dir=\"elsewhere\"", ""),
        ("experiment.seed=4", ALL),
        // data: how images become tensors, and which images each stage reads
        ("data.batch_size=16", ALL),
        ("data.augment={crop_padding=2}", ALL),
        ("data.normalize={mean=[0.5], std=[0.5]}", ALL),
        ("data.eval_crop=0.9", ALL),
        ("data.samples_per_class=10", DR),
        ("data.rate_per_class=5", DR),
        ("data.train_per_class=30", "T D0 D1 R0 R1 N"),
        ("data.test_per_class=10", "T D0 D1 R0 R1 N"),
        ("data.skip_bad=true", ""),
        ("data.cache=false", ""),
        ("data.workers=1", ""),
        // teacher
        ("teacher.train={epochs=3, lr=0.01}", BLOCKS),
        ("teacher.eval_mode=false", BLOCKS),
        ("teacher.cnn.head=48", BLOCKS),
        // student, ops, blocks
        ("student.stem=16", "D0 R0 N"),
        ("student.stem_stride=1", "D0 R0 N"),
        ("student.head=48", "N"),
        ("ops.a.kernel=5", "D0 D1 R0 R1 N"),
        ("blocks.0.lr=0.01", "D0 R0"),
        ("blocks.0.ops=[\"a\"]", "D0 R0 N"),
        (
            "blocks.1.cells=[{layers=1, hidden=16}, {layers=2, hidden=10}]",
            "D1 R1 N",
        ),
        // distill
        ("distill.epochs=4", DR),
        ("distill.batch_size=16", DR),
        ("distill.lr=0.01", DR),
        ("distill.lr_decay=0.5", DR),
        ("distill.weight_decay=0.001", DR),
        ("distill.max_steps=3", DR),
        ("distill.sampling=\"path\"", DR),
        ("distill.stability={every=2}", DR),
        ("distill.stop_when_stable=0.9", DR),
        // rate
        ("rate.batch_size=16", "R0 R1"),
        ("rate.calibration_batches=2", "R0 R1"),
        ("rate.max_images=20", "R0 R1"),
        ("rate.loss=\"relative-mse\"", "R0 R1"),
        // search: not cached (milliseconds), and a retrained net depends on its architecture only
        ("search.max_mflops=0.12", ""),
        ("search.top_k=2", ""),
        ("search.flops_convention=\"macs\"", ""),
        ("search.objective=\"rating\"", ""),
        ("search.max_mparams=1.0", ""),
        // retrain
        ("retrain.epochs=2", "N"),
        ("retrain.lr=0.01", "N"),
        ("retrain.batch_size=16", "N"),
        ("retrain.lr_decay=0.5", "N"),
        ("retrain.weight_decay=0.001", "N"),
        ("retrain.max_steps=3", "N"),
        ("retrain.random_controls=2", ""),
        // what a study samples, where things go, what computes
        ("study.architectures=5", ""),
        ("study.seeds=3", ""),
        ("study.band=0.5", ""),
        ("study.ridge=2.0", ""),
        ("study.sample=\"space\"", ""),
        ("tracking.experiment=\"other\"", ""),
        ("tracking.uri=\"file:elsewhere\"", ""),
        ("tracking.fallback_to_local=false", ""),
        ("tracking.system_metrics_seconds=5", ""),
        ("runtime.devices=[\"cpu\", \"cpu\"]", ""),
        ("sweep.grid={\"rate.loss\"=[\"fair\"]}", ""),
    ];
    // Keys this test does not change, and why.
    let elsewhere: &[(&str, &str)] = &[
        ("experiment.schema_version", "one version exists"),
        ("extends", "merges into the keys above"),
        ("data.format", "which files: in the data fingerprint"),
        ("data.train", "which files: in the data fingerprint"),
        ("data.test", "which files: in the data fingerprint"),
        ("data.channels", "fixed by the files"),
        ("data.classes", "fixed by the labels"),
        ("data.image_size", "fixed with the taps' shapes"),
        ("teacher.arch", "a zoo teacher needs its weights file"),
        (
            "teacher.weights",
            "the file's contents are in the teacher's key",
        ),
        ("blocks.target", "a tap's position: teacher.taps"),
        (
            "teacher.taps",
            "their shapes are fixed by the teacher; in the blocks' keys",
        ),
        ("blocks.input", "the block's space, as blocks.cells"),
        ("blocks.adapter", "the block's space, as blocks.cells"),
        ("blocks.cells", "changed above"),
        ("search.predictor", "needs a study's predictor file"),
        (
            "search.latency_table",
            "needs a latency table; the search is not cached",
        ),
        (
            "search.max_latency_ms",
            "needs a latency table; the search is not cached",
        ),
        ("study.files", "architecture files"),
        ("sweep.members", "as sweep.grid"),
    ];
    let base = unit_keys(&[]);
    let name = |u: &str| match u {
        "teacher" => "T".to_string(),
        "retrain/top1" => "N".into(),
        u => {
            let (stage, block) = u.split_once("/block").unwrap();
            format!("{}{block}", &stage[..1].to_uppercase())
        }
    };
    let mut wrong = Vec::new();
    for (set, expected) in cases {
        let keys = unit_keys(&[set]);
        let mut changed: Vec<String> = base
            .iter()
            .filter(|(u, k)| keys[*u] != **k)
            .map(|(u, _)| name(u))
            .collect();
        changed.sort();
        let mut want: Vec<String> = expected.split_whitespace().map(String::from).collect();
        want.sort();
        if changed != want {
            wrong.push(format!("{set}: recomputes {changed:?}, should {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every key of the schema is changed above or named with a reason.
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/recipe.schema.json").unwrap())
            .unwrap();
    let mut missing = Vec::new();
    for key in schema_keys(&schema) {
        let covered =
            cases.iter().any(|(s, _)| {
                s.starts_with(&format!("{key}=")) || s.starts_with(&format!("{key}."))
            }) || cases.iter().any(|(s, _)| {
                let (section, field) = key.split_once('.').unwrap_or((&key, ""));
                !field.is_empty()
                    && s.starts_with(&format!("{section}."))
                    && (s.contains(&format!(".{field}=")) || s.contains(&format!(".{field}.")))
            }) || elsewhere.iter().any(|(k, _)| *k == key);
        if !covered {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "recipe keys no case changes: {missing:?}; add each to `cases` with the units that read it"
    );
}

/// `section.key` for every key of the recipe schema (array items and maps by their fields).
fn schema_keys(schema: &serde_json::Value) -> Vec<String> {
    let defs = &schema["$defs"];
    fn resolve<'a>(v: &'a serde_json::Value, defs: &'a serde_json::Value) -> &'a serde_json::Value {
        if let Some(r) = v["$ref"].as_str() {
            return resolve(&defs[r.rsplit('/').next().unwrap()], defs);
        }
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(all) = v[k].as_array() {
                for x in all {
                    let r = resolve(x, defs);
                    if r.get("properties").is_some() {
                        return r;
                    }
                }
            }
        }
        if v["type"] == "array" && v.get("items").is_some() {
            return resolve(&v["items"], defs);
        }
        v
    }
    let mut out = Vec::new();
    for (section, v) in schema["properties"].as_object().unwrap() {
        match resolve(v, defs)["properties"].as_object() {
            Some(props) => out.extend(props.keys().map(|k| format!("{section}.{k}"))),
            None => out.push(section.clone()),
        }
    }
    out
}

#[test]
fn a_latency_table_is_validated_and_is_an_exact_budget() {
    let dir = out_dir("latency");
    let table = dir.join("latency.json");
    let t = table.display().to_string();
    let out = run(&[
        "latency".into(),
        "tests/fixtures/tiny.toml".into(),
        "--validate".into(),
        "6".into(),
        "--repeats".into(),
        "5".into(),
        "-o".into(),
        t.clone(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["batch"], 1);
    let entries = v["entries"].as_object().unwrap();
    // 2 blocks x (1 + 2 layers) x 2 ops, the stem and the head; no adapters in the tiny space.
    assert!(
        entries.keys().any(|k| k.starts_with("stem"))
            && entries.keys().any(|k| k.starts_with("head"))
    );
    assert!(entries.len() >= 8, "{entries:?}");
    assert!(
        entries
            .values()
            .all(|e| e["median_ms"].as_f64().unwrap() > 0.0)
    );
    let val = &v["validation"];
    assert_eq!(val["architectures"], 6);
    for k in ["kendall_tau", "mean_rel_error", "max_rel_error"] {
        assert!(val[k].is_number(), "{k}: {val}");
    }
    let md = std::fs::read_to_string(dir.join("latency.md")).unwrap();
    assert!(
        md.contains("## Validation: 6 students measured whole"),
        "{md}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Predicted students"));
    // The plan shows the space's predicted range and the table's device.
    let set_table = format!("search.latency_table=\"{t}\"");
    let plan = run(&[
        "plan".into(),
        "tests/fixtures/tiny.toml".into(),
        "--set".into(),
        set_table.clone(),
    ]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("latency table `") && plan.contains("predicted students"),
        "{plan}"
    );
    // A table measured on another device is accepted, and the plan says which it describes.
    let mut other = v.clone();
    other["device"] = "cuda:0".into();
    let other_file = dir.join("latency-cuda.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let plan = run(&[
        "plan".into(),
        "tests/fixtures/tiny.toml".into(),
        "--set".into(),
        format!("search.latency_table=\"{}\"", other_file.display()),
    ]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("the table describes `cuda:0`, not this run's `cpu`"),
        "{plan}"
    );
    // A budget between the fastest and the slowest validated students: the found nets' predicted
    // latency is under it, and the report measures them (the run's device is the table's).
    let mut predicted: Vec<f64> = val["nets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[1].as_f64().unwrap())
        .collect();
    predicted.sort_by(f64::total_cmp);
    let budget = predicted[3];
    let set_budget = format!("search.max_latency_ms={budget}");
    run(&args(
        &dir,
        &[
            &set_table,
            &set_budget,
            "search.max_mflops=1.0",
            "search.top_k=2",
            "retrain.epochs=1",
        ],
    ));
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tiny-001/search/result.json")).unwrap(),
    )
    .unwrap();
    for n in result["top"].as_array().unwrap() {
        assert!(n["latency_ms"].as_f64().unwrap() <= budget + 1e-9, "{n}");
    }
    // The front against latency, drawn.
    assert!(!result["latency_front"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(dir.join("tiny-001/search/pareto-latency.svg")).unwrap();
    assert!(
        svg.contains("latency_ms") && svg.contains("<polyline"),
        "{svg}"
    );
    let arch = std::fs::read_to_string(dir.join("tiny-001/retrain/top1/arch.toml")).unwrap();
    assert!(arch.contains("latency_ms = "), "{arch}");
    // The table is an artifact of the run in MLflow, its validation the run's metrics.
    let store = common::files_under(&dir.join("mlruns"));
    assert!(
        store
            .iter()
            .any(|f| f.ends_with("artifacts/latency/latency.json")),
        "{store:?}"
    );
    for m in ["latency_table_kendall_tau", "latency_table_mean_rel_error"] {
        assert!(
            store.iter().any(|f| f.ends_with(format!("metrics/{m}"))),
            "{m}"
        );
    }
    let report = std::fs::read_to_string(dir.join("tiny-001/report.md")).unwrap();
    assert!(
        report.contains("Latency by the table") && report.contains("| top1 |"),
        "{report}"
    );
    // A budget below the fastest student, and a budget without a table: recipe errors.
    for sets in [
        vec![
            set_table.clone(),
            "search.max_latency_ms=0.000001".to_string(),
        ],
        vec!["search.max_latency_ms=1.0".to_string()],
    ] {
        let mut a = vec!["validate".to_string(), "tests/fixtures/tiny.toml".into()];
        for s in &sets {
            a.extend(["--set".into(), s.clone()]);
        }
        let out = Command::new(BIN).args(&a).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("search.max_latency_ms"), "{err}");
    }
}
