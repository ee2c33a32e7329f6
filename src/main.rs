//! The `dnarun` command line: parse arguments, call the library, map errors to exit codes
//! (0 success, 1 a failure of the run itself, 2 bad input of any kind, 130 stopped by Ctrl-C).

// mimalloc keeps freed memory for reuse: the training loop allocates and frees tensors of many
// megabytes every step, which the system allocator returns to the kernel and faults back in
// (about half of a CPU train step before; docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use dnarun::recipe;
use dnarun::run::{Request, Resume, RunError};
use dnarun::run::{Stage, commands};

/// Which run directory: `--resume` (the newest) or `--run-dir DIR`, else a new one.
fn resume_of(resume: bool, run_dir: Option<PathBuf>) -> Resume {
    match (resume, run_dir) {
        (_, Some(d)) => Resume::Dir(d),
        (true, None) => Resume::Latest,
        (false, None) => Resume::New,
    }
}

/// Whether a first argument names a recipe or lock file rather than a misspelt subcommand (which
/// clap then reports with "a similar subcommand exists").
fn looks_like_a_file(arg: &str) -> bool {
    std::path::Path::new(arg).exists() || arg.contains(['.', '/'])
}

/// Whether a first argument is one of clap's subcommands or top-level flags (else it is a recipe:
/// `dnarun recipe.toml` is `dnarun run recipe.toml`).
fn is_top_level(arg: &str) -> bool {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    cmd.get_subcommands()
        .any(|s| s.get_name() == arg || s.get_all_aliases().any(|a| a == arg))
        || cmd.get_arguments().any(|a| {
            a.get_long().is_some_and(|l| arg == format!("--{l}"))
                || a.get_short().is_some_and(|c| arg == format!("-{c}"))
        })
}

/// `0.1.0 (backends: cpu, wgpu)`: the version and the backends compiled in.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (backends: {})",
        env!("CARGO_PKG_VERSION"),
        dnarun::plan::compiled_backends()
    )
});

/// Neural architecture search by block-wise knowledge distillation (DNA), declared in a TOML
/// recipe. `dnarun recipe.toml` runs the whole pipeline: teacher, distill, rate, search,
/// retrain, report. Exit codes: 0 success, 1 the run itself failed (a worker crashed, a file of
/// the run could not be written), 2 bad input (recipe, data, weights, tracking, device), 130
/// stopped by Ctrl-C (resume with `dnarun resume RUN_DIR`).
#[derive(Parser, Debug)]
#[command(name = "dnarun", version = VERSION.as_str())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct RecipeArgs {
    /// The recipe (`.toml`) or a run's lock file (`dnarun.lock`).
    recipe: PathBuf,
    /// Override a recipe value: `--set distill.epochs=2`, `--set blocks.0.cells.1.layers=3`
    /// (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a recipe end to end (what `dnarun RECIPE` does).
    Run {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Run only this stage (its inputs must exist in the run directory).
        #[arg(long, value_enum)]
        stage: Option<Stage>,
        /// Run only this block (distill and rate); with `--stage`. It runs on its device in
        /// `runtime.devices` (blocks go round-robin over the devices, as `dnarun plan` shows).
        #[arg(long)]
        block: Option<usize>,
        /// Internal: run as the worker for `runtime.devices[K]` (a run with several devices
        /// starts one per device for distillation and rating).
        #[arg(long, hide = true, value_name = "K", conflicts_with = "block")]
        worker: Option<usize>,
        /// Continue the newest run of this recipe instead of starting a new one.
        #[arg(long)]
        resume: bool,
        /// Continue this run directory.
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "resume")]
        run_dir: Option<PathBuf>,
        /// Compute every stage: take nothing from the stage cache (`experiment.cache_dir`) and
        /// store nothing in it.
        #[arg(long)]
        no_cache: bool,
    },
    /// The ranking study: distill, rate and search as `run` does, then retrain
    /// `study.architectures` sampled nets with `study.seeds` seeds each (and the searched top-1)
    /// and report how well the summed rating, a learned additive predictor (cross-validated),
    /// FLOPs and params rank them: Kendall tau-b, Spearman, Pearson with 95 % bootstrap intervals,
    /// the seed noise and the tau it allows. Writes `study.{json,md,svg}` and `predictor.json`
    /// (for `search.objective = "predicted"`). Resumable like a run.
    Study {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Continue the newest run of this recipe.
        #[arg(long)]
        resume: bool,
        /// Continue this run directory.
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "resume")]
        run_dir: Option<PathBuf>,
        /// Retrain only net K of the study (0-based; K = `study.architectures` is the searched
        /// top-1) and stop: the task of a Slurm array (`submit --slurm --study`). Several may run
        /// at once in one run directory.
        #[arg(long, value_name = "K", requires = "run_dir")]
        net: Option<usize>,
        /// Compute every stage: take nothing from the stage cache (`experiment.cache_dir`) and
        /// store nothing in it.
        #[arg(long)]
        no_cache: bool,
    },
    /// Run every variant of a recipe its `[sweep]` section declares (`grid`: every combination
    /// of the listed values; `members`: tables of overrides), each a full run in its own run
    /// directory under `OUTPUT_DIR/NAME-sweep/`, sharing every stage two variants have in common
    /// through the stage cache. Writes `sweep.json` and `sweep.md` (members best first); an MLflow
    /// parent run holds the members' runs. The same command again resumes it; a member that
    /// fails is recorded and the others go on (exit 1 when any failed).
    Sweep {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Run every member as a ranking study (`dnarun study`).
        #[arg(long)]
        study: bool,
        /// Compute every stage: take nothing from the stage cache (`experiment.cache_dir`) and
        /// store nothing in it.
        #[arg(long)]
        no_cache: bool,
    },
    /// Measure a latency table of the recipe's space on a device: every distinct layer its
    /// students are made of (each op at each layer shape, each cell's adapter), the stem and the
    /// head, each timed alone after a warm-up (median and interquartile range). A student's
    /// predicted latency is the sum of its layers'. `--validate N` builds N students spread over
    /// the space's FLOPs range, times them whole, and reports Kendall's tau and the relative
    /// errors of the sums. Writes FILE (JSON) and FILE with `.md`; `search.latency_table = FILE`
    /// and `search.max_latency_ms` then search under a latency budget (measure on the target
    /// device, search anywhere).
    Latency {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The device to measure (`cpu`, `cuda:N`, `wgpu:N`); the first of `runtime.devices` by
        /// default.
        #[arg(long)]
        device: Option<String>,
        /// Images per forward pass (1: deployment).
        #[arg(long, default_value_t = 1, value_name = "N")]
        batch: usize,
        /// Timed repetitions per entry (at least; and at least 100 ms of them, after a 200 ms
        /// warm-up).
        #[arg(long, default_value_t = 25, value_name = "N")]
        repeats: usize,
        /// Measure N whole students against the table's sums.
        #[arg(long, default_value_t = 0, value_name = "N")]
        validate: usize,
        /// The table to write (JSON; a readable `.md` beside it).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Continue a stopped or killed run from its last completed unit, or a sweep (a directory
    /// with `sweep.json`) from its first unfinished member.
    Resume {
        /// The run directory (holds `dnarun.lock`) or sweep directory (holds `sweep.json`).
        run_dir: PathBuf,
    },
    /// Check a recipe and report every problem: the recipe itself, then the data (read and
    /// sampled as the run will: files, class count, images per class) and the teacher's weights
    /// file (header, tensor names, shapes).
    Validate {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Check the recipe only, not the data and weights files (a machine without them, such
        /// as a cluster's login node); says what it left out.
        #[arg(long)]
        skip_data_checks: bool,
    },
    /// Show what a recipe will do: blocks, space size, costs, budget, work; or an `arch.toml`.
    Plan {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Time a few real steps of every stage on the device (random inputs at the recipe's
        /// shapes) and project the whole run: seconds per stage and block, device-hours, peak
        /// memory. Creates no run directory.
        #[arg(long)]
        measure: bool,
        /// With `--measure`: the device to measure on (`cpu`, `cuda:N`, `wgpu:N`); the first of
        /// `runtime.devices` by default.
        #[arg(long, requires = "measure")]
        device: Option<String>,
        /// With `--measure`: run the steps at this batch and scale times linearly to the recipe's
        /// batch sizes (for batches that do not fit this machine).
        #[arg(long, requires = "measure", value_name = "N")]
        measure_batch: Option<usize>,
        /// With `--measure`: print one JSON object (`stages.<stage>.seconds`, `total_seconds`,
        /// `peak_rss_bytes`, `blocks`) instead of the table.
        #[arg(long, requires = "measure")]
        json: bool,
        /// Do not read the data and weights files (a machine without them); says what it left
        /// out.
        #[arg(long, conflicts_with = "measure")]
        skip_data_checks: bool,
    },
    /// Write a complete recipe around a teacher and a dataset: taps and blocks from the
    /// teacher's stages, cells around each stage's depth and width, the paper's op set, the data
    /// section from what PATH holds, and a budget the space can meet (the middle of its FLOPs
    /// range unless given). The recipe is checked before it is written; an existing file is not
    /// overwritten.
    Init {
        /// `cnn` (a small CNN the teacher stage trains) or a pretrained teacher
        /// (`dnarun teachers` lists them).
        #[arg(long)]
        teacher: String,
        /// The pretrained teacher's checkpoint (`.pth` or `.safetensors`).
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// The dataset folder: IDX files, CIFAR binaries, or `train/` and `val/` (or `test/`)
        /// image folders.
        #[arg(long, value_name = "PATH")]
        data: PathBuf,
        /// The data format, when the folder's contents should not decide it.
        #[arg(long, value_name = "F", value_parser = ["idx", "cifar10", "cifar100", "folder", "flat-folder"])]
        format: Option<String>,
        /// The budget in MFLOPs (DNA convention).
        #[arg(long, value_name = "X", conflicts_with = "budget_mparams")]
        budget_mflops: Option<f64>,
        /// The budget in millions of parameters.
        #[arg(long, value_name = "X")]
        budget_mparams: Option<f64>,
        /// The images' side in pixels (the teacher's native resolution by default).
        #[arg(long, value_name = "N")]
        image_size: Option<usize>,
        /// The recipe to write.
        #[arg(short, long, default_value = "recipe.toml")]
        output: PathBuf,
    },
    /// Export a retrained net for other stacks: `--format onnx` writes an ONNX model (opset 13,
    /// BatchNorm folded into the convolutions; input `input` [batch, C, S, S] normalised as its
    /// metadata says, output `logits`) for ONNX Runtime, TensorRT, OpenVINO or a converter.
    Export {
        /// An `arch.toml` of a retrained net (its `model.bpk` beside it), its folder, or a run
        /// directory (its retrained top-1).
        arch: PathBuf,
        /// The format.
        #[arg(long, value_parser = ["onnx"], default_value = "onnx")]
        format: String,
        /// The file to write (`NAME.onnx` beside the `arch.toml` by default).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the recipe JSON schema, or write it to a file.
    Schema {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Exit with 1 when the file differs from the generated schema.
        #[arg(long, requires = "output")]
        check: bool,
        /// The recipe reference as Markdown instead of the JSON schema.
        #[arg(long)]
        markdown: bool,
    },
    /// Retrain an architecture (`arch.toml`) from scratch, in a new run directory of its
    /// recipe's experiment, and report its accuracy.
    Retrain {
        /// The architecture file.
        arch: PathBuf,
        /// Override a value of the recipe the architecture file names: `--set retrain.epochs=50`
        /// (repeatable; values are TOML).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Hand the run to a Slurm cluster: teacher, a job array per block for distillation and for
    /// rating (`afterok`), then search, retrain and report. Prints the job ids. A recipe with a
    /// `[sweep]` submits every member, a stage two members share computed once (the later
    /// member's job waits for the earlier's and takes it from the stage cache).
    Submit {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Submit to Slurm (the only scheduler supported).
        #[arg(long, required = true)]
        slurm: bool,
        /// Resubmit what is unfinished in this run directory (cancels its queued jobs first).
        #[arg(long, value_name = "RUN_DIR")]
        run_dir: Option<PathBuf>,
        #[command(flatten)]
        slurm_options: dnarun::slurm::SlurmOptions,
    },
    /// Show per stage and block what is done, queued, running or failed; for a sweep directory,
    /// its members' table (`sweep.md`).
    Status {
        /// The run directory, or a sweep directory.
        run_dir: PathBuf,
    },
    /// List the pretrained teachers (parameters at 1000 classes, native resolution, where the
    /// weights come from), or with NAME the teacher's taps: per stage its channels and spatial
    /// size at `--image-size` (the native resolution by default), ready for `teacher.taps`.
    Teachers {
        /// A teacher, e.g. `efficientnet-lite2`.
        name: Option<String>,
        /// The input resolution the taps are computed at.
        #[arg(long)]
        image_size: Option<usize>,
    },
    /// List the devices this build can open, as `runtime.devices` names them (`cpu`, `wgpu:N`,
    /// `cuda:N`), with their kind and name. `wgpu:N` counts discrete GPUs first, then
    /// integrated, virtual and other adapters, then software ones (Mesa's lavapipe).
    Devices,
    /// Print a shell completion script: `dnarun completions bash > ~/.local/share/bash-completion/completions/dnarun`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Tracking tools.
    Track {
        #[command(subcommand)]
        command: TrackCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TrackCommand {
    /// Send the tracking calls a run could not send (server down) to its MLflow server.
    Replay {
        /// The run directory.
        run_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DNARUN_LOG")
                // dnarun's progress; only errors from the libraries (cubecl logs every kernel it
                // autotunes at info).
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,dnarun=info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // `dnarun recipe.toml` is `dnarun run recipe.toml`.
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() > 1 && !is_top_level(&args[1]) && looks_like_a_file(&args[1]) {
        args.insert(1, "run".into());
    }
    let cli = Cli::parse_from(args);
    dnarun::nn::device::report_device_failures();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopping now");
                std::process::exit(130);
            }
            eprintln!("\nstopping after saving (Ctrl-C again to stop at once)");
        });
    }
    match execute(cli.command, stop) {
        Ok(code) => code,
        Err(RunError::Recipe(d)) => {
            eprintln!("{}", d.render());
            ExitCode::from(2)
        }
        Err(e) if e.is_stop() => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `dnarun validate`.
fn validate(recipe: RecipeArgs, skip_data_checks: bool) -> Result<(), RunError> {
    let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
    let (_, checked) = commands::check_inputs(&plan, !skip_data_checks)?;
    let sweep = match dnarun::run::sweep::check(&recipe.recipe, &recipe.sets)? {
        Some(n) => format!(
            "\nsweep: all {n} members resolve (the data checked is the recipe's as written)"
        ),
        None => String::new(),
    };
    out(&format!(
        "`{}` is valid\n{checked}{sweep}\n{}",
        recipe.recipe.display(),
        commands::notes(&plan)
    ));
    Ok(())
}

/// `dnarun latency`.
fn latency(
    recipe: RecipeArgs,
    device: Option<String>,
    batch: usize,
    repeats: usize,
    validate: usize,
    output: PathBuf,
) -> Result<(), RunError> {
    let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
    let device = device
        .map(|d| {
            dnarun::plan::DeviceSpec::parse(&d).map_err(|problem| RunError::BadOption {
                option: "device",
                problem,
            })
        })
        .transpose()?;
    let opts = dnarun::run::latency::LatencyOptions {
        device,
        batch,
        repeats,
        validate,
        output: output.clone(),
    };
    let table = dnarun::run::latency::latency(&plan, &opts)?;
    out(&dnarun::run::latency::markdown(&plan, &table));
    out(&format!(
        "table: {} ({})\n",
        output.display(),
        dnarun::run::latency::md_path(&output).display()
    ));
    Ok(())
}

/// `dnarun sweep`.
fn sweep(
    recipe: RecipeArgs,
    study: bool,
    no_cache: bool,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode, RunError> {
    let req = dnarun::run::sweep::SweepRequest {
        recipe: std::path::absolute(&recipe.recipe).unwrap_or(recipe.recipe.clone()),
        sets: recipe.sets,
        study,
        no_cache,
    };
    sweep_outcome(dnarun::run::sweep::sweep(&req, stop)?)
}

/// Prints a sweep's table and where it is; exit 1 when a member failed.
fn sweep_outcome((dir, failed): (PathBuf, usize)) -> Result<ExitCode, RunError> {
    let md = dir.join("sweep.md");
    out(&std::fs::read_to_string(&md).unwrap_or_default());
    out(&format!("sweep: {}\n", md.display()));
    if failed > 0 {
        eprintln!(
            "error: {failed} member(s) of the sweep failed; their messages are in `{}`. Fix them and run the same command again: finished members are kept",
            md.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn execute(command: Command, stop: Arc<AtomicBool>) -> Result<ExitCode, RunError> {
    match command {
        Command::Run {
            recipe,
            stage,
            block,
            worker,
            resume,
            run_dir,
            no_cache,
        } => {
            let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
            if worker.is_some() {
                stop_with_parent(stop.clone());
            }
            let req = Request {
                stage,
                block,
                worker,
                resume: resume_of(resume, run_dir),
                stop,
                study: false,
                net: None,
                no_cache,
                sweep_run: None,
            };
            dnarun::run::run(&plan, &req)?;
        }
        Command::Study {
            recipe,
            resume,
            run_dir,
            net,
            no_cache,
        } => {
            let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
            let req = Request {
                resume: resume_of(resume, run_dir),
                stop,
                study: true,
                net,
                no_cache,
                ..Default::default()
            };
            dnarun::run::run(&plan, &req)?;
        }
        Command::Sweep {
            recipe,
            study,
            no_cache,
        } => return sweep(recipe, study, no_cache, stop),
        Command::Latency {
            recipe,
            device,
            batch,
            repeats,
            validate,
            output,
        } => latency(recipe, device, batch, repeats, validate, output)?,
        Command::Resume { run_dir } => {
            if dnarun::run::sweep::state_file(&run_dir).exists() {
                return sweep_outcome(dnarun::run::sweep::resume(&run_dir, stop)?);
            }
            commands::resume(&run_dir, stop)?;
        }
        Command::Teachers { name, image_size } => {
            out(&commands::teachers(name.as_deref(), image_size)?);
        }
        Command::Devices => {
            out(&dnarun::nn::device::render(&dnarun::nn::device::list(true)));
        }
        Command::Validate {
            recipe,
            skip_data_checks,
        } => validate(recipe, skip_data_checks)?,
        c @ Command::Plan { .. } => return plan(c),
        Command::Schema {
            output,
            check,
            markdown,
        } => return schema(output, check, markdown),
        Command::Retrain { arch, sets } => {
            let (name, acc, dir) = commands::retrain(&arch, &sets, stop)?;
            out(&format!(
                "{name}: test accuracy {:.2}% (run directory `{}`)\n",
                acc * 100.0,
                dir.display()
            ));
        }
        c @ Command::Submit { .. } => return submit(c),
        Command::Status { run_dir } => {
            let sweep_md = run_dir.join("sweep.md");
            if dnarun::run::sweep::state_file(&run_dir).exists() && sweep_md.exists() {
                out(&std::fs::read_to_string(&sweep_md).unwrap_or_default());
            } else {
                out(&commands::status(&run_dir)?);
            }
        }
        Command::Export {
            arch,
            format: _,
            output,
        } => {
            let written = commands::export(&arch, output.as_deref())?;
            out(&format!("wrote `{}`\n", written.display()));
        }
        c @ Command::Init { .. } => return init(c),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "dnarun", &mut script);
            out(&String::from_utf8_lossy(&script));
        }
        Command::Track {
            command: TrackCommand::Replay { run_dir },
        } => out(&(commands::replay(&run_dir)? + "\n")),
    }
    Ok(ExitCode::SUCCESS)
}

/// `dnarun plan`: a recipe's summary, an architecture file's cost, or `--measure`.
fn plan(c: Command) -> Result<ExitCode, RunError> {
    match c {
        Command::Plan {
            recipe,
            measure: true,
            device,
            measure_batch,
            json,
            ..
        } => {
            let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
            out(&commands::measure(
                &plan,
                device.as_deref(),
                measure_batch,
                json,
            )?);
        }
        Command::Plan {
            recipe,
            skip_data_checks,
            ..
        } => {
            if commands::is_arch_file(&recipe.recipe) {
                out(&commands::describe_arch(&recipe.recipe)?);
            } else {
                let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
                let (data, checked) = commands::check_inputs(&plan, !skip_data_checks)?;
                out(&(commands::describe_plan(&plan, data.as_ref(), &checked)
                    + &commands::notes(&plan)));
            }
        }
        _ => unreachable!("called with `plan` only"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `dnarun init`.
fn init(c: Command) -> Result<ExitCode, RunError> {
    use dnarun::plan::DataFormat;
    let Command::Init {
        teacher,
        weights,
        data,
        format,
        budget_mflops,
        budget_mparams,
        image_size,
        output,
    } = c
    else {
        unreachable!("called with `init` only")
    };
    let format = format.map(|f| match f.as_str() {
        "idx" => DataFormat::Idx,
        "cifar10" => DataFormat::Cifar10,
        "cifar100" => DataFormat::Cifar100,
        "flat-folder" => DataFormat::FlatFolder,
        _ => DataFormat::Folder,
    });
    out(&dnarun::run::init::init(&dnarun::run::init::InitOptions {
        teacher,
        weights,
        data,
        format,
        budget_mflops,
        budget_mparams,
        image_size,
        output,
    })?);
    Ok(ExitCode::SUCCESS)
}

/// `dnarun submit --slurm`.
fn submit(c: Command) -> Result<ExitCode, RunError> {
    let Command::Submit {
        recipe,
        slurm: _,
        run_dir,
        slurm_options: opts,
    } = c
    else {
        unreachable!("called with `submit` only")
    };
    let plan = commands::load_plan(&recipe.recipe, &recipe.sets)?;
    if run_dir.is_none() && dnarun::run::sweep::declares_sweep(&plan) {
        let req = dnarun::run::sweep::SweepRequest {
            recipe: std::path::absolute(&recipe.recipe).unwrap_or(recipe.recipe.clone()),
            sets: recipe.sets,
            study: opts.study,
            no_cache: false,
        };
        for (label, s) in dnarun::run::sweep::submit(&req, &opts)? {
            out(&format!(
                "sweep member {label}:\n{}",
                s.describe(&req.recipe, opts.dry_run)
            ));
        }
        out(
            "when the jobs are done, `dnarun sweep` with the same recipe and `--set`s writes `sweep.json` and `sweep.md` (nothing is computed again)\n",
        );
        return Ok(ExitCode::SUCCESS);
    }
    let s = commands::submit(&plan, &opts, run_dir.as_deref())?;
    out(&s.describe(&recipe.recipe, opts.dry_run));
    Ok(ExitCode::SUCCESS)
}

/// `dnarun schema`: print it, write it, or check a written one (exit 1 when stale).
fn schema(output: Option<PathBuf>, check: bool, markdown: bool) -> Result<ExitCode, RunError> {
    let text = if markdown {
        recipe::reference_markdown() + &dnarun::plan::teachers_markdown()
    } else {
        recipe::schema_text()
    };
    match (output, check) {
        (Some(p), true) => {
            let current = std::fs::read_to_string(&p).unwrap_or_default();
            if current != text {
                eprintln!(
                    "`{}` is stale: regenerate it with `dnarun schema -o {}`",
                    p.display(),
                    p.display()
                );
                return Ok(ExitCode::from(1));
            }
            out(&format!("`{}` is up to date\n", p.display()));
        }
        (Some(p), false) => dnarun::rundir::write_atomic(&p, text.as_bytes())?,
        (None, _) => out(&text),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a command's output to stdout; a reader that closed the pipe early
/// (`dnarun schema | head -1`) ends the command quietly with success, as `cat` would.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: the output cannot be written: {e}");
        std::process::exit(1);
    }
}

/// A worker stops (as on Ctrl-C: saving first) when the run that started it dies, so a killed
/// run leaves no worker behind to race the resumed one. (It watches its parent process id rather
/// than asking for a signal: Linux sends `PR_SET_PDEATHSIG` once per exiting parent thread.)
fn stop_with_parent(stop: Arc<AtomicBool>) {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if !stop.swap(true, Ordering::SeqCst) {
            eprintln!("\nthe run that started this worker ended; stopping after saving");
        }
    });
}
