//! `weir`: submit, inspect, rescale and cancel jobs of a weir cluster.
//!
//! Owns: the command line (clap), rendering (human tables by default, JSON
//! with `--json`) and exit codes: 0 success, 1 failure (unknown job, unknown
//! job type, duplicate name, malformed data in ZooKeeper), 2 bad usage or
//! invalid input (parallelism 0, bad `--set`), 3 ZooKeeper unreachable
//! (after a bounded, announced wait).
//! Must never: talk to anything but ZooKeeper, or panic (every failure is a
//! message and an exit code).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir::coord::{StopMode, ZkPaths};
use weir::service::admin;
use weir::service::ServiceError;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Submit, inspect, rescale and cancel weir jobs (through ZooKeeper)"
)]
struct Cli {
    /// ZooKeeper: HOST:PORT, or an ensemble HOST:PORT,HOST:PORT,... (either with an optional
    /// chroot suffix /PATH, created if missing).
    #[arg(long, global = true, env = "WEIR_ZK", default_value = "127.0.0.1:2181")]
    zk: String,
    /// Root znode of the cluster.
    #[arg(long, global = true, env = "WEIR_ROOT", default_value = "/weir")]
    root: String,
    /// ZooKeeper digest credentials USER:PASSWORD: the session authenticates, and what it
    /// creates only the same credentials may change (everyone may read).
    #[arg(long, global = true, env = "WEIR_ZK_AUTH", hide_env_values = true)]
    zk_auth: Option<String>,
    /// A file whose first line is USER:PASSWORD (instead of --zk-auth).
    #[arg(long, global = true, env = "WEIR_ZK_AUTH_FILE")]
    zk_auth_file: Option<std::path::PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for ZooKeeper before giving up, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    zk_wait_s: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Submit a job of a type the workers run (e.g. `etl`, `clicks`).
    Submit {
        /// Job type.
        job_type: String,
        /// Job name (unique in the cluster).
        #[arg(long)]
        name: String,
        /// Number of tasks.
        #[arg(long)]
        parallelism: u32,
        /// A job parameter, `key=value` (repeatable), e.g. `--set input=payments`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Submit even if no live worker advertises the job type.
        #[arg(long)]
        force: bool,
        /// The parallelism of one stage of a staged job type, STAGE=N
        /// (repeatable; the others get --parallelism).
        #[arg(long, value_name = "STAGE=N")]
        stage_parallelism: Vec<String>,
    },
    /// Show jobs, their tasks (worker, state, lag) and the live workers.
    Status {
        /// Only this job.
        name: Option<String>,
    },
    /// List the live workers.
    Workers,
    /// Cancel a job: its tasks stop and its znodes are removed. By default
    /// (and with --savepoint) each task takes a final checkpoint and stops
    /// without firing open windows (with the workers' --checkpoint-url: a
    /// job submitted again under the same name resumes from it).
    Cancel {
        /// Job name.
        name: String,
        /// Stop with a final checkpoint, open windows kept in it (the default).
        #[arg(long, conflicts_with_all = ["drain", "abort"])]
        savepoint: bool,
        /// Fire every open window and commit, as at the end of input.
        #[arg(long, conflicts_with = "abort")]
        drain: bool,
        /// Stop at once; nothing more is committed (the last checkpoint stands).
        #[arg(long)]
        abort: bool,
        /// Return at once instead of waiting for the job's znodes to be removed.
        #[arg(long)]
        no_wait: bool,
    },
    /// Change the number of tasks of a job.
    Rescale {
        /// Job name.
        name: String,
        /// New parallelism.
        parallelism: u32,
        /// Only this stage of a staged job (default: the job's parallelism,
        /// and every stage that has it).
        #[arg(long)]
        stage: Option<String>,
    },
}

fn exit_code(e: &ServiceError) -> u8 {
    match e {
        ServiceError::Invalid { .. } => 2,
        ServiceError::Unreachable { .. } => 3,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> Result<u8, ServiceError> {
    let paths = ZkPaths::new(&cli.root).map_err(|e| ServiceError::Invalid {
        field: "--root".into(),
        reason: e.to_string(),
    })?;
    // Validate what needs no ZooKeeper first.
    let spec = match &cli.cmd {
        Cmd::Submit {
            job_type,
            name,
            parallelism,
            sets,
            ..
        } => Some(admin::build_spec(job_type, name, *parallelism, sets)?),
        Cmd::Rescale { parallelism: 0, .. } => {
            return Err(ServiceError::Invalid {
                field: "N".into(),
                reason: "parallelism must be at least 1".into(),
            })
        }
        _ => None,
    };
    let auth = weir::coord::session::ZkAuth::from_flag_or_file(
        cli.zk_auth.as_deref(),
        cli.zk_auth_file.as_deref(),
    )?;
    let client = admin::connect_with_auth(&cli.zk, auth, Duration::from_secs(cli.zk_wait_s), |m| {
        eprintln!("{m}")
    })
    .await?;
    // The base layout may not exist yet on a fresh cluster.
    weir::coord::store::ensure_layout(&client, &paths).await?;
    match cli.cmd {
        Cmd::Submit {
            force,
            stage_parallelism,
            ..
        } => {
            let mut spec = spec.expect("built above");
            admin::submit(&client, &paths, &mut spec, &stage_parallelism, force).await?;
            if cli.json {
                println!("{}", serde_json::json!({ "submitted": spec }));
            } else {
                println!(
                    "submitted job {} (type {}, parallelism {}); follow it with `weir status {}`",
                    spec.name, spec.job_type, spec.parallelism, spec.name
                );
            }
            Ok(0)
        }
        Cmd::Status { name } => {
            let st = admin::status(&client, &paths, name.as_deref()).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                print!("{}", admin::render_status(&st, name.is_some()));
            }
            let bad: Vec<&str> = st.jobs.iter().filter_map(|j| j.error.as_deref()).collect();
            if bad.is_empty() {
                Ok(0)
            } else {
                for e in bad {
                    eprintln!("error: {e}");
                }
                Ok(1)
            }
        }
        Cmd::Workers => {
            let st = admin::status(&client, &paths, None).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st.workers).unwrap_or_default()
                );
            } else {
                print!("{}", admin::render_workers(&st.workers));
            }
            Ok(0)
        }
        Cmd::Cancel {
            name,
            no_wait,
            savepoint: _,
            drain,
            abort,
        } => {
            let mode = if drain {
                StopMode::Drain
            } else if abort {
                StopMode::Abort
            } else {
                StopMode::Savepoint
            };
            // A drain waits for the tasks to read their repartition
            // topics to their end (and stop) before it deletes them.
            let patience = if drain { 90 } else { 15 };
            let wait = (!no_wait).then_some(Duration::from_secs(patience));
            let gone = admin::cancel(&client, &paths, &name, mode, wait).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "cancelled": name, "removed": gone })
                );
            } else if gone {
                println!("job {name} cancelled: its tasks stopped and its znodes are removed");
            } else if no_wait {
                println!("job {name}: cancellation requested");
            } else if drain {
                println!("job {name}: cancellation requested, but its tasks have not all stopped draining yet, or the leader has not removed it (is a worker running?); its repartition topics are left");
            } else {
                println!("job {name}: cancellation requested, but the leader has not removed it yet (is a worker running?)");
            }
            Ok(0)
        }
        Cmd::Rescale {
            name,
            parallelism,
            stage,
        } => {
            let old = admin::rescale(&client, &paths, &name, stage.as_deref(), parallelism).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "job": name, "stage": stage, "from": old, "to": parallelism })
                );
            } else if let Some(stage) = stage {
                println!("job {name} stage {stage}: parallelism {old} -> {parallelism}");
            } else {
                println!("job {name}: parallelism {old} -> {parallelism}");
            }
            Ok(0)
        }
    }
}
