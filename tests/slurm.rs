//! Running the blocks as Slurm job arrays, against a real single-node Slurm (started by
//! `scripts/test` through `scripts/slurm-up`): the result equals a local run with the same seed,
//! and a cancelled block task resubmitted alone finishes the run with nothing lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dnarun");

fn slurm_available() {
    assert!(
        std::env::var_os("SLURM_CONF").is_some(),
        "SLURM_CONF is not set: run the suite with `scripts/test`, which starts a single-node Slurm"
    );
}

mod common;

use common::sets;

fn out_dir(name: &str) -> PathBuf {
    common::out_dir("slurm-tests", name)
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn submit(recipe: &str, args: &[String]) -> (PathBuf, String) {
    submit_in(Path::new("."), recipe, args)
}

/// [`submit`] from the folder `cwd`.
fn submit_in(cwd: &Path, recipe: &str, args: &[String]) -> (PathBuf, String) {
    let stdout = ok(Command::new(BIN)
        .current_dir(cwd)
        .args(["submit", recipe, "--slurm"])
        .args(args)
        .output()
        .unwrap());
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run directory `"))
        .unwrap()
        .trim_end_matches('`')
        .to_string();
    (PathBuf::from(dir), stdout)
}

fn wait_for(path: &Path, secs: u64, run_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        if Instant::now() > deadline {
            let status = Command::new(BIN)
                .args(["status", &run_dir.display().to_string()])
                .output()
                .unwrap();
            panic!(
                "`{}` did not appear; status:\n{}",
                path.display(),
                String::from_utf8_lossy(&status.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ratings(run_dir: &Path) -> Vec<String> {
    (0..2)
        .map(|i| std::fs::read_to_string(run_dir.join(format!("rate/block{i}.json"))).unwrap())
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            v["ratings"].to_string()
        })
        .collect()
}

fn chosen(run_dir: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("search/result.json")).unwrap())
            .unwrap();
    v["top"].clone()
}

/// A run submitted to Slurm (from the recipe's folder, with a bare file name) computes what a
/// local run computes.
#[test]
fn a_slurm_run_equals_a_local_run() {
    slurm_available();
    let local = out_dir("local");
    ok(Command::new(BIN)
        .arg("tests/fixtures/tiny.toml")
        .args(sets(&local, &[]))
        .output()
        .unwrap());
    // Submitted from the recipe's own folder with a bare file name: every task finds the data
    // through the lock file.
    let dir = out_dir("submitted");
    let (run, stdout) = submit_in(Path::new("tests/fixtures"), "tiny.toml", &sets(&dir, &[]));
    for stage in ["teacher", "distill", "rate", "finish"] {
        assert!(stdout.contains(&format!("  {stage:<8} job ")), "{stdout}");
        assert!(run.join(format!("slurm/{stage}.sbatch")).exists());
    }
    let distill = std::fs::read_to_string(run.join("slurm/distill.sbatch")).unwrap();
    assert!(
        distill.contains("#SBATCH --array=0-1")
            && distill.contains("--stage distill --block \"$SLURM_ARRAY_TASK_ID\""),
        "{distill}"
    );
    wait_for(&run.join("report.json"), 600, &run);
    assert_eq!(
        ratings(&run),
        ratings(&local.join("tiny-001")),
        "same seed: the same ratings"
    );
    assert_eq!(
        chosen(&run),
        chosen(&local.join("tiny-001")),
        "and the same architectures"
    );
    let status = ok(Command::new(BIN)
        .args(["status", &run.display().to_string()])
        .output()
        .unwrap());
    assert!(
        status.contains("block 1      distill done; rate done")
            && status.contains("report       done"),
        "{status}"
    );
    // Each block logged into its own child run of the one parent.
    let ids = std::fs::read_dir(run.join("tracking")).unwrap().count();
    assert_eq!(
        ids, 10,
        "parent, teacher, 2 distill, 2 rate, search, 3 retrain"
    );
}

#[test]
fn a_dry_run_only_writes_the_scripts() {
    slurm_available();
    let dir = out_dir("dry");
    let (run, stdout) = submit(
        "tests/fixtures/tiny.toml",
        &[
            sets(&dir, &[]),
            vec![
                "--dry-run".into(),
                "--partition".into(),
                "debug".into(),
                "--time".into(),
                "0:30:00".into(),
            ],
        ]
        .concat(),
    );
    assert!(stdout.contains("dry run: nothing submitted"), "{stdout}");
    let rate = std::fs::read_to_string(run.join("slurm/rate.sbatch")).unwrap();
    assert!(
        rate.contains("#SBATCH --partition=debug") && rate.contains("#SBATCH --time=0:30:00"),
        "{rate}"
    );
    assert!(!run.join("slurm/jobs.json").exists());
    // No MLflow run is left behind (it would stay RUNNING for ever).
    assert!(!run.join("tracking/parent.id").exists());
    let runs: Vec<_> = common::files_under(&dir.join("mlruns"))
        .into_iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "tags"))
        .collect();
    assert!(runs.is_empty(), "{runs:?}");
    // Jobs that would hold GPUs and compute on the CPU are submitted with a warning.
    let out = Command::new(BIN)
        .args(["submit", "tests/fixtures/tiny.toml", "--slurm", "--dry-run"])
        .args(sets(&out_dir("dry-gpus"), &[]))
        .args(["--gpus-per-task", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: `--gpus-per-task 1` holds GPUs, but `runtime.devices` is [cpu]"),
        "{err}"
    );
}

/// `submit` opens no device (the submitting machine need not have the compute nodes'); it warns
/// where the jobs' GPUs and `runtime.devices` disagree, both ways.
#[test]
fn submit_warns_when_gpus_and_devices_disagree() {
    use dnarun::plan::DeviceSpec::{Cpu, Cuda, Wgpu};
    use dnarun::slurm::device_warnings;
    assert!(device_warnings(&[Cpu], None).is_empty());
    assert!(device_warnings(&[Cuda(0)], Some(1)).is_empty());
    let w = device_warnings(&[Cpu, Cpu], Some(2));
    assert!(w[0].contains("the jobs would compute on the CPU"), "{w:?}");
    let w = device_warnings(&[Wgpu(0)], None);
    assert!(
        w[0].contains("`runtime.devices` computes on wgpu:0, but the jobs ask for no GPU"),
        "{w:?}"
    );
}

#[test]
fn a_cancelled_block_task_resubmitted_alone_loses_nothing() {
    slurm_available();
    let extra = ["distill.epochs=60", "search.top_k=1", "retrain.epochs=1"];
    let local = out_dir("cancel-local");
    ok(Command::new(BIN)
        .arg("tests/fixtures/tiny.toml")
        .args(sets(&local, &extra))
        .output()
        .unwrap());
    let dir = out_dir("cancel");
    let (run, _) = submit("tests/fixtures/tiny.toml", &sets(&dir, &extra));
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("slurm/jobs.json")).unwrap())
            .unwrap();
    let distill = jobs["jobs"]["distill"].as_str().unwrap().to_string();
    let state = run.join("distill/block1/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"epochs_done\": 3,")) {
        assert!(Instant::now() < deadline, "block 1 did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(Command::new("scancel")
        .arg(format!("{distill}_1"))
        .output()
        .unwrap());
    // The rest of the chain can no longer run; status says what happened to block 1.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = ok(Command::new(BIN)
            .args(["status", &run.display().to_string()])
            .output()
            .unwrap());
        if status.contains("block 1      distill failed or cancelled") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let lock = run.join("dnarun.lock").display().to_string();
    let (again, stdout) = submit(&lock, &["--run-dir".to_string(), run.display().to_string()]);
    assert_eq!(again, run.canonicalize().unwrap());
    assert!(
        !stdout.contains("teacher  job"),
        "the finished teacher is not resubmitted: {stdout}"
    );
    wait_for(&run.join("report.json"), 600, &run);
    assert_eq!(
        ratings(&run),
        ratings(&local.join("tiny-001")),
        "the resumed block gives the same ratings"
    );
    let log = std::fs::read_to_string(run.join("slurm/distill.sbatch")).unwrap();
    assert!(log.contains("--run-dir"));
}

#[test]
fn values_that_could_change_a_batch_script_are_refused() {
    // Checked before anything is written or submitted, so no Slurm is needed.
    let dir = out_dir("injection");
    let mut seen = Vec::new();
    let mut keep = |err: &str| seen.push(err.replace(&dir.display().to_string(), "[DIR]"));
    for (flag, value) in [
        ("--partition", "debug\n#SBATCH --wrap=rm"),
        ("--time", "1:00:00; rm -rf /"),
        ("--mem", "4G --exclusive"),
    ] {
        let out = Command::new(BIN)
            .args([
                "submit",
                "tests/fixtures/tiny.toml",
                "--slurm",
                "--dry-run",
                flag,
                value,
            ])
            .args(sets(&dir, &[]))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("`{flag}` is")), "{err}");
        keep(&err);
    }
    let spaced = dir.join("a dir with space");
    let out = Command::new(BIN)
        .args(["submit", "tests/fixtures/tiny.toml", "--slurm", "--dry-run"])
        .args(sets(&spaced, &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot take"));
    keep(&String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["submit", "tests/fixtures/tiny.toml", "--slurm", "--dry-run"])
        .args(sets(&dir, &["experiment.name=\"x\\n#SBATCH --wrap=id\""]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`experiment.name` is"));
    keep(&String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!(seen.join("\n"));
}

/// Slurm's time limit: the scripts ask for SIGTERM before it (`--signal=B:TERM@120`), dnarun
/// saves the block where it is and stops; the resubmitted task continues from there.
#[test]
fn a_task_at_its_time_limit_saves_and_the_resubmitted_task_resumes() {
    slurm_available();
    // Enough epochs that the task cannot finish within its 2-minute limit.
    let extra = [
        "distill.epochs=100000",
        "search.top_k=1",
        "retrain.epochs=1",
    ];
    let dir = out_dir("time-limit");
    let mut args = sets(&dir, &extra);
    args.extend(["--time".into(), "2".into()]);
    let (run, _) = submit("tests/fixtures/tiny.toml", &args);
    let script = std::fs::read_to_string(run.join("slurm/distill.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --signal=B:TERM@120"), "{script}");
    assert!(script.contains("#SBATCH --time=2"), "{script}");
    // Wait for the distillation tasks to stop on the signal (well before the limit kills them).
    let log = run.join("slurm/logs/distill-0.out");
    let deadline = Instant::now() + Duration::from_secs(240);
    while !std::fs::read_to_string(&log)
        .is_ok_and(|t| t.contains("everything finished so far is saved"))
    {
        assert!(
            Instant::now() < deadline,
            "block 0 did not stop on SIGTERM: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let epochs = |i: usize| -> u64 {
        let t = std::fs::read_to_string(run.join(format!("distill/block{i}/state.json"))).unwrap();
        serde_json::from_str::<serde_json::Value>(&t).unwrap()["epochs_done"]
            .as_u64()
            .unwrap()
    };
    let saved = epochs(0);
    assert!(saved > 0, "nothing was saved before the stop");
    // Resubmitted (without a time limit), block 0 continues from the saved epoch.
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("slurm/jobs.json")).unwrap())
            .unwrap();
    for (_, id) in jobs["jobs"].as_object().unwrap() {
        let _ = Command::new("scancel").arg(id.as_str().unwrap()).output();
    }
    let lock = run.join("dnarun.lock").display().to_string();
    submit(&lock, &["--run-dir".to_string(), run.display().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while epochs(0) <= saved {
        assert!(Instant::now() < deadline, "block 0 did not continue");
        std::thread::sleep(Duration::from_millis(200));
    }
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("slurm/jobs.json")).unwrap())
            .unwrap();
    for (_, id) in jobs["jobs"].as_object().unwrap() {
        let _ = Command::new("scancel").arg(id.as_str().unwrap()).output();
    }
    let resumed = std::fs::read_to_string(run.join("slurm/logs/distill-0.out")).unwrap();
    assert!(
        !resumed.contains("epoch 1 loss"),
        "the resubmitted task started over: {resumed}"
    );
}

/// `submit --slurm --study`: after the search, one array task per retrained net (several in
/// one run directory at once), then the analysis; the study equals a local `dnarun study`.
#[test]
fn a_study_on_slurm_retrains_one_net_per_task_and_equals_a_local_study() {
    slurm_available();
    let extra = [
        "study.architectures=3",
        "study.seeds=2",
        "study.band=0.6",
        "retrain.epochs=1",
        "search.top_k=1",
    ];
    let local = out_dir("study-local");
    ok(Command::new(BIN)
        .args(["study", "tests/fixtures/tiny.toml"])
        .args(sets(&local, &extra))
        .output()
        .unwrap());
    let dir = out_dir("study");
    let mut args = sets(&dir, &extra);
    args.push("--study".into());
    let (run, stdout) = submit("tests/fixtures/tiny.toml", &args);
    assert!(
        stdout.contains("nets") && stdout.contains("study"),
        "{stdout}"
    );
    let script = std::fs::read_to_string(run.join("slurm/nets.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3"), "{script}");
    assert!(
        script.contains("--net \"$SLURM_ARRAY_TASK_ID\""),
        "{script}"
    );
    wait_for(&run.join("study.json"), 600, &run);
    for k in 0..4 {
        let log = std::fs::read_to_string(run.join(format!("slurm/logs/nets-{k}.out"))).unwrap();
        assert!(log.contains(&format!("study net {k} retrained")), "{log}");
    }
    let study = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("study.json")).unwrap()).unwrap()
    };
    let (a, b) = (study(&run), study(&local.join("tiny-001")));
    assert_eq!(a["nets"], b["nets"]);
    assert_eq!(a["top1"], b["top1"]);
    assert_eq!(a["predictors"], b["predictors"]);
}

/// A sweep submitted to Slurm: every member's stages as jobs; the second member's teacher,
/// distillation and rating jobs wait for the first's and take the shared units from the stage
/// cache, so each is computed once; `dnarun sweep` afterwards collects the outcome.
#[test]
fn a_sweep_on_slurm_computes_each_shared_stage_once() {
    slurm_available();
    let dir = out_dir("sweep");
    let args = sets(
        &dir,
        &[
            "search.top_k=1",
            "retrain.epochs=1",
            r#"sweep.grid={"rate.calibration_batches"=[1,2]}"#,
        ],
    );
    let stdout = ok(Command::new(BIN)
        .args(["submit", "tests/fixtures/tiny.toml", "--slurm"])
        .args(&args)
        .output()
        .unwrap());
    assert!(
        stdout.contains("sweep member rate.calibration_batches=1:")
            && stdout.contains("sweep member rate.calibration_batches=2:"),
        "{stdout}"
    );
    let sweep = dir.join("tiny-sweep");
    let (first, second) = (sweep.join("tiny-001"), sweep.join("tiny-002"));
    // Reused units prove the order: the second member's jobs ran after the first's (`afterok`).
    wait_for(&first.join("report.json"), 600, &first);
    wait_for(&second.join("report.json"), 600, &second);
    for unit in ["teacher", "distill__block0", "distill__block1"] {
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(second.join(format!("stages/{unit}.json"))).unwrap(),
        )
        .unwrap();
        assert!(
            rec["reused_from"]
                .as_str()
                .is_some_and(|f| f.ends_with("tiny-001")),
            "{unit}: {rec}"
        );
    }
    assert!(
        !std::fs::read_to_string(second.join("stages/rate__block0.json"))
            .unwrap()
            .contains("reused_from"),
        "another calibration rates again"
    );
    // The same recipe through `dnarun sweep` collects the outcome without computing anything.
    let out = ok(Command::new(BIN)
        .args(["sweep", "tests/fixtures/tiny.toml"])
        .args(&args)
        .output()
        .unwrap());
    assert!(
        out.contains("| rate.calibration_batches=1 | finished |")
            && out.contains("| rate.calibration_batches=2 | finished |"),
        "{out}"
    );
}
